"""Rectified-flow sampling (App. G, eq. 42): one flow model is diffusers' flow-matching loop bit
for bit, every recorded step obeys diffusers' update (checked from the store alone, against step
sizes from a fresh scheduler), the shift's targets, batch independence, the one-line errors, and
the flow's coefficients and shell radius against diffusers and a Monte-Carlo estimate.

Interpolant z_s = (1 - s) x0 + s eps, velocity v = eps - x0; diffusers' step from s to s_next:
deterministic z + (s_next - s) v, stochastic (1 - s_next)(z - s v) + s_next xi."""

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

from amdm_geom.core import bounds
from amdm_geom.core.flow_schedules import flow_coefficients, flow_shell_radius, make_flow_scheduler
from amdm_geom.core.schedules import VESchedule, make_scheduler
from amdm_geom.models.base import same_schedule, schedule_kind
from amdm_geom.models.flow_gmm import FlowGMMDenoiser, flow_family_model
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.models.specs import GMMFamilySpec
from amdm_geom.probes import RunSettings, flow_pair
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import open_run

SHAPE = (4, 8, 8)
T = 10
F32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def fam():
    return fine_grained_family(SHAPE, seed=0)


def fresh_sigmas(shift: float, steps: int, stochastic: bool = False) -> FlowMatchEulerDiscreteScheduler:
    """diffusers' own scheduler, built here from its constructor (not from the code under test)."""
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift, stochastic_sampling=stochastic)
    sched.set_timesteps(steps)
    return sched


def noises(seeds, shape=SHAPE):
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return gens, torch.stack([torch.randn(shape, generator=g) for g in gens])


def diffusers_loop(model, cond, seeds, steps, **overrides):
    """diffusers' flow-matching loop: one scheduler, per-sample generators for its noise."""
    sched = FlowMatchEulerDiscreteScheduler.from_config(model.scheduler.config, **overrides)
    sched.set_timesteps(steps)
    gens, z = noises(seeds, model.latent_shape)
    z = z.to(model.dtype)
    for t in sched.timesteps:
        z = sched.step(model(z, t, cond), t, z, generator=gens).prev_sample
    return z


def flat(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


# --------------------------------------------------------------------------------------------
# 1. one model is diffusers' loop


@pytest.mark.parametrize("stochastic", [False, True])
def test_one_flow_model_is_diffusers_loop_bit_for_bit(fam, stochastic):
    model, cond = flow_family_model(fam, shift=3.0, stochastic=stochastic), fam.condition(position=1)
    out = AMDMSampler([model], [cond], SamplerConfig(num_inference_steps=T, weights=())).sample([3, 7, 11])
    ref = diffusers_loop(model, cond, [3, 7, 11], T)
    assert out.z0.dtype == torch.float32 and torch.equal(out.z0, ref)
    assert out.model_calls == T
    # the other mode is a different trajectory (the test can fail)
    assert not torch.equal(out.z0, diffusers_loop(model, cond, [3, 7, 11], T, stochastic_sampling=not stochastic))


def test_flow_stochastic_overrides_a_deterministic_scheduler(fam):
    model, cond = flow_family_model(fam, shift=3.0), fam.condition(colour=2)
    cfg = SamplerConfig(num_inference_steps=T, weights=(), flow_stochastic=True)
    out = AMDMSampler([model], [cond], cfg).sample([5, 6])
    assert torch.equal(out.z0, diffusers_loop(model, cond, [5, 6], T, stochastic_sampling=True))
    # and False overrides a stochastic one
    sto = flow_family_model(fam, shift=3.0, stochastic=True)
    out = AMDMSampler([sto], [cond], cfg.replace(flow_stochastic=False)).sample([5, 6])
    assert torch.equal(out.z0, diffusers_loop(model, cond, [5, 6], T))


@pytest.mark.parametrize("stochastic", [False, True])
def test_a_float64_model_steps_in_float64(fam, stochastic):
    model = flow_family_model(fam, shift=3.0, stochastic=stochastic, dtype=torch.float64)
    cond, seeds = fam.condition(position=2), [1, 2]
    out = AMDMSampler([model], [cond], SamplerConfig(num_inference_steps=T, weights=())).sample(seeds)
    sched = fresh_sigmas(3.0, T)
    s = sched.sigmas.to(torch.float64)  # diffusers' float32 sigmas, widened
    gens, z = noises(seeds)
    z = z.double()
    for k, t in enumerate(sched.timesteps):
        v = model(z, t, cond)
        if stochastic:
            xi = torch.stack([torch.randn(SHAPE, generator=g) for g in gens]).double()
            z = (1 - s[k + 1]) * (z - s[k] * v) + s[k + 1] * xi
        else:
            z = z + (s[k + 1] - s[k]) * v
    assert out.z0.dtype == torch.float64
    assert float((out.z0 - z).abs().max()) <= 1e-12 * float(z.abs().max())
    # diffusers' step rounds the latent to float32 at every step: not the float64 trajectory
    rounded = diffusers_loop(model, cond, seeds, T)
    assert float((out.z0 - rounded).abs().max()) > 1e-9


# --------------------------------------------------------------------------------------------
# 2. the store obeys the step


def pair_spec(tmp_path, name, *, batch=3, shift=3.0, partner="flow", **sampler):
    cfg = {"num_inference_steps": T, "agg_steps": 4, "record_cross_eps": True, **sampler}
    return flow_pair.Spec(family=GMMFamilySpec(latent_shape=SHAPE), shift=shift, perturb=0.05, partner=partner,
                          sampler=SamplerConfig(**cfg),
                          run=RunSettings(batch=batch, seed=40, out=tmp_path / f"{name}.zarr", progress=False))


def generator_stream(seed: int, model: int) -> torch.Generator:
    """Model 0 draws from the seed itself, model i > 0 from SeedSequence([seed, i]) (the sampler's rule)."""
    s = seed if model == 0 else int(np.random.SeedSequence([seed, model]).generate_state(1)[0])
    return torch.Generator().manual_seed(s)


@pytest.mark.parametrize("stochastic", [False, True])
def test_every_recorded_flow_step_obeys_diffusers_update(tmp_path, stochastic):
    spec = pair_spec(tmp_path, "pair", flow_stochastic=True if stochastic else None)
    ds = open_run(flow_pair.run(spec, quiet=True)).load()
    # the coordinates, against a fresh diffusers scheduler's sigmas and timesteps
    sched = fresh_sigmas(3.0, T)
    s = sched.sigmas.to(torch.float64).numpy()
    s_t, s_next = s[:-1], s[1:]
    dt = s_next - s_t
    np.testing.assert_allclose(ds.flow_sigma.values, s_t, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ds.dt.values, dt, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ds.t.values, sched.timesteps.to(torch.float64).numpy(), rtol=1e-12)
    A, B, sigma = ((1 - s_next, -(1 - s_next) * s_t, s_next) if stochastic
                   else (np.ones(T), dt, np.zeros(T)))
    for name, want in (("model_A", A), ("model_B", B), ("model_sigma", sigma), ("model_dt", dt),
                       ("model_flow_sigma", s_t)):
        np.testing.assert_allclose(ds[name].values, np.stack([want, want]), rtol=1e-12, atol=1e-15, err_msg=name)
    # the schema: velocities, not epsilons; both steps flow steps; what was recorded is what was planned
    assert "v" in ds and "eps" not in ds and "v_cross" in ds and "v_at_z1" in ds
    assert list(ds.attrs["step_kinds"]) == ["flow", "flow"]
    seeds = [int(x) for x in ds.seed.values]
    checked = 0
    gens = {(i, b): generator_stream(seed, i) for i in range(2) for b, seed in enumerate(seeds)}
    for i in range(2):  # the initial latents are the per-sample generators' first draws
        z_T = torch.stack([torch.randn(SHAPE, generator=gens[(i, b)]) for b in range(len(seeds))]).numpy()
        np.testing.assert_array_equal(ds.z.isel(step=0, model=i).values, z_T)
    for k in range(T):
        for i in range(2):
            z = flat(ds.z.isel(step=k, model=i).values)
            if not np.isfinite(z).all():  # model 2 stops after the window
                continue
            v, mu, noise, z_next, x0 = (flat(ds[q].isel(step=k, model=i).values)
                                        for q in ("v", "mu", "noise", "z_next", "x0"))
            scale = np.abs(z).max() + np.abs(v).max()
            np.testing.assert_allclose(x0, z - s_t[k] * v, rtol=0, atol=8 * F32 * scale)
            want = (1 - s_next[k]) * (z - s_t[k] * v) if stochastic else z + dt[k] * v
            np.testing.assert_allclose(mu, want, rtol=0, atol=8 * F32 * scale, err_msg=f"mu at step {k} model {i}")
            np.testing.assert_allclose(z_next, mu + noise, rtol=0, atol=8 * F32 * np.abs(z_next).max())
            xi = flat(torch.stack([torch.randn(SHAPE, generator=gens[(i, b)]) for b in range(len(seeds))]).numpy()) \
                if stochastic else 0.0
            np.testing.assert_allclose(noise, s_next[k] * xi, rtol=0, atol=8 * F32 * np.abs(z_next).max())
            if k + 1 < T and np.isfinite(ds.z.isel(step=k + 1, model=i).values).all():
                following = "z_shift" if bool(ds.aggregated[k]) else "z_next"
                np.testing.assert_array_equal(ds.z.isel(step=k + 1, model=i).values,
                                              ds[following].isel(step=k, model=i).values)
            checked += 1
    assert checked == T + 4  # model 1 every step, model 2 in the window
    assert (~np.isfinite(ds.z.isel(step=5, model=1).values)).all()


def test_planned_flow_hooks_are_the_emitted_and_recorded_ones(tmp_path):
    spec = pair_spec(tmp_path, "hooks")
    sampler = flow_pair.build(spec)
    emitted = set()
    with sampler.hooks(lambda name, step, value: emitted.add(name)):
        sampler.sample([0, 1])
    planned = set(sampler.plan([0, 1]).names)
    # model 1's own cross slots are laid out but never filled (as for DDIM's eps_cross)
    assert planned - emitted == {"model0.v_cross", "model0.v_at_z1"} and emitted <= planned
    assert not any(".eps" in name for name in planned)
    assert {f"model{i}.{q}" for i in (0, 1) for q in ("v", "mu", "noise", "z_next", "x0", "mu_shift")} <= emitted
    ds = open_run(flow_pair.run(spec, quiet=True))
    assert set(ds.attrs["hook_names"]) == planned


def test_a_flow_and_a_vp_model_record_v_and_eps(tmp_path):
    spec = pair_spec(tmp_path, "vp", partner="vp", record_cross_eps=False, allow_schedule_mismatch=True)
    ds = open_run(flow_pair.run(spec, quiet=True)).load()
    assert list(ds.attrs["step_kinds"]) == ["flow", "ddim"]
    assert np.isfinite(ds.v.isel(model=0).values).all() and np.isfinite(ds.eps.isel(model=1, step=0).values).all()
    assert np.isnan(ds.model_dt.isel(model=1).values).all()  # no flow coordinates for the VP model
    vp = make_scheduler()  # the VP partner's row: DDIM's A = sqrt(abar_prev / abar) at its first step
    vp.set_timesteps(T)
    t0 = int(vp.timesteps[0])
    abar, abar_prev = float(vp.alphas_cumprod[t0]), float(vp.alphas_cumprod[t0 - 1000 // T])
    assert float(ds.model_A[1, 0]) == pytest.approx(math.sqrt(abar_prev / abar), rel=1e-6)


# --------------------------------------------------------------------------------------------
# 3. the shift's mean


def two_flow_models(fam, stochastic=False):
    one = flow_family_model(fam, shift=3.0, stochastic=stochastic, name="a")
    two = flow_family_model(fam, shift=3.0, stochastic=stochastic, name="b", perturb=0.05)
    return [one, two], [fam.condition(position=0), fam.condition(colour=1)]


def test_shift_mean_velocity_targets_the_recorded_velocity(fam):
    models, conds = two_flow_models(fam)
    sampler = AMDMSampler(models, conds, SamplerConfig(num_inference_steps=T, agg_steps=4, shift_mean="velocity"))
    out, ds = sampler.run_with_cache([0, 1])
    for k in range(4):
        for i in range(2):
            np.testing.assert_array_equal(ds.mu_shift.isel(step=k, model=i).values, ds.v.isel(step=k, model=i).values)
            # and the shift moved z' by eta towards v's coordinates (eq. 7 with mu = v)
            zs, agg, v = (flat(x) for x in (ds.z_shift.isel(step=k, model=i).values, ds.agg_z.isel(step=k).values,
                                            ds.v.isel(step=k, model=i).values))
            d = agg - v
            want = agg - 0.3 * d / np.linalg.norm(d, axis=1, keepdims=True)
            np.testing.assert_allclose(zs, want, rtol=0, atol=8 * F32 * np.abs(agg).max())
    assert out.model_calls == 2 * 4 + (T - 4)  # no extra call: v is the step's own output


@pytest.mark.parametrize("stochastic", [False, True])
def test_shift_mean_aggregate_is_the_step_location_at_the_aggregate(fam, stochastic):
    models, conds = two_flow_models(fam, stochastic)
    sampler = AMDMSampler(models, conds, SamplerConfig(num_inference_steps=T, agg_steps=4, shift_mean="aggregate"))
    out, ds = sampler.run_with_cache([2, 3])
    sched = fresh_sigmas(3.0, T)
    s = sched.sigmas.to(torch.float64)
    for k in range(4):
        agg = torch.from_numpy(ds.agg_z.isel(step=k).values)
        for i in range(2):
            v = models[i](agg, sched.timesteps[k], conds[i]).double()
            a64 = agg.double()
            want = (1 - s[k + 1]) * (a64 - s[k] * v) if stochastic else a64 + (s[k + 1] - s[k]) * v
            got = ds.mu_shift.isel(step=k, model=i).values
            np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=8 * F32 * float(a64.abs().max() + v.abs().max()))
            # not the step's own location mu (at z_t^i): the test can tell them apart (except where the
            # stochastic location (1 - s_next)(z - s v) does not depend on z: at s = 1, z - v = E[x0])
            if k > 0 or not stochastic:
                assert np.abs(got - ds.mu.isel(step=k, model=i).values).max() > 1e-3
    assert out.model_calls == 2 * 4 + (T - 4) + 2 * 4  # one more call per model and aggregation step


# --------------------------------------------------------------------------------------------
# 4. batch independence


def test_flow_samples_do_not_depend_on_their_batch_mates(fam):
    models, conds = two_flow_models(fam, stochastic=True)
    sampler = AMDMSampler(models, conds, SamplerConfig(num_inference_steps=T, agg_steps=4))
    seeds = [11, 12, 13, 14]
    whole = sampler.sample(seeds).z0
    halves = torch.cat([sampler.sample(seeds[:2]).z0, sampler.sample(seeds[2:]).z0])
    chunked = sampler.sample(seeds, chunk_size=2).z0
    scale = float(whole.abs().max())
    assert float((whole - halves).abs().max()) <= 1e-5 * scale
    assert float((whole - chunked).abs().max()) <= 1e-5 * scale
    assert float((whole[0] - whole[1]).abs().max()) > 0.1  # different seeds, different samples


# --------------------------------------------------------------------------------------------
# 5. errors and schedules


def one_line(exc_info, *fragments):
    text = str(exc_info.value)
    assert "\n" not in text
    for f in fragments:
        assert f in text, (f, text)


def test_a_flow_model_with_a_vp_model_needs_insist(fam):
    flow, vp = flow_family_model(fam), fam.model()
    conds = [fam.condition(position=0), fam.condition(colour=0)]
    cfg = SamplerConfig(num_inference_steps=T, agg_steps=4)
    with pytest.raises(ValueError) as exc:
        AMDMSampler([flow, vp], conds, cfg)
    one_line(exc, "rectified-flow", "--insist", "VP")
    out = AMDMSampler([flow, vp], conds, cfg.replace(allow_schedule_mismatch=True)).sample([0, 1])
    assert torch.isfinite(out.z0).all() and out.model_calls == 2 * 4 + (T - 4)


def test_flow_models_of_two_shifts_are_two_ecosystems(fam):
    a, b = flow_family_model(fam, shift=1.0), flow_family_model(fam, shift=3.0)
    with pytest.raises(ValueError) as exc:
        AMDMSampler([a, b], [None, None], SamplerConfig(num_inference_steps=T, agg_steps=4))
    one_line(exc, "model 1", "--insist")
    # with --insist each steps its own grid, by index: model 1's first input is at its own shifted timestep
    seen = []

    class Spy:  # the partner, recording the timesteps it is called at
        scheduler, latent_shape, dtype, device = b.scheduler, b.latent_shape, b.dtype, b.device

        def __call__(self, z, t, cond):
            seen.append(float(t))
            return b(z, t, cond)

        def describe(self):
            return b.describe()

    conds = [fam.condition(position=0), fam.condition(colour=0)]
    cfg = SamplerConfig(num_inference_steps=T, agg_steps=4, allow_schedule_mismatch=True)
    AMDMSampler([a, Spy()], conds, cfg).sample([0])
    ref = FlowMatchEulerDiscreteScheduler.from_config(b.scheduler.config)
    ref.set_timesteps(T)
    assert seen[:4] == [float(t) for t in ref.timesteps[:4]]


@pytest.mark.parametrize("models, cfg, fragments", [
    ("vp", {"shift_mean": "velocity"}, ("shift_mean='velocity'", "model 0", "flow models")),
    ("vp", {"flow_stochastic": True}, ("flow_stochastic=True", "flow models")),
    ("flow", {"ddim_eta": 0.5}, ("ddim_eta=0.5", "flow_stochastic")),
])
def test_settings_one_kind_of_step_cannot_take(fam, models, cfg, fragments):
    pair = [fam.model(), fam.model(perturb=0.05)] if models == "vp" else \
        [flow_family_model(fam), flow_family_model(fam, perturb=0.05)]
    with pytest.raises(ValueError) as exc:
        AMDMSampler(pair, [None, None], SamplerConfig(num_inference_steps=T, agg_steps=4, **cfg))
    one_line(exc, *fragments)


def test_dynamic_shifting_needs_a_flow_mu(fam):
    model = flow_family_model(fam, use_dynamic_shifting=True)
    cfg = SamplerConfig(num_inference_steps=T, weights=())
    with pytest.raises(ValueError) as exc:
        AMDMSampler([model], [None], cfg)
    one_line(exc, "no step size", "flow_mu")
    model.flow_mu = 0.7  # the resolution shift: now the step sizes are diffusers' for that mu
    sampler = AMDMSampler([model], [None], cfg)
    ref = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, use_dynamic_shifting=True)
    ref.set_timesteps(T, mu=0.7)
    np.testing.assert_allclose(sampler.coefficients[0].flow_sigma.values, ref.sigmas[:-1].double().numpy(), rtol=1e-12)
    plain = fresh_sigmas(1.0, T).sigmas[:-1].double().numpy()
    assert np.abs(sampler.coefficients[0].flow_sigma.values - plain).max() > 1e-3


def test_an_unsupported_flow_scheduler_is_refused(fam):
    model = FlowGMMDenoiser(fam.mixture, FlowMatchHeunDiscreteScheduler(num_train_timesteps=1000))
    assert schedule_kind(model.scheduler) == "flow"
    with pytest.raises(ValueError) as exc:
        AMDMSampler([model], [None], SamplerConfig(num_inference_steps=T, weights=()))
    one_line(exc, "FlowMatchHeunDiscreteScheduler", "FlowMatchEulerDiscreteScheduler")


def test_same_schedule_and_schedule_kind():
    one, three = make_flow_scheduler(1.0), make_flow_scheduler(3.0)
    assert not same_schedule(one, three) and not same_schedule(three, one)
    assert same_schedule(three, make_flow_scheduler(3.0))
    assert same_schedule(three, make_flow_scheduler(3.0, stochastic=True))  # how one samples, not the SDE
    ddim = make_scheduler()
    assert not same_schedule(one, ddim) and not same_schedule(ddim, one)
    assert not same_schedule(one, FlowMatchHeunDiscreteScheduler(num_train_timesteps=1000, shift=1.0))
    assert (schedule_kind(one), schedule_kind(ddim), schedule_kind(VESchedule(ddim.config))) == ("flow", "vp", "ve")


# --------------------------------------------------------------------------------------------
# 6. the coefficients and the shell radius


@pytest.mark.parametrize("stochastic", [False, True])
def test_flow_coefficients_are_diffusers_step(stochastic):
    steps = 8
    coef = flow_coefficients(make_flow_scheduler(3.0), steps, stochastic=stochastic)
    sched = fresh_sigmas(3.0, steps, stochastic)
    g = torch.Generator().manual_seed(0)
    for k, t in enumerate(sched.timesteps):
        z, v = torch.randn((3, *SHAPE), generator=g), torch.randn((3, *SHAPE), generator=g)
        noise_gen = torch.Generator().manual_seed(100 + k)
        twin = torch.Generator().set_state(noise_gen.get_state())
        got = sched.step(v, t, z, generator=noise_gen).prev_sample.double()
        xi = torch.randn(z.shape, generator=twin).double()
        A, B, sigma = (float(coef[c][k]) for c in ("A", "B", "sigma"))
        want = A * z.double() + B * v.double() + sigma * xi
        assert float((got - want).abs().max()) <= 8 * F32 * float(want.abs().max() + 1)
    assert coef.attrs["stochastic"] is stochastic and bool((coef.sigma.values > 0).any()) is stochastic


def test_flow_shell_radius_is_the_interpolant_second_moment():
    rng = np.random.default_rng(7)
    n, draws = 64, 40_000
    mean, sd = rng.normal(0, 1.5, n), rng.uniform(0.3, 1.2, n)
    x0_sq = float((mean**2).sum() + (sd**2).sum())
    for s in (0.0, 0.25, 0.5, 0.8, 1.0):
        x0 = mean + sd * rng.standard_normal((draws, n))
        z = (1 - s) * x0 + s * rng.standard_normal((draws, n))
        sq = (z**2).sum(1)
        se = sq.std(ddof=1) / math.sqrt(draws)
        assert abs(sq.mean() - float(flow_shell_radius(s, n, x0_sq)) ** 2) <= 5 * se, s
    assert float(flow_shell_radius(0.5, n, n)) == pytest.approx(math.sqrt(n / 2))  # not sqrt(n)


# --------------------------------------------------------------------------------------------
# 7. eq. (47)


def test_flow_delta_bound_is_eq47():
    rng = np.random.default_rng(3)
    L_theta, L_task, L_t, step = (rng.uniform(0, 2, 5) for _ in range(4))
    np.testing.assert_allclose(bounds.flow_delta_bound(L_theta, L_task, L_t), L_theta * L_task + L_t, rtol=1e-15)
    np.testing.assert_allclose(bounds.flow_delta_bound(L_theta, L_task, L_t, step),
                               step * (L_theta * L_task + L_t), rtol=1e-15)
    assert bounds.flow_delta_bound(2.0, 0.5, 0.25, 0.1) == pytest.approx(0.125)
    for args, name in (((-1.0, 1.0, 1.0), "L_theta"), ((1.0, 1.0, -0.5), "L_t"), ((1.0, 1.0, 1.0, -0.1), "step")):
        with pytest.raises(ValueError) as exc:
            bounds.flow_delta_bound(*args)
        one_line(exc, name, ">= 0")


def test_the_ecosystem_check_takes_flow_models(fam):
    # Section 3.1's check for any two denoisers: two flow models of one shift are one ecosystem, and their
    # functional proximity compares velocities on the flow's own interpolant; a flow and a VP model are not
    from amdm_geom.models.ecosystem import check_denoisers

    a, b = flow_family_model(fam), flow_family_model(fam, perturb=0.05)
    cond = fam.condition(position=0)
    rep = check_denoisers(a, b, cond, cond, timesteps=(999, 500), batch=2)
    assert rep.verdict == "same"
    g = torch.Generator().manual_seed(0)  # as the check draws them: x0, then one xi per timestep in order
    x0 = torch.randn((2, *a.latent_shape), generator=g, dtype=torch.float64)
    torch.randn(x0.shape, generator=g, dtype=torch.float64)  # (t = 999's)
    z = (0.5 * x0 + 0.5 * torch.randn(x0.shape, generator=g, dtype=torch.float64)).float()
    va, vb = (m(z, torch.tensor(500.0), cond).double().flatten(1) for m in (a, b))
    assert rep.proximity[500] == pytest.approx(float(((va - vb).norm(dim=1) / va.norm(dim=1)).mean()), rel=1e-12)
    other = check_denoisers(a, fam.model(), cond, cond, timesteps=(999,))
    assert other.verdict == "different" and other.checks["sde"]["differences"]["kind"] == ["flow", "vp"]
    assert not other.proximity and "not comparable" in other.proximity_kind

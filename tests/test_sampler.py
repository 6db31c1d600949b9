"""The AMDM sampler (Algorithm 1): bit-for-bit agreement with a plain diffusers loop for one
model, agreement with Algorithm 1 written out independently, hooks, seeds and errors."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig, hook_names, sample_generators

SHAPE = (4, 8, 8)


@pytest.fixture(scope="module")
def fam():
    return fine_grained_family(SHAPE, separation=6.0, seed=2)


def pair(fam, **cfg):
    m1, m2 = fam.model(name="a"), fam.model(name="b")
    conds = [fam.condition(position=0), fam.condition(colour=1)]
    return AMDMSampler([m1, m2], conds, SamplerConfig(**{"num_inference_steps": 12, "agg_steps": 5, **cfg}))


def plain_diffusers_loop(model, cond, seeds, steps, eta):
    """A plain DDIM loop over diffusers' DDIMScheduler.step, one generator per sample."""
    sched = DDIMScheduler.from_config(model.scheduler.config)
    sched.set_timesteps(steps)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    z = torch.stack([torch.randn(model.latent_shape, generator=g) for g in gens]).to(model.dtype)
    for t in sched.timesteps:
        eps = model(z, int(t), cond)
        xi = torch.stack([torch.randn(model.latent_shape, generator=g) for g in gens]).to(model.dtype) \
            if eta > 0 else None
        z = sched.step(eps, int(t), z, eta=eta, variance_noise=xi).prev_sample
    return z


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_one_model_is_a_plain_diffusers_loop_bit_for_bit(fam, eta):
    model, cond = fam.model(), fam.condition(position=1)
    sampler = AMDMSampler([model], [cond], SamplerConfig(num_inference_steps=15, weights=(), ddim_eta=eta))
    out = sampler.sample([3, 7, 11])
    assert torch.equal(out.z0, plain_diffusers_loop(model, cond, [3, 7, 11], 15, eta))
    assert out.model_calls == 15


def test_empty_window_is_model_one_alone_bit_for_bit(fam):
    sampler = pair(fam, agg_steps=0, ddim_eta=1.0)
    out = sampler.sample([0, 1])
    assert torch.equal(out.z0, plain_diffusers_loop(sampler.models[0], sampler.conds[0], [0, 1], 12, 1.0))
    assert out.model_calls == 12  # model 2 never runs without a window


def numpy_slerp(a, b, w):
    a2, b2 = a.reshape(len(a), -1), b.reshape(len(b), -1)
    cos = np.sum(a2 * b2, 1) / (np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1))
    phi = np.arccos(np.clip(cos, -1, 1))[:, None]
    return (np.sin((1 - w) * phi) / np.sin(phi) * a2 + np.sin(w * phi) / np.sin(phi) * b2).reshape(a.shape)


def numpy_shift(z, mu, eta):
    d = (z - mu).reshape(len(z), -1)
    return (z.reshape(len(z), -1) - eta * d / np.linalg.norm(d, axis=1, keepdims=True)).reshape(z.shape)


@pytest.mark.parametrize("ddim_eta", [0.0, 1.0])
def test_two_models_follow_algorithm_one_written_out(fam, ddim_eta):
    sampler = pair(fam, ddim_eta=ddim_eta, weights=(0.4,), eta=(0.3, 0.5))
    seeds = [5, 6]
    out = sampler.sample(seeds)
    # Algorithm 1 by hand: diffusers' step per model, eq. (6) and eq. (7) in numpy float64
    m, y = sampler.models, sampler.conds
    scheds = []
    for model in m:
        s = DDIMScheduler.from_config(model.scheduler.config)
        s.set_timesteps(12)
        scheds.append(s)
    gens = [sample_generators(seeds, i) for i in range(2)]
    z = [torch.stack([torch.randn(SHAPE, generator=g) for g in gs]) for gs in gens]
    for k, t in enumerate(scheds[0].timesteps):
        t = int(t)
        running = range(2) if k < 5 else range(1)
        nxt, mus = {}, {}
        for i in running:
            eps = m[i](z[i], t, y[i])
            mus[i] = scheds[i].step(eps, t, z[i], eta=ddim_eta, variance_noise=torch.zeros_like(z[i])).prev_sample
            xi = torch.stack([torch.randn(SHAPE, generator=g) for g in gens[i]]) if ddim_eta > 0 else None
            nxt[i] = scheds[i].step(eps, t, z[i], eta=ddim_eta, variance_noise=xi).prev_sample
        if k < 5:
            agg = numpy_slerp(nxt[0].double().numpy(), nxt[1].double().numpy(), 0.4)
            for i, eta in zip(range(2), (0.3, 0.5)):
                z[i] = torch.from_numpy(numpy_shift(agg, mus[i].double().numpy(), eta)).float()
        else:
            z[0] = nxt[0]
    np.testing.assert_allclose(out.z0.numpy(), z[0].numpy(), rtol=1e-4, atol=1e-5)
    assert out.model_calls == 12 + 5


def test_shift_mean_at_the_aggregate_costs_one_call_per_model_and_step(fam):
    out = pair(fam, shift_mean="aggregate").sample([0])
    assert out.model_calls == 12 + 5 + 2 * 5


def test_hooks_emit_the_named_points_per_step_and_are_removed(fam):
    sampler = pair(fam)
    seen = []
    with sampler.hooks(lambda name, step, value: seen.append((name, step, tuple(value.shape)))):
        sampler.sample([0, 1])
    names_at = lambda k: {n for n, s, _ in seen if s == k}  # noqa: E731
    in_window = set(hook_names(2))
    assert names_at(0) == in_window and names_at(4) == in_window
    per_step = {"z", "eps", "x0", "mu", "noise", "z_next"}
    assert names_at(5) == {f"model0.{q}" for q in per_step}
    assert all(shape == (2, *SHAPE) for _, _, shape in seen)
    count = len(seen)
    sampler.sample([0, 1])
    assert len(seen) == count  # removed on exit


def test_names_filter_glob_list_and_callable(fam):
    sampler = pair(fam)
    for names_filter, expected in [
        ("model1.*", {f"model1.{q}" for q in ("z", "eps", "x0", "mu", "noise", "z_next", "mu_shift", "z_shift")}),
        (["agg.z", "model0.z"], {"agg.z", "model0.z"}),
        (lambda n: n.endswith(".eps"), {"model0.eps", "model1.eps"}),
    ]:
        seen = set()
        with sampler.hooks(lambda name, step, value: seen.add(name), names_filter):
            sampler.sample([0])
        assert seen == expected


def test_a_sample_does_not_depend_on_its_batch_mates(fam):
    sampler = pair(fam, ddim_eta=1.0)
    whole = sampler.sample([10, 11, 12]).z0
    alone = sampler.sample([11]).z0
    np.testing.assert_allclose(whole[1:2], alone, rtol=1e-6, atol=1e-6)


def test_shared_init_and_independent_init(fam):
    _, cache = pair(fam, shared_init=True).run_with_cache([0, 1], names_filter="model*.z")
    assert np.array_equal(cache.z.isel(step=0, model=0), cache.z.isel(step=0, model=1))
    _, cache = pair(fam).run_with_cache([0, 1], names_filter="model*.z")
    z0 = cache.z.isel(step=0).values.reshape(2, 2, -1)
    cos = np.sum(z0[0] * z0[1], 1) / (np.linalg.norm(z0[0], axis=1) * np.linalg.norm(z0[1], axis=1))
    assert np.all(np.abs(cos) < 0.3)  # independent N(0, I) draws are nearly orthogonal


@pytest.mark.parametrize("mix", ["lerp", "orthogonal_mix"])
def test_mixing_rules(fam, mix):
    _, c = pair(fam, mix=mix, weights=(0.6,)).run_with_cache([0, 1], names_filter=["agg.z", "model*.z_next"])
    a, b = c.z_next.isel(step=2, model=0).values, c.z_next.isel(step=2, model=1).values
    expected = 0.4 * a + 0.6 * b if mix == "lerp" else 0.6 * a + math.sqrt(1 - 0.36) * b
    np.testing.assert_allclose(c.agg_z.isel(step=2).values, expected, rtol=1e-5, atol=1e-6)


def test_cross_ecosystem_models_step_with_their_own_schedule(fam):
    m1, m2 = fam.model(), fam.model("cosine")
    conds = [fam.condition(position=0), fam.condition(colour=1)]
    with pytest.raises(ValueError, match=r"noise schedule differs .*; pass --insist \(allow_schedule_mismatch=True\) "
                                         r"to aggregate them anyway"):
        AMDMSampler([m1, m2], conds, SamplerConfig(num_inference_steps=8, agg_steps=3))
    sampler = AMDMSampler([m1, m2], conds,
                          SamplerConfig(num_inference_steps=8, agg_steps=3, allow_schedule_mismatch=True))
    _, c = sampler.run_with_cache([0], names_filter=["model*.z", "model*.eps", "model*.mu"])
    k = 1
    for i in range(2):
        A, B = float(c.model_A.isel(model=i, step=k)), float(c.model_B.isel(model=i, step=k))
        z, eps, mu = (c[v].isel(step=k, model=i).values.astype(np.float64) for v in ("z", "eps", "mu"))
        np.testing.assert_allclose(mu, A * z + B * eps, rtol=1e-5, atol=1e-5)
    assert float(c.model_A.isel(model=0, step=k)) != float(c.model_A.isel(model=1, step=k))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda f: AMDMSampler([f.model(), f.model()], [None], SamplerConfig()),
         "one condition per model: 2 models, got 1"),
        (lambda f: AMDMSampler([f.model(), fine_grained_family((4, 8, 9)).model()], [None, None], SamplerConfig()),
         r"one latent shape; got \[\(4, 8, 8\), \(4, 8, 9\)\]"),
        (lambda f: pair(f, weights=(0.5, 0.5)), r"weights takes 1 weight\(s\) w_1..w_\{N-1\} for 2 models; got 2"),
        (lambda f: pair(f, weights=(1.5,)), r"weights must be in \[0, 1\]; got 1.5"),
        (lambda f: pair(f, eta=(0.3, 0.3, 0.3)), r"eta must be one value or one per model \(2\); got 3"),
        (lambda f: pair(f, eta=-0.1), r"eta must be a finite number >= 0; got -0.1"),
        (lambda f: pair(f, agg_window=(3, 20)),
         r"agg_window must be \(start, stop\) with 0 <= start <= stop <= 12; got \(3, 20\)"),
        (lambda f: pair(f, agg_steps=13), r"agg_steps must be an int in \[0, 12\]; got 13"),
        (lambda f: pair(f, mix="nlerp"), "mix must be one of"),
        (lambda f: pair(f, ddim_eta=-1.0), "ddim_eta must be a finite float >= 0"),
        (lambda f: AMDMSampler([], [], SamplerConfig()), "at least 1 model"),
    ],
)
def test_clear_errors_before_any_work(fam, make, match):
    with pytest.raises(ValueError, match=match) as info:
        make(fam)
    assert "\n" not in str(info.value)


# -- numeric settings: numpy and torch scalars are Python numbers; bools, NaN and inf are refused ---


@pytest.mark.parametrize(
    "given,plain",
    [
        ({"num_inference_steps": np.int64(12), "agg_steps": np.int32(5)}, {}),
        ({"num_inference_steps": torch.tensor(12), "agg_steps": torch.tensor(5)}, {}),
        ({"weights": (np.float64(0.6),), "eta": np.float32(0.25), "ddim_eta": np.int64(1)},
         {"weights": (0.6,), "eta": 0.25, "ddim_eta": 1}),
        ({"weights": np.array([0.6]), "eta": (torch.tensor(0.5), np.float64(0.25))},
         {"weights": (0.6,), "eta": (0.5, 0.25)}),
        ({"weights": [torch.tensor(0.3)], "eta": torch.tensor(0.3), "ddim_eta": torch.tensor(1.0)},
         {"weights": (float(torch.tensor(0.3)),), "eta": float(torch.tensor(0.3)), "ddim_eta": 1.0}),
        ({"agg_window": (np.int64(2), torch.tensor(6))}, {"agg_window": (2, 6)}),
        ({"shared_init": np.bool_(True)}, {"shared_init": True}),
    ],
)
def test_numpy_and_torch_scalars_are_accepted_with_identical_results(fam, given, plain):
    config = SamplerConfig(**{"num_inference_steps": 12, "agg_steps": 5, **given})
    expected = SamplerConfig(**{"num_inference_steps": 12, "agg_steps": 5, **plain})
    assert config == expected
    for name in ("num_inference_steps", "agg_steps", "ddim_eta"):
        assert type(getattr(config, name)) is type(getattr(expected, name))
    assert all(type(w) is float for w in config.weights)
    a = pair(fam, **{k: v for k, v in given.items() if k not in ("num_inference_steps", "agg_steps")})
    b = pair(fam, **plain)
    assert a.describe() == b.describe()  # (JSON-able: what a store keeps)
    assert torch.equal(a.sample([3]).z0, b.sample([3]).z0)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("num_inference_steps", True, r"num_inference_steps must be an int >= 1; got True"),
        ("num_inference_steps", 12.0, r"num_inference_steps must be an int >= 1; got 12.0"),
        ("num_inference_steps", torch.tensor(12.0), r"num_inference_steps must be an int >= 1; got 12.0"),
        ("num_inference_steps", np.bool_(True), r"num_inference_steps must be an int >= 1; got (np\.)?(True|bool)"),
        ("agg_steps", False, r"agg_steps must be an int in \[0, 12\]; got False"),
        ("agg_steps", np.float64(3.5), r"agg_steps must be an int in \[0, 12\]; got 3.5"),
        ("weights", (True,), r"weights must be in \[0, 1\]; got True"),
        ("weights", (float("nan"),), r"weights must be in \[0, 1\]; got nan"),
        ("weights", (np.float64("inf"),), r"weights must be in \[0, 1\]; got inf"),
        ("weights", (torch.tensor(float("nan")),), r"weights must be in \[0, 1\]; got nan"),
        ("weights", 0.5, r"weights must be a sequence of N - 1 numbers in \[0, 1\]; got 0.5"),
        ("eta", float("nan"), r"eta must be a finite number >= 0; got nan"),
        ("eta", np.float64("inf"), r"eta must be a finite number >= 0; got inf"),
        ("eta", True, r"eta must be a finite number >= 0; got True"),
        ("eta", (0.3, float("inf")), r"eta must be a finite number >= 0; got inf"),
        ("ddim_eta", True, r"ddim_eta must be a finite float >= 0; got True"),
        ("ddim_eta", float("nan"), r"ddim_eta must be a finite float >= 0; got nan"),
        ("ddim_eta", torch.tensor(float("inf")), r"ddim_eta must be a finite float >= 0; got inf"),
        ("agg_window", (0, float("nan")), r"agg_window must be \(start, stop\) with 0 <= start <= stop <= 12"),
        ("agg_window", 3, r"agg_window must be \(start, stop\) with 0 <= start <= stop <= 12; got \(3,\)"),
        ("shared_init", 1, r"shared_init must be True or False; got 1"),
    ],
)
def test_bad_numbers_are_refused_in_one_line_naming_the_field(fam, field, value, match):
    with pytest.raises(ValueError, match=match) as info:
        pair(fam, **{field: value})
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=match):  # the same check without models, as the probes use it
        SamplerConfig(**{"num_inference_steps": 12, "agg_steps": 5, field: value}).check(2)


def test_steps_beyond_the_training_timesteps_are_refused(fam):
    with pytest.raises(ValueError, match=r"num_inference_steps must be <= 1000, model 0's number of training "
                                         r"timesteps; got 1001"):
        pair(fam, num_inference_steps=1001)


@pytest.mark.parametrize("seeds,shown", [([1.7], "1.7"), ([0, 2.5], "2.5"), ([-1], "-1"), ([2**63], str(2**63)),
                                         ([True], "True"), (["3"], "'3'"), ([torch.tensor(0.5)], "tensor")])
def test_bad_seeds_are_refused_before_any_work(fam, seeds, shown):
    sampler = pair(fam)
    started = []
    with sampler.hooks(lambda *a: started.append(a)):
        with pytest.raises(ValueError,
                           match=r"seeds must be ints in \[0, 2\*\*63\), one sample per seed; got ") as info:
            sampler.sample(seeds)
    assert shown in str(info.value) and "\n" not in str(info.value) and not started


def test_integer_like_seeds_are_the_same_seed(fam):
    sampler = pair(fam)
    reference = sampler.sample([3, 4]).z0
    for seeds in ([np.int64(3), np.int64(4)], [torch.tensor(3), torch.tensor(4)], [3.0, 4.0], np.array([3, 4])):
        out = sampler.sample(seeds)
        assert out.seeds == [3, 4] and all(type(s) is int for s in out.seeds)
        assert torch.equal(out.z0, reference)


def test_planned_hook_names_are_what_a_run_emits(fam):
    from amdm_geom.sampling import planned_hook_names

    for cfg in ({}, {"agg_steps": 0}, {"record_cross_eps": True}):
        sampler = pair(fam, **cfg)
        seen = set()
        with sampler.hooks(lambda name, step, value: seen.add(name)):
            sampler.sample([0])
        planned = set(planned_hook_names(2, sampler.config))
        assert planned == set(sampler.plan([0]).names)
        assert seen <= planned  # (the store keeps a few slots a run may leave NaN, e.g. model0.eps_cross)
        assert ("agg.z" in planned) is ("agg.z" in seen) is (cfg.get("agg_steps") != 0)
        assert any(n.endswith("eps_cross") for n in planned) is cfg.get("record_cross_eps", False)
    assert planned_hook_names(2, SamplerConfig(), "agg.*") == ["agg.z"]


def test_late_window_runs_models_independently_until_it_closes(fam):
    sampler = pair(fam, agg_window=(4, 8))
    seen = []
    with sampler.hooks(lambda name, step, value: seen.append((name, step))):
        out = sampler.sample([0])
    assert ("model1.z", 0) in seen and ("model1.z", 7) in seen and ("model1.z", 8) not in seen
    assert {s for n, s in seen if n == "agg.z"} == {4, 5, 6, 7}
    assert out.model_calls == 12 + 8


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_one_tiny_unet_is_a_plain_diffusers_loop_bit_for_bit(guidance):
    from amdm_geom.models.unet import UNetDenoiser, make_condition, make_tiny_unet

    model = UNetDenoiser(make_tiny_unet(0, sample_size=16, block_out_channels=(8, 16)), guidance_scale=guidance)
    cond = make_condition(1, dim=model.cross_attention_dim)
    sampler = AMDMSampler([model], [cond], SamplerConfig(num_inference_steps=6, weights=(), ddim_eta=1.0))
    assert torch.equal(sampler.sample([0, 1]).z0, plain_diffusers_loop(model, cond, [0, 1], 6, 1.0))


@pytest.mark.parametrize("mix", ["slerp", "lerp"])
def test_aggregation_in_chunks_of_rows_is_the_whole_batch_to_rounding(fam, monkeypatch, mix):
    """The aggregation runs over chunks of rows of at most CHUNK_BYTES of float64 (here 2 rows of
    a 7-sample batch: chunks of 2, 2, 2, 1); the geometry is per sample, so every hooked quantity
    agrees with the whole batch at once to float32 rounding (per-row reductions may block
    differently by batch size)."""
    from amdm_geom.sampling import sampler as sampler_module

    names = ["agg.z", "model*.z_shift", "model*.mu_shift", "model*.eps"]
    seeds = [3, 1, 4, 1_000, 5, 9, 2]
    whole, whole_cache = pair(fam, mix=mix).run_with_cache(seeds, names_filter=names)
    monkeypatch.setattr(sampler_module, "CHUNK_BYTES", 2 * 8 * math.prod(SHAPE))
    calls, step = [], sampler_module.aggregate_step
    monkeypatch.setattr(sampler_module, "aggregate_step", lambda zs, *a: calls.append(len(zs[0])) or step(zs, *a))
    chunked, chunked_cache = pair(fam, mix=mix).run_with_cache(seeds, names_filter=names)
    assert calls == [2, 2, 2, 1] * 5  # 5 aggregation steps, 4 chunks each
    scale = float(whole.z0.abs().max())
    np.testing.assert_allclose(chunked.z0, whole.z0, rtol=0, atol=1e-5 * scale)
    for name in whole_cache.data_vars:
        a, b = whole_cache[name].values, chunked_cache[name].values
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(np.nan_to_num(b), np.nan_to_num(a), rtol=0, atol=1e-5 * scale, err_msg=name)

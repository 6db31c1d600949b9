"""The peers under guidance and the FKC product of experts (amdm_geom.peers), against independent
computations: numpy transcriptions of the authors' updates (SUPERDIFF's guided AND from
necludov/super-diffusion ``applications/images/clip_eval.py``; Composable Diffusion's ``model_fn``),
plain diffusers DDPM loops, the exact SMC weight of delta experts, the product of two Gaussians in
closed form, and evaluations counted by the models themselves."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from amdm_geom.core.schedules import make_scheduler
from amdm_geom.peers import composable, fkc_product, solve_kappa, superdiff_and

SEEDS = [3, 7, 11, 19]


class CondGaussian:
    """Data N(mean_c, s_c^2 I) under condition c (``"null"``: the unconditional one): the exact
    diffused epsilon; counts its calls."""

    def __init__(self, table: dict, scheduler, guidance_scale: float = 1.0):
        self.table = {c: (torch.as_tensor(m, dtype=torch.float64), float(s)) for c, (m, s) in table.items()}
        self.scheduler = scheduler
        self.latent_shape = tuple(next(iter(self.table.values()))[0].shape)
        self.dtype, self.device = torch.float32, torch.device("cpu")
        self.guidance_scale = guidance_scale
        self.calls = 0

    def __call__(self, z, t, cond):
        self.calls += 1
        mean, s = self.table[cond]
        a = float(self.scheduler.alphas_cumprod.double()[int(t)])
        return (math.sqrt(1 - a) * (z.double() - math.sqrt(a) * mean) / (a * s**2 + 1 - a)).float()

    def null_condition(self):
        return "null"

    def describe(self):
        return {}


def experts(dim=6, s=0.3, clip=False):
    """Two conditional models sharing one unconditional N(0, 0.8^2 I) (one network, as the authors')."""
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(dim, generator=g) - 0.8, torch.rand(dim, generator=g) - 0.2
    sched = make_scheduler(clip_sample=clip)
    table = {"a": (a, s), "b": (b, s), "null": (torch.zeros(dim), 0.8)}
    return CondGaussian(table, sched), CondGaussian(table, sched)


def ddpm_coefficients(sched, t, t_prev):
    """The DDPM (eta = 1) step as mean = A z + B eps, std sigma (float64; DDIM eq. 12/16 at eta = 1)."""
    ac = sched.alphas_cumprod.double()
    a = float(ac[t])
    ap = float(ac[t_prev]) if t_prev >= 0 else float(sched.final_alpha_cumprod)
    var = (1 - ap) / (1 - a) * (1 - a / ap)
    return math.sqrt(ap / a), math.sqrt(max(1 - ap - var, 0.0)) - math.sqrt(ap) * math.sqrt(1 - a) / math.sqrt(a), \
        math.sqrt(var)


def grid(sched, steps):
    s = DDIMScheduler.from_config(sched.config)
    s.set_timesteps(steps)
    stride = s.config.num_train_timesteps // steps
    return s, [(int(t), int(t) - stride) for t in s.timesteps]


def their_and_kappa(x, v_o, v_b, v_u, dx_noise, dsigma, s):
    """Their AND (clip_eval.py, method "and"), numpy: kappa and the step dx, per sample (rows)."""
    dx_ind = 2 * dsigma * (v_u + s * (v_b - v_u)) + dx_noise
    kappa = (abs(dsigma) * ((v_b - v_o) * (v_b + v_o)).sum(1) - (dx_ind * (v_o - v_b)).sum(1))
    kappa = kappa / (2 * dsigma * s * ((v_o - v_b) ** 2).sum(1))
    vf = v_u + s * ((v_b - v_u) + kappa[:, None] * (v_o - v_b))
    return kappa, 2 * dsigma * vf + dx_noise


# -- SUPERDIFF's guided AND -------------------------------------------------------------------------

def test_guided_kappa_is_their_formula_and_equalises_the_unguided_densities():
    rng = np.random.default_rng(4)
    x, v_o, v_b, v_u = (rng.standard_normal((5, 12)) for _ in range(4))
    dsigma, sigma, s = -0.3, 2.0, 7.5
    noise = math.sqrt(2 * abs(dsigma) * sigma) * rng.standard_normal((5, 12))
    kappa_theirs, dx = their_and_kappa(x, v_o, v_b, v_u, noise, dsigma, s)
    t = torch.as_tensor
    means = [t(x + 2 * dsigma * v_b), t(x + 2 * dsigma * v_o)]  # unguided: the densities tracked
    guided = [t(x + 2 * dsigma * (v_u + s * (v - v_u))) for v in (v_b, v_o)]  # the field stepped along
    kappa = solve_kappa(means, t(noise), guided)
    np.testing.assert_allclose(kappa[:, 1].numpy(), kappa_theirs, rtol=1e-9, atol=1e-9)
    # their log-density increments of the unguided models are equal after the step
    inc = [(-abs(dsigma) / sigma * v**2 - dx * v / sigma).sum(1) for v in (v_o, v_b)]
    np.testing.assert_allclose(inc[0], inc[1], rtol=1e-9, atol=1e-8)
    # and differ for the guided-density kappa the toolkit used before (equalising guided densities)
    old = solve_kappa(guided, t(noise))[:, 1].numpy()
    assert np.abs(old - kappa_theirs).max() > 0.05


def transcribed_and(e1, e2, seeds, steps, s):
    """Their guided AND loop, numpy float64, on the DDPM step written as their Euler step:
    x = A z, 2 dsigma v = B eps (any dsigma < 0), the noise sigma xi from one generator per seed."""
    sched, pairs = grid(e1.scheduler, steps)
    gens = [torch.Generator().manual_seed(sd) for sd in seeds]
    shape = e1.latent_shape
    z = torch.stack([torch.randn(shape, generator=g) for g in gens]).double().numpy()
    kappas = []
    for t, tp in pairs:
        A, B, sig = ddpm_coefficients(sched, t, tp)
        eps = {c: e1(torch.as_tensor(z).float(), t, c).double().numpy() for c in ("a", "b", "null")}
        xi = torch.stack([torch.randn(shape, generator=g) for g in gens]).double().numpy()
        dsigma = -0.5
        v = {c: B * e / (2 * dsigma) for c, e in eps.items()}
        kappa, dx = their_and_kappa(A * z, v["b"], v["a"], v["null"], sig * xi, dsigma, s)
        z = A * z + dx
        kappas.append(kappa)
    return z, np.stack(kappas)


def test_guided_and_follows_their_update_along_a_whole_run():
    e1, e2 = experts()
    s, steps = 4.0, 12
    out = superdiff_and([e1, e2], ["a", "b"], SEEDS, num_inference_steps=steps, guidance_scale=s)
    z_ref, kappa_ref = transcribed_and(e1, e2, SEEDS, steps, s)
    assert np.ptp(kappa_ref) > 1  # kappa moves far from 1/2 along the run
    np.testing.assert_allclose(out.extra["kappa"][:, :, 1].numpy(), kappa_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.z0.double().numpy(), z_ref, rtol=1e-5, atol=1e-5)
    # the guidance matters: the unguided AND ends elsewhere
    plain = superdiff_and([e1, e2], ["a", "b"], SEEDS, num_inference_steps=steps)
    assert (out.z0 - plain.z0).abs().max() > 0.05
    # models that guide themselves keep the older form (each guided density equalised): not theirs
    selfguided = [CondGaussian(e1.table, e1.scheduler, guidance_scale=s) for _ in range(2)]
    older = superdiff_and(selfguided, ["a", "b"], SEEDS, num_inference_steps=steps)
    assert (older.z0 - out.z0).abs().max() > 0.05 and older.model_calls_per_sample == 4 * steps


def test_at_guidance_one_it_is_todays_and():
    e1, e2 = experts()
    today = superdiff_and([e1, e2], ["a", "b"], SEEDS, num_inference_steps=10)
    at_one = superdiff_and([e1, e2], ["a", "b"], SEEDS, num_inference_steps=10, guidance_scale=1.0)
    assert torch.equal(today.z0, at_one.z0) and torch.equal(today.extra["kappa"], at_one.extra["kappa"])
    # the guided path itself, at a scale a hair above 1, lands on the same samples (float rounding)
    near = superdiff_and([e1, e2], ["a", "b"], SEEDS, num_inference_steps=10, guidance_scale=1.0 + 1e-9)
    torch.testing.assert_close(near.z0, today.z0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(near.extra["log_density"], today.extra["log_density"], rtol=1e-4, atol=1e-2)
    assert near.model_calls_per_sample == 3 * 10 and today.model_calls_per_sample == 2 * 10


def test_guided_and_counts_their_evaluations():
    e1, e2 = experts()
    out = superdiff_and([e1, e2], ["a", "b"], [1, 2], num_inference_steps=7, guidance_scale=7.5)
    assert (e1.calls, e2.calls) == (2 * 7, 7)  # model 0 also makes the one shared unconditional pass
    assert out.model_calls_per_sample == e1.calls + e2.calls == (2 + 1) * 7
    e1.calls = e2.calls = 0
    out = superdiff_and([e1, e2], ["a", "b"], [1, 2], num_inference_steps=7, guidance_scale=7.5, null_model=1)
    assert (e1.calls, e2.calls) == (7, 2 * 7)


# -- Composable Diffusion's one unconditional pass ---------------------------------------------------

def test_composable_shared_null_is_their_model_fn_and_counts_n_plus_one():
    e1, e2 = experts()
    w = (2.0, 3.5)

    def theirs(z, t):  # model_fn: uncond_eps + (weights * (cond_eps - uncond_eps)).sum(0)
        u = e1(z, t, "null")
        return u + w[0] * (e1(z, t, "a") - u) + w[1] * (e1(z, t, "b") - u)

    out = composable([e1, e2], ["a", "b"], SEEDS, num_inference_steps=8, weights=w, null_model=0, eta=1.0)
    sched, pairs = grid(e1.scheduler, 8)
    gens = [torch.Generator().manual_seed(sd) for sd in SEEDS]
    z = torch.stack([torch.randn(e1.latent_shape, generator=g) for g in gens])
    for t, _ in pairs:
        xi = torch.stack([torch.randn(e1.latent_shape, generator=g) for g in gens])
        z = sched.step(theirs(z, t), t, z, eta=1.0, variance_noise=xi).prev_sample
    torch.testing.assert_close(out.z0, z, rtol=1e-4, atol=1e-4)
    assert out.model_calls_per_sample == (2 + 1) * 8
    # one network: the mean of the two unconditionals is the same composition, at 2 N evaluations
    mean_form = composable([e1, e2], ["a", "b"], SEEDS, num_inference_steps=8, weights=w, eta=1.0)
    torch.testing.assert_close(mean_form.z0, out.z0, rtol=1e-4, atol=1e-4)
    assert mean_form.model_calls_per_sample == 2 * 2 * 8


# -- FKC product of experts ----------------------------------------------------------------------------

def stream_seed(seed: int, k: int) -> int:
    """Stream k of a seed (stream 0 the seed itself), as numpy's SeedSequence derives it."""
    return seed if k == 0 else int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


def ddpm_loop(eps_fn, scheduler, seeds, shape, steps):
    sched, pairs = grid(scheduler, steps)
    gens = [torch.Generator().manual_seed(sd) for sd in seeds]
    z = torch.stack([torch.randn(shape, generator=g) for g in gens])
    for t, _ in pairs:
        xi = torch.stack([torch.randn(shape, generator=g) for g in gens])
        z = sched.step(eps_fn(z, t), t, z, eta=1.0, variance_noise=xi).prev_sample
    return z


def test_fkc_with_one_expert_is_a_plain_ddpm_run():
    e1, _ = experts(clip=True)
    plain = ddpm_loop(lambda z, t: e1(z, t, "a"), e1.scheduler, SEEDS, e1.latent_shape, 10)
    out = fkc_product([e1], ["a"], SEEDS, num_inference_steps=10, particles=1)
    assert torch.equal(out.z0, plain)
    # K particles: particle k is the plain run on stream k, never reweighted nor resampled
    out = fkc_product([e1], ["a"], SEEDS, num_inference_steps=10, particles=3)
    for k in range(3):
        ref = ddpm_loop(lambda z, t: e1(z, t, "a"), e1.scheduler, [stream_seed(s, k) for s in SEEDS],
                        e1.latent_shape, 10)
        assert torch.equal(out.extra["particles"][:, k], ref)
    assert (out.extra["log_weights"] == 0).all() and not out.extra["resampled"].any()
    assert torch.equal(out.z0, out.extra["particles"][torch.arange(len(SEEDS)), out.extra["chosen"]])


def test_fkc_ito_weight_is_the_exact_smc_weight_for_delta_experts():
    """Experts with point-mass data: the DDPM kernel is each one's exact reverse kernel, so the
    weight must be log[gamma'(z') k_fwd(z | z') / (gamma(z) K(z' | z))] up to a constant, gamma_t
    = prod_i N(sqrt(abar_t) a_i, 1 - abar_t), K the summed-score kernel (DDPM posterior formula)."""
    from amdm_geom.peers.common import prepare
    from amdm_geom.peers.fkc import step_log_weights

    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(5, generator=g), torch.randn(5, generator=g)
    sched = make_scheduler(clip_sample=False)
    m = CondGaussian({"a": (a, 0.0), "b": (b, 0.0), "null": (torch.zeros(5), 1.0)}, sched)
    run = prepare([m, m], ["a", "b"], [0], 10, method="test")
    t, tp = run.timesteps[4], run.t_prev[4]
    z = torch.randn(64, 5, generator=g)
    A, B, sig = ddpm_coefficients(sched, t, tp)
    ac = sched.alphas_cumprod.double()
    at, ap = float(ac[t]), float(ac[tp])
    zd = z.double()
    eps = [(zd - math.sqrt(at) * c) / math.sqrt(1 - at) for c in (a.double(), b.double())]
    x0 = (zd - math.sqrt(1 - at) * (eps[0] + eps[1])) / math.sqrt(at)
    post_mean = math.sqrt(ap) * (1 - at / ap) / (1 - at) * x0 + math.sqrt(at / ap) * (1 - ap) / (1 - at) * zd
    z_prev = (post_mean + sig * torch.randn(64, 5, generator=g, dtype=torch.float64)).float().double()
    N = torch.distributions.Normal

    def gamma(x, al):  # log prod_i q^i_t(x), q^i_t = N(sqrt(abar) a_i, 1 - abar)
        return sum(N(math.sqrt(al) * c.double(), math.sqrt(1 - al)).log_prob(x).sum(1) for c in (a, b))

    def mean_of(x):  # the toolkit's DDPM mean (diffusers' step) for an epsilon
        return run.scheduler.step(x, t, z, eta=1.0, variance_noise=torch.zeros_like(z)).prev_sample

    k_fwd = N(math.sqrt(at / ap) * z_prev, math.sqrt(1 - at / ap)).log_prob(zd).sum(1)
    exact = gamma(z_prev, ap) - gamma(zd, at) + k_fwd - N(post_mean, sig).log_prob(z_prev).sum(1)
    e = [m(z, t, c) for c in ("a", "b")]
    got = step_log_weights(run, t, tp, z, z_prev.float(), e, [mean_of(x) for x in e], mean_of(e[0] + e[1]), "ito")
    diff = (got - exact).numpy()
    assert np.ptp(exact.numpy()) > 1.0  # the weights do vary across particles
    assert np.ptp(diff) < 1e-3 * np.ptp(exact.numpy()) + 1e-3


def test_fkc_moves_the_summed_score_sampler_towards_the_product_of_two_gaussians():
    e1, e2 = experts(dim=2)
    ma, mb = e1.table["a"][0], e1.table["b"][0]
    product_mean, product_var = (ma + mb) / 2, 0.3**2 / 2
    seeds = list(range(200))
    ratio = {}
    for k in (1, 64):
        out = fkc_product([e1, e2], ["a", "b"], seeds, num_inference_steps=100, particles=k)
        z = out.z0.double()
        n = z.numel()
        assert abs((z - product_mean).mean().item()) < 4 * math.sqrt(product_var / n)
        ratio[k] = ((z - product_mean) ** 2).mean().item() / product_var
        assert out.model_calls_per_sample == k * 2 * 100
    # one particle is the summed-score DDPM sampler: far too narrow; 64 particles correct most of it
    assert ratio[1] < 0.6
    assert abs(1 - ratio[64]) < 0.5 * abs(1 - ratio[1])
    assert e1.calls == e2.calls == 2 * 100  # one call per step on all B K particles at once


def test_systematic_resampling_keeps_floor_or_ceil_of_k_w_copies_and_is_unbiased():
    from amdm_geom.peers.fkc import systematic_resample

    rng = np.random.default_rng(3)
    w = rng.dirichlet(np.ones(7) * 0.7)
    us = (np.arange(2000) + 0.5) / 2000  # a fine grid of the one uniform
    counts = np.stack([np.bincount(systematic_resample(torch.as_tensor(w), float(u)).numpy(), minlength=7)
                       for u in us])
    assert (counts >= np.floor(7 * w) - 1e-9).all() and (counts <= np.ceil(7 * w) + 1e-9).all()
    np.testing.assert_allclose(counts.mean(0), 7 * w, atol=2e-3)  # E[copies] = K w_i


def test_fkc_counts_evaluations_and_a_sample_ignores_its_batch_mates():
    e1, e2 = experts()
    out = fkc_product([e1, e2], ["a", "b"], [5, 9, 123456789], num_inference_steps=6, particles=4,
                      weight_form="euler")
    alone = fkc_product([e1, e2], ["a", "b"], [9], num_inference_steps=6, particles=4, weight_form="euler")
    torch.testing.assert_close(out.z0[1:2], alone.z0, rtol=1e-6, atol=1e-6)
    assert out.model_calls_per_sample == 4 * 2 * 6 and out.extra["particles"].shape == (3, 4, 6)
    assert out.extra["resampled"][:-1].any() and not out.extra["resampled"][-1].any()
    assert torch.isnan(out.extra["ess"][-1]).all()


def test_guided_and_a_sample_ignores_its_batch_mates():
    e1, e2 = experts()
    out = superdiff_and([e1, e2], ["a", "b"], [5, 9, 123456789], num_inference_steps=6, guidance_scale=3.0)
    alone = superdiff_and([e1, e2], ["a", "b"], [9], num_inference_steps=6, guidance_scale=3.0)
    torch.testing.assert_close(out.z0[1:2], alone.z0, rtol=1e-6, atol=1e-6)


def test_guided_and_and_fkc_run_on_digits_denoisers():
    """The benchmark's models (v-prediction, x0 clipped, conditions (1, 3) or (B, 3) int64; an
    untrained net): the guided AND on unguided models, FKC with a condition row per sample."""
    from amdm_geom.models.digits.net import DigitsDenoiser, DigitsNet, as_condition

    torch.manual_seed(0)
    sched = make_scheduler(prediction_type="v_prediction", clip_sample=True, clip_sample_range=1.0)
    net = DigitsNet()
    models = [DigitsDenoiser(net, sched, attributes=("position",)), DigitsDenoiser(net, sched, attributes=("colour",))]
    conds = [as_condition(position=1), as_condition(colour=2)]
    out = superdiff_and(models, conds, [1, 2], num_inference_steps=3, guidance_scale=7.5)
    assert out.z0.shape == (2, 3, 16, 16) and torch.isfinite(out.z0).all() and out.model_calls_per_sample == 9
    rows = [c.expand(2, -1).clone() for c in conds]
    out = fkc_product(models, rows, [1, 2], num_inference_steps=3, particles=3)
    assert out.z0.shape == (2, 3, 16, 16) and torch.isfinite(out.z0).all() and out.model_calls_per_sample == 18
    assert out.extra["particles"].shape == (2, 3, 3, 16, 16)


# -- bad input ---------------------------------------------------------------------------------------

def one_line_error(fn, match):
    with pytest.raises(ValueError, match=match) as err:
        fn()
    assert "\n" not in str(err.value)


def test_bad_settings_give_one_line_errors():
    e1, e2 = experts(dim=3)

    def run(**kw):
        return superdiff_and([e1, e2], ["a", "b"], [1], num_inference_steps=3, **kw)

    one_line_error(lambda: run(guidance_scale=0.5), "guidance_scale must be a finite number >= 1; got 0.5")
    one_line_error(lambda: run(guidance_scale=float("nan")), "guidance_scale")
    one_line_error(lambda: run(guidance_scale=3.0, null_model=2), r"null_model must be an int in \[0, 1\].*; got 2")
    guiding = CondGaussian({c: (v[0], v[1]) for c, v in e1.table.items()}, e1.scheduler, guidance_scale=2.0)
    one_line_error(lambda: superdiff_and([e1, guiding], ["a", "b"], [1], num_inference_steps=3, guidance_scale=3.0),
                   "model 1 guides itself")
    one_line_error(lambda: composable([e1, e2], ["a", "b"], [1], num_inference_steps=3, null_model=2),
                   r"null_model must be None or an int in \[0, 1\].*; got 2")

    def fkc(**kw):
        return fkc_product([e1, e2], ["a", "b"], [1], num_inference_steps=3, **kw)

    one_line_error(lambda: fkc(particles=0), r"particles must be an int in \[1, 4096\]; got 0")
    one_line_error(lambda: fkc(particles=2.5), "particles must be an int")
    one_line_error(lambda: fkc(ess_threshold=1.5), r"ess_threshold must be a number in \[0, 1\]; got 1.5")
    one_line_error(lambda: fkc(weight_form="exact"), r"weight_form must be one of \['ito', 'euler'\]; got 'exact'")
    one_line_error(lambda: fkc_product([e1, e2], ["a"], [1], num_inference_steps=3), "one condition per model")
    one_line_error(lambda: fkc_product([e1, e2], ["a", "b"], [], num_inference_steps=3), "at least one seed")

"""The peer samplers (amdm_geom.peers) against independent computations: plain diffusers loops
written here, the exact linear-Gaussian recursion of the Du et al. chain, SUPERDIFF's kappa as
their reference code writes it, and model-call counts taken by the models themselves."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from amdm_geom.core.schedules import make_scheduler
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.peers import composable, du_ula, solve_kappa, superdiff_and

SEEDS = [3, 7, 11, 19]


class GaussianExpert:
    """Data N(mean, s^2 I): the exact diffused score, output in its scheduler's prediction type;
    counts its calls."""

    def __init__(self, mean, s: float, scheduler=None, guidance_scale: float = 1.0):
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.s = float(s)
        self.scheduler = scheduler if scheduler is not None else make_scheduler()
        self.latent_shape = tuple(self.mean.shape)
        self.dtype, self.device = torch.float32, torch.device("cpu")
        self.guidance_scale = guidance_scale
        self.calls = 0

    def __call__(self, z, t, cond):
        self.calls += 1
        a = float(self.scheduler.alphas_cumprod.double()[int(t)])
        eps = math.sqrt(1 - a) * (z.double() - math.sqrt(a) * self.mean) / (a * self.s**2 + 1 - a)
        if self.scheduler.config.prediction_type == "v_prediction":
            return (math.sqrt(a) * eps - math.sqrt(1 - a) * z.double()).float()
        return eps.float()

    def null_condition(self):
        return None

    def describe(self):
        return {}


def gaussians(dim=16, prediction_type="epsilon", clip=False):
    sched = make_scheduler(prediction_type=prediction_type, clip_sample=clip)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(dim, generator=g) - 0.8, torch.rand(dim, generator=g) - 0.2
    return GaussianExpert(a, 0.3, sched), GaussianExpert(b, 0.3, sched)


def first_noise(seeds, shape):
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return gens, torch.stack([torch.randn(shape, generator=g) for g in gens])


def reference_loop(eps_fn, scheduler, seeds, shape, steps, eta=0.0):
    """A plain diffusers DDIM/DDPM loop (the model's own scheduler and prediction type), one
    generator per seed: z_T, then one draw per step when eta > 0."""
    sched = DDIMScheduler.from_config(scheduler.config)
    sched.set_timesteps(steps)
    gens, z = first_noise(seeds, shape)
    for t in sched.timesteps:
        xi = torch.stack([torch.randn(shape, generator=g) for g in gens]) if eta > 0 else None
        z = sched.step(eps_fn(z, int(t)), t, z, eta=eta, variance_noise=xi).prev_sample
    return z


@pytest.fixture(scope="module")
def family():
    return fine_grained_family((2, 4, 4), separation=4.0, seed=1)


# -- Composable Diffusion ---------------------------------------------------------------------------

def test_composable_one_model_at_w1_is_the_plain_ddim_loop_bit_for_bit(family):
    m = family.model()
    c, null = family.condition(position=1), family.condition()
    out = composable([m], [c], SEEDS, num_inference_steps=10, null_conds=[null])
    ref = reference_loop(lambda z, t: m(z, t, c), m.scheduler, SEEDS, m.latent_shape, 10)
    assert torch.equal(out.z0, ref)
    assert out.model_calls_per_sample == 2 * 10


def test_composable_follows_liu_et_al_with_two_models_and_weights(family):
    m1, m2 = family.model(), family.model(perturb=0.2)
    c1, c2, null = family.condition(position=0), family.condition(colour=2), family.condition()
    w = (2.0, 3.5)

    def eps(z, t):  # eps_u + sum_i w_i (eps_i(c_i) - eps_i(null)), eps_u the mean of the two unconditionals
        u1, u2 = m1(z, t, null), m2(z, t, null)
        return (u1 + u2) / 2 + w[0] * (m1(z, t, c1) - u1) + w[1] * (m2(z, t, c2) - u2)

    out = composable([m1, m2], [c1, c2], SEEDS, num_inference_steps=8, weights=w, null_conds=[null, null], eta=1.0)
    ref = reference_loop(eps, m1.scheduler, SEEDS, m1.latent_shape, 8, eta=1.0)
    torch.testing.assert_close(out.z0, ref, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out.z0, reference_loop(lambda z, t: m1(z, t, c1), m1.scheduler, SEEDS,
                                                     m1.latent_shape, 8, eta=1.0), atol=1e-2)


def test_composable_converts_v_prediction_and_clips_as_the_model_would():
    e, _ = gaussians(prediction_type="v_prediction", clip=True)
    e.mean = e.mean * 6  # x0 predictions far outside [-1, 1]: clipping matters
    out = composable([e], [None], SEEDS, num_inference_steps=10)
    ref = reference_loop(lambda z, t: e(z, t, None), e.scheduler, SEEDS, e.latent_shape, 10)
    torch.testing.assert_close(out.z0, ref, rtol=1e-4, atol=1e-4)
    assert out.z0.abs().max() <= 1.2  # x0 clipped to [-1, 1] at every step
    unclipped = reference_loop(lambda z, t: e(z, t, None), make_scheduler(prediction_type="v_prediction"),
                               SEEDS, e.latent_shape, 10)
    assert unclipped.abs().max() > 2


# -- Du et al.'s annealed ULA ------------------------------------------------------------------------

def test_du_without_mcmc_is_the_summed_score_ddpm_sampler(family):
    m1, m2 = family.model(), family.model(perturb=0.2)
    c1, c2 = family.condition(position=0), family.condition(colour=2)
    out = du_ula([m1, m2], [c1, c2], SEEDS, num_inference_steps=10, mcmc_steps=0)
    ref = reference_loop(lambda z, t: m1(z, t, c1) + m2(z, t, c2), m1.scheduler, SEEDS, m1.latent_shape, 10, eta=1.0)
    assert torch.equal(out.z0, ref)
    assert out.model_calls_per_sample == 2 * 10


def predicted_moments(means, s, steps, K, step_scale, sched):
    """Per-coordinate mean and variance of du_ula's z0 on Gaussian experts N(a_i, s^2 I): every
    step is affine in z (z' = P z + Q + noise), so the law stays Gaussian; float64, numpy."""
    ac, final = sched.alphas_cumprod.double().numpy(), float(sched.final_alpha_cumprod)
    stride, n = sched.config.num_train_timesteps // steps, len(means)
    total = np.sum(np.stack(means), 0)
    mu, var = np.zeros_like(total), 1.0
    for t in np.arange(steps)[::-1] * stride + sched.config.steps_offset:
        tp = t - stride
        a, ap = ac[t], (ac[tp] if tp >= 0 else final)
        v = a * s**2 + 1 - a
        e1, e0 = math.sqrt(1 - a) * n / v, -math.sqrt(1 - a) * math.sqrt(a) * total / v  # eps_sum = e1 z + e0
        sig2 = (1 - ap) / (1 - a) * (1 - a / ap)
        d = math.sqrt(1 - ap - sig2)
        p = math.sqrt(ap) * (1 - math.sqrt(1 - a) * e1) / math.sqrt(a) + d * e1
        q = -math.sqrt(ap) * math.sqrt(1 - a) * e0 / math.sqrt(a) + d * e0
        mu, var = p * mu + q, p * p * var + sig2
        if tp >= 0:
            vp, h = ap * s**2 + 1 - ap, step_scale * (1 - ap) / n
            for _ in range(K):  # z + h s(z) + sqrt(2 h) xi, s(z) = -(n z - sqrt(ap) sum_i a_i) / vp
                mu, var = (1 - h * n / vp) * mu + h * math.sqrt(ap) * total / vp, (1 - h * n / vp) ** 2 * var + 2 * h
    return mu, var


def test_du_with_enough_ula_lands_on_the_product_of_two_gaussians():
    e1, e2 = gaussians(dim=16)
    seeds = list(range(400))
    steps, K, scale = 25, 100, 1.5
    out = du_ula([e1, e2], [None, None], seeds, num_inference_steps=steps, mcmc_steps=K, step_scale=scale)
    z = out.z0.double()  # (400, 16): 6400 independent coordinates
    mu_pred, var_pred = predicted_moments([e1.mean.numpy(), e2.mean.numpy()], 0.3, steps, K, scale, e1.scheduler)
    product_mean, product_var = (e1.mean + e2.mean) / 2, 0.3**2 / 2
    assert np.abs(mu_pred - product_mean.numpy()).max() < 2e-3 and abs(var_pred / product_var - 1) < 0.01
    n = z.numel()
    mean_err = (z - product_mean).mean().item()  # sd sqrt(var / n)
    assert abs(mean_err) < 4 * math.sqrt(product_var / n)
    per_coord = ((z - product_mean) ** 2).mean().item()  # sd var sqrt(2 / n)
    assert abs(per_coord / product_var - 1) < 0.01 + 4 * math.sqrt(2 / n)
    assert e1.calls == e2.calls == steps + K * (steps - 1)
    assert out.model_calls_per_sample == e1.calls + e2.calls


def test_du_moments_follow_the_exact_gaussian_recursion_and_ula_moves_them():
    e1, e2 = gaussians(dim=16)
    seeds = list(range(400))
    runs = {}
    for K in (0, 4):
        out = du_ula([e1, e2], [None, None], seeds, num_inference_steps=20, mcmc_steps=K)
        mu, var = predicted_moments([e1.mean.numpy(), e2.mean.numpy()], 0.3, 20, K, 0.5, e1.scheduler)
        z = out.z0.double()
        n = z.numel()
        assert abs((z - torch.as_tensor(mu)).mean().item()) < 4 * math.sqrt(var / n)
        assert abs(((z - torch.as_tensor(mu)) ** 2).mean().item() / var - 1) < 4 * math.sqrt(2 / n)
        runs[K] = var
    assert runs[4] > 1.2 * runs[0]  # the summed score alone is too narrow; ULA widens it towards s^2/2


# -- SUPERDIFF AND ---------------------------------------------------------------------------------

def test_superdiff_on_identical_models_is_the_single_model_ddpm_sampler(family):
    m, c = family.model(), family.condition(position=2)
    out = superdiff_and([m, m], [c, c], SEEDS, num_inference_steps=10)
    ref = reference_loop(lambda z, t: m(z, t, c), m.scheduler, SEEDS, m.latent_shape, 10, eta=1.0)
    assert torch.equal(out.z0, ref)
    assert out.extra["kappa"].shape == (10, len(SEEDS), 2)
    assert (out.extra["kappa"] == 0.5).all()
    assert out.model_calls_per_sample == 2 * 10


def test_superdiff_kappa_is_their_reference_formula():
    """Their SD code's AND (Euler-Maruyama in VE time sigma, guidance 1): dx_ind = 2 dsigma v_b + n,
    kappa = (|dsigma| (v_b - v_o).(v_b + v_o) - dx_ind.(v_o - v_b)) / (2 dsigma |v_o - v_b|^2),
    on the means mu = x + 2 dsigma v of that step."""
    g = torch.Generator().manual_seed(4)
    x, v_o, v_b = (torch.randn(5, 3, 8, generator=g, dtype=torch.float64) for _ in range(3))
    dsigma, sigma = -0.3, 2.0
    noise = math.sqrt(2 * abs(dsigma) * sigma) * torch.randn(5, 3, 8, generator=g, dtype=torch.float64)
    dx_ind = 2 * dsigma * v_b + noise
    theirs = (abs(dsigma) * ((v_b - v_o) * (v_b + v_o)).sum((1, 2)) - (dx_ind * (v_o - v_b)).sum((1, 2)))
    theirs = theirs / (2 * dsigma * ((v_o - v_b) ** 2).sum((1, 2)))
    kappa = solve_kappa([x + 2 * dsigma * v_b, x + 2 * dsigma * v_o], noise)
    torch.testing.assert_close(kappa[:, 1], theirs, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(kappa.sum(1), torch.ones(5, dtype=torch.float64))


def test_superdiff_kappa_makes_the_step_equidistant_from_every_mean():
    g = torch.Generator().manual_seed(5)
    means = [torch.randn(4, 10, generator=g, dtype=torch.float64) for _ in range(3)]
    noise = 0.5 * torch.randn(4, 10, generator=g, dtype=torch.float64)
    kappa = solve_kappa(means, noise)
    z = sum(kappa[:, i:i + 1] * m for i, m in enumerate(means)) + noise
    dist = torch.stack([(z - m).norm(dim=1) for m in means], 1)
    torch.testing.assert_close(dist, dist[:, :1].expand(-1, 3), rtol=1e-9, atol=1e-9)
    same = solve_kappa([means[0]] * 3, noise)
    torch.testing.assert_close(same, torch.full((4, 3), 1 / 3, dtype=torch.float64))


def test_superdiff_on_distinct_models_keeps_kappa_sane_and_the_densities_equal():
    e1, e2 = gaussians(dim=16)
    seeds = list(range(300))
    out = superdiff_and([e1, e2], [None, None], seeds, num_inference_steps=20)
    kappa = out.extra["kappa"][:, :, 1]  # (steps, B)
    assert torch.isfinite(kappa).all()
    # E[kappa | z] = 1/2: the noise is independent of the two means
    dev = (kappa.mean(1) - 0.5).abs()
    assert (dev < 5 * kappa.std(1) / math.sqrt(len(seeds))).all(), dev
    assert 0.3 < kappa[-5:].median() < 0.7
    log_q = out.extra["log_density"]
    torch.testing.assert_close(log_q[:, 0], log_q[:, 1], rtol=0, atol=1e-2)
    assert torch.isfinite(out.z0).all() and out.z0.std() < 1
    assert e1.calls == e2.calls == 20 and out.model_calls_per_sample == 40


def test_superdiff_log_density_is_the_kernel_ratio_and_tracks_the_exact_density():
    e1, e2 = gaussians(dim=16)
    seeds = list(range(300))
    # one step (t = 1 -> the final level): log N(z_T; 0, I) + log p_i(z0 | z_T) - log k_fwd(z_T | z0)
    out = superdiff_and([e1, e2], [None, None], seeds, num_inference_steps=1)
    sched = DDIMScheduler.from_config(e1.scheduler.config)
    sched.set_timesteps(1)
    _, z_T = first_noise(seeds, e1.latent_shape)
    a_t, a_f = float(sched.alphas_cumprod[1]), float(sched.final_alpha_cumprod)
    sigma = math.sqrt((1 - a_f) / (1 - a_t) * (1 - a_t / a_f))
    z0, normal = out.z0.double(), torch.distributions.Normal
    prior = normal(0.0, 1.0).log_prob(z_T.double()).sum(1)
    fwd = normal(math.sqrt(a_t / a_f) * z0, math.sqrt(1 - a_t / a_f)).log_prob(z_T.double()).sum(1)
    for i, e in enumerate((e1, e2)):
        mu = sched.step(e(z_T, 1, None), 1, z_T, eta=1.0, variance_noise=torch.zeros_like(z_T)).prev_sample
        expected = prior + normal(mu.double(), sigma).log_prob(z0).sum(1) - fwd
        torch.testing.assert_close(out.extra["log_density"][:, i], expected, rtol=1e-6, atol=1e-3)
    # along a whole run of one model it follows the exact log-density of z0 (a biased estimate)
    out = superdiff_and([e1, e1], [None, None], seeds, num_inference_steps=50)
    v = a_f * e1.s**2 + 1 - a_f
    exact = normal(math.sqrt(a_f) * e1.mean, math.sqrt(v)).log_prob(out.z0.double()).sum(1)
    assert torch.corrcoef(torch.stack([out.extra["log_density"][:, 0], exact]))[0, 1] > 0.3


# -- all three: batch independence, errors, models that guide themselves ----------------------------

METHODS = {
    "composable": lambda ms, cs, seeds: composable(ms, cs, seeds, num_inference_steps=6, weights=1.5, eta=0.5),
    "superdiff": lambda ms, cs, seeds: superdiff_and(ms, cs, seeds, num_inference_steps=6),
    "du": lambda ms, cs, seeds: du_ula(ms, cs, seeds, num_inference_steps=6, mcmc_steps=2),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_sample_does_not_depend_on_its_batch_mates(name):
    e1, e2 = gaussians(dim=12, prediction_type="v_prediction", clip=True)
    run = METHODS[name]
    batch = run([e1, e2], [None, None], [5, 9, 123456789]).z0
    alone = run([e1, e2], [None, None], [9]).z0
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(batch[0], batch[1])


def one_line_error(fn, match):
    with pytest.raises(ValueError, match=match) as err:
        fn()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_bad_inputs_give_one_line_errors(name):
    e1, e2 = gaussians(dim=4)
    run = METHODS[name]
    other = GaussianExpert(e2.mean, 0.3, make_scheduler("linear"))
    one_line_error(lambda: run([e1, other], [None, None], [1]), "schedule differs.*alphas_cumprod")
    clipped = GaussianExpert(e2.mean, 0.3, make_scheduler(clip_sample=True))
    one_line_error(lambda: run([e1, clipped], [None, None], [1]), "schedule differs.*clip_sample")
    one_line_error(lambda: run([e1, e2], [None], [1]), "one condition per model: 2 models, got 1")
    one_line_error(lambda: run([e1, GaussianExpert(torch.zeros(5), 0.3)], [None, None], [1]), "latent shape")
    one_line_error(lambda: run([e1, e2], [None, None], []), "at least one seed")
    one_line_error(lambda: run([e1, e2], [None, None], [-1]), "seeds must be ints")
    if name != "composable":
        one_line_error(lambda: run([e1], [None], [1]), "at least 2 models; got 1")


def test_bad_settings_give_one_line_errors():
    e1, e2 = gaussians(dim=4)
    one_line_error(lambda: composable([e1, e2], [None, None], [1], num_inference_steps=0), r"int in \[1, 1000\]")
    one_line_error(lambda: composable([e1, e2], [None, None], [1], num_inference_steps=4, weights=(1.0,)),
                   "sequence of 2")
    one_line_error(lambda: composable([e1, e2], [None, None], [1], num_inference_steps=4, null_conds=[None]),
                   "one null condition per model")
    guided = GaussianExpert(e2.mean, 0.3, guidance_scale=3.0)
    one_line_error(lambda: composable([e1, guided], [None, None], [1], num_inference_steps=4), "guidance_scale 1")
    one_line_error(lambda: du_ula([e1, e2], [None, None], [1], num_inference_steps=4, mcmc_steps=-1), "mcmc_steps")
    one_line_error(lambda: du_ula([e1, e2], [None, None], [1], num_inference_steps=4, step_sizes=[0.1]),
                   "4 finite numbers > 0")


class WithoutNull(GaussianExpert):
    null_condition = None  # a denoiser without a null condition


def test_null_conditions_come_from_the_models_or_must_be_given():
    e1, e2 = gaussians(dim=4)
    bare = WithoutNull(e2.mean, 0.3)
    one_line_error(lambda: composable([e1, bare], [None, None], [1], num_inference_steps=2),
                   "model 1 has no null_condition.*null_conds=")
    given = composable([e1, bare], [None, None], [1], num_inference_steps=2, null_conds=[None, None])
    torch.testing.assert_close(given.z0, composable([e1, e2], [None, None], [1], num_inference_steps=2).z0)


def test_a_model_that_guides_itself_counts_two_evaluations_per_call():
    e1, e2 = gaussians(dim=4)
    e2.guidance_scale = 4.0
    out = superdiff_and([e1, e2], [None, None], [1], num_inference_steps=5)
    assert out.model_calls_per_sample == (1 + 2) * 5
    out = du_ula([e1, e2], [None, None], [1], num_inference_steps=5, mcmc_steps=3)
    assert out.model_calls_per_sample == (1 + 2) * (5 + 3 * 4)


def test_the_three_run_on_digits_denoisers_with_their_null_condition():
    """The benchmark's models: v-prediction, x0 clipped, conditions (1, 3) int64 (an untrained net)."""
    from amdm_geom.models.digits.net import DigitsDenoiser, DigitsNet, as_condition

    torch.manual_seed(0)
    sched = make_scheduler(prediction_type="v_prediction", clip_sample=True, clip_sample_range=1.0)
    net = DigitsNet()
    models = [DigitsDenoiser(net, sched, attributes=("position",)), DigitsDenoiser(net, sched, attributes=("colour",))]
    conds = [as_condition(position=1), as_condition(colour=2)]
    for run, calls in ((lambda: composable(models, conds, [1, 2], num_inference_steps=3, weights=2.0), 12),
                       (lambda: superdiff_and(models, conds, [1, 2], num_inference_steps=3), 6),
                       (lambda: du_ula(models, conds, [1, 2], num_inference_steps=3, mcmc_steps=1), 10)):
        out = run()
        assert out.z0.shape == (2, 3, 16, 16) and torch.isfinite(out.z0).all()
        assert out.model_calls_per_sample == calls

"""The parts of the 2D composition benchmark (App. E, Table 7) against independent computations:
scipy's multivariate normal densities, numerical integration, finite differences, the DDPM
posterior written out (Ho et al.) for a Gaussian, hand-computed metric values."""

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from amdm_geom.analyses.toy import experts, mcmc, metrics, samplers, targets
from amdm_geom.core import geometry
from amdm_geom.core.schedules import make_scheduler
from amdm_geom.sampling import step

# --------------------------------------------------------------------------------------------
# helpers (independent of the package)


def scipy_mixture_logpdf(weights, means, covs, x):
    return logsumexp([math.log(w) + multivariate_normal(m, c).logpdf(x) for w, m, c in zip(weights, means, covs)],
                     axis=0)


def as_array(v) -> np.ndarray:
    """A numpy copy of an array or tensor."""
    return v.detach().numpy().copy() if isinstance(v, torch.Tensor) else np.array(v, dtype=float)


def parts(mix):
    """A mixture's weights, means and covariances as numpy arrays."""
    return mix.weights.numpy(), mix.means.numpy(), mix.full_covariances().numpy()


def ddpm_gaussian_std(s: float, T: int = 100) -> float:
    """Output std of DDPM ancestral sampling (posterior variance, Ho et al. 2020) with the exact
    E[x0 | z_t] for 1D data N(0, s^2), on the cosine schedule with T steps, by the linear
    recursion of its variance."""
    abar = make_scheduler("cosine", num_train_timesteps=T).alphas_cumprod.double().numpy()
    v = 1.0
    for t in range(T - 1, -1, -1):
        ab, ab_prev = abar[t], (abar[t - 1] if t > 0 else 1.0)
        beta = 1 - ab / ab_prev
        c = math.sqrt(ab) * s**2 / (ab * s**2 + 1 - ab)  # E[x0 | z] = c z
        coef1 = math.sqrt(ab_prev) * beta / (1 - ab)
        coef2 = math.sqrt(ab / ab_prev) * (1 - ab_prev) / (1 - ab)
        v = (coef1 * c + coef2) ** 2 * v + (1 - ab_prev) / (1 - ab) * beta
    return math.sqrt(v)


@pytest.fixture(scope="module")
def sched():
    return experts.make_schedule(100)


# --------------------------------------------------------------------------------------------
# exact ground truth


def test_schedule_covers_every_timestep(sched):
    assert list(sched.t) == list(range(99, -1, -1))
    assert sched.t_prev[-1] == -1 and float(sched.coeffs.alpha_bar_prev[-1]) == 1.0
    assert float(sched.coeffs.sigma[0]) > 0  # DDPM (eta = 1): noise on every step but the last
    assert float(sched.coeffs.sigma[-1]) == 0.0


@pytest.mark.parametrize("task", targets.TASKS)
def test_product_is_p1_p2_over_z_by_grid_integration(task):
    tk = targets.make_task(task)
    lo, hi, h = (-1.6, 1.6, 0.004) if task == "ring_bar" else (-4.0, 4.0, 0.01)
    g = np.arange(lo, hi + h / 2, h)
    X, Y = np.meshgrid(g, g)
    pts = np.stack([X.ravel(), Y.ravel()], 1)
    log_un = scipy_mixture_logpdf(*parts(tk.p1), pts) + scipy_mixture_logpdf(*parts(tk.p2), pts)
    log_z = math.log(np.exp(log_un).sum() * h * h)
    assert tk.log_z == pytest.approx(log_z, abs=1e-6)
    rng = np.random.default_rng(3)
    x = np.concatenate([targets.sample(tk.target, 200, rng), rng.uniform(lo, hi, (200, 2))])
    want = scipy_mixture_logpdf(*parts(tk.p1), x) + scipy_mixture_logpdf(*parts(tk.p2), x) - log_z
    np.testing.assert_allclose(targets.log_prob(tk.target, x), want, rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("task", targets.TASKS)
@pytest.mark.parametrize("t", [3, 40, 90])
def test_diffused_expert_score_and_eps_against_finite_differences(task, t, sched):
    tk = targets.make_task(task)
    ab = sched.abar[t]
    for mix in (tk.p1, tk.p2):
        # the diffused mixture, built here from the forward process
        weights, means0, covs0 = parts(mix)
        means = [math.sqrt(ab) * m for m in means0]
        covs = [ab * c + (1 - ab) * np.eye(2) for c in covs0]
        logp = lambda x: scipy_mixture_logpdf(weights, means, covs, x)  # noqa: E731
        rng = np.random.default_rng(t)
        x = rng.normal(size=(40, 2)) * 0.7
        d = 1e-5
        fd = np.stack([(logp(x + [d, 0]) - logp(x - [d, 0])) / (2 * d),
                       (logp(x + [0, d]) - logp(x - [0, d])) / (2 * d)], 1)
        ex = experts.ExactExpert(mix, sched)
        np.testing.assert_allclose(ex.score(x, t), fd, rtol=1e-5, atol=1e-5 * np.abs(fd).max())
        np.testing.assert_allclose(ex.eps(x, t), -math.sqrt(1 - ab) * fd, rtol=1e-5,
                                   atol=1e-5 * np.abs(fd).max())
        np.testing.assert_allclose(ex.log_prob_and_score(x, t)[0], logp(x), rtol=1e-10, atol=1e-10)


def test_mixture_samples_have_the_mixture_moments():
    g = targets.make_task("gmm_product").p1
    weights, means, covs = parts(g)
    x = targets.sample(g, 200_000, np.random.default_rng(0))
    m = sum(w * mu for w, mu in zip(weights, means))
    cov = sum(w * (c + np.outer(mu - m, mu - m)) for w, mu, c in zip(weights, means, covs))
    np.testing.assert_allclose(x.mean(0), m, atol=0.01)
    np.testing.assert_allclose(np.cov(x.T), cov, atol=0.01)
    np.testing.assert_allclose(g.covariance().numpy(), cov, atol=1e-12)


def test_bar_is_a_flat_plateau():
    bar = targets.bar()
    y = np.linspace(-0.85, 0.85, 171)
    d = np.exp(targets.log_prob(bar, np.stack([np.zeros_like(y), y], 1)))
    assert d.max() / d.min() < 1.01  # ripple under 1% along the bar
    edge = np.exp(targets.log_prob(bar, np.array([[0.0, 1.0], [0.0, 1.2], [0.0, 0.0]])))
    assert edge[0] / edge[2] == pytest.approx(0.5, abs=0.01)  # half height at the uniform's edge
    assert edge[1] < 0.01 * edge[2]


def test_bad_targets_and_points_are_refused_in_one_line():
    with pytest.raises(ValueError, match="task must be one of .*; got 'moon'"):
        targets.make_task("moon")
    with pytest.raises(ValueError, match=r"points must have shape \(N, 2\); got \(3, 3\)"):
        targets.log_prob(targets.ring(), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"means must have shape \(K, 2\); got \(2, 3\)"):
        targets.mixture([1, 1], np.zeros((2, 3)), np.tile(np.eye(3), (2, 1, 1)))


# --------------------------------------------------------------------------------------------
# metrics on hand-computed cases


def test_mmd_hand_cases():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 2))
    assert np.all(metrics.mmd2(x, x.copy()) == 0.0)
    assert np.all(metrics.ln_mmd(metrics.mmd2(x, x.copy())) == -np.inf)
    a, b = np.array([[0.1, -0.2]]), np.array([[0.4, 0.2]])  # |a - b| = 0.5
    for hs in (metrics.BANDWIDTHS, (0.3, 0.05, 0.7)):  # halving, and generic bandwidths
        want = [2 - 2 * math.exp(-0.25 / (2 * h * h)) for h in hs]
        np.testing.assert_allclose(metrics.mmd2(a, b, hs), want, rtol=1e-12)
        np.testing.assert_allclose(metrics.ln_mmd(metrics.mmd2(a, b, hs)), 0.5 * np.log(want), rtol=1e-12)
    # against the double sum written out, sets of different sizes
    y = rng.normal(size=(30, 2)) + 0.3
    for h in (0.2, 0.5):
        k = lambda u, v: np.mean([[math.exp(-np.sum((p - q) ** 2) / (2 * h * h)) for q in v] for p in u])  # noqa: E731
        want = k(x, x) + k(y, y) - 2 * k(x, y)
        assert metrics.mmd2(x, y, (h,))[0] == pytest.approx(want, rel=1e-10)
        yy = metrics.kernel_means(metrics.sq_distances(y, y), (h,))
        assert metrics.mmd2(x, y, (h,), yy=yy)[0] == pytest.approx(want, rel=1e-10)


def test_w2_of_a_translate_is_the_shift():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 2))
    v = np.array([0.3, -0.4])
    y = (x + v)[rng.permutation(300)]
    assert metrics.w2(x, y) == pytest.approx(0.5, rel=1e-12)
    assert metrics.w2(x, x[::-1].copy()) == pytest.approx(0.0, abs=1e-12)


def test_ll_of_gaussian_samples_is_minus_log_2_pi_sigma2_minus_1():
    s = 0.2
    g = targets.mixture([1.0], [[0.3, -0.1]], [s * s * np.eye(2)])
    x = targets.sample(g, 100_000, np.random.default_rng(2))
    want = -math.log(2 * math.pi * s * s) - 1
    lp = targets.log_prob(g, x)
    assert metrics.log_likelihood(x, g) == pytest.approx(want, abs=4 * lp.std() / math.sqrt(len(x)))


def test_cov_error_and_mode_coverage_hand_cases():
    g = targets.mixture([1.0], [[0.0, 0.0]], [np.diag([0.5, 0.5])])
    sq = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # cov = (4/3) I
    assert metrics.cov_error(sq, g) == pytest.approx(math.sqrt(2) * (4 / 3 - 0.5), rel=1e-12)
    two = targets.mixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [0.01 * np.eye(2)] * 2)
    centres, radii, masses = metrics.target_modes(two)
    assert len(centres) == 2 and np.allclose(radii, 0.2) and np.allclose(masses, 0.5)
    left = np.tile([[-1.0, 0.05]], (10, 1))
    assert metrics.mode_coverage(left, two) == 0.5
    assert metrics.mode_coverage(np.concatenate([left, left + [2.0, 0.0]]), two) == 1.0
    assert metrics.mode_coverage(left[:4], two) == 0.0  # fewer than 5 samples is not coverage


def test_score_only_energy_difference():
    g = targets.mixture([1.0], [[0.2, 0.1]], [[[0.05, 0.01], [0.01, 0.03]]])
    score = lambda z: targets.score(g, z)  # noqa: E731
    rng = np.random.default_rng(4)
    x, x_new = rng.normal(size=(20, 2)) * 0.3, rng.normal(size=(20, 2)) * 0.3
    got = mcmc.energy_difference(score, x, x_new, score(x), score(x_new), 2)  # exact for a Gaussian
    np.testing.assert_allclose(got, targets.log_prob(g, x_new) - targets.log_prob(g, x), rtol=1e-10, atol=1e-10)
    mix = targets.make_task("gmm_product").p1
    score = lambda z: targets.score(mix, z)  # noqa: E731
    x_new = x + 0.02 * rng.normal(size=x.shape)
    want = targets.log_prob(mix, x_new) - targets.log_prob(mix, x)
    np.testing.assert_allclose(mcmc.energy_difference(score, x, x_new, score(x), score(x_new), 5), want,
                               rtol=1e-3, atol=1e-4)
    err = lambda k: np.abs(mcmc.energy_difference(score, x, x_new, score(x), score(x_new), k) - want).max()  # noqa: E731
    assert err(9) < err(3) / 4  # the trapezoid's error shrinks like (1 / (k - 1))^2


# --------------------------------------------------------------------------------------------
# samplers


@pytest.mark.parametrize("s", [0.03, 0.3])
def test_oracle_is_the_ddpm_recursion_on_a_gaussian(s, sched):
    g = targets.mixture([1.0], [[0.2, -0.1]], [np.diag([s * s, 4 * s * s])])
    x = samplers.oracle(g, sched, 0, 20_000)
    for j, sj in enumerate((s, 2 * s)):
        assert x[:, j].std() == pytest.approx(ddpm_gaussian_std(sj), rel=0.03)
    np.testing.assert_allclose(x.mean(0), [0.2, -0.1], atol=0.02 * s * 10)
    # at the ring's scale 100 DDPM steps under-disperse: the recursion's std is ~0.68 s
    assert ddpm_gaussian_std(0.03) < 0.75 * 0.03


def test_amdm_goes_through_the_shared_step_and_one_step_by_hand(monkeypatch, sched):
    tk = targets.make_task("ring_bar")
    e1, e2 = experts.ExactExpert(tk.p1, sched), experts.ExactExpert(tk.p2, sched)
    calls = {"slerp": [], "radial_shift": [], "aggregate_step": 0}
    real_slerp, real_shift, real_step = geometry.slerp, geometry.radial_shift, samplers.aggregate_step

    def slerp(a, b, w):
        out = real_slerp(a, b, w)
        calls["slerp"].append((as_array(a), as_array(b), as_array(w), as_array(out)))
        return out

    def radial_shift(z, mu, eta):
        out = real_shift(z, mu, eta)
        calls["radial_shift"].append((as_array(z), as_array(mu), as_array(eta), as_array(out)))
        return out

    def aggregate_step(*args, **kwargs):
        calls["aggregate_step"] += 1
        return real_step(*args, **kwargs)

    monkeypatch.setattr(geometry, "slerp", slerp)
    monkeypatch.setattr(geometry, "radial_shift", radial_shift)
    monkeypatch.setattr(samplers, "aggregate_step", aggregate_step)
    x = samplers.amdm(e1, e2, sched, [0, 1], 64, w=0.3, eta=0.05)
    assert x.shape == (2, 64, 2)
    assert calls["aggregate_step"] == 100
    assert len(calls["slerp"]) == 100 and len(calls["radial_shift"]) == 200
    # the last step by hand: eq. (6) on the two models' latents, then eq. (7) towards mu_1
    a, b, w, agg = calls["slerp"][-1]
    phi = np.arccos(np.clip((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1), -1, 1))
    want = (np.sin((1 - w) * phi) / np.sin(phi))[:, None] * a + (np.sin(w * phi) / np.sin(phi))[:, None] * b
    np.testing.assert_allclose(agg, want, rtol=1e-7, atol=1e-9)
    z, mu, eta, out = calls["radial_shift"][-2]  # model 1's shift
    np.testing.assert_allclose(z, agg)
    d = z - mu
    np.testing.assert_allclose(out, z - eta[..., None] * d / np.linalg.norm(d, axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(x.reshape(-1, 2), out)  # model 1's shifted latent is the output
    # a shorter window: s slerps, then model 1 alone
    calls["slerp"].clear()
    samplers.amdm(e1, e2, sched, 0, 16, w=0.5, eta=0.3, agg_steps=30)
    assert len(calls["slerp"]) == 30


def test_antipodal_pairs_fall_back_to_lerp_and_are_counted():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[-1.0, 0.0], [1.0, 1.0]])
    with pytest.raises(ValueError):
        geometry.slerp(a, b, 0.5)
    out, bad = samplers.slerp_or_lerp(a, b, np.array([0.5, 0.5]))
    assert bad == 1 and isinstance(out, np.ndarray)
    np.testing.assert_allclose(out[0], [0.0, 0.0])
    np.testing.assert_allclose(out[1], geometry.slerp(a[1:], b[1:], 0.5)[0])
    # as the mixing rule of the shared step: the same aggregate, the fallback counted
    rule = samplers.SlerpOrLerp()
    res = step.aggregate_step([torch.from_numpy(a), torch.from_numpy(b)], [0.5], [0.0, 0.0],
                              [torch.zeros(2, 2, dtype=torch.float64)] * 2, rule=rule)
    assert rule.fallbacks == 1
    np.testing.assert_array_equal(res.z_agg.numpy(), out)


def test_samplers_are_seeded_per_block(sched):
    tk = targets.make_task("gmm_product")
    e1, e2 = experts.ExactExpert(tk.p1, sched), experts.ExactExpert(tk.p2, sched)
    state_np, state_t = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    both = samplers.amdm(e1, e2, sched, [0, 1], 32, w=[0.5, 0.7], eta=[0.0, 0.3])
    alone = samplers.amdm(e1, e2, sched, 1, 32, w=0.7, eta=0.3)
    np.testing.assert_array_equal(both[1, 1], alone)
    a = mcmc.du_mcmc(e1, e2, sched, [3, 4], 16, kind="mala")
    np.testing.assert_array_equal(a[1], mcmc.du_mcmc(e1, e2, sched, 4, 16, kind="mala"))
    assert np.array_equal(np.random.get_state()[1], state_np) and torch.equal(torch.get_rng_state(), state_t)
    with pytest.raises(ValueError, match="kind must be one of .*; got 'gibbs'"):
        mcmc.du_mcmc(e1, e2, sched, 0, 4, kind="gibbs")


def test_mlp_expert_learns_and_is_seeded(sched):
    g = targets.make_task("gmm_product").p1
    state_t = torch.get_rng_state().clone()
    e = experts.train_mlp(g, sched, seed=3, iters=300)
    e_again = experts.train_mlp(g, sched, seed=3, iters=2)
    assert torch.equal(torch.get_rng_state(), state_t)
    assert all(torch.equal(a, b) for a, b in zip(experts.train_mlp(g, sched, seed=3, iters=2).net.parameters(),
                                                    e_again.net.parameters()))
    ex = experts.ExactExpert(g, sched)
    z = targets.sample(g, 2000, np.random.default_rng(0), alpha_bar=sched.abar[50])
    err = np.sqrt(((e.eps(z, 50) - ex.eps(z, 50)) ** 2).sum(1).mean())
    assert err < 0.5 * np.sqrt((ex.eps(z, 50) ** 2).sum(1).mean())
    # the batched two-network path agrees with each network alone
    e2 = experts.train_mlp(targets.make_task("gmm_product").p2, sched, seed=4, iters=2)
    a, b = experts.eps_pair(e, e2, z, None, 50)
    np.testing.assert_allclose(a, e.eps(z, 50), atol=1e-5)
    np.testing.assert_allclose(b, e2.eps(z, 50), atol=1e-5)
    with torch.no_grad():
        ref = e.net(torch.from_numpy(z.astype(np.float32)), torch.full((len(z),), 50)).numpy()
    np.testing.assert_allclose(a, ref, atol=1e-5)
    np.testing.assert_allclose(experts.eps_sum(e, e2, z, 50), a + b, rtol=1e-12)
    with pytest.raises(ValueError, match="trained for t = 0..T-1 only; got t = -1"):
        e.eps(z, -1)

"""The exact GMM denoiser against torch.distributions (an independent implementation of the
diffused mixture) and autograd, and the fine-grained family's conditions."""

import math

import numpy as np
import pytest
import torch
from torch import distributions as D

from amdm_geom.core.schedules import make_scheduler
from amdm_geom.models.base import Denoiser, same_schedule
from amdm_geom.models.gmm import GaussianMixture, GMMDenoiser, fine_grained_family, from_description
from amdm_geom.sampling import AMDMSampler, SamplerConfig


def reference_mixture(mix: GaussianMixture, weights, abar):
    """p_t(z | y) built with torch.distributions from the definition of the forward process."""
    comp = D.Independent(D.Normal(math.sqrt(abar) * mix.means,
                                  torch.sqrt(abar * mix.variances + 1 - abar)), 1)
    return D.MixtureSameFamily(D.Categorical(probs=torch.as_tensor(weights, dtype=torch.float64)), comp)


def small_mixture(n=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(k, n, generator=g, dtype=torch.float64)
    variances = 0.2 + torch.rand(k, n, generator=g, dtype=torch.float64)  # diagonal, per component
    return GaussianMixture(means, variances, (n,), {})


@pytest.mark.parametrize("t", [1, 251, 501, 981])
def test_eps_is_minus_sqrt_one_minus_abar_times_the_autograd_score(t):
    mix = small_mixture()
    model = GMMDenoiser(mix, dtype=torch.float64)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    abar = float(model.scheduler.alphas_cumprod[t])
    z = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(t), requires_grad=True)
    ref = reference_mixture(mix, w, abar)
    score, = torch.autograd.grad(ref.log_prob(z).sum(), z)
    eps = model(z.detach(), t, w)
    np.testing.assert_allclose(eps, -math.sqrt(1 - abar) * score, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.log_prob(z.detach(), t, w), ref.log_prob(z).detach(), rtol=1e-12)


def test_exact_at_sd_latent_size_and_fast_path_dtype():
    fam = fine_grained_family((4, 64, 64), seed=3)
    model = fam.model()
    w = fam.condition(position=1)
    z = torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    t = 501
    abar = model.alpha_bar(t)
    zz = z.reshape(2, -1).double().requires_grad_(True)
    score, = torch.autograd.grad(reference_mixture(fam.mixture, w, abar).log_prob(zz).sum(), zz)
    eps = model(z, t, w)
    assert eps.dtype == torch.float32 and eps.shape == z.shape
    np.testing.assert_allclose(eps.reshape(2, -1).double(), -math.sqrt(1 - abar) * score, rtol=1e-5, atol=1e-6)


def test_responsibilities_are_the_component_posterior():
    mix = small_mixture(seed=2)
    model = GMMDenoiser(mix, dtype=torch.float64)
    w = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    t, z = 701, torch.randn(4, 6, dtype=torch.float64)
    abar = model.alpha_bar(t)
    ref = reference_mixture(mix, w, abar)
    log_joint = torch.log(w) + ref.component_distribution.log_prob(z[:, None, :])
    np.testing.assert_allclose(model.responsibilities(z, t, w), torch.softmax(log_joint, 1), rtol=1e-10)


def test_guidance_combines_conditional_and_unconditional():
    mix = small_mixture(seed=4)
    w = torch.tensor([0.8, 0.1, 0.1], dtype=torch.float64)
    plain = GMMDenoiser(mix, dtype=torch.float64)
    guided = GMMDenoiser(mix, dtype=torch.float64, guidance_scale=3.0)
    z = torch.randn(3, 6, dtype=torch.float64)
    eps_c, eps_u = plain(z, 301, w), plain(z, 301, torch.full((3,), 1 / 3, dtype=torch.float64))
    np.testing.assert_allclose(guided(z, 301, w), eps_u + 3.0 * (eps_c - eps_u), rtol=1e-12)


def test_per_sample_conditions():
    mix = small_mixture()
    model = GMMDenoiser(mix, dtype=torch.float64)
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], dtype=torch.float64)
    z = torch.randn(2, 6, dtype=torch.float64)
    both = model(z, 401, w)
    np.testing.assert_allclose(both[1], model(z[1:], 401, w[1])[0], rtol=1e-12)


def test_fine_grained_conditions():
    fam = fine_grained_family((8,), n_positions=3, n_colours=4, strength=0.9)
    w = fam.condition(position=2)
    pos = fam.mixture.labels["position"]
    assert w.sum().item() == pytest.approx(1.0)
    assert w[pos == 2].sum().item() == pytest.approx(0.9)
    assert torch.allclose(w[pos == 2], w[pos == 2][0])  # spread evenly
    both = fam.condition(position=2, colour=1)
    assert both[fam.target(2, 1)].item() == pytest.approx(0.9)
    assert fam.target(2, 1).sum() == 1
    with pytest.raises(ValueError, match=r"colour must be in \[0, 3\]; got 7"):
        fam.condition(colour=7)
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]; got 1.5"):
        fam.condition(position=0, strength=1.5)


def test_components_differing_in_one_attribute_are_separation_apart():
    fam = fine_grained_family((4, 32, 32), separation=8.0, seed=1)
    m = fam.mixture.means
    labels = fam.mixture.labels
    same_pos = ((labels["position"][:, None] == labels["position"][None])
                & (labels["colour"][:, None] != labels["colour"][None]))
    d = torch.cdist(m, m)[same_pos]
    assert d.mean().item() == pytest.approx(8.0, rel=0.05)


def test_denoiser_protocol_schedule_and_errors():
    fam = fine_grained_family((8,))
    model = fam.model()
    assert isinstance(model, Denoiser)
    assert same_schedule(model.scheduler, make_scheduler())
    assert not same_schedule(fam.model("cosine").scheduler, model.scheduler)
    with pytest.raises(ValueError, match=r"latents must have shape \(B, 8\); got \(2, 9\)"):
        model(torch.zeros(2, 9), 1, fam.condition(position=0))
    with pytest.raises(ValueError, match="sum to 1"):
        model(torch.zeros(2, 8), 1, torch.ones(16, dtype=torch.float64))
    assert model.describe()["family"] == "gmm"


def test_exact_sampling_of_the_mixture_by_ddpm_with_exact_scores():
    # With exact scores and many DDPM steps the sampler draws from p_0(x | y), so the average
    # posterior component probability equals the condition's weights. The DDPM "linear"
    # schedule is used because its sqrt(abar_T) = 0.006 makes N(0, I) a near-exact start; under
    # SD's scaled-linear schedule sqrt(abar_T) = 0.068 and starting from N(0, I) instead of the
    # true p_T pulls the frequencies towards uniform (a real effect of that schedule).
    fam = fine_grained_family((8,), n_positions=2, n_colours=2, separation=8.0, component_std=0.5, seed=5)
    w = fam.condition(position=1, strength=0.8)
    model = fam.model("linear")
    sampler = AMDMSampler([model], [w], SamplerConfig(num_inference_steps=200, agg_steps=0, weights=(), ddim_eta=1.0))
    out = sampler.sample(range(600))
    r = model.responsibilities(out.z0, 0, w)  # (600, 4)
    mean_r = r.mean(0).numpy()
    se = r.std(0).numpy() / math.sqrt(600)
    assert np.all(np.abs(mean_r - w.numpy()) < 4 * se + 0.01), (mean_r, w)


def test_sample_diffused_matches_the_forward_process():
    # one-draw sampling of p_t must have the moments of sqrt(abar) x0 + sqrt(1 - abar) xi
    fam = fine_grained_family((6,), n_positions=2, n_colours=2, separation=5.0, component_std=0.4, seed=8)
    w = fam.condition(colour=1)
    abar = 0.3
    z, _ = fam.mixture.sample_diffused(w, 40000, abar, np.random.default_rng(0))
    means, var = fam.mixture.means, fam.mixture.variances
    mean = math.sqrt(abar) * (w[:, None] * means).sum(0)
    second = (w[:, None] * (abar * (means**2 + var) + 1 - abar)).sum(0)
    np.testing.assert_allclose(z.mean(0), mean, atol=0.03)
    np.testing.assert_allclose((z**2).mean(0), second, rtol=0.03)


def test_from_description_rebuilds_the_same_model():
    fam = fine_grained_family((4, 8, 8), separation=7.0, component_std=0.5, seed=9)
    m = fam.model("cosine", perturb=0.1, guidance_scale=2.0, name="x")
    again = from_description(m.describe())
    z = torch.randn(2, 4, 8, 8)
    w = fam.condition(position=3)
    assert torch.equal(again(z, 500, w), m(z, 500, w))
    assert same_schedule(again.scheduler, m.scheduler)
    with pytest.raises(ValueError, match="not a fine-grained GMM family description"):
        from_description({"family": "unet"})


# --------------------------------------------------------------------------------------------
# the guidance rule


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0])
def test_no_guidance_at_or_below_scale_one(scale):
    # diffusers' rule (do_classifier_free_guidance = guidance_scale > 1): eps_c alone at s <= 1
    mix = small_mixture(seed=4)
    w = torch.tensor([0.8, 0.1, 0.1], dtype=torch.float64)
    z = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plain = GMMDenoiser(mix, dtype=torch.float64)
    assert torch.equal(GMMDenoiser(mix, dtype=torch.float64, guidance_scale=scale)(z, 301, w), plain(z, 301, w))


# --------------------------------------------------------------------------------------------
# the engine with full covariances (the 2D benchmark's mixtures, products)


def full_mixture(n=3, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(k, n, generator=g, dtype=torch.float64)
    a = torch.randn(k, n, n, generator=g, dtype=torch.float64)
    covs = 0.3 * a @ a.transpose(1, 2) / n + 0.1 * torch.eye(n, dtype=torch.float64)
    weights = torch.rand(k, generator=g, dtype=torch.float64) + 0.2
    return GaussianMixture.full(means, covs, weights)


def reference_full(mix: GaussianMixture, weights, abar):
    """p_t(z | y) with full covariances, built with torch.distributions from the forward process."""
    cov = abar * mix.covariances + (1 - abar) * torch.eye(mix.dim, dtype=torch.float64)
    comp = D.MultivariateNormal(math.sqrt(abar) * mix.means, covariance_matrix=cov)
    return D.MixtureSameFamily(D.Categorical(probs=torch.as_tensor(weights, dtype=torch.float64)), comp)


@pytest.mark.parametrize("abar", [1.0, 0.6, 0.02])
def test_full_covariance_density_and_score_against_torch_distributions(abar):
    mix = full_mixture()
    assert mix.is_full and float(mix.weights.sum()) == pytest.approx(1.0, abs=1e-15)
    z = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    for w in (None, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)):
        ref = reference_full(mix, mix.weights if w is None else w, abar)
        lp_ref = ref.log_prob(z)
        score_ref, = torch.autograd.grad(lp_ref.sum(), z)
        lp, score = mix.log_prob_and_score(z.detach(), w, abar)
        np.testing.assert_allclose(lp, lp_ref.detach(), rtol=1e-12)
        np.testing.assert_allclose(score, score_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(mix.log_prob(z.detach(), w, abar), lp, rtol=1e-14)
        np.testing.assert_allclose(mix.score(z.detach(), w, abar), score, rtol=1e-14)
        post = torch.softmax(torch.log(ref.mixture_distribution.probs) + ref.component_distribution.log_prob(
            z.detach()[:, None, :]), 1)
        np.testing.assert_allclose(mix.responsibilities(z.detach(), w, abar), post, rtol=1e-10)
    per_sample = torch.softmax(torch.randn(7, 4, dtype=torch.float64), 1)
    lp = mix.log_prob(z.detach(), per_sample, abar)
    for b in range(7):
        assert lp[b].item() == pytest.approx(mix.log_prob(z.detach()[b:b + 1], per_sample[b], abar).item(), rel=1e-12)


def test_diagonal_and_full_forms_of_one_mixture_agree():
    diag = small_mixture(n=4, k=3, seed=6)
    full = GaussianMixture.full(diag.means, torch.diag_embed(diag.variances))
    z = torch.randn(9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    for abar in (1.0, 0.3):
        np.testing.assert_allclose(full.log_prob(z, w, abar), diag.log_prob(z, w, abar), rtol=1e-12)
        np.testing.assert_allclose(full.score(z, w, abar), diag.score(z, w, abar), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(full.component_log_density(z, abar), diag.component_log_density(z, abar),
                                   rtol=1e-12)
    # the diffused mixture is a mixture of its own: p_t at abar is p_0 of mix.diffused(abar)
    for mix in (diag, full):
        np.testing.assert_allclose(mix.diffused(0.3).log_prob(z, w), mix.log_prob(z, w, 0.3), rtol=1e-12)


def test_product_of_mixtures_is_p_q_over_z():
    p, q = full_mixture(seed=1), full_mixture(k=2, seed=2)
    prod, log_z = p.product(q)
    assert prod.n_components == 8 and float(prod.weights.sum()) == pytest.approx(1.0, abs=1e-14)
    x = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    want = reference_full(p, p.weights, 1.0).log_prob(x) + reference_full(q, q.weights, 1.0).log_prob(x) - log_z
    np.testing.assert_allclose(prod.log_prob(x), want, rtol=1e-10)
    # Z = E_{x ~ p} q(x), by Monte Carlo from p's own exact samples
    xs, _ = p.sample_diffused(None, 400_000, 1.0, np.random.default_rng(0))
    qx = reference_full(q, q.weights, 1.0).log_prob(xs).exp()
    se = float(qx.std()) / math.sqrt(len(qx))
    assert abs(float(qx.mean()) - math.exp(log_z)) < 4 * se


def test_full_sampling_and_moments():
    mix = full_mixture(seed=5)
    z, ks = mix.sample_diffused(None, 200_000, 0.4, np.random.default_rng(1))
    d = mix.diffused(0.4)
    np.testing.assert_allclose(z.mean(0), d.mean(), atol=0.02)
    np.testing.assert_allclose(torch.cov(z.T), d.covariance(), atol=0.03)
    np.testing.assert_allclose(np.bincount(ks.numpy(), minlength=4) / 200_000, mix.weights, atol=0.005)
    # the moments against their definition
    w, m, c = mix.weights, mix.means, mix.covariances
    mean = (w[:, None] * m).sum(0)
    cov = sum(w[k] * (c[k] + torch.outer(m[k] - mean, m[k] - mean)) for k in range(4))
    np.testing.assert_allclose(mix.covariance(), cov, rtol=1e-12)
    x0, comp = mix.sample(None, [torch.Generator().manual_seed(i) for i in range(3)])
    assert x0.shape == (3, 3) and comp.shape == (3,)


def test_full_covariance_errors_are_one_line():
    good = torch.eye(2, dtype=torch.float64).expand(2, 2, 2)
    with pytest.raises(ValueError, match=r"covariances must have shape \(2, 2, 2\); got \(2, 2\)"):
        GaussianMixture.full(torch.zeros(2, 2), torch.eye(2))
    with pytest.raises(ValueError, match="covariances must be symmetric"):
        GaussianMixture.full(torch.zeros(2, 2), torch.tensor([[[1.0, 0.5], [0.0, 1.0]]] * 2))
    with pytest.raises(ValueError, match="covariances must be positive definite; component 1 is not"):
        GaussianMixture.full(torch.zeros(2, 2), torch.stack([torch.eye(2), -torch.eye(2)]))
    with pytest.raises(ValueError, match=r"weights must be finite and >= 0 with a positive sum; got \[-1.0, 2.0\]"):
        GaussianMixture.full(torch.zeros(2, 2), good, [-1.0, 2.0])
    with pytest.raises(ValueError, match="not both"):
        GaussianMixture(torch.zeros(2, 2), torch.ones(2, 2), (2,), covariances=good)
    with pytest.raises(ValueError, match=r"alpha_bar must be in \(0, 1\]; got 0.0"):
        GaussianMixture.full(torch.zeros(2, 2), good).diffused(0.0)


@pytest.mark.parametrize("row", ["isotropic", "per_coordinate"])
@pytest.mark.parametrize("t", [1, 501, 981])
def test_shared_variance_fast_path_against_autograd(row, t):
    """Components sharing their variances take ``scaled_score``'s one-product path; it must give
    eq. (4)'s eps of torch.distributions' mixture, for one weight vector and per-sample ones.
    (No exact zero weight: torch.distributions clamps probabilities to its eps.)"""
    g = torch.Generator().manual_seed(t)
    k, n = 4, 7
    means = 3 * torch.randn(k, n, generator=g, dtype=torch.float64)
    var = torch.full((1, n), 0.36, dtype=torch.float64) if row == "isotropic" else \
        (0.2 + torch.rand(1, n, generator=g, dtype=torch.float64))
    mix = GaussianMixture(means, var, (n,), {})
    assert mix._shared_variances()
    model = GMMDenoiser(mix, dtype=torch.float64)
    abar = model.alpha_bar(t)
    z = 2 * torch.randn(3, n, generator=g, dtype=torch.float64)
    for w in (torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64),
              torch.tensor([[0.5, 0.49, 0.005, 0.005], [0.001, 0.001, 0.001, 0.997], [0.25] * 4],
                           dtype=torch.float64)):
        zz = z.clone().requires_grad_(True)
        logp = torch.stack([reference_mixture(mix, w if w.ndim == 1 else w[b], abar).log_prob(zz[b])
                            for b in range(3)])
        score, = torch.autograd.grad(logp.sum(), zz)
        np.testing.assert_allclose(model(z, t, w), -math.sqrt(1 - abar) * score, rtol=1e-10, atol=1e-12)


def test_unshared_variances_keep_the_general_formula():
    mix = small_mixture(seed=5)  # per-component variances
    assert not mix._shared_variances()
    z, w = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    assert torch.equal(mix.scaled_score(z, w, 0.4, -0.5), -0.5 * mix.score(z, w, 0.4))


@pytest.mark.parametrize("guidance_scale", [1.0, 4.0])
def test_chunked_evaluation_matches_one_sample_at_a_time(monkeypatch, guidance_scale):
    """With chunks of 2 rows (5 samples: chunks of 2, 2, 1), per-sample conditions go with their
    rows: each sample's eps equals that sample evaluated alone."""
    from amdm_geom.models import gmm

    fam = fine_grained_family((4, 4, 4), seed=1)
    model = fam.model(dtype=torch.float64, guidance_scale=guidance_scale)
    w = torch.stack([fam.condition(position=p % 4, colour=(p * 3) % 4) for p in range(5)])
    z = torch.randn(5, 4, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    alone = torch.cat([model(z[b:b + 1], 401, w[b]) for b in range(5)])
    monkeypatch.setattr(gmm, "CHUNK_BYTES", 2 * 8 * 64)
    assert gmm.chunk_rows(64) == 2
    np.testing.assert_allclose(model(z, 401, w), alone, rtol=1e-12, atol=1e-14)

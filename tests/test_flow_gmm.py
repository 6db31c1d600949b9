"""The exact Gaussian-mixture family under the rectified-flow interpolant z_s = (1 - s) x0 + s eps
(App. G): the closed-form velocity against autograd of an independently written log density, to
float64 rounding, at several s; the s = 1 limit v = z - E[x0]; a quadrature of E[eps - x0 | z] in
one dimension; E[x0 | z] = z - s v; the density against torch.distributions; guidance; the
flow version of the fine-grained family; one-line errors."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from amdm_geom.core.flow_schedules import make_flow_scheduler
from amdm_geom.models import gmm
from amdm_geom.models.flow_gmm import FlowGMMDenoiser, flow_family_model, flow_from_description, flow_vp_map
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.models.mixture import GaussianMixture

N_TRAIN = 1000
S_GRID = (0.001, 0.1, 0.37, 0.5, 0.9, 0.99, 0.999)


def _mixture(full: bool, k: int = 3, n: int = 4, seed: int = 0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(k, n, generator=g, dtype=torch.float64)
    if full:
        a = torch.randn(k, n, n, generator=g, dtype=torch.float64)
        cov = a @ a.transpose(1, 2) / n + 0.3 * torch.eye(n, dtype=torch.float64)
        return GaussianMixture.full(means, cov)
    return GaussianMixture(means, torch.rand(k, n, generator=g, dtype=torch.float64) + 0.2, (n,))


def _log_density(z: torch.Tensor, mix: GaussianMixture, w: torch.Tensor, s: float) -> torch.Tensor:
    """log p_s(z) written from the interpolant alone: component k is N((1 - s) m_k, (1 - s)^2 S_k + s^2 I)."""
    n = mix.dim
    cov = (1 - s) ** 2 * mix.full_covariances() + s**2 * torch.eye(n, dtype=torch.float64)  # (K, n, n)
    comp = torch.distributions.MultivariateNormal((1 - s) * mix.means, covariance_matrix=cov)
    return torch.logsumexp(torch.log(w) + comp.log_prob(z[:, None, :]), dim=1)  # (B,)


def _autograd_velocity(z, mix, w, s):
    """Tweedie: v = -(z + s grad log p_s(z)) / (1 - s), the gradient by autograd."""
    zz = z.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(_log_density(zz, mix, w, s).sum(), zz)
    return -(z + s * score) / (1 - s)


def _points(mix, batch=6, seed=1):
    return 2.0 * torch.randn(batch, mix.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("s", S_GRID)
def test_velocity_is_autograd_of_the_log_density(full, s):
    mix = _mixture(full)
    model = FlowGMMDenoiser(mix, dtype=torch.float64)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    z = _points(mix)
    want = _autograd_velocity(z, mix, w, s)
    got = model(z, s * N_TRAIN, w)
    assert got.dtype == torch.float64 and got.shape == z.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * float(want.abs().max()))


def test_per_sample_weights_are_per_sample_velocities():
    mix = _mixture(False)
    model = FlowGMMDenoiser(mix, dtype=torch.float64)
    w = torch.tensor([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0], [0.1, 0.1, 0.8]], dtype=torch.float64)
    z = _points(mix, batch=3)
    for b in range(3):
        want = _autograd_velocity(z[b:b + 1], mix, w[b], 0.6)
        torch.testing.assert_close(model(z, 600.0, w)[b:b + 1], want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("full", [False, True])
def test_at_s_1_the_velocity_is_z_minus_the_data_mean(full):
    """diffusers' first flow step is at s = 1 exactly (z = eps, independent of x0): v = z - E[x0],
    with no division by 1 - s; just below it the velocity is continuous."""
    mix = _mixture(full)
    model = FlowGMMDenoiser(mix, dtype=torch.float64)
    w = torch.tensor([0.6, 0.1, 0.3], dtype=torch.float64)
    z = _points(mix)
    at_one = model(z, torch.tensor(1000.0), w)
    torch.testing.assert_close(at_one, z - w @ mix.means, rtol=1e-12, atol=1e-12)
    near = model(z, 1000.0 * (1 - 1e-7), w)
    assert float((near - at_one).abs().max()) < 1e-5
    assert torch.isfinite(model.log_prob(z, 1000.0, w)).all()
    torch.testing.assert_close(model.log_prob(z, 1000, w), _log_density(z, mix, w, 1.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("s", [0.05, 0.3, 0.8, 1.0])
def test_velocity_is_the_conditional_mean_of_eps_minus_x0_by_quadrature(s):
    """In one dimension, E[eps - x0 | z_s = z] = int (eps(x0) - x0) p0(x0) N(z; (1 - s) x0, s^2) dx0 /
    int p0(x0) N(...) dx0 with eps(x0) = (z - (1 - s) x0) / s, on a fine grid (trapezoid)."""
    mix = GaussianMixture(torch.tensor([[-1.5], [2.0]], dtype=torch.float64),
                          torch.tensor([[0.3], [0.8]], dtype=torch.float64), (1,))
    w = torch.tensor([0.35, 0.65], dtype=torch.float64)
    model = FlowGMMDenoiser(mix, dtype=torch.float64)
    x0 = np.linspace(-12, 12, 400_001)
    p0 = sum(float(w[k]) * np.exp(-(x0 - float(mix.means[k, 0])) ** 2 / (2 * float(mix.variances[k, 0])))
             / math.sqrt(2 * math.pi * float(mix.variances[k, 0])) for k in range(2))
    for z in (-2.0, 0.3, 1.7):
        like = np.exp(-((z - (1 - s) * x0) ** 2) / (2 * s * s))
        post = p0 * like
        v = np.trapezoid(((z - (1 - s) * x0) / s - x0) * post, x0) / np.trapezoid(post, x0)
        got = float(model(torch.tensor([[z]], dtype=torch.float64), s * N_TRAIN, w)[0, 0])
        assert got == pytest.approx(v, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("full", [False, True])
def test_predicted_x0_is_z_minus_s_v(full):
    mix = _mixture(full)
    model = FlowGMMDenoiser(mix, dtype=torch.float64)
    z = _points(mix)
    for s in (0.0, 0.2, 0.7, 1.0):
        x0 = model.predicted_x0(z, s * N_TRAIN, None)
        torch.testing.assert_close(x0, z - s * model(z, s * N_TRAIN, None), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.predicted_x0(z, 0, None), z)  # s = 0: the latent is the data
    torch.testing.assert_close(model.predicted_x0(z, 1000, None), mix.mean().expand_as(z))


@pytest.mark.parametrize("s", [0.0, 0.25, 0.75, 1.0])
def test_log_prob_is_the_mixture_of_diffused_components(s):
    mix = _mixture(False)
    w = torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64)
    z = _points(mix)
    std = ((1 - s) ** 2 * mix.variances + s**2).sqrt()  # (K, n)
    law = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=w),
        torch.distributions.Independent(torch.distributions.Normal((1 - s) * mix.means, std), 1))
    got = FlowGMMDenoiser(mix).log_prob(z, s * N_TRAIN, w)
    torch.testing.assert_close(got, law.log_prob(z), rtol=1e-12, atol=1e-12)


def test_flow_vp_map_matches_signal_to_noise():
    for s in (0.1, 0.5, 0.9):
        c, abar = flow_vp_map(s)
        assert abar / (1 - abar) == pytest.approx((1 - s) ** 2 / s**2, rel=1e-12)
        assert c * math.sqrt(abar) == pytest.approx(1 - s) and c * math.sqrt(1 - abar) == pytest.approx(s)


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_guidance_is_the_one_rule(scale):
    mix = _mixture(False)
    cond = torch.tensor([0.8, 0.1, 0.1], dtype=torch.float64)
    uncond = torch.tensor([0.2, 0.4, 0.4], dtype=torch.float64)
    z = _points(mix)
    guided = FlowGMMDenoiser(mix, guidance_scale=scale, uncond_weights=uncond, dtype=torch.float64)
    plain = FlowGMMDenoiser(mix, dtype=torch.float64)
    v_c, v_u = plain(z, 400.0, cond), plain(z, 400.0, uncond)
    want = v_u + scale * (v_c - v_u) if scale > 1 else v_c
    torch.testing.assert_close(guided(z, 400.0, cond), want, rtol=0, atol=1e-13)
    assert torch.equal(guided.null_condition(), uncond)


def test_float32_output_is_the_float64_computation_rounded_and_chunks_agree(monkeypatch):
    mix = _mixture(False, n=16)
    w = torch.tensor([[0.2, 0.5, 0.3]] * 5 + [[0.9, 0.05, 0.05]] * 5, dtype=torch.float64)
    z = _points(mix, batch=10)
    wide = FlowGMMDenoiser(mix, dtype=torch.float64, guidance_scale=2.0)(z, 512.5, w)
    narrow = FlowGMMDenoiser(mix, guidance_scale=2.0)(z.float(), 512.5, w)
    rounded = FlowGMMDenoiser(mix, dtype=torch.float64, guidance_scale=2.0)(z.float().double(), 512.5, w).float()
    assert narrow.dtype == torch.float32 and torch.equal(narrow, rounded)
    monkeypatch.setattr(gmm, "CHUNK_BYTES", 8 * 16 * 3)  # three rows per chunk
    chunked = FlowGMMDenoiser(mix, dtype=torch.float64, guidance_scale=2.0)(z, 512.5, w)
    torch.testing.assert_close(chunked, wide, rtol=1e-13, atol=1e-13)  # (matrix products of other sizes)


def test_flow_family_is_the_vp_family_under_the_flow():
    fam = fine_grained_family((2, 4, 4), n_positions=2, n_colours=2, seed=3)
    a = flow_family_model(fam, shift=3.0, name="position=0")
    b = flow_family_model(fam, shift=3.0, name="colour=1", perturb=0.1)
    assert a.mixture is fam.mixture and torch.equal(b.mixture.variances, fam.mixture.variances)
    moved = (b.mixture.means - fam.mixture.means).norm(dim=1)
    sep = float(torch.cdist(fam.mixture.means, fam.mixture.means).mean())
    torch.testing.assert_close(moved, torch.full_like(moved, 0.1 * sep))
    assert dict(a.scheduler.config)["shift"] == 3.0 and a.scheduler.config == b.scheduler.config
    assert a.condition_kind == fam.model().condition_kind == "gmm-weights:4"
    desc = json.loads(json.dumps(b.describe()))
    assert desc["family"] == "gmm-flow" and desc["schedule"]["shift"] == 3.0
    again = flow_from_description(desc)
    z = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    y = fam.condition(colour=1)
    assert torch.equal(again(z, 750.0, y), b(z, 750.0, y)) and again.name == "colour=1"
    # the same data: at s = 0 the flow density is the VP model's at abar = 1 (both the data's)
    vp = fam.model()
    torch.testing.assert_close(a.log_prob(z, 0, y), vp.mixture.log_prob(z.reshape(3, -1).double(), y, 1.0))


@pytest.mark.parametrize("call,match", [
    (lambda m, z: m(z, 1000.5, None),
     r"t must be one timestep in \[0, 1000\] \(s = t / 1000 in \[0, 1\]\); got 1000.5"),
    (lambda m, z: m(z, -1, None), r"t must be one timestep in \[0, 1000\].*got -1"),
    (lambda m, z: m(z, float("nan"), None), "got nan"),
    (lambda m, z: m(z, torch.tensor([1.0, 2.0]), None), r"got \(2,\)"),
    (lambda m, z: m(z, True, None), "got True"),
    (lambda m, z: m(z[:, :2], 500, None), r"latents must have shape \(B, 4\); got \(6, 2\)"),
    (lambda m, z: m(z, 500, torch.ones(4)), r"condition weights must have shape \(3,\) or \(B, 3\); got \(4,\)"),
    (lambda m, z: m(z, 500, torch.ones(3)), "condition weights must be >= 0 and sum to 1"),
    (lambda m, z: m(z, 500, torch.full((2, 3), 1 / 3)), r"one row per latent \(6\); got 2"),
    (lambda m, z: FlowGMMDenoiser(m.mixture, DDIMScheduler()), "must be a flow-matching scheduler.*got DDIMScheduler"),
    (lambda m, z: FlowGMMDenoiser(m.mixture, guidance_scale=float("inf")), "guidance_scale must be a finite number"),
    (lambda m, z: flow_family_model(fine_grained_family((4,)), perturb=-1.0), "perturb must be a finite number >= 0"),
    (lambda m, z: flow_family_model(fine_grained_family((4,)), shift=0.0), "shift must be a finite float > 0"),
    (lambda m, z: flow_from_description({"family": "gmm"}), "not a fine-grained flow GMM description"),
])
def test_bad_input_is_one_line(call, match):
    model = FlowGMMDenoiser(_mixture(False), make_flow_scheduler())
    with pytest.raises(ValueError, match=match) as info:
        call(model, _points(model.mixture))
    assert "\n" not in str(info.value)


def test_the_model_spec_builds_the_flow_family_model():
    from amdm_geom.models.specs import GMMFamilySpec, GMMModelSpec

    fam_spec = GMMFamilySpec(latent_shape=(2, 4, 4), positions=2, colours=3)
    spec = GMMModelSpec(attribute="colour", value=2, sde="flow", shift=3.0, guidance=2.0, perturb=0.1)
    spec.check(fam_spec)
    fam = fam_spec.build()
    model, cond = spec.build(fam)
    want = flow_family_model(fam, shift=3.0, guidance_scale=2.0, perturb=0.1)
    z = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(z, 600.0, cond), want(z, 600.0, fam.condition(colour=2)))
    assert model.name == "colour (flow)" and model.describe()["flow_shift"] == 3.0 and spec.step_kind == "flow"
    for bad, match in [(lambda: GMMModelSpec(attribute="colour", value=3, sde="flow").check(fam_spec),
                        r"^value must be in \[0, 3\); got 3$"),
                       (lambda: GMMModelSpec(attribute="colour", sde="flow", shift=0.0),
                        r"^shift must be a finite number > 0; got 0.0$"),
                       (lambda: GMMModelSpec(attribute="colour", shift=3.0),
                        r"^shift is the flow scheduler's time shift: it needs sde flow; got 3.0$"),
                       (lambda: GMMModelSpec(attribute="style", sde="flow").check(fam_spec), "style needs a family")]:
        with pytest.raises(ValueError, match=match) as info:
            bad()
        assert "\n" not in str(info.value)

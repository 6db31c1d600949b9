"""Denoisers that predict eps, v or x0, with or without clipped x0 (issue 13, point 2.1).

The sampler hands each model's raw output to diffusers' ``DDIMScheduler.step``, so a one-model
run is a plain diffusers loop bit for bit for every prediction type, clipped or not; and the
recorded ``eps`` is the step's epsilon, for which eq. (4), mu = A_t z_t + B_t eps, holds on
every step (checked here from the recorded arrays, in float64, against the coefficients
computed by hand from the scheduler's alphas_cumprod).
"""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.schedules import make_scheduler

SHAPE = (2, 4, 4)
STEPS = 10
KINDS = ("epsilon", "v_prediction", "sample")


class TinyDenoiser:
    """A seeded smooth function of (z_t, t), ``2 tanh(W z + b t / 1000)``, read as the scheduler's
    prediction type: large enough that x0 often leaves [-1, 1] (so clipping acts)."""

    def __init__(self, prediction_type: str, clip_sample: bool, seed: int = 0):
        self.scheduler = make_scheduler("scaled_linear", prediction_type=prediction_type, clip_sample=clip_sample)
        self.latent_shape, self.dtype, self.device = SHAPE, torch.float32, torch.device("cpu")
        n = math.prod(SHAPE)
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(n, n, generator=g) * (1.5 / n**0.5)
        self.b = torch.randn(n, generator=g)

    def __call__(self, z_t, t, cond):
        return (2 * torch.tanh(z_t.flatten(1) @ self.W + self.b * (int(t) / 1000))).reshape(z_t.shape)

    def describe(self):
        return {"family": "tiny-test", "prediction_type": self.scheduler.config.prediction_type}


def diffusers_loop(model, seeds, eta):
    """diffusers' own loop: set_timesteps, then step(model_output, t, z, eta), one generator per sample."""
    sched = DDIMScheduler.from_config(model.scheduler.config)
    sched.set_timesteps(STEPS)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    z = torch.stack([torch.randn(SHAPE, generator=g) for g in gens])
    for t in sched.timesteps:
        out = model(z, int(t), None)
        xi = torch.stack([torch.randn(SHAPE, generator=g) for g in gens]) if eta > 0 else None
        z = sched.step(out, int(t), z, eta=eta, variance_noise=xi).prev_sample
    return z


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_one_model_is_diffusers_bit_for_bit(kind, clip, eta):
    model = TinyDenoiser(kind, clip)
    seeds = [3, 8, 21]
    sampler = AMDMSampler([model], [None], SamplerConfig(num_inference_steps=STEPS, ddim_eta=eta))
    out, cache = sampler.run_with_cache(seeds, names_filter=["model0.x0"])
    assert torch.equal(out.z0, diffusers_loop(model, seeds, eta))
    assert out.model_calls == STEPS
    x0 = cache.x0.values
    if clip:  # clipping acted (else this test would not test it)
        assert np.abs(x0).max() == 1.0 and (np.abs(x0) == 1.0).mean() > 0.05
    else:
        assert np.abs(x0).max() > 1.0


def coefficients_by_hand(scheduler, eta):
    """Per step, eq. (4)'s A_t, B_t, abar_t in float64 from the scheduler's alphas_cumprod, and
    |D32 - D|: how far the coefficient of eps in diffusers' step, sqrt(1 - abar_prev - sigma^2),
    is from exact when computed in float32 as diffusers does (it cancels badly at the last DDPM
    steps, where the step's rounding of the mean is |D32 - D| |eps| rather than ulps)."""
    alphas = scheduler.alphas_cumprod  # float32
    sched = DDIMScheduler.from_config(scheduler.config)
    sched.set_timesteps(STEPS)
    out = []
    for t in sched.timesteps.tolist():
        prev = t - 1000 // STEPS
        a32, ap32 = alphas[t], (alphas[prev] if prev >= 0 else alphas[0])  # set_alpha_to_one=False
        a, ap = float(a32), float(ap32)
        sigma2 = eta**2 * (1 - ap) / (1 - a) * (1 - a / ap)
        D = math.sqrt(1 - ap - sigma2)
        std32 = eta * ((1 - ap32) / (1 - a32) * (1 - a32 / ap32)) ** 0.5
        D32 = float((1 - ap32 - std32**2) ** 0.5)
        out.append((math.sqrt(ap / a), D - math.sqrt(ap * (1 - a) / a), a, abs(D32 - D)))
    return out


def unclipped_epsilon(kind, out, z, abar):
    """diffusers' epsilon of a raw output before clipping, by hand in float64."""
    if kind == "v_prediction":
        return math.sqrt(abar) * out + math.sqrt(1 - abar) * z
    if kind == "sample":
        return (z - math.sqrt(abar) * out) / math.sqrt(1 - abar)
    return out


def eq4_excess(ds, model, kind, eta, i=0, steps=STEPS):
    """The largest |mu - (A z + B eps)| over the recorded steps, in units of its tolerance: 16
    float32 epsilons of the terms' scale A |z| + (|B| + 2A) |eps| (as analyses/trace_checks.py
    bounds it), plus diffusers' own float32 rounding of its eps coefficient times the unclipped eps."""
    worst = 0.0
    for k, (A, B, abar, dD) in enumerate(coefficients_by_hand(model.scheduler, eta)[:steps]):
        z, eps, mu, out = (ds[v].isel(step=k, model=i).values.astype(np.float64) for v in ("z", "eps", "mu", "out"))
        scale = A * np.abs(z) + (abs(B) + 2 * A) * np.abs(eps)
        tol = 16 * np.finfo(np.float32).eps * scale + 2 * dD * np.abs(unclipped_epsilon(kind, out, z, abar))
        worst = max(worst, float((np.abs(mu - (A * z + B * eps)) / tol).max()))
    return worst


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("kind", KINDS)
def test_eq4_holds_on_the_recorded_eps_with_clipping(kind, eta):
    model = TinyDenoiser(kind, True, seed=1)
    sampler = AMDMSampler([model], [None], SamplerConfig(num_inference_steps=STEPS, ddim_eta=eta, record_output=True))
    _, ds = sampler.run_with_cache([0, 1, 2, 3])
    assert eq4_excess(ds, model, kind, eta) <= 1.0
    for k, (A, B, *_) in enumerate(coefficients_by_hand(model.scheduler, eta)):
        np.testing.assert_allclose(ds.model_A.values[0, k], A, rtol=1e-12)
        np.testing.assert_allclose(ds.model_B.values[0, k], B, rtol=1e-9, atol=1e-12)
    # with the unclipped epsilon in its place, eq. (4) fails: the correction is not vacuous
    raw = ds.copy()
    for k, (_, _, abar, _) in enumerate(coefficients_by_hand(model.scheduler, eta)):
        z, out = (ds[v].isel(step=k, model=0).values.astype(np.float64) for v in ("z", "out"))
        raw.eps.values[k, 0] = unclipped_epsilon(kind, out, z, abar)
    assert eq4_excess(raw, model, kind, eta) > 100


@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
def test_recorded_eps_is_the_converted_output_without_clipping(kind):
    """No clipping: eps is diffusers' conversion of the output (by hand, float64, to rounding)
    and out is the raw output; for an epsilon model eps is the output bit for bit."""
    model = TinyDenoiser(kind, False, seed=2)
    sampler = AMDMSampler([model], [None], SamplerConfig(num_inference_steps=STEPS, ddim_eta=1.0,
                                                         record_output=True))
    _, ds = sampler.run_with_cache([5, 6])
    for k, (_, _, abar, _) in enumerate(coefficients_by_hand(model.scheduler, 1.0)):
        z, eps, out = (ds[v].isel(step=k, model=0).values.astype(np.float64) for v in ("z", "eps", "out"))
        want = unclipped_epsilon(kind, out, z, abar)
        np.testing.assert_allclose(eps, want, rtol=0, atol=1e-5 * np.abs(want).max())
    eps_model = TinyDenoiser("epsilon", False, seed=2)
    _, ds = AMDMSampler([eps_model], [None], SamplerConfig(num_inference_steps=STEPS, record_output=True)) \
        .run_with_cache([5, 6], names_filter=["model0.eps", "model0.out"])
    np.testing.assert_array_equal(ds.eps.values, ds.out.values)


def test_two_v_models_aggregate_and_obey_eq4():
    """Two clipped v-prediction models under Algorithm 1: eq. (4) on both models' recorded steps."""
    a, b = TinyDenoiser("v_prediction", True, seed=3), TinyDenoiser("v_prediction", True, seed=4)
    cfg = SamplerConfig(num_inference_steps=STEPS, agg_steps=4, ddim_eta=1.0, record_output=True)
    _, ds = AMDMSampler([a, b], [None, None], cfg).run_with_cache([0, 1])
    assert eq4_excess(ds, a, "v_prediction", 1.0) <= 1.0
    assert eq4_excess(ds, b, "v_prediction", 1.0, i=1, steps=4) <= 1.0  # model 2 stops after the window
    assert np.isnan(ds.eps.isel(model=1, step=4).values).all()

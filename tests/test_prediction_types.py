"""Denoisers that predict eps, v or x0, with or without clipped x0 (issue 13, point 2.1).

The sampler hands each model's raw output to diffusers' ``DDIMScheduler.step``, so a one-model
run is a plain diffusers loop bit for bit for every prediction type, clipped or not; and the
recorded ``eps`` is the step's epsilon, for which eq. (4), mu = A_t z_t + B_t eps, holds on
every step (checked here from the recorded arrays, in float64, against the coefficients
computed by hand from the scheduler's alphas_cumprod, per element within a bound derived from the
float32 arithmetic of diffusers' step, ``eq4_bound``, so that it holds under every
``ATEN_CPU_CAPABILITY``: default, avx2 and avx512 give different schedules and model outputs
in the last bits, never a residual above the bound).
"""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from amdm_geom.core.schedules import make_scheduler
from amdm_geom.sampling import AMDMSampler, SamplerConfig

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


#: float32's unit roundoff: a correctly rounded float32 operation is off by at most U |result|.
U = 2.0**-24


def step_arithmetic(scheduler, eta):
    """Per step, the numbers diffusers' ``DDIMScheduler.step`` works with, as Python floats.

    The float32 scalars the step computes, by the same torch expressions on the same 0-dim
    float32 tensors (so bit for bit the ones it used on this machine): ``sa = abar_t**0.5``,
    ``sb = (1 - abar_t)**0.5``, ``sap = abar_prev**0.5``, ``D32 = (1 - abar_prev - std**2)**0.5``
    (diffusers' eps coefficient, ``std = eta * variance**0.5``); their exact values from the same
    float32 ``alphas_cumprod``: ``ra``, ``rb``, ``rap`` and ``D`` (D from exact rational arithmetic,
    as 1 - abar_prev - sigma^2 cancels at the last DDPM steps); and eq. (4)'s ``A`` and ``B`` and
    ``abar`` in float64 (A = sqrt(abar_prev / abar), B = D - A sqrt(1 - abar))."""
    sched = DDIMScheduler.from_config(scheduler.config)
    sched.set_timesteps(STEPS)
    out = []
    for t in sched.timesteps.tolist():
        prev = t - sched.config.num_train_timesteps // sched.num_inference_steps
        a32 = sched.alphas_cumprod[t]
        ap32 = sched.alphas_cumprod[prev] if prev >= 0 else sched.final_alpha_cumprod
        std = eta * sched._get_variance(t, prev) ** 0.5
        a, ap = Fraction(float(a32)), Fraction(float(ap32))
        D = math.sqrt(max(float(1 - ap - Fraction(eta) ** 2 * (1 - ap) / (1 - a) * (1 - a / ap)), 0.0))
        A = math.sqrt(float(ap / a))
        out.append(dict(sa=float(a32**0.5), sb=float((1 - a32) ** 0.5), sap=float(ap32**0.5),
                        D32=float((1 - ap32 - std**2) ** 0.5), ra=math.sqrt(float(a)), rb=math.sqrt(float(1 - a)),
                        rap=math.sqrt(float(ap)), D=D, A=A, B=D - A * math.sqrt(float(1 - a)), abar=float(a)))
    return out


def unclipped_epsilon(kind, out, z, abar):
    """diffusers' epsilon of a raw output before clipping, by hand in float64."""
    if kind == "v_prediction":
        return math.sqrt(abar) * out + math.sqrt(1 - abar) * z
    if kind == "sample":
        return (z - math.sqrt(abar) * out) / math.sqrt(1 - abar)
    return out


def eq4_bound(kind, s, z, out, eps, mu):
    """An upper bound, per element, on |mu - (A z + B eps)| for one step of diffusers' DDIM
    (``s``: ``step_arithmetic``'s row) with x0 clipped, from the arithmetic the step does.

    Why a bound and not a number of epsilons of a scale: where x0 is clipped, the recorded eps
    (diffusers' unclipped E shifted by sqrt(abar_prev)/B (clip(X) - X)) says nothing of the size
    of the terms the step adds, mu = fl(fl(sap clip(X)) + fl(D32 E)), which can be a small
    difference of two O(1) terms; a tolerance of 16 float32 epsilons of A |z| + (|B| + 2A) |eps|
    then falls below their rounding on some elements, and on which depends on the data, which
    differ by ATen kernel level (``torch.linspace`` of the betas and the model's matrix product
    round differently under default, avx2 and avx512): 1.29 of it on an Intel AVX-512 machine
    under avx2 and avx512, and up to 2.8 on other seeds of this model at every level.

    Every tensor operation of the step (a product or quotient with a 0-dim float32 tensor, a
    difference or sum, a clamp) is one correctly rounded float32 operation at every kernel
    level: ATen's vectorised add/sub is ``fmadd(b, +-1, a)``, a single rounding of a +- b, and a
    fused multiply-add elsewhere would only remove roundings. So each result r is off by at most
    U |r|. With X and E the step's float32 x0 and eps before clipping, Xc = clip(X), and eps the
    recorded epsilon (E where Xc = X, else fl32(E + sqrt(abar_prev)/B (Xc - X)) computed in
    float64, ``schedules.step_epsilon``), exact algebra (D - B = A rb, rap = A ra) gives

        mu - (A z + B eps) = (sap - rap) Xc + (D32 - D) E + A g + rho - B delta,
        g = rb E + ra X - z

    and the bound is the sum of
      * |sap - rap| |Xc|: the float32 sqrt(abar_prev) diffusers multiplies x0 by (measured);
      * |D32 - D| |E|: its float32 eps coefficient (measured; it cancels at the last DDPM steps);
      * A |g|: how far diffusers' float32 pair (X, E) is from z = sqrt(abar) x0 + sqrt(1 - abar) eps,
        bounded from the roundings that made them (p, w: the intermediate products and differences):
          epsilon  E = out, p = fl(sb out), w = fl(z - p), X = fl(w / sa):
                   |g| <= ra U|X| + |ra/sa - 1| |w| + U|w| + U|p| + |sb - rb| |out|
          sample   X = out, p = fl(sa out), w = fl(z - p), E = fl(w / sb):
                   |g| <= rb U|E| + |rb/sb - 1| |w| + U|w| + U|p| + |sa - ra| |out|
          v        X = fl(fl(sa z) - fl(sb out)), E = fl(fl(sa out) + fl(sb z)):
                   |g| <= ra U(|X| + sa|z| + sb|out|) + rb U(|E| + sa|out| + sb|z|)
                          + |ra sa + rb sb - 1| |z| + |rb sa - ra sb| |out|;
      * rho <= U (|mu| + sap |Xc| + D32 |E|): the three roundings of mu's product, product and sum;
      * |B| delta <= U |B| |eps|: the float32 cast of the corrected eps (0 where x0 was not clipped);
    all first order in U, with X, E, p, w evaluated here in float64 from out, z and the float32
    scalars. What first order leaves out is added, not absorbed by a factor: products of two
    float32 roundings, and the float64 values of X, E, p, w standing for the float32 ones (each
    chain has at most 4 roundings: at most 8 U times the first-order sum); and the float64
    roundings of this check and of step_epsilon's correction: fewer than 64 of 2^-53 each,
    relative to S = |mu| + A|z| + (|B| + D + A rb)(|eps| + |E|) + rap (|Xc| + |X|), those of
    step_epsilon's B (whose D cancels: |dB| <= 2^-53 (3/D + D + 3 A rb + |B|)) amplified by
    amp = 1 + |dB| / (2^-53 |B|) through sqrt(abar_prev) / B. Together they are at most 0.2% of
    the bound here (at the last step, where |B| is 0.01 to 0.02), so they cannot hide an error of
    the step.
    """
    ab = np.abs
    sa, sb, sap, D32 = s["sa"], s["sb"], s["sap"], s["D32"]
    ra, rb, rap, D, A, B = s["ra"], s["rb"], s["rap"], s["D"], s["A"], s["B"]
    if kind == "epsilon":
        E, p = out, sb * out
        w = z - p
        X = w / sa
        g = ra * U * ab(X) + ab(ra / sa - 1) * ab(w) + U * ab(w) + U * ab(p) + ab(sb - rb) * ab(out)
    elif kind == "sample":
        X, p = out, sa * out
        w = z - p
        E = w / sb
        g = rb * U * ab(E) + ab(rb / sb - 1) * ab(w) + U * ab(w) + U * ab(p) + ab(sa - ra) * ab(out)
    else:
        X, E = sa * z - sb * out, sa * out + sb * z
        g = (ra * U * (ab(X) + sa * ab(z) + sb * ab(out)) + rb * U * (ab(E) + sa * ab(out) + sb * ab(z))
             + ab(ra * sa + rb * sb - 1) * ab(z) + ab(rb * sa - ra * sb) * ab(out))
    Xc = np.clip(X, -1.0, 1.0)
    first = (ab(sap - rap) * ab(Xc) + ab(D32 - D) * ab(E) + A * g
             + U * (ab(mu) + sap * ab(Xc) + D32 * ab(E)) + U * abs(B) * ab(eps))
    S = ab(mu) + A * ab(z) + (abs(B) + D + A * rb) * (ab(eps) + ab(E)) + rap * (ab(Xc) + ab(X))
    amp = 1 + (3 / D + D + 3 * A * rb + abs(B)) / abs(B)
    return (1 + 8 * U) * first + 64 * 2.0**-53 * amp * S


def eq4_excess(ds, model, kind, eta, i=0, steps=STEPS):
    """The largest |mu - (A z + B eps)| over the recorded steps, per element in units of its bound
    (``eq4_bound``; model ``i``, the recorded z, eps, mu and the raw output ``out``)."""
    worst = 0.0
    for k, s in enumerate(step_arithmetic(model.scheduler, eta)[:steps]):
        z, eps, mu, out = (ds[v].isel(step=k, model=i).values.astype(np.float64) for v in ("z", "eps", "mu", "out"))
        residual = np.abs(mu - (s["A"] * z + s["B"] * eps))
        worst = max(worst, float((residual / eq4_bound(kind, s, z, out, eps, mu)).max()))
    return worst


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("kind", KINDS)
def test_eq4_holds_on_the_recorded_eps_with_clipping(kind, eta):
    """Eq. (4) on the recorded eps of a clipped model, per element within ``eq4_bound`` (derived
    from the step's float32 arithmetic, so it holds under every ATEN_CPU_CAPABILITY); with the
    unclipped epsilon in its place the residual is over 100 times that bound."""
    model = TinyDenoiser(kind, True, seed=1)
    sampler = AMDMSampler([model], [None], SamplerConfig(num_inference_steps=STEPS, ddim_eta=eta, record_output=True))
    _, ds = sampler.run_with_cache([0, 1, 2, 3])
    assert (np.abs(ds.x0.values) == 1.0).mean() > 0.05  # clipping acted
    assert eq4_excess(ds, model, kind, eta) <= 1.0
    for k, s in enumerate(step_arithmetic(model.scheduler, eta)):
        np.testing.assert_allclose(ds.model_A.values[0, k], s["A"], rtol=1e-12)
        np.testing.assert_allclose(ds.model_B.values[0, k], s["B"], rtol=1e-9, atol=1e-12)
    # with the unclipped epsilon in its place, eq. (4) fails: the correction is not vacuous
    raw = ds.copy(deep=True)
    for k, s in enumerate(step_arithmetic(model.scheduler, eta)):
        z, out = (ds[v].isel(step=k, model=0).values.astype(np.float64) for v in ("z", "out"))
        raw.eps.values[k, 0] = unclipped_epsilon(kind, out, z, s["abar"])
    assert eq4_excess(raw, model, kind, eta) > 100


@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
def test_recorded_eps_is_the_converted_output_without_clipping(kind):
    """No clipping: eps is diffusers' conversion of the output (by hand, float64, to rounding)
    and out is the raw output; for an epsilon model eps is the output bit for bit."""
    model = TinyDenoiser(kind, False, seed=2)
    sampler = AMDMSampler([model], [None], SamplerConfig(num_inference_steps=STEPS, ddim_eta=1.0,
                                                         record_output=True))
    _, ds = sampler.run_with_cache([5, 6])
    for k, s in enumerate(step_arithmetic(model.scheduler, 1.0)):
        z, eps, out = (ds[v].isel(step=k, model=0).values.astype(np.float64) for v in ("z", "eps", "out"))
        want = unclipped_epsilon(kind, out, z, s["abar"])
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

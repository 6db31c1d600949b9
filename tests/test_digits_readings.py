"""The digits readings (``analyses/digits/readings.py``): App. F.3's prediction-type invariance and
eqs. (27)-(28) under both readings of mu, each against an independent computation (diffusers'
``DDIMScheduler.step`` driven by hand, finite differences of the Gaussian log density, closed forms
of linear denoisers), with a deciding case for each verdict; and the arm of eq. (7)'s reading."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from scipy import stats as sps

from amdm_geom.analyses.digits import digits_benchmark as db
from amdm_geom.analyses.digits import readings
from amdm_geom.analyses.digits.runs import arms, conditions, targets
from amdm_geom.app.runner.output import save_dataset
from amdm_geom.models.digits import zoo
from amdm_geom.sampling import AMDMSampler
from amdm_geom.sampling.config import SamplerConfig

EPS32 = float(np.finfo(np.float32).eps)


def _by_hand(model, sched, cond, z, steps):
    """diffusers' DDIM loop (eta = 0) for one model alone."""
    sched.set_timesteps(steps)
    for t in sched.timesteps:
        z = sched.step(model(z, int(t), cond), t, z, eta=0.0).prev_sample
    return z


@pytest.mark.parametrize("prediction_type", readings.PREDICTION_TYPES)
def test_a_re_expressed_model_steps_as_diffusers_does_and_lands_where_v_does(prediction_type):
    base = zoo.load("position")
    cond = conditions("position", targets(3))
    re = readings.ReExpressed(base, prediction_type)
    assert re.scheduler.config.prediction_type == prediction_type and re.scheduler.config.clip_sample
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    z_T = torch.stack([torch.randn(base.latent_shape, generator=g) for g in gens])
    v_hand = _by_hand(base, DDIMScheduler.from_config(base.scheduler.config), cond, z_T, 6)
    re_hand = _by_hand(re, DDIMScheduler.from_config(re.scheduler.config), cond, z_T, 6)
    rel = readings.relative_difference(re_hand, v_hand)
    assert rel.max() <= 16 * 6 * EPS32 and rel.max() > 0  # the same trajectory, to float32 rounding
    # the sampler's one-model run of the re-expression is diffusers' loop bit for bit
    out = AMDMSampler([re], [cond], SamplerConfig(num_inference_steps=6, weights=())).sample([0, 1, 2]).z0
    assert torch.equal(out, re_hand)
    # and the conversion itself: diffusers reads the same x0 from both outputs
    t, z = 901, z_T
    x0 = []
    for model in (base, re):
        sched = DDIMScheduler.from_config(model.scheduler.config)
        sched.set_timesteps(10)
        x0.append(sched.step(model(z, t, cond), t, z).pred_original_sample)
    x0_v, x0_re = x0
    assert (x0_re - x0_v).abs().max() <= 64 * EPS32 / math.sqrt(float(base.scheduler.alphas_cumprod[t]))


@pytest.fixture(scope="module")
def pair():
    tgt = targets(4, seed=1)
    models = [zoo.load(m) for m in readings.MODELS]
    return models, [conditions(m, tgt) for m in readings.MODELS], [1000 + k for k in range(4)]


def test_the_invariance_verdict_holds_and_a_wrong_conversion_is_violated(pair):
    models, conds, seeds = pair
    cfg = SamplerConfig(num_inference_steps=6, agg_steps=3)
    ds = readings.invariance(models, conds, seeds, cfg)
    (v,) = readings.verdicts(ds)
    z0 = ds.readings_z0.values.astype(np.float64).reshape(3, 4, -1)
    rel = np.linalg.norm(z0[1:] - z0[0], axis=2) / np.linalg.norm(z0[0], axis=1)
    assert v.key == "appf3_prediction_type_invariance" and v.status == "holds" and v.family == "trained"
    assert v.value == pytest.approx(rel.max(), rel=1e-12) and 0 < v.value < 16 * (6 + 100) * EPS32

    def wrong(out, z, abar, prediction_type):  # a sign error in the conversion
        a, s = math.sqrt(abar), math.sqrt(1 - abar)
        return (a * out - s * z) if prediction_type == "epsilon" else (a * z + s * out)

    bad = readings.invariance(models, conds, seeds, cfg, convert=wrong)
    (w,) = readings.verdicts(bad)
    assert w.status == "violated" and w.value > 1e-2


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon", "sample"])
def test_ddim_mean_is_diffusers_step(prediction_type):
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=True,
                          prediction_type=prediction_type, set_alpha_to_one=False, steps_offset=1)
    sched.set_timesteps(10)
    sched.alphas_cumprod = sched.alphas_cumprod.double()  # (diffusers' arithmetic in float64)
    sched.final_alpha_cumprod = torch.as_tensor(sched.final_alpha_cumprod).double()
    g = torch.Generator().manual_seed(3)
    z, out = (3 * torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64) for _ in range(2))
    for t in (int(x) for x in sched.timesteps):
        want = sched.step(out, t, z, eta=0.0).prev_sample
        abar, t_prev = float(sched.alphas_cumprod[t]), t - 100
        abar_prev = float(sched.alphas_cumprod[t_prev]) if t_prev >= 0 else float(sched.final_alpha_cumprod)
        got = readings.ddim_mean(out, z, abar, abar_prev, prediction_type, 1.0)
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_the_gradient_is_the_finite_difference_gradient_of_the_log_density():
    g = torch.Generator().manual_seed(5)
    W = torch.randn(6, 6, generator=g, dtype=torch.float64) / 2
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          prediction_type="v_prediction")
    sched.set_timesteps(10)
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    t, t_prev = 501, 401
    net = lambda z: torch.tanh(z.reshape(len(z), 6) @ W).reshape(z.shape)  # noqa: E731  (a smooth denoiser)
    abar, abar_prev = float(sched.alphas_cumprod[t]), float(sched.alphas_cumprod[t_prev])
    z = torch.randn(3, 1, 2, 3, generator=g, dtype=torch.float64)
    grad, r, _ = readings.log_density_gradient(
        z, lambda x: readings.ddim_mean(net(x), x, abar, abar_prev, "v_prediction", None), sigma=0.7)

    def logp(x):  # the density with diffusers' step as mu (not the code under test)
        mu = sched.step(net(x), t, x, eta=0.0).prev_sample
        return sps.multivariate_normal(np.zeros(6), 0.49 * np.eye(6)).logpdf((x - mu).reshape(len(x), 6).numpy())

    h, fd = 1e-6, torch.zeros_like(z)
    for k in range(6):
        e = torch.zeros(6, dtype=torch.float64)
        e[k] = h
        e = e.reshape(1, 1, 2, 3)
        fd.reshape(3, 6)[:, k] = torch.from_numpy((logp(z + e) - logp(z - e)) / (2 * h))
    assert torch.allclose(grad, fd, rtol=1e-6, atol=1e-8)
    assert not torch.allclose(grad, -r / 0.49, rtol=1e-3)  # mu depends on z: not eq. (27)'s -(z - mu) / sigma^2


class _Linear:
    """eps-prediction denoiser, unclipped: eps = z / sqrt(1 - abar_t) (x0_hat = 0) or a constant (J_eps = 0)."""

    def __init__(self, kind, name):
        self.kind, self.name = kind, name
        self.scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       clip_sample=False, set_alpha_to_one=False, steps_offset=1)
        self.latent_shape, self.dtype, self.device = (1, 2, 3), torch.float64, torch.device("cpu")
        self.c = torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(1, 1, 2, 3)

    def __call__(self, z, t, cond):
        s = math.sqrt(1 - float(self.scheduler.alphas_cumprod[int(t)]))
        return z / s if self.kind == "noise" else self.c.expand_as(z).clone()

    def describe(self):
        return {"family": "linear", "kind": self.kind}


@pytest.mark.parametrize("kind, status, cos", [("noise", "holds", 1.0), ("constant", "violated", -1.0)])
def test_linear_denoisers_decide_the_eq7_reading(kind, status, cos):
    # eps = z / sqrt(1 - abar): J_mu = sqrt((1 - abar_prev) / (1 - abar)) I, below I: cos +1 (holds).
    # J_eps = 0: J_mu = A_t I with A_t = sqrt(abar_prev / abar) > 1, so (I - J_mu) = (1 - A_t) I < 0 and the
    # gradient points away from mu(z'): cos -1 (violated), not +1.
    models = [_Linear(kind, "one"), _Linear(kind, "two")]
    conds = [torch.zeros(1), torch.zeros(1)]
    sampler = AMDMSampler(models, conds, SamplerConfig(num_inference_steps=5, agg_steps=3))
    nets = [lambda z, t, m=m: m(z, t, None) for m in models]
    ds = readings.gradient_readings(sampler, nets, [0, 1, 2])
    alg1, eq7 = readings.verdicts(ds)
    assert alg1.status == "holds" and eq7.status == status
    assert np.allclose(ds.readings_cos_eq7.values, cos, atol=1e-12)
    coef = sampler.coefficients[0]
    a = np.array([float(coef.A[k]) for k in ds.readings_step.values])
    b = np.array([float(coef.B[k]) for k in ds.readings_step.values])
    abar = np.array([float(coef.alpha_bar[k]) for k in ds.readings_step.values])
    gain = a + b / np.sqrt(1 - abar) if kind == "noise" else a  # J_mu = gain I
    assert np.allclose(ds.readings_jtr.values, gain[None, :, None], rtol=1e-10)
    assert np.allclose(ds.readings_gr.values, np.abs(1 - gain)[None, :, None], rtol=1e-8)


def test_the_readings_ride_in_the_benchmark_and_the_eq7_arm_costs_one_call_per_model_and_step(tmp_path):
    ds = db.compute(quick=True, only=("amdm", "amdm_mean_aggregate"), batch=8, proximity=False)
    calls = dict(zip(ds.arm.values, ds.calls.values))
    s = next(a for a in arms(True) if a.name == "amdm").sampler.agg_steps
    assert calls["amdm_mean_aggregate"] == calls["amdm"] + 2 * s
    rows = {v.key: v for v in db.verdicts(ds)}
    assert {"appf3_prediction_type_invariance", "eq28_gradient_alg1_reading", "eq28_gradient_eq7_reading"} <= set(rows)
    v = rows["digits_mean_variant"]
    d = ds.success.sel(arm="amdm").values - ds.success.sel(arm="amdm_mean_aggregate").values
    assert v.value == pytest.approx(d.mean(), abs=1e-12) and v.n == len(d) and v.family in ("", "trained")
    if np.ptp(d) > 0:
        lo, hi = sps.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=d.std(ddof=1) / math.sqrt(len(d)))
        assert v.interval == pytest.approx((lo, hi), rel=1e-9)
        assert v.status == ("holds" if -0.05 <= lo and hi <= 0.05 else "violated" if lo > 0.05 or hi < -0.05
                            else "inconclusive")
    assert rows["eq28_gradient_alg1_reading"].status == "holds"
    save_dataset(db.saved(ds), tmp_path / "digits.zarr")  # the result stays writable

"""Implementation checks (issue 12, point 2): the toolkit's conformance checks hold on float32
and float64 runs, with tolerances in units of the dtype's resolution times the values' scale,
and fail on a deliberately perturbed step: a store whose z_next (or a shift) is nudged at one
step, and a DDIM step with a wrong coefficient.

Small real runs (the sampler and ZarrRecorder), mutated with zarr directly. Expected ratios are
recomputed here with numpy from the stores and the documented tolerance rule."""

import math
import shutil

import numpy as np
import pytest
import torch
import zarr
from diffusers import DDIMScheduler

from amdm_geom.analyses.checks import closed_forms, trace_checks
from amdm_geom.core import schedules
from amdm_geom.core.verdicts import CHECK_ULPS, format_table, resolution, to_json
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import ZarrRecorder, etas, open_run

SHAPE, STEPS, S, SAMPLES = (4, 8, 8), 6, 3, 4


def record(path, dtype):
    fam = fine_grained_family(SHAPE, separation=6.0, seed=3)
    models = [fam.model(name="a", dtype=dtype), fam.model(name="b", dtype=dtype, perturb=0.1)]
    conds = [fam.condition(position=0), fam.condition(colour=1)]
    sampler = AMDMSampler(models, conds, SamplerConfig(num_inference_steps=STEPS, agg_steps=S, ddim_eta=1.0))
    with sampler.recording(ZarrRecorder(path)):
        sampler.sample(list(range(SAMPLES)))
    return path


@pytest.fixture(scope="module", params=[torch.float32, torch.float64], ids=["float32", "float64"])
def store(request, tmp_path_factory):
    return record(tmp_path_factory.mktemp("checks") / "run.zarr", request.param)


def rows_of(path):
    return {v.key: v for v in trace_checks.verdicts(trace_checks.compute({"s": path}))}


def eq4_ratio(path) -> float:
    """The eq. (4) ratio by the documented rule, in numpy: per step and model, the residual over
    CHECK_ULPS * eps * scale (eps: the store's dtype's, for mu at least float32's)."""
    ds = open_run(path).load()
    unit = CHECK_ULPS * np.finfo(ds.z.dtype).eps
    unit_mean = max(unit, CHECK_ULPS * np.finfo(np.float32).eps)  # diffusers' float32 coefficients
    worst = 0.0
    for k in range(ds.sizes["step"]):
        for i in range(ds.sizes["model"]):
            z, eps, mu, noise, zn = (ds[v].isel(step=k, model=i).values.astype(np.float64)
                                     for v in ("z", "eps", "mu", "noise", "z_next"))
            if not np.isfinite(z).all():
                continue
            A, B = float(ds.model_A[i, k]), float(ds.model_B[i, k])
            scale4 = (abs(A) * np.abs(z) + (abs(B) + 2 * A) * np.abs(eps)).max()
            worst = max(worst, np.abs(mu - (A * z + B * eps)).max() / (unit_mean * scale4),
                        np.abs(zn - (mu + noise)).max() / (unit * np.maximum(np.abs(zn), np.abs(mu)).max()))
    return float(worst)


def test_store_checks_hold_on_float32_and_float64(store):
    rows = rows_of(store)
    dtype = str(open_run(store).z.dtype)
    for key in ("trace_eq4", "trace_eq7", "sampler_one_model"):
        v = rows[key]
        assert v.kind == "implementation check"
        assert v.status == "holds", v
        assert 0 <= v.value <= 1 and v.reference == 1.0
        assert v.measured.startswith("residual ") and v.measured.endswith(" x tol")
    assert rows["trace_eq4"].value == pytest.approx(eq4_ratio(store), rel=1e-9, abs=1e-12)
    assert "float32" in rows["trace_eq4"].bound and dtype in rows["trace_eq7"].bound
    assert rows["trace_eq4"].n == STEPS + S  # model 1 on every step, model 2 until the window ends
    assert rows["trace_eq7"].n == S * 2 * SAMPLES  # one shift per aggregation step, model and sample


def test_a_nudged_z_next_violates_eq4(store, tmp_path):
    bad = shutil.copytree(store, tmp_path / "bad.zarr")
    group = zarr.open_group(str(bad), mode="r+")
    z_next = group["z_next"][2, 1, 0]
    group["z_next"][2, 1, 0] = z_next + np.asarray(1e-3, dtype=z_next.dtype)  # one step, one model, one sample
    rows = rows_of(bad)
    assert rows["trace_eq4"].status == "violated"
    assert rows["trace_eq4"].value == pytest.approx(eq4_ratio(bad), rel=1e-9)
    assert rows["trace_eq4"].value > 1
    assert rows["trace_eq7"].status == "holds"  # the shift itself was untouched


def test_a_shift_of_the_wrong_length_violates_eq7(store, tmp_path):
    bad = shutil.copytree(store, tmp_path / "bad.zarr")
    ds = open_run(bad)
    k = int(np.flatnonzero(ds.aggregated.values)[0])
    group = zarr.open_group(str(bad), mode="r+")
    agg = group["agg_z"][k].astype(np.float64)
    shifted = group["z_shift"][k, 0].astype(np.float64)
    eta = etas(ds)[0]
    # 1e-3 too long along the shift's own direction, for every sample
    d = shifted - agg
    unit = d / np.linalg.norm(d.reshape(SAMPLES, -1), axis=1).reshape(-1, *[1] * (d.ndim - 1))
    group["z_shift"][k, 0] = (agg + (eta + 1e-3) * unit).astype(group["z_shift"].dtype)
    rows = rows_of(bad)
    assert rows["trace_eq7"].status == "violated" and rows["trace_eq7"].value > 1


def test_ddim_check_fails_with_a_wrong_coefficient(monkeypatch):
    ds = closed_forms.compute(seed=0, ddim_steps=(10,), ddim_etas=(0.0, 1.0))
    good = {v.key: v for v in closed_forms.verdicts(ds)}["ddim_step"]
    assert good.status == "holds" and good.kind == "implementation check" and good.value <= 1
    # the ratio by the rule, recomputed from the saved per-step arrays
    want = np.nanmax(ds.ddim_abs_error.values / (CHECK_ULPS * np.finfo(np.float32).eps * ds.ddim_scale.values))
    assert good.value == pytest.approx(want, rel=1e-12)

    real = schedules.ddim_coefficients

    def wrong(*args, **kw):  # B off by one part in 10^5: a coefficient typed wrong
        c = real(*args, **kw)
        return c.assign(B=c["B"] * (1 + 1e-5))

    monkeypatch.setattr(closed_forms.schedules, "ddim_coefficients", wrong)
    bad = {v.key: v for v in closed_forms.verdicts(closed_forms.compute(seed=0, ddim_steps=(10,)))}["ddim_step"]
    assert bad.status == "violated" and bad.value > 1


def test_ddim_scale_is_the_largest_term_diffusers_sums():
    # independently: the magnitudes of diffusers' own terms sqrt(abar_prev) x0, the direction and
    # the noise, at one step, bound by the recorded scale
    ds = closed_forms.compute(seed=0, ddim_steps=(10,), ddim_etas=(1.0,))
    ref = DDIMScheduler.from_config(schedules.make_scheduler().config)
    ref.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    z, eps, xi = (torch.randn(2, 4, 16, 16, generator=g, dtype=torch.float64) for _ in range(3))
    t = int(ref.timesteps[0])
    abar, prev = float(ref.alphas_cumprod[t]), float(ref.alphas_cumprod[t - 100])
    var = (1 - prev) / (1 - abar) * (1 - abar / prev)
    x0 = (z - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
    terms = (math.sqrt(prev) * x0).abs() + math.sqrt(1 - prev - var) * eps.abs() + math.sqrt(var) * xi.abs()
    assert float(terms.max()) <= float(ds.ddim_scale[0, 0, 0]) * (1 + 1e-12)


def test_checks_print_apart_from_the_paper_claims(store):
    rows = list(rows_of(store).values())
    claims = closed_forms.verdicts(closed_forms.compute(seed=0, ddim_steps=(10,), ddim_etas=(0.0,)))
    table = format_table(claims + rows)
    head, _, checks = table.partition("Implementation checks")
    assert checks and "DDIM step = diffusers' step" in checks and "obey eq. (4)" in checks
    assert "DDIM step" not in head and "norm gap" in head
    n_checks = len(rows) + 1
    assert f"{n_checks} holds, 0 violated, 0 setting-dependent, 0 inconclusive, 0 outside domain, 0 vacuous" in checks
    assert "outside domain" in head
    assert '"kind": "implementation check"' in to_json(rows)


def test_resolution_of_dtypes():
    assert resolution("float32") == float(np.finfo(np.float32).eps)
    assert resolution(torch.float64, "float16") == float(np.finfo(np.float16).eps)
    assert resolution(np.dtype("float64")) == float(np.finfo(np.float64).eps)

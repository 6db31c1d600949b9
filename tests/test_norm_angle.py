"""The Prop. 3.1 analysis on small stores made here, against independent computations: numpy
geometry, the models called directly at the recorded inputs, and hand-written bounds."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from amdm_geom.analyses.prop31 import norm_angle, precision, table5
from amdm_geom.app import cli
from amdm_geom.app.runner import run_analysis
from amdm_geom.app.runner.output import MARKER
from amdm_geom.core.verdicts import to_json
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import ZarrRecorder, open_run
from tests.reference import ref_angle

SHAPE, STEPS, S = (4, 8, 8), 10, 4


def make_store(path, ddim_eta=0.0, dtype=torch.float32, cross=True, **cfg):
    fam = fine_grained_family(SHAPE, separation=6.0, seed=3)
    models = [fam.model(name="a", dtype=dtype), fam.model(name="b", dtype=dtype, perturb=0.1)]
    conds = [fam.condition(position=0), fam.condition(colour=1)]
    sampler = AMDMSampler(models, conds, SamplerConfig(
        num_inference_steps=STEPS, agg_steps=S, ddim_eta=ddim_eta, record_cross_eps=cross,
        continue_after_window=True, **cfg))
    with sampler.recording(ZarrRecorder(path)):
        sampler.sample([0, 1, 2])
    return path, models, conds


@pytest.fixture(scope="module")
def ddim(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("na") / "ddim.zarr")


@pytest.fixture(scope="module")
def ddpm(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("na") / "ddpm.zarr", ddim_eta=1.0)


def flat(da):
    v = da.values.astype(np.float64)
    return v.reshape(v.shape[0], -1)


def test_geometry_per_step_against_numpy(ddim):
    path, _, _ = ddim
    res, ds = norm_angle.prop31(path), open_run(path)
    assert list(res.step.values) == list(range(STEPS))  # models 2.. continue after the window
    for k in (0, 2, 7):
        a, b = flat(ds.z_next.isel(step=k, model=0)), flat(ds.z_next.isel(step=k, model=1))
        np.testing.assert_allclose(res.phi.sel(step=k), ref_angle(a, b), atol=1e-10)
        np.testing.assert_allclose(res.delta.sel(step=k), np.linalg.norm(a - b, axis=1), rtol=1e-12)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        np.testing.assert_allclose(res.norm_gap.sel(step=k), np.abs(na - nb), rtol=1e-8, atol=1e-12)
        alpha = na * nb / (na + nb) ** 2
        bound = np.sqrt(1 - 2 * alpha * (1 - np.cos(ref_angle(a, b)))) * np.linalg.norm(a - b, axis=1)
        np.testing.assert_allclose(res.norm_gap_bound.sel(step=k), bound, rtol=1e-9)
    assert list(res.from_aggregate.values) == [False] + [True] * S + [False] * (STEPS - S - 1)
    assert list(res.t_index.values) == [STEPS - 1 - k for k in range(STEPS)]


def test_cross_terms_equal_the_models_called_at_the_recorded_inputs(ddpm):
    path, models, conds = ddpm
    res, ds = norm_angle.prop31(path), open_run(path)
    n = int(np.prod(SHAPE))
    for k in (1, 3):
        t = int(ds.t[k])
        z1 = torch.from_numpy(ds.z.isel(step=k, model=0).values)
        z2 = torch.from_numpy(ds.z.isel(step=k, model=1).values)
        e1 = models[0](z1, t, conds[0]).double().reshape(3, -1)
        e1y2 = models[0](z1, t, conds[1]).double().reshape(3, -1)  # model 1 under y2
        e2z1 = models[1](z1, t, conds[1]).double().reshape(3, -1)  # model 2 at model 1's input
        e2 = models[1](z2, t, conds[1]).double().reshape(3, -1)
        np.testing.assert_allclose(res.cond_term.sel(step=k), np.linalg.norm(e1 - e1y2, axis=1), rtol=1e-5)
        np.testing.assert_allclose(res.func_term.sel(step=k), np.linalg.norm(e1y2 - e2z1, axis=1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.start_eps_term.sel(step=k), np.linalg.norm(e2z1 - e2, axis=1), rtol=1e-5,
                                   atol=1e-6)
        B, sigma = float(ds.B[k]), float(ds.sigma[k])
        cond, func = np.linalg.norm(e1 - e1y2, axis=1), np.linalg.norm(e1y2 - e2z1, axis=1)
        by_hand = abs(B) * (cond + func) + sigma * math.sqrt(2 * n)
        np.testing.assert_allclose(res.delta_bound.sel(step=k), by_hand, rtol=1e-5)


def test_delta_parts_add_up_to_the_difference(ddpm):
    # z_next1 - z_next2 = A (z1 - z2) + B (eps1 - eps2) + (noise1 - noise2) within one ecosystem,
    # so the norm of the sum of the parts' vectors equals delta (recomputed from the store)
    path, _, _ = ddpm
    ds = open_run(path)
    for k in (1, 2):
        A, B = float(ds.A[k]), float(ds.B[k])
        parts = sum(s * (flat(ds[v].isel(step=k, model=0)) - flat(ds[v].isel(step=k, model=1)))
                    for v, s in (("z", A), ("eps", B), ("noise", 1.0)))
        diff = flat(ds.z_next.isel(step=k, model=0)) - flat(ds.z_next.isel(step=k, model=1))
        np.testing.assert_allclose(parts, diff, atol=2e-5)


def test_verdicts_follow_the_numbers(ddim, ddpm):
    for path in (ddim[0], ddpm[0]):
        res = norm_angle.prop31(path)
        rows = {v.key.split("_run_")[0]: v for v in norm_angle.prop31_verdicts(res, "x")}
        assert rows["prop31_gap"].status == "holds"  # Cauchy-Schwarz: it cannot fail
        premise = res.isel(step=res.from_aggregate.values)
        over = int((premise.delta > premise.delta_bound * (1 + 1e-9)).sum())
        with_start = premise.delta_bound + premise.start_part + abs(premise.B) * premise.start_eps_term
        beyond = int((premise.delta > with_start * (1 + 1e-9)).sum())
        assert rows["prop31_delta"].status == ("holds" if not over else "violated" if beyond else "outside domain")
        assert rows["prop31_delta"].extra["over_with_start"] == beyond
        assert rows["prop31_delta"].value == pytest.approx(float((premise.delta / premise.delta_bound).max()))
        assert f"on {over} of {premise.delta.size} cells" in rows["prop31_delta"].detail


def _delta_row(res):
    return next(v for v in norm_angle.prop31_verdicts(res, "x") if v.key == "prop31_delta_run_x")


def test_delta_bound_exceeded_only_by_the_start_gap_is_outside_domain(ddim):
    # built cells on a real pair's inputs: on the steps after an aggregation, delta is set between eq. (23)'s
    # bound and the bound plus the start terms A |z_1 - z_2| + |B| |eps_2(z_1) - eps_2(z_2)|
    res = norm_angle.prop31(ddim[0])
    prem = res.from_aggregate
    assert float(res.start_gap.isel(step=prem.values).min()) > 0.5  # Alg. 1 starts the models 2 eta = 0.6 apart
    gap_terms = res.start_part + abs(res.B) * res.start_eps_term
    apart = res.assign(delta=xr.where(prem, res.delta_bound + 0.5 * gap_terms, res.delta))
    assert bool((apart.delta > apart.delta_bound).where(prem, True).all())  # over the bound as printed, every cell
    row = _delta_row(apart)
    assert row.status == "outside domain" and row.extra["over_with_start"] == 0
    assert "premise (both sample from one z'_t) excludes" in row.detail
    # the same deltas from one z' (no start gap, no start terms): the bound itself is exceeded
    zero = xr.zeros_like(res.start_gap)
    one = apart.assign(start_gap=zero, start_part=zero, start_eps_term=zero)
    assert _delta_row(one).status == "violated"
    # different starts, but delta beyond even the bound with the start terms: violated too
    far = res.assign(delta=xr.where(prem, res.delta_bound + 2 * gap_terms, res.delta))
    row = _delta_row(far)
    assert row.status == "violated" and row.extra["over_with_start"] == int(prem.sum()) * res.sizes["sample"]


def test_ddim_delta_is_dominated_by_the_shifted_starts(ddim):
    # with sigma = 0 the bound has no noise term, and the two shifted starts (up to 2 eta apart)
    # dominate delta; a finding the analysis reports, checked here against the store directly
    res, ds = norm_angle.prop31(ddim[0]), open_run(ddim[0])
    premise = res.isel(step=res.from_aggregate.values)
    assert bool((premise.start_part > premise.eps_part).all())
    # the two shifted points lie within 2 eta of each other (each is eta from z'), so
    # |A (z1 - z2)| <= A 2 eta
    A = ds.A.values[premise.step.values]
    assert bool((premise.start_part <= 2 * 0.3 * A[:, None] * (1 + 1e-5)).all())


def test_table5_layout_and_values(ddim):
    path, _, _ = ddim
    table = table5.table5(path)
    assert list(table.index) == [STEPS] + [STEPS - 1 - k for k in range(STEPS)]
    ds = open_run(path)
    a, b = flat(ds.z.isel(step=0, model=0)), flat(ds.z.isel(step=0, model=1))
    assert table.loc[STEPS, "phi"] == pytest.approx(ref_angle(a, b).mean())
    a, b = flat(ds.z_next.isel(step=3, model=0)), flat(ds.z_next.isel(step=3, model=1))
    assert table.loc[STEPS - 4, "delta"] == pytest.approx(np.linalg.norm(a - b, axis=1).mean())


def test_paper_table5_and_the_float16_grid():
    paper = table5.paper_table5()
    assert list(paper.index) == list(range(50, 0, -1))
    assert paper.loc[50, "delta"] == pytest.approx(181.375) and paper.loc[48, "phi"] == 0.0
    assert table5.float16_grid_share(paper.loc[48:30, "phi"].values) == 1.0
    assert table5.float16_grid_share(np.array([0.005, 0.0123, 0.07])) == 0.0


@pytest.mark.parametrize("true_phi", [1e-4, 3e-3, 1e-2, 2e-2, 5e-2])
def test_float16_arithmetic_lands_on_the_acos_grid(true_phi):
    # norms near 128 (SD latents): every float16 cosine just below 1 is 1 - k 2^-11, so the
    # reported angle is 0.03125 sqrt(k), whatever the true angle
    g = np.random.default_rng(int(true_phi * 1e6))
    u = g.standard_normal((4, 256))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = g.standard_normal((4, 256))
    v -= np.sum(u * v, 1, keepdims=True) * u
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    a = 128 * u
    b = 127.9 * (math.cos(true_phi) * u + math.sin(true_phi) * v)
    phi, _, gap = table5.float16_arithmetic(a, b)
    assert table5.float16_grid_share(phi) == 1.0
    np.testing.assert_allclose(ref_angle(a, b), true_phi, rtol=1e-9)
    if true_phi < 0.02:
        assert np.all(np.abs(phi - true_phi) > true_phi / 2)
    assert np.all(np.isin(gap, [0.0, 0.0625, 0.125]))  # one float16 ulp is 0.0625 in [64, 128)


def test_precision_study_over_dtypes(tmp_path):
    stores = {}
    for d in (torch.float16, torch.float32, torch.float64):
        name = str(d).split(".")[1]
        stores[name] = make_store(tmp_path / f"{name}.zarr", dtype=d, cross=False)[0]
    prec = precision.precision_study(stores)
    assert list(prec.dtype.values) == ["float16", "float32", "float64", "float16_arith"]
    # float32 and float64 runs agree closely; float16 arithmetic quantises phi
    np.testing.assert_allclose(prec.phi.sel(dtype="float32"), prec.phi.sel(dtype="float64"), rtol=1e-3, atol=1e-5)
    arith = prec.phi.sel(dtype="float16_arith").values
    assert not np.allclose(arith, prec.phi.sel(dtype="float64").values, rtol=1e-2)
    v = precision.precision_verdict(prec)
    assert v.status == "violated" and v.value == 1.0


def test_runner_writes_each_store_beside_the_others(ddim, ddpm, tmp_path):
    out = tmp_path / "report"
    rows = run_analysis("norm_angle", {"ddim": ddim[0], "ddpm": ddpm[0]}, out)
    folder = out / "norm_angle"
    assert json.loads((folder / "verdicts.json").read_text()) == json.loads(to_json(rows))
    for name, path in (("ddim", ddim[0]), ("ddpm", ddpm[0])):
        for f in ("results.zarr", "table5.csv", "norm_gap.png", "angle_delta.png", "delta_parts.png"):
            assert (folder / name / f).exists(), f
        assert not (folder / name / "table5.zarr").exists()  # the table is written as CSV only
        # the written results are prop31's, and the CSV is the store's Table 5 beside the paper's
        written = xr.open_zarr(folder / name / "results.zarr", consolidated=False).load()
        np.testing.assert_array_equal(written.delta.values, norm_angle.prop31(path).delta.values)
        csv = pd.read_csv(folder / name / "table5.csv").set_index("t")
        ours = table5.table5(path)
        np.testing.assert_allclose(csv.loc[ours.index, "phi"], ours.phi, rtol=1e-5)
        assert csv.loc[50, "paper_delta"] == pytest.approx(181.375)
    assert [r.key for r in rows] == [f"prop31_{k}_run_{n}" for n in ("ddim", "ddpm")
                                    for k in ("gap", "angle", "delta", "start_gap")]
    assert [p.name for p in folder.glob(".*")] == [MARKER]  # a result folder, and no temporary folder left
    assert not list(out.glob(".*"))


def test_cli_analyze(ddim, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli.main(["analyze", "norm_angle", str(ddim[0]), "--out", str(out)]) == 0
    assert (out / "norm_angle" / "ddim" / "results.zarr").exists()
    assert "Prop. 3.1" in capsys.readouterr().out
    assert cli.main(["analyze", "norm_angle", str(tmp_path / "missing.zarr")]) == 2
    assert "no trace store at" in capsys.readouterr().err


def test_needs_two_models_and_z_next(tmp_path):
    fam = fine_grained_family(SHAPE, seed=1)
    sampler = AMDMSampler([fam.model()], [fam.condition(position=0)], SamplerConfig(num_inference_steps=4, weights=()))
    with sampler.recording(ZarrRecorder(tmp_path / "one.zarr")):
        sampler.sample([0])
    with pytest.raises(ValueError, match=r"pair must be two model indices in \[0, 0\]; got \(0, 1\)"):
        norm_angle.prop31(tmp_path / "one.zarr")


def test_start_gap_verdict_against_the_store(ddim, ddpm):
    # recomputed from the store's inputs z (not the analysis' start_gap): the two models start
    # each step after an aggregation from z' shifted by eta = 0.3 each, so 0 < |z_1 - z_2| <= 0.6
    for path, shortest in ((ddim[0], 0.5), (ddpm[0], 0.0)):
        res, ds = norm_angle.prop31(path), open_run(path)
        steps = [k for k in range(1, STEPS) if bool(ds.aggregated[k - 1])]
        gaps = np.stack([np.linalg.norm(flat(ds.z.isel(step=k, model=0)) - flat(ds.z.isel(step=k, model=1)), axis=1)
                         for k in steps])
        row = next(v for v in norm_angle.prop31_verdicts(res, "x") if v.key == "prop31_start_gap_run_x")
        assert row.value == pytest.approx(gaps.max(), rel=1e-9)
        assert row.n == gaps.size
        assert row.status == "violated"  # the proof's premise (one starting point) fails
        assert (gaps > shortest).all() and (gaps <= 0.6 * (1 + 1e-6)).all()
        assert f"differ on {gaps.size} of {gaps.size} finite cells" in row.detail


def test_start_gap_holds_without_a_shift(tmp_path):
    path, _, _ = make_store(tmp_path / "eta0.zarr", eta=0.0)
    row = next(v for v in norm_angle.prop31_verdicts(norm_angle.prop31(path), "x")
               if v.key == "prop31_start_gap_run_x")
    assert row.status == "holds" and row.value == 0.0

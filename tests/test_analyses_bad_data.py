"""Nothing lost, nothing faked (issue 10): the analyses on stores with non-finite samples, on
interrupted stores and on foreign zarr groups; the precision study's dtype check; knife-edge
comparisons; result folders that are not the toolkit's.

Small real runs (the sampler and ZarrRecorder), mutated with zarr directly. Every expected
count comes from the mutation itself, every expected number from numpy on the store."""

import math
import shutil

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from scipy import stats

from amdm_geom.analyses.checks import trace_checks
from amdm_geom.analyses.common import paired_difference
from amdm_geom.analyses.gaussianity import gaussianity
from amdm_geom.analyses.prop31 import norm_angle, precision, table5
from amdm_geom.analyses.prop32 import shell
from amdm_geom.app.runner import run_analysis
from amdm_geom.app.runner.output import MARKER, result_folder
from amdm_geom.core.verdicts import Verdict, at_least, at_most, margin_text, qualify, tolerance
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import StoreError, ZarrRecorder, open_run

SHAPE, STEPS, S, SAMPLES = (4, 4, 4), 6, 3, 3
PER_MODEL = ("z", "eps", "x0", "mu", "noise", "z_next", "mu_shift", "z_shift", "eps_cross", "eps_at_z1")


def record(path, *, dtype=torch.float32, names_filter=None, stop_at=None):
    """A two-model DDPM run (sigma_t > 0, so Prop. 3.2 applies) with the cross terms, models 2..
    going on after the window; ``stop_at``: interrupt the run at that step."""
    fam = fine_grained_family(SHAPE, separation=6.0, seed=3)
    models = [fam.model(name="a", dtype=dtype), fam.model(name="b", dtype=dtype, perturb=0.1)]
    conds = [fam.condition(position=0), fam.condition(colour=1)]
    sampler = AMDMSampler(models, conds, SamplerConfig(
        num_inference_steps=STEPS, agg_steps=S, ddim_eta=1.0, record_cross_eps=True, continue_after_window=True))

    def interrupt(name, step, value):
        if step == stop_at:
            raise KeyboardInterrupt("stopped by the test")

    with sampler.recording(ZarrRecorder(path, names_filter=names_filter)):
        if stop_at is None:
            sampler.sample(list(range(SAMPLES)))
        else:
            with sampler.hooks(interrupt, "model1.z_next"), pytest.raises(KeyboardInterrupt):
                sampler.sample(list(range(SAMPLES)))
    return path


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return record(tmp_path_factory.mktemp("bad") / "clean.zarr")


def copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def poke(path, var, index, value=np.nan):
    zarr.open_group(str(path), mode="r+")[var][index] = value


def flat(a):
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


def assert_one_line(exc):
    assert "\n" not in str(exc) and str(exc)


def assert_not_holding(rows, *notes):
    assert rows
    for v in rows:
        assert v.status != "holds", v
        for note in notes:
            assert note in v.detail, (note, v.detail)


# --------------------------------------------------------------------------------------------
# (a) non-finite samples


@pytest.mark.parametrize("cells", [
    [("z_next", (2, 0, 1, 0, 0, 0), np.nan)],                        # one entry of one sample
    [("z_next", (1, 1, 0), np.nan), ("z_next", (4, 0, 2), np.nan)],  # two samples at two steps
    [("eps", (3, 1, 2, 1, 2, 3), np.inf)],                            # inf in an input of the step
])
def test_norm_angle_excludes_and_counts_non_finite_samples(clean, tmp_path, cells):
    path = copy(clean, tmp_path / "dirty.zarr")
    for var, index, value in cells:
        poke(path, var, index, value)
    bad_cells = {(index[0], index[2]) for _, index, _ in cells}
    k_bad = len({s for _, s in bad_cells})
    res, ref = norm_angle.prop31(path), norm_angle.prop31(clean)
    assert list(res.step.values) == list(range(STEPS))  # the step filter still finds every step
    for step in range(STEPS):
        for s in range(SAMPLES):
            got, want = res.sel(step=step, sample=s), ref.sel(step=step, sample=s)
            if (step, s) in bad_cells:
                assert not bool(got.finite)
                for var in ("phi", "delta", "norm_gap", "norm_gap_bound", "noise_part", "delta_bound"):
                    assert math.isnan(float(got[var])), var  # never a number, never a gap of 0
            else:
                assert bool(got.finite)
                assert float(got.phi) == float(want.phi) and float(got.norm_gap) == float(want.norm_gap)
    rows = norm_angle.prop31_verdicts(res, "dirty")
    clean_rows = {v.key.replace("_clean", ""): v for v in norm_angle.prop31_verdicts(ref, "clean")}
    assert_not_holding(rows, f"{k_bad} of {SAMPLES} samples non-finite (excluded)")
    for v in rows:
        assert v.extra["nonfinite"] == k_bad and v.extra["samples"] == SAMPLES
        before = clean_rows[v.key.replace("_dirty", "")]
        if before.status == "holds":
            assert v.status == "inconclusive" and v.detail.startswith("not decided: ")
            assert v.extra["undecided"] == "holds"
    # the gap ratio, by numpy on the store, over the finite cells only
    ds = open_run(path)
    ratios = []
    for step in range(STEPS):
        a, b = flat(ds.z_next.isel(step=step, model=0).values), flat(ds.z_next.isel(step=step, model=1).values)
        na, nb, delta = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1), np.linalg.norm(a - b, axis=1)
        cos = np.sum(a * b, 1) / (na * nb)
        alpha = na * nb / (na + nb) ** 2
        with np.errstate(invalid="ignore"):
            r = np.abs(na - nb) / (np.sqrt(1 - 2 * alpha * (1 - cos)) * delta)
        ratios += [r[s] for s in range(SAMPLES) if (step, s) not in bad_cells]
    gap = next(v for v in rows if v.key.startswith("prop31_gap"))
    assert gap.value == pytest.approx(max(ratios), rel=1e-6)
    assert f"of {STEPS * SAMPLES - len(bad_cells)} finite (step, sample) cells" in gap.detail


def test_table5_means_over_finite_samples(clean, tmp_path):
    path = copy(clean, tmp_path / "dirty.zarr")
    poke(path, "z_next", (2, 1, 0, 3, 1, 2))
    table = table5.table5(path)
    ds = open_run(path)
    a, b = flat(ds.z_next.isel(step=2, model=0).values)[1:], flat(ds.z_next.isel(step=2, model=1).values)[1:]
    row = table.loc[STEPS - 1 - 2]
    assert row.samples == SAMPLES - 1
    assert row.delta == pytest.approx(np.linalg.norm(a - b, axis=1).mean(), rel=1e-12)
    assert (table.drop(index=STEPS - 3).samples == SAMPLES).all()


def test_the_other_analyses_count_what_they_read(clean, tmp_path):
    path = copy(clean, tmp_path / "dirty.zarr")
    poke(path, "z_next", (2, 0, 1))  # step 2 is in the window (steps 0..2): shell and trace_checks read it
    poke(path, "z", (3, 0, 2, 0, 0, 0))  # model 1's z_t at step 3: trajectories and trace_checks read it

    summary = shell.summarize({"d": shell.prop32(path)})
    assert int(summary.nonfinite.sel(run="d")) == 1
    assert_not_holding(shell.prop32_verdicts(summary), f"1 of {SAMPLES} samples non-finite (excluded)")
    # membership over the later window steps (1, 2) without the excluded cell, by numpy
    ds = open_run(path)
    n = int(np.prod(SHAPE))
    radius = []
    for step in (1, 2):
        sigma = float(ds.model_sigma[1, step])
        r = np.linalg.norm(flat(ds.z_shift.isel(step=step, model=0).values)
                           - flat(ds.mu.isel(step=step, model=1).values), axis=1) / (sigma * math.sqrt(n))
        radius += [r[s] for s in range(SAMPLES) if (step, s) != (2, 1)]
    for e in summary.eps.values:
        want = np.mean(np.abs(np.array(radius) - 1) <= e)
        assert float(summary.membership.sel(run="d", eps=e)) == pytest.approx(want, rel=1e-12)

    traj = gaussianity.trajectory_gaussianity(path)
    assert math.isnan(float(traj.ratio.sel(step=3, sample=2))) and int((~traj.finite).sum()) == 1
    rows = gaussianity.trajectory_verdicts(traj, "d")  # the claim (t > 0.6) and the finding (t <= 0.6)
    assert [v.key for v in rows] == ["trajectory_gaussian_d", "trajectory_small_t_d"]
    assert_not_holding(rows, f"1 of {SAMPLES} samples non-finite (excluded)")
    z = flat(ds.z.isel(step=3, model=0).values)
    assert not np.isfinite(z[2]).all() and np.isfinite(z[:2]).all()

    checks = trace_checks.compute({"d": path})
    assert int(checks.nonfinite.sel(store="d")) == 2  # samples 1 and 2
    rows = {v.key: v for v in trace_checks.verdicts(checks)}
    assert_not_holding([rows["trace_eq4"], rows["trace_eq7"]], f"2 of {SAMPLES} samples non-finite (excluded)")
    assert np.isfinite(checks.mean_residual.values).all() and np.isfinite(checks.noise_residual.values).all()


def test_clean_stores_are_not_qualified(clean):
    rows = norm_angle.prop31_verdicts(norm_angle.prop31(clean), "c")
    rows += shell.prop32_verdicts(shell.summarize({"c": shell.prop32(clean)}))
    rows += gaussianity.trajectory_verdicts(gaussianity.trajectory_gaussianity(clean), "c")
    for v in rows:
        assert "non-finite" not in v.detail and "incomplete" not in v.detail and "not decided" not in v.detail
        assert "nonfinite" not in v.extra


# --------------------------------------------------------------------------------------------
# (b) interrupted stores


def truncate(path, k):
    """Make a store look interrupted after k steps: later steps unwritten, attrs saying so."""
    g = zarr.open_group(str(path), mode="r+")
    for var in (*PER_MODEL, "agg_z"):
        if var in g:
            g[var][k:] = np.nan
    g.attrs.update({"complete": False, "steps_completed": k})
    return path


@pytest.fixture(scope="module", params=["truncated", "interrupted"])
def stopped(request, clean, tmp_path_factory):
    """(path, k): a store with k of STEPS steps done, made to look interrupted or really
    interrupted (a hook raises during step k, after model 0 has written part of it)."""
    k = 4
    d = tmp_path_factory.mktemp("stopped")
    if request.param == "truncated":
        return truncate(copy(clean, d / "t.zarr"), k), k
    return record(d / "i.zarr", stop_at=k), k


def test_every_store_verdict_of_an_incomplete_store_says_so(stopped):
    path, k = stopped
    note = f"incomplete store: {k} of {STEPS} steps"
    ds = open_run(path)
    assert int(ds.attrs["steps_completed"]) == k and not ds.attrs["complete"]

    res = norm_angle.prop31(path)
    assert list(res.step.values) == list(range(k))  # only finished steps are read
    assert list(res.t_index.values) == [STEPS - 1 - s for s in range(k)]  # still the run's own T
    assert bool(res.finite.all())  # unwritten later steps are not "non-finite samples"
    rows = norm_angle.prop31_verdicts(res, "s")
    rows += shell.prop32_verdicts(shell.summarize({"s": shell.prop32(path)}))
    rows += gaussianity.trajectory_verdicts(gaussianity.trajectory_gaussianity(path), "s")
    checks = trace_checks.verdicts(trace_checks.compute({"s": path}))
    rows += [v for v in checks if v.key not in ("sampler_one_model", "sampler_one_model_flow")]
    assert len(rows) >= 9
    assert_not_holding(rows, note)
    for v in rows:
        assert "non-finite" not in v.detail
    # the one-model checks sample afresh and read no store: nothing to qualify
    for own in (v for v in checks if v.key in ("sampler_one_model", "sampler_one_model_flow")):
        assert note not in own.detail
    # a verdict that would hold is "not decided", one that is violated stays violated
    clean_rows = norm_angle.prop31_verdicts(norm_angle.prop31(path), "s")
    assert any(v.detail.startswith(f"not decided: {note}") for v in clean_rows)


def test_gaussianity_report_on_an_interrupted_store(stopped, tmp_path):
    path, k = stopped
    rows = run_analysis("gaussianity", {"s": path}, tmp_path / "g", quick=True)
    store_rows = ("trajectory_gaussian_s", "trajectory_small_t_s")
    traj = [v for v in rows if v.key in store_rows]
    assert traj and all(v.status != "holds" and f"incomplete store: {k} of {STEPS} steps" in v.detail for v in traj)
    # the verdicts that read no store are not qualified
    assert all("incomplete" not in v.detail for v in rows if v.key not in store_rows)


# --------------------------------------------------------------------------------------------
# (c) foreign groups, missing variables


@pytest.fixture
def foreign(tmp_path):
    g = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w", zarr_format=3)
    g.attrs["made_by"] = "someone else"
    g.create_array("x", shape=(3,), dtype="f4")
    return tmp_path / "foreign.zarr"


ENTRIES = {
    "norm_angle": lambda p: norm_angle.prop31(p),
    "table5": lambda p: table5.table5(p),
    "shell": lambda p: shell.prop32(p),
    "gaussianity": lambda p: gaussianity.trajectory_gaussianity(p),
    "trace_checks": lambda p: trace_checks.compute({"x": p}),
}


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_a_foreign_group_is_refused_in_one_line(foreign, entry):
    with pytest.raises(StoreError) as info:
        ENTRIES[entry](foreign)
    assert_one_line(info.value)
    assert str(foreign) in str(info.value) and "'spec'" in str(info.value)


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_a_dataset_without_the_schema_is_refused_in_one_line(entry):
    ds = xr.Dataset({"x": ("a", np.zeros(3))})
    with pytest.raises(StoreError) as info:
        ENTRIES[entry](ds)
    assert_one_line(info.value)
    missing = str(info.value).split("lacks variable ")[1].split()[0].strip("'")
    assert missing not in ds.variables and missing in ("z_next", "z")


@pytest.fixture(scope="module")
def only_z_next(tmp_path_factory):
    return record(tmp_path_factory.mktemp("few") / "few.zarr", names_filter="model*.z_next")


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_a_store_without_a_needed_hook_names_it(only_z_next, entry):
    present = set(open_run(only_z_next).variables)
    if entry == "table5":  # Table 5 needs only z and z_next
        with pytest.raises(StoreError, match="lacks variable 'z' "):
            ENTRIES[entry](only_z_next)
        return
    with pytest.raises(StoreError) as info:
        ENTRIES[entry](only_z_next)
    assert_one_line(info.value)
    missing = str(info.value).split("lacks variable ")[1].split()[0].strip("'")
    assert missing not in present and "record the hook" in str(info.value)


# --------------------------------------------------------------------------------------------
# (d) the precision study's stores


@pytest.fixture(scope="module")
def by_dtype(tmp_path_factory):
    d = tmp_path_factory.mktemp("prec")
    return {"f32a": record(d / "a.zarr"), "f32b": record(d / "b.zarr"),
            "f64": record(d / "c.zarr", dtype=torch.float64)}


def test_precision_refuses_duplicate_dtypes(by_dtype, tmp_path):
    with pytest.raises(ValueError) as info:
        run_analysis("precision", {"x": by_dtype["f32a"], "y": by_dtype["f32b"]}, tmp_path / "p")
    assert_one_line(info.value)
    assert "float32" in str(info.value) and "x (float32)" in str(info.value) and "y (float32)" in str(info.value)
    assert not (tmp_path / "p").exists()
    with pytest.raises(ValueError, match=r"at least 2 distinct dtypes; got f64 \(float64\)"):
        precision.precision_study({"f64": by_dtype["f64"]})
    with pytest.raises(ValueError, match="float32 is recorded more than once"):
        precision.precision_study([by_dtype["f32a"], by_dtype["f64"], by_dtype["f32b"]])


def test_precision_reads_each_dtype_from_its_store(by_dtype):
    prec = precision.precision_study({"first": by_dtype["f64"], "second": by_dtype["f32a"]})
    assert list(prec.dtype.values) == ["float64", "float32"]  # from the attrs, not the names
    assert prec.attrs["stores"] == ["first", "second"]
    same = precision.precision_study([by_dtype["f64"], by_dtype["f32a"]])
    np.testing.assert_array_equal(same.phi.values, prec.phi.values)


# --------------------------------------------------------------------------------------------
# knife edges


def test_comparisons_up_to_rounding():
    one_below = np.nextafter(1.0, 0.0)  # 0.9999999999999999
    assert at_least(1.0, one_below) and at_least(one_below, 1.0)  # a tie to rounding meets ">="
    assert not at_least(0.999, 1.0) and not at_least(math.nan, 1.0) and not at_least(1.0, math.nan)
    assert at_most(1.0 + 4 * np.spacing(1.0), 1.0) and not at_most(1.0 + 1e-12, 1.0)
    assert at_most(1.0 + 1e-12, 1.0, atol=1e-11)
    np.testing.assert_array_equal(at_least(np.array([1.0, 0.5, np.nan]), np.array([one_below, 0.6, 0.0])),
                                  [True, False, False])
    assert float(tolerance(1e6, 1e6)) == 8 * np.spacing(1e6)
    assert margin_text(1.0, one_below) == "margin 1.1e-16 (a tie to rounding)"
    assert margin_text(0.75, 0.5) == "margin 0.25"


def test_qualify_in_one_place():
    v = Verdict(claim="c", where="w", status="holds", measured="m", bound="b", detail="Why.")
    q = qualify(v, nonfinite=2, total=5, incomplete="incomplete store: 3 of 9 steps")
    assert q.status == "inconclusive" and q.extra["undecided"] == "holds"
    assert q.detail == "not decided: incomplete store: 3 of 9 steps; 2 of 5 samples non-finite (excluded). Why."
    bad = qualify(Verdict(claim="c", where="w", status="violated", measured="m", bound="b"), nonfinite=1, total=4)
    assert bad.status == "violated" and bad.detail == "1 of 4 samples non-finite (excluded)."
    assert qualify(v) is v and qualify(v, incomplete=["", ""]) is v


def forward_result(within, bound):
    t = np.array([0.5, 0.9])
    return xr.Dataset(
        {"ks_rate": ("timestep", [0.0, 0.0]), "ad_rate": ("timestep", [0.0, 0.0]), "within_eps": ("timestep", within),
         "lemma_bound": bound, "chi_exact": 1.0, "ks_reject": (("timestep", "coord"), np.zeros((2, 4), bool))},
        coords={"timestep": [500, 900], "t": ("timestep", t), "coord": np.arange(4)},
        attrs={"alpha": 0.01, "n": 16384, "n_samples": 256, "eps": 0.05})


def test_norm_concentration_at_a_knife_edge():
    # 256 of 256 draws within eps: the exact interval's lower end is 0.025^(1/256) = 1 - 1.4%, far below a bound of
    # 1 - 1.1e-16, so the data cannot decide it (Clopper-Pearson, written out with the beta law)
    lower = 0.025 ** (1 / 256)
    assert lower == pytest.approx(stats.beta.ppf(0.025, 256, 1)) and 1 - lower == pytest.approx(0.0143, abs=1e-4)
    rows = {v.key: v for v in gaussianity.forward_verdicts(forward_result([1.0, 1.0], np.nextafter(1.0, 0.0)))}
    v = rows["forward_norm_concentration"]
    assert v.status == "inconclusive" and "margin 1.1e-16 (a tie to rounding)" in v.detail
    assert v.interval == pytest.approx((lower, 1.0), rel=1e-9) and v.n == 256 and v.level == 0.95
    assert "mixture data" in v.claim and "cannot decide" in v.detail
    # a bound one ulp above a share of 1: still undecided, not violated
    v = {r.key: r for r in gaussianity.forward_verdicts(forward_result([1.0, 1.0], np.nextafter(1.0, 2.0)))}
    assert v["forward_norm_concentration"].status == "inconclusive"
    assert "margin -2.2e-16 (a tie to rounding)" in v["forward_norm_concentration"].detail
    # 230 of 256 against 0.995: the interval lies below the bound
    short = {r.key: r for r in gaussianity.forward_verdicts(forward_result([230 / 256, 1.0], 0.995))}
    row = short["forward_norm_concentration"]
    assert row.status == "violated" and row.interval[1] == pytest.approx(stats.beta.ppf(0.975, 231, 26))
    assert row.interval[1] < 0.995 and "below it at t = 0.50" in row.detail
    # 256 of 256 against 0.9: the whole interval lies above the bound
    easy = {r.key: r for r in gaussianity.forward_verdicts(forward_result([1.0, 1.0], 0.9))}
    assert easy["forward_norm_concentration"].status == "holds"


def shell_summary(membership, bound):
    eps = [0.1, 0.5]
    one = np.ones((1, 2))
    return xr.Dataset(
        {"membership": (("run", "eps"), [membership]), "membership_own": (("run", "eps"), one),
         "bound_mean": (("run", "eps"), [bound]), "defined_share": (("run", "eps"), one),
         "radius": ("run", [1.0]), "radius_own": ("run", [1.0]), "d_scaled": ("run", [0.01]), "w": ("run", [0.5]),
         "eta": ("run", [0.3]), "in_domain": ("run", [np.nan]), "in_domain_own": ("run", [np.nan]),
         "in_domain_model1": ("run", [np.nan])},
        coords={"run": ["r"], "eps": eps}, attrs={"level": 0.95, "n": 16384})


def test_shell_bound_at_a_knife_edge():
    above = np.nextafter(1.0, 2.0)
    rows = {v.key: v for v in shell.prop32_verdicts(shell_summary([1.0, 1.0], [0.5, above]))}
    v = rows["prop32_bound_runs"]
    assert v.status == "holds" and "margin -2.2e-16 (a tie to rounding)" in v.detail
    rows = {v.key: v for v in shell.prop32_verdicts(shell_summary([1.0, 0.9], [0.5, 0.95]))}
    assert rows["prop32_bound_runs"].status == "violated"


# --------------------------------------------------------------------------------------------
# (e) result folders


def test_result_folder_refuses_a_folder_that_is_not_a_result(tmp_path):
    mine = tmp_path / "thesis" / "norm_angle"
    mine.mkdir(parents=True)
    (mine / "chapter.tex").write_text("three years")
    ran = []
    with pytest.raises(ValueError) as info:
        with result_folder(mine) as tmp:
            ran.append(tmp)
    assert_one_line(info.value)
    assert str(mine) in str(info.value) and MARKER in str(info.value)
    assert not ran  # refused before any work
    assert (mine / "chapter.tex").read_text() == "three years"
    assert sorted(p.name for p in mine.iterdir()) == ["chapter.tex"]
    assert sorted(p.name for p in mine.parent.iterdir()) == ["norm_angle"]  # nothing left beside it
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="it is a file"):
        with result_folder(tmp_path / "afile"):
            pass
    assert (tmp_path / "afile").read_text() == "x"


def test_result_folder_replaces_its_own_results(tmp_path):
    target = tmp_path / "out"
    target.mkdir()  # an empty folder holds nothing to lose
    for text in ("first", "second"):
        with result_folder(target) as tmp:
            (tmp / "r.txt").write_text(text)
        assert (target / MARKER).is_file() and (target / "r.txt").read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_folder_of_result_folders_is_replaceable(tmp_path):
    # the per-store result folders an older norm_angle wrote side by side, and nothing else
    old = tmp_path / "norm_angle"
    for name in ("a", "b"):
        with result_folder(old / name) as tmp:
            (tmp / "r.txt").write_text(name)
    with result_folder(old) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in old.iterdir()) == sorted([MARKER, "new.txt"])
    mixed = tmp_path / "mixed"
    with result_folder(mixed / "a") as tmp:
        pass
    (mixed / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="refusing to replace"):
        with result_folder(mixed):
            pass
    assert (mixed / "notes.txt").read_text() == "keep"


def test_analysis_runs_leave_a_foreign_folder_alone(clean, tmp_path):
    out = tmp_path / "report"
    (out / "norm_angle" / "c").mkdir(parents=True)
    (out / "norm_angle" / "c" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="refusing to replace"):
        run_analysis("norm_angle", {"c": clean}, out)
    assert sorted(p.name for p in (out / "norm_angle" / "c").iterdir()) == ["notes.txt"]
    (out / "shell").mkdir()
    (out / "shell" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="refusing to replace"):
        run_analysis("shell", {"c": clean}, out)
    assert (out / "shell" / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in out.iterdir()) == ["norm_angle", "shell"]  # nothing half-written beside them


def test_paired_difference_by_hand():
    a, b = np.array([0.9, 0.7, 0.8, 1.0]), np.array([0.5, 0.6, 0.9, 0.4])
    d = [0.4, 0.1, -0.1, 0.6]
    mean = sum(d) / 4
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / 3) / 2
    got = paired_difference(a, b)
    assert got[0] == pytest.approx(mean, rel=1e-12) and got[1] == pytest.approx(se, rel=1e-12)
    assert math.isnan(paired_difference([1.0], [0.5])[1])

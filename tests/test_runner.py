"""The one runner behind ``analyze``, ``validate`` and the notebooks: the registry of analyses and
probes, the store-kind check, and the result folder it writes for any analysis that follows the
contract (``amdm_geom.analyses``)."""

import json
import types

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from amdm_geom.analyses.checks import closed_forms, trace_checks
from amdm_geom.analyses.prop31 import precision
from amdm_geom.app.runner import analysis_names, analyze, load_analysis, load_probe, probe_names, run_analysis
from amdm_geom.app.runner.output import MARKER
from amdm_geom.app.runner.registry import ANALYSIS_CONTRACT, analysis_summaries
from amdm_geom.core.verdicts import Verdict, to_json
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import ZarrRecorder

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BUILT_IN = ["ablations", "closed_forms", "gaussianity", "norm_angle", "precision", "shell", "toy_mixture",
            "trace_checks"]
FOLLOWING = ["closed_forms", "gaussianity", "norm_angle", "precision", "shell", "trace_checks"]


def one_line(exc) -> bool:
    return "\n" not in str(exc) and str(exc)


# --------------------------------------------------------------------------------------------
# the registry


def test_every_built_in_analysis_and_probe_is_registered():
    assert set(BUILT_IN) <= set(analysis_names())
    assert analysis_names() == sorted(analysis_names())
    assert {"gmm_pair", "gmm_cross_ecosystem", "unet_pair", "sd"} <= set(probe_names())


@pytest.mark.parametrize("name", FOLLOWING)
def test_each_analysis_follows_the_contract(name):
    module = load_analysis(name)
    assert module.NAME == name and module.STORES in ("required", "optional", "none")
    assert all(hasattr(module, a) for a in ANALYSIS_CONTRACT)
    assert module.SUMMARY and "\n" not in module.SUMMARY


def test_summaries_are_one_line_each():
    summaries = analysis_summaries()
    assert set(FOLLOWING) <= set(summaries)
    assert all(text and "\n" not in text for text in summaries.values())


def test_an_unknown_name_is_one_line_listing_the_names():
    with pytest.raises(ValueError) as info:
        load_analysis("norm_angel")
    assert one_line(info.value) and "'norm_angel'" in str(info.value)
    assert all(name in str(info.value) for name in BUILT_IN)
    with pytest.raises(ValueError, match=r"unknown probe 'gmm'; probes are .*gmm_pair"):
        load_probe("gmm")


def test_a_probe_loads_by_name():
    assert callable(load_probe("gmm_pair").run)


# --------------------------------------------------------------------------------------------
# a made-up analysis, to see what the runner does with each part of the contract


def fake(stores_kind="none", result=None, **extra):
    """A module following the contract; ``calls`` records what the runner called."""
    module = types.ModuleType("fake_analysis")
    module.NAME, module.SUMMARY, module.STORES = "fake", "a made-up analysis", stores_kind
    module.calls = []

    def compute(stores, *, quick=False, seed=0, runs=None):
        module.calls.append(("compute", dict(stores), quick, seed, runs))
        return result if result is not None else xr.Dataset({"x": ("i", np.arange(3.0))}, attrs={"seed": seed})

    def verdicts(res):
        return [Verdict(key="fake", claim="x sums to 3", where="nowhere", status="holds",
                        measured=f"{float(res['x'].sum()) if isinstance(res, xr.Dataset) else 0:g}", bound="3")]

    def plot(res):
        fig, ax = plt.subplots()
        ax.plot([0, 1])
        return {"top": fig, "sub/inner.png": plt.figure()}

    module.compute, module.verdicts, module.plot = compute, verdicts, plot
    for key, value in extra.items():
        setattr(module, key, value)
    return module


def test_the_runner_writes_every_part_atomically(tmp_path):
    tables = {"plain": pd.DataFrame({"a": [1.5, 2.0]}),
              "indexed": pd.DataFrame({"a": [1.0, 2.0]}, index=pd.Index(["p", "q"], name="store"))}
    module = fake(tables=lambda res: tables, RESULT="grid", CAPTIONS={"sub/*": "the inner figure: look at its line"})
    rows = run_analysis(module, None, tmp_path, seed=7, quick=True)
    assert module.calls == [("compute", {}, True, 7, None)]
    folder = tmp_path / "fake"
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".zarr" not in
                   p.as_posix())
    assert names == sorted([MARKER, "figures.json", "indexed.csv", "plain.csv", "sub/inner.png", "top.png",
                            "verdicts.json"])
    # each figure's caption: the first CAPTIONS pattern its name matches, "" where none does
    assert json.loads((folder / "figures.json").read_text()) == {"top.png": "",
                                                                 "sub/inner.png": "the inner figure: look at its line"}
    assert xr.open_zarr(folder / "grid.zarr", consolidated=False).attrs["seed"] == 7
    assert (folder / "plain.csv").read_text().splitlines() == ["a", "1.5", "2"]  # an unnamed RangeIndex is left out
    assert (folder / "indexed.csv").read_text().splitlines()[0] == "store,a"
    assert json.loads((folder / "verdicts.json").read_text()) == json.loads(to_json(rows))
    assert not plt.get_fignums()  # the figures were closed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake"]  # nothing half-written beside it


def test_a_tree_result_writes_one_group_per_node(tmp_path):
    tree = xr.DataTree.from_dict({"/": xr.Dataset({"r": 1.0}), "moments": xr.Dataset({"m": ("t", [0.0, 1.0])}),
                                  "runs/a": xr.Dataset({"x": ("step", [1, 2, 3])}), "empty/b": xr.Dataset()})
    module = fake(result=tree)
    run_analysis(module, {}, tmp_path)
    folder = tmp_path / "fake"
    groups = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.zarr"))
    assert groups == ["moments.zarr", "results.zarr", "runs/a.zarr"]
    assert list(xr.open_zarr(folder / "runs" / "a.zarr", consolidated=False).x.values) == [1, 2, 3]


def test_saved_chooses_what_is_written(tmp_path):
    module = fake(saved=lambda res: res.drop_vars("x").assign(y=("j", [5.0])))
    run_analysis(module, {}, tmp_path)
    written = xr.open_zarr(tmp_path / "fake" / "results.zarr", consolidated=False)
    assert list(written.data_vars) == ["y"]


def test_the_kind_of_stores_is_checked_before_any_work(tmp_path):
    needs = fake("required")
    with pytest.raises(ValueError) as info:
        run_analysis(needs, {}, tmp_path)
    assert one_line(info.value) and str(info.value) == "analysis fake needs at least one trace store; got none"
    none = fake("none")
    with pytest.raises(ValueError, match=r"analysis fake takes no stores; got 1: .*a\.zarr"):
        run_analysis(none, {"a": tmp_path / "a.zarr"}, tmp_path)
    assert needs.calls == [] and none.calls == [] and not list(tmp_path.iterdir())


def test_a_foreign_target_is_refused_before_any_work(tmp_path):
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "notes.txt").write_text("keep")
    module = fake()
    with pytest.raises(ValueError, match="refusing to replace"):
        run_analysis(module, None, tmp_path)
    assert module.calls == [] and (tmp_path / "fake" / "notes.txt").read_text() == "keep"


def test_a_module_missing_part_of_the_contract_is_named(tmp_path):
    module = fake()
    del module.verdicts
    with pytest.raises(ValueError) as info:
        run_analysis(module, None, tmp_path)
    assert one_line(info.value) and "lacks verdicts" in str(info.value) and "fake_analysis" in str(info.value)
    module = fake(STORES="some")
    with pytest.raises(ValueError, match="STORES must be one of required, optional, none; got 'some'"):
        run_analysis(module, None, tmp_path)


def test_analyze_writes_nothing(tmp_path):
    module = fake()
    outcome = analyze(module, None, seed=3)
    assert outcome.result.attrs["seed"] == 3 and [v.key for v in outcome.verdicts] == ["fake"]
    assert sorted(outcome.figures) == ["sub/inner.png", "top"] and outcome.tables == {}
    for fig in outcome.figures.values():
        plt.close(fig)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# the built-in analyses through the runner


def test_closed_forms_through_the_runner(tmp_path):
    rows = run_analysis("closed_forms", None, tmp_path, seed=1)
    direct = closed_forms.verdicts(closed_forms.compute(seed=1))
    assert [(r.key, r.status, r.value) for r in rows] == [(r.key, r.status, r.value) for r in direct]
    folder = tmp_path / "closed_forms"
    assert (folder / "results.zarr").is_dir() and (folder / "cos_bound_excess.png").is_file()
    with pytest.raises(ValueError, match="analysis closed_forms takes no stores"):
        closed_forms.compute({"a": tmp_path})


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """One small two-model run per dtype (float32, float64)."""
    d = tmp_path_factory.mktemp("runner")
    fam = fine_grained_family((4, 4, 4), separation=6.0, seed=3)
    out = {}
    for dtype in (torch.float32, torch.float64):
        name = str(dtype).split(".")[1]
        models = [fam.model(name="a", dtype=dtype), fam.model(name="b", dtype=dtype, perturb=0.1)]
        sampler = AMDMSampler(models, [fam.condition(position=0), fam.condition(colour=1)],
                              SamplerConfig(num_inference_steps=6, agg_steps=3, ddim_eta=1.0,
                                            continue_after_window=True))
        with sampler.recording(ZarrRecorder(d / f"{name}.zarr")):
            sampler.sample([0, 1])
        out[name] = d / f"{name}.zarr"
    return out


def test_trace_checks_and_precision_through_the_runner(stores, tmp_path):
    rows = run_analysis("trace_checks", {"float32": stores["float32"]}, tmp_path)
    folder = tmp_path / "trace_checks"
    residuals = pd.read_csv(folder / "residuals.csv").set_index("store")
    direct = trace_checks.compute({"float32": stores["float32"]})
    assert residuals.loc["float32", "shifts"] == int(direct.shifts.sel(store="float32"))
    assert (folder / "residuals.zarr").is_dir() and [r.key for r in rows] == [
        "sampler_one_model", "sampler_one_model_flow", "trace_eq4", "trace_eq7"]
    rows = run_analysis("precision", stores, tmp_path)
    folder = tmp_path / "precision"
    for f in ("precision.zarr", "precision_table5.csv", "precision_phi.png", "verdicts.json"):
        assert (folder / f).exists(), f
    assert [r.key for r in rows] == ["table5_resolution"]
    written = xr.open_zarr(folder / "precision.zarr", consolidated=False).load()
    np.testing.assert_array_equal(written.phi.values, precision.precision_study(stores).phi.values)

"""The one runner behind ``analyze``, ``validate`` and the notebooks: the registry of analyses and
probes, the store-kind check, and the result folder it writes for any analysis that follows the
contract (``amdm_geom.analyses.base.Analysis``)."""

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from amdm_geom.analyses.base import STORE_KINDS, STORE_NEEDS, Analysis
from amdm_geom.analyses.checks import closed_forms, trace_checks
from amdm_geom.analyses.prop31 import precision
from amdm_geom.app.runner import (
    analysis_names,
    analyze,
    load_analyses,
    load_analysis,
    load_probe,
    probe_names,
    run_analysis,
)
from amdm_geom.app.runner.families import FAMILY_IDS
from amdm_geom.app.runner.output import MARKER
from amdm_geom.app.runner.registry import analysis_summaries, check_analysis
from amdm_geom.core.verdicts import Verdict, to_json
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import ZarrRecorder

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BUILT_IN = ["ablations", "closed_forms", "digits_benchmark", "flow_benchmark", "flow_geometry", "gaussianity",
            "norm_angle", "precision", "shell", "timing", "toy_mixture", "trace_checks"]


def one_line(exc) -> bool:
    return "\n" not in str(exc) and str(exc)


# --------------------------------------------------------------------------------------------
# the registry


def test_every_built_in_analysis_and_probe_is_registered():
    assert set(BUILT_IN) <= set(analysis_names())
    assert analysis_names() == sorted(analysis_names())
    assert {"gmm_pair", "gmm_cross_ecosystem", "unet_pair", "sd"} <= set(probe_names())


@pytest.mark.parametrize("name", BUILT_IN)
def test_each_analysis_is_a_checked_class(name):
    analysis = load_analysis(name)
    assert isinstance(analysis, Analysis) and analysis.name == name and analysis.stores in STORE_NEEDS
    assert analysis.family in FAMILY_IDS and set(analysis.other_families) <= set(FAMILY_IDS)
    assert set(analysis.reads) <= set(STORE_KINDS) and (analysis.stores != "none" or not analysis.reads)
    for method in ("compute", "verdicts", "plot"):  # (what every analysis defines itself)
        assert getattr(type(analysis), method) is not getattr(Analysis, method), method
    assert (analysis.run_module is None) == (type(analysis).planned is Analysis.planned)


def test_summaries_are_one_line_each():
    summaries = analysis_summaries()
    assert sorted(summaries) == analysis_names() and set(BUILT_IN) <= set(summaries)
    assert all(text and "\n" not in text for text in summaries.values())


def readme_analyses(text: str) -> list[tuple[str, str, str]]:
    """``(name, family, summary)`` of each line of the README's list of analyses (between its
    ``<!-- analyses`` and ``<!-- /analyses -->`` markers)."""
    import re

    block = text[text.index("<!-- analyses"):text.index("<!-- /analyses -->")].splitlines()[1:]
    rows = [re.fullmatch(r"- `(\w+)` \(([\w-]+)\): (.+)", line) for line in block]
    assert all(rows), [line for line, m in zip(block, rows) if not m]
    return [m.groups() for m in rows]


def test_the_readme_lists_exactly_the_registered_analyses():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    listed = readme_analyses(readme)
    assert listed == [(a.name, a.family, a.summary) for a in load_analyses()], (
        "the README's list of analyses is out of date: run .venv/bin/python tests/scripts/readme_analyses.py")
    # the check sees a drifted summary and a missing line
    name, family, summary = listed[-1]
    line = f"- `{name}` ({family}): {summary}\n"
    assert readme_analyses(readme.replace(line, line.replace(summary, "something else"))) != listed
    assert readme_analyses(readme.replace(line, "")) == listed[:-1]


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


def fake(stores_kind="none", returns=None, **extra) -> Analysis:
    """An analysis following the contract (a fresh class each call); ``calls`` records what the
    runner called; ``extra`` sets further class attributes or hooks."""

    class Fake(Analysis):
        name, summary, family, stores = "fake", "a made-up analysis", "checks", stores_kind
        calls = []

        def compute(self, stores, *, quick=False, seed=0, runs=None):
            self.calls.append(("compute", dict(stores), quick, seed, runs))
            return returns if returns is not None else xr.Dataset({"x": ("i", np.arange(3.0))}, attrs={"seed": seed})

        def verdicts(self, res):
            return [Verdict(key="fake", claim="x sums to 3", where="nowhere", status="holds",
                            measured=f"{float(res['x'].sum()) if isinstance(res, xr.Dataset) else 0:g}", bound="3")]

        def plot(self, res):
            fig, ax = plt.subplots()
            ax.plot([0, 1])
            return {"top": fig, "sub/inner.png": plt.figure()}

    for key, value in extra.items():
        setattr(Fake, key, staticmethod(value) if callable(value) else value)
    return Fake()


def test_the_runner_writes_every_part_atomically(tmp_path):
    plt.close("all")  # (figures other tests left open are not the runner's)
    tables = {"plain": pd.DataFrame({"a": [1.5, 2.0]}),
              "indexed": pd.DataFrame({"a": [1.0, 2.0]}, index=pd.Index(["p", "q"], name="store"))}
    module = fake(tables=lambda res: tables, result="grid", captions={"sub/*": "the inner figure: look at its line"})
    rows = run_analysis(module, None, tmp_path, seed=7, quick=True)
    assert module.calls == [("compute", {}, True, 7, None)]
    assert [v.family for v in rows] == ["checks"]  # (the runner fills it in from the class)
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
    module = fake(returns=tree)
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


def test_an_analysis_missing_part_of_the_contract_is_named(tmp_path):
    class Half(Analysis):
        name, summary, family = "half", "s", "checks"

        def compute(self, stores, **kw):
            return xr.Dataset()

    with pytest.raises(ValueError) as info:
        run_analysis(Half, None, tmp_path)
    assert one_line(info.value) and "Half lacks verdicts, plot of the analysis contract" in str(info.value)
    with pytest.raises(ValueError, match="stores must be one of required, optional, none; got 'some'"):
        run_analysis(fake(stores="some"), None, tmp_path)
    with pytest.raises(ValueError, match=r"reads must be a tuple of the store kinds checked, .*; got \('shell',\)"):
        check_analysis(fake("required", reads=("shell",)))
    with pytest.raises(ValueError, match="reads flow but takes no stores"):
        check_analysis(fake("none", reads=("flow",)))
    with pytest.raises(ValueError, match="priority must be an int in \\[0, 10\\)"):
        check_analysis(fake(priority=10))
    with pytest.raises(ValueError, match="sets both run_module .* and planned"):
        check_analysis(fake(run_module=trace_checks))
    with pytest.raises(ValueError, match="is not a subclass of amdm_geom.analyses.base.Analysis"):
        run_analysis(closed_forms, None, tmp_path)  # (a module: the contract before classes)
    assert not list(tmp_path.iterdir())


def test_a_verdict_may_name_only_a_family_its_analysis_declares(tmp_path):
    def verdicts(res):
        return [Verdict(key="own", claim="c", where="w", status="holds", measured="m", bound="b", family="app-g"),
                Verdict(key="default", claim="c", where="w", status="holds", measured="m", bound="b")]

    rows = analyze(fake(verdicts=verdicts, other_families=("app-g",)), figures=False).verdicts
    assert [(v.key, v.family) for v in rows] == [("own", "app-g"), ("default", "checks")]
    with pytest.raises(ValueError) as info:
        analyze(fake(verdicts=verdicts), figures=False)
    assert one_line(info.value) and str(info.value) == (
        "analysis fake: verdict 'own' names family 'app-g', which the analysis does not declare (checks)")


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
    # a finding (issue 24: the paper never claims Table 5 resolves phi), still in its analysis' family
    assert rows[0].kind == "finding" and rows[0].family == "prop31"
    written = xr.open_zarr(folder / "precision.zarr", consolidated=False).load()
    np.testing.assert_array_equal(written.phi.values, precision.precision_study(stores).phi.values)

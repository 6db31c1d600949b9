"""``amdm_geom.app.engine``: the dask runner behind sweep, validate and the ablations. Tasks wait for
the tasks they name, a failure is reported and stops only what waits for it, and a run made on
a worker equals the same run made here; validate's plan puts every analysis after the stores it
reads."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from amdm_geom.app.engine import Engine, EngineError, Task, analysis_tasks, run_spec


def write_after(path: str, text: str, pause: float = 0.0) -> str:
    """A task: wait ``pause`` seconds, then write ``text`` into ``path`` (refused if it exists)."""
    time.sleep(pause)
    with open(path, "x") as f:
        f.write(text)
    return text


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def fail(message: str) -> None:
    raise ValueError(message)


@pytest.fixture(scope="module")
def engine():
    with Engine(workers=2) as e:
        yield e


def test_tasks_wait_for_theirs_and_a_failure_stops_only_what_waits(engine, tmp_path):
    a = str(tmp_path / "a")
    seen = []
    tasks = [Task("slow", write_after, (a, "from a", 1.0)),
             Task("reader", read, (a,), after=("slow",)),  # (would fail were it run before "slow" ends)
             Task("broken", fail, ("no such model",)),
             Task("after broken", read, (a,), after=("broken",)),
             Task("free", write_after, (str(tmp_path / "b"), "b"))]
    done = engine.run(tasks, on_done=seen.append)
    assert list(done) == [t.key for t in tasks] and sorted(o.key for o in seen) == sorted(done)
    assert done["reader"].value == "from a" and done["reader"].ok and done["free"].value == "b"
    assert done["broken"].error == "ValueError: no such model"
    assert done["after broken"].error == "not run: broken failed" and done["after broken"].value is None
    assert all(o.seconds >= 0 for o in done.values() if o.ok) and done["slow"].seconds >= 1.0


def test_bad_task_lists_are_refused_before_any_runs(engine, tmp_path):
    with pytest.raises(EngineError, match=r"task 'b' waits for 'c', which is not before it"):
        engine.run([Task("b", read, ("x",), after=("c",)), Task("c", read, ("x",))])
    with pytest.raises(EngineError, match=r"task keys must be distinct; got \['a'\]"):
        engine.run([Task("a", write_after, (str(tmp_path / "a"), "1")), Task("a", read, ("x",))])
    assert not (tmp_path / "a").exists()
    with pytest.raises(EngineError, match="workers must be an int >= 1; got 0"):
        Engine(workers=0)


def test_an_ablation_run_on_a_worker_equals_the_run_made_here(engine, tmp_path):
    """The ablations' runs go through ``analysis_tasks``: the store a worker writes equals, array by
    array and bit for bit, the one ``ablation_runs.run`` writes in this process."""
    from amdm_geom.analyses.ablations import ablations
    from amdm_geom.analyses.ablations import runs as ablation_runs

    runs = ablations.planned(quick=True, seed=3, runs=tmp_path / "engine")
    tasks = analysis_tasks("ablations", None, tmp_path / "report", quick=True, seed=3, runs=tmp_path / "engine")
    assert [t.key for t in tasks] == [*(f"ablations run {n}" for n in runs), "analysis ablations"]
    assert set(tasks[-1].after) == {t.key for t in tasks[:-1]}
    spec = runs["cross_ve"]
    (task,) = [t for t in tasks if t.key == "ablations run cross_ve"]
    done = engine.run([task])
    assert done[task.key].value == str(spec.run.out) == str(tmp_path / "engine" / "ablations" / "cross_ve.zarr")
    here = ablation_runs.run(spec.replace(run=spec.run.replace(out=tmp_path / "here.zarr")))
    a, b = zarr.open_group(str(spec.run.out), mode="r"), zarr.open_group(str(here), mode="r")
    names = sorted(k for k, _ in a.arrays())
    assert names == sorted(k for k, _ in b.arrays()) and "z_next" in names
    for name in names:
        np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name, strict=True)


def test_run_spec_runs_a_registered_probe_by_name(tmp_path):
    from amdm_geom.models.specs import GMMFamilySpec
    from amdm_geom.probes import RunSettings, gmm_pair
    from amdm_geom.sampling.config import SamplerConfig

    spec = gmm_pair.Spec(family=GMMFamilySpec(latent_shape=(2, 4, 4)), sampler=SamplerConfig(num_inference_steps=4,
                         agg_steps=2), run=RunSettings(batch=1, out=tmp_path / "p.zarr", progress=False))
    assert run_spec("probe", "gmm_pair", spec.model_dump_json()) == str(tmp_path / "p.zarr")
    assert (tmp_path / "p.zarr" / "zarr.json").exists()


@pytest.mark.parametrize("kind,name,expected", [
    ("probe", "amdm_geom.probes.gmm_pair", "unknown probe 'amdm_geom.probes.gmm_pair'; probes are "),
    ("probe", "os", "unknown probe 'os'; probes are "),
    ("analysis", "closed_forms", "analysis 'closed_forms' runs no stores of its own"),
    ("module", "gmm_pair", "a run is made by a probe or an analysis; got 'module'"),
])
def test_run_spec_loads_nothing_but_a_registered_maker(kind, name, expected):
    """A dotted module name is not a way in: only the registry's probes and analyses run specs,
    and anything else is refused in one line before any import."""
    with pytest.raises(ValueError) as info:
        run_spec(kind, name, "{}")
    text = str(info.value)
    assert text.startswith(expected) and "\n" not in text, text


def test_validate_plan_puts_every_analysis_after_its_stores(tmp_path):
    from amdm_geom.app.runner.registry import load_analyses
    from amdm_geom.app.validate import PROBE_PRIORITY, PlannedProbe, ValidateCommand, plan, tasks

    cmd = ValidateCommand(quick=True, runs=tmp_path / "runs", report=tmp_path / "report")
    analyses = load_analyses()
    probes = plan(True, 0, cmd.runs)
    work = tasks(cmd, probes)
    by_key = {t.key: t for t in work}
    assert len(by_key) == len(work)
    assert {f"probe {p.name}" for p in probes} <= set(by_key)
    assert all(by_key[f"probe {p.name}"].priority == PROBE_PRIORITY > max(a.priority for a in analyses)
               for p in probes)
    assert by_key["analysis digits_benchmark"].priority == 9 and by_key["analysis toy_mixture"].priority == 8
    for a in analyses:
        t = by_key[f"analysis {a.name}"]
        names = [p.name for p in probes if set(p.kinds) & set(a.reads)]  # (the stores of the kinds it reads)
        assert {f"probe {n}" for n in names} <= set(t.after), a.name
        assert t.priority == a.priority > 0 and t.kwargs["seed"] == cmd.seed
        stores = t.args[1] or {}
        assert {n: Path(p) for n, p in stores.items()} == {n: cmd.runs / f"{n}.zarr" for n in names} \
            or a.name == "ablations"
    # every probe of the plan is read by some analysis; a store kind analyses do not know is refused in one line
    assert all(any(set(p.kinds) & set(a.reads) for a in analyses) for p in probes)
    with pytest.raises(ValueError, match=r"^store x: kinds must be among checked, trajectory, .*; got shells$"):
        PlannedProbe("x", "gmm_pair", probes[0].spec, ("flow", "shells"))
    from amdm_geom.analyses.ablations.runs import settings

    runs = [k for k in by_key if k.startswith("ablations run ")]
    assert runs == [f"ablations run {s.name}" for s in settings(True)] and len(runs) == 29
    assert set(by_key["analysis ablations"].after) == set(runs)
    positions = {t.key: i for i, t in enumerate(work)}
    assert all(positions[a] < positions[t.key] for t in work for a in t.after)
    assert os.path.isabs(str(by_key["analysis ablations"].args[1]["model1"])) is cmd.runs.is_absolute()


@pytest.mark.slow  # (30 s: the 29 quick runs again; validate's ablations go through the same analysis_tasks)
def test_analyze_runs_the_ablations_own_runs_on_the_engine(quick_validate, tmp_path, capsys):
    """``amdm-geom analyze ablations`` with no stores runs its planned runs as tasks (two workers)
    and measures them: its verdicts equal those validate computed from the same runs."""
    from amdm_geom.app.cli import main

    out, runs = tmp_path / "report", tmp_path / "runs"
    assert main(["analyze", "ablations", "--quick", "--out", str(out), "--runs", str(runs), "--workers", "2"]) == 0
    said = capsys.readouterr().out
    assert "dask scheduler" in said and f"results and figures in {out / 'ablations'}" in said
    got = json.loads((out / "ablations" / "verdicts.json").read_text())
    want = [r for r in quick_validate.ordered if r["key"].startswith("ablation_")]
    assert [(r["key"], r["status"], r["value"]) for r in got] == [(r["key"], r["status"], r["value"]) for r in want]
    stores = sorted(p.name for p in (runs / "ablations").glob("*.zarr"))
    assert stores == sorted(p.name for p in (quick_validate.runs / "ablations").glob("*.zarr")) and len(stores) == 29

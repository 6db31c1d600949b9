"""``amdm-geom validate``: the main job. Its plan is a list of specs: the probes it runs (each a
probe's ``Spec``) and the analyses it runs on their stores, then the report.

Nineteen probes (fifteen with ``--quick``) into ``--runs``, four of them on the trained digits
models, each store tagged with the kinds of store it is (``amdm_geom.analyses.base.STORE_KINDS``);
then every registered analysis (``amdm_geom.app.runner.registry``), each on the stores of the kinds
it reads (``Analysis.reads``; ``readers``), the closed-form checks, the 2D benchmark, the digits
benchmark and the ablations on none or on their own runs. A probe whose store no analysis reads is
left out of the plan. All of it is one graph of tasks on ``amdm_geom.app.engine`` (``tasks``): a
local dask cluster of one-thread workers, one per core (``--workers``), or an existing cluster
(``--scheduler``); an analysis starts as soon as the stores it reads are written, the longest first
(``Analysis.priority``), and the ablations' 41 runs are tasks of their own. Then the verdict table,
``verdicts.json`` and ``index.html`` in ``--report``, by the families the analyses declare; last,
``--keep-runs`` prunes the stores in ``--runs`` (``prune_runs``).

The command line reads this module at every start (``ValidateCommand`` is its options), so the
probes, the engine and the trace layer (torch: seconds) are imported inside the functions that run.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from amdm_geom.analyses.base import STORE_KINDS
from amdm_geom.core.spec import (
    MAX_SEED,
    Spec,
    SpecError,
    choice,
    creatable_dir,
    flag,
    integer,
    optional,
    seed,
    writable_file,
)
from amdm_geom.models.specs import TRANSFORMER_KINDS, GMMFamilySpec, TinyTransformerPairSpec, TinyUNetPairSpec
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["KEEP_RUNS", "PROBE_PRIORITY", "PlannedProbe", "ValidateCommand", "plan", "readers",
           "prune_runs", "run", "tasks"]

#: What ``--keep-runs`` may keep of the stores in ``--runs`` once the report is written (``prune_runs``).
KEEP_RUNS = ("none", "report", "all")

Seed = Annotated[int, seed()]


class ValidateCommand(Spec):
    """Run every check: the closed forms, the default probes, every analysis on their stores, the
    2D benchmark and the ablations; print the verdict table and write the report. A violated bound
    is a finding, not a failure: it exits non-zero only on an internal error."""

    quick: Annotated[bool, flag] = False
    """smaller probes (under 2 minutes; the tests use it)."""
    seed: Seed = 0
    """random seed of the probes and of the analyses' own draws, in [0, 2**63)."""
    runs: Annotated[Path, creatable_dir] = Path("data/runs/validate")
    """where the probe stores go (overwritten)."""
    report: Annotated[Path, creatable_dir] = Path("data/report")
    """where results and figures go."""
    json_path: Annotated[Path | None, optional(writable_file)] = Field(None, alias="json")
    """also write the verdicts as JSON to this file (its folder must exist)."""
    keep_runs: Annotated[Literal["none", "report", "all"], choice(*KEEP_RUNS)] = "report"
    """stores kept in --runs after the report: all; report (the probe stores, which the report's analyses read:
    `amdm-geom analyze` can redo any of them; the ablations' own stores go, their results are in the report); none."""
    workers: Annotated[int | None, optional(integer(1))] = None
    """worker processes of the local dask cluster, one torch thread each (default: the machine's cores)."""
    scheduler: str | None = None
    """address of a running dask scheduler (tcp://host:port) to run on instead; its workers must see --runs
    and --report (made absolute)."""

    @model_validator(mode="after")
    def _room_for_every_sample(self):
        batch = max(p.spec.run.batch for p in _probes(self.quick, 0, Path(".")))
        if self.seed + batch > MAX_SEED:  # every probe's samples use seed, seed + 1, ...
            raise SpecError(f"must leave room for {batch} samples below 2**63 (seeds seed..seed+{batch - 1})",
                            self.seed, loc=("seed",))
        return self


@dataclass(frozen=True)
class PlannedProbe:
    """One probe of the plan: its store's name, the probe, its spec, and the kinds of store it
    writes (``amdm_geom.analyses.base.STORE_KINDS``: which analyses read it)."""

    name: str
    probe: str
    spec: Spec
    kinds: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = [k for k in self.kinds if k not in STORE_KINDS]
        if unknown:
            raise ValueError(f"store {self.name}: kinds must be among {', '.join(STORE_KINDS)}; "
                             f"got {', '.join(unknown)}")


#: dask priority of the probes (short; every analysis of a store waits for them): above every analysis'
#: (``Analysis.priority``, below 10); an analysis' own runs (the ablations') fill the gaps (priority 0).
PROBE_PRIORITY = 10


def _gmm(quick: bool, batch: int, **sampler) -> tuple[GMMFamilySpec, SamplerConfig, int]:
    family = GMMFamilySpec(latent_shape=(4, 32, 32)) if quick else GMMFamilySpec()
    steps = {"num_inference_steps": 20, "agg_steps": 8} if quick else {}
    return family, SamplerConfig(**steps, **sampler), 2 if quick else batch


def plan(quick: bool, seed: int, runs: Path, analyses=None) -> list[PlannedProbe]:
    """The probes ``validate`` runs, small enough for minutes on 2 cores (``quick``: under one):
    those whose store some analysis of ``analyses`` (default: every registered one) reads."""
    from amdm_geom.app.runner.registry import load_analyses

    read = {kind for a in (load_analyses() if analyses is None else analyses) for kind in a.reads}
    return [p for p in _probes(quick, seed, runs) if read & set(p.kinds)]


def _probes(quick: bool, seed: int, runs: Path) -> list[PlannedProbe]:
    """Every probe ``validate`` may run, each store tagged with the kinds of store it is."""
    from amdm_geom.models.digits.specs import DigitsSpec
    from amdm_geom.probes import (
        RunSettings,
        digits_pair,
        flow_pair,
        flow_transformer_pair,
        gmm_cross_ecosystem,
        gmm_pair,
        unet_pair,
    )

    def settings(name: str, batch: int, dtype: str = "float32") -> RunSettings:
        return RunSettings(batch=batch, seed=seed, dtype=dtype, out=Path(runs) / f"{name}.zarr", overwrite=True,
                           progress=False)

    def pair(name: str, batch: int, kinds: tuple[str, ...], *, perturb: float = 0.0, dtype: str = "float32",
             **sampler) -> PlannedProbe:
        family, config, batch = _gmm(quick, batch, **sampler)
        spec = gmm_pair.Spec(family=family, perturb=perturb, sampler=config, run=settings(name, batch, dtype))
        return PlannedProbe(name, gmm_pair.NAME, spec, kinds)

    family, config, batch = _gmm(quick, 4)
    cross = gmm_cross_ecosystem.Spec(family=family, sampler=config, run=settings("gmm_cross_ecosystem", batch))
    unet = TinyUNetPairSpec(sample_size=16, channels=(8, 16)) if quick else TinyUNetPairSpec(sample_size=32)
    unet_config = SamplerConfig(num_inference_steps=20, agg_steps=8, record_cross_eps=True) if quick \
        else SamplerConfig(record_cross_eps=True)
    probes = [
        pair("gmm_pair", 4, ("checked", "trajectory", "moments"), perturb=0.05, record_cross_eps=True,
             continue_after_window=True),
        PlannedProbe("gmm_cross_ecosystem", gmm_cross_ecosystem.NAME, cross, ("checked",)),
        PlannedProbe("unet_pair", unet_pair.NAME, unet_pair.Spec(family=unet, sampler=unet_config,
                                                                 run=settings("unet_pair", 1 if quick else 2)),
                     ("checked",)),
        pair("gmm_ddpm", 4, ("checked", "trajectory", "stochastic", "moments"), ddim_eta=1.0, record_cross_eps=True,
             perturb=0.05),
        pair("gmm_ddpm_eta40", 4, ("stochastic",), ddim_eta=1.0, eta=40.0),
        *([] if quick else [pair("gmm_ddpm_w0.8", 4, ("stochastic",), ddim_eta=1.0, weights=(0.8,))]),
        *(pair(f"gmm_{dtype}", 2, ("dtypes",), dtype=dtype, continue_after_window=True)
          for dtype in (("float16", "float64") if quick else ("float16", "float32", "float64"))),
    ]

    def digits(name: str, models: tuple[str, ...], kinds: tuple[str, ...], **sampler) -> PlannedProbe:
        # the trained digits ecosystem: Prop. 3.1 and 3.2 on networks that learned something
        steps = {"num_inference_steps": 20, "agg_steps": 8} if quick else {}
        spec = digits_pair.Spec(digits=DigitsSpec(models=models), sampler=SamplerConfig(**steps, **sampler),
                                run=settings(name, 4 if quick else 16))
        return PlannedProbe(name, digits_pair.NAME, spec, kinds)

    pc = ("position", "colour")
    probes += [digits("digits_pair", pc, ("checked", "trajectory"), record_cross_eps=True, continue_after_window=True),
               *([] if quick else [digits("digits_scratch", ("position_scratch", "colour"), ("trajectory",),
                                          record_cross_eps=True),
                                   digits("digits_linear", ("position_linear", "colour"), ("trajectory",),
                                          record_cross_eps=True)]),
               digits("digits_ddpm", pc, ("checked", "trajectory", "stochastic"), ddim_eta=1.0, record_cross_eps=True)]

    def flow(name: str, partner: str = "flow", kinds: tuple[str, ...] = ("checked", "flow"), **sampler) -> PlannedProbe:
        # App. G: the same family under the rectified-flow interpolant (exact velocities)
        family, config, batch = _gmm(quick, 4, **sampler)
        spec = flow_pair.Spec(family=family, perturb=0.05, partner=partner, sampler=config,
                              run=settings(name, batch))
        return PlannedProbe(name, flow_pair.NAME, spec, kinds)

    probes += [flow("flow_pair", record_cross_eps=True, continue_after_window=True),
               flow("flow_stochastic", record_cross_eps=True, flow_stochastic=True),
               flow("flow_vp", "vp", allow_schedule_mismatch=True)]
    # App. G's DiT family: tiny untrained SD3-, Flux- and DiT-style transformers and their perturbed copies
    dit = SamplerConfig(num_inference_steps=20, agg_steps=8, record_cross_eps=True, continue_after_window=True)
    probes += [PlannedProbe(f"flow_{kind}", flow_transformer_pair.NAME,
                            flow_transformer_pair.Spec(family=TinyTransformerPairSpec(kind=kind), sampler=dit,
                                                       run=settings(f"flow_{kind}", 2)),
                            ("checked", "flow") if kind == "sd3" else ("flow",))  # (one of them is step-checked)
               for kind in TRANSFORMER_KINDS]
    return probes


def prune_runs(runs: Path, keep: str, probes) -> list[Path]:
    """Remove what ``keep`` (one of ``KEEP_RUNS``) does not keep of the stores validate wrote into
    ``runs``; returns the removed paths.

    ``all`` removes nothing. ``report`` keeps the stores of the plan's probes ``probes`` (names;
    ``runs/<name>.zarr``), every analysis of the report reads them, so ``amdm-geom analyze`` can
    redo any table or figure, and removes the trace stores the ablations ran for themselves in
    ``runs/ablations`` (their results, tables and figures are all in the report; they are most of the
    disk a full run leaves). ``none`` removes both. Only trace stores holding nothing but what their
    writer wrote are removed (a foreign folder or file, or a store with one inside, is left alone),
    with the lock files beside them; ``runs/ablations`` goes once empty."""
    from amdm_geom.store import foreign_files, is_trace_store

    if keep not in KEEP_RUNS:
        raise ValueError(f"keep must be one of {', '.join(KEEP_RUNS)}; got {keep!r}")
    runs = Path(runs)
    doomed = []
    if keep != "all":
        ablations = runs / "ablations"
        doomed += sorted(ablations.glob("*.zarr")) if ablations.is_dir() else []
    if keep == "none":
        doomed += [runs / f"{name}.zarr" for name in probes]
    removed = []
    for path in doomed:
        if not path.is_symlink() and path.is_dir() and is_trace_store(path) and not foreign_files(path):
            shutil.rmtree(path)
            (path.parent / f".{path.name}.lock").unlink(missing_ok=True)
            removed.append(path)
    ablations = runs / "ablations"
    if keep != "all" and ablations.is_dir() and not any(ablations.iterdir()):
        ablations.rmdir()
    return removed


def readers(probes: list[PlannedProbe], analyses) -> dict[str, dict[str, Path]]:
    """``{analysis: {store name: path}}``: each analysis of ``analyses`` is given every store of the
    plan ``probes`` of a kind it reads (``Analysis.reads``), in the plan's order; none where it reads
    none (it takes no stores, or runs its own)."""
    return {a.name: {p.name: p.spec.run.out for p in probes if set(p.kinds) & set(a.reads)} for a in analyses}


def tasks(cmd: ValidateCommand, probes: list[PlannedProbe], analyses=None) -> list:
    """The plan as tasks for ``amdm_geom.app.engine``: every probe, then every analysis of
    ``analyses`` (default: every registered one) after the probes whose stores it reads
    (``readers``), the ablations after their own runs, each at its own priority (the longest first,
    so that no worker idles at the end)."""
    from amdm_geom.app.engine import Task, analysis_tasks, run_spec
    from amdm_geom.app.runner.registry import load_analyses

    analyses = load_analyses() if analyses is None else analyses
    work = [Task(f"probe {p.name}", run_spec, ("probe", p.probe, p.spec.model_dump_json()),
                 priority=PROBE_PRIORITY) for p in probes]
    for analysis, chosen in zip(analyses, readers(probes, analyses).values()):
        work += analysis_tasks(analysis, chosen, cmd.report, quick=cmd.quick, seed=cmd.seed, runs=cmd.runs,
                               after=tuple(f"probe {n}" for n in chosen))
    return work


def run(cmd: ValidateCommand) -> int:
    """Run the plan on ``amdm_geom.app.engine``; print the table; write ``verdicts.json`` and
    ``index.html`` (none of them if a task failed: it exits 1 naming each)."""
    from amdm_geom.app.engine import Engine
    from amdm_geom.app.runner.registry import load_analyses
    from amdm_geom.core.verdicts import format_table, to_json
    from amdm_geom.store import check_output_path

    mode = "quick" if cmd.quick else "full"
    if cmd.scheduler is not None:  # (the workers of another cluster see absolute paths only)
        cmd = cmd.model_copy(update={"runs": cmd.runs.absolute(), "report": cmd.report.absolute()})
    analyses = load_analyses()  # (in the registry's order: the order of the verdict rows)
    probes = plan(cmd.quick, cmd.seed, cmd.runs, analyses)
    for p in probes:  # (replaced, but only if they are trace stores)
        check_output_path(p.spec.run.out, overwrite=True)
    work = tasks(cmd, probes, analyses)
    start = time.perf_counter()
    from amdm_geom.app.runner.output import remove_owned, write_owned

    # (a failed run leaves no report that looks complete; a user's file of that name is refused)
    remove_owned(cmd.report, ("index.html", "verdicts.json"))
    print(f"amdm-geom validate ({mode}): {len(probes)} probes, {len(analyses)} analyses: {len(work)} tasks",
          flush=True)

    def said(o) -> None:
        what, _, name = o.key.partition(" ")
        if not o.ok:
            print(f"  FAILED {o.key}: {o.error}", flush=True)
        elif what in ("probe", "analysis"):
            where = o.value if what == "probe" else cmd.report / name
            print(f"  {o.key}: {where} ({o.seconds:.1f} s)", flush=True)

    with Engine(cmd.scheduler, cmd.workers) as engine:  # (the report folder is made once the cluster answers)
        cmd.report.mkdir(parents=True, exist_ok=True)
        print(f"  {engine.describe()}", flush=True)
        workers = f"{engine.n_workers} ({'local cluster' if cmd.scheduler is None else cmd.scheduler})"
        done = engine.run(work, on_done=said)
    failed = [o for o in done.values() if not o.ok]
    if failed:
        print(f"validate: {len(failed)} of {len(done)} tasks failed (above); no report written", flush=True)
        return 1
    found = {o.key.removeprefix("analysis "): o.value for o in done.values() if o.key.startswith("analysis ")}
    rows = [v for a in analyses for v in found.get(a.name, [])]
    elapsed = time.perf_counter() - start
    write_owned(cmd.report, "verdicts.json", to_json(rows))
    from amdm_geom.app.report import write_report
    from amdm_geom.app.runner.families import format_summary

    index = write_report(rows, cmd.report, context={"mode": mode, "seed": cmd.seed, "runs": str(cmd.runs),
                                                     "seconds": f"{elapsed:.0f}", "workers": workers})
    if cmd.json_path is not None:
        cmd.json_path.write_text(to_json(rows))
    removed = prune_runs(cmd.runs, cmd.keep_runs, [p.name for p in probes])
    color = sys.stdout.isatty()
    print()
    print(format_summary(rows, color=color))
    print()
    print(format_table(rows, color=color))
    if removed:
        print(f"\nremoved {len(removed)} stores from {cmd.runs} (--keep-runs {cmd.keep_runs})")
    print(f"\nreport: {index} ({elapsed:.1f} s)")
    return 0

"""The commands ``analyze``, ``rerun``, ``ecosystem``, ``train``, ``sweep`` and ``clean``: each a
spec (its options, checked before any work) and the function that runs it. (``probe`` takes each
probe's own spec; ``validate`` is ``amdm_geom.app.validate``.) Each command imports its work
inside its function: the command line reads this module at every start (its specs are the
options), and the models, the sampler and the trace layer take seconds to import (torch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from amdm_geom.core.spec import (
    Spec,
    SpecError,
    choice,
    creatable_dir,
    existing,
    flag,
    integer,
    optional,
    seed,
    writable_file,
)
from amdm_geom.models.pipeline_specs import Device

__all__ = ["AnalyzeCommand", "CleanCommand", "EcosystemCommand", "RerunCommand", "SweepCommand", "TrainCommand",
           "analyze", "analyze_description", "clean", "ecosystem", "rerun", "stores_by_name", "sweep",
           "train"]

Flag = Annotated[bool, flag]
Folder = Annotated[Path, creatable_dir]
Seed = Annotated[int, seed()]
_POSITIONAL = {"positional": True}


class AnalyzeCommand(Spec):
    """Run one analysis on trace stores: its results, CSV tables, figures and verdicts go to
    OUT/ANALYSIS/ (replaced atomically)."""

    analysis: str = Field(json_schema_extra=_POSITIONAL)
    """the analysis to run."""
    stores: tuple[Path, ...] = Field((), alias="store", json_schema_extra=_POSITIONAL)
    """trace stores (.zarr folders)."""
    out: Folder = Path("data/report")
    """report folder."""
    quick: Flag = False
    """smaller settings where the analysis has them."""
    seed: Seed = 0
    """seed of the analysis' own random draws."""
    runs: Folder = Path("data/runs")
    """where an analysis that runs its own trace stores writes them (RUNS/ANALYSIS)."""
    workers: Annotated[int | None, optional(integer(1))] = None
    """worker processes for those runs, one thread each (default: the machine's cores)."""
    grid: Flag = False
    """the analysis' full grid of settings, where it has one (digits_grid: about an hour on 2 cores;
    guidance_curve, mechanism)."""

    @field_validator("analysis", mode="before")
    @classmethod
    def _registered(cls, value, info: ValidationInfo):
        from amdm_geom.app.runner.registry import analysis_names

        return choice(*analysis_names()).func(value, info)


def analyze_description(args: list[str]) -> str | None:
    """The analyses and their one lines, for ``amdm-geom analyze --help`` (this imports them)."""
    if not any(a in ("-h", "--help") for a in args):
        return None
    from amdm_geom.app.runner.registry import analysis_summaries

    rows = "\n".join(f"  {name:14s} {text}" for name, text in analysis_summaries().items())
    return f"{AnalyzeCommand.__doc__}\n\nanalyses:\n{rows}"


def stores_by_name(paths) -> dict[str, Path]:
    """``{store name: path}``; one line for a path that is not a store or a name given twice."""
    out: dict[str, Path] = {}
    for p in map(Path, paths):
        if not (p / "zarr.json").exists():
            raise FileNotFoundError(f"no trace store at {p}")
        name = p.name.removesuffix(".zarr")
        if name in out:
            raise ValueError(f"two stores are named {name}: {out[name]} and {p}; analyses tell stores apart by "
                             "name, so rename one")
        out[name] = p
    return out


def analyze(cmd: AnalyzeCommand) -> int:
    """Run the analysis; an analysis that plans its own runs (``ablations``) and is given no
    stores runs them first as tasks on ``amdm_geom.app.engine``, ``--workers`` at a time."""
    import time

    from amdm_geom.app.runner import load_analysis, run_analysis
    from amdm_geom.app.runner.analysis import check_grid
    from amdm_geom.core.verdicts import format_table

    start = time.perf_counter()
    stores = stores_by_name(cmd.stores)
    check_grid(load_analysis(cmd.analysis), cmd.grid)
    if not stores and load_analysis(cmd.analysis).run_module is not None:
        from amdm_geom.app.engine import Engine, analysis_tasks

        tasks = analysis_tasks(cmd.analysis, None, cmd.out, quick=cmd.quick, seed=cmd.seed, runs=cmd.runs)
        with Engine(workers=cmd.workers) as engine:
            print(engine.describe(), flush=True)
            done = engine.run(tasks, progress=True, desc=cmd.analysis)
        failed = [o for o in done.values() if not o.ok]
        for o in failed:
            print(f"failed {o.key}: {o.error}")
        if failed:
            print(f"{cmd.analysis}: {len(failed)} of {len(done)} tasks failed; nothing written to "
                  f"{cmd.out / cmd.analysis}")
            return 1
        rows = done[tasks[-1].key].value
    else:
        rows = run_analysis(cmd.analysis, stores, cmd.out, quick=cmd.quick, seed=cmd.seed, runs=cmd.runs,
                            grid=cmd.grid)
    print(format_table(rows))
    print(f"\nresults and figures in {cmd.out / cmd.analysis} ({time.perf_counter() - start:.1f} s)")
    damaged = sorted({r.extra["damaged"] for r in rows if "damaged" in r.extra and r.key.startswith(
        f"{cmd.analysis}_damaged_")})
    for why in damaged:  # every verdict that read it is inconclusive; exit 1 says the input was damaged
        print(f"amdm-geom analyze: error: {why}", file=sys.stderr)
    return 1 if damaged else 0


class RerunCommand(Spec):
    """Run a trace store's spec again (the probe or ablation run that made it, with the same models
    and seeds): the new store's arrays equal the old one's, bit for bit."""

    store: Annotated[Path, existing("trace store")] = Field(json_schema_extra=_POSITIONAL)
    """the trace store to run again."""
    out: Path | None = None
    """the new store (default: STORE itself, which then needs --overwrite)."""
    overwrite: Flag = False
    """replace an existing trace store at OUT."""
    progress: Flag = True
    """show a progress bar."""
    force_size: Flag = False
    """run even if the estimated trace store or memory is above the free disk, the memory available or a cap
    (README, "Sizes and caps")."""


def rerun(cmd: RerunCommand) -> int:
    """The store's kept spec (``amdm_geom.store.spec_of``), run again by the probe or the analysis
    runs that made it, found through the registry (``registry.maker``)."""
    from amdm_geom.app.runner.registry import maker
    from amdm_geom.probes import rerun as run_again
    from amdm_geom.store import open_run, spec_of

    ds = open_run(cmd.store)
    made_by = maker(ds)
    run_again(spec_of(ds, made_by.Spec), made_by.run, out=cmd.store if cmd.out is None else cmd.out,
              overwrite=cmd.overwrite, progress=cmd.progress, force_size=cmd.force_size)
    return 0


Model = Annotated[Path, existing("pipeline folder or checkpoint file")]


class EcosystemCommand(Spec):
    """Compares what Section 3.1 requires of two models (the same VAE by config and weights, the
    same SDE, the same latent shape) and measures functional proximity |eps_A - eps_B| / |eps_A|
    over t on random z_t. Local weights only."""

    path_a: Model = Field(json_schema_extra=_POSITIONAL)
    """pipeline folder or checkpoint file."""
    path_b: Model = Field(json_schema_extra=_POSITIONAL)
    """pipeline folder or checkpoint file."""
    prompt: str = "a photograph"
    """the prompt both models encode."""
    device: Device = "cpu"
    """cpu, cuda, cuda:N or mps."""
    dtype: Annotated[Literal["float16", "float32", "bfloat16"], choice("float16", "float32", "bfloat16")] = "float32"
    """model dtype."""
    json_path: Annotated[Path | None, optional(writable_file)] = Field(None, alias="json")
    """also write the report as JSON to this file (its folder must exist)."""


def ecosystem(cmd: EcosystemCommand) -> int:

    from amdm_geom.models.ecosystem import check, format_report

    report = check(cmd.path_a, cmd.path_b, prompt=cmd.prompt, device=cmd.device, dtype=cmd.dtype)
    print(format_report(report))
    if cmd.json_path is not None:
        cmd.json_path.write_text(json.dumps({"verdict": report.verdict, "checks": report.checks,
                                             "proximity": report.proximity, "names": list(report.names)}, indent=2))
    return 0



class TrainCommand(Spec):
    """Train the models of a shipped ecosystem from their recorded configs (``digits``: a base,
    fine-tunes on position, colour and digit class, a from-scratch and an other-schedule
    control, and a rectified-flow base with fine-tunes on position and colour), in worker
    processes of one torch thread each, deterministically on CPU. Each model is written as
    OUT/NAME.safetensors with OUT/NAME.json (its spec, data hash, loss curve and hashes). The
    shipped weights were made by this command with ``--out amdm_geom/models/digits/weights``."""

    ecosystem: Annotated[Literal["digits"], choice("digits")] = Field(json_schema_extra=_POSITIONAL)
    """the ecosystem to train."""
    out: Folder = Path("data/models/digits")
    """where the weights go (a model that starts from another finds it here, else in the shipped weights)."""
    only: tuple[str, ...] = ()
    """train only these models (default: all)."""
    workers: Annotated[int, integer(1)] = 2
    """worker processes (one torch thread each)."""

    @field_validator("only", mode="after")
    @classmethod
    def _known(cls, value):
        from amdm_geom.models.digits.zoo import names

        bad = [n for n in value if n not in names()]
        if bad:
            raise SpecError(f"must name models of the ecosystem ({', '.join(names())})", bad[0], loc=("only",))
        return value


def train(cmd: TrainCommand) -> int:
    from amdm_geom.models.digits.train import train_ecosystem
    from amdm_geom.models.digits.zoo import WEIGHTS

    done = train_ecosystem(cmd.out, only=cmd.only or None, workers=cmd.workers, init_dir=WEIGHTS)
    print(f"trained {len(done)} model(s) into {cmd.out}: " + ", ".join(f"{k} {v:.0f} s" for k, v in done.items()))
    return 0


class SweepCommand(Spec):
    """Run a sweep file's grid of probe specs on dask.distributed, one task per grid point, each
    into OUT/<point>.zarr; every point is checked before any task starts. A sweep started again
    skips the complete stores and redoes the rest; a failed point is reported and the others go
    on (exit status 1 if any failed). OUT/sweep.json records the points. Example:
    examples/sweep.toml."""

    spec_file: Annotated[Path, existing("sweep file")] = Field(json_schema_extra=_POSITIONAL)
    """the sweep file (TOML or YAML: probe, base, grid)."""
    out: Path | None = None
    """where the stores and sweep.json go (default: data/runs/<SPEC_FILE's name>)."""
    scheduler: str | None = None
    """address of a running dask scheduler (tcp://host:port); default: a local cluster."""
    workers: Annotated[int | None, optional(integer(1))] = None
    """worker processes of the local cluster (default: min(points, cores))."""
    progress: Flag = True
    """show a progress bar."""
    force_size: Flag = False
    """run even if the estimated stores or memory are above the free disk, the memory available or a cap
    (README, "Sizes and caps")."""
    folder = property(lambda self: self.out if self.out is not None else Path("data/runs") / self.spec_file.stem)


def sweep(cmd: SweepCommand) -> int:
    from amdm_geom.app.sweep import sweep as run_sweep

    out = cmd.folder
    rows = run_sweep(cmd.spec_file, out, scheduler=cmd.scheduler, workers=cmd.workers, progress=cmd.progress,
                     force_size=cmd.force_size)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
    print(f"sweep: {counts['done']} done, {counts['skipped']} skipped (complete), {counts['failed']} failed; "
          f"stores and sweep.json in {out}")
    for r in rows:
        if r["status"] == "failed":
            print(f"  failed {r['name']} {r['values']}: {r['error']}")
    return 1 if counts["failed"] else 0


class CleanCommand(Spec):
    """Remove what this toolkit wrote under the given folders: trace stores, result folders, the
    report's index.html and verdicts.json, and sweep records; print each and the bytes freed.
    Only what it can show it wrote is removed: a store holding nothing but its writer's files, a
    result folder whose every file is in its manifest, unchanged, a report file listed in the report
    folder's manifest. A user's file inside any of them makes the command refuse before it removes
    anything, naming the file; anything beside them is kept (one line each); a store being written
    is kept. `/`, the home folder and a missing folder are refused."""

    folders: tuple[Path, ...] = Field((Path("data/runs"), Path("data/report")), alias="folder",
                                      json_schema_extra=_POSITIONAL)
    """folders to clean (default: data/runs data/report)."""
    dry_run: Flag = False
    """list what would be removed, and remove nothing."""


def clean(cmd: CleanCommand) -> int:
    from amdm_geom.app.cleaning import Foreign, clean_folders

    try:
        folders = cmd.folders
        if folders == CleanCommand.model_fields["folders"].default:  # the defaults: those that exist
            folders = tuple(f for f in folders if f.exists() or f.is_symlink())
        removed, kept = clean_folders(folders, dry_run=cmd.dry_run)
    except Foreign as exc:
        raise ValueError(str(exc)) from None
    verb = "would remove" if cmd.dry_run else "removed"
    for path, size in removed:
        print(f"{verb} {path} ({size:,} bytes)")
    for path, why in kept:
        print(f"kept {path} ({why})")
    total = sum(s for _, s in removed)
    print(f"{'would free' if cmd.dry_run else 'freed'} {total:,} bytes in {len(removed)} item(s)")
    return 0

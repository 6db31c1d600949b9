"""Running an analysis: the one runner behind ``amdm-geom analyze``, ``amdm-geom validate`` and
the notebooks. It checks the stores against the analysis' ``stores``, calls ``compute``,
``verdicts``, ``plot`` and ``tables`` (the contract: ``amdm_geom.analyses.base.Analysis``), gives
each verdict the analysis' family where it names none, and writes ``<out>/<name>/`` atomically as
a result folder (``amdm_geom.app.runner.output``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import xarray as xr

from amdm_geom.analyses.base import Analysis
from amdm_geom.app.runner.output import check_replaceable, write_result
from amdm_geom.app.runner.registry import check_analysis, load_analysis
from amdm_geom.core.verdicts import Verdict

__all__ = ["AnalysisLike", "Outcome", "analyze", "check_grid", "damaged_stores", "resolve",
           "run_analysis", "with_families", "write_outcome"]

#: What names an analysis: its registered name, its class, or an instance of its class.
AnalysisLike = str | Analysis | type[Analysis]


@dataclass
class Outcome:
    """What one analysis produced: the analysis, ``compute``'s result, the verdict rows, the
    figures (``{file name: Figure}``) and the tables (``{file name: DataFrame}``)."""

    analysis: Analysis
    result: xr.Dataset | xr.DataTree
    verdicts: list[Verdict]
    figures: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)


def resolve(analysis: AnalysisLike) -> Analysis:
    """The analysis: loaded from the registry by name, or a subclass of ``Analysis`` (or an
    instance of one) checked against the contract."""
    if isinstance(analysis, str):
        return load_analysis(analysis)
    return check_analysis(analysis)


def _check_stores(analysis: Analysis, stores: Mapping) -> None:
    if analysis.stores == "required" and not stores:
        raise ValueError(f"analysis {analysis.name} needs at least one trace store; got none")
    if analysis.stores == "none" and stores:
        given = ", ".join(str(p) if not isinstance(p, xr.Dataset) else n for n, p in stores.items())
        raise ValueError(f"analysis {analysis.name} takes no stores; got {len(stores)}: {given}")


def with_families(analysis: Analysis, rows) -> list[Verdict]:
    """``rows`` with the analysis' ``family`` written into each verdict that names none; a
    one-line ValueError for a verdict naming a family the analysis does not declare."""
    declared = (analysis.family, *analysis.other_families)
    out = []
    for v in rows:
        if v.family and v.family not in declared:
            raise ValueError(f"analysis {analysis.name}: verdict {v.key or v.claim!r} names family {v.family!r}, "
                             f"which the analysis does not declare ({', '.join(declared)})")
        out.append(v if v.family else replace(v, family=analysis.family))
    return out


def damaged_stores(stores: Mapping) -> dict[str, str]:
    """``{store name: one-line reason}`` for the stores (given as paths or URLs) whose bytes are not
    what their writer wrote (``amdm_geom.store.verify_run``: structure and every chunk's
    CRC-32C). Opened datasets are taken as they are."""
    from amdm_geom.store import DamagedStoreError, verify_run  # (kept out of the runner's import: see output)

    out = {}
    for name, store in stores.items():
        if isinstance(store, xr.Dataset):
            continue
        try:
            verify_run(store)
        except DamagedStoreError as exc:
            out[name] = str(exc)
    return out


def _names_one_of(verdict: Verdict, names) -> bool:
    """Whether ``verdict`` is about one of the stores ``names`` alone (its key ends with, or its
    claim starts with, that store's name)."""
    return any(verdict.key.endswith(f"_{n}") or verdict.claim.startswith(f"{n}:") for n in names)


def _damaged_rows(analysis: Analysis, damaged: dict[str, str], rows: list[Verdict], intact) -> list[Verdict]:
    """The verdicts of an analysis some of whose stores are damaged: one inconclusive row per damaged
    store ("damaged store: ..."), and every verdict computed on the intact stores that is not about
    one of them alone (a pooled verdict would have read the damaged store) made inconclusive too."""
    said = "; ".join(damaged.values())
    where = rows[0].where if rows else "store integrity"
    out = [Verdict(claim=f"{analysis.name} on store {name}", where=where, status="inconclusive",
                   measured="not read", bound="an intact store", detail=f"damaged store: {why}",
                   key=f"{analysis.name}_damaged_{name}", extra={"damaged": why}, family=analysis.family)
           for name, why in damaged.items()]
    for v in rows:
        if _names_one_of(v, intact):
            out.append(v)
            continue
        extra = {**v.extra, "damaged": said, "undecided": v.status}
        out.append(replace(v, status="inconclusive", extra=extra,
                           detail=f"not decided: damaged store: {said}. {v.detail}".rstrip()))
    return out


def check_grid(analysis, grid: bool) -> None:
    """Refuse ``grid`` (``--grid``) in one line for an analysis without a full grid, or with ``quick``."""
    if grid and not analysis.full_grid:
        from amdm_geom.app.runner.registry import analysis_names, load_analysis

        having = [n for n in analysis_names() if load_analysis(n).full_grid]
        raise ValueError(f"analysis {analysis.name} has no full grid (--grid); the analyses with one: "
                         f"{', '.join(having) or 'none'}")


def analyze(analysis: AnalysisLike, stores: Mapping | None = None, *, quick: bool = False, seed: int = 0,
            runs: Path | None = None, figures: bool = True, grid: bool = False) -> Outcome:
    """Run an analysis without writing anything (what a notebook wants): ``stores`` is
    ``{store name: path or opened store}``; ``figures=False`` skips ``plot``.

    Every store given as a path is verified first (``damaged_stores``). A damaged store is not
    read: it gets one inconclusive verdict ("damaged store: <store, variable, chunk>"), the
    analysis runs on the intact stores, and each of its verdicts that is not about one intact
    store alone becomes inconclusive too, so nothing holds on data the writer did not write.
    ``grid``: the analysis' full grid of settings (one whose ``full_grid`` is set; refused in one
    line for any other)."""
    analysis = resolve(analysis)
    check_grid(analysis, grid)
    stores = dict(stores or {})
    _check_stores(analysis, stores)
    damaged = damaged_stores(stores)
    intact = {n: s for n, s in stores.items() if n not in damaged}
    if damaged and not intact and analysis.stores == "required":
        empty = xr.Dataset(attrs={"damaged": "; ".join(damaged.values())})
        return Outcome(analysis, empty, _damaged_rows(analysis, damaged, [], intact))
    result = analysis.compute(intact, quick=quick, seed=seed, runs=None if runs is None else Path(runs),
                              **({"grid": True} if grid else {}))
    rows = with_families(analysis, analysis.verdicts(result))
    if damaged:
        rows = _damaged_rows(analysis, damaged, rows, intact)
    figs = dict(analysis.plot(result)) if figures else {}
    return Outcome(analysis, result, rows, figs, dict(analysis.tables(result)))


def write_outcome(outcome: Outcome, out) -> Path:
    """``outcome`` into ``<out>/<name>/`` (replaced atomically; refused if that is not a result
    folder). Returns the folder."""
    analysis = outcome.analysis
    damaged = "damaged" in outcome.result.attrs  # no store could be read: nothing to reshape
    saved = outcome.result if damaged else analysis.saved(outcome.result)
    return write_result(Path(out) / analysis.name, saved, outcome.verdicts, outcome.figures, outcome.tables,
                        stem=analysis.result, captions=dict(analysis.captions))


def run_analysis(analysis: AnalysisLike, stores: Mapping | None, out, *, quick: bool = False, seed: int = 0,
                 runs: Path | None = None, grid: bool = False) -> list[Verdict]:
    """Run one analysis on ``stores`` (``{store name: path}``; ``None`` or empty for none) and
    write its results, figures, tables and verdicts into ``<out>/<name>/``. The stores' kind and
    the target folder are checked before any work. Returns the verdict rows."""
    analysis = resolve(analysis)
    check_grid(analysis, grid)
    _check_stores(analysis, dict(stores or {}))
    check_replaceable(Path(out) / analysis.name)
    outcome = analyze(analysis, stores, quick=quick, seed=seed, runs=runs, grid=grid)
    write_outcome(outcome, out)
    return outcome.verdicts

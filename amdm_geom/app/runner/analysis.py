"""Running an analysis: the one runner behind ``amdm-geom analyze``, ``amdm-geom validate`` and
the notebooks. It checks the stores against the analysis' ``STORES``, calls ``compute``,
``verdicts``, ``plot`` and ``tables`` (the contract in ``amdm_geom.analyses``), and writes
``<out>/<NAME>/`` atomically as a result folder (``amdm_geom.app.runner.output``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType

import xarray as xr

from amdm_geom.app.runner.output import check_replaceable, write_result
from amdm_geom.app.runner.registry import check_analysis, load_analysis
from amdm_geom.core.verdicts import Verdict

__all__ = ["Outcome", "analyze", "damaged_stores", "resolve", "run_analysis", "write_outcome"]


@dataclass
class Outcome:
    """What one analysis produced: its module, ``compute``'s result, the verdict rows, the
    figures (``{file name: Figure}``) and the tables (``{file name: DataFrame}``)."""

    module: ModuleType
    result: xr.Dataset | xr.DataTree
    verdicts: list[Verdict]
    figures: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)


def resolve(name_or_module: str | ModuleType) -> ModuleType:
    """The analysis module: loaded from the registry by name, or a module checked against the
    contract."""
    if isinstance(name_or_module, str):
        return load_analysis(name_or_module)
    if isinstance(name_or_module, ModuleType):
        return check_analysis(name_or_module)
    raise TypeError(f"an analysis is a registered name or a module; got {type(name_or_module).__name__}")


def _check_stores(module: ModuleType, stores: Mapping) -> None:
    if module.STORES == "required" and not stores:
        raise ValueError(f"analysis {module.NAME} needs at least one trace store; got none")
    if module.STORES == "none" and stores:
        given = ", ".join(str(p) if not isinstance(p, xr.Dataset) else n for n, p in stores.items())
        raise ValueError(f"analysis {module.NAME} takes no stores; got {len(stores)}: {given}")


def damaged_stores(stores: Mapping) -> dict[str, str]:
    """``{store name: one-line reason}`` for the stores (given as paths or URLs) whose bytes are not
    what their writer wrote (``amdm_geom.store.verify_run``: structure and every chunk's
    CRC-32C). Opened datasets are taken as they are."""
    from amdm_geom.store import DamagedStoreError, verify_run

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


def _damaged_rows(module: ModuleType, damaged: dict[str, str], rows: list[Verdict], intact) -> list[Verdict]:
    """The verdicts of an analysis some of whose stores are damaged: one inconclusive row per damaged
    store ("damaged store: ..."), and every verdict computed on the intact stores that is not about
    one of them alone (a pooled verdict would have read the damaged store) made inconclusive too."""
    said = "; ".join(damaged.values())
    where = rows[0].where if rows else "store integrity"
    out = [Verdict(claim=f"{module.NAME} on store {name}", where=where, status="inconclusive",
                   measured="not read", bound="an intact store", detail=f"damaged store: {why}",
                   key=f"{module.NAME}_damaged_{name}", extra={"damaged": why}) for name, why in damaged.items()]
    for v in rows:
        if _names_one_of(v, intact):
            out.append(v)
            continue
        extra = {**v.extra, "damaged": said, "undecided": v.status}
        out.append(replace(v, status="inconclusive", extra=extra,
                           detail=f"not decided: damaged store: {said}. {v.detail}".rstrip()))
    return out


def analyze(name_or_module: str | ModuleType, stores: Mapping | None = None, *, quick: bool = False, seed: int = 0,
            runs: Path | None = None, figures: bool = True) -> Outcome:
    """Run an analysis without writing anything (what a notebook wants): ``stores`` is
    ``{store name: path or opened store}``; ``figures=False`` skips ``plot``.

    Every store given as a path is verified first (``damaged_stores``). A damaged store is not
    read: it gets one inconclusive verdict ("damaged store: <store, variable, chunk>"), the
    analysis runs on the intact stores, and each of its verdicts that is not about one intact
    store alone becomes inconclusive too, so nothing holds on data the writer did not write."""
    module = resolve(name_or_module)
    stores = dict(stores or {})
    _check_stores(module, stores)
    damaged = damaged_stores(stores)
    intact = {n: s for n, s in stores.items() if n not in damaged}
    if damaged and not intact and module.STORES == "required":
        empty = xr.Dataset(attrs={"damaged": "; ".join(damaged.values())})
        return Outcome(module, empty, _damaged_rows(module, damaged, [], intact))
    result = module.compute(intact, quick=quick, seed=seed, runs=None if runs is None else Path(runs))
    rows = list(module.verdicts(result))
    if damaged:
        rows = _damaged_rows(module, damaged, rows, intact)
    figs = dict(module.plot(result)) if figures else {}
    tables = dict(module.tables(result)) if hasattr(module, "tables") else {}
    return Outcome(module, result, rows, figs, tables)


def write_outcome(outcome: Outcome, out) -> Path:
    """``outcome`` into ``<out>/<NAME>/`` (replaced atomically; refused if that is not a result
    folder). Returns the folder."""
    module = outcome.module
    damaged = "damaged" in outcome.result.attrs  # no store could be read: nothing to reshape
    saved = module.saved(outcome.result) if hasattr(module, "saved") and not damaged else outcome.result
    return write_result(Path(out) / module.NAME, saved, outcome.verdicts, outcome.figures, outcome.tables,
                        stem=getattr(module, "RESULT", "results"), captions=getattr(module, "CAPTIONS", None))


def run_analysis(name_or_module: str | ModuleType, stores: Mapping | None, out, *, quick: bool = False, seed: int = 0,
                 runs: Path | None = None) -> list[Verdict]:
    """Run one analysis on ``stores`` (``{store name: path}``; ``None`` or empty for none) and
    write its results, figures, tables and verdicts into ``<out>/<NAME>/``. The stores' kind and
    the target folder are checked before any work. Returns the verdict rows."""
    module = resolve(name_or_module)
    _check_stores(module, dict(stores or {}))
    check_replaceable(Path(out) / module.NAME)
    outcome = analyze(module, stores, quick=quick, seed=seed, runs=runs)
    write_outcome(outcome, out)
    return outcome.verdicts

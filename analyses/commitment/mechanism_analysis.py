"""The mechanism analysis: does "decided in the window and kept by model 1" predict AMDM's gain on the trained digits
models? (issue 25, item 4; the measures and the fit are ``mechanism``'s.)

Cells (T, s, guidance, ecosystem variant, role order) of Algorithm 1 (eta = 0.3, w = 0.5, App. F.2) on the shipped
digits models (``amdm_geom.models.digits``), each run on the digits benchmark's per-sample targets and seeds
(``targets(batch, seed)``, seeds ``1000 seed + k``, as ``analyses/digits/runs.run_arm``), so every cell is paired
with the benchmark's arms. Per (T, guidance, variant) each model runs alone once (its x0 read by the detectors at
every state, ``trained.readings_along``), and AMDM once per (s, role order). Sizes: the default (``validate``):
T = 50, s in {5, 20, 50}, guidance {1, 7.5}, unclipped, position first, 32 samples; ``quick``: T = 10, s in {2, 10},
guidance 1, 8 samples; ``grid``: T in {20, 50} with s in (2, 8, 20) / (5, 20, 50), guidance {1, 3, 7.5}, both
variants, both role orders, 64 samples.

Verdicts (findings, not the paper's claims):

- ``mechanism_slope``: the least-squares slope of the gain on ``decided_in_window * kept`` across the cells; holds
  when its 95% t interval lies above 0, violated when below, else inconclusive.
- ``mechanism_gain_needs_window``: in the cells where the partner's attribute is not decided in the window (the
  share's upper bound < 1/2) AMDM gains nothing (``mechanism.gain_needs_window``'s rule).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.commitment import mechanism as mech
from amdm_geom.analyses.commitment import trained
from amdm_geom.core.palette import colour
from amdm_geom.core.verdicts import Verdict

__all__ = ["CAPTIONS", "NAME", "ORDERS", "SIZES", "WHERE", "Mechanism", "compute", "plot", "tables", "verdicts"]

NAME = "mechanism"
WHERE = "Sec. 3.2, Alg. 1 (digits ecosystem (trained))"
#: Role order -> (model 1, model 2): the partner's attribute is model 2's.
ORDERS = {"position": ("position", "colour"), "colour": ("colour", "position")}
_ATTR = {"position": 0, "colour": 1}
#: Sizes: (T, its windows s), guidance scales, variants (clip_sample), role orders, samples per run.
SIZES = {"default": {"steps": ((50, (5, 20, 50)),), "guidance": (1.0, 7.5), "clips": (False,),
                     "orders": ("position",), "batch": 32},
         "quick": {"steps": ((10, (2, 10)),), "guidance": (1.0,), "clips": (False,), "orders": ("position",),
                   "batch": 8},
         "grid": {"steps": ((20, (2, 8, 20)), (50, (5, 20, 50))), "guidance": (1.0, 3.0, 7.5), "clips": (False, True),
                  "orders": ("position", "colour"), "batch": 64}}
_MEASURES = ("gain", "gain_lo", "gain_hi", "gain_sd", "success_amdm", "success_amdm_lo", "success_amdm_hi",
             "success_single", "success_single_lo", "success_single_hi", "decided_in_window", "decided_in_window_lo",
             "decided_in_window_hi", "read_at_close", "read_at_close_lo", "read_at_close_hi", "kept", "kept_lo",
             "kept_hi", "flip", "predictor", "predictor_lo", "predictor_hi", "carried", "carried_lo", "carried_hi")
_COUNTS = ("n", "decided_hits", "read_at_close_hits", "kept_hits")
CAPTIONS = {"mechanism": (
    "Why AMDM gains or loses on the trained digits models. Left: per cell (T, s, guidance, variant, role order) "
    "AMDM's success minus model 1 alone's (paired 95% interval) against the predictor: the share of samples whose "
    "partner attribute the partner model alone decides by state s on the target, times the share of those model 1 "
    "keeps to the end; exact 95% intervals (the product's from Bonferroni 97.5% factors). Colour: s; marker: "
    "guidance; the line is the unweighted least-squares fit with its pointwise 95% band. Right: per cell the share "
    "read as the target on model 1's x0 when the window closes (state s) and the share of those kept to the end.")}


def _label(T: int, s: int, g: float, clip: bool, order: str) -> str:
    return f"T{T}_s{s}_g{g:g}_{'clipped' if clip else 'unclipped'}_{order}_first"


def _pad(r: np.ndarray, states: int) -> np.ndarray:
    """Readings ``(S, B, 3)`` padded with -2 (no state) to ``states``."""
    return np.concatenate([r, np.full((states - r.shape[0], *r.shape[1:]), -2, dtype=r.dtype)])


def _run(size: dict, seed: int) -> dict:
    """Every run of the size: per cell the three readings arrays and the AMDM run's wall time."""
    from amdm_geom.models.digits import zoo
    from amdm_geom.sampling.config import SamplerConfig

    B = size["batch"]
    tgt, seeds = trained.targets(B, seed), [1000 * seed + k for k in range(B)]
    cells, states = [], 1 + max(T for T, _ in size["steps"])
    for T, windows in size["steps"]:
        for g in size["guidance"]:
            for clip in size["clips"]:
                models = {m: zoo.load(m, guidance_scale=g, clip_sample=clip) for m in _ATTR}
                alone = {m: trained.readings_along([models[m]], [trained.conditions(m, tgt)],
                                                   SamplerConfig(num_inference_steps=T, weights=()), seeds)
                         for m in _ATTR}
                for order in size["orders"]:
                    m1, m2 = ORDERS[order]
                    for s in windows:
                        run = trained.readings_along([models[m1], models[m2]],
                                                     [trained.conditions(m, tgt) for m in (m1, m2)],
                                                     SamplerConfig(num_inference_steps=T, agg_steps=s), seeds)
                        cells.append({"label": _label(T, s, g, clip, order), "steps": T, "agg_steps": s,
                                      "guidance": g, "clip_sample": clip, "model1": m1, "partner": m2,
                                      "amdm": _pad(run["readings"], states),
                                      "single": _pad(alone[m1]["readings"], states),
                                      "partner_alone": _pad(alone[m2]["readings"], states), "seconds": run["seconds"]})
    return {"cells": cells, "target": tgt, "seeds": seeds, "states": states}


def compute(stores: Mapping | None = None, *, quick: bool = False, seed: int = 0, runs: Path | None = None,
            grid: bool = False) -> xr.Dataset:
    """Runs the cells and measures them. The result over ``cell`` (coordinates ``steps``, ``agg_steps``,
    ``guidance``, ``clip_sample``, ``model1``, ``partner``): the readings ``amdm_reading``, ``single_reading`` (model
    1 alone), ``partner_reading`` (the partner alone), each (cell, state, sample, attribute), -1 blank, -2 past the
    cell's T; ``target`` (sample, attribute); every measure of ``mechanism.cell_measures``. No stores read or
    written; ``grid``: the full grid (``SIZES``)."""
    if stores:
        raise ValueError(f"{NAME} takes no stores; got {len(stores)}: {', '.join(map(str, stores))}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")
    if quick and grid:
        raise ValueError("--grid and --quick ask for different sizes: give one of them")
    size = SIZES["grid" if grid else "quick" if quick else "default"]
    start = time.perf_counter()
    got = _run(size, seed)
    cells, tgt = got["cells"], got["target"]
    rows = []
    for c in cells:
        T = c["steps"]
        rows.append(mech.cell_measures(amdm=c["amdm"][: T + 1], single=c["single"][: T + 1],
                                       partner=c["partner_alone"][: T + 1], target=tgt, s=c["agg_steps"],
                                       partner_attribute=_ATTR[c["partner"]]))
    dims = ("cell", "state", "sample", "attribute")
    data = {f"{k}_reading": (dims, np.stack([c[src] for c in cells]).astype(np.int64))
            for k, src in (("amdm", "amdm"), ("single", "single"), ("partner", "partner_alone"))}
    data["target"] = (("sample", "attribute"), tgt.astype(np.int64))
    data.update({k: ("cell", np.array([r[k] for r in rows], dtype=np.float64)) for k in _MEASURES})
    data.update({k: ("cell", np.array([r[k] for r in rows], dtype=np.int64)) for k in _COUNTS})
    data["seconds"] = ("cell", np.array([c["seconds"] for c in cells], dtype=np.float64))
    coords = {"cell": [c["label"] for c in cells], "state": np.arange(got["states"]), "sample": got["seeds"],
              "attribute": list(trained.ATTRIBUTES)}
    coords.update({k: ("cell", [c[k] for c in cells]) for k in ("steps", "agg_steps", "guidance", "clip_sample",
                                                                 "model1", "partner")})
    return xr.Dataset(data, coords=coords, attrs={
        "size": "grid" if grid else "quick" if quick else "default", "seed": seed, "level": mech.LEVEL,
        "fit": "ordinary least squares, unweighted, one point per cell", "wall_seconds": time.perf_counter() - start,
        "sampler": json.dumps({"eta": 0.3, "weights": [0.5], "ddim_eta": 0.0})})


# --------------------------------------------------------------------------------------------
# verdicts and tables


def _cells(ds: xr.Dataset) -> list[dict]:
    return [{k: (int(ds[k].values[i]) if k in _COUNTS else float(ds[k].values[i])) for k in _MEASURES + _COUNTS}
            for i in range(ds.sizes["cell"])]


def _fit(ds: xr.Dataset) -> mech.Fit:
    return mech.fit_line(ds.predictor.values, ds.gain.values, float(ds.attrs["level"]))


def slope_verdict(ds: xr.Dataset) -> Verdict:
    """``mechanism_slope``: the gain rises with decided_in_window * kept across the cells."""
    f = _fit(ds)
    lo, hi = f.interval
    left = int(ds.sizes["cell"]) - f.n
    c = mech.fit_line(ds.carried.values, ds.gain.values, f.level)
    return Verdict(
        key="mechanism_slope", kind="finding", where=WHERE, status=mech.slope_status(f),
        claim="AMDM's gain rises with the partner's attribute decided in the window and kept",
        measured=f"slope {f.slope:.3g} over {f.n} cells", bound="slope > 0", value=f.slope, reference=0.0,
        interval=(lo, hi), level=f.level, n=f.n,
        test=f"least squares (unweighted, one point per cell), t interval on {f.dof} dof from the residuals",
        detail=(f"gain = {f.intercept:.3g} + {f.slope:.3g} x predictor (r = {f.r:.2f}, slope stderr {f.stderr:.3g}); "
                "predictor = decided_in_window x kept; cells: "
                + "; ".join(f"{c} {p:.2f} -> {g:+.3f}" for c, p, g in zip(ds.cell.values, ds.predictor.values,
                                                                           ds.gain.values))
                + ". The cells share seeds and targets, so their errors are not independent: the interval treats "
                  "them as independent." + (f" {left} cells without a predictor (nothing read at close) left out."
                                             if left else "")
                + f" Across the cells decided_in_window spans {np.nanmin(ds.decided_in_window.values):.2f} to "
                  f"{np.nanmax(ds.decided_in_window.values):.2f} and kept {np.nanmin(ds.kept.values):.2f} to "
                  f"{np.nanmax(ds.kept.values):.2f}."
                + f" On carried (read_at_close x kept) instead: slope {c.slope:.3g} [{c.interval[0]:.3g}, "
                  f"{c.interval[1]:.3g}], r = {c.r:.2f}."),
        extra={"intercept": f.intercept, "stderr": f.stderr, "r": f.r, "dof": f.dof, "carried_slope": c.slope,
               "carried_interval": list(c.interval)})


def window_verdict(ds: xr.Dataset) -> Verdict:
    """``mechanism_gain_needs_window``: no gain where the partner's attribute is not decided in the window."""
    cells = _cells(ds)
    status, idx = mech.gain_needs_window(cells, level=float(ds.attrs["level"]))
    names = [str(ds.cell.values[i]) for i in idx]
    if idx:
        top = max(idx, key=lambda i: cells[i]["gain"])
        value, interval = cells[top]["gain"], (cells[top]["gain_lo"], cells[top]["gain_hi"])
        said = "; ".join(f"{n}: decided {c['decided_in_window']:.2f} (upper {c['decided_in_window_hi']:.2f}), gain "
                         f"{c['gain']:+.3f} [{c['gain_lo']:+.3f}, {c['gain_hi']:+.3f}]"
                         for n, c in zip(names, (cells[i] for i in idx)))
    else:
        value, interval, said = math.nan, None, "no cell has its decided_in_window upper bound below 1/2"
    return Verdict(
        key="mechanism_gain_needs_window", kind="finding", where=WHERE, status=status,
        claim="AMDM gains nothing where the partner's attribute is not decided in the window",
        measured=f"largest gain {value:+.3f} in {len(idx)} such cells" if idx else "no such cell",
        bound=f"gain < {mech.stats.DELTA:g} in each", value=value, reference=0.0, interval=interval,
        level=float(ds.attrs["level"]) if idx else None, n=len(idx),
        test=("cells with decided_in_window's exact upper bound < 1/2; holds if every one's paired 95% upper bound "
              f"< {mech.stats.DELTA:g} (intersection-union), violated if one's Bonferroni interval (1 - 0.05/m) lies "
              "above 0"),
        detail=said + ".", extra={"cells": names})


def verdicts(ds: xr.Dataset) -> list[Verdict]:
    """The slope finding and the window finding (per cell the table says the rest)."""
    return [slope_verdict(ds), window_verdict(ds)]


def tables(ds: xr.Dataset) -> dict:
    """``mechanism``: one row per cell with its settings and every measure; ``mechanism_fit``: the fitted lines of
    the gain on the predictor (the verdict's) and on ``carried`` (read_at_close x kept), both unweighted."""
    import pandas as pd

    keys = ("steps", "agg_steps", "guidance", "clip_sample", "model1", "partner")
    rows = [{"cell": str(c), **{k: ds[k].values[i].item() for k in keys + _COUNTS + _MEASURES},
             "seconds": float(ds.seconds.values[i])} for i, c in enumerate(ds.cell.values)]
    level = float(ds.attrs["level"])
    fits = {"predictor": _fit(ds), "carried": mech.fit_line(ds.carried.values, ds.gain.values, level)}
    fit = pd.DataFrame([{"x": x, "intercept": f.intercept, "slope": f.slope, "stderr": f.stderr,
                         "slope_lo": f.interval[0], "slope_hi": f.interval[1], "dof": f.dof, "r": f.r, "cells": f.n,
                         "weighted": False} for x, f in fits.items()])
    return {"mechanism": pd.DataFrame(rows), "mechanism_fit": fit}


def plot(ds: xr.Dataset) -> dict:
    """``{"mechanism": Figure}`` (``CAPTIONS``)."""
    import matplotlib.pyplot as plt
    from scipy import stats as sps

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8))
    windows = sorted({int(s) for s in ds.agg_steps.values})
    cmap = plt.get_cmap("viridis", max(len(windows), 2))
    markers = dict(zip(sorted({float(g) for g in ds.guidance.values}), "osD^v<>p"))
    x, y = ds.predictor.values, ds.gain.values
    for i in range(ds.sizes["cell"]):
        c = cmap(windows.index(int(ds.agg_steps.values[i])))
        xe = [[x[i] - ds.predictor_lo.values[i]], [ds.predictor_hi.values[i] - x[i]]]
        ye = [[y[i] - ds.gain_lo.values[i]], [ds.gain_hi.values[i] - y[i]]]
        ax.errorbar(x[i], y[i], xerr=xe, yerr=ye, color=c, marker=markers[float(ds.guidance.values[i])], ms=6,
                    capsize=2, lw=0.8)
    f = _fit(ds)
    if math.isfinite(f.slope):
        ok = np.isfinite(x) & np.isfinite(y)
        grid = np.linspace(0, 1, 101)
        ax.plot(grid, f.intercept + f.slope * grid, color=colour("AMDM"), lw=1.2)
        if math.isfinite(f.stderr):
            xm, sxx = x[ok].mean(), ((x[ok] - x[ok].mean()) ** 2).sum()
            se = f.stderr * np.sqrt(sxx) * np.sqrt(1 / f.n + (grid - xm) ** 2 / sxx)  # sigma sqrt(1/n + ...)
            half = float(sps.t.ppf(0.5 + f.level / 2, f.dof)) * se
            ax.fill_between(grid, f.intercept + f.slope * grid - half, f.intercept + f.slope * grid + half,
                            color=colour("AMDM"), alpha=0.15, lw=0)
    ax.axhline(0, color=colour("reference"), lw=0.8, ls=":")
    for s in windows:
        ax.plot([], [], color=cmap(windows.index(s)), lw=4, label=f"s = {s}")
    for g, mk in markers.items():
        ax.plot([], [], color="k", marker=mk, ls="", label=f"guidance {g:g}")
    ax.set(xlabel="decided in window x kept", ylabel="AMDM success - model 1 alone", xlim=(-0.03, 1.03),
           ylim=(-1.05, 1.05), title=f"gain against the predictor (slope {f.slope:.2g})")
    ax.legend(fontsize=7, loc="best")
    idx = np.arange(ds.sizes["cell"])
    for j, (name, role) in enumerate((("read_at_close", "model 2"), ("kept", "model 1"))):
        v, lo, hi = ds[name].values, ds[f"{name}_lo"].values, ds[f"{name}_hi"].values
        bx.errorbar(idx + 0.15 * (2 * j - 1), v, yerr=[v - lo, hi - v], color=colour(role), marker="o", ls="",
                    capsize=2, label=name.replace("_", " "))
    bx.set_xticks(idx, [str(c).replace("_", " ") for c in ds.cell.values], rotation=60, ha="right", fontsize=6)
    bx.set(ylim=(-0.02, 1.02), ylabel="share of samples", title="partner attribute at window close, kept to the end")
    bx.legend(fontsize=7)
    fig.tight_layout()
    return {"mechanism": fig}


class Mechanism(Analysis):
    """Does the partner's attribute decided in the window and kept by model 1 predict AMDM's gain? (digits)"""

    name, family, stores, result, captions = NAME, "trained", "none", "results", CAPTIONS  # (the digits models')
    full_grid = True
    priority = 7  # (about a minute of network evaluations: started early in validate)
    summary = "why AMDM gains or loses on the digits models: the partner decided in the window and kept, vs the gain"

    compute, verdicts, plot, tables = map(staticmethod, (compute, verdicts, plot, tables))

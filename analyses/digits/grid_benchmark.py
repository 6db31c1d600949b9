"""The digits benchmark over a grid of settings (issue: benchmark verdicts that hold across
settings): each headline comparison (AMDM against the better single model, each single model and
each peer; slerp against lerp; the shift eta against none; the first s steps against the middle
and late windows; one role order against the other) decided in every cell (T, guidance, s, role
order, and the ecosystem's variant: x0 unclipped or clipped, ``grid_runs.ECOSYSTEMS``) with
multiplicity control across the cells (``amdm_geom.analyses.common.grid``): holds everywhere,
violated everywhere, setting-dependent (naming the cells that go each way) or inconclusive, with
the per-cell intervals in one heatmap per comparison. The reference cell is the paper's own
setting (T = 50, s = 20, eta = 0.3, w = 0.5, guidance 7.5) on the unclipped variant.

Three sizes: ``amdm-geom analyze digits_grid --grid`` runs the full grid (``FULL_GRID``: T in
{20, 50}, guidance 1, 3 and 7.5, three s per T over the window, both role orders, both variants,
every kind of arm: 372 arms of 128 samples, on every core, its wall time printed); without
``--grid`` (what ``validate`` runs) the subset ``SUBSET``, which decides the headline comparisons on
the reference cell and its guidance-1 twin within validate's budget (T = 50, s = 20, guidance 1 and
7.5, both orders, the unclipped variant; 64 samples per arm; no ULA and no windows); ``--quick``
a smaller one still. The verdicts name the cells they ran.

Every arm is a ``runs.Arm`` and every comparison paired by seed and target, as in
``digits_benchmark`` (whose ``score`` this reuses, the images aside: the grid keeps what the
detectors read). The result is a DataTree, one node per variant, each a Dataset over ``arm``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import xarray as xr

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.common import grid as grid_
from amdm_geom.analyses.common import paired
from amdm_geom.analyses.digits.digits_benchmark import score
from amdm_geom.analyses.digits.grid_runs import Grid, cell_label, comparisons_of, grid_arms, grid_pairs
from amdm_geom.analyses.digits.runs import Arm, run_arm, targets
from amdm_geom.core import stats
from amdm_geom.core.verdicts import Verdict

__all__ = ["BATCH", "CAPTIONS", "CLAIMS", "FULL_GRID", "NAME", "QUICK_GRID", "SUBSET", "DigitsGrid", "cells_of",
           "compute", "plot", "tables", "verdicts"]

NAME = "digits_grid"
WHERE = "digits ecosystem (trained), grid of settings"
FULL_GRID = Grid()
SUBSET = Grid(steps=(50,), s_values=((20,),), guidance=(7.5,), ecosystems=("unclipped",),
              orders=("position first",), kinds=("singles", "composable", "superdiff_and", "amdm", "lerp", "eta"))
QUICK_GRID = Grid(steps=(10,), s_values=((4,),), guidance=(1.0, 3.0), ecosystems=("unclipped",),
                  kinds=("singles", "amdm", "lerp"), reference_steps=10, reference_s=4, reference_guidance=3.0)
#: Samples per arm of each size.
BATCH = {"grid": 128, "subset": 48, "quick": 16}
#: comparison -> (verdict key, claim, where in the paper, kind); "better single": the single model with the
#: higher success in the cell (by its sample mean), so the claim is AMDM against the better of the two there.
CLAIMS = {
    "better single": ("digits_grid_vs_better_single", "AMDM beats the better single model", "Tables 1-2",
                      "paper claim"),
    "position": ("digits_grid_vs_position", "AMDM beats the position model alone", "Tables 1-2", "paper claim"),
    "colour": ("digits_grid_vs_colour", "AMDM beats the colour model alone", "Tables 1-2", "paper claim"),
    "composable": ("digits_grid_vs_composable", "AMDM beats Composable Diffusion", "Sec. 4", "paper claim"),
    "superdiff_and": ("digits_grid_vs_superdiff_and", "AMDM beats SUPERDIFF AND", "Sec. 4", "paper claim"),
    "ula": ("digits_grid_vs_ula", "AMDM beats Du et al.'s annealed ULA", "Sec. 4", "paper claim"),
    "lerp": ("digits_grid_slerp_lerp", "slerp beats lerp", "Figure 5a", "paper claim"),
    "eta": ("digits_grid_eta", "the shift eta = 0.3 beats no shift (eta = 0)", "Table 4", "paper claim"),
    "middle": ("digits_grid_stage_middle", "aggregating the first s steps beats the middle window", "Table 3",
               "paper claim"),
    "late": ("digits_grid_stage_late", "aggregating the first s steps beats the late window", "Table 3",
             "paper claim"),
    "role order": ("digits_grid_role_order", "position model first beats colour model first", "Alg. 1's roles",
                   "finding"),
}
CAPTIONS = {
    "grid_*": (
        "Digits benchmark over the grid of settings, one comparison (in the title): per cell the paired difference "
        "in success (position and colour read as the target) of AMDM minus the other arm, with its simultaneous "
        "interval (Bonferroni across the cells) and the cell's decision; rows guidance, columns s, one panel per "
        "T, role order and variant of the ecosystem (x0 unclipped or clipped). Purple: AMDM ahead, orange: "
        "behind; the outlined cell is the paper's own setting (T = 50, s = 20, guidance 7.5, unclipped)."),
    "success_vs_guidance": (
        "Digits benchmark over the grid: success (position and colour read as the target) against the guidance "
        "scale for the single models, AMDM (position first, at the reference s of each T) and the peers, one "
        "panel per T and variant of the ecosystem, with 95% Wilson intervals."),
}


def _size(quick: bool, grid: bool) -> tuple[str, Grid]:
    if quick and grid:
        raise ValueError("--grid and --quick ask for different sizes: give one of them")
    return ("quick", QUICK_GRID) if quick else ("grid", FULL_GRID) if grid else ("subset", SUBSET)


def _score_json(arm_json: str, tgt: np.ndarray) -> dict:
    """One arm (a JSON spec, for a worker process) run and scored, its images dropped."""
    import torch

    torch.set_num_threads(1)
    out = score(run_arm(Arm.model_validate_json(arm_json), tgt), tgt)
    out.pop("images")
    return out


def _run(plan: list[Arm], tgt: np.ndarray, workers: int, progress: bool, desc: str) -> dict[str, dict]:
    """Every arm's outcomes, on ``workers`` processes (one torch thread each) when above 1."""
    from tqdm import tqdm

    if workers <= 1:
        return {a.name: _score_json(a.model_dump_json(), tgt) for a in tqdm(plan, desc=desc, disable=not progress)}
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    out = {}
    # the longest arms first (ULA, then guided T = 50), so that the pool ends together
    cost = {a.name: a.sampler.num_inference_steps * (4 if a.method == "ula" else 1) * (2 if a.guidance_scale > 1
                                                                                       else 1) for a in plan}
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_score_json, a.model_dump_json(), tgt): a.name
                   for a in sorted(plan, key=lambda a: -cost[a.name])}
        for f in tqdm(as_completed(futures), total=len(futures), desc=desc, disable=not progress):
            out[futures[f]] = f.result()
    return out


def compute(stores=None, *, quick: bool = False, seed: int = 0, runs: Path | None = None, grid: bool = False,
            progress: bool | None = None, workers: int | None = None) -> xr.DataTree:
    """Run every arm of the grid of this size (``grid``: the full grid; ``quick``: the smallest;
    else the subset ``validate`` runs) on each of its variants of the ecosystem: a DataTree, one
    node per variant (a Dataset over ``arm``: ``success``, ``detected``, ``calls``, ``seconds``,
    the arms' settings as coordinates), its attrs the grid's spec, the size and the wall time.
    ``workers`` (default: the machine's cores with ``grid``, else 1) processes run the arms;
    ``progress`` (default: with ``grid``) shows a bar per variant."""
    if stores:
        raise ValueError(f"{NAME} takes no stores; got {len(stores)}: {', '.join(map(str, stores))}")
    size, g = _size(quick, grid)
    if workers is None:
        from amdm_geom.core.budget import cores

        workers = cores() if size == "grid" else 1
    progress = size == "grid" if progress is None else progress
    tgt = targets(BATCH[size], seed)
    start, nodes = time.perf_counter(), {}
    for eco in g.ecosystems:
        plan = grid_arms(g, seed=seed, ecosystem=eco, batch=BATCH[size])
        outcomes = _run(plan, tgt, workers, progress, f"{NAME} ({eco}, {len(plan)} arms)")
        ds = paired.arm_dataset(plan, outcomes, dims={"detected": ("sample", "attribute")},
                                coords={"attribute": ["position", "colour", "digit"]},
                                settings={"group": "group", "method": "method", "models": lambda a: "+".join(a.models),
                                          "steps": "sampler.num_inference_steps", "agg_steps": "sampler.agg_steps",
                                          "eta": "sampler.eta", "guidance": "guidance_scale"})
        ds["target"] = (("sample", "attribute"), tgt)
        nodes[eco] = ds.assign_attrs(ecosystem=eco)
    seconds = time.perf_counter() - start
    attrs = {"grid": g.model_dump_json(), "size": size, "seconds": seconds, "workers": workers, "seed": seed,
             "batch": BATCH[size]}  # (on every node too: the runner writes the nodes, not the root)
    tree = xr.DataTree.from_dict({f"/{eco}": ds.assign_attrs(attrs) for eco, ds in nodes.items()})
    tree.attrs.update(attrs)
    return tree


def _grid(tree: xr.DataTree) -> Grid:
    return Grid.model_validate_json(tree.attrs["grid"])


def cells_of(tree: xr.DataTree, comparison: str) -> tuple[dict[str, stats.Paired], dict[str, dict], dict]:
    """Per cell of every variant (label ``<cell>@<variant>``) the paired comparison of AMDM's
    success with the other arm's, the cells' settings, and the arms compared."""
    g = _grid(tree)
    cells, coords, arms = {}, {}, {}
    for eco in g.ecosystems:
        ds = tree[eco].to_dataset()
        if comparison == "better single":
            pairs, cc = grid_pairs(g, "position")
            other = {c: a.replace("position@", "colour@") for c, (_, a) in pairs.items()}
            pairs = {c: (a, b if float(ds.success.sel(arm=b).mean()) >= float(ds.success.sel(arm=other[c]).mean())
                         else other[c]) for c, (a, b) in pairs.items()}
        else:
            pairs, cc = grid_pairs(g, comparison)
        for c, p in grid_.compare_cells(ds, pairs, "success").items():
            label = f"{c}@{eco}"
            cells[label], coords[label], arms[label] = p, {**cc[c], "ecosystem": eco}, pairs[c]
    return cells, coords, arms


def _reference(g: Grid) -> str:
    return f"{cell_label(g.reference_steps, g.reference_guidance, g.reference_s)}@{g.reference_ecosystem}"


def verdicts(tree: xr.DataTree) -> list[Verdict]:
    """One verdict per headline comparison the grid's arms decide (``CLAIMS``), over all its cells."""
    g, out = _grid(tree), []
    run = (f"{tree.attrs['size']} grid: {tree.attrs['batch']} samples per arm, variants "
           f"{', '.join(g.ecosystems)}")
    for comparison in (("better single",) if "singles" in g.kinds else ()) + comparisons_of(g):
        key, claim, where, kind = CLAIMS[comparison]
        cells, coords, arms = cells_of(tree, comparison)
        ref = _reference(g)
        a, b = arms[ref]
        ds = tree[g.reference_ecosystem].to_dataset()
        v = grid_.grid_verdict(
            cells, reference_cell=ref, claim=claim, where=f"{where} ({WHERE})", key=key, coords=coords, kind=kind,
            detail=f"Success on the (position, colour) target; {run}. Reference cell {ref}: {a} "
                   f"{float(ds.success.sel(arm=a).mean()):.3f} vs {b} {float(ds.success.sel(arm=b).mean()):.3f}.")
        v.extra["grid"]["arms"] = {c: list(ab) for c, ab in arms.items()}
        out.append(v)
    return out


def plot(tree: xr.DataTree) -> dict:
    """One heatmap per comparison (``grid_heatmap``: rows guidance, columns s) and success against guidance."""
    from amdm_geom.analyses.digits.figures import success_vs_guidance

    figs = {}
    for v in verdicts(tree):
        figs[f"grid_{v.key.removeprefix('digits_grid_')}"] = grid_.grid_heatmap(
            v, "guidance", "s", label="AMDM minus the other arm")
    figs["success_vs_guidance"] = success_vs_guidance(tree)
    return figs


def tables(tree: xr.DataTree) -> dict:
    """Success per arm and variant, with the detectors' per-attribute accuracy and the evaluations;
    and every comparison's per-cell interval and decision."""
    import pandas as pd

    rows = []
    for eco in _grid(tree).ecosystems:
        ds = tree[eco].to_dataset()
        acc = (ds.detected == ds.target).mean("sample")
        for i, arm in enumerate(ds.arm.values):
            rows.append({"ecosystem": eco, "arm": str(arm), "T": int(ds.steps.values[i]),
                         "guidance": float(ds.guidance.values[i]), "success": float(ds.success.values[i].mean()),
                         **{f"{a}_acc": float(acc.sel(attribute=a).values[i]) for a in ("position", "colour", "digit")},
                         "evaluations_per_sample": int(ds.calls.values[i]), "seconds": float(ds.seconds.values[i])})
    cells = [{"comparison": v.key, **{k: x for k, x in r.items() if k != "cell"}, "cell": r["cell"]}
             for v in verdicts(tree) for r in v.extra["grid"]["cells"]]
    return {"grid_success": pd.DataFrame(rows), "grid_cells": pd.DataFrame(cells)}


class DigitsGrid(Analysis):
    """The digits benchmark over a grid of settings (``compute``, ``verdicts``, ... above); ``--grid``
    runs the full grid."""

    name, family, captions, result, priority = NAME, "trained", CAPTIONS, "grid", 8
    summary = "digits benchmark over a grid (T, guidance, s, role order, clipped or not): verdicts across settings"
    full_grid = True
    compute, verdicts, plot, tables = map(staticmethod, (compute, verdicts, plot, tables))

"""Benchmark verdicts over a grid of settings: one headline comparison (AMDM against the better
single model, against a peer, one role order against the other, slerp against lerp, a stage, a
shift eta) decided in every cell of a grid (T, guidance, s, role order), each cell a paired
comparison of two arms of one paired benchmark (``amdm_geom.analyses.common.paired``: the arms
are specs as there, and ``compare_cells`` compares them with ``paired.compare``).

- ``grid_verdict``: the one ``Verdict`` of a claim over the grid (``stats.grid_decision``:
  Bonferroni simultaneous intervals across the cells, so that every per-cell decision holds
  together at ``LEVEL``): "holds" (holds everywhere), "violated" (violated everywhere),
  "setting-dependent" (true in some cells, false in others) or "inconclusive"; its value and
  interval are the named reference cell's (the paper's own setting), its detail names the cells
  that go each way, and ``extra["grid"]`` keeps the per-cell table.
- ``grid_heatmap``: that table as a figure, two grid axes as rows and columns (one panel per
  value of the other axes), the colour the per-cell mean difference minus the margin (a
  diverging, colour-blind-safe map centred on the margin), each cell annotated with its
  simultaneous interval and its decision, the reference cell outlined.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from amdm_geom.analyses.common import finite_or_none, paired
from amdm_geom.core import stats
from amdm_geom.core.verdicts import Verdict

__all__ = ["DECISION_MARKS", "compare_cells", "grid_heatmap", "grid_verdict"]

#: How the heatmap marks a cell's decision.
DECISION_MARKS = {"holds": "\u2713 holds", "violated": "\u2717 violated", "inconclusive": "? undecided"}
#: A diverging colour-blind-safe map (ColorBrewer's PuOr).
CMAP = "PuOr"
#: The heatmap's panels per row (more wrap to the next row).
PANELS_PER_ROW = 4


def compare_cells(ds: xr.Dataset, pairs: Mapping[str, tuple[str, str]], var: str) -> dict[str, stats.Paired]:
    """Per cell (label -> the arms ``(a, b)`` compared there), the paired comparison a - b of
    ``var`` (``paired.compare``, at ``LEVEL``; ``grid_verdict`` re-derives it at the grid's level)."""
    return {str(cell): paired.compare(ds, a, b, var) for cell, (a, b) in pairs.items()}


def _grid_text(coords: Mapping[str, Mapping[str, object]] | None, m: int) -> str:
    """"the 8 cells of T in {20, 50} x guidance in {1, 7.5} x order in {...}", or "the 8 cells"."""
    if not coords:
        return f"the {m} cells"
    axes = list(dict.fromkeys(a for c in coords.values() for a in c))
    parts = []
    for a in axes:
        values = _axis_values([c for c in coords.values() if a in c], a)
        parts.append(f"{a} in {{{', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in values)}}}")
    return f"the {m} cells of {' x '.join(parts)}"


def grid_verdict(cells: Mapping[str, stats.Paired], *, reference_cell: str, claim: str, where: str, key: str,
                 margin: float = 0.0, direction: str = ">", coords: Mapping[str, Mapping[str, object]] | None = None,
                 level: float = paired.LEVEL, detail: str = "", **fields) -> Verdict:
    """One verdict on the claim "a - b ``direction`` ``margin``" over the grid ``cells`` (cell
    label -> ``stats.Paired``, e.g. from ``compare_cells``), decided by ``stats.grid_decision``
    at ``level`` together. ``reference_cell``: the label of the paper's own setting (its interval
    is the verdict's, at the Bonferroni per-cell level); ``coords``: each cell's settings
    (``{axis: value}``) for the text and the heatmap. ``fields``: the rest of the ``Verdict``
    (``kind``, ``family``, ``bound``, ...)."""
    if reference_cell not in cells:
        raise ValueError(f"reference_cell {reference_cell!r} is not one of the cells; got {', '.join(cells)}")
    if coords is not None and set(coords) != set(cells):
        raise ValueError(f"coords must name exactly the cells {', '.join(cells)}; got {', '.join(coords)}")
    g = stats.grid_decision(cells, level, margin=margin, direction=direction)
    ref = g.cells[reference_cell]
    m = len(cells)
    grid = _grid_text(coords, m)
    counts = {d: len(g.where(d)) for d in ("holds", "violated", "inconclusive")}
    measured = (f"{g.outcome}: holds in {counts['holds']}, violated in {counts['violated']}, undecided in "
                f"{counts['inconclusive']} of {grid}; reference {reference_cell}: {stats.interval_text(ref)}")
    said = [f"{name} in {', '.join(g.where(d))}" for d, name in (("holds", "holds"), ("violated", "violated"))
            if g.where(d)]
    rest = g.where("inconclusive")
    if rest:  # (named where few; the table in extra has them all)
        said.append(f"undecided in {', '.join(rest)}" if len(rest) <= 8 else f"undecided in all {m} cells"
                    if len(rest) == m else f"undecided in the other {len(rest)} cells")
    table = [{"cell": c, **{a: v for a, v in (coords or {}).get(c, {}).items()}, "mean": finite_or_none(p.mean),
              "lo": finite_or_none(p.interval[0]), "hi": finite_or_none(p.interval[1]), "n": int(p.n),
              "decision": g.decisions[c]}
             for c, p in g.cells.items()]
    extra = {"grid": {"outcome": g.outcome, "cells": table, "reference_cell": reference_cell, "axes": list(
        dict.fromkeys(a for c in (coords or {}).values() for a in c)), "simultaneous_level": g.level,
        "per_cell_level": g.per_level, "margin": g.margin, "direction": g.direction}, **fields.pop("extra", {})}
    sd = max((p.sd for p in g.cells.values() if math.isfinite(p.sd)), default=math.nan)
    said = "; ".join(said)
    text = (f"{detail} " if detail else "") + (f"Over {grid}, {g.outcome}: {said}. Each cell's interval is at "
                                               f"{100 * g.per_level:.3g}%, all {m} together at {100 * g.level:.3g}%.")
    return paired.paired_verdict(ref, g.status, m, sd, key=key, claim=claim, where=where, measured=measured,
                                 bound=fields.pop("bound", f"a - b {direction} {margin:g} in every cell"),
                                 reference=float(margin), test=g.test, extra=extra, detail=text, **fields)


def _axis_values(table: Sequence[Mapping], axis: str) -> list:
    values = list(dict.fromkeys(r[axis] for r in table))
    return sorted(values) if all(isinstance(v, (int, float)) for v in values) else values


def _panel(ax, rows_: list[dict], rows: str, cols: str, ys: list, xs: list, norm, cmap, margin: float, ref: str):
    """One panel: the cells of ``rows_`` at (row value, column value), annotated, the reference outlined."""
    from matplotlib.patches import Rectangle

    image = np.full((len(ys), len(xs)), np.nan)
    for r in rows_:
        i, j = ys.index(r[rows]), xs.index(r[cols])
        image[i, j] = np.nan if r["mean"] is None else r["mean"] - margin
        colour = cmap(norm(image[i, j])) if np.isfinite(image[i, j]) else (1, 1, 1, 1)
        dark = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] < 0.5
        interval = "no interval" if r["lo"] is None else f"{r['mean']:+.3f}\n[{r['lo']:+.3f}, {r['hi']:+.3f}]"
        ax.text(j, i, f"{interval}\n{DECISION_MARKS[r['decision']]}", ha="center", va="center", fontsize=7,
                color="white" if dark else "black")
        if r["cell"] == ref:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=3))
    ax.set_facecolor("#eeeeee")  # (cells the grid does not have)
    im = ax.imshow(np.ma.masked_invalid(image), cmap=cmap, norm=norm, aspect="auto")
    ax.set_xticks(range(len(xs)), [f"{cols} = {x:g}" if isinstance(x, float) else f"{cols} = {x}" for x in xs],
                  fontsize=7)
    ax.set_yticks(range(len(ys)), [f"{rows} = {y:g}" if isinstance(y, float) else f"{rows} = {y}" for y in ys],
                  fontsize=7)
    return im


def grid_heatmap(verdict: Verdict, rows: str, cols: str, *, label: str = "mean difference a - b"):
    """The per-cell table of a ``grid_verdict`` (which must have been given ``coords``) as a
    heatmap: axis ``rows`` down, axis ``cols`` across (the values each panel has), one panel per
    combination of the other axes; colour: mean difference minus the margin (``CMAP``, centred on
    0); text: the mean, the simultaneous interval and the decision (``DECISION_MARKS``); the
    reference cell outlined."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    grid = verdict.extra.get("grid")
    if not grid or rows not in grid["axes"] or cols not in grid["axes"] or rows == cols:
        raise ValueError(f"rows and cols must be two axes of the verdict's grid; got {rows!r}, {cols!r} "
                         f"(axes: {', '.join(grid['axes']) if grid else 'none: no grid table'})")
    table, margin = grid["cells"], grid["margin"]
    others = [a for a in grid["axes"] if a not in (rows, cols)]
    panels = list(dict.fromkeys(tuple(r[a] for a in others) for r in table))
    ny, nx = (max(len(_axis_values([r for r in table if tuple(r[a] for a in others) == k], ax)) for k in panels)
              for ax in (rows, cols))
    span = max((abs(r["mean"] - margin) for r in table if r["mean"] is not None), default=0.0) or 1e-12
    norm, cmap = TwoSlopeNorm(0.0, -span, span), plt.get_cmap(CMAP)
    ncol = min(len(panels), PANELS_PER_ROW)
    nrow = -(-len(panels) // ncol)
    panel_w = max(2.6, 1.5 * nx)  # (room for a panel's title however few its columns)
    width = 1.6 + panel_w * ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(width, 0.6 + nrow * (1.0 + 0.75 * ny)), squeeze=False,
                             layout="constrained")
    for ax, key in zip(axes.flat, panels):
        members = [r for r in table if tuple(r[a] for a in others) == key]
        ys, xs = _axis_values(members, rows), _axis_values(members, cols)  # (the values this panel has)
        im = _panel(ax, members, rows, cols, ys, xs, norm, cmap, margin, grid["reference_cell"])
        title = ", ".join(f"{a} = {v}" for a, v in zip(others, key)) or "all cells"
        ax.set_title(textwrap.fill(title, max(20, int(13 * panel_w))), fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.colorbar(im, ax=list(axes.flat), label=f"{label} - {margin:g}" if margin else label, shrink=0.9)
    said = (f"{verdict.claim}: {grid['outcome']} ({100 * grid['per_cell_level']:.3g}% intervals per cell, "
            f"{100 * grid['simultaneous_level']:.3g}% together; outlined: the reference cell {grid['reference_cell']})")
    fig.suptitle(textwrap.fill(said, int(12 * width)), fontsize=8)
    return fig

"""The digits ecosystem under classifier-free guidance: each conditional model alone reads its own
attribute back (``amdm_geom.models.digits.detectors``) over a range of guidance scales, in the
ecosystem's two variants (``zoo.load``'s ``clip_sample``): the step's predicted x0 clipped to
[-1, 1], as the models were trained and shipped, or unclipped, as SD's schedulers leave it.

The paper's models run at guidance 5-7.5; a benchmark verdict on models that cannot take guidance
is about models unlike the paper's. Why the shipped ecosystem breaks above guidance 1 is measured
here, on the same weights: the guided v makes the predicted x0 = sqrt(abar) z - sqrt(1 - abar) v
overshoot [-1, 1], the clip saturates it (most digits turn yellow: red and green at their
maximum), and the attribute is lost; with x0 unclipped the same networks keep it.

Per variant, one verdict (a finding about this toolkit's setup, not a claim of the paper): every
conditional model reads its attribute back at least ``THRESHOLD`` (0.95; the digit class 0.85)
at every guidance scale. Per cell an exact Clopper-Pearson interval: the verdict holds when every
cell's 95% lower bound reaches its threshold (an intersection-union test, valid at 95% without
adjustment), is violated when some cell's upper bound at the Bonferroni level 1 - 0.05 / m (m
cells) lies below it, and is inconclusive otherwise.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import xarray as xr

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.common import paired
from amdm_geom.analyses.digits.runs import Arm, run_arm, targets
from amdm_geom.core import palette, stats
from amdm_geom.core.spec import integer, real, sequence
from amdm_geom.core.verdicts import Verdict
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["CAPTIONS", "FULL", "GRID", "NAME", "QUICK", "THRESHOLD", "CurveScale", "GuidanceCurve", "compute", "plot",
           "verdicts"]

NAME = "guidance_curve"
#: The read-back each conditional model must reach at every guidance scale.
THRESHOLD = {"position": 0.95, "colour": 0.95, "digit": 0.85}
_ATTRIBUTE = {"position": 0, "colour": 1, "digit": 2}
LEVEL = 0.95
CAPTIONS = {
    "guidance_curve": (
        "Each conditional digits model alone (T = 50 DDIM steps at full scale), its own attribute read back by "
        "the detectors, against the classifier-free guidance scale: solid with the step's x0 unclipped, dashed "
        "with x0 clipped to [-1, 1] as the models were trained; bars are exact 95% intervals, the dotted lines the "
        "thresholds (0.95; the digit class 0.85)."),
}


class CurveScale(paired.Scale):
    """The guidance curve's sizes (full or quick)."""

    models: tuple[str, ...]
    """the conditional models measured."""
    guidance: Annotated[tuple[float, ...], sequence(real(1.0), accepted="guidance scales >= 1")]
    """the guidance scales."""
    steps: Annotated[int, integer(2)]
    """T (DDIM steps)."""
    batch: Annotated[int, integer(2)]
    """samples per cell (the benchmark's targets, the same seeds in every cell)."""


# (validate's: the paper's guidance only, 80 samples, the fewest at which 80/80 clears 0.95 by its exact interval;
# guidance 1 and the range between are the --grid run's)
FULL = CurveScale(models=("position", "colour", "digit"), guidance=(7.5,), steps=50, batch=80)
QUICK = CurveScale(models=("position", "colour"), guidance=(1.0, 7.5), steps=10, batch=16)
#: ``amdm-geom analyze guidance_curve --grid``: the whole range at more samples (about 12 min on 2 cores).
GRID = CurveScale(models=("position", "colour", "digit"), guidance=(1.0, 1.5, 2.0, 3.0, 5.0, 7.5), steps=50, batch=192)
VARIANTS = (True, False)  # clip_sample: as trained, then unclipped


def compute(stores=None, *, quick: bool = False, seed: int = 0, runs=None, grid: bool = False) -> xr.Dataset:
    """Read-back per (clip, model, guidance): ``hits`` and ``n``, with the run's wall time;
    ``grid``: the whole range (``GRID``), else ``FULL`` or ``QUICK``."""
    if stores:
        raise ValueError(f"{NAME} runs its own models and takes no stores; got {', '.join(map(str, stores))}")
    if quick and grid:
        raise ValueError("--grid and --quick ask for different sizes: give one of them")
    sc = GRID if grid else paired.at_scale(quick, FULL, QUICK)
    tgt = targets(sc.batch, seed)
    shape = (len(VARIANTS), len(sc.models), len(sc.guidance))
    hits, seconds = np.zeros(shape, dtype=np.int64), np.zeros(shape)
    for i, clip in enumerate(VARIANTS):
        for j, model in enumerate(sc.models):
            for k, g in enumerate(sc.guidance):
                arm = Arm(name=f"{model}@g{g:g}{'' if clip else '_unclipped'}", group="singles", models=(model,),
                          sampler=SamplerConfig(num_inference_steps=sc.steps, weights=()), guidance_scale=g,
                          clip_sample=clip, batch=sc.batch, seed=seed)
                out = run_arm(arm, tgt)
                a = _ATTRIBUTE[model]
                hits[i, j, k] = int((out["detected"][:, a] == tgt[:, a]).sum())
                seconds[i, j, k] = out["seconds"]
    dims = ("curve_clip", "curve_model", "curve_guidance")
    return xr.Dataset({"hits": (dims, hits), "seconds": (dims, seconds)},
                      coords={"curve_clip": list(VARIANTS), "curve_model": list(sc.models),
                              "curve_guidance": list(sc.guidance),
                              "threshold": ("curve_model", [THRESHOLD[m] for m in sc.models])},
                      attrs={"n": sc.batch, "steps": sc.steps, "seed": seed})


def _interval(hits, n: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) two-sided intervals for ``hits`` of ``n``, elementwise
    (``core.stats.proportion_interval``)."""
    hits = np.asarray(hits)
    ends = np.array([stats.proportion_interval(int(k), n, level) for k in hits.ravel()]).reshape(*hits.shape, 2)
    return ends[..., 0], ends[..., 1]


def _verdict(part: xr.Dataset, clip: bool) -> Verdict:
    n = int(part.attrs["n"])
    m = int(part.hits.size)
    share = part.hits / n
    low, _ = _interval(part.hits.values, n, LEVEL)
    _, high_b = _interval(part.hits.values, n, 1 - (1 - LEVEL) / m)
    thr = part.threshold.broadcast_like(share).values
    below = high_b < thr
    status = "violated" if below.any() else "holds" if (low >= thr).all() else "inconclusive"
    cells = [f"{mo} g={g:g} {int(h)}/{n}" for mo in part.curve_model.values for g, h in
             zip(part.curve_guidance.values, part.hits.sel(curve_model=mo).values)]
    worst = np.unravel_index(int(np.argmin(share.values)), share.shape)  # (the cell of the lowest share)
    wm, wg = str(part.curve_model.values[worst[0]]), float(part.curve_guidance.values[worst[1]])
    variant = "x0 clipped to [-1, 1] (as trained)" if clip else "x0 unclipped (as SD's schedulers)"
    return Verdict(
        key=f"digits_guidance_readback_{'clipped' if clip else 'unclipped'}", kind="finding", family="trained",
        claim=f"each model reads its attribute back at every guidance run, {'clipped' if clip else 'unclipped'}",
        where="digits ecosystem (trained), guidance " + ", ".join(f"{g:g}" for g in part.curve_guidance.values),
        status=status, n=n * m,
        measured=f"lowest {float(share.min()):.3f} ({wm}, g = {wg:g})", bound=">= 0.95 (digit >= 0.85)",
        value=float(share.min()), reference=float(part.threshold.min()),
        test=("per cell an exact 95% interval; holds if every lower bound reaches its threshold (intersection-union), "
              f"violated if some upper bound at 1 - 0.05/{m} lies below it"),
        detail=(f"Each conditional model alone, {variant}, T = {part.attrs['steps']} DDIM steps, {n} samples per cell "
                f"(the benchmark's targets, the same seeds in every cell): " + "; ".join(cells) + "."
                + (f" Below the threshold beyond doubt in {int(below.sum())} of {m} cells." if below.any() else "")),
        extra={"cells_below": int(below.sum()), "cells": m})


def verdicts(ds: xr.Dataset) -> list[Verdict]:
    """One finding per variant (clipped as trained, unclipped)."""
    return [_verdict(ds.sel(curve_clip=clip).assign_attrs(ds.attrs), bool(clip)) for clip in ds.curve_clip.values]


def plot(ds: xr.Dataset) -> dict:
    """``{"guidance_curve": figure}``: read-back against guidance, per model and variant."""
    import matplotlib.pyplot as plt

    n = int(ds.attrs["n"])
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    roles = {"position": "model 1", "colour": "model 2", "digit": "model 3"}
    for model in ds.curve_model.values:
        colour = palette.colour(roles.get(str(model), "reference"))
        for clip in ds.curve_clip.values:
            hits = ds.hits.sel(curve_model=model, curve_clip=clip).values
            low, high = _interval(hits, n, LEVEL)
            share = hits / n
            ax.errorbar(ds.curve_guidance.values, share, yerr=[share - low, high - share], color=colour,
                        ls="--" if clip else "-", marker="o", ms=4, capsize=3,
                        label=f"{model}, {'clipped' if clip else 'unclipped'}")
        ax.axhline(THRESHOLD[str(model)], color=colour, ls=":", lw=0.8)
    ax.set_xlabel("guidance scale")
    ax.set_ylabel("own attribute read back")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Digits models under guidance (T = {ds.attrs['steps']}, n = {n} per point)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return {"guidance_curve": fig}


class GuidanceCurve(Analysis):
    """The digits models' read-back against guidance, clipped and unclipped (``compute``,
    ``verdicts``, ``plot`` above); long, so it starts early."""

    name, family, captions, priority = NAME, "trained", CAPTIONS, 8
    full_grid = True
    summary = "trained digits ecosystem under guidance: each model's own attribute read back, x0 clipped or not"
    compute, verdicts, plot = map(staticmethod, (compute, verdicts, plot))

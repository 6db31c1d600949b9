"""Where a per-cell check fails, said the same way by every analysis: the steps (and their
timesteps t) of the (step, sample) cells a boolean mask marks."""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["steps_where"]


def steps_where(mask: xr.DataArray, shown: int = 4) -> str:
    """The steps where a boolean ``(step, sample, ...)`` mask is true anywhere, compactly:
    ``"steps 3 (t=981), 7 (t=901) and 5 more"`` (the first ``shown``, each with its ``t`` where
    the mask has that coordinate), ``"nowhere"`` where it is true nowhere."""
    other = [d for d in mask.dims if d != "step"]
    hit = np.asarray(mask.any(other) if other else mask, dtype=bool)
    steps = mask.step.values[hit]
    if len(steps) == 0:
        return "nowhere"
    ts = mask.t.values[hit] if "t" in mask.coords else [None] * len(steps)
    # (t to 6 significant digits: an integer timestep as itself, a flow's float32 t = 1000 s without its noise digits)
    said = ", ".join(f"{int(s)}" + ("" if t is None else f" (t={float(t):.6g})")
                     for s, t in zip(steps[:shown], ts[:shown]))
    return f"steps {said}" + (f" and {len(steps) - shown} more" if len(steps) > shown else "")

"""Independent recomputations of the mechanism analysis' verdict values, for tests/test_validate.py (``PREFIXES``:
``(run, key) -> float | None``), from what the run wrote to ``<report>/mechanism/results.zarr``: per cell the
success, the commitment states (an explicit walk back along each stored reading path), decided-in-window and kept
by direct loops, the slope by ``numpy.polyfit`` and the Clopper-Pearson upper bound from the beta quantile (the
analysis uses its own least-squares sums and scipy's ``binomtest``)."""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy import stats

__all__ = ["PREFIXES", "RECOMPUTE", "cell_numbers", "mechanism_row"]

ATTR = {"position": 0, "colour": 1}


def _results(run) -> xr.Dataset:
    return xr.open_zarr(run.report / "mechanism" / "results.zarr", consolidated=False).load()


def _commit(column) -> int:
    """The first state of the final run of readings equal to the last one."""
    k = len(column) - 1
    while k > 0 and column[k - 1] == column[-1]:
        k -= 1
    return k


def cell_numbers(res: xr.Dataset, i: int) -> dict:
    """One cell's gain, decided_in_window (share and its exact 95% upper bound) and predictor, by loops."""
    T, s = int(res.steps.values[i]), int(res.agg_steps.values[i])
    a = ATTR[str(res.partner.values[i])]
    tgt = res.target.values
    amdm, single, partner = (res[v].values[i, : T + 1] for v in ("amdm_reading", "single_reading", "partner_reading"))
    n = tgt.shape[0]
    wins_a = [amdm[-1, b, 0] == tgt[b, 0] and amdm[-1, b, 1] == tgt[b, 1] for b in range(n)]
    wins_1 = [single[-1, b, 0] == tgt[b, 0] and single[-1, b, 1] == tgt[b, 1] for b in range(n)]
    gain = (sum(wins_a) - sum(wins_1)) / n
    decided = sum(_commit(partner[:, b, a]) <= s and partner[-1, b, a] == tgt[b, a] for b in range(n))
    at_close = [b for b in range(n) if amdm[s, b, a] == tgt[b, a]]
    kept = sum(amdm[-1, b, a] == tgt[b, a] for b in at_close)
    upper = 1.0 if decided == n else float(stats.beta.ppf(0.975, decided + 1, n - decided))
    predictor = decided / n * kept / len(at_close) if at_close else float("nan")
    return {"gain": gain, "decided": decided / n, "decided_hi": upper, "predictor": predictor}


def mechanism_row(run, key):
    """``mechanism_slope``: the least-squares slope of gain on predictor; ``mechanism_gain_needs_window``: the
    largest gain among the cells whose decided-in-window upper bound is below 1/2 (None: no such cell)."""
    res = _results(run)
    cells = [cell_numbers(res, i) for i in range(res.sizes["cell"])]
    if key == "mechanism_slope":
        pts = [(c["predictor"], c["gain"]) for c in cells if np.isfinite(c["predictor"])]
        if len(pts) < 2 or len({p for p, _ in pts}) < 2:
            return None
        x, y = np.array(pts).T
        return float(np.polyfit(x, y, 1)[0])
    if key == "mechanism_gain_needs_window":
        gains = [c["gain"] for c in cells if c["decided_hi"] < 0.5]
        return max(gains) if gains else None
    return None


RECOMPUTE: dict = {}
PREFIXES = {"mechanism_": mechanism_row}

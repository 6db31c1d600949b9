"""The mechanism of AMDM's success or failure on the trained digits models (issue 25, item 4): measurements and
the fit across cells.

Algorithm 1 aggregates models 1 and 2 for the first s of T steps (the window, states 0 .. s - 1 stepped by both,
eq. 6) and model 1 alone steps the rest. The partner's (model 2's) attribute can reach AMDM's result only if

1. it is decided inside the window: ``decided_in_window``, per sample, the partner model ALONE (same T, guidance
   and ecosystem variant) has committed to its own attribute by state s (``trained.commitment_states`` of its x0
   readings: the first state from which the reading equals the final one for good) and the final value is the
   target;
2. model 1 does not overwrite it afterwards: ``kept``, under AMDM, among the samples whose partner attribute is read
   as the target on model 1's x0 at state s (the first state after the window, the one model 1 alone steps from;
   ``read_at_close``), the share whose finished image still reads the target; ``flip = 1 - kept``.

The predictor of AMDM's gain is ``decided_in_window * kept``; the gain is AMDM's success (detectors read the target
position AND colour on the finished image) minus model 1 alone's, paired by sample (``core.stats.paired_interval``).
Across cells (T, s, guidance, variant, role order) the gain is fitted to the predictor by ordinary least squares,
unweighted (each cell's point estimates, one point per cell), with the slope's t interval on n_cells - 2 degrees of
freedom from the fit's residuals. The cells share seeds and targets, so their errors are not independent: the
interval treats them as if they were, which is the usual regression reading and is said in the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from amdm_geom.analyses.commitment import trained
from amdm_geom.core import stats

__all__ = ["LEVEL", "Fit", "cell_measures", "decided_in_window", "fit_line", "gain_needs_window", "kept_counts",
           "product_interval", "slope_status", "success"]

LEVEL = stats.LEVEL


def success(final: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(B,)`` bool: the detectors read the target position AND colour (attributes 0 and 1 of ``final (B, 3)``
    against ``target (B, 3)``) on the finished image."""
    final, target = np.asarray(final), np.asarray(target)
    if final.ndim != 2 or final.shape != target.shape or final.shape[1] < 2:
        raise ValueError(f"final and target must both be (samples, attributes >= 2); got {final.shape} and "
                         f"{target.shape}")
    return (final[:, :2] == target[:, :2]).all(1)


def _check_s(s: int, states: int) -> int:
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= int(s) < states:
        raise ValueError(f"s must be an int state in [0, {states - 1}]; got {s!r}")
    return int(s)


def decided_in_window(readings: np.ndarray, target: np.ndarray, s: int) -> np.ndarray:
    """``(B,)`` bool: per sample of the partner model alone, its attribute's path of readings ``(S, B)`` (state
    0 .. T, the last the finished image) commits (``trained.commitment_states``) at or before state ``s`` and its
    final reading equals ``target (B,)``."""
    r = np.asarray(readings)
    if r.ndim != 2 or np.shape(target) != (r.shape[1],):
        raise ValueError(f"readings must be (states, samples) and target (samples,); got {r.shape} and "
                         f"{np.shape(target)}")
    s = _check_s(s, r.shape[0])
    commit = trained.commitment_states(r[:, :, None])[:, 0]
    return (commit <= s) & (r[-1] == np.asarray(target))


def kept_counts(readings: np.ndarray, target: np.ndarray, s: int) -> tuple[int, int, int]:
    """``(read_at_close, kept, n)`` from the partner attribute's readings ``(S, B)`` on model 1's x0 under AMDM:
    how many samples read ``target (B,)`` at state ``s``, how many of those still read it on the finished image
    (the last state), and the number of samples."""
    r = np.asarray(readings)
    if r.ndim != 2 or np.shape(target) != (r.shape[1],):
        raise ValueError(f"readings must be (states, samples) and target (samples,); got {r.shape} and "
                         f"{np.shape(target)}")
    s = _check_s(s, r.shape[0])
    at_close = r[s] == np.asarray(target)
    return int(at_close.sum()), int((at_close & (r[-1] == np.asarray(target))).sum()), int(r.shape[1])


def product_interval(k1: int, n1: int, k2: int, n2: int, level: float = LEVEL) -> tuple[float, float]:
    """An interval for p1 * p2 of two proportions at ``level`` (at least): each factor's exact interval at
    1 - (1 - level) / 2 (Bonferroni: both cover together with probability >= level), and the product of the lower
    ends and of the upper ends (p1 p2 increases in each factor on [0, 1]). NaN where a count's n is 0."""
    if n1 < 1 or n2 < 1:
        return math.nan, math.nan
    each = 1.0 - (1.0 - level) / 2.0
    lo1, hi1 = stats.proportion_interval(k1, n1, each)
    lo2, hi2 = stats.proportion_interval(k2, n2, each)
    return lo1 * lo2, hi1 * hi2


def cell_measures(*, amdm: np.ndarray, single: np.ndarray, partner: np.ndarray, target: np.ndarray, s: int,
                  partner_attribute: int, level: float = LEVEL) -> dict:
    """Every measure of one cell from the detector readings ``(S, B, 3)`` of AMDM (model 1's x0), model 1 alone
    and the partner alone (each with its state T the finished image), ``target (B, 3)``, the window ``s`` and the
    partner's attribute index: the gain (paired, ``stats.paired_interval``), each proportion with its exact
    interval, and the predictor with ``product_interval``; ``carried`` = read_at_close x kept, the share of samples
    whose partner attribute reads the target both when the window closes and at the end (an alternative predictor,
    reported beside the brief's). NaN where a share has no samples to rest on."""
    a = partner_attribute
    win_a, win_1 = success(amdm[-1], target), success(single[-1], target)
    g = stats.paired_interval(win_a.astype(float), win_1.astype(float), level, value_range=(0.0, 1.0), atol=1e-9)
    n = int(target.shape[0])
    decided = int(decided_in_window(partner[:, :, a], target[:, a], s).sum())
    at_close, kept, _ = kept_counts(amdm[:, :, a], target[:, a], s)
    out = {"n": n, "gain": g.mean, "gain_lo": g.interval[0], "gain_hi": g.interval[1], "gain_sd": g.sd,
           "success_amdm": float(win_a.mean()), "success_single": float(win_1.mean()),
           "decided_hits": decided, "read_at_close_hits": at_close, "kept_hits": kept}
    for name, k, m in (("success_amdm", int(win_a.sum()), n), ("success_single", int(win_1.sum()), n),
                       ("decided_in_window", decided, n), ("read_at_close", at_close, n), ("kept", kept, at_close),
                       ("carried", kept, n)):
        lo, hi = stats.proportion_interval(k, m, level) if m else (math.nan, math.nan)
        out.update({name: k / m if m else math.nan, f"{name}_lo": lo, f"{name}_hi": hi})
    out["flip"] = 1.0 - out["kept"]
    out["predictor"] = out["decided_in_window"] * out["kept"]
    out["predictor_lo"], out["predictor_hi"] = product_interval(decided, n, kept, at_close, level)
    return out


# --------------------------------------------------------------------------------------------
# the fit across cells and the verdict rules


@dataclass(frozen=True)
class Fit:
    """The least-squares line y = intercept + slope x over the cells (unweighted), the slope's standard error,
    its t interval at ``level`` on ``dof`` = n - 2 degrees of freedom, and the correlation ``r``."""

    intercept: float
    slope: float
    stderr: float
    dof: int
    interval: tuple[float, float]
    level: float
    r: float
    n: int


def fit_line(x, y, level: float = LEVEL) -> Fit:
    """Ordinary least squares of ``y`` on ``x`` over their finite pairs: slope b = S_xy / S_xx, intercept
    ybar - b xbar, stderr sqrt(RSS / (n - 2) / S_xx), interval b -+ t_{(1 + level) / 2, n - 2} stderr. Fewer than 3
    pairs or no spread in x: the estimates that exist, the rest NaN."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have one length; got {x.size} and {y.size}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1); got {level!r}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n, nan = int(x.size), math.nan
    sxx = float(((x - x.mean()) ** 2).sum()) if n else 0.0
    if n < 2 or sxx <= 0.0:
        return Fit(nan, nan, nan, max(n - 2, 0), (nan, nan), level, nan, n)
    b = float(((x - x.mean()) * (y - y.mean())).sum() / sxx)
    a = float(y.mean() - b * x.mean())
    syy = float(((y - y.mean()) ** 2).sum())
    r = b * math.sqrt(sxx / syy) if syy > 0 else nan
    if n < 3:
        return Fit(a, b, nan, 0, (nan, nan), level, r, n)
    rss = float(((y - a - b * x) ** 2).sum())
    se = math.sqrt(rss / (n - 2) / sxx)
    half = float(sps.t.ppf(0.5 + level / 2.0, n - 2)) * se
    return Fit(a, b, se, n - 2, (b - half, b + half), level, r, n)


def slope_status(fit: Fit) -> str:
    """"holds" where the slope's interval lies above 0, "violated" where below, else (or NaN) "inconclusive"."""
    lo, hi = fit.interval
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    return "holds" if lo > 0 else "violated" if hi < 0 else "inconclusive"


def gain_needs_window(cells: list[dict], *, margin: float = stats.DELTA, level: float = LEVEL) -> tuple[str, list]:
    """The rule of "AMDM gains nothing where the partner's attribute is not decided in the window" over the cells
    (each ``cell_measures``' dict with its ``gain_sd``): the cells that applies to are those whose
    ``decided_in_window`` upper bound is below 1/2. "violated" where some such cell shows a gain beyond doubt (its
    paired interval at the Bonferroni level 1 - (1 - level) / m, m such cells, lies above 0); "holds" where every
    such cell's gain is bounded by ``margin`` (its 95% upper bound < margin: an intersection-union test, valid at
    ``level`` without adjustment); "vacuous" where no cell applies; else "inconclusive". Returns the status and
    the indices of the cells it applies to."""
    idx = [i for i, c in enumerate(cells) if c["decided_in_window_hi"] < 0.5]  # (NaN compares False)
    if not idx:
        return "vacuous", idx
    m = len(idx)
    strict = [stats.at_level(_paired(cells[i], level), 1.0 - (1.0 - level) / m) for i in idx]
    if any(math.isfinite(p.interval[0]) and p.interval[0] > 0 for p in strict):
        return "violated", idx
    if all(math.isfinite(cells[i]["gain_hi"]) and cells[i]["gain_hi"] < margin for i in idx):
        return "holds", idx
    return "inconclusive", idx


def _paired(c: dict, level: float) -> stats.Paired:
    """A cell's gain as ``stats.Paired`` (its mean, interval at ``level``, sd and n)."""
    return stats.Paired(c["gain"], (c["gain_lo"], c["gain_hi"]), c["gain_sd"], c["n"], level,
                        f"paired t interval, {100 * level:.3g}%")

"""Lemma A.1's proof, eqs. (10)-(13), before the step to the norm (eqs. 14-15, checked in
``amdm_geom.analyses.prop32.shell`` and ``amdm_geom.core.bounds.shell_probability_lower_bound``).
With ``Y ~ chi2_n`` the proof states:

- eq. (10): ``P(Y >= (1 + delta) n) <= exp(-(n/2) (delta - ln(1 + delta)))`` (delta >= 0);
- eq. (11): ``P(Y <= (1 - delta) n) <= exp(-(n/2) (-delta - ln(1 - delta)))`` (delta in [0, 1));
- the two elementary inequalities it uses, ``ln(1 + delta) <= (2 + delta) delta / (2 (1 + delta))``
  for delta >= 0 and ``ln(1 - delta) <= -delta - delta^2 / 2`` on [0, 1);
- eq. (12): (10) <= ``exp(-n delta^2 / (4 (1 + delta)))``;
- eq. (13): (11) <= ``exp(-n delta^2 / 4)`` <= ``exp(-n delta^2 / (4 (1 + delta)))``.

``dataset`` measures every side in float64 (the tails in natural log, from scipy's exact chi-square
law, ``scipy.stats.chi2``); ``verdicts`` decides one verdict per printed statement. An exact tail
below float64's smallest normal number (``logsf`` would underflow) is left out as NaN and counted.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
from scipy import stats

from amdm_geom.core.verdicts import Verdict, at_most, status_of

__all__ = ["D_LOWER", "D_UPPER", "INEQ_D_LOWER", "INEQ_D_UPPER", "N", "dataset", "verdicts"]

FAMILY = "lemma-a1"
#: the dimension, 2 .. 16384 (SD's 4x64x64 latent)
N = 2 ** np.arange(1, 15)
#: delta for the upper tail (eqs. 10, 12): (0, 4]; for the lower tail (eqs. 11, 13): (0, 1)
D_UPPER = np.geomspace(0.01, 4.0, 49)
D_LOWER = np.geomspace(0.01, 0.99, 49)
#: the elementary inequalities on finer grids: delta in (0, 1e6] and (0, 1)
INEQ_D_UPPER = np.geomspace(1e-6, 1e6, 1201)
INEQ_D_LOWER = np.concatenate([np.geomspace(1e-6, 0.5, 600, endpoint=False), 1.0 - np.geomspace(0.5, 1e-12, 600)])
_LOG_TINY = math.log(np.finfo(np.float64).tiny)  # below it scipy's log-tail is a subnormal's log (or -inf)


def _resolved(log_p: np.ndarray) -> np.ndarray:
    """``log_p`` with the cells float64 does not resolve (below the smallest normal number) set to NaN."""
    return np.where(np.isfinite(log_p) & (log_p >= _LOG_TINY), log_p, np.nan)


def dataset() -> xr.Dataset:
    """Both sides of each statement, over ``chernoff_n`` x ``chernoff_d_upper`` (eqs. 10, 12),
    ``chernoff_n`` x ``chernoff_d_lower`` (eqs. 11, 13), and the elementary inequalities over
    ``chernoff_ineq_upper`` and ``chernoff_ineq_lower``. Tails and bounds are natural logs."""
    n, du = np.meshgrid(N.astype(np.float64), D_UPPER, indexing="ij")
    _, dl = np.meshgrid(N.astype(np.float64), D_LOWER, indexing="ij")
    up, lo = INEQ_D_UPPER, INEQ_D_LOWER
    dims_u, dims_l = ("chernoff_n", "chernoff_d_upper"), ("chernoff_n", "chernoff_d_lower")
    return xr.Dataset(
        {
            # the elementary inequalities (log1p: accurate at small delta)
            "chernoff_ln_upper_lhs": ("chernoff_ineq_upper", np.log1p(up)),
            "chernoff_ln_upper_rhs": ("chernoff_ineq_upper", (2.0 + up) * up / (2.0 * (1.0 + up))),
            "chernoff_ln_lower_lhs": ("chernoff_ineq_lower", np.log1p(-lo)),
            "chernoff_ln_lower_rhs": ("chernoff_ineq_lower", -lo - lo**2 / 2.0),
            # upper tail: exact, eq. (10), eq. (12)
            "chernoff_log_sf": (dims_u, _resolved(stats.chi2.logsf((1.0 + du) * n, n))),
            "chernoff_log_eq10": (dims_u, -n / 2.0 * (du - np.log1p(du))),
            "chernoff_log_eq12": (dims_u, -n * du**2 / (4.0 * (1.0 + du))),
            # lower tail: exact, eq. (11), eq. (13)'s middle and last member
            "chernoff_log_cdf": (dims_l, _resolved(stats.chi2.logcdf((1.0 - dl) * n, n))),
            "chernoff_log_eq11": (dims_l, -n / 2.0 * (-dl - np.log1p(-dl))),
            "chernoff_log_eq13_mid": (dims_l, -n * dl**2 / 4.0),
            "chernoff_log_eq13": (dims_l, -n * dl**2 / (4.0 * (1.0 + dl))),
        },
        coords={"chernoff_n": N, "chernoff_d_upper": D_UPPER, "chernoff_d_lower": D_LOWER,
                "chernoff_ineq_upper": INEQ_D_UPPER, "chernoff_ineq_lower": INEQ_D_LOWER},
    )


def _worst(lhs: xr.DataArray, rhs: xr.DataArray) -> tuple[float, bool, int, dict]:
    """``max(lhs - rhs)`` over the cells where both are finite, whether any such cell breaks
    ``lhs <= rhs`` beyond rounding, how many cells were compared, and where the max is."""
    diff = (lhs - rhs).where(np.isfinite(lhs) & np.isfinite(rhs))
    ok = np.isfinite(diff.values)
    if not ok.any():
        return math.nan, False, 0, {}
    bad = bool((~np.asarray(at_most(lhs.values, rhs.values)) & ok).any())
    idx = diff.argmax(dim=list(diff.dims))
    at = {d: float(diff[d].values[int(i)]) for d, i in idx.items()}
    return float(diff.max()), bad, int(ok.sum()), at


def _where(at: dict) -> str:
    return ", ".join(f"{'n' if k == 'chernoff_n' else 'd'}={v:g}" for k, v in at.items())


#: how the details name each member of a chain
_LABELS = {"chernoff_log_sf": "the exact tail", "chernoff_log_cdf": "the exact tail", "chernoff_log_eq10": "(10)",
           "chernoff_log_eq11": "(11)", "chernoff_log_eq12": "(12)", "chernoff_log_eq13_mid": "e^{-nd^2/4}",
           "chernoff_log_eq13": "e^{-nd^2/(4(1+d))}"}


def _inequality_verdicts(ds: xr.Dataset) -> list[Verdict]:
    """The two elementary inequalities of the proof, on their float64 grids (eqs. 12 and 13 rest on them)."""
    out = []
    for key, lhs, rhs, claim, dom, lead, eq in (
            ("lemma_a1_ln_upper", "chernoff_ln_upper_lhs", "chernoff_ln_upper_rhs",
             "ln(1+d) <= (2+d)d/(2(1+d)), d >= 0", "chernoff_ineq_upper", "-d^3/6", "(12)"),
            ("lemma_a1_ln_lower", "chernoff_ln_lower_lhs", "chernoff_ln_lower_rhs",
             "ln(1-d) <= -d - d^2/2 on [0, 1)", "chernoff_ineq_lower", "-d^3/3", "(13)")):
        worst, bad, n, at = _worst(ds[lhs], ds[rhs])
        grid = ds[dom].values
        out.append(Verdict(
            key=key, claim=claim, where=f"Lemma A.1 proof, for eq. {eq}", family=FAMILY, n=n,
            status=status_of(bad, n > 0, otherwise="inconclusive"), measured=f"max lhs - rhs {worst:.2g}",
            bound="<= 0 (up to float64 rounding)", value=worst, reference=0.0, test="lhs <= rhs + 8 ulp in every cell",
            detail=(f"On {n} values of d from {grid.min():g} to {grid.max():.12g} (float64, log1p); the gap closes as "
                    f"{lead} near d = 0, and the largest lhs - rhs, {worst:.2g}, is at {_where(at)}.")))
    return out


def _tail_verdict(ds, key, claim, where, exact, bound, event) -> Verdict:
    worst, bad, n, at = _worst(ds[exact], ds[bound])
    total = int(ds[bound].size)
    return Verdict(
        key=key, claim=claim, where=where, family=FAMILY, n=n, status=status_of(bad, n > 0, otherwise="inconclusive"),
        measured=f"max ln(exact / bound) {worst:.3f}", bound="<= 0", value=worst, reference=0.0,
        test="ln P <= ln bound + 8 ulp in every resolved cell",
        detail=(f"{event} against scipy.stats.chi2's exact law on n = {int(ds.chernoff_n.min())}..."
                f"{int(ds.chernoff_n.max())} (powers of 2) x {ds[bound].shape[1]} values of d; {n} of {total} cells "
                f"compared (the other {total - n}: exact tails below float64's smallest normal number, left out). "
                f"The exact tail comes closest to the bound at {_where(at)} (ratio {math.exp(worst):.3f})."))


def _chain_verdict(ds, key, claim, where, steps, dim) -> Verdict:
    """An upper-bound chain ``steps[0] <= steps[1] <= ...``: the worst step's max ln(prev / next)."""
    rows = [(a, b, *_worst(ds[a], ds[b])) for a, b in zip(steps, steps[1:])]
    worst = max((r[2] for r in rows if math.isfinite(r[2])), default=math.nan)
    bad, n = any(r[3] for r in rows), sum(r[4] for r in rows)
    said = "; ".join(f"{_LABELS[a]} over {_LABELS[b]}: max ln ratio {w:.3g} at {_where(at)}"
                     for a, b, w, _, _, at in rows)
    return Verdict(
        key=key, claim=claim, where=where, family=FAMILY, n=n, status=status_of(bad, n > 0, otherwise="inconclusive"),
        measured=f"max ln(step / next) {worst:.3g}", bound="<= 0 (each step an upper bound)", value=worst,
        reference=0.0, test="each member <= the next + 8 ulp (natural logs) in every cell",
        detail=(f"Each printed member must bound the one before it, from the exact tail on: {said}. Grid n = "
                f"{int(ds.chernoff_n.min())}..{int(ds.chernoff_n.max())} x d in [{float(ds[dim].min()):g}, "
                f"{float(ds[dim].max()):g}]; ln ratio 0 would be a tie."))


def verdicts(ds: xr.Dataset) -> list[Verdict]:
    """One verdict per printed statement of eqs. (10)-(13) and the two inequalities they use."""
    return _inequality_verdicts(ds) + [
        _tail_verdict(ds, "lemma_a1_eq10", "P(Y >= (1+d)n) <= e^{-n/2 (d - ln(1+d))}", "Lemma A.1 proof, eq. (10)",
                      "chernoff_log_sf", "chernoff_log_eq10", "The upper tail P(chi2_n >= (1+d) n)"),
        _tail_verdict(ds, "lemma_a1_eq11", "P(Y <= (1-d)n) <= e^{-n/2 (-d - ln(1-d))}", "Lemma A.1 proof, eq. (11)",
                      "chernoff_log_cdf", "chernoff_log_eq11", "The lower tail P(chi2_n <= (1-d) n)"),
        _chain_verdict(ds, "lemma_a1_eq12", "P(Y >= (1+d)n) <= (10) <= e^{-nd^2/(4(1+d))}", "Lemma A.1 proof, eq. (12)",
                       ("chernoff_log_sf", "chernoff_log_eq10", "chernoff_log_eq12"), "chernoff_d_upper"),
        _chain_verdict(ds, "lemma_a1_eq13", "(11) <= e^{-nd^2/4} <= e^{-nd^2/(4(1+d))}", "Lemma A.1 proof, eq. (13)",
                       ("chernoff_log_cdf", "chernoff_log_eq11", "chernoff_log_eq13_mid", "chernoff_log_eq13"),
                       "chernoff_d_lower"),
    ]

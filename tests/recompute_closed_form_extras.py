"""Independent recomputations, for ``tests/test_validate.py``, of the verdicts that
``analyses/checks/{chernoff,app_e,eq23_sigma}.py`` add to ``closed_forms``: each function
``(run, key) -> float`` recomputes the verdict's ``value`` from the grids the run wrote to
``<report>/closed_forms/results.zarr``, by another route than the code under test (rearranged
formulas, scipy's incomplete gamma function, the paper's CSV through pandas, diffusers' variance)."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy import special

from amdm_geom.core.schedules import make_scheduler

__all__ = ["RECOMPUTE", "appe_rows", "chernoff_rows", "eq23_row"]

_TINY = np.finfo(np.float64).tiny
_TABLE5 = Path(__file__).resolve().parents[1] / "data" / "reference" / "table5.csv"


def _results(run):
    return xr.open_zarr(run.report / "closed_forms" / "results.zarr", consolidated=False)


def chernoff_rows(run, key):
    """Lemma A.1's eqs. (10)-(13) and the two inequalities: max of lhs - rhs, or of ln(member / next)."""
    res = _results(run)
    if key == "lemma_a1_ln_upper":  # (2 + d) d / (2 (1 + d)) = d/2 + d / (2 (1 + d))
        d = res.chernoff_ineq_upper.values
        return float((np.log1p(d) - (d / 2 + d / (2 * (1 + d)))).max())
    if key == "lemma_a1_ln_lower":
        d = res.chernoff_ineq_lower.values
        return float((np.log1p(-d) + d + d * d / 2).max())
    upper = key in ("lemma_a1_eq10", "lemma_a1_eq12")
    d = res.chernoff_d_upper.values if upper else res.chernoff_d_lower.values
    n, d = np.meshgrid(res.chernoff_n.values.astype(float), d, indexing="ij")
    # the exact tails from the regularized incomplete gamma function (chi2_n = Gamma(n/2, scale 2))
    p = special.gammaincc(n / 2, (1 + d) * n / 2) if upper else special.gammainc(n / 2, (1 - d) * n / 2)
    with np.errstate(divide="ignore"):
        exact = np.where(p >= _TINY, np.log(p), np.nan)
    # the Chernoff bound as a product: ((1 + d) e^{-d})^{n/2}, ((1 - d) e^{d})^{n/2}
    chernoff = n / 2 * (np.log1p(d) - d) if upper else n / 2 * (np.log1p(-d) + d)
    if key in ("lemma_a1_eq10", "lemma_a1_eq11"):
        return float(np.nanmax(exact - chernoff))
    if upper:  # exact <= (10) <= (12)
        steps = [exact - chernoff, chernoff + n * d**2 / (4 * (1 + d))]
    else:  # exact <= (11) <= e^{-nd^2/4} <= e^{-nd^2/(4(1+d))}
        steps = [exact - chernoff, chernoff + n * d**2 / 4, -n * d**3 / (4 * (1 + d))]
    return float(max(np.nanmax(s) for s in steps))


def appe_rows(run, key):
    """App. E: |(1 - w) + w - 1| for lerp; for slerp, 1 / cos(phi/2) - 1 (w = 1/2) at the paper's
    Table 5 angles on its aggregation steps (t = 49..30: T = 50, s = 20)."""
    res = _results(run)
    if key == "appe_lerp_is_score_combination":
        w = res.appe_w.values
        return float(np.abs(1 - w + w - 1).max())
    phi = pd.read_csv(_TABLE5, comment="#").set_index("t").loc[list(range(49, 29, -1)), "phi"].to_numpy()
    return float((1 / np.cos(phi / 2)).max() - 1)


def eq23_row(run, key):
    """The largest sigma_t of SD's DDIM schedule (the run's steps and DDIM eta), from diffusers' own variance."""
    res = _results(run)
    steps, eta = int(res.sizes["eq23_step"]), float(res.eq23_eta)
    sched = make_scheduler()
    sched.set_timesteps(steps)
    ratio = sched.config.num_train_timesteps // steps
    return max(eta * math.sqrt(float(sched._get_variance(int(t), int(t) - ratio))) for t in sched.timesteps)


RECOMPUTE = {
    "lemma_a1_ln_upper": chernoff_rows, "lemma_a1_ln_lower": chernoff_rows, "lemma_a1_eq10": chernoff_rows,
    "lemma_a1_eq11": chernoff_rows, "lemma_a1_eq12": chernoff_rows, "lemma_a1_eq13": chernoff_rows,
    "appe_lerp_is_score_combination": appe_rows, "appe_slerp_is_score_combination": appe_rows,
    "prop31_eq23_sigma_printed": eq23_row,
}

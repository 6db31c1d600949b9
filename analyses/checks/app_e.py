"""App. E's reading of AMDM's aggregation as a combination of scores: "from equation (4), the
linear combination of different z_t from various models corresponds to the linear combination of
their predicted noise ... the linear combination in AMDM can be interpreted as a linear
combination of scores".

With eq. (4), ``z_{t-1}^i = A_t z_t + B_t eps_i + sigma_t xi_i`` from one z_t, a combination
``sum_i c_i z_{t-1}^i = S A_t z_t + B_t sum_i c_i eps_i + sigma_t sum_i c_i xi_i`` with
``S = sum_i c_i``: it is one step of eq. (4) with the combined noise prediction ``sum_i c_i eps_i``
only when ``S = 1``; otherwise it is ``S`` times the step taken with the normalised combination
``sum_i (c_i / S) eps_i``, a radial inflation by ``S``.

- lerp (Figure 5's linear aggregation): ``c = (1 - w, w)``, ``S = 1``;
- slerp (eq. 6): ``c = (sin((1 - w) phi), sin(w phi)) / sin(phi)``, ``S = cos((1 - 2w) phi / 2) / cos(phi / 2)``,
  ``1 / cos(phi / 2)`` at ``w = 1/2``.

``dataset`` evaluates ``S`` from the printed weights on a (phi, w) grid and at the angles of the
paper's Table 5 on its aggregation steps (InteractDiffusion(+MIGC): T = 50, s = 20, w = 0.5, App.
F.2); ``verdicts`` decides whether each aggregation is one step of eq. (4) with a combined eps.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from amdm_geom.core.verdicts import ROUNDING_ULPS, Verdict, at_most, status_of

__all__ = ["PHI", "TABLE5", "TABLE5_S", "TABLE5_T", "TABLE5_W", "W", "dataset", "slerp_weight_sum", "verdicts"]

FAMILY = "app-e"
#: the paper's Table 5 (App. D.2) and the settings it was sampled with (App. F.2: InteractDiffusion(+MIGC))
TABLE5 = Path(__file__).resolve().parents[2] / "data" / "reference" / "table5.csv"
TABLE5_T, TABLE5_S, TABLE5_W = 50, 20, 0.5
#: angles in (0, pi) (pi itself is antipodal: slerp is undefined) and weights in [0, 1]
PHI = np.linspace(0.0, math.pi, 73)[1:-1]
W = np.linspace(0.0, 1.0, 21)
_UNIT = ROUNDING_ULPS * np.spacing(1.0)  # float64 rounding at the sums' scale (1)


def slerp_weight_sum(phi, w):
    """``S = (sin((1 - w) phi) + sin(w phi)) / sin(phi)``, the sum of eq. (6)'s two weights; 1 at phi = 0 (the
    limit, where slerp is lerp)."""
    phi, w = np.asarray(phi, dtype=np.float64), np.asarray(w, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = (np.sin((1 - w) * phi) + np.sin(w * phi)) / np.sin(phi)
    return np.where(phi == 0, 1.0, s)


def dataset() -> xr.Dataset:
    """``appe_slerp_sum`` over ``appe_phi`` x ``appe_w``, ``appe_lerp_sum`` over ``appe_w``, and
    at Table 5's aggregation rows (``appe_t``: t = T - 1 - k, k < s) the paper's angle
    ``appe_table5_phi`` and slerp's weight sum at w = 0.5 ``appe_table5_slerp_sum``."""
    paper = pd.read_csv(TABLE5, comment="#").set_index("t")
    rows = [TABLE5_T - 1 - k for k in range(TABLE5_S)]  # the samples each aggregation step combines
    phi5 = paper.loc[rows, "phi"].to_numpy(dtype=np.float64)
    phi, w = np.meshgrid(PHI, W, indexing="ij")
    return xr.Dataset(
        {"appe_slerp_sum": (("appe_phi", "appe_w"), slerp_weight_sum(phi, w)),
         "appe_lerp_sum": ("appe_w", (1.0 - W) + W),
         "appe_table5_phi": ("appe_t", phi5),
         "appe_table5_slerp_sum": ("appe_t", slerp_weight_sum(phi5, TABLE5_W))},
        coords={"appe_phi": PHI, "appe_w": W, "appe_t": rows})


def verdicts(ds: xr.Dataset) -> list[Verdict]:
    """lerp and slerp, each: is the aggregate one step of eq. (4) with a combined noise prediction (weights summing
    to 1, up to float64 rounding)?"""
    where = "App. E, with eqs. (4), (6)"
    lerp = np.abs(ds["appe_lerp_sum"].values - 1.0)
    grid = ds["appe_slerp_sum"]
    t5 = ds["appe_table5_slerp_sum"]
    off_grid = ~np.asarray(at_most(np.abs(grid.values - 1.0), 0.0, atol=_UNIT))
    off_t5 = ~np.asarray(at_most(np.abs(t5.values - 1.0), 0.0, atol=_UNIT))
    worst_t = int(t5.idxmax("appe_t"))
    excess5 = float(t5.max()) - 1.0
    shifted = t5.where(t5.appe_t < ds.appe_t.max())  # the steps that start from an aggregate (t < T - 1)
    phi_shift = ds["appe_table5_phi"].where(t5.appe_t < ds.appe_t.max())
    phi_first = float(ds["appe_table5_phi"].sel(appe_t=worst_t))
    return [
        Verdict(key="appe_lerp_is_score_combination", claim="lerp = one eq. (4) step, combined eps", where=where,
                status=status_of(not at_most(float(lerp.max()), 0.0, atol=_UNIT)), family=FAMILY,
                measured=f"max |(1-w) + w - 1| {float(lerp.max()):.1e}", bound="0 (float64 rounding)",
                value=float(lerp.max()), reference=0.0, n=int(lerp.size),
                detail=(f"Figure 5's linear aggregation weighs the models' z_{{t-1}} by 1 - w and w, which sum to 1 "
                        f"(checked on {lerp.size} weights in [0, 1]): with eq. (4) from one z_t the aggregate is "
                        "A_t z_t + B_t ((1-w) eps_1 + w eps_2) + sigma_t ((1-w) xi_1 + w xi_2), one step with the "
                        "combined noise prediction, i.e. a linear combination of scores, as App. E says.")),
        Verdict(key="appe_slerp_is_score_combination", claim="slerp = one eq. (4) step, combined eps", where=where,
                status=status_of(off_grid.any() or off_t5.any()), family=FAMILY,
                measured=f"weight sum - 1 up to {excess5:.3f} at Table 5's angles", bound="0 (float64 rounding)",
                value=excess5, reference=0.0, n=int(grid.size + t5.size),
                detail=("App. E's sentence names 'the linear combination in AMDM'; read for AMDM's own slerp "
                        f"(eq. 6), whose weights sum to S = cos((1-2w) phi/2) / cos(phi/2), not 1: S - 1 is "
                        f"{float(slerp_weight_sum(0.47, 0.5)) - 1:.4f} at phi = 0.47 and "
                        f"{float(slerp_weight_sum(math.pi / 2, 0.5)) - 1:.4f} at phi = pi/2 (w = 1/2), and S differs "
                        f"from 1 beyond rounding on {int(off_grid.sum())} of {grid.size} grid cells (phi in (0, pi), "
                        f"w in [0, 1]; S = 1 only at w = 0 or 1). So sum c_i z^i_{{t-1}} = S A_t z_t + B_t sum c_i "
                        "eps_i + sigma_t sum c_i xi_i: the combined-eps step plus an extra (S - 1) A_t z_t, i.e. S "
                        "times the step with the normalised combination sum (c_i/S) eps_i, a radial inflation by S. "
                        f"At the paper's own Table 5 angles (T = {TABLE5_T}, s = {TABLE5_S}, w = {TABLE5_W:g}), S - 1 "
                        f"is {excess5:.4f} at t = {worst_t} (phi = {phi_first:.4f}: the samples stepped from the two "
                        f"models' own z_T) and at most {float(shifted.max()) - 1:.2e} on the "
                        f"steps from an aggregate (t = {int(ds.appe_t.min())}..{int(ds.appe_t.max()) - 1}, printed "
                        f"phi <= {float(phi_shift.max()):.4f}; {int((phi_shift == 0).sum())} rows print phi = 0, "
                        "below float16's resolution: S = 1 there). Eq. (7)'s radial shift then rescales the norm; "
                        "how much of the inflation it undoes is not measured here.")),
    ]

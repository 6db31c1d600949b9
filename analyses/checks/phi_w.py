"""App. D.3's three statements about the chord ratio of Prop. 3.2, ``phi_w(phi) =
sin((1 - w) phi / 2) / sin(phi / 2)`` (``amdm_geom.core.geometry.phi_w``, eqs. 32-33):

- ``phi_w(phi) <= 1`` on ``(0, pi] x [0, 1]`` (so the shifted latent is never farther from z2
  than z1 is);
- ``phi_w(pi / 2) = sqrt(2) sin((1 - w) pi / 4)`` (as printed);
- ``phi_w(phi) = (1 - w) + O(phi^2)``: ``(phi_w(phi) - (1 - w)) / phi^2`` stays bounded, and
  settles, as ``phi -> 0``.

Measured on grids in float64 by ``dataset``; decided by ``verdicts``.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from amdm_geom.core import geometry
from amdm_geom.core.verdicts import ROUNDING_ULPS, Verdict, at_most, status_of

__all__ = ["PHI", "SMALL_PHI", "W", "dataset", "verdicts"]

#: (0, pi], w in [0, 1], and the angles approaching 0 for the O(phi^2) statement.
PHI = np.linspace(0.0, math.pi, 721)[1:]
W = np.linspace(0.0, 1.0, 41)
SMALL_PHI = np.geomspace(0.5, 0.01, 7)  # (smaller, and phi_w - (1 - w) is mostly float64 rounding)


def dataset() -> xr.Dataset:
    """``phi_w`` on ``PHI x W`` (``d3_phi``, ``d3_w``), at pi/2 against the printed form, and the
    quotient ``(phi_w - (1 - w)) / phi^2`` on ``SMALL_PHI x W``."""
    phi, w = np.meshgrid(PHI, W, indexing="ij")
    quotient = (geometry.phi_w(SMALL_PHI[:, None], W[None, :]) - (1 - W[None, :])) / SMALL_PHI[:, None] ** 2
    printed = math.sqrt(2.0) * np.sin((1 - W) * math.pi / 4)  # App. D.3 as printed
    return xr.Dataset(
        {"phi_w_grid": (("d3_phi", "d3_w"), geometry.phi_w(phi, w)),
         "phi_w_half_pi_error": ("d3_w", geometry.phi_w(math.pi / 2, W) - printed),
         "phi_w_quotient": (("d3_small_phi", "d3_w"), quotient)},
        coords={"d3_phi": PHI, "d3_w": W, "d3_small_phi": SMALL_PHI})


def verdicts(ds: xr.Dataset) -> list[Verdict]:
    """The three statements, each decided on its grid (float64: rounding is the tolerance)."""
    top = float(ds["phi_w_grid"].max())
    half_pi = float(np.abs(ds["phi_w_half_pi_error"]).max())
    q = ds["phi_w_quotient"]
    last, before = q.isel(d3_small_phi=-1), q.isel(d3_small_phi=-2)
    settle = float((np.abs(last - before) / np.maximum(np.abs(last), 1e-300)).where(np.abs(last) > 0).max())
    bounded = float(np.abs(q).max())
    where = "Prop. 3.2; App. D.3"
    unit = ROUNDING_ULPS * np.spacing(1.0)  # float64 rounding at the values' scale (phi_w <= 1)
    return [
        Verdict(key="appd3_phi_w_at_most_1", claim="phi_w(phi) <= 1 on (0, pi] x [0, 1]", where=where,
                status=status_of(not at_most(top, 1.0)), measured=f"max {top:.17g} (= 1 at w = 0)", bound="<= 1",
                value=top, reference=1.0, family="prop32", n=int(ds["phi_w_grid"].size),
                detail=f"phi_w on a grid of {ds.sizes['d3_phi']} angles in (0, pi] x {ds.sizes['d3_w']} weights"),
        Verdict(key="appd3_phi_w_half_pi", claim="phi_w(pi/2) = sqrt(2) sin((1 - w) pi / 4)", where=where,
                status=status_of(not at_most(half_pi, 0.0, atol=unit)), measured=f"max |difference| {half_pi:.1e}",
                bound="0 (up to float64 rounding)", value=half_pi, reference=0.0, family="prop32",
                n=int(ds.sizes["d3_w"]), detail="sin((1-w)pi/4) / sin(pi/4), evaluated against the printed form"),
        Verdict(key="appd3_phi_w_quadratic", claim="phi_w(phi) = (1 - w) + O(phi^2)", where=where,
                status=status_of(settle > 1e-3), measured=f"(phi_w - (1-w)) / phi^2 <= {bounded:.4f}, settled to "
                f"{settle:.1e} between phi = {SMALL_PHI[-2]:g} and {SMALL_PHI[-1]:g}", bound="bounded as phi -> 0",
                value=settle, reference=1e-3, family="prop32", n=int(q.size),
                detail="the quotient's relative change between the two smallest angles, over every w in (0, 1)"),
    ]

"""Lemma A.1 on the forward process of mixture data: the share of draws with |z_t| within eps of
sqrt(E|z_t|^2), per timestep, against eq. (9)'s lower bound.

Lemma A.1 is about Gaussian X; the forward process here runs on non-Gaussian (mixture) data,
so the row asks whether the norm concentrates as the lemma says a Gaussian's does. The share is
a binomial proportion of k draws in N: its exact (Clopper-Pearson) interval decides the status.
With all N draws inside the shell, the interval's lower end is (alpha/2)^(1/N) (1 - 1.4% at N =
256 and 95%), so a bound of 1 - 1.1e-16 cannot be decided: "holds" only where every timestep's
interval lies above the bound, "violated" where some timestep's lies below it, else
"inconclusive".
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from amdm_geom.core import stats as core_stats
from amdm_geom.core.verdicts import Verdict, at_least, margin_text

__all__ = ["LEVEL", "concentration_verdict", "share_interval"]

#: The confidence level of the share's interval.
LEVEL = 0.95


#: The exact (Clopper-Pearson) interval of a share, ``amdm_geom.core.stats.proportion_interval``.
share_interval = core_stats.proportion_interval


def _counts(res: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per timestep: draws within eps (k) of the finite draws (N)."""
    if "finite" in res:
        n = res.finite.sum("sample").values.astype(int)
    else:
        n = np.full(res.sizes["timestep"], int(res.attrs["n_samples"]))
    return np.rint(res.within_eps.values * n).astype(int), n


def concentration_verdict(res: xr.Dataset, level: float = LEVEL) -> Verdict:
    """``forward_norm_concentration`` from ``forward_gaussianity``'s result: the exact interval of
    each timestep's share within eps against eq. (9)'s bound (status as in the module docstring);
    the row reports the timestep whose interval's lower end is lowest."""
    bound = float(res.lemma_bound)
    k, n = _counts(res)
    cis = [share_interval(a, b, level) if b else (np.nan, np.nan) for a, b in zip(k, n)]
    lo, hi = np.array([c[0] for c in cis]), np.array([c[1] for c in cis])
    above = at_least(lo, bound) & np.isfinite(lo)
    below = ~at_least(hi, bound) & np.isfinite(hi)
    status = "violated" if below.any() else "holds" if above.all() else "inconclusive"
    i = int(np.nanargmin(lo))
    share = res.within_eps.values
    t = res.t.values
    eps = res.attrs["eps"]
    return Verdict(
        family="lemma-a1", key="forward_norm_concentration",
        claim="mixture data: |z_t| concentrates as Lemma A.1 says of a Gaussian", where="Lemma A.1, App. D.1",
        status=status, measured=f"min share within eps {float(share.min()):.3f}",
        bound=f">= {bound:.3f} (eq. 9)", value=float(share.min()), reference=bound,
        interval=(float(lo[i]), float(hi[i])), level=level, n=int(n[i]),
        test="exact (Clopper-Pearson) interval of each timestep's share within eps against eq. (9)'s bound",
        detail=(f"Lemma A.1 is about Gaussian X; these are draws of the forward process on non-Gaussian mixture data "
                f"(n = {res.attrs['n']}). |z_t| within {eps:g} of sqrt(E|z_t|^2): {k[i]} of {n[i]} draws at t = "
                f"{float(t[i]):.2f}, exact {100 * level:g}% interval [{lo[i]:.4g}, {hi[i]:.4g}]; the smallest share "
                f"{float(share.min()):.17g} against the bound {bound:.17g} ({margin_text(float(share.min()), bound)}): "
                + ("every timestep's interval lies above it." if status == "holds" else
                   f"below it at t = {', '.join(f'{float(x):.2f}' for x in t[below])}." if status == "violated" else
                   f"{n[i]} draws cannot tell a miss rate of {1 - bound:.2g} from one up to {1 - lo[i]:.2g}, so the "
                   "data cannot decide.")
                + f" For Gaussian data the chi law gives {float(res.chi_exact):.4f}."))

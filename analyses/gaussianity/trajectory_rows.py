"""App. D.1 on a recorded reverse trajectory: the verdict rows of ``trajectory_gaussianity``.

App. D.1 says the latents are Gaussian on their shell for t > 0.6 ("when t > 0.6, the mean
rapidly converges to 0 while the variance rapidly converges to 1"), with t the continuous time
(timestep + 1) / N, as in ``forward_gaussianity``. The claim's row therefore reads only the
recorded steps with t > 0.6. What the sampler does below it (near t = 0 the latents approach the
data, far from Gaussian) is not the paper's claim: it is reported as a separate row of kind
"finding" about the sampler, ``trajectory_small_t_<store>``.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from amdm_geom.analyses.common import rejection_band
from amdm_geom.analyses.gaussianity.figures import PAPER_T
from amdm_geom.core.verdicts import Verdict, at_most, margin_text, qualify

__all__ = ["continuous_t", "partial", "trajectory_verdicts"]


def partial(res: xr.Dataset, over: str) -> dict:
    """What a result left out, as ``qualify``'s keywords: samples non-finite at any ``over``
    (timestep or step), of all samples, and the store's incomplete note."""
    if "finite" not in res:
        return {}
    return {"nonfinite": int((~res.finite).any(over).sum()), "total": int(res.sizes["sample"]),
            "incomplete": str(res.attrs.get("incomplete", ""))}


def continuous_t(res: xr.Dataset) -> np.ndarray:
    """App. D.1's time of each recorded step, (timestep + 1) / N (N from the result, 1000 where a
    result written before it was recorded lacks it)."""
    return (res.t.values.astype(np.float64) + 1) / float(res.attrs.get("n_train", 1000))


def _measure(res: xr.Dataset, fin) -> dict:
    """The AD rejection rate and the largest |ratio - 1| on the finite cells of ``res``."""
    cells = int(fin.sum())
    rate = float(res.ad_reject.where(fin).sum() / cells)
    band = rejection_band(res.attrs["alpha"], cells)
    dev = np.abs(res.ratio - 1).where(fin)
    k = int(np.nanargmax(dev.max("sample").values))
    worst = float(dev.max())
    ok = at_most(rate, band) and at_most(worst, res.attrs["eps"])
    return {"cells": cells, "rate": rate, "band": band, "worst": worst, "step": int(res.step[k]), "t": int(res.t[k]),
            "status": "holds" if ok else "violated"}


def _text(m: dict, res: xr.Dataset, steps: str) -> str:
    eps = res.attrs["eps"]
    return (f"Model 1's z_t on the {steps}: each sample's coordinates tested for normality (AD, level "
            f"{res.attrs['alpha']:g}; rejections {m['rate']:.3f} against {m['band']:.3f}) and |z_t| against "
            f"sqrt(E|z_t|^2) ({res.attrs['expected_norm']}); the largest relative deviation is at step {m['step']} "
            f"(t = {m['t']}), {margin_text(eps, m['worst'])} to the eps bound.")


def trajectory_verdicts(res: xr.Dataset, name: str = "run") -> list[Verdict]:
    """The claim's row for a recorded trajectory on its finite cells at t > 0.6, then (where the
    store recorded steps at t <= 0.6) the finding's row on those; what was left out is said first
    and neither row then holds (``qualify``)."""
    fin = res.finite if "finite" in res else xr.ones_like(res.ratio, dtype=bool)
    eps = res.attrs["eps"]
    head = dict(key=f"trajectory_gaussian_{name}", claim=f"{name}: recorded z_t Gaussian, on its shell (t > 0.6)",
                where="App. D.1, Lemma A.1", reference=float(eps))
    left_out = partial(res, "step")
    if int(fin.sum()) == 0:
        row = Verdict(**head, status="vacuous", measured="no finite sample", bound=f"<= {eps:g}",
                      detail="No recorded z_t sample is finite.")
        return [qualify(row, **left_out)]
    late = continuous_t(res) > PAPER_T
    rows = []
    if bool((fin.values & late[:, None]).any()):
        m = _measure(res.isel(step=late), fin.isel(step=late))
        rows.append(Verdict(
            **head, status=m["status"], measured=f"AD rejections {m['rate']:.3f}, max |ratio-1| {m['worst']:.3f}",
            bound=f"<= {m['band']:.3f}, <= {eps:g}", value=m["worst"], n=m["cells"],
            detail=_text(m, res, f"{int(late.sum())} recorded steps with t > {PAPER_T} (App. D.1's range)")))
    else:
        rows.append(Verdict(**head, status="inconclusive", measured="no step at t > 0.6", bound=f"<= {eps:g}",
                            value=math.nan, detail=f"No finite recorded z_t at t > {PAPER_T}, where App. D.1 claims "
                            "it; the steps below are reported as a finding."))
    early = ~late
    if bool((fin.values & early[:, None]).any()):
        m = _measure(res.isel(step=early), fin.isel(step=early))
        rows.append(Verdict(
            key=f"trajectory_small_t_{name}", kind="finding", reference=float(eps),
            claim=f"{name}: sampler's z_t Gaussian, on its shell, t <= 0.6", where="App. D.1 (outside its t > 0.6)",
            status=m["status"], measured=f"AD rejections {m['rate']:.3f}, max |ratio-1| {m['worst']:.3f}",
            bound=f"<= {m['band']:.3f}, <= {eps:g}", value=m["worst"], n=m["cells"],
            detail=(_text(m, res, f"{int(early.sum())} recorded steps with t <= {PAPER_T}") + " App. D.1 claims "
                    "nothing here: as t nears 0 the latents approach the data, so this is about the sampler.")))
    return [qualify(v, **left_out) for v in rows]

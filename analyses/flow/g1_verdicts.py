"""Prop. G.1's verdicts (App. G) on ``flow_geometry.g1``'s per-step, per-sample Dataset: eq. (43)'s
two bounds, eq. (47)'s delta bound for the step actually taken (the claim) and as printed (a
finding), and eq. (46) as printed against the scheduler's step."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from amdm_geom.analyses.common import partial_data
from amdm_geom.analyses.common.cells import steps_where
from amdm_geom.core.verdicts import Verdict, at_least, at_most, qualify, status_of

__all__ = ["g1_verdicts"]


def g1_verdicts(res: xr.Dataset, name: str) -> list[Verdict]:
    """Eq. (43)'s two bounds, eq. (47)'s delta bound (on the steps that start from an aggregate)
    and eq. (46) as printed against the step, for one store."""
    fin = res.finite
    partial = partial_data(res)
    cells = int(fin.sum())
    measured = fin & res.norm_gap_bound.notnull()
    bad = measured & ~at_most(res.norm_gap, res.norm_gap_bound, rtol=1e-9, atol=1e-12)
    worst = float((res.norm_gap / res.norm_gap_bound.where(res.norm_gap_bound > 0)).max())
    out = [Verdict(key=f"flowG1_gap_{name}", claim=f"{name}: norm gap <= eq. (43) bound",
                   where="App. G, Prop. G.1, eq. (43)",
                   status=status_of(bad.any(), measured.any()),
                   measured=f"max gap/bound {worst:.3f}", bound="<= 1", value=worst, reference=1.0, n=cells,
                   detail=(f"On the flow models' sampled latents: {int(bad.sum())} of {cells} finite (step, sample) "
                           f"cells violate it ({steps_where(bad)}). With the measured delta it is Cauchy-Schwarz "
                           "(eqs. 44-45), as eq. (5) is."))]
    defined = fin & res.cos_bound.notnull()
    short = defined & ~at_least(res.cos_phi, res.cos_bound, atol=1e-12)
    slack = float((res.cos_phi - res.cos_bound).where(defined).min())
    out.append(Verdict(key=f"flowG1_angle_{name}", claim=f"{name}: cos phi >= eq. (43) bound",
                       where="App. G, Prop. G.1, eq. (43)", n=int(defined.sum()),
                       status=status_of(short.any(), defined.any()),
                       measured=f"min slack {slack:.2e}", bound=">= 0", value=slack, reference=0.0,
                       detail=f"Defined (cos phi >= 0) on {int(defined.sum())} of {cells} cells; violated on "
                              f"{int(short.sum())} ({steps_where(short)})."))
    out += _delta_verdict(res, name)
    out.append(_eq46_verdict(res, name))
    return [qualify(v, **partial) for v in out]


def _delta_status(premise: xr.Dataset, pf, over, noisy: bool) -> tuple[str, xr.DataArray]:
    """Eq. (47)'s status for the step taken. Prop. G.1 starts both models from one z'_t; Algorithm 1
    starts each from its own shifted point (eq. 7). A bound exceeded only where the starts differ, and
    met with the start terms A |z_1 - z_2| + |B| |v_2(z_1, y_2) - v_2(z_2, y_2)| added (the step is
    A z + B v; A = 1 and B = dt for the deterministic step: then it is the triangle inequality), is
    "outside domain", as Prop. 3.1's eq. (23) is (``prop31_delta_run``); a stochastic step, whose
    noise eqs. (42) and (46) have no term for, is outside it too."""
    with_start = premise.bound47_step + abs(premise.A) * premise.start_gap + abs(premise.B) * premise.start_v_term
    beyond = over & ~at_most(premise.delta, with_start, rtol=1e-9)
    apart = premise.start_gap > 1e-12 * premise.norm_1
    if noisy and bool(pf.any()):
        return "outside domain", beyond
    if bool(over.any()) and not bool(beyond.any()) and bool((apart | ~over).all()):
        return "outside domain", beyond
    return status_of(over.any(), pf.any()), beyond


def _delta_verdict(res: xr.Dataset, name: str) -> list[Verdict]:
    """Eq. (47) for the step actually taken (z + dt v: the claim), and eq. (47) as printed, a bound on
    |v_1 - v_2| with no step size, against that step (a finding: it holds by the factor 1 / |dt|)."""
    premise = res.isel(step=res.from_aggregate.values)
    if "bound47" not in res or not premise.sizes["step"]:
        return []
    pf = premise.finite & premise.bound47.notnull()
    cells = int(pf.sum())
    some = bool(pf.any())
    over = pf & ~at_most(premise.delta, premise.bound47_step, rtol=1e-9)
    ratio = float((premise.delta / premise.bound47_step).where(pf).max()) if some else math.nan
    over_printed = pf & ~at_most(premise.delta, premise.bound47, rtol=1e-9)
    printed_ratio = float((premise.delta / premise.bound47).where(pf).max()) if some else math.nan
    loose = float((premise.printed_delta / premise.delta).where(pf).median()) if some else math.nan
    dt = np.abs(premise.dt.values)
    # eqs. (42) and (46) are a deterministic (ODE) step: a stochastic step's delta carries its noise
    noisy = bool(res.attrs.get("stochastic"))
    status, beyond = _delta_status(premise, pf, over, noisy)
    why = ("Outside its domain: eq. (42) is an ODE and eq. (46) a deterministic step, while these steps add noise "
           "s_next xi, whose difference between the models eq. (47) has no term for. " if noisy else
           "Outside its domain: every exceedance comes from the two models starting the step at different points "
           "(Algorithm 1 shifts each towards its own mean, eq. 7), which Prop. G.1's premise (both sample from one "
           "z'_t) excludes, so the bound is not tested here. " if status == "outside domain" else "")
    claim = Verdict(
        key=f"flowG1_delta_{name}", claim=f"{name}: delta <= |dt| (L_theta L_T + L_t), the step taken",
        where="App. G, Prop. G.1, eq. (47)", status=status, measured=f"max delta/bound {ratio:.3g}", bound="<= 1",
        value=ratio, reference=1.0, n=cells,
        test="per (step, sample) on steps that start from an aggregate: delta <= |dt| (cond + func) (+ sigma sqrt(2n))",
        detail=(why + f"Diffusers' step is z + dt v (|dt| = {dt.min():.3g}..{dt.max():.3g}; A z + B v with "
                f"B = -(1 - s_next) s on a stochastic step, plus s_next xi), so the step taken bounds delta by |B| "
                f"times eq. (47)'s terms (+ sigma sqrt(2n)), set to the measured conditional and functional terms at "
                f"model 1's start; delta exceeds it on {int(over.sum())} of {cells} cells ({steps_where(over)}). "
                f"With the start terms added (A |z_1 - z_2| + |B| |v_2(z_1) - v_2(z_2)|), on {int(beyond.sum())}"
                + (f" ({steps_where(beyond)})." if bool(beyond.any()) else ".")
                + " Eq. (47) as printed, with no step size, is flowG1_delta_printed."),
        extra={"over_with_start": int(beyond.sum()), "over_printed_bound": int(over_printed.sum())})
    printed = Verdict(
        key=f"flowG1_delta_printed_{name}", claim=f"{name}: the step taken's delta <= eq. (47) as printed (no dt)",
        where="App. G, Prop. G.1, eqs. (46)-(47)", kind="finding", status=status_of(over_printed.any(), some),
        measured=f"max delta/printed bound {printed_ratio:.3g}", bound="<= 1", value=printed_ratio, reference=1.0,
        n=cells, test="per (step, sample): delta of the step taken <= cond + func (eq. 47 without |dt|)",
        detail=(f"Eq. (47) bounds |v_1 - v_2|, the printed update's difference (eq. 46 has no step size), which is "
                f"a median {loose:.3g} times the delta of the step taken (z + dt v): against the step taken the "
                f"printed bound is loose by about 1 / |dt|, and delta exceeds it on {int(over_printed.sum())} of "
                f"{cells} cells. This says how loose the printed bound is, not whether Prop. G.1 holds "
                f"(flowG1_delta)."),
        extra={"printed_over_taken": loose})
    return [claim, printed]


def _eq46_verdict(res: xr.Dataset, name: str) -> Verdict:
    fin = res.finite & res.step_1.notnull()
    rel = (res.eq46_gap_1 / res.norm_1).where(fin)
    length = (res.printed_step_1 / res.step_1.where(res.step_1 > 0)).where(fin)
    dt = np.abs(res.dt.values)
    tol = 1e-5  # float32 steps: the two updates agree to this relative distance if eq. (46) were the step
    wrong = fin & (rel > tol)
    return Verdict(
        key=f"flow_eq46_{name}", claim=f"{name}: z_t-1 = z'_t - v is the flow step", where="App. G, eq. (46)",
        status=status_of(wrong.any(), fin.any()),
        measured=f"median |printed - step|/|z| {float(rel.median()):.3g}", bound=f"<= {tol:g}",
        value=float(rel.median()), reference=tol, n=int(fin.sum()),
        test="per (step, sample): |(z - v) - z_next| / |z_next| against float32 rounding",
        detail=(f"Eq. (46) prints the step without its size: diffusers' Euler step is z + dt v with |dt| = "
                f"{dt.min():.3g}..{dt.max():.3g} here (1/T for a uniform grid), so the printed update is "
                f"{float(length.median()):.3g} times as long (median) and lands a median "
                f"{float(rel.median()):.3g} |z| from the step's result ({int(wrong.sum())} of {int(fin.sum())} cells "
                "beyond rounding). Prop. G.1's argument survives with delta scaled by |dt| (flowG1_delta)."),
        extra={"length_ratio_median": float(length.median())})

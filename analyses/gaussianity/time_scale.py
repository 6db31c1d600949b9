"""App. D.1's continuous-time model read literally: eq. (37) with g_t^2 = beta_t and the betas
as printed (SD's scaled-linear schedule, beta from 0.00085 to 0.012), t in [0, 1].

Eqs. (40)-(41) give m(t) = m(0) exp(-I(t)/2) and P(t) = 1 + (P(0) - 1) exp(-I(t)) with
I(t) = int_0^t g_s^2 ds. With the printed betas I(1) is about 0.005, so nothing converges on
[0, 1]; the usual continuous limit rescales time by the N training steps (g^2(s) = N beta(s),
``amdm_geom.core.schedules.integrated_beta``). ``printed_time_scale`` gives both readings and the
factor on beta that Figure 6's "converged for t > 0.6" would need; ``time_scale_verdict``
judges the first. Used by the ``gaussianity`` analysis (its ``moments`` node).
"""

from __future__ import annotations

import math

import xarray as xr

from amdm_geom.core import schedules
from amdm_geom.core.verdicts import Verdict, at_most

__all__ = ["needed_integral", "printed_time_scale", "time_scale_verdict"]


def needed_integral(m0: float, P0: float, tol: float) -> float:
    """The smallest I with |m0| exp(-I/2) <= tol and |P0 - 1| exp(-I) <= tol (eqs. 40-41): the
    integrated g^2 at which the moments are converged to ``tol``."""
    need_m = 2.0 * math.log(abs(m0) / tol) if abs(m0) > tol else 0.0
    need_P = math.log(abs(P0 - 1.0) / tol) if abs(P0 - 1.0) > tol else 0.0
    return max(need_m, need_P, 0.0)


def printed_time_scale(kind: str, *, m0: float, P0: float, tol: float, paper_t: float) -> dict:
    """For a ``linear`` or ``scaled_linear`` schedule: the moments at ``paper_t`` and at t = 1
    with g_t^2 = beta_t as printed (``printed_m_paper_t``, ``printed_P_paper_t``,
    ``printed_m_1``, ``printed_P_1``), ``printed_integral_1`` = I(1), and ``scale_for_paper_t``:
    the factor c, in units of the N training steps, with which g^2 = c N beta converges from
    ``paper_t`` (c = 1 is the usual rescaled time). NaN for ``cosine``, whose continuous form
    has no printed betas."""
    names = ("printed_m_paper_t", "printed_P_paper_t", "printed_m_1", "printed_P_1", "printed_integral_1",
             "scale_for_paper_t")
    if kind == "cosine":
        return dict.fromkeys(names, math.nan)
    _, _, _, n = schedules.schedule_params(None, kind)
    unit = lambda t: float(schedules.integrated_beta(t, kind, num_train_timesteps=1))  # noqa: E731
    at_paper, at_1 = unit(paper_t), unit(1.0)
    return {"printed_m_paper_t": m0 * math.exp(-at_paper / 2), "printed_P_paper_t": 1 + (P0 - 1) * math.exp(-at_paper),
            "printed_m_1": m0 * math.exp(-at_1 / 2), "printed_P_1": 1 + (P0 - 1) * math.exp(-at_1),
            "printed_integral_1": at_1, "scale_for_paper_t": needed_integral(m0, P0, tol) / (at_paper * n)}


def time_scale_verdict(ds: xr.Dataset, paper_t: float) -> Verdict:
    """Whether g_t^2 = beta_t with SD's betas as printed gives Figure 6's convergence by
    ``paper_t`` (``ds``: ``schedule_moments``' result)."""
    sd = ds.sel(kind="scaled_linear")
    tol = float(ds.attrs["tol"])
    m, P = float(sd.printed_m_paper_t), float(sd.printed_P_paper_t)
    ok = at_most(abs(m), tol) and at_most(abs(P - 1), tol)
    scale = float(sd.scale_for_paper_t)
    return Verdict(
        key="sd_time_scale", claim="g_t^2 = beta_t (as printed) gives Fig. 6", where="App. D.1, eqs. (37)-(41)",
        status="holds" if ok else "violated", measured=f"m({paper_t:g}) {m:.4f}, P({paper_t:g}) {P:.4f}",
        bound=f"|m|, |P-1| <= {tol:g} by t = {paper_t:g}", value=max(abs(m), abs(P - 1)), reference=tol,
        test="eqs. (40)-(41) in closed form",
        detail=(f"m(0) = {ds.attrs['m0']:g}, P(0) = {ds.attrs['P0']:g}. With g_t^2 = beta_t and SD's betas as printed "
                f"(0.00085 to 0.012 over t in [0, 1]), int_0^1 g^2 = {float(sd.printed_integral_1):.5f}, so even at "
                f"t = 1 m = {float(sd.printed_m_1):.4f} and P = {float(sd.printed_P_1):.4f}: no convergence on "
                f"[0, 1]. The moments converge only after rescaling time by the N training steps (g^2 = N beta(t), "
                f"t = i/N), and then from t = {float(sd.converged_from):.3f}, not {paper_t:g} "
                f"(sd_converged_from); convergence from t = {paper_t:g} would need g^2 = {scale:.2f} N beta."),
        extra={"scale_for_paper_t": scale})

"""The digits benchmark's verdicts, from ``digits_benchmark.compute``'s Dataset (per arm and
sample: ``success`` on the (position, colour) target, ``success_triple`` on (position, colour,
digit); per arm: ``calls``, the network evaluations per sample).

Every comparison is paired by sample (same seeds, same targets) and decided by
``amdm_geom.core.stats`` as the other paired benchmarks' are (``amdm_geom.analyses.common.paired``:
``compare``, ``best``, ``paired_verdict`` and ``best_verdict``: a paired t interval at 95%,
Bonferroni over a best-of-k claim's rivals, ``inconclusive`` with the sample size that would decide
it). The arms' settings (``agg_steps``, ``eta``) are the Dataset's coordinates."""

from __future__ import annotations

from dataclasses import replace

import xarray as xr

from amdm_geom.analyses.common.paired import (
    EQUIVALENCE_MARGIN,
    best,
    best_verdict,
    compare,
    equivalence_verdict,
    in_group,
    paired_verdict,
)
from amdm_geom.analyses.digits import readings
from amdm_geom.core import stats
from amdm_geom.core.verdicts import Verdict

__all__ = ["verdicts"]

WHERE = "digits ecosystem (trained)"


def _s(ds: xr.Dataset, arm: str, var: str = "success") -> str:
    return f"{float(ds[var].sel(arm=arm).mean()):.3f}"


def _evals(ds: xr.Dataset, *arms: str) -> str:
    return ", ".join(f"{a} {int(ds.calls.sel(arm=a))}" for a in arms)


def _best(ds, claimed: str, rivals, *, key: str, claim: str, where: str, var: str = "success", detail: str = ""):
    present = [r for r in rivals if r in ds.arm]
    if claimed not in ds.arm or not present:
        return []
    b = best(ds, claimed, present, var)
    return [best_verdict(b, key=key, claim=claim, where=where, measured=f"{_s(ds, claimed, var)} vs "
                         f"{_s(ds, b.deciding, var)}", bound=f"> {', '.join(present)}", reference=0.0,
                         detail=(f"{detail} Success ({'triple' if var != 'success' else 'pair'} target): "
                                 + ", ".join(f"{a} {_s(ds, a, var)}" for a in (claimed, *present))
                                 + f"; evaluations per sample: {_evals(ds, claimed, *present)}.").strip())]


def _beats(ds, a: str, b: str, *, key: str, claim: str, where: str, detail: str = ""):
    if a not in ds.arm or b not in ds.arm:
        return []
    p = compare(ds, a, b, "success")
    return [paired_verdict(p, stats.decide(p.interval), key=key, claim=claim, where=where,
                           measured=f"{_s(ds, a)} vs {_s(ds, b)}", bound="> 0", reference=0.0,
                           detail=(f"{detail} {a} minus {b}: {stats.interval_text(p)}; evaluations per sample: "
                                   f"{_evals(ds, a, b)}.").strip())]


def _same(ds, a: str, b: str, *, key: str, claim: str, where: str, detail: str = ""):
    if a not in ds.arm or b not in ds.arm:
        return []
    p = compare(ds, a, b, "success")
    return [equivalence_verdict(p, key=key, claim=claim, where=where, measured=f"{_s(ds, a)} vs {_s(ds, b)}",
                                detail=f"{detail} {a} minus {b}: {stats.interval_text(p)}.".strip())]


def _arms(ds, group: str) -> list[str]:
    return in_group(ds, group)


def verdicts(ds: xr.Dataset) -> list[Verdict]:
    """AMDM against the single models (both role orders), the role order, s, eta, slerp against
    lerp, the aggregation stage, the partners of Section 3.1 / Table 10, the peers, N = 3, Algorithm
    1's mu against eq. (7)'s, the readings of App. F.3 and eqs. (27)-(28) (``readings``), and App. G."""
    out = []
    singles = ("position", "colour")
    out += _best(ds, "amdm", singles, key="digits_amdm_beats_singles", claim="AMDM raises fine-grained success",
                 where=f"Tables 1-2 ({WHERE})", detail="Position fine-tune first, colour fine-tune second.")
    out += _best(ds, "amdm_swapped", singles, key="digits_amdm_swapped_beats_singles",
                 claim="AMDM raises it with roles swapped", where=f"Tables 1-2 ({WHERE})")
    out += _same(ds, "amdm", "amdm_swapped", key="digits_role_order", claim="which model comes first does not matter",
                 where=f"Algorithm 1 ({WHERE})")
    s_arms = ["amdm", *_arms(ds, "s")]
    if len(s_arms) > 1:
        by_s = {a: _agg_steps(ds, a) for a in s_arms}
        lo, hi = min(by_s, key=by_s.get), max(by_s, key=by_s.get)
        text = ", ".join(f"s = {by_s[a]}: {_s(ds, a)}" for a in sorted(by_s, key=by_s.get)) + "."
        out += _beats(ds, hi, lo, key="digits_s", claim="more aggregation steps raise success",
                      where=f"Figure 5a ({WHERE})", detail=text)
    etas = [a for a in _arms(ds, "eta") if _eta(ds, a) <= 0.5]
    out += _best(ds, "amdm", etas, key="digits_eta", claim="eta = 0.3 is best in [0, 0.5]", where=f"Table 4 ({WHERE})",
                 detail=", ".join(f"eta {_eta(ds, a):g}: {_s(ds, a)}" for a in ["amdm", *_arms(ds, "eta")]) + ".")
    out += _beats(ds, "amdm", "amdm_lerp", key="digits_slerp_lerp", claim="slerp beats lerp",
                  where=f"Figure 5a ({WHERE})")
    out += _best(ds, "amdm", _arms(ds, "stage"), key="digits_stage", claim="early aggregation is best",
                 where=f"Table 3 ({WHERE})")
    out += _best(ds, "amdm_scratch", ("position_scratch", "colour"), key="digits_scratch_partner",
                 claim="a same-ecosystem partner trained from scratch works too", where=f"Sec. 3.1 ({WHERE})",
                 detail="Position model trained from another initialisation (same schedule and data) with the colour "
                        "fine-tune.")
    out += _beats(ds, "amdm", "amdm_linear", key="digits_cross_ecosystem", claim="AMDM fails across ecosystems",
                  where=f"App. F.3, Table 10 ({WHERE})",
                  detail="Same-ecosystem AMDM against AMDM with a position model on DDPM's linear schedule.")
    for peer in _arms(ds, "peers"):
        if peer == "amdm_matched":
            continue
        out += _beats(ds, "amdm", peer, key=f"digits_vs_{peer}", claim=f"AMDM beats {ds.label.sel(arm=peer).item()}",
                      where=f"Sec. 4 ({WHERE})")
    out += _beats(ds, "amdm_matched", "ula", key="digits_vs_ula_matched",
                  claim="AMDM beats ULA at matched evaluations", where=f"Sec. 4 ({WHERE})")
    out += _best(ds, "amdm3", ("position", "colour", "digit"), key="digits_n3",
                 claim="AMDM of three raises the triple target", where=f"Sec. 4.1 ({WHERE})", var="success_triple")
    out += _same(ds, "amdm", "amdm_mean_aggregate", key="digits_mean_variant",
                 claim="Algorithm 1's mu does as well as eq. (7)'s", where=f"{WHERE}; Alg. 1 vs eq. (7)",
                 detail=(f"mu_i(z_t^i) from the step (Algorithm 1, no extra call) {_s(ds, 'amdm')} against mu_i(z') "
                         f"evaluated at the aggregate (eq. 7 as printed, one more call per model and step) "
                         f"{_s(ds, 'amdm_mean_aggregate')} (evaluations per sample: "
                         f"{_evals(ds, 'amdm', 'amdm_mean_aggregate')}); holds when the interval lies inside "
                         f"+-{EQUIVALENCE_MARGIN:g}.") if {"amdm", "amdm_mean_aggregate"} <= set(ds.arm.values) else "")
    return out + readings.verdicts(ds) + _flow(ds)


def _flow(ds: xr.Dataset) -> list[Verdict]:
    """App. G on the flow-matching fine-tunes: AMDM against each alone, mu = v, and a VP + flow pair."""
    where = f"App. G ({WHERE}, flow matching)"
    out = _best(ds, "flow_amdm", ("flow_position", "flow_colour"), key="digits_flow_amdm_beats_singles",
                claim="AMDM raises fine-grained success under flow", where=where,
                detail="Flow-matching position and colour fine-tunes of one flow base, diffusers' flow-matching Euler "
                       "step, the shift towards each step's location z + dt v.")
    out += _same(ds, "flow_amdm_v", "flow_amdm", key="digits_flow_mu_v", claim="AMDM with mu = v does as well",
                 where=where, detail="The shift's target the velocity, as App. G prints it, against the step's "
                                     "location.")
    out += _beats(ds, "flow_amdm", "flow_vp", key="digits_flow_cross_ecosystem",
                  claim="AMDM fails across ecosystems (flow + VP)", where=where,
                  detail="The flow pair against the VP position fine-tune with the flow colour fine-tune (insist).")
    return [replace(v, family="app-g") for v in out]  # (the report's App. G section, not the trained ecosystem's)


def _agg_steps(ds: xr.Dataset, arm: str) -> int:
    return int(ds.agg_steps.sel(arm=arm))


def _eta(ds: xr.Dataset, arm: str) -> float:
    return float(ds.eta.sel(arm=arm))

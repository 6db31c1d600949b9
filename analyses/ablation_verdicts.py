"""The ablations' verdicts: one per group against the paper's claim, from the Dataset of
``amdm_geom.analyses.ablations.compute`` (per run and sample: the target mass ``mass``; per run:
``success``, ``success_se``, ``hard_rate``, ``max_norm_dev``, ``min_logp_z``; coords ``group``
and ``label``). Differences between runs are paired over samples (the same seeds), with their
standard errors."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from amdm_geom.verdicts import Verdict

from .ablation_runs import FULL, QUICK
from .common import paired_difference

__all__ = ["TIE", "verdicts"]

#: A paired difference counts as positive above this: posterior masses are floats, and two runs
#: that agree can differ by rounding.
TIE = 1e-9


def _diff(ds: xr.Dataset, a: str, b: str) -> tuple[float, float]:
    """Paired difference of the target mass, run a minus run b (same seeds): mean and standard
    error (``common.paired_difference``, scipy.stats)."""
    return paired_difference(ds.mass.sel(run=a).values, ds.mass.sel(run=b).values)


def _resolved(delta: float, se: float) -> str:
    return "resolved" if abs(delta) > 2 * se else "within noise (|diff| <= 2 SE)"


def _s(ds, run) -> str:
    return f"{float(ds.success.sel(run=run)):.3f}"


def _in_group(ds: xr.Dataset, group: str) -> list[str]:
    return [r for r in ds.run.values if str(ds.group.sel(run=r).item()) == group]


def _tables12(ds: xr.Dataset, runs: set) -> list[Verdict]:
    if not {"model1", "model2", "amdm", "amdm_swapped"} <= runs:
        return []
    best = "model1" if float(ds.success.sel(run="model1")) >= float(ds.success.sel(run="model2")) else "model2"
    out = []
    for run, key, claim in (("amdm", "ablation_tables12", "AMDM raises fine-grained success"),
                            ("amdm_swapped", "ablation_tables12_swapped", "AMDM raises it with roles swapped")):
        d, se = _diff(ds, run, best)
        out.append(Verdict(
            key=key, claim=claim, where="Tables 1-2 (GMM analogue)", status="holds" if d > TIE else "violated",
            measured=f"{_s(ds, run)} vs {_s(ds, best)}", bound="> best single model", value=d, reference=0.0,
            detail=(f"Posterior mass on the fine-grained target (position 0, colour 0): model 1 alone "
                    f"{_s(ds, 'model1')}, model 2 alone {_s(ds, 'model2')}, {ds.label.sel(run=run).item()} "
                    f"{_s(ds, run)}; paired difference to the better single model {d:+.3f} +- {se:.3f} "
                    f"({_resolved(d, se)}). Hard assignments to the target: "
                    f"{float(ds.hard_rate.sel(run=run)):.3f}.")))
    return out


def _figure5(ds: xr.Dataset, runs: set) -> list[Verdict]:
    fig5 = _in_group(ds, "figure5")
    if not fig5:
        return []
    s_values = sorted({int(r.rsplit("_s", 1)[1]) for r in fig5})
    large = [s for s in s_values if s >= max(s_values) / 2.5]
    diffs = [_diff(ds, f"slerp_s{s}", f"lerp_s{s}") for s in large]
    d = float(np.mean([x for x, _ in diffs]))
    se = float(math.sqrt(sum(e**2 for _, e in diffs)) / len(diffs))
    table = "; ".join(f"s={s}: slerp {_s(ds, f'slerp_s{s}')}, lerp {_s(ds, f'lerp_s{s}')}, "
                      f"orthogonal {_s(ds, f'orthogonal_mix_s{s}')}" for s in s_values)
    success = Verdict(
        key="ablation_figure5_success", claim="slerp beats lerp as s grows", where="Figure 5a",
        status="holds" if d > TIE else "violated", measured=f"slerp - lerp {d:+.3f}", bound="> 0", value=d,
        reference=0.0,
        detail=(f"Target mass, mean over s in {large}: slerp minus lerp {d:+.3f} +- {se:.3f} ({_resolved(d, se)}). "
                f"{table}."))
    s_max = max(s_values)
    dev_slerp = float(ds.max_norm_dev.sel(run=f"slerp_s{s_max}"))
    dev_lerp = float(ds.max_norm_dev.sel(run=f"lerp_s{s_max}"))
    low = {mix: float(ds.min_logp_z.sel(run=f"{mix}_s{s_max}")) for mix in ("lerp", "slerp", "orthogonal_mix")}
    deviation = Verdict(
        key="ablation_figure5_deviation", claim="lerp leaves the manifold, slerp does not", where="Figure 5b",
        status="holds" if dev_lerp > dev_slerp else "violated",
        measured=f"|norm dev| lerp {dev_lerp:.4f}, slerp {dev_slerp:.4f}", bound="lerp > slerp",
        value=dev_lerp - dev_slerp, reference=0.0,
        detail=(f"At s = {s_max}: largest relative departure of |z_t| from sqrt(E|z_t|^2) over the recorded steps, "
                f"mean over samples; lowest log-density z-score lerp {low['lerp']:.2f}, slerp {low['slerp']:.2f}, "
                f"orthogonal mix {low['orthogonal_mix']:.2f} (0 is typical of exact samples)."))
    return [success, deviation]


def _table3(ds: xr.Dataset, runs: set) -> list[Verdict]:
    if not {"stage_early", "stage_middle", "stage_late"} <= runs:
        return []
    stages = {s: float(ds.success.sel(run=f"stage_{s}")) for s in ("early", "middle", "late")}
    other = max((s for s in stages if s != "early"), key=stages.get)
    d, se = _diff(ds, "stage_early", f"stage_{other}")
    return [Verdict(
        key="ablation_table3", claim="early aggregation is best", where="Table 3",
        status="holds" if d > TIE else "violated",
        measured=", ".join(f"{k} {v:.3f}" for k, v in stages.items()), bound="early highest", value=d, reference=0.0,
        detail=(f"Equal windows of {ds.label.sel(run='stage_early').item().split(': ')[1]} and later; early minus "
                f"the best other ({other}) {d:+.3f} +- {se:.3f} ({_resolved(d, se)})."))]


def _latent_norm(ds: xr.Dataset) -> float:
    """sqrt(n), about |z_t|, for the runs' latent size n."""
    size = ds.attrs.get("latent_size") or int(np.prod((QUICK if ds.attrs["quick"] else FULL).latent_shape))
    return math.sqrt(int(size))


def _table4(ds: xr.Dataset, runs: set) -> list[Verdict]:
    etas = _in_group(ds, "table4")
    if not etas:
        return []
    values = {float(r.split("_", 1)[1]): float(ds.success.sel(run=r)) for r in etas}
    paper_range = {e: v for e, v in values.items() if e <= 0.5}
    best = max(paper_range, key=paper_range.get)
    if paper_range.get(0.3, -1) >= paper_range[best] - TIE:
        best = 0.3  # a tie with the best counts for 0.3 only if nothing beats it
    d, se = _diff(ds, f"eta_{0.3:g}", f"eta_{best:g}") if best != 0.3 else (0.0, 0.0)
    return [Verdict(
        key="ablation_table4", claim="eta = 0.3 is best in [0, 0.5]", where="Table 4",
        status="holds" if best == 0.3 else "violated", measured=f"best eta {best:g}", bound="0.3", value=best,
        reference=0.3,
        detail=(", ".join(f"eta {e:g}: {v:.3f}" for e, v in sorted(values.items())) + f". eta = 0.3 minus the best "
                f"{d:+.3f} +- {se:.3f} ({_resolved(d, se) if best != 0.3 else 'it is the best'}). eta is in "
                f"latent-norm units; |z_t| is about {_latent_norm(ds):.0f} here, so 0.3 moves it by a fraction of a "
                "percent."))]


def _n3(ds: xr.Dataset, runs: set) -> list[Verdict]:
    if not {"n3_amdm", "n3_position", "n3_colour", "n3_style"} <= runs:
        return []
    singles = {r: float(ds.success.sel(run=r)) for r in ("n3_position", "n3_colour", "n3_style")}
    best = max(singles, key=singles.get)
    d, se = _diff(ds, "n3_amdm", best)
    return [Verdict(
        key="ablation_n3", claim="AMDM of three raises the triple target", where="Sec. 4.1, Fig. 4 (GMM)",
        status="holds" if d > TIE else "violated", measured=f"{_s(ds, 'n3_amdm')} vs {singles[best]:.3f}",
        bound="> best single model", value=d, reference=0.0,
        detail=("Target (position 0, colour 0, style 0) of 27 components; singles "
                + ", ".join(f"{r[3:]} {v:.3f}" for r, v in singles.items())
                + f"; AMDM minus the best single {d:+.3f} +- {se:.3f} ({_resolved(d, se)})."))]


def _table10(ds: xr.Dataset, runs: set) -> list[Verdict]:
    cross = _in_group(ds, "table10")
    if not (cross and "amdm" in runs):
        return []
    ref = float(ds.success.sel(run="amdm"))
    worse = [r for r in cross if float(ds.success.sel(run=r)) < ref]
    return [Verdict(
        key="ablation_table10", claim="AMDM fails across ecosystems", where="App. F.3, Table 10",
        status="holds" if len(worse) == len(cross) else "violated",
        measured=f"{len(worse)}/{len(cross)} below same-SDE", bound=f"< {ref:.3f} (same SDE)",
        value=float(max(float(ds.success.sel(run=r)) for r in cross)), reference=ref,
        detail=("; ".join(f"{ds.label.sel(run=r).item()}: success {_s(ds, r)}, |norm dev| "
                          f"{float(ds.max_norm_dev.sel(run=r)):.3f}, log-density z "
                          f"{float(ds.min_logp_z.sel(run=r)):.1f}" for r in cross)
                + f"; same SDE: success {ref:.3f}, |norm dev| {float(ds.max_norm_dev.sel(run='amdm')):.3f}."))]


def _variants(ds: xr.Dataset, runs: set) -> list[Verdict]:
    out = []
    if {"mean_at_aggregate", "amdm"} <= runs:
        d, se = _diff(ds, "amdm", "mean_at_aggregate")
        out.append(Verdict(
            key="ablation_mean_variant", claim="Algorithm 1's mu does as well as eq. (7)'s", where="Alg. 1 vs eq. (7)",
            status="holds" if abs(d) <= 2 * se else "violated", measured=f"diff {d:+.3f} +- {se:.3f}",
            bound="|diff| <= 2 SE", value=d, reference=2 * se,
            detail=(f"mu_i(z_t^i) from the step (Algorithm 1, no extra call) {_s(ds, 'amdm')} against mu_i(z') "
                    f"evaluated at the aggregate (eq. 7 as printed, one more call per model and step) "
                    f"{_s(ds, 'mean_at_aggregate')}.")))
    earlier = [r for r in ("earlier_eta0.3", "earlier_eta40") if r in runs]
    if earlier and "amdm" in runs:
        diffs = {r: _diff(ds, "amdm", r) for r in earlier}
        out.append(Verdict(
            key="ablation_earlier_rule", claim="current rule >= earlier version's", where="v1 eq. (9) vs eq. (6)",
            status="holds" if all(d >= -TIE for d, _ in diffs.values()) else "violated",
            measured=", ".join(f"{ds.label.sel(run=r).item().split(', ')[-1]}: {_s(ds, r)}" for r in earlier),
            bound=f"<= {_s(ds, 'amdm')} (current)", value=min(d for d, _ in diffs.values()), reference=0.0,
            detail=("Slerp with independent z_T and eta = 0.3 against the earlier orthogonal mix x' = w x1 + "
                    "sqrt(1-w^2) x2 (w weighs model 1) from a shared z_T; paired differences "
                    + ", ".join(f"{r}: {d:+.3f} +- {se:.3f} ({_resolved(d, se)})" for r, (d, se) in diffs.items())
                    + ".")))
    return out


def verdicts(ds: xr.Dataset) -> list[Verdict]:
    """One verdict per group against the paper's claim, from the measured numbers."""
    runs = set(ds.run.values)
    return [v for group in (_tables12, _figure5, _table3, _table4, _n3, _table10, _variants) for v in group(ds, runs)]

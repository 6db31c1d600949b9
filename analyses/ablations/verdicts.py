"""The ablations' verdicts: one per group against the paper's claim, from the Dataset of
``amdm_geom.analyses.ablations.ablations.compute`` (per run and sample: the target mass ``mass``; per run:
``success``, ``success_se``, ``hard_rate``, ``max_norm_dev``, ``min_logp_z``; coords ``group``
and ``label``).

Every comparison is decided by ``amdm_geom.core.stats`` from the per-sample masses, paired over
samples (every run uses the same seeds): a paired t interval at ``LEVEL`` on the difference,
``decide`` for "A beats B", ``decide_equivalence`` for "A does as well as B" (within
``EQUIVALENCE_MARGIN``) and ``best_of`` (Bonferroni over the rivals) for "A is best of k".
``inconclusive`` when the interval straddles the claim's margin; every comparison says how many
samples would resolve a true difference of ``stats.DELTA`` with power ``stats.POWER``
(``extra["n_to_resolve"]``). A comparison's ``value`` is its mean paired difference (for a
best-of-k claim: against the rival that decides it, ``extra["rival"]``, see ``stats.BestOf``) and
``interval`` that difference's interval at ``level``, so the status agrees with the interval shown.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from amdm_geom.analyses.ablations.runs import FULL, QUICK
from amdm_geom.core import stats
from amdm_geom.core.verdicts import Verdict

__all__ = ["EQUIVALENCE_MARGIN", "LEVEL", "PAIRED", "best_verdict", "paired_verdict", "verdicts"]

#: The confidence level of every comparison (simultaneous over a best-of-k claim's rivals).
LEVEL = stats.LEVEL
#: "Does as well as": the paired difference in success probability lies within +- this.
EQUIVALENCE_MARGIN = stats.DELTA
#: A posterior mass lies in [0, 1]; two runs that agree differ by float64 rounding only.
PAIRED = {"value_range": (0.0, 1.0), "atol": 1e-9}


def _mass(ds: xr.Dataset, run: str) -> np.ndarray:
    return ds.mass.sel(run=run).values.astype(np.float64)


def _s(ds, run) -> str:
    return f"{float(ds.success.sel(run=run)):.3f}"


def _in_group(ds: xr.Dataset, group: str) -> list[str]:
    return [r for r in ds.run.values if str(ds.group.sel(run=r).item()) == group]


def _power(sd: float, status: str, comparisons: int = 1, n_used: int = 0) -> tuple[dict, str]:
    """The sample size that resolves a true difference of ``stats.DELTA``, and the power the
    ``n_used`` samples have for it (extra, and a sentence)."""
    n = stats.n_to_resolve(sd, comparisons=comparisons) if sd > 0 else 0
    power = stats.power_at(n_used, sd, comparisons=comparisons)
    if n:
        text = (f"about {n} samples per arm would resolve a true difference of {stats.DELTA:g} with power "
                f"{stats.POWER:g} (paired sd {sd:.3f}, normal approximation); the {n_used} here have power "
                f"{power:.2f}")
    else:
        why = "every paired difference is equal here" if sd == 0 else "fewer than two samples"
        text = f"{why}, so the sample size that would resolve a difference of {stats.DELTA:g} is unknown"
    said = f"Inconclusive: {text}." if status == "inconclusive" else f"Power: {text}."
    return {"n_to_resolve": n, "delta": stats.DELTA, "power": stats.POWER, "paired_sd": sd,
            "power_at_n": power, "comparisons": comparisons}, said


def paired_verdict(p: stats.Paired, status: str, comparisons: int = 1, sd: float | None = None,
                    **fields) -> Verdict:
    """A verdict on one paired comparison ``p`` (its mean, interval, level, n and test); the power
    sentence uses ``sd`` (default ``p.sd``) over ``comparisons`` simultaneous intervals."""
    extra, said = _power(p.sd if sd is None else sd, status, comparisons, p.n)
    detail = fields.pop("detail")
    return Verdict(status=status, value=p.mean, interval=tuple(float(x) for x in p.interval), level=p.level,
                   n=p.n, test=fields.pop("test", p.test), extra={**extra, **fields.pop("extra", {})},
                   detail=f"{detail} {said}", **fields)


def best_verdict(b: stats.BestOf, **fields) -> Verdict:
    """A verdict on a best-of-k decision ``b`` (the deciding rival's comparison as value and interval)."""
    near = b.comparisons[b.deciding]
    sd = max(c.sd for c in b.comparisons.values())
    others = "; ".join(f"minus {r}: {stats.interval_text(c)}" for r, c in b.comparisons.items())
    fields["detail"] = f"{fields['detail']} Paired differences, {b.claimed} {others}."
    return paired_verdict(near, b.status, len(b.comparisons), sd, test=b.test,
                           extra={"rival": b.deciding, "simultaneous_level": b.level}, **fields)


def _tables12(ds: xr.Dataset, runs: set) -> list[Verdict]:
    if not {"model1", "model2", "amdm", "amdm_swapped"} <= runs:
        return []
    out = []
    for run, key, claim in (("amdm", "ablation_tables12", "AMDM raises fine-grained success"),
                            ("amdm_swapped", "ablation_tables12_swapped", "AMDM raises it with roles swapped")):
        b = stats.best_of({r: _mass(ds, r) for r in (run, "model1", "model2")}, run, LEVEL, **PAIRED)
        out.append(best_verdict(
            b, key=key, claim=claim, where="Tables 1-2 (GMM analogue)",
            measured=f"{_s(ds, run)} vs {_s(ds, b.deciding)}", bound="> both single models", reference=0.0,
            detail=(f"Posterior mass on the fine-grained target (position 0, colour 0): model 1 alone "
                    f"{_s(ds, 'model1')}, model 2 alone {_s(ds, 'model2')}, {ds.label.sel(run=run).item()} "
                    f"{_s(ds, run)}; hard assignments to the target {float(ds.hard_rate.sel(run=run)):.3f}.")))
    return out


def _figure5(ds: xr.Dataset, runs: set) -> list[Verdict]:
    fig5 = _in_group(ds, "figure5")
    if not fig5:
        return []
    s_values = sorted({int(r.rsplit("_s", 1)[1]) for r in fig5})
    large = [s for s in s_values if s >= max(s_values) / 2.5]
    slerp = np.mean([_mass(ds, f"slerp_s{s}") for s in large], axis=0)
    lerp = np.mean([_mass(ds, f"lerp_s{s}") for s in large], axis=0)
    p = stats.paired_interval(slerp, lerp, LEVEL, **PAIRED)
    table = "; ".join(f"s={s}: slerp {_s(ds, f'slerp_s{s}')}, lerp {_s(ds, f'lerp_s{s}')}, "
                      f"orthogonal {_s(ds, f'orthogonal_mix_s{s}')}" for s in s_values)
    success = paired_verdict(
        p, stats.decide(p.interval), key="ablation_figure5_success", claim="slerp beats lerp as s grows",
        where="Figure 5a", measured=f"slerp - lerp {p.mean:+.3f}", bound="> 0", reference=0.0,
        detail=(f"Target mass, per sample averaged over s in {large}: slerp minus lerp {stats.interval_text(p)}. "
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
    b = stats.best_of({f"stage_{s}": _mass(ds, f"stage_{s}") for s in stages}, "stage_early", LEVEL,
                      **PAIRED)
    return [best_verdict(
        b, key="ablation_table3", claim="early aggregation is best", where="Table 3",
        measured=", ".join(f"{k} {v:.3f}" for k, v in stages.items()), bound="early above both", reference=0.0,
        detail=f"Equal windows of {ds.label.sel(run='stage_early').item().split(': ')[1]} and later.")]


def _latent_norm(ds: xr.Dataset) -> float:
    """sqrt(n), about |z_t|, for the runs' latent size n."""
    size = ds.attrs.get("latent_size") or int(np.prod((QUICK if ds.attrs["quick"] else FULL).latent_shape))
    return math.sqrt(int(size))


def _table4(ds: xr.Dataset, runs: set) -> list[Verdict]:
    etas = _in_group(ds, "table4")
    if not etas or "eta_0.3" not in runs:
        return []
    values = {float(r.split("_", 1)[1]): float(ds.success.sel(run=r)) for r in etas}
    paper_range = {r: _mass(ds, r) for r in etas if float(r.split("_", 1)[1]) <= 0.5}
    if len(paper_range) < 2:
        return []
    b = stats.best_of(paper_range, "eta_0.3", LEVEL, **PAIRED)
    best = max(paper_range, key=lambda r: values[float(r.split("_", 1)[1])])
    return [best_verdict(
        b, key="ablation_table4", claim="eta = 0.3 is best in [0, 0.5]", where="Table 4",
        measured=f"0.3 - {b.deciding.split('_', 1)[1]}: {b.value:+.3f}", bound="> every other eta <= 0.5",
        reference=0.0,
        detail=(", ".join(f"eta {e:g}: {v:.3f}" for e, v in sorted(values.items())) + f" (highest mean in "
                f"[0, 0.5]: {best}). eta is in latent-norm units; |z_t| is about {_latent_norm(ds):.0f} here, "
                "so 0.3 moves it by a fraction of a percent."))]


def _n3(ds: xr.Dataset, runs: set) -> list[Verdict]:
    if not {"n3_amdm", "n3_position", "n3_colour", "n3_style"} <= runs:
        return []
    singles = ("n3_position", "n3_colour", "n3_style")
    b = stats.best_of({r: _mass(ds, r) for r in ("n3_amdm", *singles)}, "n3_amdm", LEVEL, **PAIRED)
    return [best_verdict(
        b, key="ablation_n3", claim="AMDM of three raises the triple target", where="Sec. 4.1, Fig. 4 (GMM)",
        measured=f"{_s(ds, 'n3_amdm')} vs {_s(ds, b.deciding)}", bound="> every single model", reference=0.0,
        detail=("Target (position 0, colour 0, style 0) of 27 components; singles "
                + ", ".join(f"{r[3:]} {_s(ds, r)}" for r in singles) + "."))]


def _table10(ds: xr.Dataset, runs: set) -> list[Verdict]:
    cross = _in_group(ds, "table10")
    if not (cross and "amdm" in runs):
        return []
    b = stats.best_of({r: _mass(ds, r) for r in ("amdm", *cross)}, "amdm", LEVEL, **PAIRED)
    return [best_verdict(
        b, key="ablation_table10", claim="AMDM fails across ecosystems", where="App. F.3, Table 10",
        measured=f"same SDE {_s(ds, 'amdm')} vs {_s(ds, b.deciding)}", bound="same SDE > every cross-SDE run",
        reference=0.0,
        detail=("; ".join(f"{ds.label.sel(run=r).item()}: success {_s(ds, r)}, |norm dev| "
                          f"{float(ds.max_norm_dev.sel(run=r)):.3f}, log-density z "
                          f"{float(ds.min_logp_z.sel(run=r)):.1f}" for r in cross)
                + f"; same SDE: success {_s(ds, 'amdm')}, |norm dev| {float(ds.max_norm_dev.sel(run='amdm')):.3f}."))]


def _variants(ds: xr.Dataset, runs: set) -> list[Verdict]:
    out = []
    if {"mean_at_aggregate", "amdm"} <= runs:
        p = stats.paired_interval(_mass(ds, "amdm"), _mass(ds, "mean_at_aggregate"), LEVEL, **PAIRED)
        m = EQUIVALENCE_MARGIN
        out.append(paired_verdict(
            p, stats.decide_equivalence(p.interval, m), key="ablation_mean_variant",
            claim="Algorithm 1's mu does as well as eq. (7)'s", where="Alg. 1 vs eq. (7)",
            measured=f"diff {stats.interval_text(p)}", bound=f"|diff| <= {m:g}", reference=m,
            test=f"{p.test}, equivalence within +-{m:g}",
            detail=(f"mu_i(z_t^i) from the step (Algorithm 1, no extra call) {_s(ds, 'amdm')} against mu_i(z') "
                    f"evaluated at the aggregate (eq. 7 as printed, one more call per model and step) "
                    f"{_s(ds, 'mean_at_aggregate')}; holds when the interval lies inside +-{m:g}.")))
    earlier = [r for r in ("earlier_eta0.3", "earlier_eta40") if r in runs]
    if earlier and "amdm" in runs:
        b = stats.best_of({r: _mass(ds, r) for r in ("amdm", *earlier)}, "amdm", LEVEL, **PAIRED)
        out.append(best_verdict(
            b, key="ablation_earlier_rule", claim="current rule beats the earlier version's",
            where="v1 eq. (9) vs eq. (6)",
            measured=", ".join(f"{ds.label.sel(run=r).item().split(', ')[-1]}: {_s(ds, r)}" for r in earlier),
            bound=f"< {_s(ds, 'amdm')} (current)", reference=0.0,
            detail=("Slerp with independent z_T and eta = 0.3 against the earlier orthogonal mix x' = w x1 + "
                    "sqrt(1-w^2) x2 (w weighs model 1) from a shared z_T.")))
    return out


def verdicts(ds: xr.Dataset) -> list[Verdict]:
    """One verdict per group against the paper's claim, from the measured numbers."""
    runs = set(ds.run.values)
    return [v for group in (_tables12, _figure5, _table3, _table4, _n3, _table10, _variants) for v in group(ds, runs)]

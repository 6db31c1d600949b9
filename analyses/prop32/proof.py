"""The proof of Proposition 3.2's existence claim (App. C, eqs. 28-30) on recorded runs.

Eq. (7) (and Algorithm 1) move the aggregate z' by eta towards model 1's mean mu_1, so
|z~ - mu_1| = |z' - mu_1| - eta (for eta < |z' - mu_1|). Eq. (29) writes |z' - mu_1| + eta:
the opposite sign, and eq. (30)'s interval for eta follows from it. Eq. (7)'s line
z' - eta u_1, u_1 = (z' - mu_1)/|z' - mu_1|, passes through mu_1 and meets model 1's shell
(|z~ - mu_1| = sigma_t sqrt n) at eta = |z' - mu_1| -+ sigma_t sqrt n: the far root is always
positive (it carries z~ through mu_1), the nearer one, eta_1* = |z' - mu_1| - sigma_t sqrt n,
only when z' lies outside that shell. The data decide the nearer one: the small step eq. (30)
centres on.

``proof(store)``, per aggregation step with sigma_t > 0 and per sample (dims ``step``,
``sample``): ``moved`` = |z~ - mu_1| - |z' - mu_1| (-eta under eq. 7, +eta under eq. 29),
``radius_agg`` = |z' - mu_1| / (sigma_t sqrt n), ``eta_own`` = eta_1* (eq. 7's direction; the
centre of eq. 30 as printed is -eta_1*) and ``eta_own_far`` (the far root), and ``eta_partner``:
the eta of smallest magnitude with |z' - eta u_1 - mu_2| = sigma_t sqrt n, with
``eta_partner_far`` the larger root (both NaN where eq. (7)'s line misses model 2's shell); the
roots are ``core.bounds.shift_shell_roots``. ``proof_verdicts`` judges them over runs. Used by
``shell``.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from amdm_geom.analyses.common import (
    finite_samples,
    latent_block,
    open_store,
    sample_slices,
    slot_written_streamed,
    streamed,
)
from amdm_geom.core import bounds, geometry
from amdm_geom.core.verdicts import Verdict, at_least, qualify
from amdm_geom.store import completed_steps, etas, incomplete_note, require

__all__ = ["proof", "proof_table", "proof_verdicts"]

_NAMES = ("moved", "radius_agg", "eta_own", "eta_own_far", "eta_partner", "eta_partner_far")


def _values(agg, shifted, mu1, mu2, r1_shell, r2_shell) -> dict:
    """The per-sample quantities at one step (finite samples only): both roots of eq. (7)'s line
    on each shell (``bounds.shift_shell_roots``), the nearer one and the larger one."""
    r1 = geometry.norm(agg - mu1)
    u = (agg - mu1) / r1[:, None]
    v = agg - mu2
    own_low, own_high = bounds.shift_shell_roots(r1, r1, r1_shell)
    low, high = bounds.shift_shell_roots(np.einsum("ij,ij->i", v, u), geometry.norm(v), r2_shell)
    partner = np.where(np.abs(low) <= np.abs(high), low, high)
    return {"moved": geometry.norm(shifted - mu1) - r1, "radius_agg": r1 / r1_shell, "eta_own": own_low,
            "eta_own_far": own_high, "eta_partner": partner, "eta_partner_far": high}


def _step_slice(ds, k, reads, shells):
    """The per-slice reader of step k for ``streamed``: ``_values`` on one slice of samples
    (``reads``: the aggregate, z~, mu_1 and mu_2 as (variable, model); ``shells``: both radii)."""
    def per_slice(samples):
        blocks = [latent_block(ds, v, k, m, samples) for v, m in reads]
        ok = finite_samples(*blocks)
        return ok, _values(*(b[ok] for b in blocks), *shells) if ok.any() else {m: np.empty(0) for m in _NAMES}

    return per_slice


def proof(store, *, partner: int = 1, chunk: int | None = None) -> xr.Dataset:
    """Eqs. (28)-(30) on one run (see the module's doc); only completed steps are read. The latents
    are streamed, a slice of ``chunk`` samples at a time (``common.sample_slices``), so memory does
    not grow with the number of samples."""
    ds = open_store(store)
    mean = "mu_shift" if "mu_shift" in ds else "mu"
    require(ds, variables=("agg_z", "z_shift", "mu", mean, "model_sigma", "aggregated", "t"))
    eta = etas(ds)[0]
    T, note = int(ds.sizes["step"]), incomplete_note(ds)
    ds = completed_steps(ds)
    n = int(np.prod(ds["agg_z"].shape[2:]))
    slices = sample_slices(ds, "agg_z", chunk)
    reads = (("agg_z", None), ("z_shift", 0), (mean, 0), ("mu", partner))
    steps = [k for k in range(ds.sizes["step"])
             if bool(ds.aggregated[k]) and float(ds.model_sigma[0, k]) > 0 and float(ds.model_sigma[partner, k]) > 0
             and all(slot_written_streamed(ds, v, k, m, slices) for v, m in reads)]
    if not steps:
        raise ValueError("the proof of Prop. 3.2 needs aggregation steps with sigma_t > 0: record a run with "
                         "--ddim-eta > 0" + (f" ({note})" if note else ""))
    cols: dict[str, list] = {name: [] for name in _NAMES}
    finite = []
    for k in steps:
        shells = (float(ds.model_sigma[0, k]) * math.sqrt(n), float(ds.model_sigma[partner, k]) * math.sqrt(n))
        values, ok = streamed(slices, _step_slice(ds, k, reads, shells))
        for name, v in values.items():
            cols[name].append(v)
        finite.append(ok)
    res = xr.Dataset({name: (("step", "sample"), np.stack(v)) for name, v in cols.items()},
                     coords={"step": steps, "sample": ds.sample.values, "t": ("step", ds.t.values[steps]),
                             "t_index": ("step", [T - 1 - k for k in steps]),
                             "sigma": ("step", ds.model_sigma.values[0, steps])})
    res["finite"] = (("step", "sample"), np.stack(finite))
    res.attrs.update({"n": n, "eta": eta, "partner": partner, "incomplete": note})
    return res


def proof_table(res: xr.Dataset):
    """Per step: the medians over samples of eta_1*, eta_2* (both in eq. 7's direction) and
    |z' - mu_1| / (sigma_t sqrt n), and the share of samples with eta_2* > 0."""
    with np.errstate(invalid="ignore"):
        table = xr.Dataset({"eta_own_median": res.eta_own.median("sample"),
                            "eta_partner_median": res.eta_partner.median("sample"),
                            "radius_agg_median": res.radius_agg.median("sample"),
                            "partner_positive_share": (res.eta_partner > 0).where(res.finite).mean("sample")})
    return table.to_dataframe().set_index("t_index")


def _cells(runs: dict[str, xr.Dataset], var: str) -> np.ndarray:
    return np.concatenate([r[var].values[r.finite.values] for r in runs.values()])


def _existence(runs: dict[str, xr.Dataset], names: str) -> Verdict:
    """Eq. (30)'s step on model 1's shell: the nearer root of eq. (7)'s line decides; the far
    root (through mu_1) is positive whatever the data (``bounds.shift_shell_roots``)."""
    own, far, radius = _cells(runs, "eta_own"), _cells(runs, "eta_own_far"), _cells(runs, "radius_agg")
    cells, positive = len(own), int((own > 0).sum())
    inside = radius < 1
    need = np.clip(1 - radius, 0, None)
    med = (lambda a: float(np.median(a)) if len(a) else math.nan)  # noqa: E731
    return Verdict(
        key="prop32_existence", claim="eq. (30): the nearest eta onto model 1's shell along eq. (7) is > 0",
        where="Prop. 3.2 (existence), eqs. (7), (29)-(30)", status="holds" if positive == cells else "violated",
        measured=f"nearest root eta_1* > 0 on {positive}/{cells} cells", bound="all cells",
        value=positive / cells if cells else math.nan, reference=1.0, n=cells,
        test="sign of the smallest-|eta| root eta_1* = |z' - mu_1| - sigma sqrt n per (step, sample) cell",
        detail=(f"Over runs {names}: eq. (7)'s line z' - eta u_1 passes through mu_1 (at eta = |z' - mu_1|) and meets "
                f"model 1's shell at eta = |z' - mu_1| -+ sigma sqrt n. As mathematics a positive eta always exists: "
                f"the far root |z' - mu_1| + sigma sqrt n is > 0 on {int((far > 0).sum())}/{cells} cells "
                f"({int(inside.sum())} with z' inside the shell), but it carries z~ through mu_1 to the shell's far "
                f"side (eta = {med(radius + 1):.2f} sigma sqrt n, median), a step eq. (30) "
                f"does not mean. What the data decide is the nearest root eta_1* = |z' - mu_1| - sigma sqrt n: z' lies "
                f"at |z' - mu_1| = {med(radius):.3f} sigma sqrt n (median; "
                f"{float(np.min(radius, initial=np.inf)):.3f}..{float(np.max(radius, initial=-np.inf)):.3f}), so "
                f"eta_1* is {med(own):.3g} (median): negative where z' is inside the shell, where no step "
                "0 < eta < |z' - mu_1| reaches it and eq. (7) with a small eta > 0 moves z~ further in. "
                "As printed, eq. (30) centres eta on sigma sqrt n - |z' - mu_1| = -eta_1*, "
                "positive there: a small positive step exists as printed only through eq. (29)'s sign. A positive eta "
                f"short of mu_1 reaches A_1(eps) only for eps > 1 - |z' - mu_1|/(sigma sqrt n) = {med(need):.3f} "
                "(median)."),
        extra={"eta_own_median": med(own), "far_root_positive": int((far > 0).sum())})


def _partner(runs: dict[str, xr.Dataset], names: str, etas) -> Verdict:
    """The nearest eta along eq. (7)'s line onto model 2's shell, and whether any positive one exists."""
    partner, far, radius = _cells(runs, "eta_partner"), _cells(runs, "eta_partner_far"), _cells(runs, "radius_agg")
    cells = len(partner)
    reach = np.isfinite(partner)
    ahead = int((partner[reach] > 0).sum())
    negative = reach & ~(partner > 0)
    return Verdict(
        key="prop32_partner_eta", claim="the nearest eta onto model 2's shell along eq. (7) is > 0",
        where="Prop. 3.2, eqs. (7), (26)", status="holds" if ahead == cells else "violated",
        measured=f"nearest root eta_2* > 0 on {ahead}/{cells} cells",
        bound=f"all; the runs' eta {', '.join(f'{e:g}' for e in etas)}",
        value=ahead / cells if cells else math.nan, reference=1.0, n=cells,
        test="the root of |z' - eta u_1 - mu_2| = sigma sqrt n of smallest |eta|, per cell",
        detail=(f"Over runs {names}: along eq. (7)'s line the nearest eta that puts z~ on model 2's shell is "
                + (f"{float(np.median(partner[reach])):.3g} (median; {float(partner[reach].min()):.3g}.."
                   f"{float(partner[reach].max()):.3g}), " if reach.any() else "")
                + f"positive on {ahead}, negative on {int(reach.sum()) - ahead} and absent (the line misses the "
                f"shell) on {cells - int(reach.sum())} of {cells} cells. A positive root (the far one) exists on "
                f"{int((far[negative] > 0).sum())} of the {int(negative.sum())} cells whose nearest root is negative "
                f"({int((negative & (radius < 1)).sum())} of them with z' inside model 1's shell): some eta > 0 "
                "reaches model 2's shell there, only a longer step than the negative root's."),
        extra={"far_root_positive": int((far > 0).sum())})


def proof_verdicts(runs: dict[str, xr.Dataset]) -> list[Verdict]:
    """The sign of eta in eq. (29) against eq. (7)'s move, eq. (30)'s step onto model 1's shell,
    and the step onto model 2's shell, over runs (``{name: proof(...)}``): the nearer root of
    eq. (7)'s line decides; a positive (far) root exists far more often and is reported beside it."""
    etas = np.array([r.attrs["eta"] for r in runs.values()])
    moved = np.concatenate([(r.moved / r.attrs["eta"]).values[r.finite.values] for r in runs.values()
                            if r.attrs["eta"] > 0]) if (etas > 0).any() else np.empty(0)
    nonfinite = sum(int((~r.finite).any("step").sum()) for r in runs.values())
    partial = {"nonfinite": nonfinite, "total": sum(r.sizes["sample"] for r in runs.values()),
               "incomplete": [f"{r.attrs['incomplete']} ({name})" for name, r in runs.items() if r.attrs["incomplete"]]}
    names = ", ".join(f"{name} (eta {r.attrs['eta']:g})" for name, r in runs.items())
    if len(moved):
        sign = "holds" if bool(at_least(moved, 1.0, rtol=1e-4).all()) else "violated"
        med = float(np.median(moved))
        out = [Verdict(
            key="prop32_eta_sign", claim="eq. (29): z~ is eta further from mu_1",
            where="Prop. 3.2 proof, eqs. (28)-(29)",
            status=sign, measured=f"(|z~-mu_1| - |z'-mu_1|)/eta {med:.4f}", bound="+1 (eq. 29); -1 (eq. 7)",
            value=med, reference=1.0, n=len(moved), test="median over (step, sample) cells of the change in distance",
            detail=(f"Over runs {names}, {len(moved)} finite cells: the shift changes |z - mu_1| by "
                    f"{float(moved.min()):.4f}..{float(moved.max()):.4f} eta (above -1 only where eta exceeds "
                    "|z' - mu_1| and the shift carries z' past mu_1). Eq. (7), eq. (28) (the density's gradient points "
                    "to mu_1) and Algorithm 1 move z' towards mu_1, so the distance shrinks by eta; eq. (29) adds eta, "
                    "and eq. (30)'s interval for eta, sigma sqrt n (1 -+ eps) - |z' - mu_1|, has the sign flipped."))]
    else:
        out = []
    out.append(_existence(runs, names))
    out.append(_partner(runs, names, etas))
    return [qualify(v, **partial) for v in out]

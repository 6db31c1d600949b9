"""The proof of Proposition 3.2's existence claim (App. C, eqs. 28-30) on recorded runs.

Eq. (7) (and Algorithm 1) move the aggregate z' by eta towards model 1's mean mu_1, so
|z~ - mu_1| = |z' - mu_1| - eta (for eta < |z' - mu_1|). Eq. (29) writes |z' - mu_1| + eta:
the opposite sign, and eq. (30)'s interval for eta follows from it. With eq. (7)'s own
direction, the step that puts z~ on model 1's shell (|z~ - mu_1| = sigma_t sqrt n) is
eta_1* = |z' - mu_1| - sigma_t sqrt n, positive only when z' lies outside that shell.

``proof(store)``, per aggregation step with sigma_t > 0 and per sample (dims ``step``,
``sample``): ``moved`` = |z~ - mu_1| - |z' - mu_1| (-eta under eq. 7, +eta under eq. 29),
``radius_agg`` = |z' - mu_1| / (sigma_t sqrt n), ``eta_own`` = eta_1* (eq. 7's direction; the
centre of eq. 30 as printed is -eta_1*), and ``eta_partner``: the eta of smallest magnitude with
|z' - eta u_1 - mu_2| = sigma_t sqrt n, u_1 = (z' - mu_1)/|z' - mu_1| (NaN where eq. (7)'s line
misses model 2's shell). ``proof_verdicts`` judges them over runs. Used by ``shell``.
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
from amdm_geom.core import geometry
from amdm_geom.core.verdicts import Verdict, at_least, qualify
from amdm_geom.store import completed_steps, etas, incomplete_note, require

__all__ = ["proof", "proof_table", "proof_verdicts"]

_NAMES = ("moved", "radius_agg", "eta_own", "eta_partner")


def _values(agg, shifted, mu1, mu2, r1_shell, r2_shell) -> dict:
    """The per-sample quantities at one step (finite samples only)."""
    r1 = geometry.norm(agg - mu1)
    u = (agg - mu1) / r1[:, None]
    v = agg - mu2
    b = np.einsum("ij,ij->i", v, u)
    disc = b**2 - np.einsum("ij,ij->i", v, v) + r2_shell**2
    with np.errstate(invalid="ignore"):
        root = np.sqrt(disc)
    low, high = b - root, b + root
    partner = np.where(np.abs(low) <= np.abs(high), low, high)
    return {"moved": geometry.norm(shifted - mu1) - r1, "radius_agg": r1 / r1_shell, "eta_own": r1 - r1_shell,
            "eta_partner": np.where(disc >= 0, partner, np.nan)}


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


def proof_verdicts(runs: dict[str, xr.Dataset]) -> list[Verdict]:
    """The sign of eta in eq. (29) against eq. (7)'s move, the existence claim as printed, and
    the eta that would reach model 2's shell, over runs (``{name: proof(...)}``)."""
    etas = np.array([r.attrs["eta"] for r in runs.values()])
    moved = np.concatenate([(r.moved / r.attrs["eta"]).values[r.finite.values] for r in runs.values()
                            if r.attrs["eta"] > 0]) if (etas > 0).any() else np.empty(0)
    own, radius, partner = _cells(runs, "eta_own"), _cells(runs, "radius_agg"), _cells(runs, "eta_partner")
    cells = len(own)
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
    positive = int((own > 0).sum())
    need = np.clip(1 - radius, 0, None)
    out.append(Verdict(
        key="prop32_existence", claim="an eta > 0 in eq. (7) puts z~ on model 1's shell",
        where="Prop. 3.2 (existence), eqs. (29)-(30)", status="holds" if positive == cells else "violated",
        measured=f"eta_1* > 0 on {positive}/{cells} cells", bound="all (a step size eta > 0)",
        value=positive / cells if cells else math.nan, reference=1.0, n=cells,
        test="sign of eta_1* = |z' - mu_1| - sigma sqrt n per (step, sample) cell",
        detail=(f"Over runs {names}: z' lies at |z' - mu_1| = {float(np.median(radius)):.3f} sigma sqrt n (median; "
                f"{float(radius.min()):.3f}..{float(radius.max()):.3f}), so the eta along eq. (7) that puts z~ on "
                f"model 1's shell, eta_1* = |z' - mu_1| - sigma sqrt n, is {float(np.median(own)):.3g} (median; "
                f"{float(own.min()):.3g}..{float(own.max()):.3g}): negative where z' is inside the shell, and eq. (7) "
                "with eta > 0 then moves z~ further in. As printed, eq. (30) centres eta on sigma sqrt n - |z' - mu_1| "
                f"= -eta_1*, positive there: existence holds as printed only through eq. (29)'s sign. A positive eta "
                f"reaches A_1(eps) only for eps >= 1 - |z' - mu_1|/(sigma sqrt n) = {float(np.median(need)):.3f} "
                "(median)."),
        extra={"eta_own_median": float(np.median(own)) if cells else math.nan}))
    reach = np.isfinite(partner)
    ahead = int((partner[reach] > 0).sum())
    out.append(Verdict(
        key="prop32_partner_eta", claim="an eta > 0 in eq. (7) puts z~ on model 2's shell",
        where="Prop. 3.2, eqs. (7), (26)", status="holds" if ahead == cells else "violated",
        measured=f"eta_2* > 0 on {ahead}/{cells} cells",
        bound=f"all; the runs' eta {', '.join(f'{e:g}' for e in etas)}",
        value=ahead / cells if cells else math.nan, reference=1.0, n=cells,
        test="the root of |z' - eta u_1 - mu_2| = sigma sqrt n of smallest |eta|, per cell",
        detail=(f"Over runs {names}: along eq. (7)'s line the eta that puts z~ on model 2's shell is "
                + (f"{float(np.median(partner[reach])):.3g} (median; {float(partner[reach].min()):.3g}.."
                   f"{float(partner[reach].max()):.3g}), " if reach.any() else "")
                + f"positive on {ahead}, negative on {int(reach.sum()) - ahead} and absent (the line misses the "
                f"shell) on {cells - int(reach.sum())} of {cells} cells.")))
    return [qualify(v, **partial) for v in out]

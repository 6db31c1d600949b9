"""Checks of the sampler and its trace stores: a one-model run is diffusers' DDIM loop bit for
bit, and every recorded step obeys eq. (4) (mu = A z + B eps, z_next = mu + noise) and eq. (7)
(the shift moves z' exactly eta towards the mean).

Follows the analysis contract (``amdm_geom.analyses``): ``compute(stores)`` takes
``{name: path}`` of trace stores and returns an ``xarray.Dataset`` of the largest residuals per
store (written as ``residuals.zarr`` and ``residuals.csv``); ``verdicts(ds)`` turns them into
verdict rows.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from diffusers import DDIMScheduler

from amdm_geom import geometry
from amdm_geom.denoisers.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import completed_steps, incomplete_note, is_complete, open_run, require, run_config
from amdm_geom.verdicts import Verdict, at_most, qualify

from .common import finite_samples, slot_written

__all__ = ["NAME", "RESULT", "STORES", "SUMMARY", "compute", "one_model_matches_diffusers", "plot", "tables",
           "verdicts"]

NAME = "trace_checks"
SUMMARY = "every recorded step obeys eq. (4) and every shift eq. (7); a one-model run is diffusers' DDIM loop"
STORES = "required"
RESULT = "residuals"


def one_model_matches_diffusers(steps: int = 20, ddim_eta: float = 1.0, seeds=(0, 1)) -> float:
    """Max |difference| between a one-model AMDM run and a plain loop over diffusers'
    ``DDIMScheduler.step`` with the same exact GMM model and per-sample noise (0 = bit for bit)."""
    fam = fine_grained_family((4, 16, 16), seed=0)
    model, cond = fam.model(), fam.condition(position=0)
    config = SamplerConfig(num_inference_steps=steps, weights=(), ddim_eta=ddim_eta)
    out = AMDMSampler([model], [cond], config).sample(seeds)
    sched = DDIMScheduler.from_config(model.scheduler.config)
    sched.set_timesteps(steps)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    z = torch.stack([torch.randn(model.latent_shape, generator=g) for g in gens])
    for t in sched.timesteps:
        eps = model(z, int(t), cond)
        xi = torch.stack([torch.randn(model.latent_shape, generator=g) for g in gens]) if ddim_eta > 0 else None
        z = sched.step(eps, int(t), z, eta=ddim_eta, variance_noise=xi).prev_sample
    return float((out.z0 - z).abs().max())


def _flat(da: xr.DataArray, step: int, model: int | None = None) -> np.ndarray:
    sel = da.isel(step=step) if model is None else da.isel(step=step, model=model)
    return sel.values.astype(np.float64).reshape(sel.sizes["sample"], -1)


#: What the checks read: eq. (4)'s inputs and outputs, eq. (7)'s shift, and the schedule.
_NEEDS = ("z", "eps", "mu", "noise", "z_next", "mu_shift", "z_shift", "agg_z", "model_A", "model_B", "aggregated")
_HINTS = {v: f"record the hook {'agg.z' if v == 'agg_z' else 'model*.' + v}"
          for v in ("z", "eps", "mu", "noise", "z_next", "mu_shift", "z_shift", "agg_z")}


def _open_checked(path) -> xr.Dataset:
    ds = open_run(path) if not isinstance(path, xr.Dataset) else path
    require(ds, variables=_NEEDS, attrs=("config", "complete", "steps_completed"), hints=_HINTS)
    return ds


def _store_residuals(path) -> dict:
    """The largest residuals of eqs. (4) and (7) on a store's completed steps, over the samples
    whose every value a check reads is finite; the others are counted (``nonfinite`` of
    ``samples``), as is an incomplete store (``incomplete``)."""
    ds = _open_checked(path)
    cfg = run_config(ds)
    etas = cfg["etas"]
    note = incomplete_note(ds)
    complete = is_complete(ds)
    ds = completed_steps(ds)
    mean_res = noise_res = shift_res = 0.0
    scale, overshoots, shifts = 0.0, 0, 0
    bad = np.zeros(ds.sizes["sample"], dtype=bool)
    for k in range(ds.sizes["step"]):
        for i in range(ds.sizes["model"]):
            z = _flat(ds.z, k, i)
            if not slot_written(z):  # a model that stopped after the window
                continue
            eps, mu, noise, z_next = (_flat(ds[v], k, i) for v in ("eps", "mu", "noise", "z_next"))
            ok = finite_samples(z, eps, mu, noise, z_next)
            bad |= ~ok
            A, B = float(ds.model_A[i, k]), float(ds.model_B[i, k])
            if ok.any():
                z, eps, mu, noise, z_next = (x[ok] for x in (z, eps, mu, noise, z_next))
                scale = max(scale, float(np.abs(z).max()))
                mean_res = max(mean_res, float(np.abs(mu - (A * z + B * eps)).max()))
                noise_res = max(noise_res, float(np.abs(z_next - (mu + noise)).max()))
            if bool(ds.aggregated[k]):
                agg, mu_s, z_s = _flat(ds.agg_z, k), _flat(ds.mu_shift, k, i), _flat(ds.z_shift, k, i)
                ok = finite_samples(agg, mu_s, z_s)
                bad |= ~ok
                if not ok.any():
                    continue
                agg, mu_s, z_s = agg[ok], mu_s[ok], z_s[ok]
                # eq. (7) moves z' by exactly eta along (z' - mu); when eta > |z' - mu| that carries
                # it past mu (an overshoot), so the distance to mu does not drop by eta there
                shift_res = max(shift_res, float(np.abs(geometry.norm(z_s - agg) - etas[i]).max()))
                overshoots += int((geometry.norm(agg - mu_s) < etas[i]).sum())
                shifts += agg.shape[0]
    return {"mean_residual": mean_res, "noise_residual": noise_res, "shift_residual": shift_res,
            "latent_scale": scale, "complete": complete, "overshoots": overshoots, "shifts": shifts,
            "nonfinite": int(bad.sum()), "samples": int(ds.sizes["sample"]), "incomplete": note}


def compute(stores: dict, *, quick: bool = False, seed: int = 0, runs=None) -> xr.Dataset:
    """Residuals of eq. (4) and eq. (7) per store (``{name: path or opened store}``), and the
    one-model check. Every store is checked (``require``) before any is read. ``quick``,
    ``seed`` and ``runs`` change nothing: every step is checked, the one-model check has fixed
    seeds."""
    names = list(stores)
    for n in names:
        _open_checked(stores[n])
    rows = [_store_residuals(stores[n]) for n in names]
    data = {key: ("store", [r[key] for r in rows]) for key in rows[0]} if rows else {}
    if rows:
        data["incomplete"] = ("store", np.array([r["incomplete"] for r in rows], dtype=object))
    ds = xr.Dataset(data, coords={"store": names})
    ds.attrs["one_model_max_diff"] = one_model_matches_diffusers()
    return ds


def _partial(ds: xr.Dataset) -> dict:
    """What the stores left out, as ``qualify``'s keywords."""
    if "nonfinite" not in ds:
        return {}
    notes = [f"{note} ({name})" for name, note in zip(ds.store.values, ds.incomplete.values) if note]
    return {"nonfinite": int(ds.nonfinite.sum()), "total": int(ds.samples.sum()), "incomplete": notes}


def verdicts(ds: xr.Dataset, *, rel_tol: float = 1e-5) -> list[Verdict]:
    """The one-model check (no store), and eqs. (4) and (7) over every store's finite samples
    on its completed steps; those two say first what was left out and then never hold."""
    diff = float(ds.attrs["one_model_max_diff"])
    out = [Verdict(
        key="sampler_one_model", claim="AMDM with N = 1 = diffusers DDIM loop", where="Alg. 1, eq. (4)",
        status="holds" if diff == 0.0 else "violated", measured=f"max |diff| {diff:.1e}", bound="0 (bit for bit)",
        value=diff, reference=0.0,
        detail="Same exact GMM model and per-sample noise, DDIM eta = 1, 20 steps: the sampler's state update is "
               "diffusers' own step."),
    ]
    partial = _partial(ds)
    # one row each for eq. (4) and eq. (7) over every store, the worst store named
    tol = rel_tol * np.maximum(1.0, ds.latent_scale.values)
    worst4 = np.maximum(ds.mean_residual.values, ds.noise_residual.values)
    i4 = int(np.argmax(worst4 / tol))
    out.append(qualify(Verdict(
        key="trace_eq4", claim=f"{ds.sizes['store']} probe stores obey eq. (4)", where="eq. (4)",
        status="holds" if bool(np.all(at_most(worst4, tol))) else "violated",
        measured=f"max residual {worst4.max():.1e}",
        bound=f"<= {rel_tol:.0e} x |z| (float32)", value=float(worst4.max()), reference=float(tol[i4]),
        detail=(f"mu = A z + B eps and z_next = mu + noise on every recorded step of "
                f"{', '.join(map(str, ds.store.values))}; largest relative to its tolerance in {ds.store.values[i4]}. "
                + ("All stores complete." if bool(ds.complete.all()) else "")).rstrip()),
        **partial))
    shift = ds.shift_residual.values
    over, total = int(ds.overshoots.sum()), int(ds.shifts.sum())
    per = ", ".join(f"{n} {int(o)}/{int(t)}"
                    for n, o, t in zip(ds.store.values, ds.overshoots.values, ds.shifts.values) if t)
    out.append(qualify(Verdict(
        key="trace_eq7", claim="every recorded shift has length eta", where="eq. (7)",
        status="holds" if bool(np.all(at_most(shift, 10 * tol))) else "violated",
        measured=f"max |moved - eta| {shift.max():.1e}",
        bound=f"<= {10 * rel_tol:.0e} x |z|", value=float(shift.max()),
        reference=float(10 * tol[int(np.argmax(shift))]),
        detail=(f"|z~ - z'| against eta on every aggregation step. On {over} of {total} shifts eta exceeded |z' - mu|, "
                f"so the shift carried z' past the mean instead of towards its shell ({per}).")), **partial))
    return out


def plot(ds: xr.Dataset) -> dict:
    """No figures: the residuals are a table."""
    return {}


def tables(ds: xr.Dataset) -> dict:
    """``{"residuals": one row per store}``."""
    return {"residuals": ds.to_dataframe()}

"""Checks of the sampler and its trace stores: a one-model run is diffusers' DDIM loop bit for
bit, and every recorded step obeys eq. (4) (mu = A z + B eps, z_next = mu + noise) and eq. (7)
(the shift moves z' exactly eta towards the mean).

``compute(stores)`` takes ``{name: path}`` of trace stores and returns an ``xarray.Dataset`` of
the largest residuals per store; ``verdicts(ds)`` turns them into verdict rows.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from diffusers import DDIMScheduler

from amdm_geom import geometry
from amdm_geom.denoisers.gmm import fine_grained_family
from amdm_geom.sampler import AMDMSampler, SamplerConfig
from amdm_geom.store import open_run, run_config
from amdm_geom.verdicts import Verdict

__all__ = ["compute", "one_model_matches_diffusers", "verdicts"]


def one_model_matches_diffusers(steps: int = 20, ddim_eta: float = 1.0, seeds=(0, 1)) -> float:
    """Max |difference| between a one-model AMDM run and a plain loop over diffusers'
    ``DDIMScheduler.step`` with the same exact GMM model and per-sample noise (0 = bit for bit)."""
    fam = fine_grained_family((4, 16, 16), seed=0)
    model, cond = fam.model(), fam.condition(position=0)
    out = AMDMSampler([model], [cond], SamplerConfig(num_inference_steps=steps, weights=(), ddim_eta=ddim_eta)).sample(seeds)
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


def _store_residuals(path) -> dict:
    ds = open_run(path)
    cfg = run_config(ds)
    etas = cfg["etas"]
    mean_res = noise_res = shift_res = 0.0
    scale, overshoots, shifts = 0.0, 0, 0
    for k in range(int(ds.attrs["steps_completed"])):
        for i in range(ds.sizes["model"]):
            z = _flat(ds.z, k, i)
            if np.isnan(z).all():
                continue
            eps, mu, noise, z_next = (_flat(ds[v], k, i) for v in ("eps", "mu", "noise", "z_next"))
            A, B = float(ds.model_A[i, k]), float(ds.model_B[i, k])
            scale = max(scale, float(np.abs(z).max()))
            mean_res = max(mean_res, float(np.abs(mu - (A * z + B * eps)).max()))
            noise_res = max(noise_res, float(np.abs(z_next - (mu + noise)).max()))
            if bool(ds.aggregated[k]):
                agg, mu_s, z_s = _flat(ds.agg_z, k), _flat(ds.mu_shift, k, i), _flat(ds.z_shift, k, i)
                # eq. (7) moves z' by exactly eta along (z' - mu); when eta > |z' - mu| that carries
                # it past mu (an overshoot), so the distance to mu does not drop by eta there
                shift_res = max(shift_res, float(np.abs(geometry.norm(z_s - agg) - etas[i]).max()))
                overshoots += int((geometry.norm(agg - mu_s) < etas[i]).sum())
                shifts += agg.shape[0]
    return {"mean_residual": mean_res, "noise_residual": noise_res, "shift_residual": shift_res,
            "latent_scale": scale, "complete": bool(ds.attrs["complete"]),
            "overshoots": overshoots, "shifts": shifts}


def compute(stores: dict) -> xr.Dataset:
    """Residuals of eq. (4) and eq. (7) per store, and the one-model check."""
    names = list(stores)
    rows = [_store_residuals(stores[n]) for n in names]
    data = {key: ("store", [r[key] for r in rows]) for key in rows[0]} if rows else {}
    ds = xr.Dataset(data, coords={"store": names})
    ds.attrs["one_model_max_diff"] = one_model_matches_diffusers()
    return ds


def verdicts(ds: xr.Dataset, *, rel_tol: float = 1e-5) -> list[Verdict]:
    diff = float(ds.attrs["one_model_max_diff"])
    out = [Verdict(
        key="sampler_one_model", claim="AMDM with N = 1 = diffusers DDIM loop", where="Alg. 1, eq. (4)",
        status="holds" if diff == 0.0 else "violated", measured=f"max |diff| {diff:.1e}", bound="0 (bit for bit)",
        value=diff, reference=0.0,
        detail="Same exact GMM model and per-sample noise, DDIM eta = 1, 20 steps: the sampler's state update is "
               "diffusers' own step."),
    ]
    for name in ds.store.values:
        r = ds.sel(store=name)
        tol = rel_tol * max(1.0, float(r.latent_scale))
        worst = max(float(r.mean_residual), float(r.noise_residual))
        out.append(Verdict(
            key=f"trace_eq4_{name}", claim=f"{name}: steps obey eq. (4)", where="eq. (4)",
            status="holds" if worst <= tol else "violated", measured=f"max residual {worst:.1e}",
            bound=f"<= {tol:.1e} (float32)", value=worst, reference=tol,
            detail=f"mu = A z + B eps and z_next = mu + noise on every recorded step of {name} "
                   f"({'complete' if bool(r.complete) else 'INCOMPLETE'} store)."))
        shift = float(r.shift_residual)
        over, total = int(r.overshoots), int(r.shifts)
        out.append(Verdict(
            key=f"trace_eq7_{name}", claim=f"{name}: |z~ - z'| = eta", where="eq. (7)",
            status="holds" if shift <= 10 * tol else "violated", measured=f"max |moved - eta| {shift:.1e}",
            bound=f"<= {10 * tol:.1e}", value=shift, reference=10 * tol,
            detail=f"The shift's length against eta on every aggregation step. On {over} of {total} shifts eta "
                   "exceeded |z' - mu|, so the shift carried z' past the mean instead of towards its shell."))
    return out

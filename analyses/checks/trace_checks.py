"""Checks of the sampler and its trace stores: a one-model run is diffusers' DDIM loop bit for
bit, and every recorded step obeys eq. (4) (mu = A z + B eps, z_next = mu + noise) and eq. (7)
(the shift moves z' exactly eta towards the mean).

The analysis ``TraceChecks`` (``amdm_geom.analyses.base.Analysis``): ``compute(stores)`` takes
``{name: path}`` of trace stores and returns an ``xarray.Dataset`` of the largest residuals per
store (written as ``residuals.zarr`` and ``residuals.csv``); ``verdicts(ds)`` turns them into
verdict rows.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import xarray as xr
from diffusers import DDIMScheduler

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.common import finite_samples, pooled_partial, slot_written
from amdm_geom.core import geometry
from amdm_geom.core.verdicts import CHECK_ULPS, Verdict, implementation_check, qualify, resolution
from amdm_geom.models.flow_gmm import flow_family_model
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import (
    built_of,
    completed_steps,
    etas,
    incomplete_note,
    is_complete,
    open_run,
    require,
    step_input,
    step_kinds,
)

__all__ = ["CAPTIONS", "NAME", "TraceChecks", "compute", "one_model_check", "one_model_flow_check",
           "one_model_matches_diffusers", "plot", "tables", "verdicts"]

NAME = "trace_checks"
#: No captions: ``plot`` draws no figure (the residuals are a table).
CAPTIONS: dict[str, str] = {}


def one_model_check(steps: int = 20, ddim_eta: float = 1.0, seeds=(0, 1)) -> tuple[float, float]:
    """``(max |difference|, max |z0|)`` between a one-model AMDM run and a plain loop over
    diffusers' ``DDIMScheduler.step`` with the same exact GMM model and per-sample noise
    (difference 0 = bit for bit; max |z0| of the diffusers loop is the values' scale)."""
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
    return float((out.z0 - z).abs().max()), float(z.abs().max())


def one_model_flow_check(steps: int = 20, stochastic: bool = True, seeds=(0, 1)) -> tuple[float, float]:
    """``(max |difference|, max |z0|)`` between a one-model AMDM run of an exact flow GMM model
    and a plain loop over diffusers' ``FlowMatchEulerDiscreteScheduler.step`` (App. G), with its
    stochastic step drawing from the same per-sample generators (0 = bit for bit)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    fam = fine_grained_family((4, 16, 16), seed=0)
    model, cond = flow_family_model(fam, shift=3.0, stochastic=stochastic), fam.condition(position=0)
    out = AMDMSampler([model], [cond], SamplerConfig(num_inference_steps=steps, weights=())).sample(seeds)
    sched = FlowMatchEulerDiscreteScheduler.from_config(model.scheduler.config)
    sched.set_timesteps(steps)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    z = torch.stack([torch.randn(model.latent_shape, generator=g) for g in gens])
    for t in sched.timesteps:
        z = sched.step(model(z, t, cond), t, z, generator=gens).prev_sample
    return float((out.z0 - z).abs().max()), float(z.abs().max())


def one_model_matches_diffusers(steps: int = 20, ddim_eta: float = 1.0, seeds=(0, 1)) -> float:
    """Max |difference| between a one-model AMDM run and a plain loop over diffusers'
    ``DDIMScheduler.step`` with the same exact GMM model and per-sample noise (0 = bit for bit)."""
    return one_model_check(steps, ddim_eta, seeds)[0]


def _flat(da: xr.DataArray, step: int, model: int | None = None) -> np.ndarray:
    sel = da.isel(step=step) if model is None else da.isel(step=step, model=model)
    return sel.values.astype(np.float64).reshape(sel.sizes["sample"], -1)


#: What the checks read: eq. (4)'s inputs and outputs (a flow store's v in place of eps), eq. (7)'s
#: shift, and the schedule.
_NEEDS = ("z", "mu", "noise", "z_next", "mu_shift", "z_shift", "agg_z", "model_A", "model_B", "aggregated")
_HINTS = {v: f"record the hook {'agg.z' if v == 'agg_z' else 'model*.' + v}"
          for v in ("z", "eps", "v", "mu", "noise", "z_next", "mu_shift", "z_shift", "agg_z")}


def _open_checked(path) -> xr.Dataset:
    ds = open_run(path) if not isinstance(path, xr.Dataset) else path
    require(ds, variables=_NEEDS, attrs=("complete", "steps_completed"), hints=_HINTS)
    require(ds, variables=sorted({step_input(ds, i) for i in range(ds.sizes["model"])}), hints=_HINTS)
    return ds


def _store_dtype(ds: xr.Dataset) -> str:
    """The coarsest dtype the stored values went through: the store's, the arrays', the models'."""
    names = [str(ds.attrs.get("dtype", "")), str(ds.mu.dtype)]
    names += [m.get("dtype", "") for m in built_of(ds).models if isinstance(m, dict)]
    names = [n for n in names if n]
    return max(names, key=resolution)


def _store_residuals(path) -> dict:
    """The largest residuals of eqs. (4) and (7) on a store's completed steps, over the samples
    whose every value a check reads is finite, absolute and in units of their tolerance
    (``CHECK_ULPS`` machine epsilons of the store's dtype times the values' scale, per step and
    model; for mu = A z + B eps at least float32's, as diffusers' step rounds its coefficients
    from float32 ``alphas_cumprod`` in every dtype, and the scale the largest term it sums, bounded by
    A |z| + (|B| + 2A) |eps|; for z_next = mu + noise max(|z_next|, |mu|); for the shift's
    length |z~| + |z'|). The others are counted (``nonfinite`` of ``samples``), as is an
    incomplete store (``incomplete``)."""
    ds = _open_checked(path)
    eta = etas(ds)
    dtype = _store_dtype(ds)
    unit = CHECK_ULPS * resolution(dtype)
    unit_mean = CHECK_ULPS * resolution(dtype, "float32")  # diffusers' step: float32 alphas_cumprod
    note, complete = incomplete_note(ds), is_complete(ds)
    ds = completed_steps(ds)
    r = dict(mean_residual=0.0, noise_residual=0.0, shift_residual=0.0, eq4_ratio=0.0, eq7_ratio=0.0)
    overshoots = shifts = checked = 0
    bad = np.zeros(ds.sizes["sample"], dtype=bool)
    for k in range(ds.sizes["step"]):
        for i in range(ds.sizes["model"]):
            z = _flat(ds.z, k, i)
            if not slot_written(z):  # a model that stopped after the window
                continue
            # eps, or a flow model's v (mu = A z + B v, flow_schedules.flow_coefficients)
            eps, mu, noise, z_next = (_flat(ds[v], k, i) for v in (step_input(ds, i), "mu", "noise", "z_next"))
            ok = finite_samples(z, eps, mu, noise, z_next)
            bad |= ~ok
            A, B = float(ds.model_A[i, k]), float(ds.model_B[i, k])
            if ok.any():
                z, eps, mu, noise, z_next = (x[ok] for x in (z, eps, mu, noise, z_next))
                mean = float(np.abs(mu - (A * z + B * eps)).max())
                rest = float(np.abs(z_next - (mu + noise)).max())
                r["mean_residual"], r["noise_residual"] = max(r["mean_residual"], mean), max(r["noise_residual"], rest)
                scale4 = float((abs(A) * np.abs(z) + (abs(B) + 2 * abs(A)) * np.abs(eps)).max())
                scale_n = float(np.maximum(np.abs(z_next), np.abs(mu)).max())
                r["eq4_ratio"] = max(r["eq4_ratio"], _ratio(mean, unit_mean * scale4), _ratio(rest, unit * scale_n))
                checked += 1
            if bool(ds.aggregated[k]):
                agg, mu_s, z_s = _flat(ds.agg_z, k), _flat(ds.mu_shift, k, i), _flat(ds.z_shift, k, i)
                ok = finite_samples(agg, mu_s, z_s)
                bad |= ~ok
                if not ok.any():
                    continue
                agg, mu_s, z_s = agg[ok], mu_s[ok], z_s[ok]
                # eq. (7) moves z' by exactly eta along (z' - mu); when eta > |z' - mu| that carries
                # it past mu (an overshoot), so the distance to mu does not drop by eta there
                moved = np.abs(geometry.norm(z_s - agg) - eta[i])
                scale7 = geometry.norm(z_s) + geometry.norm(agg)
                r["shift_residual"] = max(r["shift_residual"], float(moved.max()))
                r["eq7_ratio"] = max(r["eq7_ratio"], float(np.max(moved / (unit * scale7))))
                overshoots += int((geometry.norm(agg - mu_s) < eta[i]).sum())
                shifts += agg.shape[0]
    return {**r, "checked_steps": checked, "complete": complete, "overshoots": overshoots, "shifts": shifts,
            "nonfinite": int(bad.sum()), "samples": int(ds.sizes["sample"]), "incomplete": note, "dtype": dtype,
            "kinds": "+".join(sorted(set(step_kinds(ds))))}


def _ratio(residual: float, tol: float) -> float:
    return 0.0 if residual == 0 else residual / tol if tol > 0 else math.inf


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
        for key in ("incomplete", "dtype", "kinds"):
            data[key] = ("store", np.array([r[key] for r in rows], dtype=object))
    ds = xr.Dataset(data, coords={"store": names})
    ds.attrs["one_model_max_diff"], ds.attrs["one_model_scale"] = one_model_check()
    ds.attrs["flow_one_model_max_diff"], ds.attrs["flow_one_model_scale"] = one_model_flow_check()
    return ds


def verdicts(ds: xr.Dataset) -> list[Verdict]:
    """Implementation checks: the one-model check (no store), and eqs. (4) and (7) over every
    store's finite samples on its completed steps, each as its largest residual in units of its
    tolerance (``CHECK_ULPS`` machine epsilons of the dtype times the values' scale); the store
    checks say first what was left out and then never hold."""
    diff, scale = float(ds.attrs["one_model_max_diff"]), float(ds.attrs["one_model_scale"])
    out = [implementation_check(
        key="sampler_one_model", claim="AMDM with N = 1 = diffusers DDIM loop", where="Alg. 1, eq. (4)",
        ratio=_ratio(diff, CHECK_ULPS * resolution("float32") * scale), dtype="float32", n=2,
        test="max |z0 - z0 of the diffusers loop| <= tolerance (max |z0| the scale)",
        detail=("Same exact GMM model and per-sample noise, DDIM eta = 1, 20 steps, float32: the sampler's state "
                "update is diffusers' own step" + (" (bit for bit)." if diff == 0 else f" (max |diff| {diff:.1e})."))),
    ]
    if "flow_one_model_max_diff" in ds.attrs:
        diff, scale = float(ds.attrs["flow_one_model_max_diff"]), float(ds.attrs["flow_one_model_scale"])
        out.append(implementation_check(
            key="sampler_one_model_flow", claim="AMDM with N = 1 = diffusers' flow-matching loop",
            where="App. G, eq. (42)", ratio=_ratio(diff, CHECK_ULPS * resolution("float32") * scale), dtype="float32",
            n=2, test="max |z0 - z0 of the diffusers loop| <= tolerance (max |z0| the scale)",
            detail=("Same exact flow GMM model (time shift 3), FlowMatchEulerDiscreteScheduler's stochastic step with "
                    "the same per-sample generators, 20 steps, float32: the sampler's state update is diffusers' own "
                    "step" + (" (bit for bit)." if diff == 0 else f" (max |diff| {diff:.1e})."))))
    if "eq4_ratio" not in ds:
        return out
    partial = pooled_partial(ds, "store")
    names = ", ".join(map(str, ds.store.values))
    dtypes = sorted(set(map(str, ds.dtype.values)), key=resolution)
    coarsest = dtypes[-1]
    mean_dtype = max(coarsest, "float32", key=resolution)
    r4, r7 = ds.eq4_ratio.values, ds.eq7_ratio.values
    steps = int(ds.checked_steps.sum())
    out.append(qualify(implementation_check(
        key="trace_eq4", claim=f"{ds.sizes['store']} probe stores obey eq. (4)", where="eq. (4)",
        ratio=float(r4.max()), dtype=mean_dtype, n=steps,
        test="per step and model: |mu - (A z + B eps)| (v for a flow model) and |z_next - (mu + noise)| <= tolerance",
        detail=(f"mu = A z + B eps (a flow model's v for eps, with its A and B) and z_next = mu + noise on every "
                f"recorded step of {names} (dtypes "
                f"{', '.join(dtypes)}; each store against its own dtype, mu at least at float32's resolution: "
                "diffusers' step rounds its coefficients from float32 alphas_cumprod in every dtype); largest "
                "relative to its tolerance in "
                f"{ds.store.values[int(np.argmax(r4))]} (largest |residual| "
                f"{float(np.maximum(ds.mean_residual, ds.noise_residual).max()):.1e}). "
                + ("All stores complete." if bool(ds.complete.all()) else "")).rstrip()),
        **partial))
    over, total = int(ds.overshoots.sum()), int(ds.shifts.sum())
    per = ", ".join(f"{n} {int(o)}/{int(t)}"
                    for n, o, t in zip(ds.store.values, ds.overshoots.values, ds.shifts.values) if t)
    out.append(qualify(implementation_check(
        key="trace_eq7", claim="every recorded shift has length eta", where="eq. (7)",
        ratio=float(r7.max()) if total else math.nan, dtype=coarsest, n=total,
        test="per shift: ||z~ - z'| - eta| <= tolerance (|z~| + |z'| the scale)",
        detail=(f"|z~ - z'| against eta on every aggregation step (largest |moved - eta| "
                f"{float(ds.shift_residual.max()):.1e}). On {over} of {total} shifts eta exceeded |z' - mu|, "
                f"so the shift carried z' past the mean instead of towards its shell ({per}).")), **partial))
    return out


def plot(ds: xr.Dataset) -> dict:
    """No figures: the residuals are a table."""
    return {}


def tables(ds: xr.Dataset) -> dict:
    """``{"residuals": one row per store}``."""
    return {"residuals": ds.to_dataframe()}


class TraceChecks(Analysis):
    """The sampler against diffusers and eqs. (4) and (7) on every recorded step of the stores of
    each model kind and sampler ``validate`` runs: ``compute``, ``verdicts``, ``tables`` above."""

    name, family, stores, reads, result, captions = NAME, "checks", "required", ("checked",), "residuals", CAPTIONS
    summary = ("every recorded step obeys eq. (4) (or a flow's step) and every shift eq. (7); a one-model run is "
               "diffusers' DDIM loop, and a flow model's its flow-matching loop")
    compute, verdicts, plot, tables = map(staticmethod, (compute, verdicts, plot, tables))

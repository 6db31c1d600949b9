"""Checks that need no sampler: the DDIM step of eq. (4) against diffusers, the closed forms of
Prop. 3.1 and 3.2 against the exact quantities they bound, on constructed pairs; App. D.3's chord
ratio (``phi_w``); the Chernoff steps of Lemma A.1's proof, eqs. (10)-(13) (``chernoff``); App. E's
reading of lerp and slerp as score combinations (``app_e``); and sigma_t in the sentence before
eq. (23) on SD's DDIM schedule (``eq23_sigma``). (Lemma A.1's eq. (9) lives in
``amdm_geom.analyses.prop32.shell``, App. D.1 in ``amdm_geom.analyses.gaussianity.gaussianity``.)

The analysis ``ClosedForms`` (``amdm_geom.analyses.base.Analysis``): ``compute()`` returns an
``xarray.Dataset`` of the measurements, ``verdicts(ds)`` the verdict rows derived from it,
``plot(ds)`` the figures. It reads no store. Geometry and bounds come from ``amdm_geom``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import xarray as xr
from diffusers import DDIMScheduler

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.checks import app_e, chernoff, eq23_sigma, phi_w
from amdm_geom.analyses.common import refuse_stores
from amdm_geom.core import bounds, geometry, schedules
from amdm_geom.core.verdicts import CHECK_ULPS, Verdict, implementation_check, resolution

__all__ = ["CAPTIONS", "NAME", "ClosedForms", "compute", "plot", "verdicts"]

NAME = "closed_forms"
#: The figures' captions (fnmatch patterns over the figure names, ``amdm_geom.app.runner.output.caption_of``).
CAPTIONS = {
    "cos_bound_excess": (
        "Prop. 3.1, eq. (25) on 2-plane pairs: the printed lower bound 1 - d^2/(|a|^2 + |b|^2) minus the true "
        "cos phi, clipped at 0, over the angle phi (y) and the norm ratio |b|/|a| (x). Black is where the bound "
        "holds; any bright cell is a failure. Failures lie only above the dotted line phi = pi/2 and off ratio "
        "1 (obtuse pairs of unequal norm); AMDM's pairs lie far below it."),
}

N_GRID = 2 ** np.arange(1, 15)  # 2 .. 16384 (SD's 4x64x64 latent), for the delta noise term
PHI_GRID = np.linspace(0.05, math.pi - 0.05, 60)
RATIO_GRID = np.array([0.5, 0.9, 0.99, 0.999, 1.0, 1.001, 1.01, 1.1, 2.0])
W_GRID = np.linspace(0.1, 0.9, 9)


def compute(stores=None, *, quick: bool = False, seed: int = 0, runs=None, sd_latent_dim: int = 4 * 64 * 64,
            ddim_steps=(10, 20, 50), ddim_etas=(0.0, 1.0)) -> xr.Dataset:
    """Measure every closed form on its grid; a few seconds on a laptop CPU. ``stores`` must be
    empty, and ``quick`` and ``runs`` change nothing (the grids are small already)."""
    refuse_stores(NAME, stores)
    g = torch.Generator().manual_seed(seed)
    ds = xr.Dataset(attrs={"seed": seed, "sd_latent_dim": sd_latent_dim})

    # eq. (4) against diffusers' DDIMScheduler.step (stock, float32 scalars), SD 1.x config
    err, scale = _ddim_against_diffusers(schedules.make_scheduler(), ddim_steps, ddim_etas, g)
    dims = ("ddim_steps", "ddim_eta", "ddim_k")
    ds["ddim_abs_error"] = (dims, err)
    ds["ddim_scale"] = (dims, scale)
    ds["ddim_max_abs_error"] = (dims[:2], np.nanmax(err, axis=2))
    ds = ds.assign_coords(ddim_steps=list(ddim_steps), ddim_eta=list(ddim_etas))

    # Prop. 3.1 norm-gap bound on Gaussian pairs at SD latent size (independent, as at t = T,
    # and near-parallel, as after aggregation)
    a = torch.randn(32, sd_latent_dim, generator=g, dtype=torch.float64)
    b = torch.cat([torch.randn(16, sd_latent_dim, generator=g, dtype=torch.float64),
                   a[16:] * 1.01 + 0.05 * torch.randn(16, sd_latent_dim, generator=g, dtype=torch.float64)])
    ds["normgap_ratio"] = ("pair", (geometry.norm_gap(a, b) / bounds.norm_gap_bound(a, b)).numpy())

    # Prop. 3.1 angle bound (eq. 25) on 2-plane pairs at angle phi with norm ratio rho
    phi, rho = np.meshgrid(PHI_GRID, RATIO_GRID, indexing="ij")
    z1, z2 = _plane_pairs(phi.ravel(), rho.ravel())
    printed = bounds.cos_angle_lower_bound(z1, z2, strict=False).numpy()
    true_cos = np.cos(geometry.angle(z1, z2).numpy())
    ds["cos_excess"] = (("phi", "ratio"), (printed - true_cos).reshape(phi.shape))
    ds = ds.assign_coords(phi=PHI_GRID, ratio=RATIO_GRID)

    # Prop. 3.2 maximum distance with eta = 0: |slerp(z1, z2, w) - z2| against phi_w delta
    phi3, rho3, w3 = np.meshgrid(PHI_GRID, RATIO_GRID, W_GRID, indexing="ij")
    z1, z2 = _plane_pairs(phi3.ravel(), rho3.ravel())
    zp = geometry.slerp(z1, z2, torch.from_numpy(w3.ravel()))
    d = bounds.max_distance(geometry.angle(z1, z2).numpy(), geometry.norm(z1 - z2).numpy(), w3.ravel(), 0.0)
    shortfall = (geometry.norm(zp - z2).numpy() - d) / d
    ds["maxdist_rel_shortfall"] = (("phi", "ratio", "w"), shortfall.reshape(phi3.shape))
    ds = ds.assign_coords(w=W_GRID)

    # Prop. 3.1 noise term of the delta bound
    ds = ds.assign_coords(n=N_GRID)
    ds["delta_noise_coverage"] = ("n", bounds.delta_noise_coverage(N_GRID))
    q999 = bounds.delta_bound(0.0, 0.0, 0.0, 0.0, 1.0, N_GRID, noise_quantile=0.999)
    ds["delta_q999_over_printed"] = ("n", q999 / np.sqrt(2.0 * N_GRID) - 1.0)

    # Prop. 3.2 on the SD DDIM schedule with eta = 0: sigma_t = 0 on every step
    c50 = schedules.ddim_coefficients(schedules.make_scheduler(), 50, 0.0)
    ds["ddim_sigma"] = ("sd_step", c50["sigma"].values)
    ds["prop32_bound_ddim"] = ("sd_step", bounds.prop32_lower_bound(sd_latent_dim, 0.05, 0.0, c50["sigma"].values))

    # App. D.3: the chord ratio phi_w on (0, pi] x [0, 1]; Lemma A.1's eqs. (10)-(13); App. E's weight sums;
    # sigma_t before eq. (23) on SD's DDIM schedule (DDIM eta = 1)
    extras = [phi_w.dataset(), chernoff.dataset(), app_e.dataset(), eq23_sigma.dataset(sd_latent_dim)]
    return xr.merge([ds, *extras], combine_attrs="override")


def _ddim_against_diffusers(sched, ddim_steps, ddim_etas, g) -> tuple[np.ndarray, np.ndarray]:
    """Per (steps, eta, step k): max |A z + B eps + sigma xi - DDIMScheduler.step(...)| on unit-
    scale float64 inputs, and the scale of the terms diffusers sums (its float32 coefficients
    round each term): max over elements of sqrt(abar_prev) |x0| + |c_eps eps| + |sigma xi|
    bounded by A |z| + (c1 + c2) |eps| + sigma |xi|, c1 = sqrt(abar_prev (1 - abar) / abar),
    c2 = sqrt(1 - abar_prev - sigma^2). NaN past a run's last step."""
    shape = (len(ddim_steps), len(ddim_etas), max(ddim_steps))
    err, scale = np.full(shape, np.nan), np.full(shape, np.nan)
    for i, steps in enumerate(ddim_steps):
        ref = DDIMScheduler.from_config(sched.config)
        ref.set_timesteps(steps)
        for j, eta in enumerate(ddim_etas):
            c = schedules.ddim_coefficients(sched, steps, eta)
            abar, prev, sig = c["alpha_bar"].values, c["alpha_bar_prev"].values, c["sigma"].values
            c_eps = np.sqrt(prev * (1 - abar) / abar) + np.sqrt(np.maximum(1 - prev - sig**2, 0.0))
            for k in range(steps):
                z, eps, xi = (torch.randn(2, 4, 16, 16, generator=g, dtype=torch.float64) for _ in range(3))
                want = ref.step(eps, int(c["t"][k]), z, eta=eta, variance_noise=xi).prev_sample
                got = float(c["A"][k]) * z + float(c["B"][k]) * eps + float(c["sigma"][k]) * xi
                err[i, j, k] = float((got - want).abs().max())
                scale[i, j, k] = float((float(c["A"][k]) * z.abs() + c_eps[k] * eps.abs() + sig[k] * xi.abs()).max())
    return err, scale


def _plane_pairs(phi: np.ndarray, rho: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """z1 = e0 and z2 = rho (cos phi e0 + sin phi e1): pairs at a known angle and norm ratio."""
    z1 = np.zeros((len(phi), 2))
    z1[:, 0] = 1.0
    z2 = rho[:, None] * np.stack([np.cos(phi), np.sin(phi)], axis=1)
    return torch.from_numpy(z1), torch.from_numpy(z2)


def verdicts(ds: xr.Dataset, *, ddim_ulps: float = CHECK_ULPS) -> list[Verdict]:
    """The verdict rows for the closed-form checks, derived from ``compute()``'s dataset."""
    out = []

    # diffusers rounds its coefficients in float32 (alphas_cumprod is float32)
    tol = ddim_ulps * resolution("float32") * ds["ddim_scale"].values
    ratio = float(np.nanmax(ds["ddim_abs_error"].values / tol))
    out.append(implementation_check(
        key="ddim_step", claim="DDIM step = diffusers' step", where="eq. (4)", ratio=ratio, dtype="float32",
        ulps=ddim_ulps, n=int(np.isfinite(ds["ddim_abs_error"].values).sum()),
        test="max |A z + B eps + sigma xi - DDIMScheduler.step| per step <= tolerance",
        detail=(f"A z + B eps + sigma xi against DDIMScheduler.step, SD 1.x config, "
                f"{', '.join(map(str, ds.ddim_steps.values))} steps, eta {', '.join(map(str, ds.ddim_eta.values))}, "
                f"unit-scale float64 inputs; the scale is the largest term diffusers sums "
                f"(largest |diff| {float(ds['ddim_max_abs_error'].max()):.1e})."),
    ))

    ratio = float(ds["normgap_ratio"].max())
    out.append(Verdict(
        family="prop31",
        key="prop31_norm_gap", claim="norm gap <= sqrt(1-2a(1-cos))d", where="Prop. 3.1, eq. (5)",
        status="holds" if ratio <= 1 + 1e-12 else "violated",
        measured=f"max gap/bound {ratio:.6f}", bound="<= 1", value=ratio, reference=1.0,
        detail=(f"{ds.sizes['pair']} pairs at n={ds.attrs['sd_latent_dim']} (independent and near-parallel). "
                "With the measured delta this is Cauchy-Schwarz and holds for every pair; the approximation "
                "is all in the delta bound."),
    ))

    excess = ds["cos_excess"]
    worst_cos = float(excess.max())
    loc = excess.isel(excess.argmax(dim=["phi", "ratio"]))
    acute_excess = float(excess.sel(phi=excess.phi[excess.phi <= math.pi / 2]).max())
    out.append(Verdict(
        family="prop31",
        key="prop31_angle", claim="cos phi >= 1 - d^2/(|a|^2+|b|^2)", where="Prop. 3.1, eq. (25)",
        status="holds" if worst_cos <= 1e-12 else "violated",
        measured=f"grid max excess {worst_cos:.3f} (sup 1)", bound="<= 0", value=worst_cos, reference=0.0,
        extra={"supremum": 1.0},
        detail=(f"The excess, -cos phi (1 - r)^2 / (1 + r^2) with r = |b|/|a|, is {worst_cos:.3f} at most on the "
                f"grid (phi={float(loc.phi):.2f}, r={float(loc.ratio):g}, r from {float(ds.ratio.min()):g} to "
                f"{float(ds.ratio.max()):g}); its supremum is 1 (phi -> pi, r -> 0 or infinity), not attained. "
                f"Fails only for obtuse pairs of unequal norm; on phi <= pi/2, where AMDM's pairs lie, the largest "
                f"excess is {acute_excess:.1e}. Eq. (25) divides 2<a,b> by |a|^2+|b|^2 >= 2|a||b|, which "
                "lowers it only when <a,b> >= 0."),
    ))

    n_sd = int(ds.attrs["sd_latent_dim"])
    cov = float(ds["delta_noise_coverage"].sel(n=n_sd)) if n_sd in ds.n else float(ds["delta_noise_coverage"][-1])
    q = float(ds["delta_q999_over_printed"].sel(n=n_sd)) if n_sd in ds.n else float(ds["delta_q999_over_printed"][-1])
    out.append(Verdict(
        family="prop31",
        key="prop31_delta_noise", claim="noise part of delta <= s sqrt(2n)", where="Prop. 3.1, eq. (23)",
        status="holds" if cov >= 1 - 1e-12 else "violated",
        measured=f"P(covered) {cov:.3f}", bound="1 (an upper bound)", value=cov, reference=1.0,
        detail=(f"At n={n_sd}, sigma_t |xi1 - xi2| exceeds sigma_t sqrt(2n) with probability {1 - cov:.3f} "
                f"(exact chi-square): sqrt(2n) is its typical size, not a bound. Its 99.9% quantile is "
                f"{100 * q:.1f}% larger (bounds.delta_bound(noise_quantile=0.999))."),
    ))

    out.append(_max_distance_verdict(ds))

    nan_steps = int(np.isnan(ds["prop32_bound_ddim"]).sum())
    out.append(Verdict(
        family="prop32",
        key="prop32_ddim", claim="shell-membership bound, DDIM", where="Prop. 3.2, eq. (8)",
        status="outside domain" if nan_steps == ds.sizes["sd_step"] else "holds",
        measured=f"sigma_t = 0 on {int((ds['ddim_sigma'] == 0).sum())}/{ds.sizes['sd_step']} steps",
        bound="needs sigma_t > 0", value=float(nan_steps), reference=float(ds.sizes["sd_step"]),
        detail=("With DDIM eta = 0 every step is deterministic: the shell A(eps) of eq. (26) has no width and "
                "d/(sigma_t sqrt n) is undefined: eq. (8) assumes sigma_t > 0 (a stochastic sampler) and does not "
                "apply here."),
    ))

    return out + phi_w.verdicts(ds) + chernoff.verdicts(ds) + app_e.verdicts(ds) + eq23_sigma.verdicts(ds)


def _max_distance_verdict(ds: xr.Dataset) -> Verdict:
    """Eq. (33): the chord |z' - z2| against phi_w(phi) delta, worst case and at AMDM's angles."""
    sf = ds["maxdist_rel_shortfall"]
    eq = float(np.abs(sf.sel(ratio=1.0)).max())
    near_gap = sf.sel(ratio=[0.99, 1.01])
    near = float(near_gap.max())  # the near-antipodal worst case
    acute = float(near_gap.where(near_gap.phi <= 0.5).max())  # where AMDM's pairs lie
    worst_sf = float(sf.max())
    worst_ratio = float(sf.max(("phi", "w")).idxmax("ratio"))
    return Verdict(
        family="prop32",
        key="prop32_max_distance", claim="|z'-z2| <= phi_w(phi) delta", where="Prop. 3.2, eq. (33)",
        status="holds" if worst_sf <= 1e-9 else "violated",
        measured=f"excess {100 * near:.1f}% of d at 1% gap (worst, phi near pi); {100 * acute:.2f}% at phi <= 0.5",
        bound="<= 0", value=near, reference=0.0,
        detail=(f"Exact for equal norms (|error| {eq:.0e}); with |z2| < |z1| the chord exceeds phi_w delta, "
                f"by up to {100 * near:.2f}% of d at a 1% norm mismatch (the near-antipodal worst case) and "
                f"{100 * worst_sf:.0f}% at |z2|/|z1| = {worst_ratio:g} (eta = 0; phi in (0, pi), w in [0.1, 0.9]). "
                f"At the angles AMDM's pairs have (phi <= 0.5 rad; the runs' angles are below 0.05) the excess at "
                f"a 1% norm mismatch is at most {100 * acute:.2f}% of d. Eq. (32) assumes equal norms."),
    )


def plot(ds: xr.Dataset) -> dict:
    """``{"cos_bound_excess": figure}``: where eq. (25) fails."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    data = ds["cos_excess"].clip(min=0)
    mesh = ax.pcolormesh(np.arange(ds.sizes["ratio"]), ds.phi, data, shading="nearest", cmap="magma")
    ax.set_xticks(np.arange(ds.sizes["ratio"]), [f"{r:g}" for r in ds.ratio.values], rotation=45)
    ax.axhline(math.pi / 2, color="w", lw=0.8, ls=":")
    ax.set_xlabel("|b| / |a|")
    ax.set_ylabel("phi (rad)")
    ax.set_title("Eq. (25): printed bound minus cos phi (> 0: fails)")
    fig.colorbar(mesh, ax=ax)
    fig.tight_layout()
    return {"cos_bound_excess": fig}


class ClosedForms(Analysis):
    """Eq. (4) against diffusers (an implementation check), the closed forms of Prop. 3.1 and 3.2
    on constructed pairs, Lemma A.1's eqs. (10)-(13) and App. E's score-combination reading (those
    verdicts name their families): ``compute``, ``verdicts`` and ``plot`` above."""

    name, family, captions = NAME, "checks", CAPTIONS
    other_families = ("prop31", "prop32", "lemma-a1", "app-e")
    summary = ("eq. (4) against diffusers; the closed forms of Prop. 3.1 and 3.2 on constructed pairs, and sigma_t "
               "before eq. (23); Lemma A.1's eqs. (10)-(13) against the exact chi-square tails; App. E's weight sums "
               "(no store)")
    compute, verdicts, plot = map(staticmethod, (compute, verdicts, plot))

"""The figures of the 2D benchmark, from ``benchmark.run_benchmark``'s Dataset (over ``arm``): samples over the
target's density, AMDM's trajectory over the diffused target, the norm law of 2D noise (why
there is no shell in 2D, Lemma A.1), and mean LL over the AMDM sweep."""

from __future__ import annotations

import json
import math

import numpy as np
import torch
import xarray as xr

from amdm_geom.analyses.toy import targets
from amdm_geom.analyses.toy.benchmark import best_arm, mean_over_seeds
from amdm_geom.analyses.toy.experts import make_schedule
from amdm_geom.analyses.toy.settings import DU_METHODS
from amdm_geom.core import geometry
from amdm_geom.core.palette import colour

__all__ = ["figures", "norm_law_figure", "samples_figure", "sweep_figure", "trajectory_figure"]


def _contours(ax, mix, extent, alpha_bar: float = 1.0, levels: int = 8, cmap: str = "Greys"):
    x = np.linspace(extent[0], extent[1], 160)
    y = np.linspace(extent[2], extent[3], 160)
    X, Y = np.meshgrid(x, y)
    lp = targets.log_prob(mix, np.stack([X.ravel(), Y.ravel()], 1), alpha_bar).reshape(X.shape)
    top = lp.max()
    ax.contour(X, Y, lp, levels=np.linspace(top - 12, top, levels), cmap=cmap, linewidths=0.7)


#: The role (``amdm_geom.core.palette``) of each method's panel.
_ROLES = {"target": "exact", "AMDM": "AMDM", "summed_score": "product of experts", "du_ula": "ula",
          "du_mala": "mcmc", "du_hmc": "mcmc", "oracle": "exact"}


def _panel_colour(title: str) -> str:
    """The colour of the panel titled ``title``: its method's role, matplotlib's C3 for any other."""
    return next((colour(role) for start, role in _ROLES.items() if title.startswith(start)), "C3")


def samples_figure(ds: xr.Dataset, expert: str, panels: dict | None = None):
    """Samples over the target's log-density contours, one panel per method (the best AMDM
    setting), for one expert kind; ``panels``: ``{title: (N, 2) array}`` to draw instead."""
    import matplotlib.pyplot as plt

    tk = targets.make_task(ds.attrs["task"])
    ext = tk.extent
    if panels is None:
        panels = {"target (exact)": ds.target_samples.values}
        a = best_arm(ds, expert, ("amdm",))
        panels[f"AMDM best {a[4:]}"] = ds.samples.sel(arm=a, expert=expert).values
        for m in ("summed_score", *DU_METHODS, "oracle"):
            panels[m] = ds.samples.sel(arm=m, expert=expert).values
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
    for ax, (title, x) in zip(axes.flat, panels.items()):
        _contours(ax, tk.target, ext)
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.35, color=_panel_colour(title))
        ax.set_title(f"{title}\nLL {targets.log_prob(tk.target, x).mean():.2f}", fontsize=8)
        ax.set_xlim(ext[0], ext[1])
        ax.set_ylim(ext[2], ext[3])
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{ds.attrs['task']}: samples over the target's log-density contours ({expert} experts)", fontsize=9)
    fig.tight_layout()
    return fig


def trajectory_figure(ds: xr.Dataset):
    """Model 1's latent over the diffused target p_t at several steps of one AMDM run, and the
    histogram of the angle between the two models' latents over all aggregation steps."""
    import matplotlib.pyplot as plt

    tk = targets.make_task(ds.attrs["task"])
    sched = make_schedule(int(ds.attrs["T"]))
    setting = json.loads(ds.attrs["trajectory_setting"])
    k = ds.sizes["snapshot"]
    fig, axes = plt.subplots(1, k + 1, figsize=(2.5 * (k + 1), 3.0), squeeze=False)
    for ax, i in zip(axes.flat, range(k)):
        t = int(ds.snapshot_t[i])
        z = ds.trajectory.isel(snapshot=i).values
        span = 3.5 if t > 20 else (2.0 if t >= 0 else max(abs(e) for e in tk.extent))
        outside = float(np.mean(np.abs(z).max(1) > span))
        _contours(ax, tk.target, (-span, span, -span, span), 1.0 if t < 0 else float(sched.abar[t]))
        ax.scatter(z[:, 0], z[:, 1], s=2, alpha=0.4, color=colour("model 1"))
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
        ax.set_title((f"t = {t}" if t >= 0 else "output x0") + f"\n{100 * outside:.0f}% outside", fontsize=8)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
    ax = axes.flat[k]
    phi = ds.trajectory_phi.values.ravel()
    ax.hist(phi, bins=36, range=(0, math.pi), density=True, color="C0", alpha=0.7)
    ax.axhline(1 / math.pi, color=colour("reference"), lw=0.8, ls="--")
    near = float(np.mean(math.pi - phi < 0.1) if phi.size else math.nan)
    ax.set_title(f"angle phi(z1_next, z2_next), all steps\npi - phi < 0.1: {100 * near:.1f}%", fontsize=8)
    ax.set_xlabel("phi (independent 2D: uniform, dashed)", fontsize=7)
    ax.tick_params(labelsize=6)
    fig.suptitle(f"AMDM (w = {setting['w']:g}, eta = {setting['eta']:g}, exact experts): model 1's latent over the "
                 f"diffused target p_t; slerp's coefficients grow like 1/sin(phi)", fontsize=9)
    fig.tight_layout()
    return fig


def norm_law_figure():
    """The norm law of 2D noise (Rayleigh) beside the chi law of |xi| / sqrt(n) for n = 16, 256,
    16384: no shell in 2D (Lemma A.1's concentration needs large n)."""
    import matplotlib.pyplot as plt
    from scipy import stats

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    g = torch.Generator().manual_seed(0)
    r = np.linspace(0, 2.5, 600)
    for n_dim, draws in ((2, 20000), (16, 20000), (256, 4000), (16384, 400)):
        norms = geometry.norm(torch.randn(draws, n_dim, generator=g, dtype=torch.float64)).numpy() / math.sqrt(n_dim)
        pdf = stats.chi(df=n_dim).pdf(r * math.sqrt(n_dim)) * math.sqrt(n_dim)
        line, = ax.plot(r, pdf, label=f"n = {n_dim}" + (" (Rayleigh)" if n_dim == 2 else ""))
        ax.hist(norms, bins=80, density=True, alpha=0.25, color=line.get_color())
    ax.set_yscale("log")
    ax.set_ylim(1e-3, 100)
    ax.set_xlabel("|xi| / sqrt(n), xi ~ N(0, I_n)")
    ax.set_ylabel("density")
    ax.set_title("No shell in 2D: the norm of 2D noise is Rayleigh, not concentrated", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def sweep_figure(ds: xr.Dataset):
    """Mean LL over the AMDM (w, eta) grid, one panel per expert kind."""
    import matplotlib.pyplot as plt

    am = [str(a) for a, m in zip(ds.arm.values, ds.method.values) if m == "amdm"]
    wv = sorted({float(ds.w.sel(arm=a)) for a in am})
    ev = sorted({float(ds.eta.sel(arm=a)) for a in am})
    fig, axes = plt.subplots(1, ds.sizes["expert"], figsize=(4.2 * ds.sizes["expert"], 3.4), squeeze=False)
    for ax, expert in zip(axes.flat, ds.expert.values):
        grid = np.full((len(wv), len(ev)), np.nan)
        for a in am:
            grid[wv.index(float(ds.w.sel(arm=a))), ev.index(float(ds.eta.sel(arm=a)))] = \
                mean_over_seeds(ds, "ll", arm=a, expert=expert)
        im = ax.imshow(np.sign(grid) * np.log10(1 + np.abs(grid)), cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(len(ev)), [f"{e:g}" for e in ev])
        ax.set_yticks(range(len(wv)), [f"{w:g}" for w in wv])
        ax.set_xlabel("eta")
        ax.set_ylabel("w")
        du = mean_over_seeds(ds, "ll", arm=best_arm(ds, expert, DU_METHODS), expert=expert)
        orc = mean_over_seeds(ds, "ll", arm="oracle", expert=expert)
        ax.set_title(f"AMDM mean LL ({expert}); best Du {du:.2f}, oracle {orc:.2f}", fontsize=8)
        fig.colorbar(im, ax=ax, label="sign(LL) log10(1 + |LL|)")
    fig.tight_layout()
    return fig


def floor_figure(ds: xr.Dataset):
    """The true-vs-true floor of ln MMD against N per bandwidth (mean and the range over seeds),
    with the best AMDM setting's ln MMD at the benchmark's N per expert kind (markers)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    sizes = ds.floor_n.values
    for k, h in enumerate(ds.bandwidth.values):
        f = ds.ln_mmd_floor_n.sel(bandwidth=h)
        ax.plot(sizes, f.mean("seed"), "o-", color=f"C{k}", label=f"floor, h = {float(h):g}")
        ax.fill_between(sizes, f.min("seed"), f.max("seed"), color=f"C{k}", alpha=0.2)
        for e, marker in zip(ds.expert.values, ("*", "s")):
            a = best_arm(ds, str(e), ("amdm",))
            value = float(ds.ln_mmd.sel(arm=a, expert=e, bandwidth=h).mean())
            ax.plot([int(ds.attrs.get("n", sizes[-1]))], [value], marker, color=f"C{k}", ms=9)
    f = ds.ln_mmd_avg_floor_n
    ax.plot(sizes, f.mean("seed"), "k--", label="floor, average kernel")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N (points per set)")
    ax.set_ylabel("ln MMD")
    ax.set_title("The MMD floor is a finite-N bias: markers = best AMDM (* exact, s MLP experts)", fontsize=8)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def figures(ds: xr.Dataset) -> dict:
    """``{file name: Figure}``: ``samples_<expert>`` per expert kind, ``trajectory`` (when the
    Dataset has one), ``norm_law``, ``amdm_sweep`` and ``mmd_floor``."""
    out = {f"samples_{e}": samples_figure(ds, str(e)) for e in ds.expert.values}
    if "trajectory" in ds:
        out["trajectory"] = trajectory_figure(ds)
    out["norm_law"] = norm_law_figure()
    out["amdm_sweep"] = sweep_figure(ds)
    if "ln_mmd_floor_n" in ds:
        out["mmd_floor"] = floor_figure(ds)
    return out

"""Figures of the App. G analysis (``flow_geometry``): the flow's shell against sqrt(n), Prop.
G.1's delta against eq. (47) with and without the step size, eq. (46)'s step against the
scheduler's, and the shift towards v against the shift towards the step's location."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from amdm_geom.core.palette import colour  # noqa: E402

__all__ = ["CAPTIONS", "figures"]

#: The captions of ``flow_geometry``'s figures (fnmatch patterns, see
#: ``amdm_geom.app.runner.output.caption_of``).
CAPTIONS = {
    "shell": (
        "Where rectified-flow latents concentrate (App. G against Lemma A.1), on one exact flow GMM model. Left: "
        "the latents' RMS radius over sqrt(n) per flow noise level s (sampling runs right to left), deterministic "
        "and stochastic step, against the exact formula sqrt((1-s)^2 E|x0|^2 + s^2 n) (indigo, dashed) and "
        "sqrt(n) (grey). Right: the relative spread std|z|/mean|z| against an isotropic Gaussian's (grey). "
        "Lemma A.1's shell applies only where the measured radius follows the grey line; it dips away mid-path."),
    "*/g1": (
        "Prop. G.1 on one flow pair store (medians over samples; s runs right to left). Left: delta = "
        "|z_next_1 - z_next_2| of the step taken, against eq. (47) as printed (black, dashed), eq. (47) scaled "
        "by the step size |dt| (dotted) and the starting gap |z_1 - z_2| (grey). Right: the length of diffusers' "
        "step against |v|, the step eq. (46) prints (black, dashed). Delta above a bound line is a violation; "
        "a printed step far longer than the real one says eq. (46) omits dt."),
    "*/mu_v": (
        "App. G's 'set mu = v' on one flow pair store: per aggregation step the median distance of the shifted "
        "latent to the step's location mu, before the shift (solid), after eq. (7)'s shift towards mu as "
        "Algorithm 1 does (dashed) and towards v as App. G prints it (dotted). The printed rule does what the "
        "shift is for only if the dotted line lies below the solid one."),
}

_C = {"measured": "#1f77b4", "formula": colour("exact"), "sqrt_n": colour("reference"), "stochastic": "#ff7f0e",
      "printed": colour("bound"), "step": "#2ca02c"}


def _median(da: xr.DataArray) -> np.ndarray:
    return da.median("sample").values


def shell_figure(ds: xr.Dataset):
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6))
    s, root = ds.s.values, float(ds.sqrt_n)
    for mode, c in (("deterministic", _C["measured"]), ("stochastic", _C["stochastic"])):
        norms = ds.norm.sel(mode=mode).values
        ax.plot(s, np.sqrt((norms**2).mean(1)) / root, color=c, label=f"measured, {mode} step")
        bx.plot(s, norms.std(1) / norms.mean(1), color=c, label=mode)
    ax.plot(s, ds.radius_formula.values / root, "--", color=_C["formula"], label="sqrt((1-s)^2 E|x0|^2 + s^2 n)")
    ax.axhline(1.0, color=_C["sqrt_n"], lw=0.8, label="sqrt(n) (Lemma A.1's picture)")
    ax.set(xlabel="s (flow noise level; sampling runs right to left)", ylabel="radius / sqrt(n)",
           title="Where flow latents concentrate")
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    bx.axhline(ds.attrs["relative_gaussian_spread"], color=_C["sqrt_n"], lw=0.8, label="isotropic Gaussian")
    bx.set(xlabel="s", ylabel="std|z| / mean|z|", title="Relative spread of |z_s|")
    bx.invert_xaxis()
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig


def g1_figure(res: xr.Dataset, name: str):
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6))
    s = res.flow_sigma.values
    ax.plot(s, _median(res.delta), color=_C["measured"], label="delta (step taken)")
    if "bound47" in res:
        ax.plot(s, _median(res.bound47), "--", color=_C["printed"], label="eq. (47) as printed")
        ax.plot(s, _median(res.bound47_step), ":", color=_C["step"], label="eq. (47) x |dt| (+ noise)")
    ax.plot(s, _median(res.start_gap), color=_C["sqrt_n"], lw=0.8, label="|z_1 - z_2| (starts)")
    ax.set(yscale="log", xlabel="s", ylabel="median over samples", title=f"{name}: Prop. G.1's delta")
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    bx.plot(s, _median(res.step_1), color=_C["step"], label="|z_next - z| (diffusers' step)")
    bx.plot(s, _median(res.printed_step_1), "--", color=_C["printed"], label="|v| (eq. 46 as printed)")
    bx.set(yscale="log", xlabel="s", ylabel="length", title="eq. (46) against the step")
    bx.invert_xaxis()
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig


def mu_v_figure(res: xr.Dataset, name: str):
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    steps = res.step.values
    for var, label, style in (("d0", "|z' - mu| before the shift", "-"), ("d_mu", "after, target mu", "--"),
                              ("d_v", "after, target v (App. G)", ":")):
        ax.plot(steps, res[var].median(("model", "sample")).values, style, label=label)
    ax.set(xlabel="aggregation step", ylabel="distance to the step's location mu", title=f"{name}: mu = v")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figures(tree: xr.DataTree) -> dict:
    """``shell``, and per store ``<name>/g1`` and ``<name>/mu_v``."""
    out = {"shell": shell_figure(tree["shell"].to_dataset())}
    for name, node in tree.children.items():
        if "g1" in node:
            out[f"{name}/g1"] = g1_figure(node["g1"].to_dataset(), name)
        if "mu_v" in node:
            out[f"{name}/mu_v"] = mu_v_figure(node["mu_v"].to_dataset(), name)
    return out

"""The figures of App. D.1 (Figure 6 and normality along the process), from the results of
``amdm_geom.analyses.gaussianity.gaussianity``: the schedule's moments m(t), P(t) (eqs. 40-41), the forward
process' per-coordinate rejection rates and norm concentration (Lemma A.1), and a recorded
trajectory's norm against its expected size.
"""

from __future__ import annotations

import warnings

import xarray as xr

from amdm_geom.analyses.common import rejection_band
from amdm_geom.core.palette import colour

__all__ = ["CAPTIONS", "PAPER_T", "figures"]

#: The captions of ``gaussianity``'s figures (fnmatch patterns, see
#: ``amdm_geom.app.runner.output.caption_of``).
CAPTIONS = {
    "figure6_moments": (
        "Figure 6 (App. D.1, eqs. 40-41): the mean m(t) (left) and variance P(t) (right) of p(z_t) over "
        "continuous time t for SD's scaled_linear schedule (solid) beside the linear and cosine ones (dashed), "
        "and SD's exact discrete moments (dotted, indigo); the grey vertical line is the paper's t = 0.6. "
        "The paper's claim holds if m falls to 0 and P rises to 1 right of that line."),
    "forward_gaussianity": (
        "Normality along the forward process on exact draws of z_t (App. D.1, Lemma A.1). Left: the share of "
        "coordinates a Kolmogorov-Smirnov and an Anderson-Darling test reject per t; below the dotted line it is "
        "what a Gaussian would give. Right: |z_t| / sqrt(E|z_t|^2) (mean, band min to max) against the green band "
        "1 +- eps, where Lemma A.1 puts the mass; the grey vertical line is the paper's t = 0.6."),
    "trajectory_*": (
        "One recorded reverse trajectory of model 1 (time runs right to left): its norm |z_t| against the "
        "expected size sqrt(E|z_t|^2) (mean over samples, band min to max). Lemma A.1's shell is the green band "
        "1 +- eps: the sampled latents sit on the shell where the line stays inside it."),
}

PAPER_T = 0.6  # "when t > 0.6, the mean rapidly converges to 0 while the variance rapidly converges to 1"


def figures(moments: xr.Dataset | None = None, forward: xr.Dataset | None = None,
            trajectory: xr.Dataset | None = None) -> list:
    """Figure 6 (m and P over t, SD beside linear and cosine) from ``schedule_moments``, the
    forward rejection rates and norm concentration from ``forward_gaussianity``, and the
    recorded trajectory's norm ratio from ``trajectory_gaussianity``: a list of the figures of
    those given, in that order."""
    import matplotlib.pyplot as plt

    figs = []
    if moments is not None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for kind in moments.kind.values:
            sel = moments.sel(kind=kind)
            style = "-" if kind == "scaled_linear" else "--"
            axes[0].plot(moments.t, sel.m, style, label=f"{kind} (continuous)")
            axes[1].plot(moments.t, sel.P, style, label=kind)
            if kind == "scaled_linear":
                axes[0].plot(moments.t_discrete, sel.m_discrete, ":", color=colour("exact"),
                             label="scaled_linear (discrete)")
                axes[1].plot(moments.t_discrete, sel.P_discrete, ":", color=colour("exact"))
        for ax, name in zip(axes, ("mean m(t)", "variance P(t)")):
            ax.axvline(PAPER_T, color=colour("reference"), lw=0.6)
            ax.set_xlabel("t")
            ax.set_title(name)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"Figure 6: moments of p(z_t), m(0) = {moments.attrs['m0']:g}, P(0) = {moments.attrs['P0']:g}")
        fig.tight_layout()
        figs.append(fig)
    if forward is not None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        axes[0].plot(forward.t, forward.ks_rate, "o-", label="Kolmogorov-Smirnov")
        axes[0].plot(forward.t, forward.ad_rate, "s-", label="Anderson-Darling")
        axes[0].axhline(rejection_band(forward.attrs["alpha"], forward.sizes["coord"]), color="grey", ls=":",
                        label="consistent with Gaussian below")
        axes[0].axvline(PAPER_T, color=colour("reference"), lw=0.6)
        axes[0].set_xlabel("t")
        axes[0].set_ylabel("share of coordinates rejected")
        axes[0].set_title("Per-coordinate normality along the forward process")
        axes[0].legend(fontsize=7)
        axes[1].plot(forward.t, forward.ratio.mean("sample"), "o-")
        axes[1].fill_between(forward.t, forward.ratio.min("sample"), forward.ratio.max("sample"), alpha=0.2)
        axes[1].axhspan(1 - forward.attrs["eps"], 1 + forward.attrs["eps"], color="C2", alpha=0.1)
        axes[1].set_xlabel("t")
        axes[1].set_ylabel("|z_t| / sqrt(E|z_t|^2)")
        axes[1].set_title("Norm concentration (band: eps)")
        fig.tight_layout()
        figs.append(fig)
    if trajectory is not None:
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        with warnings.catch_warnings():  # a step without a finite sample is a gap, not an error
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, lo, hi = (trajectory.ratio.mean("sample"), trajectory.ratio.min("sample"),
                            trajectory.ratio.max("sample"))
        ax.plot(trajectory.t_index, mean, color=colour("model 1"), label="|z_t| / sqrt(E|z_t|^2)")
        ax.fill_between(trajectory.t_index, lo, hi, color=colour("model 1"), alpha=0.2)
        ax.axhspan(1 - trajectory.attrs["eps"], 1 + trajectory.attrs["eps"], color="C2", alpha=0.1)
        ax.set_xlabel("t (sampling step)")
        ax.invert_xaxis()
        ax.set_title("Recorded reverse trajectory: norm against its expected size")
        ax.legend(fontsize=8)
        fig.tight_layout()
        figs.append(fig)
    return figs

"""The figures of Prop. 3.1 on recorded trajectories (App. D.2, D.3; cf. Figures 7 and 8): the
norm gap with its bound of eq. (5), the angle and delta beside the paper's Table 5, and delta
taken apart (eqs. 20-23) against its bound, from ``norm_angle.prop31``'s result (dims ``step``,
``sample``).
"""

from __future__ import annotations

import warnings

import xarray as xr

from amdm_geom.analyses.prop31.table5 import paper_table5
from amdm_geom.core.palette import colour

__all__ = ["CAPTIONS", "prop31_figures"]

#: The captions of ``norm_angle``'s figures (``<store>/<figure>``; fnmatch patterns, see
#: ``amdm_geom.app.runner.output.caption_of``).
CAPTIONS = {
    "*/norm_gap": (
        "Prop. 3.1, eq. (5) on one store (cf. Figure 7): the norm gap | |z1| - |z2| | of the two models' sampled "
        "latents per sampling step (line: mean over samples, band: min to max) against eq. (5)'s bound "
        "sqrt(1 - 2a(1 - cos phi)) delta (black, dashed); time runs right to left and the grey span is the "
        "aggregation window. The claim holds where the solid band stays below the dashed one; inside the window "
        "both should fall by orders of magnitude."),
    "*/angle_delta": (
        "Prop. 3.1 on one store (cf. Figure 8): left, the angle phi between the two models' sampled latents in "
        "float64; right, their difference norm delta = |z1 - z2| (line: mean, band: min to max over samples; grey "
        "span: aggregation window). Grey dots are the paper's Table 5 (computed in float16): compare the curves' "
        "level and their drop inside the window with them; phi below about 0.03 is under float16's resolution."),
    "*/delta_parts": (
        "Delta taken apart (eqs. 20-23) on one store: the measured delta (black, solid) and the norms of its "
        "parts: the different starting points A(z1 - z2), the eps difference B(eps1 - eps2), the schedules' "
        "difference and the noise; with --cross-eps also |B|(cond + func) (eqs. 21-22) and the bound "
        "|B|(cond + func) + sigma sqrt(2n) (black, dashed). The largest part says what drives delta; where the "
        "start part dominates, the proof's assumption of one common starting point fails."),
}

_TERMS = ("start_part", "eps_part", "schedule_part", "noise_part")


def prop31_figures(res: xr.Dataset, *, paper: bool = True) -> dict:
    """``{"norm_gap", "angle_delta", "delta_parts": figure}`` for one store's ``prop31`` result:
    the norm gap with its bound (cf. Figure 7), angle and delta (cf. Figure 8, beside the paper's
    Table 5 when ``paper``), and delta taken apart against its bound (eqs. 20-23)."""
    import matplotlib.pyplot as plt

    t = res.t_index.values  # sampling steps, as the paper's Table 5 and Figures 7-8 count them
    band = lambda ax, da, label, **kw: _band(ax, t, da, label, **kw)  # noqa: E731

    fig, ax = plt.subplots(figsize=(6.4, 4))
    band(ax, res.norm_gap, "| |z1| - |z2| |")
    band(ax, res.norm_gap_bound, "bound, eq. (5)", ls="--", color=colour("bound"))
    _shade_window(ax, res)
    ax.set_yscale("log")
    ax.set_xlabel("t (sampling step)")
    ax.set_ylabel("norm gap")
    ax.set_title("Norm gap of the sampled latents (cf. Figure 7)")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs = {"norm_gap": fig}

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    band(axes[0], res.phi, "phi (float64)")
    band(axes[1], res.delta, "delta = |z1 - z2|")
    if paper:
        table = paper_table5()
        axes[0].plot(table.index, table.phi, ".", color=colour("reference"), ms=3, label="paper, Table 5 (float16)")
        axes[1].plot(table.index, table.delta, ".", color=colour("reference"), ms=3, label="paper, Table 5")
    for ax, label in zip(axes, ("phi (rad)", "delta")):
        _shade_window(ax, res)
        ax.set_yscale("log")
        ax.set_xlabel("t (sampling step)")
        ax.set_ylabel(label)
        ax.invert_xaxis()
        ax.legend(fontsize=8)
    axes[0].set_title("Angle (cf. Figure 8a)")
    axes[1].set_title("Difference norm (cf. Figure 8b)")
    fig.tight_layout()
    figs["angle_delta"] = fig

    fig, ax = plt.subplots(figsize=(6.4, 4))
    band(ax, res.delta, "delta", color="k")
    for part, style in zip(_TERMS, ("-", "-", ":", "-")):
        if float(res[part].max()) > 0:
            band(ax, res[part], part.replace("_", " "), ls=style)
    if "delta_bound" in res:
        band(ax, res.delta_bound, "bound |B|(cond+func) + s sqrt(2n)", ls="--", color=colour("bound"))
        band(ax, abs(res.B) * (res.cond_term + res.func_term), "|B| (cond + func), eqs. (21)-(22)", ls="-.")
    _shade_window(ax, res)
    ax.set_yscale("log")
    ax.set_xlabel("t (sampling step)")
    ax.set_ylabel("norm")
    ax.set_title("delta taken apart (eqs. 20-23)")
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    fig.tight_layout()
    figs["delta_parts"] = fig

    return figs



def _band(ax, t, da: xr.DataArray, label: str, **kw):
    with warnings.catch_warnings():  # a step with no finite sample is a gap in the figure, not an error
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, lo, hi = da.mean("sample").values, da.min("sample").values, da.max("sample").values
    line, = ax.plot(t, mean, label=label, **kw)
    if da.sizes["sample"] > 1:
        ax.fill_between(t, lo, hi, color=line.get_color(), alpha=0.15, lw=0)


def _shade_window(ax, res: xr.Dataset):
    agg = res.t_index.values[res.aggregated.values]
    if len(agg):
        ax.axvspan(agg.max(), agg.min(), color="0.9", zorder=0, label="aggregation window")

"""The figures of Prop. 3.1 on recorded trajectories (App. D.2, D.3; cf. Figures 7 and 8): the
norm gap with its bound of eq. (5), the angle and delta beside the paper's Table 5, and delta
taken apart (eqs. 20-23) against its bound, from ``norm_angle.prop31``'s result (dims ``step``,
``sample``).
"""

from __future__ import annotations

import warnings

import xarray as xr

from .table5 import paper_table5

__all__ = ["prop31_figures"]

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
    band(ax, res.norm_gap_bound, "bound, eq. (5)", ls="--")
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
        axes[0].plot(table.index, table.phi, "k.", ms=3, label="paper, Table 5 (float16)")
        axes[1].plot(table.index, table.delta, "k.", ms=3, label="paper, Table 5")
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
        band(ax, res.delta_bound, "bound |B|(cond+func) + s sqrt(2n)", ls="--", color="C3")
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

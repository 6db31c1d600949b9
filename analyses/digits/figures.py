"""The digits benchmark's figures: success per arm with 95% intervals, image grids of the same
seeds under each method for two targets (a green frame: the detectors read the target), success
per (position, colour) target, and the functional proximity of each pair of models over t."""

from __future__ import annotations

import numpy as np
import xarray as xr

from amdm_geom.analyses.digits.runs import GROUPS
from amdm_geom.core import palette
from amdm_geom.models.digits.data import COLOURS, POSITIONS

__all__ = ["figures", "success_vs_guidance"]

#: The role (``amdm_geom.core.palette``) of the arms that show one; every other arm is drawn in a neutral grey,
#: alternating by group.
ARM_ROLES = {"position": "model 1", "colour": "model 2", "digit": "model 3", "amdm": "AMDM",
             "amdm_swapped": "AMDM swapped", "amdm_lerp": "lerp", "composable": "composable",
             "superdiff_and": "superdiff_and", "ula": "ula", "flow_position": "model 1", "flow_colour": "model 2",
             "flow_amdm": "AMDM"}
GRID_ARMS = ("position", "colour", "amdm", "amdm_swapped", "amdm_lerp", "amdm_linear", "composable", "superdiff_and",
             "ula", "amdm3", "flow_amdm")


def _interval(x: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    n, k = len(x), float(np.sum(x))
    ci = stats.binomtest(int(round(k)), n).proportion_ci(0.95, method="wilson")
    return ci.low, ci.high


def _arm_colour(arm: str, group: str) -> str:
    """The arm's role colour, or its group's neutral grey (``palette.NEUTRALS``, alternating by group)."""
    return palette.colour(ARM_ROLES[arm]) if arm in ARM_ROLES else palette.NEUTRALS[GROUPS.index(group) % 2]


def success_figure(ds: xr.Dataset):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    arms = [str(a) for a in ds.arm.values]
    x = np.arange(len(arms))
    for ax, var, title in ((axes[0], "success", "pair target (position, colour)"),
                           (axes[1], "success_triple", "triple target (position, colour, digit)")):
        means = ds[var].mean("sample").values
        ci = np.array([_interval(ds[var].sel(arm=a).values) for a in arms])
        ax.bar(x, means, color=[_arm_colour(a, str(g)) for a, g in zip(arms, ds.group.values)],
               yerr=[means - ci[:, 0], ci[:, 1] - means], capsize=2)
        ax.set_xticks(x, [f"{a} ({int(c)})" for a, c in zip(arms, ds.calls.values)], rotation=75, fontsize=7)
        ax.set_title(f"Success on the {title}", fontsize=9)
    axes[0].set_ylabel("share of samples (95% Wilson interval)")
    fig.suptitle("Digits benchmark: success per arm (in brackets: network evaluations per sample)", fontsize=10)
    fig.tight_layout()
    return fig


def grid_figure(ds: xr.Dataset, position: int, colour: int, columns: int = 8):
    import matplotlib.pyplot as plt

    tgt = ds.target.values
    samples = np.nonzero((tgt[:, 0] == position) & (tgt[:, 1] == colour))[0][:columns]
    arms = [a for a in GRID_ARMS if a in ds.arm]
    fig, axes = plt.subplots(len(arms), len(samples), figsize=(1.1 * len(samples) + 1.6, 1.1 * len(arms)),
                             squeeze=False)
    for i, arm in enumerate(arms):
        for j, k in enumerate(samples):
            ax = axes[i, j]
            img = (ds.images.sel(arm=arm).values[k].transpose(1, 2, 0) + 1) / 2
            ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
            ok = bool(ds.success.sel(arm=arm).values[k])
            for side in ax.spines.values():
                side.set_edgecolor("#1a7f37" if ok else "#cf222e")
                side.set_linewidth(2.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(arm, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"Target: {POSITIONS[position]}, {COLOURS[colour]}\n(same seeds in every row; green frame: "
                 "the detectors read the target)", fontsize=8)
    fig.tight_layout()
    return fig


def target_figure(ds: xr.Dataset):
    import matplotlib.pyplot as plt

    arms = [a for a in ("position", "colour", "amdm", "composable") if a in ds.arm]
    fig, axes = plt.subplots(1, len(arms), figsize=(3 * len(arms), 3), squeeze=False)
    key = ds.target.values[:, 0] * 4 + ds.target.values[:, 1]
    for ax, arm in zip(axes.flat, arms):
        s = ds.success.sel(arm=arm).values
        grid = np.array([[s[key == p * 4 + c].mean() if np.any(key == p * 4 + c) else np.nan for c in range(4)]
                         for p in range(4)])
        ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        for (p, c), v in np.ndenumerate(grid):
            ax.text(c, p, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(4), COLOURS, fontsize=7)
        ax.set_yticks(range(4), POSITIONS, fontsize=7)
        ax.set_title(arm, fontsize=9)
    fig.suptitle("Success per (position, colour) target", fontsize=9)
    fig.tight_layout()
    return fig


def proximity_figure(ds: xr.Dataset):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for k, pair in enumerate(ds.pair.values):
        ax.plot(ds.t, ds.proximity.sel(pair=pair), "o-", color=f"C{k}",
                label=f"{pair} ({ds.ecosystem.sel(pair=pair).item()})")
    ax.set_yscale("log")
    ax.set_xlabel("training timestep t")
    ax.set_ylabel("|eps_A - eps_B| / |eps_A|")
    ax.set_title("Functional proximity of each pair of digits models over t", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figures(ds: xr.Dataset) -> dict:
    out = {"success": success_figure(ds), "by_target": target_figure(ds),
           "grid_top_left_red": grid_figure(ds, 0, 0), "grid_bottom_right_blue": grid_figure(ds, 3, 2)}
    if "proximity" in ds:
        out["proximity"] = proximity_figure(ds)
    return out


def success_vs_guidance(tree):
    """The grid's success against guidance (``grid_benchmark``'s DataTree, one node per variant of
    the ecosystem): the single models, AMDM position first at each T's reference s (the grid's
    ``reference_s`` where T has it, else its middle s) and the peers, one panel per (T, variant)."""
    import matplotlib.pyplot as plt

    from amdm_geom.analyses.digits.grid_runs import Grid, cell_label

    g = Grid.model_validate_json(tree.attrs["grid"])
    panels = [(T, ss, eco) for T, ss in zip(g.steps, g.s_values) for eco in g.ecosystems]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False, layout="constrained")
    for ax, (T, ss, eco) in zip(axes[0], panels):
        ds = tree[eco].to_dataset()
        s = g.reference_s if g.reference_s in ss else ss[len(ss) // 2]
        lines = {"position": "position@T{T}_g{g:g}", "colour": "colour@T{T}_g{g:g}",
                 "amdm": "amdm@" + "{cell}", "composable": "composable@T{T}_g{g:g}",
                 "superdiff_and": "superdiff_and@T{T}_g{g:g}", "ula": "ula@T{T}_g{g:g}"}
        for name, pattern in lines.items():
            arms = [pattern.format(T=T, g=gv, cell=cell_label(T, gv, s)) for gv in g.guidance]
            if not all(a in ds.arm for a in arms):
                continue
            ys = [float(ds.success.sel(arm=a).mean()) for a in arms]
            ci = np.array([_interval(ds.success.sel(arm=a).values) for a in arms])
            label = f"AMDM (s = {s})" if name == "amdm" else name
            ax.errorbar(g.guidance, ys, yerr=[np.subtract(ys, ci[:, 0]), ci[:, 1] - ys], marker="o", capsize=3,
                        label=label, color=palette.colour(ARM_ROLES.get(name, name)))
        ax.set_xticks(g.guidance, [f"{x:g}" for x in g.guidance])
        ax.set_xlabel("guidance scale")
        ax.set_ylabel("success (position and colour)")
        ax.set_ylim(0, 1)
        ax.set_title(f"T = {T}, x0 {eco}", fontsize=9)
    axes[0][0].legend(fontsize=7)
    return fig

"""Lemma A.1 and Proposition 3.2: where Gaussian mass lies, and whether the shifted latent lies
where model 2 puts its mass.

- ``lemma_grid``: over n (2 .. 16384) and eps, the Monte Carlo probability that |X| lies within
  eps sqrt(n) sigma of sqrt(n) sigma, the exact chi probability and the bound of eq. (9); a
  verdict per cell.
- Prop. 3.2 on runs with sigma_t > 0 (``prop32``, ``sweep``, ``summarize``,
  ``prop32_verdicts``): see ``amdm_geom.analyses.common.membership``.
- Prop. 3.2's proof (eqs. 28-30) on the same runs: the sign of eta in eq. (29) against eq. (7)'s
  move, the existence claim, and the eta that would reach model 2's shell (``proof``,
  ``proof_verdicts``): see ``amdm_geom.analyses.prop32.proof``.

The analysis ``Shell`` (``amdm_geom.analyses.base.Analysis``): ``compute(stores)`` gives an ``xarray.DataTree``
with nodes ``lemma_grid`` (dims ``n``, ``eps``), ``prop32_<store>`` per store (dims ``step``,
``sample``, ``eps``), ``proof_<store>`` per store (dims ``step``, ``sample``) and
``prop32_summary`` (dims ``run``, ``eps``), written as ``<node>.zarr``; the figures
``lemma_a1``, ``radius_<store>`` and ``membership``; the tables ``prop32_summary.csv`` and
``proof_<store>.csv`` (per step).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import torch
import xarray as xr

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.common.membership import EPS_GRID, prop32, prop32_verdicts, summarize, sweep
from amdm_geom.analyses.prop32.proof import proof, proof_table, proof_verdicts
from amdm_geom.core import bounds, geometry
from amdm_geom.core.palette import colour
from amdm_geom.core.verdicts import Verdict, at_most, status_of

__all__ = ["CAPTIONS", "EPS_GRID", "NAME", "Shell", "compute", "figures", "lemma_cells", "lemma_grid",
           "lemma_verdicts", "plot", "proof", "proof_table", "proof_verdicts", "prop32", "prop32_verdicts", "summarize",
           "sweep", "tables", "verdicts"]

NAME = "shell"
#: The figures' captions (fnmatch patterns over the figure names, ``amdm_geom.app.runner.output.caption_of``).
CAPTIONS = {
    "lemma_a1": (
        "Lemma A.1: the probability that |X| of X ~ N(0, I_n) lies within eps sqrt(n) of sqrt(n), over the "
        "dimension n, one colour per eps: exact chi law (line), Monte Carlo (dots) and the bound of eq. (9) "
        "(dashed, 0 where vacuous). The lemma holds where the dashed line stays under the solid one; the shell "
        "forms (probability near 1) only at large n, e.g. SD's n = 16384."),
    "radius_*": (
        "Prop. 3.2 on one store: per sampling step (time runs right to left), the shifted latent z~ of model 1 "
        "(blue) and model 2's own sample (vermillion), as |z - mu_2| / (sigma_t sqrt n), mean over samples with "
        "band min to max. Model 2's shell is the line at 1 with bands eps = 0.05 and 0.2: eq. (8)'s claim is "
        "that z~ lands in those bands as model 2's own sample does."),
    "membership": (
        "Prop. 3.2, eq. (8): per run (one colour each; w and eta in the legend), the measured share of z~ in model "
        "2's shell A(eps) (solid, dots) against eq. (8)'s lower bound (dashed, 0 where vacuous), over eps. The "
        "claim holds where each solid line lies on or above its own dashed line."),
}

N_GRID = (2, 4, 16, 64, 256, 1024, 4096, 16384)
LEMMA_EPS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


# --------------------------------------------------------------------------------------------
# Lemma A.1


def lemma_grid(n_grid=N_GRID, eps_grid=LEMMA_EPS, draws: int = 4000, seed: int = 0) -> xr.Dataset:
    """Monte Carlo, exact and bound of Lemma A.1 over ``n x eps`` (sigma = 1 without loss)."""
    g = torch.Generator().manual_seed(seed)
    mc = np.zeros((len(n_grid), len(eps_grid)))
    for i, n in enumerate(n_grid):
        left, norms = draws, []
        while left:  # in blocks, to keep memory flat at n = 16384
            m = min(left, max(1, 2**22 // n))
            norms.append(geometry.norm(torch.randn(m, n, generator=g, dtype=torch.float64)).numpy())
            left -= m
        r = np.concatenate(norms) / math.sqrt(n)
        mc[i] = [np.mean(np.abs(r - 1) <= e) for e in eps_grid]
    n, eps = np.meshgrid(np.asarray(n_grid, float), np.asarray(eps_grid, float), indexing="ij")
    exact = bounds.shell_probability_exact(n, eps)
    return xr.Dataset(
        {"monte_carlo": (("n", "eps"), mc), "exact": (("n", "eps"), exact),
         "bound": (("n", "eps"), bounds.shell_probability_lower_bound(n, eps)),
         "mc_se": (("n", "eps"), np.sqrt(np.clip(exact * (1 - exact), 1e-12, None) / draws))},
        coords={"n": list(n_grid), "eps": list(eps_grid)}, attrs={"draws": draws, "seed": seed})


def lemma_cells(grid: xr.Dataset) -> xr.DataArray:
    """The verdict of each (n, eps) cell: holds, violated or vacuous."""
    # bound <= exact up to rounding: where both round to 1, a last-bit difference decides nothing
    status = np.where(grid.bound <= 0, "vacuous",
                      np.where(at_most(grid.bound.values, grid.exact.values), "holds", "violated"))
    return xr.DataArray(status, dims=("n", "eps"), coords={"n": grid.n, "eps": grid.eps})


def lemma_verdicts(grid: xr.Dataset) -> list[Verdict]:
    """One row for the whole grid. The slack is measured on the scale of the mass outside the
    shell (bound's miss / exact miss >= 1), which stays resolved where both probabilities round
    to 1."""
    cells = lemma_cells(grid)
    z = np.abs(grid.monte_carlo - grid.exact) / grid.mc_se
    violated, vac = int((cells == "violated").sum()), int((cells == "vacuous").sum())
    n, eps = np.meshgrid(grid.n.values.astype(float), grid.eps.values, indexing="ij")
    miss_exact = bounds.shell_miss_probability_exact(n, eps)
    resolved = (miss_exact > 1e-300) & (cells.values == "holds")
    ratio = np.where(resolved, bounds.shell_miss_probability_bound(n, eps) / np.where(resolved, miss_exact, 1), np.inf)
    worst = float(ratio.min())
    i, j = np.unravel_index(int(np.argmin(ratio)), ratio.shape)
    return [Verdict(
        family="lemma-a1",
        key="lemma_a1_grid", claim="|X| within eps sqrt(n) s w.p. >= bound", where="Lemma A.1, eq. (9)",
        status=status_of(violated, (cells == "holds").any()),
        measured=f"min bound/exact miss {worst:.2f}", bound=">= 1 (chi law)", value=worst, reference=1.0,
        detail=(f"{int((cells == 'holds').sum())} (n, eps) cells hold, {violated} violated, {vac} vacuous (bound <= 0 "
                f"where n eps^2 is small) over n = {int(grid.n[0])}..{int(grid.n[-1])}, eps = "
                f"{float(grid.eps[0]):g}..{float(grid.eps[-1]):g}; tightest at n = {int(grid.n[i])}, eps = "
                f"{float(grid.eps[j]):g}. Monte Carlo ({grid.attrs['draws']} draws a cell) agrees with the chi law "
                f"to within {float(z.max()):.1f} standard errors. The printed step (15) uses sqrt(1-d) >= 1-d/2, "
                "which is false; the conclusion holds (an exact Chernoff bound of the lower tail)."))]


# --------------------------------------------------------------------------------------------
# the analysis contract


def compute(stores: Mapping, *, quick: bool = False, seed: int = 0, runs=None, lemma_draws: int = 4000,
            **prop32_options) -> xr.DataTree:
    """Lemma A.1's grid (``lemma_draws`` draws a cell) and Prop. 3.2 on each store
    (``{name: path or opened store}``, runs with sigma_t > 0; ``prop32_options``: ``prop32``'s
    keywords), summarised. ``seed`` seeds the grid's draws and each run's reference draws;
    ``quick`` and ``runs`` change nothing."""
    if "summary" in stores:
        raise ValueError("a store may not be named 'summary' here: its results would be written over the summary's "
                         "(prop32_summary); rename it")
    found = {name: prop32(store, seed=seed, **prop32_options) for name, store in stores.items()}
    parts = {"lemma_grid": lemma_grid(draws=lemma_draws, seed=seed)}
    parts.update({f"prop32_{name}": res for name, res in found.items()})
    parts.update({f"proof_{name}": proof(store) for name, store in stores.items()})
    if found:
        parts["prop32_summary"] = summarize(found)
    return xr.DataTree.from_dict(parts)


def _runs(tree: xr.DataTree) -> dict[str, xr.Dataset]:
    """``{store name: prop32 result}`` from ``compute``'s tree."""
    return {name.removeprefix("prop32_"): node.to_dataset() for name, node in tree.children.items()
            if name.startswith("prop32_") and name != "prop32_summary"}


def _proofs(tree: xr.DataTree) -> dict[str, xr.Dataset]:
    """``{store name: proof result}`` (eqs. 28-30) from ``compute``'s tree."""
    return {name.removeprefix("proof_"): node.to_dataset() for name, node in tree.children.items()
            if name.startswith("proof_")}


def _summary(tree: xr.DataTree) -> xr.Dataset | None:
    return tree["prop32_summary"].to_dataset() if "prop32_summary" in tree.children else None


def verdicts(tree: xr.DataTree) -> list[Verdict]:
    """Lemma A.1's row, then Prop. 3.2's rows (eq. 8 one row per run, ``prop32_bound_runs_<run>``)
    and its proof's (eqs. 28-30), when there were stores."""
    summary, proofs = _summary(tree), _proofs(tree)
    rows = prop32_verdicts(summary, per_run=True) if summary is not None else []
    return (lemma_verdicts(tree["lemma_grid"].to_dataset()) + rows
            + (proof_verdicts(proofs) if proofs else []))


def plot(tree: xr.DataTree) -> dict:
    """``lemma_a1``, ``radius_<store>`` per store and ``membership`` (see ``figures``)."""
    return figures(tree["lemma_grid"].to_dataset(), _runs(tree), _summary(tree))


def tables(tree: xr.DataTree) -> dict:
    """``prop32_summary``: per run and eps, and ``proof_<store>``: eqs. (28)-(30) per step (when
    there were stores)."""
    summary = _summary(tree)
    out = {"prop32_summary": summary.to_dataframe()} if summary is not None else {}
    return out | {f"proof_{name}": proof_table(res) for name, res in _proofs(tree).items()}


# --------------------------------------------------------------------------------------------
# figures


def figures(grid: xr.Dataset | None = None, runs: dict | None = None, summary: xr.Dataset | None = None) -> dict:
    """``lemma_a1``: Lemma A.1's cells; ``radius_<name>``: where z~ sits relative to model 2's
    shell per step, per run (``{name: prop32 result}``); ``membership``: membership against the
    bound over eps (``summarize``'s result)."""
    import matplotlib.pyplot as plt

    figs = {}
    if grid is not None:
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for e in grid.eps.values:
            line, = ax.semilogx(grid.n, grid.exact.sel(eps=e), "-", label=f"eps={e:g}")
            ax.semilogx(grid.n, grid.monte_carlo.sel(eps=e), "o", ms=3, color=line.get_color())
            ax.semilogx(grid.n, grid.bound.sel(eps=e).clip(min=0), "--", color=line.get_color())
        ax.set_xlabel("n")
        ax.set_ylabel("P(| |X| - sqrt(n) | <= eps sqrt(n))")
        ax.set_title("Lemma A.1: exact (line), Monte Carlo (dots), bound (dashed)")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        figs["lemma_a1"] = fig
    for name, res in (runs or {}).items():
        fig, ax = plt.subplots(figsize=(6.4, 4))
        t = res.t_index.values
        for var, label, role in (("radius", "shifted z~ (model 1)", "model 1"),
                                 ("radius_own", "model 2's own sample", "model 2")):
            with warnings.catch_warnings():  # a step without a finite sample is a gap, not an error
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, lo, hi = (res[var].mean("sample"), res[var].min("sample"), res[var].max("sample"))
            ax.plot(t, mean, color=colour(role), label=label)
            ax.fill_between(t, lo, hi, color=colour(role), alpha=0.2)
        for e in (0.05, 0.2):
            ax.axhspan(1 - e, 1 + e, color=colour("model 2"), alpha=0.1)
        ax.axhline(1, color=colour("model 2"), lw=0.8, label="model 2's shell, eps = 0.05 and 0.2")
        ax.set_xlabel("t (sampling step)")
        ax.set_ylabel("|z - mu_2| / (sigma_t sqrt n)")
        ax.set_title(f"{name}: where z~ lies relative to model 2's shell")
        ax.invert_xaxis()
        ax.legend(fontsize=8)
        fig.tight_layout()
        figs[f"radius_{name}"] = fig
    if summary is not None:
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for i, run in enumerate(summary.run.values):
            line, = ax.plot(summary.eps, summary.membership.isel(run=i), "o-",
                            label=f"{run}: w={float(summary.w[i]):g}, eta={float(summary.eta[i]):g}")
            ax.plot(summary.eps, summary.bound_mean.isel(run=i), "--", color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlabel("eps")
        ax.set_ylabel("P(z~ in A(eps))")
        ax.set_title("Prop. 3.2: membership (solid) against eq. (8) (dashed, 0 where vacuous)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        figs["membership"] = fig
    return figs


class Shell(Analysis):
    """Lemma A.1 (its verdict names its family) and Prop. 3.2 on runs with sigma_t > 0:
    ``compute``, ``verdicts``, ``plot``, ``tables`` above."""

    name, family, other_families, captions = NAME, "prop32", ("lemma-a1",), CAPTIONS
    stores, reads = "required", ("stochastic",)
    summary = "Lemma A.1 grid and Prop. 3.2 shell and domain membership (stores with --ddim-eta > 0)"
    compute, verdicts, plot, tables = map(staticmethod, (compute, verdicts, plot, tables))

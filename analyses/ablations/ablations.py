"""Controlled ablations on the analytic ecosystem: the paper's qualitative claims, measured where
ground truth is exact.

The fine-grained GMM family at SD latent size (``amdm_geom.models.gmm``) gives the exact
posterior of every component, so "aggregation improves fine-grained control" becomes a number:
the posterior mass of the final samples on the intersection component (model 1 conditioned on a
position, model 2 on a colour; the target is that position and that colour), and the rate of
hard assignments to it. Manifold deviation is measured on model 1's sampled latents during the
run: how far |z_t| strays from sqrt(E|z_t|^2) (its expected shell) and how far the exact log
density log p_t(z_t) falls below that of exact draws of p_t (a z-score).

Groups (each a table, a figure and a verdict against the paper's claim):

- ``tables12``: model 1 alone, model 2 alone, AMDM, AMDM with the roles swapped (Tables 1-2);
- ``figure5``: slerp, lerp and the earlier version's orthogonal mix across aggregation steps s;
- ``table3``: aggregation windows early, middle and late of equal length (T = 20, s = 10);
- ``table4``: the shift eta from 0 to 0.5 (Table 4) and beyond (the earlier version's 35-55);
- ``n3``: three models (position, colour, style; w1 = 0.5, w2 = 0.65) on a family with a third
  attribute;
- ``table10``: model 2 on another SDE (the DDPM-linear and cosine VP schedules; the same model
  in VE coordinates, EDM/VE-style, ``amdm_geom.models.ve``), aggregated anyway;
- ``variants``: the mean of eq. (7) as printed (mu at z') against Algorithm 1's, and the earlier
  version's rule (orthogonal mix, shared z_T) with eta = 0.3 and 40.

Every run uses the same per-sample seeds, so comparisons between runs are paired. The runs are
specs (``ablation_runs``, this analysis' ``RUNS``): each store keeps its own, so ``amdm-geom
rerun`` repeats any of them. The analysis contract (``amdm_geom.analyses``): ``compute`` measures
the stores given, or runs every setting into ``runs/ablations`` first; ``verdicts``, ``plot`` and
``tables`` read its Dataset.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from amdm_geom.analyses.ablations import runs as ablation_runs
from amdm_geom.analyses.ablations.runs import GROUPS, recorded_steps, run_settings, settings
from amdm_geom.analyses.ablations.verdicts import EQUIVALENCE_MARGIN, LEVEL, verdicts
from amdm_geom.core import geometry, palette
from amdm_geom.models.gmm import FineGrainedFamily
from amdm_geom.store import open_run, verify_run

__all__ = ["CAPTIONS", "EQUIVALENCE_MARGIN", "GROUPS", "LEVEL", "NAME", "RESULT", "RUNS", "STORES", "SUMMARY",
           "compute", "measure", "planned", "plot", "recorded_steps", "run_settings", "saved", "settings", "tables",
           "verdicts"]

NAME = "ablations"
SUMMARY = "Tables 1-4, Figure 5, Table 10 on the exact GMM family (runs its own stores into RUNS/ablations)"
STORES = "optional"
RESULT = "ablations"
#: The probe-like module of this analysis' own runs (``Spec``, ``build``, ``run``): ``amdm-geom
#: rerun`` finds it here for a store whose ``attrs["analysis"]`` is ``"ablations"``.
RUNS = ablation_runs
#: The figures' captions (fnmatch patterns over the figure names, ``amdm_geom.app.runner.output.caption_of``).
CAPTIONS = {
    "success_by_run": (
        "Every ablation run on the exact GMM family, grouped (Tables 1-4, Figure 5, Table 10, variants): the "
        "posterior mass of the final samples on the target component (position and colour), +-2 SE. Role "
        "colours: model 1, model 2 (and model 3) alone, AMDM, AMDM swapped, and the mixing rules slerp, lerp "
        "and orthogonal mix; grey: the other runs, alternating by group. Tables 1-2's claim holds where AMDM's "
        "bar stands above both single models' bars."),
    "figure5": (
        "Figure 5's analogue on the exact GMM family. Left: success (posterior mass on the target, +-2 SE) over "
        "the number of aggregation steps s for slerp (eq. 6), lerp and the earlier version's orthogonal mix. "
        "Right: manifold deviation |z_t| / sqrt(E|z_t|^2) - 1 of model 1's latent per step at the largest s "
        "(symlog). The paper's claims: slerp beats lerp as s grows (left), and lerp leaves the manifold while "
        "slerp stays near 0, the grey line (right)."),
    "table4_eta": (
        "Table 4's analogue: success (posterior mass on the target, +-2 SE) of AMDM over the shift eta of eq. "
        "(7) (log scale; eta = 0 drawn at 0.01). Grey: the paper's eta = 0.3 (dotted) and the earlier "
        "version's 35-55 (shaded). The paper's claim: eta = 0.3 is best in [0, 0.5], i.e. the curve peaks at "
        "the dotted line."),
}
#: The role (``amdm_geom.core.palette``) of the runs that show one (the Figure 5 runs by their mix's prefix).
RUN_ROLES = {"model1": "model 1", "model2": "model 2", "amdm": "AMDM", "amdm_swapped": "AMDM swapped",
             "n3_position": "model 1", "n3_colour": "model 2", "n3_style": "model 3"}
MIXES = ("slerp", "lerp", "orthogonal_mix")


# --------------------------------------------------------------------------------------------
# measuring


def _reference(fam: FineGrainedFamily, abar: float, count: int, seed: int) -> tuple[float, float]:
    """Mean and std of log p_t(Z) for exact draws Z of the uniform-prior mixture at abar."""
    w = fam.condition()
    z, _ = fam.mixture.sample_diffused(w, count, abar, np.random.default_rng(seed))
    lp = fam.mixture.log_prob(z, w, abar).numpy()
    return float(lp.mean()), float(lp.std())


def _sq_norm(fam: FineGrainedFamily, abar: float) -> float:
    w = fam.condition()
    mix = fam.mixture
    return abar * float((w * ((mix.means**2).sum(1) + mix.variances.sum(1))).sum()) + mix.dim * (1 - abar)


def spec_of(ds: xr.Dataset) -> ablation_runs.Spec:
    """The run's spec, kept in its store."""
    if ds.attrs.get("analysis") != NAME or "spec" not in ds.attrs:
        raise ValueError(f"store {ds.encoding.get('source', '(in memory)')} is not an ablation run (no ablation spec)")
    return ablation_runs.Spec.model_validate_json(ds.attrs["spec"])


def measure(path, families: dict, *, n_ref: int = 128, cache: dict | None = None) -> dict:
    """Success and deviation of one ablation store (``families``: built families by spec, filled
    as needed). The store is verified whole first (``verify_run``): a damaged run is one line
    naming its store, variable and chunk, never numbers read from it."""
    if not isinstance(path, xr.Dataset):
        verify_run(path)
    ds = open_run(path)
    spec = spec_of(ds)
    if spec.family not in families:
        families[spec.family] = spec.family.build()
    fam = families[spec.family]
    w = fam.condition()
    cache = {} if cache is None else cache
    steps = [int(k) for k in ds.attrs["recorded_steps"]]
    last = steps[-1]
    abar_prev = ds.model_alpha_bar_prev.isel(model=0).values
    batch = ds.sizes["sample"]
    z_final = torch.from_numpy(ds.z_next.isel(step=last, model=0).values.astype(np.float64).reshape(batch, -1))
    post = fam.mixture.responsibilities(z_final, w, float(abar_prev[last])).numpy()  # (B, K)
    target = fam.target(0, 0, 0 if spec.family.n_styles > 1 else None).numpy()
    mass = post[:, target].sum(1)
    hard = (post.argmax(1) == int(np.nonzero(target)[0][0])).astype(float)
    norm_dev, logp_z = {}, {}
    for k in steps:
        z = ds.z_next.isel(step=k, model=0).values.astype(np.float64).reshape(batch, -1)
        abar = float(abar_prev[k])
        key = (spec.family, round(abar, 12))
        if key not in cache:
            cache[key] = (_sq_norm(fam, abar), *_reference(fam, abar, n_ref, seed=k))
        expected, mean_ref, std_ref = cache[key]
        norm_dev[k] = geometry.norm(z) / math.sqrt(expected) - 1.0
        logp_z[k] = (fam.mixture.log_prob(torch.from_numpy(z), w, abar).numpy() - mean_ref) / std_ref
    return {"spec": spec, "mass": mass, "hard": hard, "norm_dev": norm_dev, "logp_z": logp_z,
            "T": ds.sizes["step"], "size": math.prod(spec.family.latent_shape)}


def planned(*, quick: bool = False, seed: int = 0, runs: Path) -> dict[str, ablation_runs.Spec]:
    """Every run this analysis needs, as specs into ``runs/ablations/<name>.zarr`` (``{name:
    spec}``): what ``amdm_geom.app.engine.analysis_tasks`` runs as tasks, in parallel, before
    ``compute`` measures their stores."""
    return {spec.name: spec for spec in settings(quick, seed=seed, out=Path(runs) / NAME)}


def compute(stores=None, *, quick: bool = False, seed: int = 0, runs: Path | None = None) -> xr.Dataset:
    """Measure the ablation stores (``{name: path}``); with none given, run every setting into
    ``runs/ablations`` first (``quick``: the small set; ``seed``: the family's and the samples')."""
    if not stores:
        if runs is None:
            raise ValueError("ablations runs its own stores: give a folder for them (runs=..., --runs)")
        stores = run_settings(Path(runs) / NAME, quick=quick, seed=seed)
    families: dict = {}
    cache: dict = {}
    rows = {name: measure(path, families, cache=cache) for name, path in stores.items()}
    names = list(rows)
    batch = len(rows[names[0]]["mass"])
    T_max = max(r["T"] for r in rows.values())
    dev = np.full((len(names), T_max, batch), np.nan)
    lpz = np.full((len(names), T_max, batch), np.nan)
    for i, n in enumerate(names):
        for k, v in rows[n]["norm_dev"].items():
            dev[i, k] = v
            lpz[i, k] = rows[n]["logp_z"][k]
    ds = xr.Dataset(
        {"mass": (("run", "sample"), np.stack([rows[n]["mass"] for n in names])),
         "hard": (("run", "sample"), np.stack([rows[n]["hard"] for n in names])),
         "norm_dev": (("run", "step", "sample"), dev), "logp_z": (("run", "step", "sample"), lpz)},
        coords={"run": names, "group": ("run", [rows[n]["spec"].group for n in names]),
                "label": ("run", [rows[n]["spec"].label for n in names]),
                "T": ("run", [rows[n]["T"] for n in names]), "step": np.arange(T_max), "sample": np.arange(batch)},
        attrs={"quick": int(quick), "batch": batch, "latent_size": rows[names[0]]["size"]})
    ds["params"] = ("run", [str(rows[n]["spec"].params) for n in names])
    ds["success"] = ds.mass.mean("sample")
    ds["success_se"] = ds.mass.std("sample", ddof=1) / math.sqrt(batch)
    ds["hard_rate"] = ds.hard.mean("sample")
    ds["max_norm_dev"] = np.abs(ds.norm_dev).max("step").mean("sample")
    ds["min_logp_z"] = ds.logp_z.min("step").mean("sample")
    return ds


# --------------------------------------------------------------------------------------------
# figures and tables


def plot(ds: xr.Dataset) -> dict:
    """Success per run by group; Figure 5 (success over s, and deviation over t); the eta sweep
    (``{file name: figure}``)."""
    return named_figures(ds)


def _run_colour(run: str, group: str) -> str:
    """The run's role colour (``RUN_ROLES``, a Figure 5 run's mix), else its group's neutral grey."""
    mix = next((m for m in MIXES if group == "figure5" and run.startswith(m + "_s")), None)
    role = RUN_ROLES.get(run, mix)
    return palette.colour(role) if role else palette.NEUTRALS[GROUPS.index(group) % 2]


def named_figures(ds: xr.Dataset) -> dict:
    """The figures of ``plot``, by file name."""
    import matplotlib.pyplot as plt

    figs = {}
    fig, ax = plt.subplots(figsize=(9, 4.2))
    order = [r for g in GROUPS for r in ds.run.values if str(ds.group.sel(run=r).item()) == g]
    x = np.arange(len(order))
    colors = [_run_colour(str(r), str(ds.group.sel(run=r).item())) for r in order]
    ax.bar(x, ds.success.sel(run=order), yerr=2 * ds.success_se.sel(run=order), color=colors)
    ax.set_xticks(x, order, rotation=75, fontsize=7)
    ax.set_ylabel("posterior mass on the target")
    ax.set_title("Fine-grained success per ablation run (bars: +-2 SE)")
    fig.tight_layout()
    figs["success_by_run"] = fig

    fig5 = [r for r in ds.run.values if str(ds.group.sel(run=r).item()) == "figure5"]
    if fig5:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for mix in MIXES:
            runs = sorted((r for r in fig5 if r.startswith(mix + "_s")), key=lambda r: int(r.rsplit("_s", 1)[1]))
            s = [int(r.rsplit("_s", 1)[1]) for r in runs]
            axes[0].errorbar(s, ds.success.sel(run=runs), yerr=2 * ds.success_se.sel(run=runs), marker="o", label=mix,
                             color=palette.colour(mix))
            last = runs[-1]
            dev = ds.norm_dev.sel(run=last).mean("sample").dropna("step")
            axes[1].plot(dev.step, dev, "o-", color=palette.colour(mix), label=f"{mix}, s = {s[-1]}")
        axes[0].set_xlabel("aggregation steps s")
        axes[0].set_ylabel("posterior mass on the target")
        axes[0].set_title("Figure 5a analogue: success over s")
        axes[0].legend(fontsize=8)
        axes[1].axhline(0, color="grey", lw=0.6)
        axes[1].set_yscale("symlog", linthresh=1e-2)  # the orthogonal mix diverges by orders of magnitude
        axes[1].set_ylim(bottom=-1.05)  # |z|/r - 1 >= -1
        axes[1].set_xlabel("step")
        axes[1].set_ylabel("|z_t| / sqrt(E|z_t|^2) - 1")
        axes[1].set_title("Figure 5b analogue: manifold deviation")
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        figs["figure5"] = fig

    etas = [r for r in ds.run.values if str(ds.group.sel(run=r).item()) == "table4"]
    if etas:
        values = sorted((float(r.split("_", 1)[1]), r) for r in etas)
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        e = [max(v, 1e-2) for v, _ in values]
        runs = [r for _, r in values]
        ax.errorbar(e, ds.success.sel(run=runs), yerr=2 * ds.success_se.sel(run=runs), marker="o",
                    color=palette.colour("AMDM"))
        ax.axvline(0.3, color=palette.colour("reference"), ls=":", label="paper's eta = 0.3")
        ax.axvspan(35, 55, color=palette.colour("reference"), alpha=0.15, label="earlier version's 35-55")
        ax.set_xscale("log")
        ax.set_xlabel("eta (0 drawn at 0.01)")
        ax.set_ylabel("posterior mass on the target")
        ax.set_title("Table 4 analogue: the shift eta")
        ax.legend(fontsize=8)
        fig.tight_layout()
        figs["table4_eta"] = fig
    return figs


def tables(ds: xr.Dataset) -> dict:
    """The table of every run's success, its standard error, hard assignments and deviation; and
    the power of every comparison (n used, paired sd, n that resolves ``stats.DELTA``, power at n)."""
    import pandas as pd

    power = pd.DataFrame([{"key": v.key, "claim": v.claim, "status": v.status, "n": v.n,
                           **{k: v.extra[k] for k in ("paired_sd", "comparisons", "n_to_resolve", "power_at_n",
                                                      "delta", "power")}}
                          for v in verdicts(ds) if "n_to_resolve" in v.extra]).set_index("key")
    return {"ablations": ds[["group", "label", "success", "success_se", "hard_rate", "max_norm_dev",
                             "min_logp_z"]].to_dataframe(), "power": power}


def saved(ds: xr.Dataset) -> xr.Dataset:
    """What is written: all but the per-step deviations."""
    return ds.drop_vars(["norm_dev", "logp_z"])

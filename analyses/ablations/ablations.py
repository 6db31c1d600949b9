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

Every run uses the same per-sample seeds, so comparisons between runs are paired: the runs are
the arms of a paired benchmark (``amdm_geom.analyses.common.paired``). Each run is a spec
(``ablation_runs``, this analysis' ``run_module``): each store keeps its own, so ``amdm-geom rerun``
repeats any of them; the scoring function (``measure``) maps a store to per-sample outcomes, and
``compute`` gives one Dataset over ``arm`` whose coordinates are the runs' settings (``eta``,
``agg_steps``, ``mix``, ...). The analysis ``Ablations`` (``amdm_geom.analyses.base``): ``compute`` measures
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
from amdm_geom.analyses.ablations.verdicts import verdicts
from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.common import paired
from amdm_geom.analyses.common.paired import EQUIVALENCE_MARGIN, LEVEL
from amdm_geom.core import geometry, palette
from amdm_geom.models.gmm import FineGrainedFamily
from amdm_geom.store import open_run, spec_of, verify_run

__all__ = ["CAPTIONS", "EQUIVALENCE_MARGIN", "GROUPS", "LEVEL", "NAME", "SETTINGS", "Ablations", "compute", "measure",
           "planned", "plot", "recorded_steps", "run_settings", "saved", "settings", "tables", "verdicts"]

NAME = "ablations"
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


def run_spec_of(ds: xr.Dataset) -> ablation_runs.Spec:
    """The run's spec, kept in its store (``amdm_geom.store.spec_of``)."""
    if ds.attrs.get("analysis") != NAME or "spec" not in ds.attrs:
        raise ValueError(f"store {ds.encoding.get('source', '(in memory)')} is not an ablation run (no ablation spec)")
    return spec_of(ds, ablation_runs.Spec)


def measure(path, families: dict, *, n_ref: int = 128, cache: dict | None = None) -> dict:
    """Success and deviation of one ablation store (``families``: built families by spec, filled
    as needed). The store is verified whole first (``verify_run``): a damaged run is one line
    naming its store, variable and chunk, never numbers read from it."""
    if not isinstance(path, xr.Dataset):
        verify_run(path)
    ds = open_run(path)
    spec = run_spec_of(ds)
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


#: The settings that are coordinates of the result whatever the runs measured (``paired.arm_dataset``
#: adds every other setting that varies between them): ``models`` as ``position+colour (ve)``.
SETTINGS = {"group": "group", "label": "label", "steps": "sampler.num_inference_steps", "eta": "sampler.eta",
            "agg_steps": "sampler.agg_steps", "mix": "sampler.mix",
            "models": lambda run: "+".join(m.attribute + ("" if m.sde == "scaled_linear" else f" ({m.sde})")
                                           for m in run.models)}


def _outcomes(measured: dict) -> dict:
    """One run's per-sample outcomes: ``mass``, ``hard`` ``(sample,)``, and ``norm_dev``,
    ``logp_z`` ``(step, sample)`` (NaN at the steps not recorded)."""
    out = {"mass": measured["mass"], "hard": measured["hard"]}
    for var in ("norm_dev", "logp_z"):
        full = np.full((measured["T"], len(measured["mass"])), np.nan)
        for k, v in measured[var].items():
            full[k] = v
        out[var] = full
    return out


def compute(stores=None, *, quick: bool = False, seed: int = 0, runs: Path | None = None) -> xr.Dataset:
    """Measure the ablation stores (``{name: path}``); with none given, run every setting into
    ``runs/ablations`` first (``quick``: the small set; ``seed``: the family's and the samples').
    One Dataset over ``arm`` (``paired.arm_dataset``; each arm the spec its store keeps, named
    as the store was given), its settings as coordinates."""
    if not stores:
        if runs is None:
            raise ValueError("ablations runs its own stores: give a folder for them (runs=..., --runs)")
        stores = run_settings(Path(runs) / NAME, quick=quick, seed=seed)
    families: dict = {}
    cache: dict = {}
    measured = {name: measure(path, families, cache=cache) for name, path in stores.items()}
    arms = [m["spec"] if m["spec"].name == name else m["spec"].replace(name=name) for name, m in measured.items()]
    T_max = max(m["T"] for m in measured.values())
    first = next(iter(measured.values()))
    ds = paired.arm_dataset(
        arms, {name: _outcomes(m) for name, m in measured.items()},
        dims={"norm_dev": ("step", "sample"), "logp_z": ("step", "sample")}, coords={"step": np.arange(T_max)},
        settings=SETTINGS, exclude=("run",),
        attrs={"quick": int(quick), "batch": len(first["mass"]), "latent_size": first["size"]})
    ds = paired.with_mean(ds, "mass", "success")
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


def _run_colour(run: str, group: str, mix: str) -> str:
    """The run's role colour (``RUN_ROLES``, a Figure 5 run's mix), else its group's neutral grey."""
    role = RUN_ROLES.get(run, mix if group == "figure5" else None)
    return palette.colour(role) if role else palette.NEUTRALS[GROUPS.index(group) % 2]


def named_figures(ds: xr.Dataset) -> dict:
    """The figures of ``plot``, by file name."""
    import matplotlib.pyplot as plt

    figs = {}
    fig, ax = plt.subplots(figsize=(9, 4.2))
    order = [r for g in GROUPS for r in paired.in_group(ds, g)]
    x = np.arange(len(order))
    colors = [_run_colour(r, str(ds.group.sel(arm=r).item()), str(ds.mix.sel(arm=r).item())) for r in order]
    ax.bar(x, ds.success.sel(arm=order), yerr=2 * ds.success_se.sel(arm=order), color=colors)
    ax.set_xticks(x, order, rotation=75, fontsize=7)
    ax.set_ylabel("posterior mass on the target")
    ax.set_title("Fine-grained success per ablation run (bars: +-2 SE)")
    fig.tight_layout()
    figs["success_by_run"] = fig

    if paired.in_group(ds, "figure5"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for mix in MIXES:
            runs = sorted(paired.in_group(ds, "figure5", mix=mix), key=lambda r: int(ds.agg_steps.sel(arm=r)))
            s = [int(ds.agg_steps.sel(arm=r)) for r in runs]
            axes[0].errorbar(s, ds.success.sel(arm=runs), yerr=2 * ds.success_se.sel(arm=runs), marker="o", label=mix,
                             color=palette.colour(mix))
            last = runs[-1]
            dev = ds.norm_dev.sel(arm=last).mean("sample").dropna("step")
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

    etas = paired.in_group(ds, "table4")
    if etas:
        values = sorted((float(ds.eta.sel(arm=r)), r) for r in etas)
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        e = [max(v, 1e-2) for v, _ in values]
        runs = [r for _, r in values]
        ax.errorbar(e, ds.success.sel(arm=runs), yerr=2 * ds.success_se.sel(arm=runs), marker="o",
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


class Ablations(Analysis):
    """Tables 1-4, Figure 5 and Table 10 on the exact GMM family (``compute``, ``verdicts``, ...
    above). Its own runs are specs of ``run_module`` (``Spec``, ``build``, ``run``): ``amdm-geom
    rerun`` finds it here for a store whose ``attrs["analysis"]`` is ``"ablations"``."""

    name, family, stores, result, captions = NAME, "ablations", "optional", "ablations", CAPTIONS
    summary = "Tables 1-4, Figure 5, Table 10 on the exact GMM family (runs its own stores into RUNS/ablations)"
    run_module = ablation_runs
    compute, verdicts, plot, tables, saved, planned = map(staticmethod, (compute, verdicts, plot, tables, saved,
                                                                          planned))

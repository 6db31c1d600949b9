"""When each model commits to each attribute, on the exact GMM family, beside the predicted speciation time.

The paper (Sec. 4.2, and its conclusion) says diffusion models "initially focus on generating features such as
position, attributes, and style, while later stages emphasize quality and consistency". On the fine-grained
exact family (``amdm_geom.models.gmm.fine_grained_family``: components (position, colour[, style])) the posterior
of every attribute value is exact at every state of a trajectory (``times``), so when a trajectory commits to
the value it ends with is measured, not detected. ``compute`` runs its own small trajectories (DDIM, T = 50,
deterministic, Algorithm 1's defaults for AMDM): the unconditional model (uniform weights: the data the
speciation theory is about), one model per attribute conditioned on that attribute's value 0, each alone, and
AMDM of those models (model 1 = position first). ``verdicts``:

- ``commitment_speciation_<attr>`` (a finding: the prediction of Biroli et al. 2024, ``speciation``, on the
  unconditional model): holds if the predicted speciation time lies inside the band of the measured
  commitment times, the central 80% of the samples' commitment times (10% to 90% quantiles, OU time) with each
  end's distribution-free 95% interval and each sample's time widened to the grid cell it committed in (the
  true crossing lies between the state before and the state it is first seen at): holds where t_S lies inside
  the band for every end of those intervals, violated where it lies outside for every end, else inconclusive.
  Why that band: speciation is where the symmetric state turns unstable and trajectories start to split; the
  theory places the split, up to an O(1) width in OU time, not a threshold of 0.9, so it predicts the range over
  which samples commit, not their median.
- ``commitment_early_<attr>_<run>`` (the paper's claim, per attribute and run): most samples (more than half)
  have committed by the middle of the trajectory (state T/2), as "initially" reads; the proportion's exact
  interval decides (holds when its lower end is above 0.5, violated when its upper end is below).

The digit class of the paper's claim has no counterpart on this family (position and colour are its only
attributes, with style where ``n_styles > 1``). Cost (measured on one core of a 2-core machine) at
the default settings (256 samples of 1024 dimensions, four runs of 50 steps: about 2 s), under 1 s with
``quick`` (32 samples), imports aside.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.commitment import speciation as sp
from amdm_geom.analyses.commitment import times
from amdm_geom.analyses.common import finite_or_none
from amdm_geom.core.palette import colour
from amdm_geom.core.verdicts import Verdict
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler

__all__ = ["CAPTIONS", "NAME", "Commitment", "compute", "plot", "verdicts"]

NAME = "commitment"
WHERE = "Sec. 4.2, Fig. 9"  # the claim's places (also contribution (3) and Sec. 6)
#: The settings: full and quick (the family's are its defaults but the latent's size).
SETTINGS = {False: {"samples": 256, "latent_shape": (4, 16, 16), "steps": 50},
            True: {"samples": 32, "latent_shape": (4, 16, 16), "steps": 50}}
#: The band of commitment times the speciation time is compared with (quantiles of the samples' times).
BAND = (0.1, 0.9)
ROLES = {"uncond": "exact", "position": "model 1", "colour": "model 2", "style": "model 3", "amdm": "AMDM"}
CAPTIONS = {"commitment": (
    "When each attribute is decided on the exact GMM family: the exact posterior of the value each sample ends "
    "with against the sampling step (median over samples, band 10% to 90%), one panel per attribute, one colour "
    "per run (the unconditional model, each conditioned model alone, AMDM). The dotted line is the commitment "
    "threshold 0.9, the dashed black vertical line the speciation time Biroli et al. (2024) predict (t_S = "
    "log(Lambda) / 2), the dash-dotted grey one the exact two-class curvature point, the thin grey one the middle "
    "of the trajectory (the paper's claim: committed by then).")}


def _runs(fam, names: list[str]):
    """``{run: (models, conditions, config)}``: the unconditional model, one model per attribute (value 0) alone,
    and AMDM of those (Algorithm 1's defaults; with three, w = (0.5, 0.65) as the ablations' n3)."""
    model = fam.model(name="gmm")
    conds = [fam.condition(**{name: 0}) for name in names]
    runs = {"uncond": ([model], [fam.condition()], {})}
    runs.update({name: ([model], [c], {}) for name, c in zip(names, conds)})
    runs["amdm"] = ([model] * len(names), conds, {"w": (0.5, 0.65)} if len(names) == 3 else {})
    return runs


def _trajectory_posteriors(fam, models, conds, config, seeds, steps) -> tuple[dict, np.ndarray]:
    """Model 1's states along one run (z_t entering each step, then the output) -> ``{attribute: (S, B, V)}``
    exact posteriors (uniform prior) and the states' ``alpha_bar (S,)``."""
    sampler = AMDMSampler(models, conds, {"steps": steps, **config})
    _, ds = sampler.run_with_cache(seeds, names_filter=["model0.z", "model0.z_next"])
    abar = np.append(ds.alpha_bar.values, ds.alpha_bar_prev.values[-1]).astype(np.float64)
    states = [ds.z.isel(step=k, model=0).values for k in range(steps)] + [ds.z_next.isel(step=-1, model=0).values]
    per = [times.attribute_posteriors(fam.mixture, torch.from_numpy(z), float(a)) for z, a in zip(states, abar)]
    return {name: np.stack([p[name] for p in per]) for name in per[0]}, abar


def _speciation(fam, names: list[str], abar: np.ndarray, alphas_cumprod) -> xr.Dataset:
    """Per attribute, the separating direction's spectrum and the predicted times on every clock."""
    return sp.speciation_dataset({name: sp.separation(fam.mixture, name) for name in names}, abar, alphas_cumprod)


def compute(stores: Mapping | None = None, *, quick: bool = False, seed: int = 0, runs: Path | None = None,
            n_styles: int = 1, samples: int | None = None) -> xr.Dataset:
    """Runs the exact family's trajectories and measures the commitment times. The result, over ``run``,
    ``attribute``, ``state`` (0 .. T: z_t entering step k, then the output) and ``sample``: ``path`` (the exact
    posterior of the value each sample ends with), ``final`` (that value), ``commit`` (the commitment state,
    ``times.commitment_index``; T + 1 = never); per state ``alpha_bar``, ``ou_time``, ``timestep`` (the
    sampler's t, fractional, for the output too); per attribute the speciation prediction (``_speciation``).
    No stores are read and none are written (``runs`` is unused)."""
    if stores:
        raise ValueError(f"{NAME} takes no stores; got {len(stores)}: {', '.join(map(str, stores))}")
    cfg = dict(SETTINGS[bool(quick)])
    if samples is not None:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
            raise ValueError(f"samples must be an int >= 2; got {samples!r}")
        cfg["samples"] = samples
    fam = fine_grained_family(cfg["latent_shape"], n_styles=n_styles, seed=seed)
    names = list(fam.mixture.labels)
    seeds = [seed * 1_000_003 + i for i in range(cfg["samples"])]
    paths, finals, commits, abar = [], [], [], None
    run_list = _runs(fam, names)
    for models, conds, config in run_list.values():
        post, abar = _trajectory_posteriors(fam, models, conds, config, seeds, cfg["steps"])
        fin = {a: times.final_value(post[a]) for a in names}
        path = {a: np.take_along_axis(post[a], fin[a][None, :, None], axis=2)[..., 0] for a in names}  # (S, B)
        paths.append([path[a] for a in names])
        finals.append([fin[a] for a in names])
        commits.append([times.commitment_index(path[a]) for a in names])
    alphas_cumprod = fam.model().scheduler.alphas_cumprod.numpy().astype(np.float64)
    ds = xr.Dataset(
        {"path": (("run", "attribute", "state", "sample"), np.array(paths)),
         "final": (("run", "attribute", "sample"), np.array(finals, dtype=np.int64)),
         "commit": (("run", "attribute", "sample"), np.array(commits, dtype=np.int64))},
        coords={"run": list(run_list), "attribute": names, "state": np.arange(abar.size), "sample": seeds,
                "alpha_bar": ("state", abar), "ou_time": ("state", times.ou_time(abar)),
                "timestep": ("state", np.array([sp.train_timestep(alphas_cumprod, a) for a in abar]))})
    ds = ds.merge(_speciation(fam, names, abar, alphas_cumprod))
    ds.attrs.update({"threshold": times.THRESHOLD, "level": times.LEVEL, "steps": cfg["steps"], "quick": int(quick),
                     "family": json.dumps(fam.params), "band": list(BAND)})
    return ds


# --------------------------------------------------------------------------------------------
# verdicts


def commit_ou_bounds(ds: xr.Dataset, run: str, attribute: str) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the OU-time cell its commitment lies in: (at the state it is first seen committed, at the
    state before). Committed at state 0: (t_0, +inf); never: (0, the output's), abar = 1 being OU time 0."""
    ou = ds.ou_time.values
    k = ds.commit.sel(run=run, attribute=attribute).values
    S = ou.size
    lo = np.where(k < S, ou[np.minimum(k, S - 1)], 0.0)
    hi = np.where(k == 0, math.inf, ou[np.clip(k - 1, 0, S - 1)])
    return lo, hi


def speciation_verdict(ds: xr.Dataset, attribute: str) -> Verdict:
    """Measured commitment on the unconditional model vs the predicted speciation time (the module docstring)."""
    lo, hi = commit_ou_bounds(ds, "uncond", attribute)
    t_s = float(ds.t_S.sel(attribute=attribute))
    q_lo, q_hi = BAND
    # OU time runs backwards along sampling: the band's late end is the q_lo quantile of the times
    late_in, late_out = times.quantile_interval(hi, q_lo)[1], times.quantile_interval(lo, q_lo)[0]
    early_in, early_out = times.quantile_interval(lo, q_hi)[0], times.quantile_interval(hi, q_hi)[1]
    median = float(np.median(lo))
    m_lo, m_hi = times.quantile_interval(lo, 0.5)[0], times.quantile_interval(hi, 0.5)[1]
    inside, outside = late_in <= t_s <= early_in, t_s < late_out or t_s > early_out
    status = "violated" if outside else "holds" if inside else "inconclusive"
    if t_s <= 0:  # Lambda <= 1: the theory puts no speciation on the reverse path (the classes split at the data)
        status = "outside domain"
    n = int(lo.size)
    k_s = float(ds.index_S.sel(attribute=attribute))
    return Verdict(
        key=f"commitment_speciation_{attribute}", kind="finding", status=status,
        claim=f"{attribute} commits around the predicted speciation time (Biroli et al. 2024)",
        where=f"Sec. 4.2 (exact GMM, {attribute}, unconditional model; Biroli et al. 2024)",
        measured=f"t_S - median commit = {t_s - median:+.3g} (OU time)",
        bound=f"t_S = {t_s:.3g} in band [{late_in:.3g}, {early_in:.3g}]",
        value=t_s - median, reference=0.0, n=n, interval=(t_s - m_hi, t_s - m_lo), level=times.LEVEL,
        test=f"t_S inside the {100 * q_lo:g}%-{100 * q_hi:g}% quantiles of the commitment OU times, each end's "
             "distribution-free 95% interval and the grid cell taken into account",
        detail=(f"predicted t_S = log(Lambda)/2 = {t_s:.3g} (Lambda = {float(ds.Lambda.sel(attribute=attribute)):.3g}, "
                f"abar_S = {float(ds.abar_S.sel(attribute=attribute)):.3g}, sampler t = "
                f"{float(ds.timestep_S.sel(attribute=attribute)):.4g}, state {k_s:.3g} of {ds.sizes['state'] - 1}); "
                f"median commitment OU time {median:.3g}; the band's ends lie in [{late_out:.3g}, {late_in:.3g}] and "
                f"[{early_in:.3g}, {early_out:.3g}]; the interval is t_S minus the "
                "median's (distribution-free, grid cell included)."
                + (" Lambda <= 1: no speciation before the data (t_S <= 0), outside the theory's domain." if t_s <= 0
                   else "")),
        extra={"t_S": t_s, "median": median, "band_inner": [finite_or_none(late_in), finite_or_none(early_in)],
               "band_outer": [finite_or_none(late_out), finite_or_none(early_out)]})


def early_verdict(ds: xr.Dataset, attribute: str, run: str) -> Verdict:
    """The paper's claim: most samples have committed to the attribute by the trajectory's middle."""
    k = ds.commit.sel(run=run, attribute=attribute).values
    half = int(ds.attrs["steps"]) // 2
    n, hits = int(k.size), int((k <= half).sum())
    lo, hi = times.proportion_interval(hits, n)
    status = "holds" if lo > 0.5 else "violated" if hi < 0.5 else "inconclusive"
    committed = k[k < ds.sizes["state"]]
    return Verdict(
        key=f"commitment_early_{attribute}_{run}", status=status,
        claim=f"{attribute} is decided early (by the middle of the trajectory)",
        where=f"{WHERE}; exact GMM, {run}", measured=f"{hits}/{n} committed by step {half}", bound="> 1/2 of samples",
        value=hits / n, reference=0.5, interval=(lo, hi), level=times.LEVEL, n=n,
        test="exact (Clopper-Pearson) interval of the proportion against 1/2",
        detail=(f"committed: posterior of the final value above {times.THRESHOLD:g} from that state on; median "
                f"commitment state {float(np.median(committed)) if committed.size else math.nan:.3g} of "
                f"{ds.sizes['state'] - 1}; {n - committed.size} never committed."))


def verdicts(ds: xr.Dataset) -> list[Verdict]:
    """Per attribute the speciation finding, then per attribute and run the paper's early-commitment claim."""
    names = [str(a) for a in ds.attribute.values]
    return [speciation_verdict(ds, a) for a in names] + [
        early_verdict(ds, a, str(r)) for a in names for r in ds.run.values]


def plot(ds: xr.Dataset) -> dict:
    """``{"commitment": Figure}`` (``CAPTIONS``)."""
    import matplotlib.pyplot as plt

    names = [str(a) for a in ds.attribute.values]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
    x = ds.state.values
    for ax, a in zip(axes[0], names):
        for r in ds.run.values:
            p = ds.path.sel(run=r, attribute=a).values  # (S, B)
            c = colour(ROLES.get(str(r), "reference"))
            ax.plot(x, np.median(p, 1), color=c, label=str(r), lw=2.2 if r == "uncond" else 1.3,
                    zorder=3 if r == "uncond" else 2)
            ax.fill_between(x, np.quantile(p, 0.1, 1), np.quantile(p, 0.9, 1), color=c, alpha=0.15, lw=0)
        ax.axhline(times.THRESHOLD, color=colour("reference"), ls=":", lw=1)
        ax.axvline(int(ds.attrs["steps"]) // 2, color=colour("reference"), lw=0.8)
        for var, style in (("index_S", "--"), ("index_curvature", "-.")):
            k = float(ds[var].sel(attribute=a))
            if math.isfinite(k):
                ax.axvline(k, color=colour("bound") if var == "index_S" else colour("reference"), ls=style, lw=1)
        ax.set(title=f"{a}: posterior of the final value", xlabel="state (step k; T = output)", ylim=(0, 1.02))
    axes[0][0].set_ylabel("exact posterior")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return {"commitment": fig}


class Commitment(Analysis):
    """When each attribute is decided, on the exact GMM family, against the predicted speciation time."""

    name, family, stores, result, captions = NAME, "ablations", "none", "results", CAPTIONS
    summary = "when each model commits to each attribute on the exact GMM family, vs the speciation time"

    compute, verdicts, plot = map(staticmethod, (compute, verdicts, plot))

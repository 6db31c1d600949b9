"""When the trained digits models commit to each attribute: x0 detectors per step, U-turns, and the speciation
time predicted from the digits data.

The paper (Sec. 4.2, Fig. 9; contribution (3)) says diffusion models "initially focus on generating features such
as position, attributes, and style, while later stages emphasize quality and consistency". ``commitment`` measures
this on the exact GMM family; here it is measured on the shipped digits models (``amdm_geom.models.digits``,
unclipped variant ``clip_sample=False``, guidance 1, DDIM T = 50, deterministic), by the methods of ``trained``:

- runs: each conditional model alone (position, colour, digit), conditioned on the digits benchmark's per-sample
  targets (``amdm_geom.models.digits.targets``: those of the digits benchmark), and AMDM of (position,
  colour), position first, at Algorithm 1's settings (s = 20, eta = 0.3, w = 0.5). At every state the detectors
  read the predicted x0 (of model 1 under AMDM); each attribute's commitment state is the first state from which
  the reading equals the final reading for good (``trained.commitment_states``).
- U-turns: each model's first finished samples, noised back to states ``ks`` and regenerated with the same model
  and condition (eta_ddim = 1, ``uturn``); the survival rate of each attribute's reading with its exact interval.
- speciation: per attribute, Biroli et al.'s ``t_S = log(Lambda) / 2`` from ``make_dataset``'s images (classes the
  attribute's values; ``trained.data_separation``), on the sampler's clock (the state index among the T + 1 states).

Verdicts (``commitment_trained_...``):

- ``<attr>_before_digit_<run>`` (the paper's claim, attr position or colour, per run): the attribute commits
  before the digit class. Paired per sample, ties dropped (a sign test): the share of untied samples whose
  attribute commits strictly earlier, with its exact interval; holds when the interval lies above 1/2, violated
  when below, else inconclusive.
- ``before_last_<attr>_<run>`` (the paper's claim): more than half the samples have committed to position
  (colour) by state 0.8 T, "before the last steps", by the share's exact interval.
- ``speciation_<attr>`` (a finding, ``commitment.speciation_verdict``'s rule): the predicted speciation time inside
  the band (10% to 90% quantiles, OU time) of the measured commitment times of a model not conditioned on that
  attribute (``SPECIATION_RUN``: the digit model for position and colour, the position model for the digit class;
  a model conditioned on an attribute is told its value and does not speciate in it). The prediction is from the
  whole data set while each run samples one condition's slice of it: the comparison is the theory's, not exact.

Why both readings and U-turns: a deterministic DDIM trajectory is a function of its z_T, so the reading of x0 can
agree with the final one from the first state on (its mean already leans towards where the ODE will take it)
while fresh noise at the same state still changes the attribute; the U-turn says how much the state itself has
decided. The tables and the speciation findings' details give both.

Cost on one core (``OMP_NUM_THREADS=1``) of a 2-core machine: full scale (64 samples per run, U-turns of 32
samples at 4 states) about 42 s, ``quick`` (4 samples, 2 late states) about 5 s, imports aside (about 5 s).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import xarray as xr

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.commitment import commitment as exact
from amdm_geom.analyses.commitment import speciation as sp
from amdm_geom.analyses.commitment import times, trained
from amdm_geom.analyses.common import finite_or_none
from amdm_geom.core.palette import colour
from amdm_geom.core.verdicts import Verdict

__all__ = ["CAPTIONS", "NAME", "CommitmentTrained", "compute", "plot", "tables", "verdicts"]

NAME = "commitment_trained"
WHERE = exact.WHERE
STEPS = 50
#: Full and quick sizes: samples per run, U-turn samples per (model, state), U-turn states, training images.
SETTINGS = {False: {"batch": 64, "uturn_batch": 32, "ks": (10, 20, 30, 40), "data": 4096},
            True: {"batch": 4, "uturn_batch": 4, "ks": (35, 45), "data": 1024}}
RUNS = {"position": ("position",), "colour": ("colour",), "digit": ("digit",), "amdm": ("position", "colour")}
SINGLES = ("position", "colour", "digit")
#: AMDM's settings (Algorithm 1's defaults, App. F.2); a model alone is a plain DDIM run.
AMDM_CONFIG = {"num_inference_steps": STEPS, "agg_steps": 20, "eta": 0.3, "weights": (0.5,)}
#: "Before the last steps": committed by this fraction of T.
LATE = 0.8
#: Per attribute, the run whose commitment times the speciation prediction is compared with (not conditioned on it).
SPECIATION_RUN = {"position": "digit", "colour": "digit", "digit": "position"}
ROLES = {"position": "model 1", "colour": "model 2", "digit": "model 3"}
CAPTIONS = {"commitment_trained": (
    "When the trained digits models commit to each attribute. Top: per run (each conditional model alone, AMDM of "
    "position and colour), the share of samples whose detector reading of the predicted x0 already equals the "
    "final reading for good, against the DDIM state (T = 50 the output), one colour per attribute; the dashed "
    "vertical lines are the speciation states Biroli et al. (2024) predict from the digits data, the thin grey "
    "line the middle of the trajectory. Bottom: U-turn survival, the share of a model's finished samples whose "
    "attribute reads the same after being noised back to state k and regenerated (eta_ddim = 1), with exact "
    "95% intervals.")}


def _run_all(cfg: dict, seed: int) -> dict:
    """Every run's readings and finished images, and the single models' U-turn readings."""
    from amdm_geom.models.digits import zoo

    conditions = trained.conditions
    tgt = trained.targets(cfg["batch"], seed)
    seeds = [1000 * seed + k for k in range(cfg["batch"])]
    models = {m: zoo.load(m, guidance_scale=1.0, clip_sample=False) for m in SINGLES}
    single = {"num_inference_steps": STEPS, "weights": ()}
    out = {}
    for run, names in RUNS.items():
        out[run] = trained.readings_along([models[m] for m in names], [conditions(m, tgt) for m in names],
                                          single if len(names) == 1 else AMDM_CONFIG, seeds)
    ub = cfg["uturn_batch"]

    def seeds_of(k: int) -> list[int]:
        return [(seed + 1) * 1_000_003 + 1000 * k + b for b in range(ub)]

    uturns = np.stack([trained.uturn_readings(models[m], conditions(m, tgt[:ub]), out[m]["images"][:ub], cfg["ks"],
                                              seeds_of, steps=STEPS) for m in SINGLES])
    alphas_cumprod = models["digit"].scheduler.alphas_cumprod.numpy().astype(np.float64)
    return {"runs": out, "uturns": uturns, "targets": tgt, "seeds": seeds, "alphas_cumprod": alphas_cumprod}


def _speciation(abar: np.ndarray, alphas_cumprod: np.ndarray, n: int, seed: int) -> xr.Dataset:
    """Per attribute, the digits data's separating direction and the predicted times on every clock."""
    from amdm_geom.models.digits.data import make_dataset

    data = make_dataset(n, seed=seed)
    separations = {a: trained.data_separation(data.images, labels) for a, labels in zip(trained.ATTRIBUTES,
                                                                                           data.labels.T)}
    return sp.speciation_dataset(separations, abar, alphas_cumprod)


def compute(stores: Mapping | None = None, *, quick: bool = False, seed: int = 0, runs: Path | None = None
            ) -> xr.Dataset:
    """Runs the digits models and measures when they commit. The result: ``reading`` (run, state, sample,
    attribute; -1 blank), ``commit`` (run, attribute, sample; the commitment state), ``target`` (sample,
    attribute); ``uturn_reading`` (model, k, usample, attribute) and ``uturn_hits`` / ``uturn_n`` (model, k,
    attribute; the readings before are ``reading`` at the last state of the model's run, its first samples);
    ``uturn_cross`` (model, attribute: the state where survival crosses 1/2, NaN unbracketed); per state
    ``alpha_bar``, ``ou_time``, ``timestep``; per attribute the speciation prediction. No stores read or written."""
    if stores:
        raise ValueError(f"{NAME} takes no stores; got {len(stores)}: {', '.join(map(str, stores))}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")
    cfg = SETTINGS[bool(quick)]
    got = _run_all(cfg, seed)
    out, ub, ks = got["runs"], cfg["uturn_batch"], list(cfg["ks"])
    abar = out["position"]["alpha_bar"]
    reading = np.stack([out[r]["readings"] for r in RUNS])  # (R, S, B, 3)
    commit = np.stack([trained.commitment_states(out[r]["readings"]).T for r in RUNS])  # (R, 3, B)
    before = reading[[list(RUNS).index(m) for m in SINGLES], -1, :ub]  # (M, ub, 3)
    hits, n = trained.survival(before[:, None], got["uturns"])  # (M, K, 3)
    cross = np.array([[trained.crossing(ks, hits[i, :, a] / n[i, :, a]) for a in range(3)] for i in range(3)])
    ds = xr.Dataset(
        {"reading": (("run", "state", "sample", "attribute"), reading),
         "commit": (("run", "attribute", "sample"), commit.astype(np.int64)),
         "target": (("sample", "attribute"), got["targets"]),
         "uturn_reading": (("model", "k", "usample", "attribute"), got["uturns"]),
         "uturn_hits": (("model", "k", "attribute"), hits.astype(np.int64)),
         "uturn_n": (("model", "k", "attribute"), n.astype(np.int64)),
         "uturn_cross": (("model", "attribute"), cross)},
        coords={"run": list(RUNS), "attribute": list(trained.ATTRIBUTES), "state": np.arange(abar.size),
                "sample": got["seeds"], "model": list(SINGLES), "k": ks, "usample": np.arange(ub),
                "alpha_bar": ("state", abar), "ou_time": ("state", times.ou_time(abar)),
                "timestep": ("state", np.array([sp.train_timestep(got["alphas_cumprod"], a) for a in abar]))})
    ds = ds.merge(_speciation(abar, got["alphas_cumprod"], cfg["data"], seed))
    ds.attrs.update({"steps": STEPS, "threshold": trained.THRESHOLD, "level": times.LEVEL, "quick": int(quick),
                     "data_n": cfg["data"], "data_seed": seed, "late": LATE, "band": list(exact.BAND),
                     "speciation_runs": json.dumps(SPECIATION_RUN), "amdm": json.dumps(AMDM_CONFIG),
                     "seconds": json.dumps({r: out[r]["seconds"] for r in RUNS})})
    return ds


# --------------------------------------------------------------------------------------------
# verdicts


def _decide(lo: float, hi: float) -> str:
    return "holds" if lo > 0.5 else "violated" if hi < 0.5 else "inconclusive"


def order_verdict(ds: xr.Dataset, attribute: str, run: str) -> Verdict:
    """The paper's claim: ``attribute`` commits before the digit class (a sign test on the paired states)."""
    a = ds.commit.sel(run=run, attribute=attribute).values
    d = ds.commit.sel(run=run, attribute="digit").values
    untied, earlier = int((a != d).sum()), int((a < d).sum())
    lo, hi = times.proportion_interval(earlier, untied) if untied else (0.0, 1.0)
    status = _decide(lo, hi) if untied else "inconclusive"
    return Verdict(
        key=f"commitment_trained_{attribute}_before_digit_{run}", status=status,
        claim=f"{attribute} commits before the digit class", where=f"{WHERE}; digits models, {run}",
        measured=f"{earlier}/{untied} untied commit {attribute} first", bound="> 1/2 of untied samples",
        value=earlier / untied if untied else math.nan, reference=0.5, interval=(lo, hi), level=times.LEVEL,
        n=untied, test="sign test: exact (Clopper-Pearson) interval of P(earlier | not tied) against 1/2",
        detail=(f"commitment state: first DDIM state from which the detectors' reading of x0 equals the final one "
                f"for good; {a.size - untied} of {a.size} samples tied; median states {attribute} "
                f"{np.median(a):.3g}, digit {np.median(d):.3g} of {ds.sizes['state'] - 1}."
                + ("" if untied else " Every sample tied: nothing to decide.")))


def late_verdict(ds: xr.Dataset, attribute: str, run: str) -> Verdict:
    """The paper's claim: most samples have committed to ``attribute`` before the last steps (state LATE T)."""
    k = ds.commit.sel(run=run, attribute=attribute).values
    last = int(round(float(ds.attrs["late"]) * int(ds.attrs["steps"])))
    n, hits = int(k.size), int((k <= last).sum())
    lo, hi = times.proportion_interval(hits, n)
    return Verdict(
        key=f"commitment_trained_before_last_{attribute}_{run}", status=_decide(lo, hi),
        claim=f"{attribute} commits before the last steps", where=f"{WHERE}; digits models, {run}",
        measured=f"{hits}/{n} committed by state {last}", bound="> 1/2 of samples", value=hits / n, reference=0.5,
        interval=(lo, hi), level=times.LEVEL, n=n,
        test="exact (Clopper-Pearson) interval of the proportion against 1/2",
        detail=(f"committed by state {last} of {int(ds.attrs['steps'])}: the detectors' reading of x0 equals the "
                f"final one from that state on; median commitment state {np.median(k):.3g}."))


def speciation_finding(ds: xr.Dataset, attribute: str) -> Verdict:
    """``commitment.speciation_verdict``'s rule on the digits data and the run ``SPECIATION_RUN`` names."""
    run = json.loads(ds.attrs["speciation_runs"])[attribute]
    v = exact.speciation_verdict(ds.sel(run=[run]).assign_coords(run=["uncond"]), attribute)
    cross = float(ds.uturn_cross.sel(model=run, attribute=attribute)) if run in ds.model.values else math.nan
    said = (f"Measured on the {run} model alone (not conditioned on {attribute}); Lambda from "
            f"{int(ds.attrs['data_n'])} training images (make_dataset, seed {int(ds.attrs['data_seed'])}); U-turn "
            f"survival of {attribute} under the {run} model crosses 1/2 at state "
            + (f"{cross:.3g}." if math.isfinite(cross) else "(not bracketed by the U-turn states).") + " ")
    return replace(v, key=f"commitment_trained_speciation_{attribute}",
                   claim=f"{attribute} commits around the predicted speciation time (trained digits models)",
                   where=f"Sec. 4.2 (digits data and models, {attribute}, {run} model; Biroli et al. 2024)",
                   detail=said + v.detail, extra={**v.extra, "run": run, "uturn_cross": finite_or_none(cross)})


def verdicts(ds: xr.Dataset) -> list[Verdict]:
    """Per run the ordering and before-the-last-steps claims for position and colour, then per attribute the
    speciation finding."""
    runs = [str(r) for r in ds.run.values]
    out = [order_verdict(ds, a, r) for r in runs for a in ("position", "colour")]
    out += [late_verdict(ds, a, r) for r in runs for a in ("position", "colour")]
    return out + [speciation_finding(ds, str(a)) for a in ds.attribute.values]


def tables(ds: xr.Dataset) -> dict:
    """``commitment`` (per run and attribute: median state with its distribution-free interval, shares by T/2 and
    0.8 T with exact intervals), ``uturn`` (per model, attribute and state: survival with its exact interval) and
    ``speciation`` (per attribute: the prediction, the compared run's median state and U-turn crossing)."""
    import pandas as pd

    T, rows = int(ds.attrs["steps"]), []
    for r in ds.run.values:
        for a in ds.attribute.values:
            k = ds.commit.sel(run=r, attribute=a).values
            m_lo, m_hi = times.quantile_interval(k, 0.5)
            row = {"run": str(r), "attribute": str(a), "n": k.size, "median_state": float(np.median(k)),
                   "median_lo": m_lo, "median_hi": m_hi}
            for name, last in (("half", T // 2), ("late", int(round(LATE * T)))):
                hits = int((k <= last).sum())
                lo, hi = times.proportion_interval(hits, k.size)
                row.update({f"share_by_{name}": hits / k.size, f"{name}_lo": lo, f"{name}_hi": hi})
            rows.append(row)
    urows = []
    for m in ds.model.values:
        for a in ds.attribute.values:
            for k in ds.k.values:
                h, n = int(ds.uturn_hits.sel(model=m, k=k, attribute=a)), int(ds.uturn_n.sel(model=m, k=k, attribute=a))
                lo, hi = times.proportion_interval(h, n)
                urows.append({"model": str(m), "attribute": str(a), "k": int(k), "survived": h, "n": n,
                              "rate": h / n, "lo": lo, "hi": hi})
    runs = json.loads(ds.attrs["speciation_runs"])
    srows = [{"attribute": str(a), "run": runs[str(a)],
              **{v: float(ds[v].sel(attribute=a)) for v in ("Lambda", "between", "within", "t_S", "abar_S",
                                                            "abar_curvature", "timestep_S", "index_S",
                                                            "index_curvature")},
              "median_state": float(np.median(ds.commit.sel(run=runs[str(a)], attribute=a).values)),
              "uturn_cross": float(ds.uturn_cross.sel(model=runs[str(a)], attribute=a))}
             for a in ds.attribute.values]
    return {"commitment": pd.DataFrame(rows), "uturn": pd.DataFrame(urows), "speciation": pd.DataFrame(srows)}


def plot(ds: xr.Dataset) -> dict:
    """``{"commitment_trained": Figure}`` (``CAPTIONS``)."""
    import matplotlib.pyplot as plt

    runs, models = [str(r) for r in ds.run.values], [str(m) for m in ds.model.values]
    cols = max(len(runs), len(models))
    fig, axes = plt.subplots(2, cols, figsize=(4 * cols, 7), squeeze=False)
    x = ds.state.values
    for ax, r in zip(axes[0], runs):
        for a in ds.attribute.values:
            k = ds.commit.sel(run=r, attribute=a).values
            c = colour(ROLES[str(a)])
            ax.step(x, (k[None, :] <= x[:, None]).mean(1), where="post", color=c, label=str(a))
            k_s = float(ds.index_S.sel(attribute=a))
            if math.isfinite(k_s):
                ax.axvline(k_s, color=c, ls="--", lw=1)
        ax.axvline(int(ds.attrs["steps"]) // 2, color=colour("reference"), lw=0.8)
        ax.set(title=f"{r}: committed by state", xlabel="state (T = output)", ylim=(0, 1.02))
    axes[0][0].set_ylabel("share of samples")
    axes[0][0].legend(fontsize=8, loc="lower right")
    for ax, m in zip(axes[1], models):
        for j, a in enumerate(ds.attribute.values):
            h, n = ds.uturn_hits.sel(model=m, attribute=a).values, ds.uturn_n.sel(model=m, attribute=a).values
            ci = np.array([times.proportion_interval(int(hh), int(nn)) for hh, nn in zip(h, n)])
            rate = h / n
            ax.errorbar(ds.k.values + 0.6 * (j - 1), rate, yerr=[rate - ci[:, 0], ci[:, 1] - rate], marker="o",
                        color=colour(ROLES[str(a)]), label=str(a), capsize=2)
        ax.axhline(0.5, color=colour("reference"), ls=":", lw=1)
        ax.set(title=f"{m} model: U-turn survival", xlabel="state k noised back to", ylim=(0, 1.02),
               xlim=(0, int(ds.attrs["steps"])))
    axes[1][0].set_ylabel("share read the same")
    for ax in axes[1][len(models):]:
        ax.axis("off")
    fig.tight_layout()
    return {"commitment_trained": fig}


class CommitmentTrained(Analysis):
    """When the trained digits models commit to each attribute: x0 detectors, U-turns, the speciation time."""

    name, family, stores, result, captions = NAME, exact.Commitment.family, "none", "results", CAPTIONS
    priority = 7  # (about a minute of network evaluations: started early in validate)
    summary = "when the trained digits models commit to each attribute (x0 detectors, U-turns), vs the speciation time"

    compute, verdicts, plot, tables = map(staticmethod, (compute, verdicts, plot, tables))

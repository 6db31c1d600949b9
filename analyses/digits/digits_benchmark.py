"""The digits benchmark (issue: a trained mini-ecosystem): AMDM on trained networks, fine-tunes of
one base that each control one aspect, beside the single models and the peer methods, with
success read by exact detectors.

Every arm (a spec, ``runs.Arm``; ``runs.arms``: the single models; AMDM in both role orders, over
s, over eta, with lerp, in the middle and late windows; with the from-scratch and the
other-schedule position model; Composable Diffusion, SUPERDIFF AND and Du et al.'s ULA on the same
models and seeds, and AMDM at ULA's number of evaluations; three models on (position, colour,
digit)) runs on the same seeds and per-sample targets: a paired benchmark
(``amdm_geom.analyses.common.paired``), whose scoring function (``score``) maps an arm's images to
per-sample success. Success of a sample on the pair target: the detectors read its target position
and colour; on the triple: also its digit class. The result is one Dataset over ``arm`` with the
arms' settings as coordinates; comparisons are paired by sample and decided by
``amdm_geom.core.stats`` (``verdicts``).

The analysis contract (``amdm_geom.analyses``): ``compute`` runs the arms (no stores: the
result keeps every arm's final images), ``verdicts``, ``plot`` and ``tables`` read its Dataset.
Also in the result: the functional proximity per t of each pair of models
(``amdm_geom.models.ecosystem``) and the ecosystem verdict of each pair; and the readings of
``readings`` (variables and dims named ``readings_*``): App. F.3's prediction-type invariance and
eqs. (27)-(28)'s gradient under eq. (7)'s and Algorithm 1's reading of mu, at the benchmark's T and s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.common import paired
from amdm_geom.analyses.digits import readings as readings_
from amdm_geom.analyses.digits.figures import figures
from amdm_geom.analyses.digits.runs import FULL, QUICK, arms, run_arm, targets
from amdm_geom.analyses.digits.verdicts import verdicts
from amdm_geom.models.ecosystem import check_denoisers

__all__ = ["CAPTIONS", "NAME", "SETTINGS", "DigitsBenchmark", "compute", "plot", "saved", "score", "tables",
           "verdicts"]

NAME = "digits_benchmark"
#: The figures' captions (fnmatch patterns over the figure names, ``amdm_geom.app.runner.output.caption_of``).
CAPTIONS = {
    "success": (
        "Digits benchmark: the share of samples per arm whose position and colour (left) or position, colour and "
        "digit (right) the exact detectors read as the target, with 95% Wilson intervals; network evaluations "
        "per sample in brackets. Bars in a role's colour: model 1 (position) and model 2 (colour) alone, AMDM "
        "and AMDM swapped, lerp, the peers; grey: other AMDM variants by group. Fine-grained control (Tables "
        "1-2's claim) means AMDM's bar above both single models' bars, beyond their intervals."),
    "by_target": (
        "Digits benchmark: success per (position, colour) target (rows: position, columns: colour; the share "
        "in each cell) for the position and colour models alone, AMDM and Composable Diffusion. Look for cells "
        "where AMDM does better than either model alone, and for targets where every method fails."),
    "grid_*": (
        "Digits benchmark: final images of the same seeds (columns) under each method (rows) for the target in "
        "the title; a green frame means the detectors read the target position and colour, a red one that they "
        "did not. Compare a row's images with the single models' rows (position, colour) above it."),
    "proximity": (
        "Section 3.1's ecosystem check on the digits models: the functional proximity |eps_A - eps_B| / "
        "|eps_A| of each pair over the training timestep t (log scale; the ecosystem verdict in the legend). "
        "Fine-tunes of one base (position+colour, position+digit) should stay close at every t; the pairs with "
        "the position model trained from scratch or on the linear schedule show how far apart other models lie."),
}
PAIRS = (("position", "colour"), ("position_scratch", "colour"), ("position_linear", "colour"), ("position", "digit"))


#: The settings that are coordinates of the result whatever the arms run (``paired.arm_dataset`` adds
#: every other setting that varies between them).
SETTINGS = {"group": "group", "label": "label", "method": "method", "models": lambda arm: "+".join(arm.models),
            "steps": "sampler.num_inference_steps", "agg_steps": "sampler.agg_steps", "eta": "sampler.eta"}


def _proximity(seed: int, batch: int) -> xr.Dataset:
    """Functional proximity per t and the ecosystem verdict of each pair (``ecosystem.check_denoisers``,
    ``batch`` samples per timestep)."""
    from amdm_geom.models.digits import zoo  # (3 s of imports: only when the benchmark runs)

    rows, verdict, ts = [], [], None
    for a, b in PAIRS:
        rep = check_denoisers(zoo.load(a), zoo.load(b), seed=seed, batch=batch)
        ts = sorted(rep.proximity)
        rows.append([rep.proximity[t] for t in ts])
        verdict.append(rep.verdict)
    return xr.Dataset({"proximity": (("pair", "t"), np.array(rows, dtype=np.float64))},
                      coords={"pair": [f"{a}+{b}" for a, b in PAIRS], "t": np.asarray(ts),
                              "ecosystem": ("pair", verdict)})


def score(output: dict, tgt: np.ndarray) -> dict:
    """One arm's per-sample outcomes from its output (``run_arm``): its images, what the detectors
    read, ``success`` (position and colour read as the target, 0/1), ``success_triple`` (and the
    digit), and its evaluations per sample and wall time."""
    detected = output["detected"]  # (B, 3)
    return {"images": output["images"].astype(np.float32), "detected": detected,
            "success": (detected[:, :2] == tgt[:, :2]).all(-1).astype(np.float64),
            "success_triple": (detected == tgt).all(-1).astype(np.float64),
            "calls": np.int64(output["calls"]), "seconds": float(output["seconds"])}


def compute(stores=None, *, quick: bool = False, seed: int = 0, runs: Path | None = None,
            progress: bool = False, only=None, batch: int | None = None, proximity: bool = True,
            readings: bool = True) -> xr.Dataset:
    """Run every arm (``quick``: the small set; ``only``: these arms; ``batch``: another number of
    samples per arm) and score it: one Dataset over ``arm`` (``paired.run_arms``), the arms'
    settings as coordinates; ``proximity``: also each pair's functional proximity; ``readings``: also
    the readings of App. F.3 and eqs. (27)-(28) (``readings.measure``, its own batch)."""
    if stores:
        raise ValueError(f"{NAME} takes no stores; got {len(stores)}: {', '.join(map(str, stores))}")
    plan = arms(quick, seed=seed)
    unknown = sorted(set(only or ()) - {a.name for a in plan})
    if unknown:
        raise ValueError(f"unknown arm(s) {', '.join(unknown)}; the benchmark has {', '.join(a.name for a in plan)}")
    plan = [a.replace(batch=batch) if batch else a for a in plan if only is None or a.name in only]
    tgt = targets(plan[0].batch, seed)
    ds = paired.run_arms(
        plan, lambda arm: score(run_arm(arm, tgt), tgt), progress=progress, desc=NAME,
        dims={"images": ("sample", "channel", "y", "x"), "detected": ("sample", "attribute")},
        coords={"attribute": ["position", "colour", "digit"], "sample": np.arange(len(tgt))}, settings=SETTINGS,
        attrs={"quick": int(quick), "seed": seed})
    ds["target"] = (("sample", "attribute"), tgt)
    sc = paired.at_scale(quick, FULL, QUICK)
    if proximity:
        ds = ds.merge(_proximity(seed, sc.proximity_batch))
    if readings:
        extra = readings_.measure(steps=sc.steps, agg_steps=sc.agg_steps, batch=sc.readings_batch, seed=seed)
        ds = ds.merge(extra).assign_attrs(**extra.attrs)
    return ds


def plot(ds: xr.Dataset) -> dict:
    """Success per arm with intervals, image grids per method and target, proximity per t."""
    return figures(ds)


def tables(ds: xr.Dataset) -> dict:
    """Success per arm (pair and triple) with the detectors' per-attribute accuracy and the
    evaluations per sample; success per (position, colour) target for the main arms."""
    import pandas as pd

    acc = (ds.detected == ds.target).mean("sample")
    table = pd.DataFrame({"label": ds.label.values, "method": ds.method.values, "models": ds.models.values,
                          "evaluations_per_sample": ds.calls.values, "success": ds.success.mean("sample").values,
                          "success_triple": ds.success_triple.mean("sample").values,
                          "position_acc": acc.sel(attribute="position").values,
                          "colour_acc": acc.sel(attribute="colour").values,
                          "digit_acc": acc.sel(attribute="digit").values, "seconds": ds.seconds.values},
                         index=pd.Index(ds.arm.values, name="arm"))
    key = ds.target.sel(attribute="position") * 4 + ds.target.sel(attribute="colour")
    per = ds.success.groupby(key.rename("pc")).mean().to_pandas().T
    per.index = [f"position {k // 4}, colour {k % 4}" for k in per.index]
    main = [a for a in ("position", "colour", "amdm", "amdm_swapped", "composable", "superdiff_and") if a in ds.arm]
    return {"digits_success": table, "digits_by_target": per[main]}



def saved(ds: xr.Dataset) -> xr.Dataset:
    """What the result folder keeps: everything, the images as 8-bit pixels (``round(255 (x + 1) /
    2)`` of the model's image x in [-1, 1], as the figures show them; the detectors read the float
    images during ``compute``), which keeps the report folder small."""
    out = ds.copy()
    pixels = np.clip(np.round((ds.images.values.astype(np.float64) + 1) / 2 * 255), 0, 255).astype(np.uint8)
    out["images"] = (ds.images.dims, pixels, {"encoding": "uint8 = round(255 (x + 1) / 2), x in [-1, 1]"})
    return out


class DigitsBenchmark(Analysis):
    """The trained digits ecosystem (``compute``, ``verdicts``, ... above); its App. G arms' verdicts
    name their family. The longest analysis, so it starts first."""

    name, family, other_families, captions = NAME, "trained", ("app-g",), CAPTIONS
    result, priority = "digits", 9
    summary = "trained digits ecosystem: AMDM against single models and peers, success read by exact detectors"
    compute, verdicts, plot, tables, saved = map(staticmethod, (compute, verdicts, plot, tables, saved))

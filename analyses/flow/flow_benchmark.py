"""AMDM under rectified-flow models, measured where ground truth is exact (App. G).

The fine-grained GMM family of the ablations under the flow interpolant
(``amdm_geom.models.flow_gmm``): model 1 conditioned on position 0, model 2 on colour 0, the
target their intersection. Every arm runs on the same per-sample seeds (paired) and is scored by
the exact posterior mass of its final samples on the target component (at s = 0 the flow's
latents are data: the mixture's own responsibilities).

Arms: each flow model alone; AMDM (Algorithm 1 with the step's location as the shift's mean, the
same step function as for diffusion) and with the roles swapped; AMDM with App. G's mu = v (the
shift's target the velocity, as printed); AMDM of a flow model with the same data's VP diffusion
model (another ecosystem, Table 10's analogue, aggregated with ``insist``); and the VP pair of the
ablations for reference. A paired benchmark (``amdm_geom.analyses.common.paired``): each arm is a
spec (``Arm``: its models as ``GMMModelSpec``s, the sampler's settings), ``score`` maps an arm's
final samples to per-sample posterior masses, the result is one Dataset over ``arm`` with the
settings that differ between arms as coordinates, and the verdicts use ``amdm_geom.core.stats``
through ``paired`` as the ablations do.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
import xarray as xr

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.common import paired, refuse_stores
from amdm_geom.core import palette, stats
from amdm_geom.core.spec import Spec, integer, sequence
from amdm_geom.models.specs import GMMFamilySpec, GMMModelSpec
from amdm_geom.sampling import AMDMSampler, SamplerConfig

__all__ = ["CAPTIONS", "FULL", "NAME", "QUICK", "SETTINGS", "Arm", "FlowBenchmark", "FlowScale", "arms", "compute",
           "plot", "run_arm", "score", "tables", "verdicts"]

NAME = "flow_benchmark"
#: The figures' captions (fnmatch patterns over the figure names, ``amdm_geom.app.runner.output.caption_of``).
CAPTIONS = {
    "success": (
        "App. G on exact rectified-flow models: per arm (labels on the left), the posterior mass of the final "
        "samples on the fine-grained target (position and colour), mean with 95% interval. Role colours: the "
        "flow position model (model 1) and colour model (model 2) alone, AMDM and AMDM swapped; grey: mu = v "
        "(App. G as printed) and the VP pairs. AMDM carries over to flows if its bar lies right of both single "
        "models' bars; the claim 'mu = v does as well' holds if its bar matches AMDM's, and the flow + VP pair "
        "(Table 10's analogue) should fall short."),
}

class Arm(Spec):
    """One arm of the flow benchmark: exact models of one GMM family (each flow or VP, each
    conditioned on one attribute), Algorithm 1's settings and the samples."""

    name: str
    label: str = ""
    family: GMMFamilySpec
    models: tuple[GMMModelSpec, ...]
    """the models: model 1 first."""
    sampler: SamplerConfig
    batch: Annotated[int, integer(2)]
    """samples (seeds 1000 seed, 1000 seed + 1, ...)."""
    seed: Annotated[int, integer(0)] = 0


class FlowScale(paired.Scale):
    """The flow benchmark's sizes (full or quick)."""

    latent_shape: Annotated[tuple[int, ...], sequence(integer(1), accepted="a shape of ints >= 1", min_len=1)]
    """the family's latent shape."""
    batch: Annotated[int, integer(2)]
    """samples per arm."""
    steps: Annotated[int, integer(2)]
    """T."""
    agg_steps: Annotated[int, integer(1)]
    """s."""


#: Full: the ablations' T and s at a quarter of their latent size, about 15 s for the seven arms on one
#: core; quick: the quick ablations' T and s.
FULL = FlowScale(latent_shape=(4, 32, 32), batch=256, steps=50, agg_steps=20)
QUICK = FlowScale(latent_shape=(4, 16, 16), batch=48, steps=20, agg_steps=8)
#: The settings that are coordinates of the result whatever the arms (``paired.arm_dataset`` adds every
#: other setting that varies between them): ``models`` as ``sde:attribute+...``.
SETTINGS = {"label": "label", "models": lambda arm: "+".join(f"{m.sde}:{m.attribute}" for m in arm.models)}


def arms(quick: bool = False, *, seed: int = 0) -> list[Arm]:
    """Every arm, in the order they are reported: each flow model alone, AMDM both ways, AMDM
    with mu = v, a flow and a VP model, the VP pair."""
    sc = paired.at_scale(quick, FULL, QUICK)
    family = GMMFamilySpec(latent_shape=sc.latent_shape, seed=seed)
    base = SamplerConfig(num_inference_steps=sc.steps, agg_steps=sc.agg_steps)
    flow = {a: GMMModelSpec(attribute=a, sde="flow") for a in ("position", "colour")}
    vp = {a: GMMModelSpec(attribute=a) for a in ("position", "colour")}

    def arm(name: str, label: str, *models: GMMModelSpec, **sampler) -> Arm:
        config = base.replace(**sampler) if len(models) > 1 else base.replace(weights=(), **sampler)
        return Arm(name=name, label=label, family=family, models=models, sampler=config, batch=sc.batch, seed=seed)

    return [arm("position", "flow position model alone", flow["position"]),
            arm("colour", "flow colour model alone", flow["colour"]),
            arm("amdm", "AMDM of the flow models, position first", flow["position"], flow["colour"]),
            arm("amdm_swapped", "AMDM of the flow models, colour first", flow["colour"], flow["position"]),
            arm("amdm_mu_v", "AMDM with mu = v (App. G as printed)", flow["position"], flow["colour"],
                shift_mean="velocity"),
            arm("vp_flow", "AMDM of a flow and a VP model (another ecosystem)", flow["position"], vp["colour"],
                allow_schedule_mismatch=True),
            arm("vp_amdm", "AMDM of the VP models (the ablations' pair)", vp["position"], vp["colour"])]


def run_arm(fam, arm: Arm):
    """Arm ``arm``'s output on the built family ``fam``: the sampler's output (``z0`` ``(B, C, H, W)``,
    ``model_calls`` per sample)."""
    built = [m.build(fam) for m in arm.models]
    seeds = [1000 * arm.seed + i for i in range(arm.batch)]
    return AMDMSampler([m for m, _ in built], [c for _, c in built], arm.sampler).sample(seeds)


def score(fam, output) -> dict:
    """An arm's per-sample outcome: its final samples' posterior mass on the target ``mass (B,)``
    (in data space, abar = 1), and its model evaluations per sample ``calls``."""
    z = output.z0.to(torch.float64).reshape(output.z0.shape[0], -1)
    post = fam.mixture.responsibilities(z, fam.condition(), 1.0).numpy()
    return {"mass": post[:, fam.target(0, 0).numpy()].sum(1), "calls": np.int64(output.model_calls)}


def compute(stores=None, *, quick: bool = False, seed: int = 0, runs=None) -> xr.Dataset:
    """Every arm (``arms``) on the same seeds, one Dataset over ``arm`` (``paired.run_arms``):
    ``mass (arm, sample)`` and per arm ``calls`` (model evaluations per sample), ``success``,
    ``success_se``; the arms' settings as coordinates."""
    refuse_stores(NAME, stores)
    plan = arms(quick, seed=seed)
    fam = plan[0].family.build()
    sc = paired.at_scale(quick, FULL, QUICK)
    ds = paired.run_arms(plan, lambda arm: score(fam, run_arm(fam, arm)), settings=SETTINGS,
                         attrs={"quick": int(quick), "latent_shape": list(sc.latent_shape), "steps": sc.steps,
                                "agg_steps": sc.agg_steps})
    return paired.with_mean(ds, "mass", "success")


def _s(ds, arm) -> str:
    return f"{float(ds.success.sel(arm=arm)):.3f}"


def verdicts(ds: xr.Dataset) -> list:
    """AMDM beats both flow models alone (both role orders); mu = v does as well as the step's
    location; AMDM of a flow and a VP model does worse than within the flow ecosystem."""
    out = []
    singles = ("position", "colour")
    for arm, key, claim in (("amdm", "flow_amdm_beats_singles", "AMDM raises fine-grained success under flow"),
                            ("amdm_swapped", "flow_amdm_swapped_beats_singles", "... with the roles swapped")):
        b = paired.best(ds, arm, singles, "mass")
        out.append(paired.best_verdict(
            b, key=key, claim=claim, where="App. G (exact flow GMM family)", reference=0.0,
            measured=f"{_s(ds, arm)} vs {_s(ds, b.deciding)}", bound="> both flow models alone",
            detail=(f"Posterior mass on the target (position 0, colour 0): position alone {_s(ds, 'position')}, "
                    f"colour alone {_s(ds, 'colour')}, {ds.label.sel(arm=arm).item()} {_s(ds, arm)}; the VP pair "
                    f"of the same data {_s(ds, 'vp_amdm')} (for reference).")))
    p = paired.compare(ds, "amdm_mu_v", "amdm", "mass")
    out.append(paired.equivalence_verdict(
        p, key="flow_mu_v_success", claim="AMDM with mu = v does as well",
        where="App. G ('simply set mu = v')", measured=f"{_s(ds, 'amdm_mu_v')} vs {_s(ds, 'amdm')}",
        detail=(f"AMDM with the shift's target the velocity v (as App. G prints it) against the step's location "
                f"(z + dt v, the same step function as for diffusion): mu = v minus location "
                f"{stats.interval_text(p)}.")))
    b = paired.best(ds, "amdm", ("vp_flow",), "mass")
    out.append(paired.best_verdict(
        b, key="flow_vp_cross_ecosystem", claim="AMDM fails across ecosystems (flow + VP)",
        where="App. G; App. F.3, Table 10 (flow analogue)", reference=0.0,
        measured=f"flow pair {_s(ds, 'amdm')} vs flow + VP {_s(ds, 'vp_flow')}", bound="flow pair > flow + VP",
        detail=("The same data as a flow model (position) and a VP diffusion model (colour), aggregated anyway: at "
                "step k their latents sit at different noise levels and scales (the flow's shell is not the VP "
                f"one). Success: flow + VP {_s(ds, 'vp_flow')}, flow + flow {_s(ds, 'amdm')}.")))
    return out


def plot(ds: xr.Dataset) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    arms = list(ds.arm.values)
    roles = {"position": "model 1", "colour": "model 2", "amdm": "AMDM", "amdm_swapped": "AMDM swapped"}
    colours = [palette.colour(roles[a]) if a in roles else palette.NEUTRALS[1 if "vp" in a else 0] for a in arms]
    ax.barh(range(len(arms)), ds.success.values, xerr=1.96 * ds.success_se.values, color=colours)
    ax.set_yticks(range(len(arms)), [str(v) for v in ds.label.values], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="posterior mass on the fine-grained target (mean, 95% interval)",
           title=f"AMDM under flow models ({ds.sizes['sample']} samples per arm)")
    fig.tight_layout()
    return {"success": fig}


def tables(ds: xr.Dataset) -> dict:
    """``arms``: per arm its success, standard error, evaluations per sample and settings."""
    return {"arms": ds[["success", "success_se", "calls"]].to_dataframe()}


class FlowBenchmark(Analysis):
    """AMDM on exact rectified-flow models, App. G (``compute``, ``verdicts``, ... above)."""

    name, family, result, captions = NAME, "app-g", "flow_benchmark", CAPTIONS
    summary = "App. G: AMDM on exact rectified-flow models against each model alone, mu = v, and a VP + flow pair"
    compute, verdicts, plot, tables = map(staticmethod, (compute, verdicts, plot, tables))

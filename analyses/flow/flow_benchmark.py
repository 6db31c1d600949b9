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
ablations for reference. Verdicts use ``amdm_geom.core.stats`` as the ablations do.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import xarray as xr

from amdm_geom.analyses.ablations.verdicts import EQUIVALENCE_MARGIN, LEVEL, PAIRED, best_verdict, paired_verdict
from amdm_geom.analyses.common import refuse_stores
from amdm_geom.core import palette, stats
from amdm_geom.models.flow_gmm import flow_family_model
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig

__all__ = ["ARMS", "CAPTIONS", "NAME", "STORES", "SUMMARY", "compute", "plot", "tables", "verdicts"]

NAME = "flow_benchmark"
SUMMARY = "App. G: AMDM on exact rectified-flow models against each model alone, mu = v, and a VP + flow pair"
STORES = "none"
RESULT = "flow_benchmark"
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

#: arm -> (label, model 1's kind and attribute, model 2's (or None), sampler overrides)
ARMS = {
    "position": ("flow position model alone", ("flow", "position"), None, {}),
    "colour": ("flow colour model alone", ("flow", "colour"), None, {}),
    "amdm": ("AMDM of the flow models, position first", ("flow", "position"), ("flow", "colour"), {}),
    "amdm_swapped": ("AMDM of the flow models, colour first", ("flow", "colour"), ("flow", "position"), {}),
    "amdm_mu_v": ("AMDM with mu = v (App. G as printed)", ("flow", "position"), ("flow", "colour"),
                  {"shift_mean": "velocity"}),
    "vp_flow": ("AMDM of a flow and a VP model (another ecosystem)", ("flow", "position"), ("vp", "colour"),
                {"allow_schedule_mismatch": True}),
    "vp_amdm": ("AMDM of the VP models (the ablations' pair)", ("vp", "position"), ("vp", "colour"), {}),
}

#: full and quick sizes: latent shape, samples per arm, T, s (full: the ablations. T and s at a quarter of their
#: latent size, about 15 s for the seven arms on one core; quick: the quick ablations. T and s)
FULL = ((4, 32, 32), 256, 50, 20)
QUICK = ((4, 16, 16), 48, 20, 8)


def _model(fam, kind: str, attribute: str):
    cond = fam.condition(**{attribute: 0})
    model = flow_family_model(fam, name=f"{attribute} (flow)") if kind == "flow" else \
        fam.model(name=f"{attribute} (VP)")
    return model, cond


def run_arm(fam, arm: str, seeds: list[int], steps: int, agg_steps: int) -> tuple[np.ndarray, int]:
    """One arm's final samples' posterior mass on the target ``(B,)`` and model calls per sample."""
    _, first, second, overrides = ARMS[arm]
    built = [_model(fam, *first)] + ([_model(fam, *second)] if second else [])
    config = SamplerConfig(num_inference_steps=steps, agg_steps=agg_steps, **overrides)
    if second is None:
        config = config.replace(weights=())
    out = AMDMSampler([m for m, _ in built], [c for _, c in built], config).sample(seeds)
    z = out.z0.to(torch.float64).reshape(len(seeds), -1)
    post = fam.mixture.responsibilities(z, fam.condition(), 1.0).numpy()  # data space: abar = 1
    target = fam.target(0, 0).numpy()
    return post[:, target].sum(1), out.model_calls  # (model_calls counts evaluations per sample)


def compute(stores=None, *, quick: bool = False, seed: int = 0, runs=None) -> xr.Dataset:
    """Every arm of ``ARMS`` on the same seeds; ``mass (arm, sample)`` and per arm ``success``,
    ``success_se``, ``calls`` (model evaluations per sample)."""
    refuse_stores(NAME, stores)
    shape, batch, steps, agg = QUICK if quick else FULL
    fam = fine_grained_family(shape, seed=seed)
    seeds = [1000 * seed + i for i in range(batch)]
    mass, calls = [], []
    for arm in ARMS:
        m, c = run_arm(fam, arm, seeds, steps, agg)
        mass.append(m)
        calls.append(c)
    ds = xr.Dataset({"mass": (("arm", "sample"), np.stack(mass))},
                    coords={"arm": list(ARMS), "sample": np.arange(batch),
                            "label": ("arm", [v[0] for v in ARMS.values()]), "calls": ("arm", calls)},
                    attrs={"quick": int(quick), "latent_shape": list(shape), "steps": steps, "agg_steps": agg})
    ds["success"] = ds.mass.mean("sample")
    ds["success_se"] = ds.mass.std("sample", ddof=1) / math.sqrt(batch)
    return ds


def _o(ds, arm):
    return ds.mass.sel(arm=arm).values.astype(np.float64)


def _s(ds, arm) -> str:
    return f"{float(ds.success.sel(arm=arm)):.3f}"


def verdicts(ds: xr.Dataset) -> list:
    """AMDM beats both flow models alone (both role orders); mu = v does as well as the step's
    location; AMDM of a flow and a VP model does worse than within the flow ecosystem."""
    out = []
    singles = ("position", "colour")
    for arm, key, claim in (("amdm", "flow_amdm_beats_singles", "AMDM raises fine-grained success under flow"),
                            ("amdm_swapped", "flow_amdm_swapped_beats_singles", "... with the roles swapped")):
        b = stats.best_of({a: _o(ds, a) for a in (arm, *singles)}, arm, LEVEL, **PAIRED)
        out.append(best_verdict(
            b, key=key, claim=claim, where="App. G (exact flow GMM family)", reference=0.0,
            measured=f"{_s(ds, arm)} vs {_s(ds, b.deciding)}", bound="> both flow models alone",
            detail=(f"Posterior mass on the target (position 0, colour 0): position alone {_s(ds, 'position')}, "
                    f"colour alone {_s(ds, 'colour')}, {ds.label.sel(arm=arm).item()} {_s(ds, arm)}; the VP pair "
                    f"of the same data {_s(ds, 'vp_amdm')} (for reference).")))
    p = stats.paired_interval(_o(ds, "amdm_mu_v"), _o(ds, "amdm"), LEVEL, **PAIRED)
    m = EQUIVALENCE_MARGIN
    out.append(paired_verdict(
        p, stats.decide_equivalence(p.interval, m), key="flow_mu_v_success", claim="AMDM with mu = v does as well",
        where="App. G ('simply set mu = v')", measured=f"{_s(ds, 'amdm_mu_v')} vs {_s(ds, 'amdm')}",
        bound=f"|diff| <= {m:g}", reference=m, test=f"{p.test}, equivalence within +-{m:g}",
        detail=(f"AMDM with the shift's target the velocity v (as App. G prints it) against the step's location "
                f"(z + dt v, the same step function as for diffusion): mu = v minus location "
                f"{stats.interval_text(p)}.")))
    b = stats.best_of({a: _o(ds, a) for a in ("amdm", "vp_flow")}, "amdm", LEVEL, **PAIRED)
    out.append(best_verdict(
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
    return {"arms": ds[["success", "success_se"]].to_dataframe()}

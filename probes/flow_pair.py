"""Probe: two exact rectified-flow models of one flow ecosystem (App. G), or a flow model with a
VP diffusion model (another ecosystem, Table 10's analogue).

The fine-grained GMM family of ``gmm_pair`` under the flow interpolant z_s = (1 - s) x0 + s eps
(``amdm_geom.models.flow_gmm``: exact velocities): model 1 conditioned on a position, model 2
on a colour; ``--perturb`` moves model 2's means (a "fine-tune"). The sampler steps both with
diffusers' ``FlowMatchEulerDiscreteScheduler`` (deterministic, or with ``--flow-stochastic True``
its stochastic step). ``--partner vp`` makes model 2 the same family's VP model on SD's schedule:
a pair the sampler refuses unless ``--insist``.

    amdm-geom probe flow_pair [--shift 1.0 --perturb 0.05 --partner flow|vp] [sampler options]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from amdm_geom.core.spec import choice, real
from amdm_geom.models.specs import GMMModelSpec
from amdm_geom.probes import gmm_pair
from amdm_geom.probes.specs import RunSettings, run_probe
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["NAME", "SUMMARY", "Spec", "build", "run"]

NAME = "flow_pair"
SUMMARY = "two exact rectified-flow GMM models of one flow ecosystem (App. G), or a flow with a VP model"

PARTNERS = ("flow", "vp")


class Spec(gmm_pair.PairSpec):
    """Two exact flow models of the fine-grained GMM family (App. G): model 1 conditioned on a
    position, model 2 on a colour, both stepped by diffusers' flow-matching Euler scheduler;
    ``partner = vp`` makes model 2 a VP diffusion model of the same data (another ecosystem)."""

    shift: Annotated[float, real(0.0, low_open=True)] = 1.0
    """the flow scheduler's time shift (SD3 uses 3.0), > 0."""
    partner: Annotated[Literal[*PARTNERS], choice(*PARTNERS)] = "flow"
    """model 2: a flow model (one ecosystem) or the same data's VP model on SD's schedule (another)."""
    sampler: SamplerConfig = SamplerConfig(num_inference_steps=50, agg_steps=20)
    run: RunSettings = RunSettings(out=Path("data/runs/flow_pair.zarr"))

    def models(self) -> tuple[GMMModelSpec, GMMModelSpec]:
        """The two models: y1 = position under the flow, y2 = colour under the flow or SD's VP schedule."""
        flow = self.partner == "flow"
        return (GMMModelSpec(attribute="position", value=self.position, sde="flow", shift=self.shift,
                             guidance=self.guidance, name=f"position={self.position} (flow)"),
                GMMModelSpec(attribute="colour", value=self.colour, sde="flow" if flow else "scaled_linear",
                             shift=self.shift if flow else 1.0, guidance=self.guidance, perturb=self.perturb,
                             name=f"colour={self.colour} ({'flow' if flow else 'VP'})"))

    def step_kinds(self) -> tuple[str, ...]:
        return tuple(m.step_kind for m in self.models())


def build(spec: Spec):
    """The ``AMDMSampler`` of the two models."""
    return gmm_pair.build(spec)


def run(spec: Spec, *, quiet: bool = False) -> Path:
    """Run the probe into ``spec.run.out``."""
    return run_probe(spec, lambda: build(spec), probe=NAME, quiet=quiet)

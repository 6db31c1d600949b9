"""Probe: two tiny DiT-style flow transformers of one ecosystem (App. G's "RF-based DiT family").

A tiny ``SD3Transformer2DModel``, ``FluxTransformer2DModel`` or ``DiTTransformer2DModel`` built
offline from a seed, and its weight-perturbed copy (a "fine-tune"), both velocity models under
one ``FlowMatchEulerDiscreteScheduler`` (``amdm_geom.models.transformers``), with nearby
conditions: Prop. G.1 on recorded transformer trajectories. The networks are untrained: what is
measured is the geometry of two nearby velocity fields, not sample quality.

    amdm-geom probe flow_transformer_pair [--kind sd3|flux|dit --scale 0.05 --shift 1.0] [sampler options]
"""

from __future__ import annotations

from pathlib import Path

from amdm_geom.models.specs import TinyTransformerPairSpec
from amdm_geom.probes.specs import ProbeSpec, RunSettings, run_probe
from amdm_geom.sampling import AMDMSampler
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["NAME", "SUMMARY", "Spec", "build", "run"]

NAME = "flow_transformer_pair"
SUMMARY = "two tiny flow transformers (SD3, Flux or DiT style) of one ecosystem: a base and its perturbed copy"


class Spec(ProbeSpec):
    """Two tiny flow transformers: a seeded base and its perturbed copy, with nearby conditions."""

    family: TinyTransformerPairSpec = TinyTransformerPairSpec()
    sampler: SamplerConfig = SamplerConfig(num_inference_steps=20, agg_steps=8)
    run: RunSettings = RunSettings(out=Path("data/runs/flow_transformer_pair.zarr"))

    def step_kinds(self) -> tuple[str, ...]:
        return ("flow", "flow")

    def latent_shape(self) -> tuple[int, int, int]:
        """The transformers' latents: 4 channels of ``sample_size`` x ``sample_size``."""
        return (4, self.family.sample_size, self.family.sample_size)


def build(spec: Spec):
    """The ``AMDMSampler`` of the two transformers."""
    models, conds = spec.family.build()
    return AMDMSampler(models, conds, spec.config())


def run(spec: Spec, *, quiet: bool = False) -> Path:
    """Run the probe into ``spec.run.out``."""
    return run_probe(spec, lambda: build(spec), probe=NAME, quiet=quiet)

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
from typing import Annotated, Literal

from amdm_geom.core.spec import choice, integer, real, seed
from amdm_geom.probes.specs import ProbeSpec, RunSettings, run_probe
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["NAME", "SUMMARY", "Spec", "build", "run"]

NAME = "flow_transformer_pair"
SUMMARY = "two tiny flow transformers (SD3, Flux or DiT style) of one ecosystem: a base and its perturbed copy"

KINDS = ("sd3", "flux", "dit")


class Spec(ProbeSpec):
    """Two tiny flow transformers: a seeded base and its perturbed copy, with nearby conditions."""

    kind: Annotated[Literal["sd3", "flux", "dit"], choice(*KINDS)] = "sd3"
    """the architecture: SD3's MMDiT, Flux's, or DiT (class-conditioned)."""
    model_seed: Annotated[int, seed()] = 0
    """seeds the base's weights (the copy's perturbation uses model_seed + 1)."""
    scale: Annotated[float, real(0.0)] = 0.05
    """the perturbation's size, relative to each weight tensor's spread, >= 0."""
    sample_size: Annotated[int, integer(2)] = 8
    """the latents' height and width (4 channels)."""
    shift: Annotated[float, real(0.0, low_open=True)] = 1.0
    """the flow scheduler's time shift, > 0."""
    sampler: SamplerConfig = SamplerConfig(num_inference_steps=20, agg_steps=8)
    run: RunSettings = RunSettings(out=Path("data/runs/flow_transformer_pair.zarr"))

    @property
    def n_models(self) -> int:
        return 2

    def check_models(self) -> None:
        return None

    def step_kinds(self) -> tuple[str, ...]:
        return ("flow", "flow")

    def latent_shape(self) -> tuple[int, int, int]:
        """The transformers' latents: 4 channels of ``sample_size`` x ``sample_size``."""
        return (4, self.sample_size, self.sample_size)


def build(spec: Spec):
    """The ``AMDMSampler`` of the two transformers."""
    from amdm_geom.models.transformers import tiny_transformer_pair
    from amdm_geom.sampling import AMDMSampler

    models, conds = tiny_transformer_pair(spec.kind, seed=spec.model_seed, scale=spec.scale, shift=spec.shift,
                                          sample_size=spec.sample_size)
    return AMDMSampler(models, conds, spec.config())


def run(spec: Spec, *, quiet: bool = False) -> Path:
    """Run the probe into ``spec.run.out``."""
    return run_probe(spec, lambda: build(spec), probe=NAME, quiet=quiet)

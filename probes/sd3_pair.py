"""Probe: AMDM over Stable Diffusion 3 pipelines (rectified flow, App. G) from local weights.

Model A (theta_1) and, optionally, model B (theta_2) are SD3 pipelines (``SD3PipelineSpec``: a
pipeline folder in the save_pretrained layout, or a single checkpoint file with
``--model-a.config``, a local config folder); each can carry a LoRA. Each is a velocity model
stepped by its own flow-matching scheduler (eq. 42's Euler step), with classifier-free guidance
as the SD3 pipeline does it. The run is recorded with the same store schema as every probe, and
the final latents are decoded by model A's VAE into PNG images beside the store
(``<out>_images/seed<seed>.png``). Models that the ecosystem check finds in different ecosystems
are refused unless --insist. Nothing is downloaded.

    amdm-geom probe sd3 --model-a.path PATH --model-b.path PATH --prompt "..." [--steps 28 ...]
"""

from __future__ import annotations

from pathlib import Path

from amdm_geom.models.pipeline_specs import SD3PipelineSpec
from amdm_geom.probes import pipeline_pair
from amdm_geom.probes.specs import RunSettings
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["NAME", "SUMMARY", "Spec", "build", "run"]

NAME = "sd3"
SUMMARY = "AMDM over Stable Diffusion 3 (rectified-flow) pipelines from local weights (LoRA)"


class Spec(pipeline_pair.PairSpec[SD3PipelineSpec]):
    """AMDM over Stable Diffusion 3 pipelines (rectified flow, App. G) from local weights (folders or
    single checkpoint files; LoRA); the final latents are decoded into PNG images beside the
    store. Nothing is downloaded."""

    sampler: SamplerConfig = SamplerConfig()
    run: RunSettings = RunSettings(out=Path("data/runs/sd3_pair.zarr"))


def build(spec: Spec):
    """The ``AMDMSampler`` over the pipelines (this loads their weights)."""
    return pipeline_pair.build(spec)


def run(spec: Spec, *, quiet: bool = False) -> Path:
    """Run the probe into ``spec.run.out`` and decode the final latents into PNG images beside it."""
    return pipeline_pair.run(spec, lambda: build(spec), probe=NAME, quiet=quiet)

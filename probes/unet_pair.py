"""Probe: two tiny diffusers UNets (random init, offline) aggregated by AMDM.

``--variant perturbed`` pairs a base UNet with a weight-perturbed copy (a "fine-tune"),
``adapter`` with the base plus a scaled-in additive adapter (both one ecosystem), and
``independent`` with an independently initialised UNet on another schedule (a different
ecosystem: the probe opts in to aggregating it). The conditions are two nearby random prompt
embeddings (fine-grained conditions), ``--cond-distance`` apart.

    amdm-geom probe unet_pair [--variant perturbed --scale 0.05 --sample-size 64] [sampler options]
"""

from __future__ import annotations

from pathlib import Path

from amdm_geom.core.spec import SpecError
from amdm_geom.models.specs import TinyUNetPairSpec
from amdm_geom.probes.specs import ProbeSpec, RunSettings, run_probe
from amdm_geom.sampling import AMDMSampler
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["NAME", "SUMMARY", "Spec", "build", "run"]

NAME = "unet_pair"
SUMMARY = "two tiny diffusers UNets (perturbed, adapter or independent pair)"


class Spec(ProbeSpec):
    """Two tiny diffusers UNets (random init, offline): a base and a weight-perturbed copy, the
    base plus a scaled-in adapter, or an independent UNet on another schedule (aggregated anyway),
    under two nearby random prompt embeddings."""

    family: TinyUNetPairSpec = TinyUNetPairSpec()
    sampler: SamplerConfig = SamplerConfig()
    run: RunSettings = RunSettings(out=Path("data/runs/unet_pair.zarr"))

    def config(self) -> SamplerConfig:
        if self.family.insists and not self.sampler.allow_schedule_mismatch:
            return self.sampler.replace(allow_schedule_mismatch=True)
        return self.sampler

    def latent_shape(self) -> tuple[int, int, int]:
        """The tiny UNets' latents: 4 channels of ``sample_size`` x ``sample_size``."""
        return (4, self.family.sample_size, self.family.sample_size)

    def check_models(self) -> None:
        if self.run.dtype != "float32":
            raise SpecError("must be float32: unet_pair builds float32 UNets", self.run.dtype, loc=("run", "dtype"))


def build(spec: Spec):
    """The ``AMDMSampler`` of the two UNets."""
    models, conds = spec.family.build()
    return AMDMSampler(models, conds, spec.config())


def run(spec: Spec, *, quiet: bool = False) -> Path:
    """Run the probe into ``spec.run.out``."""
    return run_probe(spec, lambda: build(spec), probe=NAME, quiet=quiet)

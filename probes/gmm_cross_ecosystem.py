"""Probe: two exact GMM models whose SDEs differ (App. F.3, Table 10), aggregated anyway.

The same fine-grained family as ``gmm_pair``, but model 2 follows another VP schedule
(``--schedule-b``, default cosine): at every t the two models' latents sit at different noise
levels, which is the paper's "different ecosystem" failure. The sampler refuses such a pair
unless told otherwise; this probe opts in.

    amdm-geom probe gmm_cross_ecosystem [--schedule-b cosine|linear] [sampler options]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from amdm_geom.core.spec import choice
from amdm_geom.probes import gmm_pair
from amdm_geom.probes.specs import RunSettings, run_probe
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["NAME", "SUMMARY", "Spec", "build", "run"]

NAME = "gmm_cross_ecosystem"
SUMMARY = "two exact GMM models whose SDEs differ, aggregated anyway"


class Spec(gmm_pair.PairSpec):
    """Two exact GMM models whose SDEs differ (App. F.3, Table 10): model 2 follows another VP
    schedule, and the pair is aggregated anyway (the sampler's ecosystem check is overridden)."""

    schedule_b: Annotated[Literal["linear", "cosine"], choice("linear", "cosine")] = "cosine"
    """model 2's VP schedule (model 1 keeps SD's scaled-linear)."""
    sampler: SamplerConfig = SamplerConfig()
    run: RunSettings = RunSettings(out=Path("data/runs/gmm_cross_ecosystem.zarr"))

    def model_b_schedule(self) -> str:
        return self.schedule_b

    def config(self) -> SamplerConfig:
        return self.sampler.replace(allow_schedule_mismatch=True)


def build(spec: Spec):
    """The ``AMDMSampler`` of the two models."""
    return gmm_pair.build(spec)


def run(spec: Spec, *, quiet: bool = False) -> Path:
    """Run the probe into ``spec.run.out``."""
    return run_probe(spec, lambda: build(spec), probe=NAME, quiet=quiet)

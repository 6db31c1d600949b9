"""The sampling layer: Algorithm 1's settings (``config``), its hook points (``hooks``), the run
layout recorders get (``plan``) and the in-memory recorder (``recording``), one generator per
sample (``rng``), the pure aggregation step (``step``) and the sampler loop (``sampler``). It
imports the models and the core, and knows nothing of zarr."""

from amdm_geom.sampling.config import MIX_RULES, SHIFT_MEANS, SamplerConfig, planned_hook_names
from amdm_geom.sampling.hooks import AGG_QUANTITIES, CROSS_EPS, MODEL_QUANTITIES, hook_names, parse_hook_name
from amdm_geom.sampling.plan import RunPlan
from amdm_geom.sampling.recording import MemoryRecorder, Recorder
from amdm_geom.sampling.rng import sample_generators
from amdm_geom.sampling.sampler import AMDMSampler, SampleOutput
from amdm_geom.sampling.step import AggregateStep, aggregate_step, mix

__all__ = ["AGG_QUANTITIES", "CROSS_EPS", "MIX_RULES", "MODEL_QUANTITIES", "SHIFT_MEANS", "AMDMSampler",
           "AggregateStep", "MemoryRecorder", "Recorder", "RunPlan", "SampleOutput", "SamplerConfig",
           "aggregate_step", "hook_names", "mix", "parse_hook_name", "planned_hook_names", "sample_generators"]

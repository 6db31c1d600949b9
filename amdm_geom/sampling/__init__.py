"""The sampling layer: Algorithm 1's settings (``config``), its hook points (``hooks``), the run
layout recorders get (``plan``) and the in-memory recorder (``recording``), one generator per
sample (``rng``), the pure aggregation step (``step``) and the sampler loop (``sampler``). It
imports the models and the core, and knows nothing of zarr."""

from .config import MIX_RULES, SHIFT_MEANS, SamplerConfig
from .hooks import AGG_QUANTITIES, CROSS_EPS, MODEL_QUANTITIES, hook_names, parse_hook_name, planned_hook_names
from .plan import RunPlan
from .recording import MemoryRecorder, Recorder
from .rng import sample_generators
from .sampler import AMDMSampler, SampleOutput
from .step import AggregateStep, aggregate_step, mix

__all__ = ["AGG_QUANTITIES", "CROSS_EPS", "MIX_RULES", "MODEL_QUANTITIES", "SHIFT_MEANS", "AMDMSampler",
           "AggregateStep", "MemoryRecorder", "Recorder", "RunPlan", "SampleOutput", "SamplerConfig",
           "aggregate_step", "hook_names", "mix", "parse_hook_name", "planned_hook_names", "sample_generators"]

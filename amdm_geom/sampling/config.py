"""The specs of a sampler run (``amdm_geom.core.spec``: frozen, self-validating, JSON round-trip).

- ``SamplerConfig``: Algorithm 1's settings, kept in every run's one spec (``plan.RunPlan.spec``)
  and given back from a store by ``amdm_geom.store.sampler_config``; ``planned_hook_names``: the
  hook names (``hooks``) a run with them emits;
- ``RunSettings``: the samples, their seeds, the dtype and the trace store of a run;
- ``RunSpec``: the base of every run's spec (each probe's, each ablation run's): its models'
  fields, then ``sampler`` and ``run``, all checked together when the spec is made.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, PlainValidator, ValidationInfo, field_validator, model_validator

from amdm_geom.core.spec import (
    MAX_SEED,
    Spec,
    SpecError,
    as_number,
    choice,
    flag,
    integer,
    is_cli,
    is_int,
    is_real,
    is_sequence,
    optional,
    real,
    seed,
    sequence,
)
from amdm_geom.models.specs import TRAIN_TIMESTEPS
from amdm_geom.sampling.hooks import CROSS_EPS, OUTPUT, hook_names, matches

__all__ = ["COMPRESSORS", "DEFAULT_AGG_STEPS", "DEFAULT_WEIGHTS", "DTYPE_NAMES", "MIX_RULES", "SHIFT_MEANS",
           "RunSettings", "RunSpec", "SamplerConfig",
           "as_number", "is_int", "is_real", "is_sequence", "planned_hook_names"]

MIX_RULES = ("slerp", "lerp", "orthogonal_mix")
SHIFT_MEANS = ("step", "aggregate", "velocity")
DTYPE_NAMES = ("float16", "float32", "float64")
#: A trace store's compressors (``RunSettings.compressor``; the codecs are the trace layer's).
COMPRESSORS = ("none", "zstd", "blosc")
#: s, the default aggregation window's length (App. F.2), or T if that is smaller.
DEFAULT_AGG_STEPS = 20
#: w of eq. (6) for two models (App. F.2)
DEFAULT_WEIGHTS = (0.5,)

Flag = Annotated[bool, flag]


class SamplerConfig(Spec):
    """Algorithm 1 (AMDM). Defaults are the paper's (App. F.2): T = 50, s = 20, w = 0.5, eta = 0.3.

    Numbers may be Python, numpy or torch scalars (``np.float64(0.5)``, ``np.int64(50)``, a 0-d
    tensor): they are kept as Python numbers, and sequences as tuples. Bools, NaN, inf and
    non-integral step counts are refused when the config is made, with one line naming the field
    and what it accepts (``SpecError``); ``check(n_models)`` adds what depends on the number of
    models (``AMDMSampler`` calls it)."""

    num_inference_steps: Annotated[int, integer(1)] = Field(50, alias="steps")
    """T, the number of DDIM steps (eq. 4)."""
    agg_steps: int = Field(None, validate_default=True)
    """s: aggregate the first s steps, 0 <= s <= T (default 20, or T if smaller)."""
    agg_window: tuple[int, int] | None = None
    """aggregate steps [START, STOP) instead of the first s (the stage ablation, Table 3)."""
    weights: Annotated[tuple[float, ...], sequence(real(0.0, 1.0, accepted="in [0, 1]"),
                                                   accepted="a sequence of N - 1 numbers in [0, 1]")] = \
        Field(DEFAULT_WEIGHTS, alias="w")
    """w_1 .. w_{N-1} in [0, 1] (eq. 6; w = 0 keeps model 1); the default 0.5 serves N = 2, and N = 1 (no weight)."""
    eta: float | tuple[float, ...] = 0.3
    """the radial shift of eq. (7), >= 0, one value or one per model, in units of latent norm."""
    mix: Annotated[Literal["slerp", "lerp", "orthogonal_mix"], choice(*MIX_RULES)] = "slerp"
    """slerp (eq. 6), lerp (Figure 5's baseline) or the earlier version's orthogonal mix (w weighs model 1)."""
    shift_mean: Annotated[Literal["step", "aggregate", "velocity"], choice(*SHIFT_MEANS)] = "step"
    """the shift's mean: mu_i(z_t^i, t, y_i) from the step (Algorithm 1; a flow's deterministic location
    z + dt v), or mu_i(z', t, y_i) at the aggregate as eq. (7) prints it (one more model call), or for flow
    models the velocity v_i(z_t^i, t, y_i) itself, as App. G prints "set mu = v"."""
    ddim_eta: Annotated[float, real(0.0, accepted="a finite float >= 0")] = 0.0
    """DDIM's eta >= 0 (0: deterministic; 1: DDPM posterior variance)."""
    flow_stochastic: bool | None = None
    """flow models: sample with diffusers' stochastic flow step (True), the deterministic Euler step (False),
    or as each model's scheduler says (default)."""
    shared_init: Flag = False
    """every model starts from model 1's z_T (the earlier version)."""
    allow_schedule_mismatch: Flag = Field(False, alias="insist")
    """aggregate models of different ecosystems anyway (schedules that differ, or for pipeline models a
    different VAE or latent space)."""
    continue_after_window: Flag = False
    """models 2..N keep sampling on their own after the window, as the paper's Table 5 logs them (model 1's
    trajectory is unchanged)."""
    record_cross_eps: Flag = Field(False, alias="cross_eps")
    """record eps_theta1(z_t^1, t, y_i) and eps_thetai(z_t^1, t, y_i) for the terms of eqs. (20)-(22): two more
    model calls per partner and step while a recorder or hook is attached; the trajectory is unchanged. Models
    that take different kinds of condition are evaluated each at its null condition instead (the run's
    ``cross_terms`` says which)."""
    record_output: Flag = Field(False, alias="model_output")
    """also record each model's raw output (model{i}.out, in its scheduler's prediction_type: v for a
    v-prediction model); eps is always the step's epsilon of eq. (4)."""

    @model_validator(mode="before")
    @classmethod
    def _one_window(cls, data, info: ValidationInfo):
        # on the command line, --agg-steps and --agg-window exclude each other (in code, a given
        # agg_window wins, as it always has)
        if is_cli(info) and isinstance(data, dict) and data.get("agg_window") is not None \
                and data.get("agg_steps") is not None:
            raise SpecError("not allowed with `agg_steps`", loc=("agg_window",))
        return data

    @field_validator("agg_steps", mode="before")
    @classmethod
    def _agg_steps(cls, value, info: ValidationInfo):
        steps = info.data.get("num_inference_steps")
        if value is None:
            return min(DEFAULT_AGG_STEPS, steps) if is_int(steps) else DEFAULT_AGG_STEPS
        value = as_number(_int_text(value) if is_cli(info) else value)
        if not (is_int(value) and value >= 0):
            raise SpecError(f"must be an int in [0, {steps if is_int(steps) else 'T'}]", value)
        return value

    @field_validator("agg_window", mode="before")
    @classmethod
    def _agg_window(cls, value, info: ValidationInfo):
        if value is None:
            return None
        window = tuple(as_number(v) for v in value) if is_sequence(value) else (as_number(value),)
        if is_cli(info):
            window = tuple(_int_text(v) for v in window)
        steps = info.data.get("num_inference_steps")
        bound = steps if is_int(steps) else None
        ok = len(window) == 2 and all(is_int(v) for v in window) and 0 <= window[0] <= window[1]
        if not ok or (bound is not None and window[1] > bound):
            raise SpecError(f"must be (start, stop) with 0 <= start <= stop <= {bound if bound is not None else 'T'}",
                            window)
        return window

    @field_validator("eta", mode="before")
    @classmethod
    def _eta(cls, value, info: ValidationInfo):
        check = real(0.0).func
        if is_sequence(value):
            etas = tuple(check(v, info) for v in value)
            return etas[0] if is_cli(info) and len(etas) == 1 else etas  # (one value given on the command line)
        return check(value, info)

    @model_validator(mode="after")
    def _agg_steps_within_steps(self):
        if self.agg_window is None and self.agg_steps > self.num_inference_steps:
            raise SpecError(f"must be an int in [0, {self.num_inference_steps}]", self.agg_steps, loc=("agg_steps",))
        return self

    @property
    def window(self) -> tuple[int, int]:
        """The aggregation window [start, stop) of steps."""
        return tuple(self.agg_window) if self.agg_window is not None else (0, self.agg_steps)

    def check(self, n_models: int) -> None:
        """What depends on the number of models: one weight per partner model (for one model, none
        or the default's unused 0.5), one eta or one per model. A one-line ``SpecError`` naming the
        field, the bad value and what is accepted (``AMDMSampler`` calls it; the probes, before
        they build any model)."""
        if len(self.weights) != n_models - 1 and not self.default_weights_unused(n_models):
            raise SpecError(f"takes {n_models - 1} weight(s) w_1..w_{{N-1}} for {n_models} models", self.weights,
                            loc=("weights",), count=True)
        if is_sequence(self.eta) and len(self.eta) != n_models:
            raise SpecError(f"must be one value or one per model ({n_models})", self.eta, loc=("eta",), count=True)


    def default_weights_unused(self, n_models: int) -> bool:
        """A one-model run given the default weights (0.5,): there is no partner to weigh."""
        return n_models == 1 and self.weights == DEFAULT_WEIGHTS

    def etas(self, n_models: int) -> list[float]:
        """eta_i of eq. (7) for each of ``n_models`` models: the one value for all, or one per model."""
        return [float(e) for e in (self.eta if is_sequence(self.eta) else (self.eta,) * n_models)]

    def for_models(self, n_models: int) -> SamplerConfig:
        """This config as a run of ``n_models`` uses and stores it: a one-model run's unused
        default weight dropped (``weights=()``); otherwise itself."""
        return self.replace(weights=()) if self.default_weights_unused(n_models) else self


def planned_hook_names(n_models: int, config: SamplerConfig, names_filter=None,
                       kinds: tuple[str, ...] | None = None) -> list[str]:
    """The hook names (``hooks``) a run of ``n_models`` models with ``config`` emits (and records,
    for a recorder with ``names_filter``): none of the aggregate's or the shift's when no step is
    aggregated, the cross-eps terms only with ``record_cross_eps`` and more than one model, the
    raw output only with ``record_output``."""
    start, stop = config.window
    aggregated = n_models > 1 and any(start <= k < stop for k in range(config.num_inference_steps))
    extra = (OUTPUT if config.record_output else ()) + (CROSS_EPS if config.record_cross_eps and n_models > 1 else ())
    names = [nm for nm in hook_names(n_models, extra, kinds) if matches(names_filter, nm)]
    if not aggregated:
        names = [nm for nm in names if nm != "agg.z" and not nm.endswith((".mu_shift", ".z_shift"))]
    return names


def _int_text(value):
    try:
        return int(value) if isinstance(value, str) else value
    except ValueError:
        return value


# --------------------------------------------------------------------------------------------
# a run: models + Algorithm 1 + samples and store


Seed = Annotated[int, seed()]


def _text(value, info: ValidationInfo):
    if not isinstance(value, str):
        raise SpecError("must be text", value)
    return value


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(://|::)")


def _store_target(value, info: ValidationInfo):
    """A trace store's place: a local path (kept as a ``Path``) or an fsspec URL (kept as text)
    whose every protocol fsspec knows and can load."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise SpecError("must be a path or an fsspec URL (memory://..., s3://bucket/...)", value)
    if not _URL.match(value):
        return Path(value)
    import fsspec

    for part in value.split("::"):
        protocol = part.split("://", 1)[0]
        try:
            fsspec.get_filesystem_class(protocol)
        except (ValueError, ImportError) as exc:
            why = " ".join(str(exc).split())
            raise SpecError(f"has protocol {protocol!r} that fsspec cannot use ({why}); accepted: a path or an "
                            "fsspec URL such as memory://runs/a.zarr or s3://bucket/a.zarr", value) from None
    return value


class RunSettings(Spec):
    """The run: samples and their seeds, the dtype, and the trace store.

    ``compressor`` defaults to "none" because of tests/benchmarks/compression.py, run on the float32
    latents of a gmm_pair run at (4, 32, 32) (every hook quantity, 22 MB): zstd and blosc make
    stores only 1.20x to 1.25x smaller (noise-like float32 mantissas do not compress) while writing
    1.4x to 3x slower (e.g. 55 MB/s raw, 18-29 MB/s compressed); the writes run in the recorder's
    background thread either way, but compressing takes CPU from the model's evaluation. "zstd"
    (level 1; level 3 gained nothing) or "blosc" (lz4 with byte shuffle, the faster of the two) pay
    off where bytes cost more than CPU: stores at network URLs, or runs kept for long."""

    batch: Annotated[int, integer(1)] = 4
    """samples, one generator each."""
    seed: Seed = 0
    """first seed; sample b uses seed + b, all in [0, 2**63)."""
    dtype: Annotated[Literal["float16", "float32", "float64"], choice(*DTYPE_NAMES)] = "float32"
    """model and store dtype."""
    out: Annotated[Path | str, PlainValidator(_store_target)] = Path("data/runs/run.zarr")
    """trace store: a path, or an fsspec URL (memory://..., s3://bucket/run.zarr) with no writer lock and no
    atomic overwrite."""
    compressor: Annotated[Literal["none", "zstd", "blosc"], choice(*COMPRESSORS)] = "none"
    """the store's compressor: none (fastest), zstd or blosc (lz4, byte shuffle)."""
    overwrite: Annotated[bool, flag] = False
    """replace an existing trace store (nothing else is ever replaced)."""
    names: Annotated[tuple[str, ...] | None,
                     optional(sequence(BeforeValidator(_text), accepted="one or more hook-name globs", min_len=1))] = \
        None
    """record only hook names matching these globs (default: all); each must match a hook of the run."""
    progress: Annotated[bool, flag] = True
    """show a progress bar."""
    chunk: Annotated[int | None, optional(integer(1))] = None
    """run the samples in chunks of this many (the whole trajectory per chunk; same per-sample results up to
    float rounding); default all at once."""

    @model_validator(mode="after")
    def _seeds(self):
        if self.seed + self.batch > MAX_SEED:
            raise SpecError(f"`seed` {self.seed} with `batch` {self.batch} uses seeds up to "
                            f"{self.seed + self.batch - 1}; seeds must be in [0, 2**63)", loc=("seed",))
        return self

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.batch))

    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


class RunSpec(Spec):
    """A sampler run's spec (each probe's, each ablation run's): its models, Algorithm 1's
    settings (``sampler``) and the run (``run``), declared by each subclass in that order.
    Everything is checked when the spec is made, before any model is built or any file is
    written: each field, then what depends on several
    (``check_models``, the sampler against the number of models, the steps against the
    schedule's training timesteps, ``--names`` against the hooks the run records)."""

    #: The most steps the models' schedules allow (``None``: the models check it themselves).
    MAX_STEPS: ClassVar[int | None] = TRAIN_TIMESTEPS
    # (each subclass declares ``sampler: SamplerConfig`` and ``run: RunSettings`` after its
    # models' fields, so that they come last in the spec, its JSON and its --help)

    @property
    def n_models(self) -> int:
        return 2

    def config(self) -> SamplerConfig:
        """The sampler's settings as the run uses them (a spec may fix some, e.g. to aggregate
        models of two ecosystems)."""
        return self.sampler

    def check_models(self) -> None:
        """What the spec's own fields require of each other (``SpecError`` with the field's loc)."""

    def step_kinds(self) -> tuple[str, ...]:
        """Each model's step kind, ``"ddim"`` or ``"flow"`` (the hook names depend on it): DDIM unless a
        spec of flow models says otherwise."""
        return ("ddim",) * self.n_models

    @model_validator(mode="after")
    def _check_together(self):
        self.check_models()
        steps = self.sampler.num_inference_steps
        if self.MAX_STEPS is not None and steps > self.MAX_STEPS:
            raise SpecError(f"must be in [1, {self.MAX_STEPS}] (the schedule's training timesteps)", steps,
                            loc=("sampler", "num_inference_steps"))
        try:
            self.config().check(self.n_models)
        except SpecError as exc:
            raise exc.within("sampler") from None
        if self.run.names is not None:
            names = planned_hook_names(self.n_models, self.config(), kinds=self.step_kinds())
            for glob in self.run.names:
                if not any(fnmatch.fnmatchcase(n, glob) for n in names):
                    listed = ", ".join(names[:6]) + (f", ..., {names[-1]}" if len(names) > 6 else "")
                    raise SpecError(f"{glob!r} matches no hook this run records; its {len(names)} hook names are "
                                    f"{listed} (globs such as 'model*.z_next' work)", loc=("run", "names"))
        return self

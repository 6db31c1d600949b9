"""AMDM, Algorithm 1 of the current version, for N models, with named hook points.

Per step k (timestep t -> t_prev), every running model i:

    eps_i    = model_i(z_t^i, t, y_i)                       # guided epsilon
    mu_i     = A_t z_t^i + B_t eps_i                         # eq. (4), the reverse-step mean
    z_next_i = mu_i + sigma_t xi_i                           # xi_i from model i's own generators

and, inside the aggregation window [start, stop) (default the first s steps):

    z'       = Slerp(z_next_1, ..., z_next_N; w_1, ..., w_{N-1})     # eq. (6), successive pairwise
    z_t-1^i  = z' - eta_i (z' - mu_i) / |z' - mu_i|                  # eq. (7), the radial shift

Outside the window every running model keeps its own ``z_next``. Models 2..N run from step 0
until the window closes (independent trajectories before a late window), then model 1 goes on
alone ("direct sampling from p_theta1"). With one model, or an empty window, this is a plain
DDIM loop, and reproduces diffusers' ``DDIMScheduler.step`` bit for bit: the state update *is*
diffusers' step, in the model's dtype. Aggregation and the shift are computed in float64 by
``amdm_geom.geometry`` and returned in the model's dtype.

Options (``SamplerConfig``): the mixing rule (slerp, lerp, the earlier version's
orthogonal_mix), which mean the shift uses (``mu_i`` at ``z_t^i`` as in Algorithm 1, or
``mu_i`` evaluated at ``z'`` as eq. 7 prints it, one more model call), DDIM's eta (sigma_t),
independent or shared ``z_T``, and one random generator per (model, sample), so a sample's
random draws are bit for bit independent of its batch mates (its arithmetic differs between
batch sizes by float rounding only: batched matrix products block by batch size).

Hook points: each quantity above is emitted as ``model{i}.<q>`` or ``agg.z`` (DESIGN.md).
Attach a recorder with ``sampler.recording(recorder)`` (a context manager; the hook is removed
on exit) or call ``run_with_cache``; with nothing attached an emit is one ``if``.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from . import geometry
from .denoisers.base import Denoiser, same_schedule
from .schedules import ddim_coefficients, stepper
from .store import MemoryRecorder, RunPlan, hook_names

__all__ = ["AMDMSampler", "SampleOutput", "SamplerConfig", "planned_hook_names", "sample_generators"]

MIX_RULES = ("slerp", "lerp", "orthogonal_mix")
#: Opt-in per-model quantities for the delta decomposition (recorded for models 2..N)
CROSS_EPS = ("eps_cross", "eps_at_z1")
SHIFT_MEANS = ("step", "aggregate")


@dataclass(frozen=True)
class SamplerConfig:
    """Algorithm 1's settings. Defaults are the paper's (App. F.2): T = 50, s = 20, w = 0.5,
    eta = 0.3.

    - ``num_inference_steps``: T, the number of DDIM steps.
    - ``agg_steps``: s, the aggregation window is the first s steps, unless ``agg_window`` =
      (start, stop) gives any window of steps [start, stop) (the stage ablation, Table 3).
    - ``weights``: w_1 .. w_{N-1} in [0, 1] (w = 0 keeps model 1).
    - ``eta``: the radial shift of eq. (7), one value or one per model, >= 0, in absolute
      units of latent norm.
    - ``mix``: ``"slerp"`` (eq. 6), ``"lerp"`` (Figure 5's baseline) or ``"orthogonal_mix"``
      (the earlier version's eq. 9, where w weighs model 1).
    - ``shift_mean``: ``"step"``: mu_i(z_t^i, t, y_i) from the step (Algorithm 1);
      ``"aggregate"``: mu_i(z', t, y_i) evaluated at z' as eq. (7) prints it (one more call).
    - ``ddim_eta``: DDIM's eta (0: deterministic; 1: DDPM posterior variance).
    - ``shared_init``: every model starts from model 1's z_T (the earlier version).
    - ``allow_schedule_mismatch``: aggregate models of different ecosystems anyway: schedules
      that differ, or (for pipeline models) a different VAE or latent space.
    - ``continue_after_window``: models 2..N keep sampling on their own after the window (for
      logging, as the paper's Table 5 does after t = 30); model 1's trajectory is unchanged.
    - ``record_cross_eps``: while a recorder or hook is attached, two more calls per partner
      model i >= 2 and step, for the terms of eqs. (20)-(22): ``model{i}.eps_cross`` =
      eps_theta1(z_t^1, t, y_i) (model 1 under model i's condition) and ``model{i}.eps_at_z1`` =
      eps_thetai(z_t^1, t, y_i) (model i at model 1's input). They do not change the trajectory.

    Numbers may be Python, numpy or torch scalars (``np.float64(0.5)``, ``np.int64(50)``, a 0-d
    tensor): they are stored as Python ints and floats, and sequences as tuples. Bools, NaN, inf
    and non-integral step counts are refused, with one line naming the field and what it accepts
    (``check``, which ``AMDMSampler`` calls before any work).
    """

    num_inference_steps: int = 50
    agg_steps: int = 20
    agg_window: tuple[int, int] | None = None
    weights: tuple[float, ...] = (0.5,)
    eta: float | tuple[float, ...] = 0.3
    mix: str = "slerp"
    shift_mean: str = "step"
    ddim_eta: float = 0.0
    shared_init: bool = False
    allow_schedule_mismatch: bool = False
    continue_after_window: bool = False
    record_cross_eps: bool = False

    def __post_init__(self):
        # numpy and torch real scalars (np.float64(0.5), np.int64(50), a 0-d tensor) become Python
        # numbers, and sequences tuples, so that they behave, compare and serialise as Python
        # values; anything else is left as given for ``check`` to refuse in one line
        norm = object.__setattr__
        norm(self, "num_inference_steps", _as_number(self.num_inference_steps))
        norm(self, "agg_steps", _as_number(self.agg_steps))
        if self.agg_window is not None and _is_sequence(self.agg_window):
            norm(self, "agg_window", tuple(_as_number(v) for v in self.agg_window))
        if _is_sequence(self.weights):
            norm(self, "weights", tuple(_as_number(w) for w in self.weights))
        eta = _as_number(self.eta)
        norm(self, "eta", tuple(_as_number(e) for e in eta) if _is_sequence(eta) else eta)
        norm(self, "ddim_eta", _as_number(self.ddim_eta))
        for flag in ("shared_init", "allow_schedule_mismatch", "continue_after_window", "record_cross_eps"):
            if isinstance(getattr(self, flag), np.bool_):
                norm(self, flag, bool(getattr(self, flag)))

    @property
    def window(self) -> tuple[int, int]:
        return tuple(self.agg_window) if self.agg_window is not None else (0, self.agg_steps)

    def check(self, n_models: int) -> None:
        """Every setting, for a run of ``n_models`` models, without the models: a one-line
        ValueError naming the field, the bad value and what is accepted. (``AMDMSampler`` calls
        it; the probes call it before they build any model.)"""
        steps = self.num_inference_steps
        if not (_is_int(steps) and steps >= 1):
            raise ValueError(f"num_inference_steps must be an int >= 1; got {steps!r}")
        if n_models > 1:  # with one model there is nothing to aggregate and the window is not used
            if self.agg_window is None and not (_is_int(self.agg_steps) and 0 <= self.agg_steps <= steps):
                raise ValueError(f"agg_steps must be an int in [0, {steps}]; got {self.agg_steps!r}")
            window = self.window if self.agg_window is None or _is_sequence(self.agg_window) else (self.agg_window,)
            if not (len(window) == 2 and all(_is_int(v) for v in window) and 0 <= window[0] <= window[1] <= steps):
                raise ValueError(f"agg_window must be (start, stop) with 0 <= start <= stop <= {steps}; "
                                 f"got {window!r}")
        if not _is_sequence(self.weights):
            raise ValueError(f"weights must be a sequence of N - 1 numbers in [0, 1]; got {self.weights!r}")
        if len(self.weights) != n_models - 1:
            raise ValueError(f"need {n_models - 1} weights w_1..w_{{N-1}} for {n_models} models; "
                             f"got {len(self.weights)}")
        for w in self.weights:
            if not (_is_real(w) and 0.0 <= w <= 1.0):
                raise ValueError(f"weights must be in [0, 1]; got {w!r}")
        etas = self.eta if _is_sequence(self.eta) else (self.eta,)
        if _is_sequence(self.eta) and len(etas) != n_models:
            raise ValueError(f"eta must be one value or one per model ({n_models}); got {len(etas)}")
        for e in etas:
            if not (_is_real(e) and e >= 0):
                raise ValueError(f"eta must be a finite number >= 0; got {e!r}")
        if self.mix not in MIX_RULES:
            raise ValueError(f"mix must be one of {MIX_RULES}; got {self.mix!r}")
        if self.shift_mean not in SHIFT_MEANS:
            raise ValueError(f"shift_mean must be one of {SHIFT_MEANS}; got {self.shift_mean!r}")
        if not (_is_real(self.ddim_eta) and self.ddim_eta >= 0):
            raise ValueError(f"ddim_eta must be a finite float >= 0; got {self.ddim_eta!r}")
        for flag in ("shared_init", "allow_schedule_mismatch", "continue_after_window", "record_cross_eps"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be True or False; got {getattr(self, flag)!r}")


def _is_sequence(value) -> bool:
    return isinstance(value, (tuple, list)) or (isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 1)


def _as_number(value):
    """A numpy or torch real scalar (or 0-d array or tensor) as a Python int or float; bools,
    complex numbers and everything else unchanged."""
    if isinstance(value, (bool, np.bool_)):
        return value
    if isinstance(value, torch.Tensor):
        if value.ndim == 0 and value.dtype != torch.bool and not value.is_complex():
            return value.item()
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        return value.item()
    return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    """A finite Python int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_seed(seed) -> int:
    """An int seed in [0, 2**63) (numpy and torch integers too, and integral floats); one line otherwise."""
    value = _as_number(seed)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not (_is_int(value) and 0 <= value < 2**63):
        raise ValueError(f"seeds must be ints in [0, 2**63), one sample per seed; got {seed!r}")
    return value


def planned_hook_names(n_models: int, config: SamplerConfig, names_filter=None) -> list[str]:
    """The hook names a run of ``n_models`` models with ``config`` emits (and records, for a
    recorder with ``names_filter``): none of the aggregate's or the shift's when no step is
    aggregated, the cross-eps terms only with ``record_cross_eps`` and more than one model."""
    start, stop = config.window
    aggregated = n_models > 1 and any(start <= k < stop for k in range(config.num_inference_steps))
    extra = CROSS_EPS if config.record_cross_eps and n_models > 1 else ()
    names = [nm for nm in hook_names(n_models, extra) if _matches(names_filter, nm)]
    if not aggregated:
        names = [nm for nm in names if nm != "agg.z" and not nm.endswith((".mu_shift", ".z_shift"))]
    return names


@dataclass
class SampleOutput:
    """What a run returns: model 1's final latent ``z0 (B, *latent_shape)``, every model's last
    latent, and the number of model evaluations."""

    z0: torch.Tensor
    finals: list[torch.Tensor]
    model_calls: int
    seeds: list[int]
    config: SamplerConfig
    stopped_at: list[int] = field(default_factory=list)  # the step after each model's last


def sample_generators(seeds: Sequence[int], model_index: int) -> list[torch.Generator]:
    """One CPU generator per sample for model ``model_index``. Model 0 uses the seed itself
    (so a one-model run matches a plain loop seeded per sample); model i > 0 a stream derived
    from (seed, i), independent of model 0's."""
    gens = []
    for s in seeds:
        seed = int(s) if model_index == 0 else int(np.random.SeedSequence([int(s), model_index]).generate_state(1)[0])
        gens.append(torch.Generator().manual_seed(seed))
    return gens


def _draw(gens: list[torch.Generator], shape: tuple[int, ...], dtype, device) -> torch.Tensor:
    """``(B, *shape)`` standard normals, sample b from generator b (float32 draws, cast)."""
    return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device=device, dtype=dtype)


def _matches(names_filter, name: str) -> bool:
    if names_filter is None:
        return True
    if callable(names_filter):
        return bool(names_filter(name))
    if isinstance(names_filter, str):
        return fnmatch.fnmatchcase(name, names_filter)
    return any(fnmatch.fnmatchcase(name, p) for p in names_filter)


class AMDMSampler:
    """Algorithm 1 for N >= 1 models, each with its condition.

    ``models`` satisfy ``amdm_geom.denoisers.base.Denoiser``; ``conds[i]`` is model i's
    condition y_i. Every setting is checked before any work, with a one-line error.
    """

    def __init__(self, models: Sequence[Denoiser], conds: Sequence, config: SamplerConfig | None = None):
        self.models = list(models)
        self.conds = list(conds)
        self.config = config or SamplerConfig()
        self._check()
        cfg = self.config
        self.etas = self._per_model_eta()
        self.schedulers = [stepper(m.scheduler, cfg.num_inference_steps) for m in self.models]
        self.coefficients = [ddim_coefficients(m.scheduler, cfg.num_inference_steps, cfg.ddim_eta)
                             for m in self.models]
        self.timesteps = [int(t) for t in self.coefficients[0]["t"].values]
        for i, c in enumerate(self.coefficients[1:], start=1):
            if [int(t) for t in c["t"].values] != self.timesteps:
                raise ValueError(f"model {i}'s timestep grid differs from model 0's; models must share "
                                 "num_train_timesteps, timestep_spacing and steps_offset")
        self._hooks: list[tuple[object, Callable]] = []
        self._recorders: list = []

    # -- validation -------------------------------------------------------------------------------

    def _check(self) -> None:
        cfg, n = self.config, len(self.models)
        if n < 1:
            raise ValueError("AMDMSampler needs at least 1 model; got 0")
        if len(self.conds) != n:
            raise ValueError(f"need one condition per model: {n} models, got {len(self.conds)} conditions")
        shapes = [tuple(m.latent_shape) for m in self.models]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"models must share one latent shape; got {shapes}")
        dtypes = [m.dtype for m in self.models]
        if any(d != dtypes[0] for d in dtypes):
            raise ValueError(f"models must share one dtype; got {[str(d) for d in dtypes]}")
        cfg.check(n)
        for i, m in enumerate(self.models):
            n_train = m.scheduler.config.get("num_train_timesteps")
            if n_train is not None and cfg.num_inference_steps > int(n_train):
                raise ValueError(f"num_inference_steps must be <= {n_train}, model {i}'s number of training "
                                 f"timesteps; got {cfg.num_inference_steps}")
        if not cfg.allow_schedule_mismatch:
            for i, m in enumerate(self.models[1:], start=1):
                if not same_schedule(self.models[0].scheduler, m.scheduler):
                    raise ValueError(
                        f"model {i}'s noise schedule differs from model 0's (a different SDE, another "
                        "ecosystem); pass --insist (allow_schedule_mismatch=True) to aggregate them anyway")
            if all(hasattr(m, "ecosystem") for m in self.models):  # pipelines: VAE and latent space too
                from .ecosystem import compare

                first = self.models[0].ecosystem()
                for i, m in enumerate(self.models[1:], start=1):
                    bad = [k for k, v in compare(first, m.ecosystem()).items() if v["same"] is False]
                    if bad:
                        raise ValueError(f"model {i} is in a different ecosystem from model 0 ({', '.join(bad)} "
                                         "differ); pass --insist (allow_schedule_mismatch=True) to aggregate them anyway")

    def _per_model_eta(self) -> list[float]:
        n, eta = len(self.models), self.config.eta  # (checked by SamplerConfig.check)
        etas = list(eta) if _is_sequence(eta) else [eta] * n
        return [float(e) for e in etas]

    # -- hooks ------------------------------------------------------------------------------------

    @contextmanager
    def hooks(self, fn: Callable[[str, int, torch.Tensor], None], names_filter=None):
        """Call ``fn(name, step, value)`` for every emitted hook whose name passes the filter,
        for the runs inside the ``with`` block; the hook is removed on exit. ``value`` is
        ``(B, *latent_shape)``; the sampler never modifies an emitted tensor afterwards, so a hook
        may keep it without copying (and must not modify it)."""
        entry = (names_filter, fn)
        self._hooks.append(entry)
        try:
            yield
        finally:
            self._hooks.remove(entry)

    @contextmanager
    def recording(self, recorder):
        """Attach a recorder (``ZarrRecorder`` or ``MemoryRecorder``) for the runs inside the
        ``with`` block: it lays out the run at its start and is closed at its end, also when
        the run fails (then its store says ``complete = false``)."""
        self._recorders.append(recorder)
        try:
            with self.hooks(recorder.record, recorder.names_filter):
                yield recorder
        finally:
            self._recorders.remove(recorder)

    def _emit(self, name: str, step: int, value: torch.Tensor) -> None:
        for names_filter, fn in self._hooks:
            if _matches(names_filter, name):
                fn(name, step, value)

    # -- running ----------------------------------------------------------------------------------

    def run_with_cache(self, seeds: Sequence[int], names_filter=None, **kwargs):
        """Run once and return ``(output, cache)``, the cache an in-memory ``xarray.Dataset``
        with the trace store's schema (TransformerLens' ``run_with_cache``)."""
        recorder = MemoryRecorder(names_filter)
        with self.recording(recorder):
            out = self.sample(seeds, **kwargs)
        return out, recorder.dataset()

    def plan(self, seeds: Sequence[int], names_filter=None) -> RunPlan:
        """The layout a recorder gets: the hook names this run emits that pass the filter."""
        n, (start, stop) = len(self.models), self.config.window
        aggregated = np.array([start <= k < stop and n > 1 for k in range(self.config.num_inference_steps)])
        names = planned_hook_names(n, self.config, names_filter)
        return RunPlan(names=names, n_models=n, seeds=[int(s) for s in seeds],
                       latent_shape=tuple(self.models[0].latent_shape), dtype=self.models[0].dtype,
                       coefficients=self.coefficients, aggregated=aggregated, config=self.describe())

    def describe(self) -> dict:
        """The full config, the models and conditions, as JSON-able data (stored in the run)."""
        return {"sampler": asdict(self.config), "etas": self.etas,
                "models": [m.describe() for m in self.models],
                "conditions": [_describe_condition(c) for c in self.conds]}

    def sample(self, seeds: Sequence[int], *, progress: bool = False) -> SampleOutput:
        """Run Algorithm 1 for one sample per seed (ints in [0, 2**63)); returns a ``SampleOutput``."""
        seeds = [_as_seed(s) for s in seeds]
        if not seeds:
            raise ValueError("need at least one seed (one sample per seed)")
        recorders = list(self._recorders)
        for rec in recorders:
            rec.begin(self.plan(seeds, rec.names_filter))
        complete = False
        try:
            out = self._run(seeds, recorders, progress)
            complete = True
            return out
        finally:
            for rec in recorders:
                rec.end(complete)

    def _run(self, seeds: list[int], recorders, progress: bool) -> SampleOutput:
        cfg, models, n = self.config, self.models, len(self.models)
        shape, dtype, device = tuple(models[0].latent_shape), models[0].dtype, models[0].device
        start, stop = cfg.window
        hooked = bool(self._hooks)
        for m in models:  # e.g. GLIGEN's scheduled sampling counts steps
            if hasattr(m, "prepare"):
                m.prepare(self.timesteps)
        gens = [sample_generators(seeds, i) for i in range(n)]
        # z_T per model, (B, *latent_shape), at its schedule's prior scale (1 for VP)
        z = [_draw(g, shape, dtype, device) * sched.init_noise_sigma for g, sched in zip(gens, self.schedulers)]
        if cfg.shared_init:
            z = [z[0].clone() for _ in range(n)]
        names = [{q: f"model{i}.{q}" for q in ("z", "eps", "x0", "mu", "noise", "z_next", "mu_shift", "z_shift")}
                 for i in range(n)]
        last = cfg.num_inference_steps if cfg.continue_after_window else stop
        calls, stopped_at = 0, [cfg.num_inference_steps] + [last] * (n - 1)
        steps = range(cfg.num_inference_steps)
        for k in tqdm(steps, desc="AMDM", disable=not progress, leave=False):
            t = self.timesteps[k]
            running = range(n) if k < last else range(1)
            mu, eps, z_next = {}, {}, {}
            for i in running:
                sched = self.schedulers[i]
                eps[i] = models[i](z[i], t, self.conds[i])
                calls += 1
                mean = sched.step(eps[i], t, z[i], eta=cfg.ddim_eta, variance_noise=torch.zeros_like(z[i]))
                mu[i] = mean.prev_sample
                if cfg.ddim_eta > 0:  # as diffusers: noise is drawn and added whenever eta > 0
                    xi = _draw(gens[i], shape, dtype, device)
                    z_next[i] = sched.step(eps[i], t, z[i], eta=cfg.ddim_eta, variance_noise=xi).prev_sample
                else:
                    z_next[i] = mu[i]
                if hooked:
                    self._emit(names[i]["z"], k, z[i])
                    self._emit(names[i]["eps"], k, eps[i])
                    self._emit(names[i]["x0"], k, mean.pred_original_sample)
                    self._emit(names[i]["mu"], k, mu[i])
                    self._emit(names[i]["noise"], k, z_next[i] - mu[i])
                    self._emit(names[i]["z_next"], k, z_next[i])
            if hooked and cfg.record_cross_eps:
                for i in running:
                    if i == 0:
                        continue
                    self._emit(f"model{i}.eps_cross", k, models[0](z[0], t, self.conds[i]))
                    self._emit(f"model{i}.eps_at_z1", k, models[i](z[0], t, self.conds[i]))
                    calls += 2
            if start <= k < stop and n > 1:
                z_agg = self._mix([z_next[i] for i in range(n)])
                if hooked:
                    self._emit("agg.z", k, z_agg)
                for i in range(n):
                    if cfg.shift_mean == "aggregate":  # eq. (7) as printed: mu_i(z', t, y_i)
                        eps_agg = models[i](z_agg, t, self.conds[i])
                        calls += 1
                        mu_shift = self.schedulers[i].step(eps_agg, t, z_agg, eta=cfg.ddim_eta,
                                                           variance_noise=torch.zeros_like(z_agg)).prev_sample
                    else:  # Algorithm 1: mu_i(z_t^i, t, y_i), already computed
                        mu_shift = mu[i]
                    z[i] = geometry.radial_shift(z_agg, mu_shift, self.etas[i])
                    if hooked:
                        self._emit(names[i]["mu_shift"], k, mu_shift)
                        self._emit(names[i]["z_shift"], k, z[i])
            else:
                for i in running:
                    z[i] = z_next[i]
            for rec in recorders:
                rec.end_step(k)
        return SampleOutput(z0=z[0], finals=z, model_calls=calls, seeds=seeds, config=cfg, stopped_at=stopped_at)

    def _mix(self, zs: list[torch.Tensor]) -> torch.Tensor:
        ws = list(self.config.weights)
        if self.config.mix == "slerp":
            return geometry.slerp_chain(zs, ws)
        if self.config.mix == "lerp":
            return geometry.lerp_chain(zs, ws)
        return geometry.orthogonal_mix(zs, ws)


def _describe_condition(cond) -> dict | list | str:
    if hasattr(cond, "describe"):  # e.g. a pipeline's SDCondition: prompt, extras
        return cond.describe()
    if isinstance(cond, torch.Tensor):
        values = cond.detach().to("cpu", torch.float64)
        if values.numel() <= 64:
            return values.tolist()
        import hashlib

        return {"shape": list(values.shape), "sha1": hashlib.sha1(values.numpy().tobytes()).hexdigest(),
                "norm": float(values.norm())}
    return repr(cond)

"""AMDM, Algorithm 1 of the current version, for N models, with named hook points.

Per step k (timestep t -> t_prev), every running model i:

    out_i    = model_i(z_t^i, t, y_i)                       # guided output: eps, v or x0
    mu_i     = A_t z_t^i + B_t eps_i                         # eq. (4), the reverse-step mean, with
                                                             # eps_i the step's epsilon (step_epsilon)
    z_next_i = mu_i + sigma_t xi_i                           # xi_i from model i's own generators

and, inside the aggregation window [start, stop) (default the first s steps):

    z'       = Slerp(z_next_1, ..., z_next_N; w_1, ..., w_{N-1})     # eq. (6), successive pairwise
    z_t-1^i  = z' - eta_i (z' - mu_i) / |z' - mu_i|                  # eq. (7), the radial shift

Outside the window every running model keeps its own ``z_next``. Models 2..N run from step 0
until the window closes (independent trajectories before a late window), then model 1 goes on
alone ("direct sampling from p_theta1"). With one model, or an empty window, this is a plain
DDIM loop, and reproduces diffusers' ``DDIMScheduler.step`` bit for bit, for any prediction
type, clipped or not: the state update *is* diffusers' step on the model's output, in the
model's dtype; ``model{i}.eps`` records the epsilon for which eq. (4) holds
(``schedules.step_epsilon``: the output itself for an epsilon model without clipping).
Aggregation and the shift are computed in float64 by ``amdm_geom.core.geometry`` and returned in the
model's dtype. A rectified-flow model (App. G) is stepped the same way by diffusers'
``FlowMatchEulerDiscreteScheduler`` (``steppers.FlowStep``: its own instance per model): out is
its velocity v, mu the step's deterministic location z + dt v (the part DDIM's mean plays in
eq. 7), and a one-model run is diffusers' flow-matching loop bit for bit.

Options (``SamplerConfig``): the mixing rule (slerp, lerp, the earlier version's
orthogonal_mix), which mean the shift uses (``mu_i`` at ``z_t^i`` as in Algorithm 1, or
``mu_i`` evaluated at ``z'`` as eq. 7 prints it, one more model call), DDIM's eta (sigma_t),
independent or shared ``z_T``, and one random generator per (model, sample), so a sample's
random draws are bit for bit independent of its batch mates (its arithmetic differs between
batch sizes by float rounding only: batched matrix products block by batch size). ``sample(seeds,
chunk_size=c)`` runs the samples c at a time, each chunk the whole trajectory, into one output
and one record.

Hook points: each quantity above is emitted as ``model{i}.<q>`` or ``agg.z`` (``hooks``). The
aggregation itself is ``step.aggregate_step``, shared with the 2D benchmark.
Attach a recorder with ``sampler.recording(recorder)`` (a context manager; the hook is removed
on exit) or call ``run_with_cache``; with nothing attached an emit is one ``if``.
"""


from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from amdm_geom.models.base import Denoiser
from amdm_geom.sampling.checks import check_models
from amdm_geom.sampling.config import SamplerConfig, planned_hook_names
from amdm_geom.sampling.hooks import matches
from amdm_geom.sampling.plan import RunPlan
from amdm_geom.sampling.recording import MemoryRecorder
from amdm_geom.sampling.rng import as_seed, draw, sample_generators
from amdm_geom.sampling.step import AggregateStep, aggregate_step
from amdm_geom.sampling.steppers import make_step

__all__ = ["CHUNK_BYTES", "AMDMSampler", "SampleOutput", "as_config", "describe_condition"]

#: The largest float64 temporary one chunk of an aggregation step makes (``AMDMSampler._aggregate``).
CHUNK_BYTES = 4 << 20


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


def as_config(config) -> SamplerConfig:
    """``config`` as a ``SamplerConfig``: one as it is, a mapping of its fields (by name or
    option alias) checked into one (``SpecError`` naming a bad field), None as the defaults; a
    one-line ``TypeError`` naming any other type."""
    if config is None:
        return SamplerConfig()
    if isinstance(config, SamplerConfig):
        return config
    if isinstance(config, Mapping):
        return SamplerConfig.model_validate(dict(config))
    kind = type(config)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    shown = repr(config)
    shown = shown if len(shown) <= 60 and "\n" not in shown else shown[:57].split("\n")[0] + "..."
    raise TypeError(f"config must be a SamplerConfig, a dict of its fields (e.g. {{'steps': 50}}) or None; "
                    f"got {name} {shown}")


class AMDMSampler:
    """Algorithm 1 for N >= 1 models, each with its condition.

    ``models`` satisfy ``amdm_geom.models.base.Denoiser``; ``conds[i]`` is model i's
    condition y_i; ``config`` is a ``SamplerConfig``, a dict of its fields (``{"steps": 3}``,
    checked into one) or None (the paper's defaults). Every setting is checked before any work,
    with a one-line error.
    """

    def __init__(self, models: Sequence[Denoiser], conds: Sequence,
                 config: SamplerConfig | Mapping[str, object] | None = None):
        self.models = list(models)
        self.conds = list(conds)
        self.config = as_config(config)
        self.cross_modes = check_models(self.models, self.conds, self.config)
        cfg = self.config = self.config.for_models(len(self.models))  # a one-model run: no weight
        self.etas = cfg.etas(len(self.models))  # (checked by SamplerConfig.check)
        # one step per model (DDIM, or a flow's Euler step with its own scheduler instance)
        self.steps = [make_step(m, cfg.num_inference_steps, ddim_eta=cfg.ddim_eta, flow_stochastic=cfg.flow_stochastic,
                                who=f"model {i}") for i, m in enumerate(self.models)]
        self.coefficients = [st.coefficients for st in self.steps]
        self.timesteps = self.steps[0].timesteps
        grid = [float(t) for t in self.timesteps]
        for i, st in enumerate(self.steps[1:], start=1):  # with --insist, each model steps its own grid, by index
            if not cfg.allow_schedule_mismatch and [float(t) for t in st.timesteps] != grid:
                raise ValueError(f"model {i}'s timestep grid differs from model 0's; models must share "
                                 "num_train_timesteps, timestep_spacing and steps_offset (or the flow's shift); "
                                 "pass --insist to step each on its own grid")
        self._hooks: list[tuple[object, Callable]] = []
        self._recorders: list = []
        self._offset = 0
        self._nulls: dict[int, object] = {}
        self._out: dict[int, torch.Tensor] = {}  # each model's output at the current step

    # -- hooks ------------------------------------------------------------------------------------

    @contextmanager
    def hooks(self, fn: Callable[[str, int, torch.Tensor], None], names_filter=None):
        """Call ``fn(name, step, value)`` for every emitted hook whose name passes the filter,
        for the runs inside the ``with`` block; the hook is removed on exit. ``value`` is
        ``(B, *latent_shape)``, or in a run in chunks one chunk's ``(b, *latent_shape)`` (its first
        sample is sample ``chunk_offset`` of the run); the sampler never modifies an emitted tensor
        afterwards, so a hook may keep it without copying (and must not modify it)."""
        entry = (names_filter, fn)
        self._hooks.append(entry)
        try:
            yield
        finally:
            self._hooks.remove(entry)

    @property
    def chunk_offset(self) -> int:
        """The index in the run of the first sample of the chunk running now (0 when unchunked)."""
        return self._offset

    @contextmanager
    def recording(self, recorder):
        """Attach a recorder (``ZarrRecorder`` or ``MemoryRecorder``) for the runs inside the
        ``with`` block: it lays out the run at its start, receives each chunk's values at their
        offset, and is closed at its end, also when the run fails (then its store says
        ``complete = false``)."""
        self._recorders.append(recorder)
        try:
            with self.hooks(lambda name, step, value: recorder.record(name, step, value, self._offset),
                            recorder.names_filter):
                yield recorder
        finally:
            self._recorders.remove(recorder)

    def _emit(self, name: str, step: int, value: torch.Tensor) -> None:
        for names_filter, fn in self._hooks:
            if matches(names_filter, name):
                fn(name, step, value)

    # -- running ----------------------------------------------------------------------------------

    def run_with_cache(self, seeds: Sequence[int], names_filter=None, **kwargs):
        """Run once and return ``(output, cache)``, the cache an in-memory ``xarray.Dataset``
        with the trace store's schema (TransformerLens' ``run_with_cache``)."""
        recorder = MemoryRecorder(names_filter)
        with self.recording(recorder):
            out = self.sample(seeds, **kwargs)
        return out, recorder.dataset()

    def plan(self, seeds: Sequence[int], names_filter=None, chunk_size: int | None = None) -> RunPlan:
        """The layout a recorder gets: the hook names this run emits that pass the filter, and the
        samples per chunk when it runs in chunks."""
        n, (start, stop) = len(self.models), self.config.window
        aggregated = np.array([start <= k < stop and n > 1 for k in range(self.config.num_inference_steps)])
        names = planned_hook_names(n, self.config, names_filter, tuple(st.kind for st in self.steps))
        chunk = None if chunk_size is None or chunk_size >= len(seeds) else int(chunk_size)
        return RunPlan(names=names, n_models=n, seeds=[int(s) for s in seeds],
                       latent_shape=tuple(self.models[0].latent_shape), dtype=self.models[0].dtype,
                       coefficients=self.coefficients, aggregated=aggregated, config=self.config, built=self.built(),
                       chunk_size=chunk)

    def built(self) -> dict:
        """The models and conditions, as JSON-able data (a store's ``attrs["built"]``):
        ``models`` (each model's ``describe()``), ``conditions``, and ``cross_terms``, which with
        ``record_cross_eps`` says per model how its cross terms were evaluated (``"conditional"`` at
        y_i, ``"unconditional"`` at the null conditions; ``None`` for model 0)."""
        cross = [None] + [self.cross_modes[i] for i in range(1, len(self.models))] if self.cross_modes else None
        return {"models": [m.describe() for m in self.models],
                "conditions": [describe_condition(c) for c in self.conds], "cross_terms": cross}

    def describe(self) -> dict:
        """The full config, the per-model etas, the models and conditions, as JSON-able data
        (``built()`` with the settings; a store keeps the settings in its spec)."""
        return {"sampler": self.config.model_dump(), "etas": self.etas, **self.built()}

    def sample(self, seeds: Sequence[int], *, progress: bool = False, chunk_size: int | None = None) -> SampleOutput:
        """Run Algorithm 1 for one sample per seed (ints in [0, 2**63)); returns a ``SampleOutput``.

        ``chunk_size``: run ``chunk_size`` samples at a time (default all), each chunk the whole
        trajectory; outputs are joined, recorders get each chunk at its offset and count a step
        as done only once the last chunk has done it. Per sample, the random draws are the same
        bit for bit, the rest to float rounding (batch sizes differ); ``model_calls`` adds up
        every chunk's calls."""
        seeds = [as_seed(s) for s in seeds]
        if not seeds:
            raise ValueError("need at least one seed (one sample per seed)")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
                                       or chunk_size < 1):
            raise ValueError(f"chunk_size must be an int >= 1 or None; got {chunk_size!r}")
        size = len(seeds) if chunk_size is None else min(int(chunk_size), len(seeds))
        recorders = list(self._recorders)
        for rec in recorders:
            rec.begin(self.plan(seeds, rec.names_filter, size))
        complete = False
        try:
            parts = [self._run(seeds[j:j + size], j, recorders if j + size >= len(seeds) else [], progress)
                     for j in range(0, len(seeds), size)]
            out = parts[0] if len(parts) == 1 else _joined(parts, seeds)
            complete = True
            return out
        finally:
            self._offset = 0
            for rec in recorders:
                rec.end(complete)

    def _run(self, seeds: list[int], offset: int, recorders, progress: bool) -> SampleOutput:
        """One chunk's whole trajectory (samples ``offset ..`` of the run); ``recorders`` get
        ``end_step`` (only for the run's last chunk)."""
        cfg, models, n = self.config, self.models, len(self.models)
        shape, dtype, device = tuple(models[0].latent_shape), models[0].dtype, models[0].device
        start, stop = cfg.window
        self._offset = offset
        for m, step in zip(models, self.steps):  # e.g. GLIGEN's scheduled sampling counts steps
            if hasattr(m, "prepare"):
                m.prepare(step.timesteps)
        gens = [sample_generators(seeds, i) for i in range(n)]
        # z_T per model, (B, *latent_shape), at its schedule's prior scale (1 for VP)
        z = [draw(g, shape, dtype, device) * step.init_noise_sigma for g, step in zip(gens, self.steps)]
        if cfg.shared_init:
            z = [z[0].clone() for _ in range(n)]
        last = cfg.num_inference_steps if cfg.continue_after_window else stop
        calls, stopped_at = 0, [cfg.num_inference_steps] + [last] * (n - 1)
        for k in tqdm(range(cfg.num_inference_steps), desc="AMDM", disable=not progress, leave=False):
            running = range(n) if k < last else range(1)
            mu, z_next = {}, {}
            for i in running:
                mu[i], z_next[i] = self._model_step(i, k, z[i], gens[i])
                calls += 1
            if self._hooks and cfg.record_cross_eps:
                calls += self._cross_eps(k, z[0], running)
            if start <= k < stop and n > 1:
                z, shift_calls = self._aggregate_step(k, z_next, mu)
                calls += shift_calls
            else:
                for i in running:
                    z[i] = z_next[i]
            for rec in recorders:
                rec.end_step(k)
        return SampleOutput(z0=z[0], finals=z, model_calls=calls, seeds=seeds, config=cfg, stopped_at=stopped_at)

    def _model_step(self, i: int, k: int, z: torch.Tensor, gens) -> tuple[torch.Tensor, torch.Tensor]:
        """Model i's step k from ``z (B, *latent_shape)`` (``steppers``: diffusers' DDIM step, or
        its flow-matching Euler step): mu (the step's location, no noise) and z_next = mu + sigma_t xi
        (eq. 4); the hooks get z, eps (the step's epsilon) or v (a flow's velocity), out, x0, mu,
        noise and z_next. ``self._out[i]`` keeps the output (the velocity target of eq. 46)."""
        step = self.steps[i]
        out = self.models[i](z, step.timesteps[k], self.conds[i])
        res = step.step(out, k, z, gens)
        self._out[i] = out
        if self._hooks:
            site = f"model{i}."
            self._emit(site + "z", k, z)
            self._emit(site + step.input_name, k, res.inp)
            if self.config.record_output:
                self._emit(site + "out", k, out)
            self._emit(site + "x0", k, res.x0)
            self._emit(site + "mu", k, res.mu)
            self._emit(site + "noise", k, res.z_next - res.mu)
            self._emit(site + "z_next", k, res.z_next)
        return res.mu, res.z_next

    def _cross_eps(self, k: int, z1: torch.Tensor, running) -> int:
        """The cross terms at model 1's ``z1 = z_t^1`` (eqs. 20-22), as step epsilons: for each
        partner i, eps_theta1(z1, t, y) and eps_thetai(z1, t, y'), with y = y' = y_i when the two
        take one kind of condition, else each model's null condition. Returns the model calls."""
        calls, first = 0, self.steps[0]
        for i in running:
            if i == 0:
                continue
            if self.cross_modes[i] == "conditional":
                y1 = yi = self.conds[i]
            else:
                y1, yi = self._null(0), self._null(i)
            step = self.steps[i]
            out1, outi = self.models[0](z1, first.timesteps[k], y1), self.models[i](z1, step.timesteps[k], yi)
            self._emit(f"model{i}.{first.input_name}_cross", k, first.step_input(out1, k, z1))
            self._emit(f"model{i}.{step.input_name}_at_z1", k, step.step_input(outi, k, z1))
            calls += 2
        return calls

    def _null(self, i: int):
        """Model i's null condition (made once per sampler: a pipeline encodes the empty prompt)."""
        if i not in self._nulls:
            self._nulls[i] = self.models[i].null_condition()
        return self._nulls[i]

    def _aggregate_step(self, k: int, z_next: dict, mu: dict) -> tuple[list[torch.Tensor], int]:
        """Eq. (6) then eq. (7) at step k: the next z of every model, and the model calls the
        shift's means made (eq. 7 as printed evaluates each model at z')."""
        cfg, n, calls = self.config, len(self.models), 0
        if cfg.shift_mean == "velocity":  # App. G's "set mu = v", as printed: the velocity itself
            mu = dict(self._out)

        def mean_at(i, z_agg):
            nonlocal calls
            if cfg.shift_mean in ("step", "velocity"):  # Algorithm 1: mu_i(z_t^i, t, y_i), already computed
                return mu[i]
            calls += 1  # eq. (7) as printed: mu_i(z', t, y_i), one more call
            step = self.steps[i]
            return step.location(self.models[i](z_agg, step.timesteps[k], self.conds[i]), k, z_agg)

        agg = self._aggregate([z_next[i] for i in range(n)], [mu[i] for i in range(n)], mean_at)
        z = list(agg.z_shift)
        if self._hooks:
            self._emit("agg.z", k, agg.z_agg)
            for i in range(n):
                self._emit(f"model{i}.mu_shift", k, agg.mu_shift[i])
                self._emit(f"model{i}.z_shift", k, z[i])
        return z, calls

    def _aggregate(self, z_next: list[torch.Tensor], mu: list[torch.Tensor], mean_at) -> AggregateStep:
        """``aggregate_step`` over chunks of rows of at most ``CHUNK_BYTES`` of float64 each (large
        float64 temporaries cost a fresh mapping and its page faults per allocation). The geometry
        is per sample, so chunks agree with the whole batch to rounding (per-row reductions may
        block differently by batch size, as matrix products do). With Algorithm 1's means (``mu``); the
        means at z' (eq. 7 as printed) call the models, so that runs on the whole batch. An error
        in a chunk is raised again from the whole batch, so that it names the sample's index."""
        cfg, batch = self.config, z_next[0].shape[0]
        rows = max(1, CHUNK_BYTES // (8 * max(1, z_next[0][0].numel())))
        if cfg.shift_mean != "step" or rows >= batch:
            return aggregate_step(z_next, cfg.weights, self.etas, mean_at, cfg.mix)
        try:
            parts = [aggregate_step([z[j:j + rows] for z in z_next], cfg.weights, self.etas,
                                    [m[j:j + rows] for m in mu], cfg.mix) for j in range(0, batch, rows)]
        except (ValueError, OverflowError):
            return aggregate_step(z_next, cfg.weights, self.etas, mean_at, cfg.mix)
        return AggregateStep(z_agg=torch.cat([p.z_agg for p in parts]), mu_shift=list(mu),
                             z_shift=[torch.cat([p.z_shift[i] for p in parts]) for i in range(len(mu))])


def _joined(parts: list[SampleOutput], seeds: list[int]) -> SampleOutput:
    """The chunks' outputs as one run's: latents joined along the batch, model calls added."""
    finals = [torch.cat([p.finals[i] for p in parts]) for i in range(len(parts[0].finals))]
    return SampleOutput(z0=finals[0], finals=finals, model_calls=sum(p.model_calls for p in parts), seeds=seeds,
                        config=parts[0].config, stopped_at=parts[0].stopped_at)


def describe_condition(cond) -> dict | list | str:
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

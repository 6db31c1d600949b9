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

Hook points: each quantity above is emitted as ``model{i}.<q>`` or ``agg.z`` (``hooks``). The
aggregation itself is ``step.aggregate_step``, shared with the 2D benchmark.
Attach a recorder with ``sampler.recording(recorder)`` (a context manager; the hook is removed
on exit) or call ``run_with_cache``; with nothing attached an emit is one ``if``.
"""


from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from ..denoisers.base import Denoiser, same_schedule
from ..schedules import ddim_coefficients, stepper
from .config import SamplerConfig, is_sequence
from .hooks import matches, planned_hook_names
from .plan import RunPlan
from .recording import MemoryRecorder
from .rng import as_seed, draw, sample_generators
from .step import AggregateStep, aggregate_step

__all__ = ["CHUNK_BYTES", "AMDMSampler", "SampleOutput", "describe_condition"]

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
                from ..ecosystem import compare

                first = self.models[0].ecosystem()
                for i, m in enumerate(self.models[1:], start=1):
                    bad = [k for k, v in compare(first, m.ecosystem()).items() if v["same"] is False]
                    if bad:
                        raise ValueError(f"model {i} is in a different ecosystem from model 0 ({', '.join(bad)} "
                                         "differ); pass --insist (allow_schedule_mismatch=True) to aggregate them "
                                         "anyway")

    def _per_model_eta(self) -> list[float]:
        n, eta = len(self.models), self.config.eta  # (checked by SamplerConfig.check)
        etas = list(eta) if is_sequence(eta) else [eta] * n
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
        return {"sampler": self.config.model_dump(), "etas": self.etas,
                "models": [m.describe() for m in self.models],
                "conditions": [describe_condition(c) for c in self.conds]}

    def sample(self, seeds: Sequence[int], *, progress: bool = False) -> SampleOutput:
        """Run Algorithm 1 for one sample per seed (ints in [0, 2**63)); returns a ``SampleOutput``."""
        seeds = [as_seed(s) for s in seeds]
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
        z = [draw(g, shape, dtype, device) * sched.init_noise_sigma for g, sched in zip(gens, self.schedulers)]
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
                    xi = draw(gens[i], shape, dtype, device)
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
                def mean_at(i, z_agg, k=k, t=t):
                    nonlocal calls
                    if cfg.shift_mean == "step":  # Algorithm 1: mu_i(z_t^i, t, y_i), already computed
                        return mu[i]
                    calls += 1  # eq. (7) as printed: mu_i(z', t, y_i), one more call
                    eps_agg = models[i](z_agg, t, self.conds[i])
                    return self.schedulers[i].step(eps_agg, t, z_agg, eta=cfg.ddim_eta,
                                                   variance_noise=torch.zeros_like(z_agg)).prev_sample

                agg = self._aggregate([z_next[i] for i in range(n)], [mu[i] for i in range(n)], mean_at)
                z = list(agg.z_shift)
                if hooked:
                    self._emit("agg.z", k, agg.z_agg)
                    for i in range(n):
                        self._emit(names[i]["mu_shift"], k, agg.mu_shift[i])
                        self._emit(names[i]["z_shift"], k, z[i])
            else:
                for i in running:
                    z[i] = z_next[i]
            for rec in recorders:
                rec.end_step(k)
        return SampleOutput(z0=z[0], finals=z, model_calls=calls, seeds=seeds, config=cfg, stopped_at=stopped_at)

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

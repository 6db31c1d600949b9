"""What the peer samplers share: their output record, the checks of their inputs, the model
output converted to epsilon, the epsilon-prediction copy of the shared scheduler, and the DDPM
noise level of a step.

Every peer runs N denoisers (``amdm_geom.models.base.Denoiser``) on ONE shared latent
``z_t (B, *latent_shape)``, so the models must share one noise schedule (the same
``alphas_cumprod`` and timestep grid, the same clipping of x0); their prediction types may
differ, since every output is converted to epsilon first (``schedules.predicted_epsilon``). Steps are diffusers'
``DDIMScheduler.step`` fed an epsilon, on a copy of the models' scheduler with
``prediction_type="epsilon"`` and everything else (betas, ``clip_sample``, spacing) kept, so x0 is
clipped exactly as the models' own sampler clips it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import DDIMScheduler

from amdm_geom.core.schedules import predicted_epsilon
from amdm_geom.models.guidance import uses_guidance
from amdm_geom.sampling.checks import check_inputs
from amdm_geom.sampling.rng import as_seed, draw, sample_generators

__all__ = ["PeerOutput", "PeerRun", "check_weights", "ddpm_sigma", "evaluations_per_call", "prepare"]

#: Config keys two models must agree on to share one latent trajectory (with ``alphas_cumprod``).
SHARED_KEYS = ("num_train_timesteps", "timestep_spacing", "steps_offset", "set_alpha_to_one", "clip_sample",
               "clip_sample_range", "thresholding", "rescale_betas_zero_snr")


@dataclass
class PeerOutput:
    """A peer sampler's result: ``z0 (B, *latent_shape)``, the model evaluations it spent per
    sample (a guided denoiser's call counts 2: its conditional and unconditional passes), and
    method-specific diagnostics in ``extra``."""

    z0: torch.Tensor
    model_calls_per_sample: int
    extra: dict = field(default_factory=dict)


@dataclass
class PeerRun:
    """The checked inputs of one run: the models and conditions, one seed per sample, the shared
    epsilon scheduler set to the run's steps, its timesteps ``t`` and the level each step lands on
    (``t_prev``; < 0 is the final step, onto ``final_alpha_cumprod``)."""

    models: list
    conds: list
    seeds: list[int]
    scheduler: DDIMScheduler
    timesteps: list[int]
    t_prev: list[int]
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    def generators(self, stream: int) -> list[torch.Generator]:
        """One generator per sample (``amdm_geom.sampling.rng``); stream 0 is the seed itself."""
        return sample_generators(self.seeds, stream)

    def draw(self, gens: list[torch.Generator]) -> torch.Tensor:
        """``(B, *latent_shape)`` standard normals, sample b from generator b."""
        return draw(gens, self.shape, self.dtype, self.device)

    def alpha_bar(self, t: int) -> torch.Tensor:
        """``abar_t`` as the scheduler holds it (a float32 scalar tensor); ``t < 0``: the final one."""
        s = self.scheduler
        return s.alphas_cumprod[t] if t >= 0 else s.final_alpha_cumprod

    def eps(self, i: int, z: torch.Tensor, t: int, cond) -> torch.Tensor:
        """Model i's output at ``(z, t, cond)`` converted to epsilon (``schedules.predicted_epsilon``:
        diffusers' formulas, the output itself for an epsilon model)."""
        model = self.models[i]
        return predicted_epsilon(model.scheduler, model(z, t, cond), t, z)[1]


def ddpm_sigma(run: PeerRun, t: int, t_prev: int) -> torch.Tensor:
    """The DDPM posterior std of the step ``t -> t_prev`` (DDIM eq. 16 at eta = 1), computed as
    diffusers' ``DDIMScheduler.step`` computes ``std_dev_t`` (float32, same operations), so that
    ``mu + sigma * xi`` equals its ``prev_sample`` bit for bit."""
    a_t, a_prev = run.alpha_bar(t), run.alpha_bar(t_prev)
    variance = ((1 - a_prev) / (1 - a_t)) * (1 - a_t / a_prev)
    return 1.0 * variance ** (0.5)


def evaluations_per_call(model) -> int:
    """2 for a denoiser that guides itself (``guidance_scale > 1``: a conditional and an
    unconditional pass per call), else 1."""
    return 2 if uses_guidance(float(getattr(model, "guidance_scale", 1.0))) else 1


def _check_schedules(models: list) -> None:
    first = models[0].scheduler
    for i, m in enumerate(models):
        cfg = dict(m.scheduler.config)
        if cfg.get("parametrization", "vp") != "vp" or not hasattr(m.scheduler, "alphas_cumprod"):
            raise ValueError(f"model {i}'s schedule is not a VP DDIM schedule; the peer samplers step with DDIM/DDPM")
        if i == 0:
            continue
        bad = [k for k in SHARED_KEYS if cfg.get(k) != first.config.get(k)]
        if not torch.equal(m.scheduler.alphas_cumprod, first.alphas_cumprod):
            bad.insert(0, "alphas_cumprod")
        if bad:
            raise ValueError(f"model {i}'s noise schedule differs from model 0's ({', '.join(bad)}); the peer "
                             "samplers need N models sharing one schedule")


def _check_steps(num_inference_steps, n_train: int) -> int:
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
            or not 1 <= num_inference_steps <= n_train:
        raise ValueError(f"num_inference_steps must be an int in [1, {n_train}]; got {num_inference_steps!r}")
    return int(num_inference_steps)


def prepare(models: Sequence, conds: Sequence, seeds: Sequence[int], num_inference_steps: int, *,
            method: str, min_models: int = 2) -> PeerRun:
    """Check a peer run's inputs (one-line errors naming the bad value) and set up its scheduler."""
    models, conds = list(models), list(conds)
    check_inputs(models, conds, method=method, min_models=min_models)
    _check_schedules(models)
    seeds = [as_seed(s) for s in seeds]
    if not seeds:
        raise ValueError("need at least one seed (one sample per seed)")
    config = {k: v for k, v in dict(models[0].scheduler.config).items() if k != "parametrization"}
    steps = _check_steps(num_inference_steps, int(config["num_train_timesteps"]))
    sched = DDIMScheduler.from_config({**config, "prediction_type": "epsilon"})
    sched.set_timesteps(steps)
    timesteps = [int(t) for t in sched.timesteps]
    stride = sched.config.num_train_timesteps // steps  # diffusers' prev_timestep
    return PeerRun(models, conds, seeds, sched, timesteps, [t - stride for t in timesteps],
                   tuple(models[0].latent_shape), models[0].dtype, models[0].device)


def check_weights(weights, n: int, name: str) -> list[float]:
    """One finite float for every model, or a sequence of N of them (one-line error otherwise)."""
    values = list(weights) if np.ndim(weights) >= 1 else [weights] * n
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        out = []
    if len(out) != n or any(isinstance(v, bool) for v in values) or not all(map(math.isfinite, out)):
        raise ValueError(f"{name} must be a finite number or a sequence of {n} of them; got {weights!r}")
    return out

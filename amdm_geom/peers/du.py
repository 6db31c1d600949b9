"""Du et al. 2023 ("Reduce, Reuse, Recycle", arXiv 2302.11552): the product of N experts sampled
by reverse diffusion with the summed score, corrected at every noise level by annealed unadjusted
Langevin (ULA) steps.

The product ``prod_i p^i_t`` has the score ``s = sum_i s_i``, ``s_i = -eps_i / sqrt(1 - abar_t)``
(their product composition: the sum of the experts' scores), so its epsilon is ``sum_i eps_i``.
Per step ``t -> t_prev``:

    z_prev = DDIMScheduler.step(sum_i eps_i(z_t | c_i), t, z_t, eta=1, noise=xi)   # the DDPM step
    K times, at level t_prev >= 0:  z <- z + a s(z) + sqrt(2 a) xi'                 # ULA on prod_i p^i_{t_prev}

(no ULA after the final step, whose level is below the models' grid). The ULA step size per
level is ``a = step_scale (1 - abar_{t_prev}) / N`` (Du et al. scale theirs with beta_t), or the
explicit ``step_sizes``. (1 - abar_t) / N is the smallest variance the product of N diffused
experts can have in any direction (Tweedie: ``-grad^2 log p_t = (I - abar Cov[x0 | z_t] /
(1 - abar)) / (1 - abar) <= I / (1 - abar)`` for each expert), so ``a L <= step_scale`` for the
product's stiffest curvature L: ULA is stable for ``step_scale < 2`` whatever the data, and
inflates the stationary variance of the stiffest directions by at most ``1 / (1 - step_scale / 2)``.
``xi`` and ``z_T`` come from the per-sample generators of stream 0 (the summed-score DDPM
sampler's draws, whatever K), ``xi'`` from stream 1. Cost: (1 + K) evaluations per model per step
(K fewer on the final step).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from amdm_geom.peers.common import PeerOutput, PeerRun, evaluations_per_call, prepare

__all__ = ["DEFAULT_STEP_SCALE", "du_ula"]

#: ULA's step size in units of (1 - abar_t) / N: it inflates the stationary variance of the stiffest
#: directions (pixel space off the data manifold) by at most 1.33x; a few ULA steps per level only
#: partly equilibrate the data directions: raise ``mcmc_steps`` (or this, below 2) for accuracy.
DEFAULT_STEP_SCALE = 0.5


def _summed_eps(run: PeerRun, z: torch.Tensor, t: int) -> torch.Tensor:
    eps = None
    for i, c in enumerate(run.conds):
        e = run.eps(i, z, t, c)
        eps = e if eps is None else eps + e
    return eps


def _step_sizes(run: PeerRun, step_scale, step_sizes) -> list[float]:
    """The ULA step size after every step (NaN after the final one, which gets no ULA)."""
    n = len(run.timesteps)
    if step_sizes is not None:
        try:
            sizes = [float(a) for a in step_sizes] if np.ndim(step_sizes) == 1 else []
        except (TypeError, ValueError):
            sizes = []
        if len(sizes) != n or not all(math.isfinite(a) and a > 0 for a in sizes):
            raise ValueError(f"step_sizes must be {n} finite numbers > 0, one per step; got {step_sizes!r}")
    else:
        if isinstance(step_scale, bool) or not (isinstance(step_scale, numbers.Real) and
                                                math.isfinite(step_scale) and step_scale > 0):
            raise ValueError(f"step_scale must be a finite number > 0; got {step_scale!r}")
        n_models = len(run.models)
        sizes = [step_scale * (1.0 - float(run.alpha_bar(tp))) / n_models for tp in run.t_prev]
    return [a if tp >= 0 else float("nan") for a, tp in zip(sizes, run.t_prev)]


def _ula(run: PeerRun, z: torch.Tensor, t: int, a: float, steps: int, gens) -> torch.Tensor:
    """``steps`` ULA steps on the product at level ``t``: ``z + a s(z) + sqrt(2 a) xi``."""
    scale = -1.0 / math.sqrt(1.0 - float(run.alpha_bar(t)))  # s = -sum_i eps_i / sqrt(1 - abar_t)
    for _ in range(steps):
        score = scale * _summed_eps(run, z, t)
        z = z + a * score + math.sqrt(2.0 * a) * run.draw(gens)
    return z


@torch.no_grad()
def du_ula(models: Sequence, conds: Sequence, seeds: Sequence[int], *, num_inference_steps: int,
           mcmc_steps: int = 5, step_scale: float = DEFAULT_STEP_SCALE, step_sizes: Sequence[float] | None = None,
           progress: bool = False) -> PeerOutput:
    """Du et al.'s product of ``models[i]`` under ``conds[i]`` (N >= 2, one shared schedule) by
    the summed-score DDPM sampler with ``mcmc_steps`` (K >= 0) ULA steps at every level; one
    sample per seed. ``step_scale``: the ULA step size per level in units of ``(1 - abar) / N``;
    ``step_sizes``: one size per step instead (the last unused). K = 0 is the plain summed-score
    sampler.

    Returns ``z0 (B, *latent_shape)`` and ``model_calls_per_sample = N (S + K (S - 1))`` for S
    steps (twice that for models that guide themselves); ``extra``: ``mcmc_steps`` and the
    ``step_sizes`` used (NaN after the final step).
    """
    run = prepare(models, conds, seeds, num_inference_steps, method="Du et al.'s annealed ULA")
    if isinstance(mcmc_steps, bool) or not isinstance(mcmc_steps, (int, np.integer)) or mcmc_steps < 0:
        raise ValueError(f"mcmc_steps must be an int >= 0; got {mcmc_steps!r}")
    sizes = _step_sizes(run, step_scale, step_sizes)
    gens, mcmc_gens = run.generators(0), run.generators(1)
    z = run.draw(gens) * run.scheduler.init_noise_sigma  # z_T (B, *latent_shape)
    levels = 0
    for k in tqdm(range(len(run.timesteps)), desc="Du ULA", disable=not progress, leave=False):
        t, t_prev = run.timesteps[k], run.t_prev[k]
        z = run.scheduler.step(_summed_eps(run, z, t), t, z, eta=1.0, variance_noise=run.draw(gens)).prev_sample
        if t_prev >= 0 and mcmc_steps > 0:
            z = _ula(run, z, t_prev, sizes[k], int(mcmc_steps), mcmc_gens)
            levels += 1
    per_eval = sum(evaluations_per_call(m) for m in run.models)
    calls = per_eval * (len(run.timesteps) + int(mcmc_steps) * levels)
    return PeerOutput(z0=z, model_calls_per_sample=calls, extra={"mcmc_steps": int(mcmc_steps), "step_sizes": sizes})

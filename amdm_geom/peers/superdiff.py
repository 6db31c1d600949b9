"""SUPERDIFF AND (Skreta et al. 2024, arXiv 2412.17762, "The Superposition of Diffusion Models
Using the Itô Density Estimator"): mix N models' reverse steps with weights kappa chosen at every
step so that the models' log-densities, tracked along the one trajectory, stay equal.

The sampler is stochastic, as their AND requires (their estimator needs no divergence, hence
no extra model call, only on the SDE; the deterministic variant needs one Jacobian-vector
product per model and step): the DDPM step (DDIM at eta = 1) on the models' schedule. Per step
``t -> t_prev`` with one noise draw ``n = sigma_t xi`` shared by all models:

    mu_i   = DDIMScheduler.step(eps_i(z_t | c_i), t, z_t, eta=1, noise=0)    # model i's reverse mean
    z_prev = sum_i kappa_i mu_i + n,        sum_i kappa_i = 1                # the superposed step

Density tracking (the discrete-time Itô density estimator; their Theorem 1 in continuous time):
along a DDPM step, by Bayes' rule (exact for the true reverse kernel),

    log q^i_{t_prev}(z_prev) - log q^i_t(z_t) = log p^i(z_prev | z_t) - log k_fwd(z_t | z_prev),

with the forward kernel ``k_fwd = N(sqrt(abar_t / abar_prev) z_prev, (1 - abar_t / abar_prev) I)``
and model i's reverse kernel ``p^i = N(mu_i, sigma_t^2 I)``. It is the estimator of their VP code,
and its model-dependent part reproduces their Euler-Maruyama update ``-|dsigma|/sigma |v_i|^2 -
<dx, v_i>/sigma`` exactly (v_i the model's output in VE time sigma).

AND (their kappa from one linear equation per step, the noise drawn before it is solved): equal
log-density increments for all i means ``|z_prev - mu_i|`` equal for all i, i.e. with
``d_j = mu_j - mu_0``: ``sum_{j>=1} kappa_j <d_j, d_i> = |d_i|^2 / 2 - <n, d_i>`` (i >= 1). For N = 2
this is ``kappa_1 = 1/2 - <n, d>/|d|^2``, which is their ``kappa`` (at guidance 1) term for term:
the mixed step lands at the midpoint of the two means plus the noise with its component along d
removed. kappa is not clipped (as theirs); where models agree (d = 0) the minimum-norm solution
about the uniform weights gives kappa_i = 1/N, i.e. the single model's DDPM sampler. Cost: one
evaluation per model per step (the conditional models only).

Guided AND (``guidance_scale`` s > 1), as the authors run it (necludov/super-diffusion,
``applications/images/clip_eval.py``, ``run``, method "and"): the models are unguided; one shared
unconditional pass ``eps_u`` (model ``null_model`` at its null condition: their one network) gives
each model's guided epsilon ``g_i = eps_u + s (eps_i - eps_u)``; the step moves along the guided
field, ``z_prev = sum_i kappa_i m_i + n`` with ``m_i`` the DDPM mean of ``g_i``, while kappa equalises
the log-density increments of the UNGUIDED models (their ``ll_obj``, ``ll_bg`` use the unguided
velocities), i.e. ``|z_prev - mu_i|`` equal for the unguided means ``mu_i``. With ``d_j = mu_j - mu_0``
and ``D_j = m_j - m_0``: ``sum_{j>=1} kappa_j <D_j, d_i> = |d_i|^2 / 2 - <n + m_0 - mu_0, d_i>`` (i >= 1);
for N = 2 without clipping (D = s d) this is their kappa term for term. Cost: N + 1 evaluations per
step (theirs: 3 for two prompts). At s = 1 it is the AND above (no unconditional pass). Models that
guide themselves (``guidance_scale`` attribute > 1) at ``guidance_scale=1`` here keep the older form
(each model's guided density equalised, 2 evaluations per model), which is not the authors'.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from amdm_geom.models.base import has_null_condition
from amdm_geom.models.guidance import guided, uses_guidance
from amdm_geom.peers.common import PeerOutput, PeerRun, ddpm_sigma, evaluations_per_call, prepare

__all__ = ["solve_kappa", "superdiff_and"]


def solve_kappa(means: Sequence[torch.Tensor], noise: torch.Tensor,
                guided_means: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """The AND weights ``kappa (B, N)`` (float64, rows summing to 1) such that
    ``sum_i kappa_i means[i] + noise`` is equidistant from every ``means[i] (B, *shape)``;
    the minimum-norm solution about ``1/N`` where the means are degenerate (e.g. equal).
    With ``guided_means`` (the guided AND): the step is ``sum_i kappa_i guided_means[i] + noise``
    and it is equidistant from the (unguided) ``means``."""
    if guided_means is not None:
        return _solve_guided(means, guided_means, noise)
    n, b = len(means), means[0].shape[0]
    m0 = means[0].reshape(b, -1).to(torch.float64)
    d = torch.stack([m.reshape(b, -1).to(torch.float64) - m0 for m in means[1:]], 1)  # (B, N-1, D)
    gram = d @ d.transpose(1, 2)  # (B, N-1, N-1)
    rhs = 0.5 * (d * d).sum(-1) - (d @ noise.reshape(b, -1, 1).to(torch.float64)).squeeze(-1)  # (B, N-1)
    u = torch.full((b, n - 1), 1.0 / n, dtype=torch.float64, device=d.device)
    resid = rhs - (gram @ u.unsqueeze(-1)).squeeze(-1)
    k = u + (torch.linalg.pinv(gram, hermitian=True) @ resid.unsqueeze(-1)).squeeze(-1)
    return torch.cat([1.0 - k.sum(1, keepdim=True), k], 1)


def _flat64(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).to(torch.float64)


def _solve_guided(means, guided_means, noise) -> torch.Tensor:
    """``sum_j kappa_j <D_j, d_i> = |d_i|^2 / 2 - <n + m_0 - mu_0, d_i>`` (i, j >= 1; module docstring),
    minimum-norm about 1/N (a general, not symmetric, system)."""
    n, b = len(means), means[0].shape[0]
    mu0, m0 = _flat64(means[0]), _flat64(guided_means[0])
    d = torch.stack([_flat64(m) - mu0 for m in means[1:]], 1)  # (B, N-1, D) unguided
    dd = torch.stack([_flat64(m) - m0 for m in guided_means[1:]], 1)  # (B, N-1, D) guided
    a = d @ dd.transpose(1, 2)  # a[i, j] = <d_i, D_j>
    offset = (_flat64(noise) + m0 - mu0).unsqueeze(-1)  # (B, D, 1)
    rhs = 0.5 * (d * d).sum(-1) - (d @ offset).squeeze(-1)
    u = torch.full((b, n - 1), 1.0 / n, dtype=torch.float64, device=d.device)
    resid = rhs - (a @ u.unsqueeze(-1)).squeeze(-1)
    k = u + (torch.linalg.pinv(a) @ resid.unsqueeze(-1)).squeeze(-1)
    return torch.cat([1.0 - k.sum(1, keepdim=True), k], 1)


def _log_increments(run: PeerRun, t: int, t_prev: int, z, z_prev, means, sigma: float) -> torch.Tensor:
    """``log p^i(z_prev | z) - log k_fwd(z | z_prev)`` per sample and model, ``(B, N)`` float64
    (NaN where the step adds no noise)."""
    dim = z[0].numel()
    if not sigma > 0:
        return torch.full((z.shape[0], len(means)), float("nan"), dtype=torch.float64, device=z.device)
    ratio = float(run.alpha_bar(t)) / float(run.alpha_bar(t_prev))  # abar_t / abar_prev
    beta = 1.0 - ratio
    fwd = -(_flat64(z) - math.sqrt(ratio) * _flat64(z_prev)).pow(2).sum(1) / (2 * beta) \
        - 0.5 * dim * math.log(2 * math.pi * beta)
    rev = torch.stack([-(_flat64(z_prev) - _flat64(m)).pow(2).sum(1) / (2 * sigma**2) for m in means], 1) \
        - 0.5 * dim * math.log(2 * math.pi * sigma**2)
    return rev - fwd.unsqueeze(1)


def _step(run: PeerRun, k: int, z: torch.Tensor, gens, guide: tuple | None = None):
    """One AND step from ``z`` at ``run.timesteps[k]``: (z_prev, kappa (B, N), increments (B, N)).
    ``guide``: ``(s, null_model, null_cond)`` for the guided AND (module docstring)."""
    t, t_prev = run.timesteps[k], run.t_prev[k]
    zeros = torch.zeros_like(z)
    eps = [run.eps(i, z, t, c) for i, c in enumerate(run.conds)]
    means = [run.scheduler.step(e, t, z, eta=1.0, variance_noise=zeros).prev_sample for e in eps]
    steps_along = means
    if guide is not None:
        scale, null_model, null_cond = guide
        eps_u = run.eps(null_model, z, t, null_cond)  # the one shared unconditional pass
        steps_along = [run.scheduler.step(guided(eps_u, e, scale), t, z, eta=1.0, variance_noise=zeros).prev_sample
                       for e in eps]
    sigma = ddpm_sigma(run, t, t_prev)
    noise = sigma * run.draw(gens)  # (B, *latent_shape), shared by the models
    kappa = solve_kappa(means, noise) if guide is None else solve_kappa(means, noise, steps_along)
    shift = sum(kappa[:, j:j + 1] * (_flat64(steps_along[j]) - _flat64(steps_along[0]))
                for j in range(1, len(means)))
    z_prev = steps_along[0] + shift.reshape(z.shape).to(device=z.device, dtype=z.dtype) + noise
    inc = _log_increments(run, t, t_prev, z, z_prev, means, float(sigma))
    return z_prev, kappa, inc


def _guidance(run: PeerRun, guidance_scale, null_model, null_conds) -> tuple | None:
    """The checked ``(s, null_model, null_cond)`` of a guided AND; None at s = 1."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) \
            or not (math.isfinite(guidance_scale) and guidance_scale >= 1):
        raise ValueError(f"guidance_scale must be a finite number >= 1; got {guidance_scale!r}")
    if not uses_guidance(float(guidance_scale)):
        return None
    n = len(run.models)
    if isinstance(null_model, bool) or not isinstance(null_model, (int, np.integer)) or not 0 <= null_model < n:
        raise ValueError(f"null_model must be an int in [0, {n - 1}] (the model whose null pass is shared); "
                         f"got {null_model!r}")
    for i, m in enumerate(run.models):
        if evaluations_per_call(m) != 1:
            raise ValueError(f"model {i} guides itself (guidance_scale={m.guidance_scale}); the guided AND guides "
                             "unguided models itself: pass models at guidance_scale 1 and guidance_scale=s here")
    return float(guidance_scale), int(null_model), _null_condition(run.models, int(null_model), null_conds)


def _null_condition(models: list, j: int, null_conds):
    """Model j's unconditional input: ``null_conds[j]`` (one per model) or ``models[j].null_condition()``."""
    if null_conds is not None:
        null_conds = list(null_conds)
        if len(null_conds) != len(models):
            raise ValueError(f"need one null condition per model: {len(models)} models, got {len(null_conds)}")
        return null_conds[j]
    if not has_null_condition(models[j]):
        raise ValueError(f"model {j} has no null_condition() method; pass null_conds= (one per model)")
    return models[j].null_condition()


@torch.no_grad()
def superdiff_and(models: Sequence, conds: Sequence, seeds: Sequence[int], *, num_inference_steps: int,
                  guidance_scale: float = 1.0, null_model: int = 0, null_conds: Sequence | None = None,
                  progress: bool = False) -> PeerOutput:
    """SUPERDIFF's AND of ``models[i]`` under ``conds[i]`` (N >= 2, one shared schedule), one
    sample per seed, on the DDPM sampler (z_T and each step's noise from one generator per sample).

    ``guidance_scale`` s >= 1: above 1, the authors' guided AND (module docstring) of unguided
    models, their shared unconditional pass from model ``null_model`` at its null condition
    (``null_conds[null_model]``, by default ``model.null_condition()``).

    Returns ``z0 (B, *latent_shape)`` and ``model_calls_per_sample = N num_inference_steps`` at s = 1
    (twice that for models that guide themselves), ``(N + 1) num_inference_steps`` guided; ``extra``:
    ``kappa (steps, B, N)`` float64, the weights of every step, and ``log_density (B, N)`` float64,
    each (unguided) model's tracked log-density of z0 at the final level (the prior's
    ``log N(z_T; 0, I)`` plus the increments; NaN after a noiseless step); ``guidance_scale``.
    """
    run = prepare(models, conds, seeds, num_inference_steps, method="SUPERDIFF AND")
    guide = _guidance(run, guidance_scale, null_model, null_conds)
    gens = run.generators(0)
    z = run.draw(gens) * run.scheduler.init_noise_sigma  # z_T (B, *latent_shape)
    dim = z[0].numel()
    log_q = (-0.5 * _flat64(z).pow(2).sum(1) - 0.5 * dim * math.log(2 * math.pi)).unsqueeze(1)
    log_q = log_q.repeat(1, len(run.models))  # (B, N)
    kappas = []
    for k in tqdm(range(len(run.timesteps)), desc="SUPERDIFF AND", disable=not progress, leave=False):
        z, kappa, inc = _step(run, k, z, gens, guide)
        kappas.append(kappa)
        log_q = log_q + inc
    per_step = sum(evaluations_per_call(m) for m in run.models) + (guide is not None)
    return PeerOutput(z0=z, model_calls_per_sample=per_step * len(run.timesteps),
                      extra={"kappa": torch.stack(kappas), "log_density": log_q,
                             "guidance_scale": float(guidance_scale)})

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tqdm import tqdm

from amdm_geom.peers.common import PeerOutput, PeerRun, ddpm_sigma, evaluations_per_call, prepare

__all__ = ["solve_kappa", "superdiff_and"]


def solve_kappa(means: Sequence[torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
    """The AND weights ``kappa (B, N)`` (float64, rows summing to 1) such that
    ``sum_i kappa_i means[i] + noise`` is equidistant from every ``means[i] (B, *shape)``;
    the minimum-norm solution about ``1/N`` where the means are degenerate (e.g. equal)."""
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


def _step(run: PeerRun, k: int, z: torch.Tensor, gens):
    """One AND step from ``z`` at ``run.timesteps[k]``: (z_prev, kappa (B, N), increments (B, N))."""
    t, t_prev = run.timesteps[k], run.t_prev[k]
    zeros = torch.zeros_like(z)
    means = [run.scheduler.step(run.eps(i, z, t, c), t, z, eta=1.0, variance_noise=zeros).prev_sample
             for i, c in enumerate(run.conds)]
    sigma = ddpm_sigma(run, t, t_prev)
    noise = sigma * run.draw(gens)  # (B, *latent_shape), shared by the models
    kappa = solve_kappa(means, noise)
    shift = sum(kappa[:, j:j + 1] * (_flat64(means[j]) - _flat64(means[0])) for j in range(1, len(means)))
    z_prev = means[0] + shift.reshape(z.shape).to(device=z.device, dtype=z.dtype) + noise
    inc = _log_increments(run, t, t_prev, z, z_prev, means, float(sigma))
    return z_prev, kappa, inc


@torch.no_grad()
def superdiff_and(models: Sequence, conds: Sequence, seeds: Sequence[int], *, num_inference_steps: int,
                  progress: bool = False) -> PeerOutput:
    """SUPERDIFF's AND of ``models[i]`` under ``conds[i]`` (N >= 2, one shared schedule), one
    sample per seed, on the DDPM sampler (z_T and each step's noise from one generator per sample).

    Returns ``z0 (B, *latent_shape)`` and ``model_calls_per_sample = N num_inference_steps`` (twice
    that for models that guide themselves); ``extra``: ``kappa (steps, B, N)`` float64, the weights
    of every step, and ``log_density (B, N)`` float64, each model's tracked log-density of z0 at the
    final level (the prior's ``log N(z_T; 0, I)`` plus the increments; NaN after a noiseless step).
    """
    run = prepare(models, conds, seeds, num_inference_steps, method="SUPERDIFF AND")
    gens = run.generators(0)
    z = run.draw(gens) * run.scheduler.init_noise_sigma  # z_T (B, *latent_shape)
    dim = z[0].numel()
    log_q = (-0.5 * _flat64(z).pow(2).sum(1) - 0.5 * dim * math.log(2 * math.pi)).unsqueeze(1)
    log_q = log_q.repeat(1, len(run.models))  # (B, N)
    kappas = []
    for k in tqdm(range(len(run.timesteps)), desc="SUPERDIFF AND", disable=not progress, leave=False):
        z, kappa, inc = _step(run, k, z, gens)
        kappas.append(kappa)
        log_q = log_q + inc
    calls = sum(evaluations_per_call(m) for m in run.models) * len(run.timesteps)
    return PeerOutput(z0=z, model_calls_per_sample=calls,
                      extra={"kappa": torch.stack(kappas), "log_density": log_q})

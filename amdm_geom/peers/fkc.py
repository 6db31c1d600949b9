"""Feynman-Kac correctors (Skreta, Akhound-Sadegh et al. 2025, arXiv 2503.02819, "Feynman-Kac
Correctors in Diffusion: Annealing, Guidance, and Product of Experts"): the product of N experts
``p_t ∝ prod_i q^i_t`` sampled by sequential Monte Carlo, for N models sharing one schedule.

Every particle follows the product's score, the summed-score DDPM step (DDIM at eta = 1, as
``du_ula`` without ULA), and carries a log-weight that corrects the marginals towards
``prod_i q^i_t``; particles are resampled within their sample's population.

Weights (``weight_form``). Their Feynman-Kac weight for the product (target-score SDE, reverse
time): ``d log w = g_t^2 sum_{i<j} <s_i, s_j> dt``, ``s_i = -eps_i / sqrt(1 - abar_t)``; their code
(martaskrt/fkc-diffusion, ``applications/images/edm2/generate_images.py``, ``edm_sampler_new``)
adds such a weight per Euler step. Two discretisations, both with no extra evaluation:

- ``"ito"`` (default): the SMC weight of the step with the forward kernel as backward kernel and
  each expert's log-density increment from the discrete Itô density estimator that SUPERDIFF uses
  (``superdiff``: ``log p^i(z'|z) - log k_fwd(z|z')``):
  ``log w = sum_i log N(z'; mu_i, sigma^2) - (N - 1) log k_fwd(z | z') - log N(z'; mu, sigma^2)``,
  ``mu_i`` expert i's DDPM mean, ``mu`` the summed-score mean; to first order in the step it is
  the continuous weight above (the noise terms cancel), and it is exactly 0 for one expert;
- ``"euler"``: ``log w = (1 - abar_t / abar_prev) / (1 - abar_t) sum_{i<j} <eps_i, eps_j>``, their
  continuous weight per Euler step (the constant ``div f`` term dropped).

z_T ~ N(0, I / N), the product of the N experts' priors N(0, I) (one expert: the plain sampler's
z_T). The final, noiseless step is not reweighted (as theirs: no resampling on the last step).

Particles and samples: each sample (seed) owns a population of K particles; particle k draws z_T
and its step noise from stream k of the sample's seed (``sampling.rng``: stream 0 is the seed
itself, so one particle of one expert is the plain DDPM run); resampling is systematic (their
``sample_cat_sys``: one uniform per resampling, ``(u + k) / K``), its uniforms from a separate
stream, whenever ESS < ``ess_threshold`` K (1: every step where the weights differ, as theirs; they
also clamp the weight increments, which is not done here). The sample is one particle drawn from
its final population by its weights; all K are in ``extra["particles"]``. Their image code instead
resamples across the batch, its particles being the samples (N evaluations per sample and step);
here a sample costs K N evaluations per step, so at a matched budget K particles run S / K steps
(or K = 2 at ULA's K = 1 budget, N (2 S - 1)).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from amdm_geom.peers.common import PeerOutput, PeerRun, ddpm_sigma, evaluations_per_call, prepare
from amdm_geom.sampling.rng import sample_generators

__all__ = ["MAX_PARTICLES", "WEIGHT_FORMS", "fkc_product", "step_log_weights", "systematic_resample"]

WEIGHT_FORMS = ("ito", "euler")
#: the most particles per sample (their streams are 0..K-1; the resampling stream is this one)
MAX_PARTICLES = 4096


def systematic_resample(weights: torch.Tensor, u: float) -> torch.Tensor:
    """Systematic resampling of one population: ``weights (K,)`` float64 summing to 1, ``u`` in
    [0, 1); returns the K ancestor indices ``i_k = min{i: cumsum(w)_i > (u + k) / K}``."""
    k = weights.shape[0]
    positions = (u + torch.arange(k, dtype=torch.float64)) / k
    idx = torch.searchsorted(torch.cumsum(weights, 0), positions, right=True)
    return idx.clamp(max=k - 1)


def _check(particles, ess_threshold, weight_form) -> None:
    if isinstance(particles, bool) or not isinstance(particles, (int, np.integer)) \
            or not 1 <= particles <= MAX_PARTICLES:
        raise ValueError(f"particles must be an int in [1, {MAX_PARTICLES}]; got {particles!r}")
    if isinstance(ess_threshold, bool) or not isinstance(ess_threshold, numbers.Real) \
            or not (math.isfinite(ess_threshold) and 0 <= ess_threshold <= 1):
        raise ValueError(f"ess_threshold must be a number in [0, 1]; got {ess_threshold!r}")
    if weight_form not in WEIGHT_FORMS:
        raise ValueError(f"weight_form must be one of {list(WEIGHT_FORMS)}; got {weight_form!r}")


def _expand(cond, batch: int, k: int):
    """A condition with one row per sample, repeated for its K particles (others as they are)."""
    if torch.is_tensor(cond) and cond.ndim >= 1 and batch > 1 and cond.shape[0] == batch:
        return cond.repeat_interleave(k, 0)
    return cond


def _sq(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).to(torch.float64).pow(2).sum(1)


def step_log_weights(run: PeerRun, t: int, t_prev: int, z, z_prev, eps: list, means: list, mean, form: str):
    """The log-weight increment ``(P,)`` float64 of the step ``t -> t_prev`` (``t_prev >= 0``) of P
    particles ``z -> z_prev`` (module docstring): ``eps`` the experts' epsilons at ``z``, ``means``
    their DDPM means (unused by ``"euler"``), ``mean`` the summed-score mean; constants dropped."""
    a_t, a_prev = float(run.alpha_bar(t)), float(run.alpha_bar(t_prev))
    log_w = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    if len(eps) == 1:
        return log_w  # one expert: the proposal is its own kernel, the weight is identically 0
    if form == "euler":
        flat = [e.reshape(e.shape[0], -1).to(torch.float64) for e in eps]
        for i in range(len(flat)):
            for j in range(i + 1, len(flat)):
                log_w = log_w + (flat[i] * flat[j]).sum(1)
        return (1 - a_t / a_prev) / (1 - a_t) * log_w
    var = float(ddpm_sigma(run, t, t_prev)) ** 2
    ratio = a_t / a_prev
    for m in means:
        log_w = log_w - _sq(z_prev - m) / (2 * var)
    fwd = z.to(torch.float64) - math.sqrt(ratio) * z_prev.to(torch.float64)
    return log_w + _sq(z_prev - mean) / (2 * var) + (len(means) - 1) * _sq(fwd) / (2 * (1 - ratio))


def _step(run: PeerRun, k: int, z: torch.Tensor, conds: list, noise: torch.Tensor, form: str):
    """One summed-score DDPM step of every particle: (z_prev, log-weight increment or None)."""
    t, t_prev = run.timesteps[k], run.t_prev[k]
    eps = [run.eps(i, z, t, c) for i, c in enumerate(conds)]
    total = eps[0]
    for e in eps[1:]:
        total = total + e
    z_prev = run.scheduler.step(total, t, z, eta=1.0, variance_noise=noise).prev_sample
    if t_prev < 0 or not float(ddpm_sigma(run, t, t_prev)) > 0:
        return z_prev, None  # the final, noiseless step: not reweighted
    zeros = torch.zeros_like(z)
    mean = run.scheduler.step(total, t, z, eta=1.0, variance_noise=zeros).prev_sample
    means = [mean] if len(eps) == 1 else \
        [run.scheduler.step(e, t, z, eta=1.0, variance_noise=zeros).prev_sample for e in eps]
    return z_prev, step_log_weights(run, t, t_prev, z, z_prev, eps, means, mean, form)


def _resample(log_w: torch.Tensor, z: torch.Tensor, threshold: float, res_gens) -> tuple:
    """Resample every population whose ESS < threshold K (and whose weights differ): (z, log_w, ess, done)."""
    b, k = log_w.shape
    w = torch.softmax(log_w, 1)
    ess = 1.0 / (w * w).sum(1)
    done = torch.zeros(b, dtype=torch.bool)
    idx = torch.arange(b * k).reshape(b, k)
    for s in range(b):
        if k > 1 and bool((log_w[s] != log_w[s, 0]).any()) and float(ess[s]) < threshold * k:
            u = float(torch.rand(1, generator=res_gens[s], dtype=torch.float64))
            idx[s] = s * k + systematic_resample(w[s], u)
            done[s] = True
    if done.any():
        z, log_w = z[idx.reshape(-1)], torch.where(done.unsqueeze(1), torch.zeros_like(log_w), log_w)
    return z, log_w, ess, done


@torch.no_grad()
def fkc_product(models: Sequence, conds: Sequence, seeds: Sequence[int], *, num_inference_steps: int,
                particles: int = 4, ess_threshold: float = 1.0, weight_form: str = "ito",
                progress: bool = False) -> PeerOutput:
    """FKC's product of ``models[i]`` under ``conds[i]`` (N >= 1, one shared schedule), one sample
    per seed, each from a population of ``particles`` (K) resampled systematically whenever its ESS
    falls below ``ess_threshold`` K (module docstring). Models that guide themselves count 2.

    Returns ``z0 (B, *latent_shape)``, ``model_calls_per_sample = K N num_inference_steps``; ``extra``:
    ``particles (B, K, *latent_shape)`` the final populations, ``chosen (B,)`` the particle each
    sample is, ``log_weights (B, K)`` float64 at the end, ``ess (steps, B)`` before each resampling
    (NaN on the final step), ``resampled (steps, B)`` bool.
    """
    run = prepare(models, conds, seeds, num_inference_steps, method="FKC product of experts", min_models=1)
    _check(particles, ess_threshold, weight_form)
    b, k, n = len(run.seeds), int(particles), len(run.models)
    streams = [sample_generators(run.seeds, j) for j in range(k)]  # streams[j][s]: sample s, particle j
    gens = [streams[j][s] for s in range(b) for j in range(k)]  # particle order: sample-major
    res_gens = sample_generators(run.seeds, MAX_PARTICLES)
    conds = [_expand(c, b, k) for c in run.conds]
    z = run.draw(gens) * (run.scheduler.init_noise_sigma / math.sqrt(n))  # z_T ~ N(0, I / N)
    log_w = torch.zeros(b, k, dtype=torch.float64)
    ess_all, resampled = [], []
    for i in tqdm(range(len(run.timesteps)), desc="FKC", disable=not progress, leave=False):
        z, inc = _step(run, i, z, conds, run.draw(gens), weight_form)
        if inc is None:
            ess_all.append(torch.full((b,), float("nan"), dtype=torch.float64))
            resampled.append(torch.zeros(b, dtype=torch.bool))
            continue
        log_w = log_w + inc.reshape(b, k).cpu()  # weights and resampling on the CPU
        z, log_w, ess, done = _resample(log_w, z, float(ess_threshold), res_gens)
        ess_all.append(ess)
        resampled.append(done)
    w = torch.softmax(log_w, 1)
    u = torch.stack([torch.rand(1, generator=g, dtype=torch.float64) for g in res_gens])  # (B, 1)
    chosen = torch.searchsorted(torch.cumsum(w, 1), u, right=True).clamp(max=k - 1).squeeze(1)
    pop = z.reshape(b, k, *z.shape[1:])
    calls = k * sum(evaluations_per_call(m) for m in run.models) * len(run.timesteps)
    return PeerOutput(z0=pop[torch.arange(b), chosen], model_calls_per_sample=calls,
                      extra={"particles": pop, "chosen": chosen, "log_weights": log_w, "ess": torch.stack(ess_all),
                             "resampled": torch.stack(resampled), "weight_form": weight_form})

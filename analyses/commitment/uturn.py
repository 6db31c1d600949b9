"""The U-turn: noise a finished sample back to a state of the trajectory and regenerate it from there.

A model-agnostic procedure (any denoiser of ``amdm_geom.models.base`` on a DDIM schedule). For finished samples
``x0 (B, ...)`` and state ``k`` of a T-step schedule (state k: the z_t entering DDIM step k, at timestep ``t_k``),

    z_t = sqrt(abar_{t_k}) x0 + sqrt(1 - abar_{t_k}) xi,      xi ~ N(0, I)        (eq. 2, the forward marginal)

with ``xi`` drawn from a fresh generator per sample (``amdm_geom.sampling.sample_generators`` of the sample's
seed), then the sampler's own step (``amdm_geom.sampling.steppers``, diffusers' ``DDIMScheduler.step``: eq. 4)
runs steps k .. T-1 from ``z_t`` with the same model and condition, the per-step noise from the same generators.

With ``ddim_eta = 1`` (sigma_t of eq. 4 at DDPM's posterior variance) the regeneration is the stochastic reverse
process, so for an exact denoiser a regenerated sample is (up to the discretisation of T steps) a draw from
``p(x0 | z_t)``: the rate at which an attribute survives the U-turn is the posterior of its original value given
``z_t`` (the test checks this on the exact GMM family against scipy, within a binomial interval of 2000 samples).
Deterministic regeneration (``ddim_eta = 0``) would instead map z_t to one point, the probability-flow ODE's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from amdm_geom.sampling.rng import draw, sample_generators
from amdm_geom.sampling.steppers import DDIMStep, make_step

__all__ = ["noised", "regenerate", "state_alpha_bar", "uturn"]


def _ddim_step(model, steps: int, ddim_eta: float) -> DDIMStep:
    step = make_step(model, steps, ddim_eta=ddim_eta)
    if not isinstance(step, DDIMStep):
        raise ValueError(f"the U-turn needs a model on a DDIM (VP/VE) schedule; got a {step.kind} model")
    return step


def _check_state(k, steps: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < steps:
        raise ValueError(f"k must be a state index in [0, {steps - 1}] (state k: z_t entering step k); got {k!r}")
    return k


def state_alpha_bar(model, k: int, steps: int) -> float:
    """``abar`` of state ``k`` (the z_t entering DDIM step k) of ``model``'s ``steps``-step schedule, float64."""
    step = _ddim_step(model, steps, 0.0)
    _check_state(k, steps)
    return float(step.coefficients["alpha_bar"].values[k])


def noised(x0: torch.Tensor, alpha_bar: float, gens: Sequence[torch.Generator]) -> torch.Tensor:
    """``sqrt(abar) x0 + sqrt(1 - abar) xi`` (float64 arithmetic, returned in ``x0``'s dtype), ``xi`` sample b's
    standard normal from ``gens[b]``."""
    if not (isinstance(alpha_bar, (int, float)) and 0.0 < float(alpha_bar) <= 1.0):
        raise ValueError(f"alpha_bar must be a number in (0, 1]; got {alpha_bar!r}")
    if len(gens) != x0.shape[0]:
        raise ValueError(f"need one generator per sample: {x0.shape[0]} samples, got {len(gens)} generators")
    xi = draw(list(gens), tuple(x0.shape[1:]), torch.float64, "cpu")
    a = float(alpha_bar)
    z = math.sqrt(a) * x0.detach().to("cpu", torch.float64) + math.sqrt(1.0 - a) * xi
    return z.to(device=x0.device, dtype=x0.dtype)


def regenerate(model, cond, z: torch.Tensor, k: int, gens: Sequence[torch.Generator], *, steps: int = 50,
               ddim_eta: float = 1.0) -> torch.Tensor:
    """Run DDIM steps ``k .. steps - 1`` of ``model`` under ``cond`` from ``z`` (state k), the step noise
    (``ddim_eta > 0``) from ``gens``; returns the final latent, in the model's dtype."""
    step = _ddim_step(model, steps, ddim_eta)
    _check_state(k, steps)
    z = z.to(device=model.device, dtype=model.dtype)
    gens = list(gens)
    with torch.no_grad():
        for j in range(k, steps):
            z = step.step(model(z, step.timesteps[j], cond), j, z, gens).z_next
    return z


def uturn(model, cond, x0: torch.Tensor, k: int, seeds: Sequence[int], *, steps: int = 50,
          ddim_eta: float = 1.0) -> torch.Tensor:
    """The U-turn of finished samples ``x0 (B, *latent_shape)``: noised to state ``k``'s abar with one fresh
    generator per sample (``seeds``), then regenerated from state k to the end (``regenerate``). Returns the
    regenerated ``x0``."""
    if len(seeds) != x0.shape[0]:
        raise ValueError(f"need one seed per sample: {x0.shape[0]} samples, got {len(seeds)} seeds")
    gens = sample_generators(list(seeds), 0)
    z = noised(x0, state_alpha_bar(model, k, steps), gens)
    return regenerate(model, cond, z, k, gens, steps=steps, ddim_eta=ddim_eta)

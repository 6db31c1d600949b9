"""Composable Diffusion (Liu et al. 2022, arXiv 2206.01714): the conjunction (AND) operator,
for N models each with its own condition, sampled with DDIM.

At one shared ``z_t``, every model i gives its conditional and unconditional epsilon, and

    eps = eps_u + sum_i w_i (eps_i(z_t | c_i) - eps_i(z_t | null)),    eps_u = mean_i eps_i(z_t | null)

(Liu et al.'s conjunction (AND) operator: the composed score of p(x) prod_i p(c_i | x)^{w_i}; with one
model, or N copies of one model, eps_u is that model's unconditional epsilon and this is their
formula exactly). It is computed as the equal sum ``sum_i [w_i eps_i(c_i) + (1/N - w_i) eps_i(null)]``,
so that one model at w = 1 gives its conditional epsilon bit for bit (a plain DDIM loop of that
model). Each output is converted to epsilon first; the step is diffusers' ``DDIMScheduler.step``
fed this epsilon (x0 clipped as the models' scheduler clips it), with DDIM's ``eta`` (0:
deterministic). Cost: 2 model evaluations per model per step.

Against the authors' code (energy-based-model/Compositional-Visual-Generation-with-Composable-
Diffusion-Models-PyTorch: ``scripts/image_sample_compose_glide.py`` and
``scripts/image_sample_compose_clevr_pos.py``, ``model_fn``; ``ComposableStableDiffusionPipeline.__call__``):
they run ONE network, so one unconditional pass serves every condition, ``eps = eps_u + sum_i w_i
(eps_i - eps_u)``, N + 1 evaluations per step. The form above is theirs whenever the models'
unconditional outputs coincide (one network, or copies); for distinct networks the mean of their
unconditionals is this toolkit's extension. ``null_model=j`` is their form exactly: model j's null
pass is shared, ``eps = sum_i w_i eps_i + (1 - sum_i w_i) eps_u``, and N + 1 evaluations are counted.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from tqdm import tqdm

from amdm_geom.models.base import has_null_condition
from amdm_geom.peers.common import PeerOutput, PeerRun, check_weights, evaluations_per_call, prepare

__all__ = ["composable"]


def _null_conditions(models: list, null_conds) -> list:
    """Each model's unconditional input: ``null_conds`` (one per model) or ``model.null_condition()``."""
    if null_conds is not None:
        null_conds = list(null_conds)
        if len(null_conds) != len(models):
            raise ValueError(f"need one null condition per model: {len(models)} models, got {len(null_conds)}")
        return null_conds
    out = []
    for i, m in enumerate(models):
        if not has_null_condition(m):
            raise ValueError(f"model {i} has no null_condition() method; pass null_conds= (one per model)")
        out.append(m.null_condition())
    return out


def _check_unguided(models: list) -> None:
    for i, m in enumerate(models):
        if evaluations_per_call(m) != 1:
            raise ValueError(f"model {i} guides itself (guidance_scale={m.guidance_scale}); Composable Diffusion "
                             "applies its own weights w_i: pass models at guidance_scale 1")


def ddim_step(run: PeerRun, eps: torch.Tensor, t: int, z: torch.Tensor, eta: float, gens) -> torch.Tensor:
    """``DDIMScheduler.step`` fed ``eps``; for ``eta > 0`` its noise from the per-sample generators."""
    noise = run.draw(gens) if eta > 0 else None
    return run.scheduler.step(eps, t, z, eta=eta, variance_noise=noise).prev_sample


@torch.no_grad()
def composable(models: Sequence, conds: Sequence, seeds: Sequence[int], *, num_inference_steps: int,
               weights: float | Sequence[float] = 1.0, null_conds: Sequence | None = None, eta: float = 0.0,
               null_model: int | None = None, progress: bool = False) -> PeerOutput:
    """Liu et al.'s conjunction of ``conds[i]`` under ``models[i]`` (N >= 1; N = 1 is classifier-
    free guidance at scale ``weights``), one sample per seed.

    ``weights``: w_i, one number or one per model (their guidance scales). ``null_conds``: each
    model's unconditional input; by default ``model.null_condition()``. ``eta``: DDIM's eta >= 0
    (the noise, like z_T, from one generator per sample, so a sample does not depend on its batch
    mates). ``null_model``: None, every model's own unconditional pass (their mean, 2 N evaluations
    per step); j, model j's pass shared by all (the authors' one-network form, N + 1). Models must
    not guide themselves (``guidance_scale`` <= 1). Returns ``z0 (B, *latent_shape)``,
    ``model_calls_per_sample`` (2 N or N + 1 per step); ``extra`` holds the weights, eta and null_model.
    """
    run = prepare(models, conds, seeds, num_inference_steps, method="Composable Diffusion", min_models=1)
    n = len(run.models)
    w = check_weights(weights, n, "weights")
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta must be a finite number >= 0; got {eta!r}")
    nulls = _null_conditions(run.models, null_conds)
    _check_unguided(run.models)
    if null_model is not None and (isinstance(null_model, bool) or not isinstance(null_model, numbers.Integral)
                                   or not 0 <= null_model < n):
        raise ValueError(f"null_model must be None or an int in [0, {n - 1}] (the model whose null pass is "
                         f"shared); got {null_model!r}")
    gens = run.generators(0)
    z = run.draw(gens) * run.scheduler.init_noise_sigma  # z_T (B, *latent_shape)
    for t in tqdm(run.timesteps, desc="Composable", disable=not progress, leave=False):
        eps = None
        for i in range(n):
            if null_model is None:
                term = w[i] * run.eps(i, z, t, run.conds[i]) + (1.0 / n - w[i]) * run.eps(i, z, t, nulls[i])
            else:
                term = w[i] * run.eps(i, z, t, run.conds[i])
            eps = term if eps is None else eps + term
        if null_model is not None:  # their one unconditional pass
            eps = eps + (1.0 - sum(w)) * run.eps(null_model, z, t, nulls[null_model])
        z = ddim_step(run, eps, t, z, float(eta), gens)
    calls = (2 * n if null_model is None else n + 1) * len(run.timesteps)
    return PeerOutput(z0=z, model_calls_per_sample=calls,
                      extra={"weights": w, "eta": float(eta), "null_model": null_model})

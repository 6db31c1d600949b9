"""The denoiser protocol: ``eps = model(z_t, t, cond)``, with the model's noise schedule attached.

A denoiser predicts the (guided) epsilon of eq. (4) for a batch of latents ``z_t (B, *latent_shape)``
at one integer training timestep ``t`` under a condition ``cond`` whose meaning is the model
family's own (mixture weights for the GMM family, text embeddings for UNets). Its ``scheduler``
(a diffusers ``DDIMScheduler``) is its SDE: two models belong to one ecosystem only if their
schedules agree (Section 3.1), which the sampler checks.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from diffusers import DDIMScheduler

__all__ = ["Denoiser", "check_latents", "same_schedule"]


@runtime_checkable
class Denoiser(Protocol):
    """What the sampler needs of a model.

    Attributes:
        scheduler: the model's noise schedule (a ``DDIMScheduler``; only its config and
            ``alphas_cumprod`` are read, it is never stepped in place).
        latent_shape: the per-sample latent shape, e.g. ``(4, 64, 64)`` or ``(n,)``.
        dtype: the dtype the model computes in and returns.
        device: where its inputs must live.
    """

    scheduler: DDIMScheduler
    latent_shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    def __call__(self, z_t: torch.Tensor, t: int, cond: Any) -> torch.Tensor:
        """``z_t (B, *latent_shape)``, ``t`` an int timestep -> ``eps (B, *latent_shape)``."""
        ...

    def describe(self) -> dict:
        """A JSON-able description (family, sizes, seeds, guidance) for the trace store."""
        ...


def check_latents(model: Denoiser, z_t: torch.Tensor) -> None:
    """One-line error if ``z_t`` is not a batch of this model's latents."""
    if tuple(z_t.shape[1:]) != tuple(model.latent_shape):
        raise ValueError(
            f"latents must have shape (B, {', '.join(map(str, model.latent_shape))}); "
            f"got {tuple(z_t.shape)}"
        )


def same_schedule(a: DDIMScheduler, b: DDIMScheduler) -> bool:
    """Whether two schedulers define the same SDE and timestep grid: equal ``alphas_cumprod``,
    prediction type, number of training steps, spacing, offset and parametrization (VP, or VE
    for ``schedules.VESchedule``)."""
    ca, cb = a.config, b.config
    keys = ("num_train_timesteps", "prediction_type", "timestep_spacing", "steps_offset",
            "set_alpha_to_one", "parametrization")
    if any(ca.get(k) != cb.get(k) for k in keys):
        return False
    return torch.equal(a.alphas_cumprod, b.alphas_cumprod)

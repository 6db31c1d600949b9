"""The denoiser protocol: ``out = model(z_t, t, cond)``, with the model's noise schedule attached.

A denoiser predicts, for a batch of latents ``z_t (B, *latent_shape)`` at one integer training
timestep ``t`` under a condition ``cond`` whose meaning is the model family's own (mixture
weights for the GMM family, text embeddings for UNets), its (guided) output in its scheduler's
``prediction_type``: epsilon for every denoiser of this package, v or x0 for others (e.g. the
digits models predict v). The sampler hands the output to diffusers' ``DDIMScheduler.step`` and
records the step's epsilon of eq. (4) (``amdm_geom.core.schedules.step_epsilon``). Its ``scheduler``
(a diffusers ``DDIMScheduler``) is its SDE: two models belong to one ecosystem only if their
schedules agree (Section 3.1), which the sampler checks.

Optional attributes: ``condition_kind`` (what kind of condition it takes: two models whose kinds
are equal accept each other's conditions, which the cross terms of eqs. 20-22 need),
``null_condition()`` (its unconditional y, e.g. the empty prompt or every attribute unset) and
``data_space`` (what its x0 are, e.g. ``"pixels 3x16x16 in [-1, 1]"`` or a VAE's hash; compared
by ``amdm_geom.models.ecosystem.check_denoisers`` when both models have one).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from diffusers import DDIMScheduler

from amdm_geom.core.flow_schedules import GRID_KEYS, is_flow_scheduler

__all__ = ["CROSS_TERMS", "Denoiser", "check_latents", "condition_kind", "cross_terms", "has_null_condition",
           "same_schedule", "schedule_kind"]

#: How the cross terms of two models were evaluated: at one shared condition, or each at its null condition.
CROSS_TERMS = ("conditional", "unconditional")


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
        """``z_t (B, *latent_shape)``, ``t`` an int timestep -> the output ``(B, *latent_shape)`` in
        ``scheduler.config.prediction_type`` (eps, v or x0)."""
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


def schedule_kind(scheduler) -> str:
    """``"flow"`` for a rectified-flow scheduler (App. G), ``"ve"`` for ``schedules.VESchedule``,
    else ``"vp"``."""
    if is_flow_scheduler(scheduler):
        return "flow"
    return "ve" if scheduler.config.get("parametrization") == "ve" else "vp"


def same_schedule(a: DDIMScheduler, b: DDIMScheduler) -> bool:
    """Whether two schedulers define the same SDE and timestep grid: equal ``alphas_cumprod``,
    prediction type, number of training steps, spacing, offset and parametrization (VP, or VE
    for ``schedules.VESchedule``); two flow schedulers: one class and one time grid
    (``flow_schedules.GRID_KEYS``: shift, dynamic shifting, sigma transforms). A flow and a
    diffusion schedule never agree."""
    if schedule_kind(a) == "flow" or schedule_kind(b) == "flow":
        return (type(a) is type(b) and schedule_kind(a) == schedule_kind(b)
                and all(a.config.get(k) == b.config.get(k) for k in GRID_KEYS))
    ca, cb = a.config, b.config
    keys = ("num_train_timesteps", "prediction_type", "timestep_spacing", "steps_offset",
            "set_alpha_to_one", "parametrization")
    if any(ca.get(k) != cb.get(k) for k in keys):
        return False
    return torch.equal(a.alphas_cumprod, b.alphas_cumprod)


def condition_kind(model) -> str | None:
    """The model's ``condition_kind`` (``None`` if it declares none)."""
    kind = getattr(model, "condition_kind", None)
    return None if kind is None else str(kind)


def has_null_condition(model) -> bool:
    return callable(getattr(model, "null_condition", None))


def cross_terms(a, b, names: tuple[str, str] = ("model 0", "model 1")) -> str:
    """How to evaluate both models at one latent: ``"conditional"`` when their condition kinds
    are equal (both undeclared counts as equal: the behaviour before kinds existed), else
    ``"unconditional"`` when both have a null condition; else a one-line ``ValueError`` naming
    the models."""
    ka, kb = condition_kind(a), condition_kind(b)
    if ka == kb:
        return "conditional"
    if has_null_condition(a) and has_null_condition(b):
        return "unconditional"
    lacking = [n for n, m in zip(names, (a, b)) if not has_null_condition(m)]
    raise ValueError(f"{names[0]} and {names[1]} take different conditions ({ka!r} vs {kb!r}) and "
                     f"{' and '.join(lacking)} has no null_condition(), so no cross term can be evaluated")

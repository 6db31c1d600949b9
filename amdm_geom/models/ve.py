"""A VP denoiser seen through the variance-exploding parametrization on the same time grid.

``x_t = z_t / sqrt(abar_t) = x_0 + sigma_t eps``: the same data, noise levels and epsilon as the
VP model, in coordinates whose scale grows to ``1 / sqrt(abar_T)``. Paired with a VP model of
the same data it is the toolkit's EDM/VE-style "different ecosystem" (App. F.3, Table 10): the
two models agree on everything except the SDE, so a failure of aggregating them is the SDE's.
"""

from __future__ import annotations

import math

import torch

from amdm_geom.core.schedules import VESchedule
from amdm_geom.models.base import check_latents

__all__ = ["VEDenoiser"]


class VEDenoiser:
    """``eps = model(x_t, t, cond) = base(sqrt(abar_t) x_t, t, cond)``, stepped by ``VESchedule``."""

    def __init__(self, base, name: str | None = None):
        self.base = base
        self.scheduler = VESchedule(base.scheduler.config)
        self.latent_shape = tuple(base.latent_shape)
        self.dtype = base.dtype
        self.device = base.device
        self.name = name or f"{getattr(base, 'name', 'model')} (VE)"
        self._abar = base.scheduler.alphas_cumprod.to(torch.float64)
        # the base's conditions and data: the same kind, null condition and x0 space
        self.condition_kind = getattr(base, "condition_kind", None)
        if callable(getattr(base, "null_condition", None)):
            self.null_condition = base.null_condition
        if getattr(base, "data_space", None) is not None:
            self.data_space = base.data_space

    def __call__(self, x_t: torch.Tensor, t, cond) -> torch.Tensor:
        """``x_t (B, *latent_shape)`` in VE coordinates -> eps, the base model's, same shape."""
        check_latents(self, x_t)
        return self.base(x_t * math.sqrt(float(self._abar[int(t)])), t, cond)

    def describe(self) -> dict:
        return {**self.base.describe(), "name": self.name, "parametrization": "ve"}

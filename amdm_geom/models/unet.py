"""UNet denoisers: a diffusers ``UNet2DConditionModel`` predicting the guided epsilon of eq. (4).

``UNetDenoiser`` wraps a UNet for epsilon prediction with classifier-free guidance, computed
exactly as diffusers' ``StableDiffusionPipeline`` does (``amdm_geom.models.guidance``: one
forward pass on the doubled batch, ``eps = eps_u + s (eps_c - eps_u)``, only for ``s > 1``),
plus an optional additive adapter. ``tiny_unet_family`` builds the model pairs AMDM aggregates
from the small seeded UNets of ``amdm_geom.models.tiny_unets`` (re-exported here):

- same ecosystem (one SDE): ``perturbed_unet`` (a "fine-tune" of the base: every weight moved by
  ``scale`` of its own spread) and ``ConvAdapter`` (an additive adapter on the base UNet, scaled
  in by ``adapter_scale``; 0 gives the base exactly);
- different ecosystem: an independently initialised UNet with another schedule.

Conditions are random "prompt embeddings" ``(1, seq_len, cross_attention_dim)``: the
``encoder_hidden_states`` a text encoder would produce. Nothing here downloads anything, and
no factory touches the global torch RNG.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from torch import nn

from amdm_geom.core.schedules import make_scheduler
from amdm_geom.models.base import check_latents
from amdm_geom.models.checks import check_finite, check_seed
from amdm_geom.models.constants import INDEPENDENT_SEED_OFFSET, UNET_VARIANTS
from amdm_geom.models.guidance import guided, uses_guidance
from amdm_geom.models.tiny_unets import (
    ConvAdapter,
    condition_pair,
    make_condition,
    make_tiny_unet,
    perturbed_unet,
    tiny_unet_config,
)

__all__ = [
    "ConvAdapter",
    "UNetDenoiser",
    "condition_pair",
    "make_condition",
    "make_tiny_unet",
    "perturbed_unet",
    "tiny_unet_config",
    "tiny_unet_family",
]


# --------------------------------------------------------------------------------------------
# the denoiser


class UNetDenoiser:
    """Epsilon prediction (eq. 4) of a ``UNet2DConditionModel`` with classifier-free guidance.

    ``eps = model(z_t, t, cond)`` for latents ``z_t (B, C, H, W)``, an integer training timestep
    ``t`` and a condition ``cond (1 or B, seq, cross_attention_dim)`` (the UNet's
    ``encoder_hidden_states``). With guidance scale ``s``:

        eps = eps_u + s (eps_c - eps_u)  [+ adapter_scale * adapter(z_t, t, cond)],

    where ``eps_c`` and ``eps_u`` are the UNet's predictions under ``cond`` and under the
    unconditional embedding ``uncond``, computed like diffusers' ``StableDiffusionPipeline``: one
    forward pass on ``cat([z_t, z_t])`` with ``cat([uncond, cond])`` and ``chunk(2)``. As in
    diffusers (``do_classifier_free_guidance``), guidance applies only for ``s > 1``: at
    ``s <= 1`` only the conditional pass runs and ``eps = eps_c``.

    Args:
        unet: the UNet (put into eval mode; it is never trained here).
        scheduler: its noise schedule; default ``make_scheduler()`` (SD 1.x, scaled_linear).
        guidance_scale: the CFG scale ``s`` (<= 1: no guidance).
        uncond: the unconditional embedding ``(1, seq, cross_attention_dim)``; default zeros
            shaped like the condition.
        adapter: an optional additive module ``adapter(z_t, t, cond) -> (B, C, H, W)``.
        adapter_scale: its weight; at 0 the adapter is not called, so the output is exactly the
            base UNet's.
        name: a label for ``describe()``.
        provenance: JSON-able facts about how the model was made (seed, variant, scale), kept
            in ``describe()``.

    Attributes:
        scheduler, latent_shape ``(in_channels, sample_size, sample_size)``, dtype, device,
        guidance_scale, adapter_scale, uncond, name, provenance: as above.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        scheduler: DDIMScheduler | None = None,
        guidance_scale: float = 1.0,
        uncond: torch.Tensor | None = None,
        adapter: nn.Module | None = None,
        adapter_scale: float = 0.0,
        name: str = "unet",
        *,
        provenance: dict | None = None,
    ) -> None:
        self.unet = unet.eval()
        self.scheduler = make_scheduler() if scheduler is None else scheduler
        self.guidance_scale = check_finite("guidance_scale", guidance_scale)
        self.adapter_scale = check_finite("adapter_scale", adapter_scale)
        if adapter is None and self.adapter_scale != 0:
            raise ValueError(f"adapter_scale must be 0 without an adapter; got {adapter_scale!r}")
        self.adapter = adapter.eval() if adapter is not None else None
        self.name = str(name)
        self.provenance = dict(provenance or {})

        param = next(unet.parameters())
        self.dtype: torch.dtype = param.dtype
        self.device: torch.device = param.device
        self.cross_attention_dim = _cross_attention_dim(unet.config)
        height, width = _sample_hw(unet.config)
        self.latent_shape: tuple[int, ...] = (int(unet.config.in_channels), height, width)
        self.uncond = None if uncond is None else self._check_uncond(uncond)

    @property
    def condition_kind(self) -> str:
        """``"embeddings:D"``: UNets of one cross-attention width take each other's embeddings."""
        return f"embeddings:{self.cross_attention_dim}"

    def null_condition(self) -> torch.Tensor:
        """The unconditional embedding ``(1, seq, D)`` guidance uses (``uncond``, or zeros of one token)."""
        if self.uncond is not None:
            return self.uncond
        return torch.zeros((1, 1, self.cross_attention_dim), device=self.device, dtype=self.dtype)

    # -- validation ---------------------------------------------------------------------------

    def _check_uncond(self, uncond: torch.Tensor) -> torch.Tensor:
        if not isinstance(uncond, torch.Tensor):
            raise ValueError(f"uncond must be a tensor; got {type(uncond).__name__}")
        if uncond.ndim != 3 or uncond.shape[0] != 1 or uncond.shape[2] != self.cross_attention_dim:
            raise ValueError(
                f"uncond must have shape (1, seq, {self.cross_attention_dim}); "
                f"got {tuple(uncond.shape)}"
            )
        return uncond.to(device=self.device, dtype=self.dtype)

    def _check_cond(self, cond: Any, batch: int) -> torch.Tensor:
        """``cond (1 or B, seq, cross_attention_dim)`` on the model's device and dtype."""
        if not isinstance(cond, torch.Tensor):
            raise ValueError(f"cond must be an embedding tensor; got {type(cond).__name__}")
        dim = self.cross_attention_dim
        ok = cond.ndim == 3 and cond.shape[0] in (1, batch) and cond.shape[1] >= 1
        if not ok or cond.shape[2] != dim:
            raise ValueError(
                f"cond must have shape (1 or {batch}, seq, {dim}) for {batch} latents; "
                f"got {tuple(cond.shape)}"
            )
        return cond.to(device=self.device, dtype=self.dtype)

    def _check_timestep(self, t: Any) -> int:
        """An int training timestep in [0, num_train_timesteps)."""
        if isinstance(t, torch.Tensor):
            if t.ndim != 0 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise ValueError(f"t must be an int or a 0-dim integer tensor; got {t!r}")
            t = int(t.item())
        elif isinstance(t, bool) or not hasattr(t, "__index__"):
            raise ValueError(f"t must be an int training timestep; got {t!r}")
        t = int(t)
        n_train = int(self.scheduler.config.num_train_timesteps)
        if not 0 <= t < n_train:
            raise ValueError(f"t must be in [0, {n_train}); got {t}")
        return t

    # -- prediction ---------------------------------------------------------------------------

    def _unconditional(self, cond: torch.Tensor) -> torch.Tensor:
        """The unconditional embedding ``(1, seq, dim)`` matching ``cond``'s sequence length."""
        if self.uncond is None:
            return torch.zeros_like(cond[:1])
        if self.uncond.shape[1] != cond.shape[1]:
            raise ValueError(
                f"cond must have the unconditional embedding's sequence length "
                f"{self.uncond.shape[1]}; got {tuple(cond.shape)}"
            )
        return self.uncond

    def _guided_eps(self, z_t: torch.Tensor, t: int, cond: torch.Tensor) -> torch.Tensor:
        """The UNet's eps under classifier-free guidance, as StableDiffusionPipeline computes it."""
        batch = z_t.shape[0]
        cond_b = cond.expand(batch, -1, -1)  # (B, seq, dim)
        if not uses_guidance(self.guidance_scale):
            return self.unet(z_t, t, encoder_hidden_states=cond_b).sample
        uncond_b = self._unconditional(cond).expand(batch, -1, -1)  # (B, seq, dim)
        z_in = torch.cat([z_t, z_t])  # (2B, C, H, W)
        hidden = torch.cat([uncond_b, cond_b])  # (2B, seq, dim)
        eps_u, eps_c = self.unet(z_in, t, encoder_hidden_states=hidden).sample.chunk(2)
        return guided(eps_u, eps_c, self.guidance_scale)

    def __call__(
        self, z_t: torch.Tensor, t: int | torch.Tensor, cond: torch.Tensor
    ) -> torch.Tensor:
        """eps of eq. (4): ``z_t (B, C, H, W)``, ``t`` an int timestep, ``cond (1 or B, seq, dim)``
        -> ``eps (B, C, H, W)`` in the model's dtype."""
        if not isinstance(z_t, torch.Tensor):
            raise ValueError(f"z_t must be a tensor; got {type(z_t).__name__}")
        check_latents(self, z_t)
        if z_t.shape[0] == 0:
            raise ValueError(f"z_t must hold at least one latent; got {tuple(z_t.shape)}")
        t = self._check_timestep(t)
        cond = self._check_cond(cond, z_t.shape[0])
        z_t = z_t.to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            eps = self._guided_eps(z_t, t, cond)  # (B, C, H, W)
            if self.adapter is not None and self.adapter_scale != 0:
                eps = eps + self.adapter_scale * self.adapter(z_t, t, cond).to(self.dtype)
        return eps

    def describe(self) -> dict:
        """Family, sizes, guidance, adapter and provenance, as a JSON-able dict."""
        config = self.unet.config
        return {
            "family": "unet",
            "name": self.name,
            "block_out_channels": [int(c) for c in config.block_out_channels],
            "cross_attention_dim": self.cross_attention_dim,
            "sample_size": _jsonable_size(config.sample_size),
            "in_channels": int(config.in_channels),
            "latent_shape": list(self.latent_shape),
            "n_parameters": int(sum(p.numel() for p in self.unet.parameters())),
            "dtype": str(self.dtype).removeprefix("torch."),
            "guidance_scale": self.guidance_scale,
            "uncond": "zeros" if self.uncond is None else "given",
            "adapter": None if self.adapter is None else type(self.adapter).__name__,
            "adapter_scale": self.adapter_scale,
            "beta_schedule": str(self.scheduler.config.get("beta_schedule")),
            "provenance": copy.deepcopy(self.provenance),
        }

    def __repr__(self) -> str:
        return (
            f"UNetDenoiser(name={self.name!r}, latent_shape={self.latent_shape}, "
            f"guidance_scale={self.guidance_scale}, adapter_scale={self.adapter_scale})"
        )


def _sample_hw(config) -> tuple[int, int]:
    """``(H, W)`` of the UNet's latents from its ``sample_size`` (an int or a pair)."""
    size = config.sample_size
    if isinstance(size, int):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def _jsonable_size(size: Any) -> int | list[int]:
    """A UNet ``sample_size`` (an int or a pair) as JSON: an int or a list."""
    return int(size) if isinstance(size, int) else [int(s) for s in size]


def _cross_attention_dim(config) -> int:
    """The UNet's single cross-attention width (per-block widths must all agree)."""
    dim = config.cross_attention_dim
    if isinstance(dim, (list, tuple)):
        if len(set(dim)) != 1:
            raise ValueError(f"UNetDenoiser needs one cross_attention_dim; got {tuple(dim)}")
        dim = dim[0]
    return int(dim)


# --------------------------------------------------------------------------------------------
# model pairs


def tiny_unet_family(
    variant: str = "perturbed",
    seed: int = 0,
    scale: float = 0.05,
    guidance_scale: float = 3.0,
    sample_size: int = 64,
    block_out_channels: Sequence[int] = (32, 64),
    cross_attention_dim: int = 32,
) -> tuple[UNetDenoiser, UNetDenoiser]:
    """A base tiny UNet (seed ``seed``, SD 1.x schedule) and a second model for AMDM to aggregate.

    ``variant``:
        - ``"perturbed"``: ``perturbed_unet(base, scale, seed + 1)``, same schedule;
        - ``"adapter"``: the same UNet object plus a ``ConvAdapter`` (seed ``seed + 1``) at
          ``adapter_scale = scale``, same schedule;
        - ``"independent"``: a UNet initialised with seed ``seed + 1000`` and the ``"linear"``
          schedule: a different ecosystem (``scale`` unused).

    Both models use ``guidance_scale`` and record ``{"variant", "seed", "scale", "role", ...}``
    as ``provenance`` in ``describe()``.
    """
    if variant not in UNET_VARIANTS:
        raise ValueError(f"variant must be one of {list(UNET_VARIANTS)}; got {variant!r}")
    seed = check_seed(seed)
    scale = check_finite("scale", scale, minimum=0.0)
    config = {
        "sample_size": sample_size,
        "block_out_channels": tuple(block_out_channels),
        "cross_attention_dim": cross_attention_dim,
    }
    common = {"variant": variant, "seed": seed, "scale": scale}
    base_unet = make_tiny_unet(seed, **config)
    base = UNetDenoiser(
        base_unet,
        guidance_scale=guidance_scale,
        name=f"tiny-unet-{seed}",
        provenance={**common, "role": "base", "init_seed": seed},
    )
    if variant == "perturbed":
        other = UNetDenoiser(
            perturbed_unet(base_unet, scale, seed + 1),
            guidance_scale=guidance_scale,
            name=f"tiny-unet-{seed}-perturbed",
            provenance={**common, "role": "variant", "init_seed": seed,
                        "perturbation_seed": seed + 1},
        )
    elif variant == "adapter":
        adapter = ConvAdapter(base.latent_shape[0], seed=seed + 1, cond_dim=cross_attention_dim)
        other = UNetDenoiser(
            base_unet,
            guidance_scale=guidance_scale,
            adapter=adapter,
            adapter_scale=scale,
            name=f"tiny-unet-{seed}-adapter",
            provenance={**common, "role": "variant", "init_seed": seed, "adapter_seed": seed + 1},
        )
    else:
        other_seed = seed + INDEPENDENT_SEED_OFFSET
        other = UNetDenoiser(
            make_tiny_unet(other_seed, **config),
            scheduler=make_scheduler("linear"),
            guidance_scale=guidance_scale,
            name=f"tiny-unet-{other_seed}",
            provenance={**common, "role": "variant", "init_seed": other_seed,
                        "schedule": "linear"},
        )
    return base, other

"""Small, seeded, randomly initialised UNets, their same-ecosystem variants, and conditions.

- ``tiny_unet_config`` / ``make_tiny_unet``: a small ``UNet2DConditionModel`` (float32, eval);
- ``perturbed_unet``: a "fine-tune" of a base UNet, every weight moved by ``scale`` of its own
  spread (same ecosystem, same SDE);
- ``ConvAdapter``: an additive adapter ``(z_t, t, cond) -> (B, C, H, W)`` for ``UNetDenoiser``;
- ``make_condition`` / ``condition_pair``: random "prompt embeddings" ``(1, seq_len, dim)``, the
  ``encoder_hidden_states`` a text encoder would produce.

Nothing here downloads anything, and no factory touches the global torch RNG.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch import nn

from amdm_geom.models.checks import check_finite, check_seed, cpu_generator, seeded_cpu_rng

__all__ = [
    "ConvAdapter",
    "condition_pair",
    "make_condition",
    "make_tiny_unet",
    "perturbed_unet",
    "tiny_unet_config",
]


def _default_norm_groups(block_out_channels: Sequence[int]) -> int:
    """The largest of 32, 16, ..., 1 dividing every block width (GroupNorm needs it)."""
    width = math.gcd(*block_out_channels)
    return next(g for g in (32, 16, 8, 4, 2, 1) if width % g == 0)


def tiny_unet_config(
    sample_size: int = 64,
    block_out_channels: Sequence[int] = (32, 64),
    cross_attention_dim: int = 32,
    in_channels: int = 4,
    layers_per_block: int = 1,
    attention_head_dim: int = 2,
    norm_num_groups: int | None = None,
    **extra: Any,
) -> dict:
    """A small ``UNet2DConditionModel`` config: a plain down block then cross-attention ones,
    mirrored on the way up (``("DownBlock2D", "CrossAttnDownBlock2D")`` for two widths).

    ``attention_head_dim`` is passed as diffusers names it, but for this UNet diffusers uses it
    as the number of heads; it must divide every block width. ``norm_num_groups`` defaults to
    the largest of 32, 16, ..., 1 dividing every width, so ``block_out_channels=(4, 8)`` works.
    ``extra`` keys are added to the config as they are.
    """
    channels = tuple(int(c) for c in block_out_channels)
    if len(channels) < 2 or min(channels) < 1:
        raise ValueError(
            f"block_out_channels must hold >= 2 positive widths; got {block_out_channels!r}"
        )
    groups = _default_norm_groups(channels) if norm_num_groups is None else int(norm_num_groups)
    if any(c % groups for c in channels):
        raise ValueError(f"norm_num_groups must divide every block width {channels}; got {groups}")
    if any(c % attention_head_dim for c in channels):
        raise ValueError(
            f"attention_head_dim (the number of heads) must divide every block width {channels}; "
            f"got {attention_head_dim}"
        )
    n_cross = len(channels) - 1
    return {
        "sample_size": int(sample_size),
        "in_channels": int(in_channels),
        "out_channels": int(in_channels),
        "layers_per_block": int(layers_per_block),
        "block_out_channels": channels,
        # attention below the full resolution, as in diffusers' own tiny test UNets: at 64x64 a
        # self-attention over 4096 tokens would cost 3x the rest of the network
        "down_block_types": ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * n_cross,
        "up_block_types": ("CrossAttnUpBlock2D",) * n_cross + ("UpBlock2D",),
        "cross_attention_dim": int(cross_attention_dim),
        "attention_head_dim": int(attention_head_dim),
        "norm_num_groups": groups,
        **extra,
    }


def make_tiny_unet(seed: int = 0, **config_overrides: Any) -> UNet2DConditionModel:
    """A randomly initialised float32 UNet from ``tiny_unet_config(**config_overrides)``, in eval
    mode, seeded by ``seed`` without disturbing the global torch RNG."""
    config = tiny_unet_config(**config_overrides)
    with seeded_cpu_rng(check_seed(seed)):
        unet = UNet2DConditionModel(**config)
    # .float(), not .to(torch.float32): diffusers' ModelMixin.to logs a "keep in float32"
    # warning on every dtype cast, even for models with no such modules.
    return unet.float().eval()


def _perturbation_scale(p: torch.Tensor) -> float:
    """The spread a parameter is perturbed relative to: its std, or for a single element or a
    constant tensor (e.g. GroupNorm weights of 1) its mean absolute value (0 for zeros)."""
    values = p.detach().to(torch.float64)
    if values.numel() > 1:
        std = float(values.std())
        if std > 0:
            return std
    return float(values.abs().mean())


def perturbed_unet(base: UNet2DConditionModel, scale: float, seed: int) -> UNet2DConditionModel:
    """A deep copy of ``base`` with every floating parameter moved to ``p + scale * sigma_p * xi``,
    ``xi ~ N(0, 1)`` seeded by ``seed`` (global RNG untouched), ``sigma_p`` the parameter's std
    (its mean absolute value when it has one element or is constant; all-zero parameters stay
    zero). ``scale = 0`` gives identical weights: a stand-in for a fine-tune of the base."""
    scale = check_finite("scale", scale, minimum=0.0)
    generator = cpu_generator(check_seed(seed))
    variant = copy.deepcopy(base).eval()
    with torch.no_grad():
        for p in variant.parameters():
            if not p.is_floating_point():
                continue
            xi = torch.randn(p.shape, generator=generator, dtype=torch.float32)  # like p
            sigma = _perturbation_scale(p)
            if scale == 0 or sigma == 0:
                continue
            p.add_((scale * sigma * xi).to(device=p.device, dtype=p.dtype))
    return variant


class ConvAdapter(nn.Module):
    """A small additive adapter ``(z_t, t, cond) -> (B, C, H, W)``, shaped like the latents.

    ``conv3x3 -> (+ projection of the pooled condition) -> SiLU -> conv3x3``, times the fixed
    time gain ``0.5 + t / num_train_timesteps``; weights are PyTorch's default random init,
    seeded by ``seed`` (global RNG untouched). ``UNetDenoiser`` scales it in by
    ``adapter_scale``, so scale 0 is the zero-initialised adapter (the base exactly).

    Args:
        in_channels: latent channels C.
        hidden: hidden channels.
        seed: init seed.
        cond_dim: width of the condition embedding; None ignores the condition.
        num_train_timesteps: the timestep range the time gain is normalised by.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int = 16,
        seed: int = 0,
        cond_dim: int | None = None,
        num_train_timesteps: int = 1000,
    ) -> None:
        super().__init__()
        self.num_train_timesteps = int(num_train_timesteps)
        with seeded_cpu_rng(check_seed(seed)):
            self.conv_in = nn.Conv2d(in_channels, hidden, kernel_size=3, padding=1)
            self.cond_proj = nn.Linear(cond_dim, hidden) if cond_dim is not None else None
            self.conv_out = nn.Conv2d(hidden, in_channels, kernel_size=3, padding=1)
        self.eval()

    def time_gain(self, t: int | torch.Tensor) -> float:
        """The fixed time dependence ``0.5 + t / num_train_timesteps``."""
        return 0.5 + float(t) / self.num_train_timesteps

    def forward(
        self, z_t: torch.Tensor, t: int | torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``z_t (B, C, H, W)``, ``t`` a timestep, ``cond (1 or B, seq, cond_dim)``
        -> ``(B, C, H, W)``."""
        h = self.conv_in(z_t)  # (B, hidden, H, W)
        if self.cond_proj is not None and cond is not None:
            pooled = cond.mean(dim=1)  # (1 or B, cond_dim)
            h = h + self.cond_proj(pooled)[:, :, None, None]  # (1 or B, hidden, 1, 1) broadcast
        return self.conv_out(F.silu(h)) * self.time_gain(t)


def make_condition(seed: int, seq_len: int = 8, dim: int = 32) -> torch.Tensor:
    """Seeded standard-normal "prompt embeddings" ``(1, seq_len, dim)`` (global RNG untouched)."""
    return torch.randn((1, seq_len, dim), generator=cpu_generator(check_seed(seed)))


def condition_pair(
    seed: int, distance: float = 0.1, seq_len: int = 8, dim: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two nearby conditions ``(y1, y2)``, each ``(1, seq_len, dim)``: ``y1 = make_condition(seed)``
    and ``y2 = y1 + distance * xi`` with ``xi`` standard normal, drawn next from the same seeded
    generator."""
    distance = check_finite("distance", distance, minimum=0.0)
    generator = cpu_generator(check_seed(seed))
    y1 = torch.randn((1, seq_len, dim), generator=generator)
    xi = torch.randn((1, seq_len, dim), generator=generator)
    return y1, y1 + distance * xi

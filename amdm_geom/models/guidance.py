"""Classifier-free guidance, one rule for every denoiser (tiny UNets, pipelines, the exact
mixtures).

    eps = eps_u + s (eps_c - eps_u)

diffusers' pipelines guide only when ``guidance_scale > 1`` (``do_classifier_free_guidance``
of ``StableDiffusionPipeline``): at s <= 1 they make one conditional call and return eps_c, so
s = 0.5 is not a blend towards eps_u. This toolkit follows the same rule, so a denoiser's eps at
a given scale is what the corresponding pipeline computes. (diffusers also skips it for
guidance-distilled UNets, those with a ``time_cond_proj_dim``; no denoiser here is one.)
"""

from __future__ import annotations

import torch

__all__ = ["guided", "uses_guidance"]


def uses_guidance(guidance_scale: float) -> bool:
    """diffusers' ``do_classifier_free_guidance``: guidance only for a scale above 1."""
    return guidance_scale > 1.0


def guided(eps_u: torch.Tensor, eps_c: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """``eps_u + s (eps_c - eps_u)`` (B, ...): the guided epsilon at scale ``s`` > 1; the caller
    skips the unconditional call (and this function) where ``uses_guidance`` is false."""
    return eps_u + guidance_scale * (eps_c - eps_u)

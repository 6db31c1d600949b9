"""Denoisers: ``out = model(z_t, t, cond)`` (eps, v or x0, as the model's scheduler says) with the
model's noise schedule attached.

- ``base``: the protocol, the ecosystem (schedule) check, condition kinds and null conditions.
- ``guidance``: the one classifier-free guidance rule (diffusers': guide only when s > 1).
- ``gmm``: exact epsilon of Gaussian mixtures in any dimension, and the fine-grained family.
- ``unet``: diffusers UNet2DConditionModel with classifier-free guidance; ``tiny_unets``: the
  tiny offline factories (configs, perturbed copies, adapters, conditions); ``checks``: seeds
  and finite-number checks shared by them.
- ``ve``: a model seen through the VE SDE.
- ``pipelines``: diffusers pipelines from local weights as denoisers; ``fingerprint``: what
  identifies a pipeline's ecosystem (VAE config and weights hash, scheduler keys).
"""

from .base import Denoiser, check_latents, condition_kind, cross_terms, has_null_condition, same_schedule

__all__ = ["Denoiser", "check_latents", "condition_kind", "cross_terms", "has_null_condition", "same_schedule"]

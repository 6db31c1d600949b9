"""Denoisers: ``eps = model(z_t, t, cond)`` with the model's noise schedule attached.

- ``base``: the protocol and the ecosystem (schedule) check.
- ``gmm``: exact epsilon of Gaussian mixtures in any dimension, and the fine-grained family.
- ``unet``: diffusers UNet2DConditionModel with classifier-free guidance, tiny offline factories.
"""

from .base import Denoiser, check_latents, same_schedule

__all__ = ["Denoiser", "check_latents", "same_schedule"]

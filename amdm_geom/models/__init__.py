"""Denoisers: ``out = model(z_t, t, cond)`` (eps, v or x0, as the model's scheduler says) with the
model's noise schedule attached.

- ``base``: the protocol, the ecosystem (schedule) check, condition kinds and null conditions.
- ``guidance``: the one classifier-free guidance rule (diffusers': guide only when s > 1).
- ``gmm``: exact epsilon of Gaussian mixtures in any dimension, and the fine-grained family.
- ``unet``: diffusers UNet2DConditionModel with classifier-free guidance; ``tiny_unets``: the
  tiny offline factories (configs, perturbed copies, adapters, conditions); ``checks``: seeds
  and finite-number checks shared by them.
- ``ve``: a model seen through the VE SDE.
- ``pipelines``: diffusers pipelines (SD and SD3) from local weights as one denoiser, with
  ``pipeline_kinds`` the small per-kind strategy (scheduler check, the call, the VAE's scale and
  shift) and ``pipeline_specs`` the one place each pipeline option is declared; ``fingerprint``:
  what identifies a pipeline's ecosystem (VAE config and weights hash, scheduler keys).
- Rectified flow (App. G; velocity denoisers ``v = model(z_t, t, cond)``, ``t = s * 1000``):
  ``flow_gmm``, the exact velocity of Gaussian mixtures under ``z_s = (1 - s) x0 + s eps`` and the
  fine-grained family's flow models; ``transformers``, tiny seeded SD3-, Flux- and DiT-style
  transformers and their fine-tunes.
- ``specs``: the typed model specs (``build()`` is each model's one constructor); ``constants``:
  the names and numbers several of these share, defined once; ``ecosystem``: Section 3.1's check;
  ``digits``: the trained digits ecosystem.
"""

from amdm_geom.models.base import (
    Denoiser,
    check_latents,
    condition_kind,
    cross_terms,
    has_null_condition,
    same_schedule,
)

__all__ = ["Denoiser", "check_latents", "condition_kind", "cross_terms", "has_null_condition", "same_schedule"]

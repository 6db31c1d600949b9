"""The names and numbers the model families share, each defined once, here, where the specs
(which import no torch) and the torch modules that build the models both read them."""

from __future__ import annotations

__all__ = ["CHECKPOINT_SUFFIXES", "INDEPENDENT_SEED_OFFSET", "MAX_GLIGEN_OBJECTS", "TRAIN_TIMESTEPS",
           "TRANSFORMER_KINDS", "UNET_VARIANTS"]

#: The training timesteps of every schedule ``amdm_geom.core.schedules.make_scheduler`` builds (SD 1.x's).
TRAIN_TIMESTEPS = 1000
#: How a tiny UNet pair's second model relates to its first (``amdm_geom.models.unet.tiny_unet_family``):
#: a weight-perturbed copy, the base plus a scaled-in adapter, or an independent UNet on another schedule.
UNET_VARIANTS = ("perturbed", "adapter", "independent")
#: The seed offset of the "independent" variant's second UNet (seed + 1000).
INDEPENDENT_SEED_OFFSET = 1000
#: The tiny flow transformers' families (``amdm_geom.models.transformers``): SD3's MMDiT, Flux's, DiT.
TRANSFORMER_KINDS = ("sd3", "flux", "dit")
#: The most GLIGEN boxes a pipeline grounds, as ``StableDiffusionGLIGENPipeline``.
MAX_GLIGEN_OBJECTS = 30
#: The file suffixes of single-file checkpoints a pipeline loads from (``amdm_geom.models.pipelines``).
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")

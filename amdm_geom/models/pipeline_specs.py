"""Typed specs of diffusers pipelines from local weights (``amdm_geom.core.spec``): one spec per
pipeline kind, each the one place its options are declared. A probe nests them (one per model),
the command line shows their fields (``--model-a.guidance``), a store keeps them as JSON, and
``build(dtype)`` is the one way to make the denoiser (``amdm_geom.models.pipelines``).

- ``PipelineSpec``: what every pipeline takes: the weights (a pipeline folder, or a single
  checkpoint file with its config folder), a LoRA, the device, classifier-free guidance and the
  image size;
- ``SDPipelineSpec``: a Stable Diffusion pipeline (SD 1.x/2.x, GLIGEN; IP-Adapter), stepped by
  DDIM (eq. 4);
- ``SD3PipelineSpec``: a Stable Diffusion 3 pipeline, a rectified flow stepped by its own
  flow-matching scheduler (App. G, eq. 42).

The model's dtype is the run's (``build(dtype)``), so it is set in one place. Nothing here
imports torch or diffusers except to check a device.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import BeforeValidator, ValidationInfo

from amdm_geom.core.spec import Spec, SpecError, existing, integer, optional, real

__all__ = ["Device", "ImageSize", "PIPELINE_SPECS", "PipelineSpec", "SD3PipelineSpec",
           "SDPipelineSpec", "device"]


def _device(value, info: ValidationInfo):
    """A torch device this machine has: cpu, cuda, cuda:N (N < the number of GPUs) or mps."""
    import torch

    text = str(value)
    available = ["cpu"]
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_cuda:
        available += ["cuda"] + [f"cuda:{i}" for i in range(min(n_cuda, 4))] + (["..."] if n_cuda > 4 else [])
    has_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if has_mps:
        available.append("mps")
    here = f" (available here: {', '.join(available)})"
    match = re.fullmatch(r"(cpu|mps|cuda)(?::(\d+))?", text) if isinstance(value, str) else None
    if not match or (match.group(1) != "cuda" and match.group(2) is not None):
        raise SpecError(f"must be cpu, cuda, cuda:N or mps{here}", value)
    kind, index = match.group(1), match.group(2)
    if kind == "cuda" and not n_cuda:
        why = "this torch is a CPU build" if torch.version.cuda is None else "torch finds no CUDA GPU"
        raise SpecError(f"is not available: {why} (torch {torch.__version__}){here}", value)
    if kind == "cuda" and index is not None and int(index) >= n_cuda:
        raise SpecError(f"is not available: there are {n_cuda} CUDA devices{here}", value)
    if kind == "mps" and not has_mps:
        raise SpecError(f"is not available: MPS is not available here{here}", value)
    return text


def _image_size(value, info: ValidationInfo):
    """An image side in pixels: a positive multiple of 8 (the VAE's factor)."""
    try:
        v = integer(8, accepted="a positive multiple of 8 (pixels)").func(value, info)
    except SpecError:
        v = None
    if v is None or v % 8:
        raise SpecError("must be a positive multiple of 8 (pixels)", value)
    return v


def device(value) -> str:
    """``value`` if it names a torch device this machine has; a one-line ``SpecError`` otherwise."""
    return _device(value, None)


Device = Annotated[str, BeforeValidator(_device)]
ImageSize = Annotated[int | None, optional(BeforeValidator(_image_size))]
NonNegFloat = Annotated[float, real(0.0)]


def _maybe(what: str):
    return Annotated[Path | None, optional(existing(what))]


class PipelineSpec(Spec):
    """A diffusers pipeline from local weights as a denoiser: a pipeline folder or a single
    checkpoint file, with an optional LoRA. Nothing is downloaded. A subclass per pipeline kind
    (``KIND``, the loader's and the denoiser's strategy) adds that kind's options."""

    #: The pipeline kind (``amdm_geom.models.pipeline_kinds``), its denoising network's folder and
    #: the sampler's step for it (``"ddim"`` or ``"flow"``).
    KIND: ClassVar[str] = ""
    NET: ClassVar[str] = ""
    STEP_KIND: ClassVar[str] = "ddim"

    path: Annotated[Path, existing("pipeline folder or checkpoint file")]
    """pipeline folder (save_pretrained layout) or checkpoint file."""
    config: _maybe("config folder") = None
    """local config folder for a single-file checkpoint."""
    lora: _maybe("LoRA weights file or folder") = None
    """LoRA weights (file or folder)."""
    lora_scale: Annotated[float, real()] = 1.0
    """LoRA scale."""
    device: Device = "cpu"
    """cpu, cuda, cuda:N or mps."""
    guidance: NonNegFloat = 7.5
    """classifier-free guidance scale, >= 0; <= 1 is no guidance."""
    height: ImageSize = None
    """image height, a multiple of 8 (default the model's)."""
    width: ImageSize = None
    """image width, a multiple of 8 (default the model's)."""
    name: str = ""
    """the model's name in the store (default its path)."""

    def latent_shape(self) -> tuple[int, int, int] | None:
        """The latent shape from the configs alone, as the denoiser sets it: ``(C, height / f,
        width / f)`` with C the network's in_channels, f the VAE's scale factor (2 ** (its blocks
        - 1)) and height and width by default the network's sample_size x f; ``None`` where the
        configs cannot be read (then a run's sizes are checked once the pipeline is loaded)."""
        folder = Path(self.config or self.path)
        try:
            vae = json.loads((folder / "vae" / "config.json").read_text())
            cfg = json.loads((folder / self.NET / "config.json").read_text())
            factor = 2 ** (len(vae["block_out_channels"]) - 1)
            channels, size = int(cfg["in_channels"]), int(cfg["sample_size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        height = size * factor if self.height is None else int(self.height)
        width = size * factor if self.width is None else int(self.width)
        return (channels, height // factor, width // factor)

    def load_options(self) -> dict:
        """Keyword arguments this spec adds to diffusers' ``from_pretrained`` / ``from_single_file``
        (none here): a kind's option that diffusers takes as it is is one field and one entry."""
        return {}

    def encode_options(self) -> dict:
        """Keyword arguments this spec adds to the pipeline's own ``encode_prompt`` (none here)."""
        return {}

    def build(self, dtype: str = "float32"):
        """The ``PipelineDenoiser`` in ``dtype`` (this loads the weights)."""
        from amdm_geom.models.pipelines import PipelineDenoiser, load_pipeline

        return PipelineDenoiser(load_pipeline(self, dtype), self)


class SDPipelineSpec(PipelineSpec):
    """A Stable Diffusion pipeline (SD 1.x/2.x, GLIGEN) from local weights, stepped by DDIM (eq. 4):
    a pipeline folder or a single checkpoint file, with an optional LoRA and IP-Adapter."""

    KIND: ClassVar[str] = "sd"
    NET: ClassVar[str] = "unet"

    gligen_beta: Annotated[float, real(0.0, 1.0)] = 0.3
    """share of steps with GLIGEN grounding, in [0, 1] (GLIGEN pipelines)."""
    ip_adapter: _maybe("IP-Adapter weights folder or file") = None
    """IP-Adapter weights folder or file (the run's --ip-adapter-image is then its condition)."""
    ip_adapter_weight_name: str | None = None
    """weights file name inside ip_adapter."""
    ip_adapter_subfolder: str = ""
    """subfolder of ip_adapter."""
    ip_adapter_image_encoder: _maybe("image encoder folder") = None
    """image encoder folder (default the pipeline's)."""
    ip_adapter_scale: NonNegFloat = 0.8
    """IP-Adapter scale, >= 0."""


class SD3PipelineSpec(PipelineSpec):
    """A Stable Diffusion 3 pipeline from local weights, a velocity model stepped by its own
    flow-matching scheduler (App. G, eq. 42): a pipeline folder or a single checkpoint file, with
    an optional LoRA."""

    KIND: ClassVar[str] = "sd3"
    NET: ClassVar[str] = "transformer"
    STEP_KIND: ClassVar[str] = "flow"

    guidance: NonNegFloat = 7.0
    """classifier-free guidance scale, >= 0; <= 1 is no guidance."""
    max_sequence_length: Annotated[int, integer(1, 513)] = 256
    """T5 tokens of the prompt, in [1, 512]."""

    def encode_options(self) -> dict:
        return {"max_sequence_length": self.max_sequence_length}


#: kind -> its spec.
PIPELINE_SPECS: dict[str, type[PipelineSpec]] = {s.KIND: s for s in (SDPipelineSpec, SD3PipelineSpec)}

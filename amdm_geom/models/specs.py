"""Typed specs of the model families (``amdm_geom.core.spec``): what to build, checked before any
weights are made or read, and kept as JSON in every store so that a run can be repeated.

- ``GMMFamilySpec``: the fine-grained Gaussian-mixture family (``gmm.fine_grained_family``);
- ``GMMModelSpec``: one exact model of that family, conditioned on one attribute value, under a
  VP schedule or in VE coordinates (``ve.VEDenoiser``);
- ``TinyUNetPairSpec``: two tiny seeded diffusers UNets (``unet.tiny_unet_family``) and their
  nearby conditions;
- ``PipelineSpec``: a diffusers pipeline from local weights (``pipelines.load_pipeline``);
- ``FlowGMMModelSpec``: one exact model of the GMM family under the rectified flow
  (``flow_gmm.flow_family_model``);
- ``TinyTransformerPairSpec``: a tiny seeded SD3-, Flux- or DiT-style transformer and its
  fine-tune, one flow ecosystem (``transformers.tiny_transformer_pair``);
- ``FlowPipelineSpec``: an SD3 pipeline from local weights (``flow_pipelines.load_flow_pipeline``).

Building imports torch and diffusers; the specs themselves do not.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from amdm_geom.core.spec import MAX_SEED, Spec, SpecError, choice, existing, integer, optional, real, seed, sequence

__all__ = ["ATTRIBUTES", "DEFAULT_SHAPE", "Device", "FlowGMMModelSpec", "FlowPipelineSpec", "GMMFamilySpec",
           "GMMModelSpec", "ImageSize", "LocalWeightsSpec", "PipelineSpec", "SDES", "TRAIN_TIMESTEPS",
           "TRANSFORMER_KINDS", "TinyTransformerPairSpec", "TinyUNetPairSpec", "UNET_VARIANTS", "VP_SCHEDULES",
           "device"]

#: The latent shape of SD 1.x at 512x512.
DEFAULT_SHAPE = (4, 64, 64)
#: The training timesteps of every schedule ``amdm_geom.core.schedules.make_scheduler`` builds (SD 1.x's).
TRAIN_TIMESTEPS = 1000
#: The VP schedules of ``amdm_geom.core.schedules.SCHEDULE_KINDS`` (listed here so that specs import no torch).
VP_SCHEDULES = ("scaled_linear", "linear", "cosine")
#: A GMM model's SDE: a VP schedule, or ``"ve"``, SD's scaled-linear model in VE coordinates.
SDES = (*VP_SCHEDULES, "ve")
ATTRIBUTES = ("position", "colour", "style")
#: ``amdm_geom.models.unet.FAMILY_VARIANTS``.
UNET_VARIANTS = ("perturbed", "adapter", "independent")
#: ``amdm_geom.models.transformers.KINDS``.
TRANSFORMER_KINDS = ("sd3", "flux", "dit")
#: ``tiny_unet_family``'s independent variant initialises its second UNet with seed + 1000.
_INDEPENDENT_OFFSET = 1000

PositiveInt = Annotated[int, integer(1)]
NonNegInt = Annotated[int, integer(0)]
NonNegFloat = Annotated[float, real(0.0)]
Seed = Annotated[int, seed()]


class GMMFamilySpec(Spec):
    """The exact Gaussian-mixture family: components indexed by position x colour (x style), at
    SD's latent size by default (``amdm_geom.models.gmm.fine_grained_family``)."""

    latent_shape: Annotated[tuple[int, ...], sequence(integer(1), accepted="one or more ints >= 1", min_len=1)] = \
        DEFAULT_SHAPE
    """per-sample latent shape, positive ints."""
    n_positions: PositiveInt = Field(4, alias="positions")
    """values of attribute 1 (position)."""
    n_colours: PositiveInt = Field(4, alias="colours")
    """values of attribute 2 (colour)."""
    n_styles: PositiveInt = Field(1, alias="styles")
    """values of attribute 3 (style; 1: no third attribute)."""
    separation: NonNegFloat = 8.0
    """distance between components, >= 0."""
    component_std: Annotated[float, real(0.0, low_open=True)] = 0.6
    """per-coordinate component std, > 0."""
    strength: Annotated[float, real(0.0, 1.0, low_open=True)] = 0.9
    """mass a condition puts on its components, in (0, 1]."""
    seed: Seed = Field(0, alias="family_seed")
    """seed of the components."""

    def build(self):
        """The family (``FineGrainedFamily``)."""
        from amdm_geom.models.gmm import fine_grained_family

        return fine_grained_family(tuple(self.latent_shape), n_positions=self.n_positions, n_colours=self.n_colours,
                                   n_styles=self.n_styles, separation=self.separation,
                                   component_std=self.component_std, strength=self.strength, seed=self.seed)

    def size(self, attribute: str) -> int:
        """How many values ``attribute`` takes."""
        return {"position": self.n_positions, "colour": self.n_colours, "style": self.n_styles}[attribute]


class GMMModelSpec(Spec):
    """One exact model of the GMM family: conditioned on ``attribute = value``, under a VP schedule
    or in VE coordinates."""

    attribute: Annotated[Literal["position", "colour", "style"], choice(*ATTRIBUTES)]
    """the attribute its condition favours."""
    value: NonNegInt = 0
    """the attribute's value."""
    sde: Annotated[Literal["scaled_linear", "linear", "cosine", "ve"], choice(*SDES)] = "scaled_linear"
    """a VP schedule, or ve: the scaled-linear model in VE coordinates (EDM-style)."""
    guidance: NonNegFloat = 1.0
    """guidance scale, >= 0."""
    perturb: NonNegFloat = 0.0
    """perturb the means by this share of the separation (a "fine-tune"), >= 0."""
    name: str = ""
    """the model's name in the store (default: the attribute, and the SDE unless scaled_linear)."""

    def check(self, family: GMMFamilySpec) -> None:
        """The value against the family's size (a one-line ``SpecError`` on ``value``)."""
        size = family.size(self.attribute)
        if self.attribute == "style" and size == 1:
            raise SpecError("style needs a family with styles > 1", self.attribute, loc=("attribute",))
        if self.value >= size:
            raise SpecError(f"must be in [0, {size})", self.value, loc=("value",))

    def build(self, family, dtype=None):
        """``(denoiser, condition)`` from a built family (``GMMFamilySpec.build()``)."""
        import torch

        from amdm_geom.models.ve import VEDenoiser

        dtype = torch.float32 if dtype is None else dtype
        attr, sde = self.attribute, self.sde
        name = self.name or (attr if sde in ("scaled_linear", "ve") else f"{attr} ({sde})")
        model = family.model("scaled_linear" if sde == "ve" else sde, guidance_scale=self.guidance, dtype=dtype,
                             name=name, perturb=self.perturb)
        if sde == "ve":
            model = VEDenoiser(model, name=self.name or f"{attr} (VE)")
        return model, family.condition(**{attr: self.value})


class TinyUNetPairSpec(Spec):
    """Two tiny diffusers UNets, built offline from a seed, and two nearby conditions
    (``amdm_geom.models.unet.tiny_unet_family``, ``condition_pair``)."""

    variant: Annotated[Literal["perturbed", "adapter", "independent"], choice(*UNET_VARIANTS)] = "perturbed"
    """how model 2 relates to model 1: a weight-perturbed copy, the base plus a scaled-in adapter, or an
    independent UNet on another schedule (a different ecosystem)."""
    scale: NonNegFloat = 0.05
    """perturbation or adapter scale, >= 0."""
    sample_size: PositiveInt = 64
    """latent height and width, >= 1 (64: SD's 4x64x64)."""
    channels: Annotated[tuple[int, ...], sequence(integer(1), accepted="positive block widths")] = (32, 64)
    """block_out_channels: two or more widths, each divisible by the heads and norm groups."""
    guidance: NonNegFloat = 3.0
    """classifier-free guidance scale, >= 0."""
    cond_distance: NonNegFloat = 0.1
    """distance between y1 and y2, >= 0."""
    model_seed: Annotated[int, seed(f"an int in [0, 2**63 - {_INDEPENDENT_OFFSET})")] = 0
    """seed of the UNets and conditions (the independent variant's second UNet uses seed + 1000)."""

    @field_validator("model_seed", mode="after")
    @classmethod
    def _room_for_the_second_unet(cls, value: int) -> int:
        if value + _INDEPENDENT_OFFSET >= MAX_SEED:
            raise SpecError(f"must be an int in [0, 2**63 - {_INDEPENDENT_OFFSET})", value)
        return value

    @field_validator("channels", mode="after")
    @classmethod
    def _widths(cls, value: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        if len(value) < 2:
            raise SpecError("takes two or more block widths", value)
        from amdm_geom.models.tiny_unets import (
            tiny_unet_config,  # (a pure function: widths against heads and norm groups)
        )

        try:
            tiny_unet_config(sample_size=info.data.get("sample_size", 64), block_out_channels=value)
        except ValueError as exc:
            raise SpecError(f"refused ({exc})", value) from None
        return value

    @property
    def insists(self) -> bool:
        """Whether the pair is of two ecosystems (the independent variant)."""
        return self.variant == "independent"

    def build(self):
        """``([model1, model2], [y1, y2])``."""
        from amdm_geom.models.unet import condition_pair, tiny_unet_family

        m1, m2 = tiny_unet_family(self.variant, seed=self.model_seed, scale=self.scale, guidance_scale=self.guidance,
                                  sample_size=self.sample_size, block_out_channels=tuple(self.channels))
        y1, y2 = condition_pair(self.model_seed, distance=self.cond_distance, dim=m1.cross_attention_dim)
        return [m1, m2], [y1, y2]


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
        raise SpecError("must be a positive multiple of 8 (pixels)", value if isinstance(value, str) else value)
    return v


def device(value) -> str:
    """``value`` if it names a torch device this machine has; a one-line ``SpecError`` otherwise."""
    return _device(value, None)


Device = Annotated[str, BeforeValidator(_device)]
ImageSize = Annotated[int | None, optional(BeforeValidator(_image_size))]


class LocalWeightsSpec(Spec):
    """What every pipeline from local weights takes: where the weights are (a pipeline folder or a
    single checkpoint file with its config folder), an optional LoRA, the device and the dtype."""

    path: Annotated[Path, existing("pipeline folder or checkpoint file")]
    """pipeline folder (save_pretrained layout) or checkpoint file."""
    config: Annotated[Path | None, optional(existing("config folder"))] = None
    """local config folder for a single-file checkpoint."""
    lora: Annotated[Path | None, optional(existing("LoRA weights file or folder"))] = None
    """LoRA weights (file or folder)."""
    lora_scale: Annotated[float, real()] = 1.0
    """LoRA scale."""
    device: Device = "cpu"
    """cpu, cuda, cuda:N or mps."""
    dtype: Annotated[Literal["float16", "float32", "float64"], choice("float16", "float32", "float64")] = "float32"
    """model dtype."""


class PipelineSpec(LocalWeightsSpec):
    """A diffusers pipeline from local weights as a denoiser (``pipelines.load_pipeline``,
    ``PipelineDenoiser``): a pipeline folder or a single checkpoint file, with an optional LoRA
    and IP-Adapter. Nothing is downloaded."""

    guidance: NonNegFloat = 7.5
    """classifier-free guidance scale, >= 0; <= 1 is no guidance."""
    height: ImageSize = None
    """image height, a multiple of 8 (default the model's)."""
    width: ImageSize = None
    """image width, a multiple of 8 (default the model's)."""
    gligen_beta: Annotated[float, real(0.0, 1.0)] = 0.3
    """share of steps with GLIGEN grounding, in [0, 1]."""
    ip_adapter: Annotated[Path | None, optional(existing("IP-Adapter weights folder or file"))] = None
    """IP-Adapter weights folder or file."""
    ip_adapter_weight_name: str | None = None
    """weights file name inside ip_adapter."""
    ip_adapter_subfolder: str = ""
    """subfolder of ip_adapter."""
    ip_adapter_image_encoder: Annotated[Path | None, optional(existing("image encoder folder"))] = None
    """image encoder folder (default the pipeline's)."""
    ip_adapter_scale: NonNegFloat = 0.8
    """IP-Adapter scale, >= 0."""
    name: str = ""
    """the model's name in the store."""

    def build(self):
        """The ``PipelineDenoiser`` (loads the weights)."""
        from amdm_geom.models.pipelines import PipelineDenoiser, load_pipeline

        pipe = load_pipeline(self.path, device=self.device, dtype=self.dtype, config=self.config, lora=self.lora,
                             lora_scale=self.lora_scale, ip_adapter=self.ip_adapter,
                             ip_adapter_weight_name=self.ip_adapter_weight_name,
                             ip_adapter_subfolder=self.ip_adapter_subfolder,
                             ip_adapter_image_encoder=self.ip_adapter_image_encoder,
                             ip_adapter_scale=self.ip_adapter_scale)
        provenance = {"path": str(self.path), "lora": str(self.lora) if self.lora else None,
                      "ip_adapter": str(self.ip_adapter) if self.ip_adapter else None}
        return PipelineDenoiser(pipe, guidance_scale=self.guidance, height=self.height, width=self.width,
                                name=self.name or str(self.path), gligen_scheduled_sampling_beta=self.gligen_beta,
                                provenance=provenance)



# --------------------------------------------------------------------------------------------
# rectified-flow models (App. G)


class FlowGMMModelSpec(Spec):
    """One exact model of the GMM family under the rectified flow ``z_s = (1 - s) x0 + s eps``:
    conditioned on ``attribute = value``, its velocity in closed form
    (``flow_gmm.flow_family_model``)."""

    attribute: Annotated[Literal["position", "colour", "style"], choice(*ATTRIBUTES)]
    """the attribute its condition favours."""
    value: NonNegInt = 0
    """the attribute's value."""
    shift: Annotated[float, real(0.0, low_open=True)] = 1.0
    """the flow scheduler's time shift, > 0 (SD3 uses 3)."""
    guidance: NonNegFloat = 1.0
    """guidance scale, >= 0."""
    perturb: NonNegFloat = 0.0
    """perturb the means by this share of the separation (a "fine-tune"), >= 0."""
    name: str = ""
    """the model's name in the store (default: the attribute, "(flow)")."""

    def check(self, family: GMMFamilySpec) -> None:
        """The value against the family's size (a one-line ``SpecError`` on ``value``)."""
        GMMModelSpec(attribute=self.attribute, value=self.value).check(family)

    def build(self, family, dtype=None):
        """``(denoiser, condition)`` from a built family (``GMMFamilySpec.build()``)."""
        import torch

        from amdm_geom.models.flow_gmm import flow_family_model

        model = flow_family_model(family, shift=self.shift, guidance_scale=self.guidance,
                                  dtype=torch.float32 if dtype is None else dtype,
                                  name=self.name or f"{self.attribute} (flow)", perturb=self.perturb)
        return model, family.condition(**{self.attribute: self.value})


class TinyTransformerPairSpec(Spec):
    """A tiny seeded transformer velocity model and its perturbed copy, one flow ecosystem, with two
    nearby conditions (``transformers.tiny_transformer_pair``)."""

    kind: Annotated[Literal["sd3", "flux", "dit"], choice(*TRANSFORMER_KINDS)] = "sd3"
    """the family: sd3 (MMDiT), flux, or dit (class-conditional; its first output channels read as v)."""
    scale: NonNegFloat = 0.05
    """perturbation scale of model 2, >= 0."""
    sample_size: Annotated[int, integer(2)] = 8
    """latent height and width, an even int >= 2."""
    shift: Annotated[float, real(0.0, low_open=True)] = 1.0
    """the flow scheduler's time shift, > 0."""
    guidance: NonNegFloat = 1.0
    """classifier-free guidance scale, >= 0."""
    cond_distance: NonNegFloat = 0.1
    """distance between y1 and y2 (text embeddings), >= 0."""
    model_seed: Seed = 0
    """seed of the transformer and the conditions (the fine-tune uses seed + 1)."""

    @field_validator("sample_size", mode="after")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise SpecError("must be an even int >= 2 (2x2 patches)", value)
        return value

    def build(self):
        """``([model1, model2], [y1, y2])``."""
        from amdm_geom.models.transformers import tiny_transformer_pair

        return tiny_transformer_pair(self.kind, seed=self.model_seed, scale=self.scale, guidance_scale=self.guidance,
                                     shift=self.shift, cond_distance=self.cond_distance, sample_size=self.sample_size)


class FlowPipelineSpec(LocalWeightsSpec):
    """A Stable Diffusion 3 pipeline from local weights as a velocity denoiser
    (``flow_pipelines.load_flow_pipeline``, ``FlowPipelineDenoiser``): a pipeline folder or a single
    checkpoint file, with an optional LoRA. Nothing is downloaded."""

    guidance: NonNegFloat = 7.0
    """classifier-free guidance scale, >= 0; <= 1 is no guidance."""
    height: ImageSize = None
    """image height, a multiple of 8 (default the model's)."""
    width: ImageSize = None
    """image width, a multiple of 8 (default the model's)."""
    max_sequence_length: Annotated[int, integer(1, 512)] = 256
    """T5 tokens of the prompt, in [1, 512]."""
    name: str = ""
    """the model's name in the store."""

    def build(self):
        """The ``FlowPipelineDenoiser`` (loads the weights)."""
        from amdm_geom.models.flow_pipelines import FlowPipelineDenoiser, load_flow_pipeline

        pipe = load_flow_pipeline(self.path, device=self.device, dtype=self.dtype, config=self.config,
                                  lora=self.lora, lora_scale=self.lora_scale)
        provenance = {"path": str(self.path), "lora": str(self.lora) if self.lora else None}
        return FlowPipelineDenoiser(pipe, guidance_scale=self.guidance, height=self.height, width=self.width,
                                    max_sequence_length=self.max_sequence_length, name=self.name or str(self.path),
                                    provenance=provenance)

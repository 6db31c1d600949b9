"""Typed specs of the model families (``amdm_geom.core.spec``): what to build, checked before any
weights are made or read, and kept as JSON in every store so that a run can be repeated. Each
spec's ``build()`` is the one way its models are made.

- ``GMMFamilySpec``: the fine-grained Gaussian-mixture family (``gmm.fine_grained_family``);
- ``GMMModelSpec``: one exact model of that family, conditioned on one attribute value, under a
  VP schedule, in VE coordinates (``ve.VEDenoiser``) or under the rectified flow
  (``flow_gmm.flow_family_model``, App. G);
- ``TinyUNetPairSpec``: two tiny seeded diffusers UNets (``unet.tiny_unet_family``) and their
  nearby conditions;
- ``TinyTransformerPairSpec``: a tiny seeded SD3-, Flux- or DiT-style transformer and its
  fine-tune, one flow ecosystem (``transformers.tiny_transformer_pair``).

Pipelines from local weights have their own specs (``amdm_geom.models.pipeline_specs``).
Building imports torch and diffusers; the specs themselves do not.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from amdm_geom.core.spec import MAX_SEED, Spec, SpecError, choice, integer, real, seed, sequence
from amdm_geom.models.constants import INDEPENDENT_SEED_OFFSET, TRAIN_TIMESTEPS, TRANSFORMER_KINDS, UNET_VARIANTS

__all__ = ["ATTRIBUTES", "DEFAULT_SHAPE", "GMMFamilySpec", "GMMModelSpec", "INDEPENDENT_SEED_OFFSET", "SDES",
           "TRAIN_TIMESTEPS", "TRANSFORMER_KINDS", "TinyTransformerPairSpec", "TinyUNetPairSpec", "UNET_VARIANTS",
           "VP_SCHEDULES"]

#: The latent shape of SD 1.x at 512x512.
DEFAULT_SHAPE = (4, 64, 64)
#: The VP schedules of ``amdm_geom.core.schedules.SCHEDULE_KINDS`` (listed here so that specs import no torch).
VP_SCHEDULES = ("scaled_linear", "linear", "cosine")
#: A GMM model's SDE: a VP schedule; ``"ve"``, SD's scaled-linear model in VE coordinates; or
#: ``"flow"``, the rectified flow ``z_s = (1 - s) x0 + s eps`` (App. G).
SDES = (*VP_SCHEDULES, "ve", "flow")
ATTRIBUTES = ("position", "colour", "style")

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
    """One exact model of the GMM family: conditioned on ``attribute = value``, under a VP schedule,
    in VE coordinates or under the rectified flow (App. G: its velocity in closed form)."""

    attribute: Annotated[Literal[*ATTRIBUTES], choice(*ATTRIBUTES)]
    """the attribute its condition favours."""
    value: NonNegInt = 0
    """the attribute's value."""
    sde: Annotated[Literal[*SDES], choice(*SDES)] = "scaled_linear"
    """a VP schedule; ve: the scaled-linear model in VE coordinates (EDM-style); flow: the rectified flow."""
    shift: Annotated[float, real(0.0, low_open=True)] = 1.0
    """the flow scheduler's time shift, > 0 (SD3 uses 3; sde flow only)."""
    guidance: NonNegFloat = 1.0
    """guidance scale, >= 0."""
    perturb: NonNegFloat = 0.0
    """perturb the means by this share of the separation (a "fine-tune"), >= 0."""
    name: str = ""
    """the model's name in the store (default: the attribute, and the SDE unless scaled_linear)."""

    @field_validator("shift", mode="after")
    @classmethod
    def _a_flow_setting(cls, value: float, info: ValidationInfo) -> float:
        if value != 1.0 and info.data.get("sde", "flow") != "flow":
            raise SpecError("is the flow scheduler's time shift: it needs sde flow", value)
        return value

    @property
    def step_kind(self) -> str:
        """The sampler's step for this model: ``"flow"`` or ``"ddim"``."""
        return "flow" if self.sde == "flow" else "ddim"

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

        from amdm_geom.models.flow_gmm import flow_family_model
        from amdm_geom.models.ve import VEDenoiser

        dtype = torch.float32 if dtype is None else dtype
        attr, sde = self.attribute, self.sde
        name = self.name or (attr if sde in ("scaled_linear", "ve") else f"{attr} ({sde})")
        if sde == "flow":
            model = flow_family_model(family, shift=self.shift, guidance_scale=self.guidance, dtype=dtype, name=name,
                                      perturb=self.perturb)
        else:
            model = family.model("scaled_linear" if sde == "ve" else sde, guidance_scale=self.guidance, dtype=dtype,
                                 name=name, perturb=self.perturb)
        if sde == "ve":
            model = VEDenoiser(model, name=self.name or f"{attr} (VE)")
        return model, family.condition(**{attr: self.value})


class TinyUNetPairSpec(Spec):
    """Two tiny diffusers UNets, built offline from a seed, and two nearby conditions
    (``amdm_geom.models.unet.tiny_unet_family``, ``condition_pair``)."""

    variant: Annotated[Literal[*UNET_VARIANTS], choice(*UNET_VARIANTS)] = "perturbed"
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
    model_seed: Annotated[int, seed(f"an int in [0, 2**63 - {INDEPENDENT_SEED_OFFSET})")] = 0
    """seed of the UNets and conditions (the independent variant's second UNet uses seed + 1000)."""

    @field_validator("model_seed", mode="after")
    @classmethod
    def _room_for_the_second_unet(cls, value: int) -> int:
        if value + INDEPENDENT_SEED_OFFSET >= MAX_SEED:
            raise SpecError(f"must be an int in [0, 2**63 - {INDEPENDENT_SEED_OFFSET})", value)
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


class TinyTransformerPairSpec(Spec):
    """A tiny seeded transformer velocity model and its perturbed copy, one flow ecosystem, with two
    nearby conditions (``transformers.tiny_transformer_pair``)."""

    kind: Annotated[Literal[*TRANSFORMER_KINDS], choice(*TRANSFORMER_KINDS)] = "sd3"
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

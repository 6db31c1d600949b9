"""Typed specs of runs on the digits models (``amdm_geom.core.spec``): which shipped models, the
target (the attribute values asked for) and the guidance, checked before any weights are read,
and kept as JSON in every store.

Each model is conditioned on the target's values of the attributes it was trained on (the
others null): with the target (position 0, colour 0), the position fine-tune gets (0, -, -), the
colour fine-tune (-, 0, -) and the base (-, -, -).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import model_validator

from amdm_geom.core.spec import Spec, SpecError, choice, real, sequence
from amdm_geom.models.digits.data import N_VALUES

__all__ = ["DIGITS_GUIDANCE", "DIGITS_MODELS", "MODEL_ATTRIBUTES", "MODEL_ECOSYSTEM", "DigitsSpec"]

#: The shipped models and the attributes each is conditioned on (``train.ECOSYSTEM``, repeated
#: here so that specs import no torch; a test checks they agree).
MODEL_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "base": (), "position_scratch": ("position",), "position_linear": ("position",), "position": ("position",),
    "colour": ("colour",), "digit": ("digit",), "flow_base": (), "flow_position": ("position",),
    "flow_colour": ("colour",)}
DIGITS_MODELS = tuple(MODEL_ATTRIBUTES)
#: Each shipped model's SDE (Section 3.1: models share an ecosystem only if these agree): the VP
#: schedule of a v-prediction model ('vp:BETAS'), or 'flow' (App. G's rectified flow, shift 1).
MODEL_ECOSYSTEM: dict[str, str] = {
    "base": "vp:scaled_linear", "position_scratch": "vp:scaled_linear", "position_linear": "vp:linear",
    "position": "vp:scaled_linear", "colour": "vp:scaled_linear", "digit": "vp:scaled_linear",
    "flow_base": "flow", "flow_position": "flow", "flow_colour": "flow"}
#: Why the digits models run unguided by default (measured on position_scratch, 32 samples, 20
#: DDIM steps, the quadrant asked for read back): guidance 1: 1.00, 1.5: 0.97, 2: 0.53, 3: 0.09;
#: above 1 the guided v overshoots, x0 is clipped and most digits come out yellow (saturated R, G).
#: The clip is the cause: with x0 unclipped (``zoo.load(..., clip_sample=False)``, as SD's
#: schedulers leave it) the same networks keep their attribute up to guidance 7.5
#: (``analyses/digits/guidance``, the guidance curve).
DIGITS_GUIDANCE = 1.0


class DigitsSpec(Spec):
    """Shipped digits models, model 1 first, each conditioned on the target's values of its own
    attributes."""

    models: Annotated[tuple[Literal[DIGITS_MODELS], ...],
                      sequence(choice(*DIGITS_MODELS), accepted=f"one or more of {', '.join(DIGITS_MODELS)}",
                               min_len=1)] = ("position", "colour")
    """the models, model 1 first."""
    position: int | None = 0
    """the target quadrant 0..3 (top-left, top-right, bottom-left, bottom-right), or None."""
    colour: int | None = 0
    """the target colour 0..3 (red, green, blue, yellow), or None."""
    digit: int | None = None
    """the target digit class 0..9, or None."""
    guidance_scale: Annotated[float, real(0.0)] = DIGITS_GUIDANCE
    """classifier-free guidance scale of every model (diffusers' rule: guided only above 1; the
    default 1 is the conditional model: at 3 these tiny models over-saturate, see DIGITS_GUIDANCE)."""

    @model_validator(mode="after")
    def _check_values(self):
        for name in ("position", "colour", "digit"):
            v = getattr(self, name)
            top = N_VALUES[name] - 1
            if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= top):
                raise SpecError(f"must be an int in [0, {top}] or None", v, loc=(name,))
        return self

    @property
    def target(self) -> dict:
        return {"position": self.position, "colour": self.colour, "digit": self.digit}

    def condition(self, model: str):
        """Model ``model``'s condition ``(1, 3)``: the target's values of its attributes."""
        from amdm_geom.models.digits.net import as_condition

        return as_condition(**{a: v for a, v in self.target.items() if a in MODEL_ATTRIBUTES[model]})

    def mixed_ecosystems(self) -> bool:
        """Whether the models come from different SDEs (``MODEL_ECOSYSTEM``: another VP schedule, or flow and VP)."""
        return len({MODEL_ECOSYSTEM[m] for m in self.models}) > 1

    def build(self):
        """``(denoisers, conditions)``, one per model."""
        from amdm_geom.models.digits.zoo import load

        return ([load(m, guidance_scale=self.guidance_scale) for m in self.models],
                [self.condition(m) for m in self.models])

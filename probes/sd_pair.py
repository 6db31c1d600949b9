"""Probe: AMDM over real Stable Diffusion pipelines loaded from local weights.

Model A (theta_1) and, optionally, model B (theta_2) are Stable Diffusion pipelines
(``SDPipelineSpec``: a pipeline folder in the save_pretrained layout, or a single checkpoint file
with ``--model-a.config``, a local config folder); each can carry a LoRA and an IP-Adapter, and
has its own guidance. A GLIGEN pipeline is grounded by --gligen-boxes/--gligen-phrases; a model
with an IP-Adapter is conditioned on --ip-adapter-image. The run is recorded with the same store
schema as every probe, and the final latents are decoded by model A's VAE into PNG images beside
the store (``<out>_images/seed<seed>.png``). Models that the ecosystem check finds in different
ecosystems are refused unless --insist. Nothing is downloaded.

    amdm-geom probe sd --model-a.path PATH --model-b.path PATH --prompt "..." [--gligen-boxes ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from amdm_geom.core.spec import SpecError, existing, optional, real, sequence
from amdm_geom.models.constants import MAX_GLIGEN_OBJECTS
from amdm_geom.models.pipeline_specs import SDPipelineSpec
from amdm_geom.probes import pipeline_pair
from amdm_geom.probes.specs import RunSettings
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["NAME", "SUMMARY", "Spec", "build", "run"]

NAME = "sd"
SUMMARY = "AMDM over real Stable Diffusion pipelines from local weights (GLIGEN, IP-Adapter, LoRA)"


class Spec(pipeline_pair.PairSpec[SDPipelineSpec]):
    """AMDM over real Stable Diffusion pipelines from local weights (folders or single checkpoint
    files; LoRA, GLIGEN, IP-Adapter); the final latents are decoded into PNG images beside the
    store. Nothing is downloaded."""

    gligen_boxes: Annotated[tuple[float, ...] | None,
                            optional(sequence(real(0.0, 1.0), accepted="numbers in [0, 1]", min_len=1))] = None
    """GLIGEN boxes X0 Y0 X1 Y1 in [0, 1], four numbers each (for the GLIGEN model(s))."""
    gligen_phrases: tuple[str, ...] | None = None
    """one phrase per GLIGEN box."""
    ip_adapter_image: Annotated[Path | None, optional(existing("reference image"))] = None
    """the reference image of the model(s) with an IP-Adapter."""
    sampler: SamplerConfig = SamplerConfig()
    run: RunSettings = RunSettings(out=Path("data/runs/sd_pair.zarr"))

    def boxes(self) -> list[tuple[float, ...]] | None:
        """The GLIGEN boxes, four numbers each."""
        b = self.gligen_boxes
        return None if b is None else [tuple(b[i:i + 4]) for i in range(0, len(b), 4)]

    def check_models(self) -> None:
        super().check_models()
        self._check_gligen()
        adapted = [key for key in ("model_a", "model_b")
                   if getattr(self, key) is not None and getattr(self, key).ip_adapter is not None]
        if adapted and self.ip_adapter_image is None:
            raise SpecError("needs `ip_adapter_image`", loc=(adapted[0], "ip_adapter"))
        if not adapted and self.ip_adapter_image is not None:
            raise SpecError("needs a model with an IP-Adapter (`model_a.ip_adapter`)", loc=("ip_adapter_image",))

    def _check_gligen(self) -> None:
        boxes = self.boxes()
        if boxes is None:
            if self.gligen_phrases is not None:
                raise SpecError("needs `gligen_boxes`, one box per phrase", loc=("gligen_phrases",))
            return
        if len(self.gligen_boxes) % 4:
            raise SpecError("takes four numbers per box", self.gligen_boxes, loc=("gligen_boxes",), count=True)
        for box in boxes:
            if box[0] > box[2] or box[1] > box[3]:
                raise SpecError("boxes are X0 Y0 X1 Y1 with X0 <= X1 and Y0 <= Y1", box, loc=("gligen_boxes",))
        if len(boxes) > MAX_GLIGEN_OBJECTS:
            raise SpecError(f"takes at most {MAX_GLIGEN_OBJECTS} boxes", len(boxes), loc=("gligen_boxes",))
        if self.gligen_phrases is None or len(self.gligen_phrases) != len(boxes):
            raise SpecError(f"needs one phrase per box ({len(boxes)})", self.gligen_phrases or (),
                            loc=("gligen_phrases",), count=True)

    def condition_options(self, model) -> dict:
        """GLIGEN's boxes and phrases for a GLIGEN model, the reference image for a model with an
        IP-Adapter."""
        boxes, options = self.boxes(), {}
        if boxes is not None and model.is_gligen:
            options.update(gligen_boxes=[list(b) for b in boxes], gligen_phrases=list(self.gligen_phrases))
        if model.spec.ip_adapter is not None:
            from PIL import Image

            with Image.open(self.ip_adapter_image) as opened:
                options["ip_adapter_image"] = opened.convert("RGB")
        return options


def build(spec: Spec):
    """The ``AMDMSampler`` over the pipelines (this loads their weights)."""
    sampler = pipeline_pair.build(spec)
    if spec.gligen_boxes is not None and not any(m.is_gligen for m in sampler.models):
        raise ValueError("--gligen-boxes given, but no model is a GLIGEN pipeline")
    return sampler


def run(spec: Spec, *, quiet: bool = False) -> Path:
    """Run the probe into ``spec.run.out`` and decode the final latents into PNG images beside it."""
    return pipeline_pair.run(spec, lambda: build(spec), probe=NAME, quiet=quiet)

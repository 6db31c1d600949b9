"""Probe: AMDM over Stable Diffusion 3 pipelines (rectified flow, App. G) from local weights.

Model A (theta_1) and, optionally, model B (theta_2) are pipeline folders (save_pretrained
layout) or single checkpoint files (with --config-a/--config-b, a local config folder); each can
carry a LoRA. Each is a velocity model stepped by its own flow-matching scheduler (eq. 42's Euler
step), with classifier-free guidance as the SD3 pipeline does it. The run is recorded with the
same store schema as every probe, and the final latents are decoded by model A's VAE into PNG
images beside the store (``<out>_images/seed<seed>.png``). Models that the ecosystem check finds
in different ecosystems are refused unless --insist. Nothing is downloaded.

    amdm-geom probe sd3 --model-a PATH --model-b PATH --prompt "..." [--guidance 7 --steps 28 ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

from amdm_geom.core.spec import SpecError, existing, integer, optional, real
from amdm_geom.models.specs import Device, FlowPipelineSpec, ImageSize
from amdm_geom.probes.sd_pair import images_folder, pipeline_latent_shape
from amdm_geom.probes.specs import ProbeSpec, RunSettings, run_probe
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["NAME", "SUMMARY", "Spec", "build", "images_folder", "run"]

NAME = "sd3"
SUMMARY = "AMDM over Stable Diffusion 3 (rectified-flow) pipelines from local weights (LoRA)"


def _maybe(what: str):
    return Annotated[Path | None, optional(existing(what))]


class Spec(ProbeSpec):
    """AMDM over Stable Diffusion 3 pipelines (rectified flow, App. G) from local weights (folders or
    single checkpoint files; LoRA); the final latents are decoded into PNG images beside the
    store. Nothing is downloaded."""

    MAX_STEPS: ClassVar[int | None] = None  # (the sampler checks each pipeline's own schedule)

    model_a: Annotated[Path, existing("pipeline folder or checkpoint file")]
    """model 1 (theta_1): SD3 pipeline folder or checkpoint file."""
    model_b: _maybe("pipeline folder or checkpoint file") = None
    """model 2 (theta_2); omit for a single-model run."""
    config_a: _maybe("config folder") = None
    """local config folder for a single-file model A."""
    config_b: _maybe("config folder") = None
    """local config folder for a single-file model B."""
    lora_a: _maybe("LoRA weights file or folder") = None
    """LoRA weights (file or folder) for model A."""
    lora_b: _maybe("LoRA weights file or folder") = None
    """LoRA weights (file or folder) for model B."""
    lora_scale: Annotated[float, real()] = 1.0
    """LoRA scale."""
    device: Device = "cpu"
    """cpu, cuda, cuda:N or mps."""
    prompt: str
    """prompt of model A (and of model B unless prompt_b)."""
    prompt_b: str | None = None
    """prompt of model B."""
    negative_prompt: str | None = None
    """negative prompt of both models."""
    guidance: Annotated[float, real(0.0)] = 7.0
    """classifier-free guidance scale, >= 0; <= 1 is no guidance."""
    height: ImageSize = None
    """image height, a multiple of 8 (default the model's)."""
    width: ImageSize = None
    """image width, a multiple of 8 (default the model's)."""
    max_sequence_length: Annotated[int, integer(1, 512)] = 256
    """T5 tokens of the prompt, in [1, 512]."""
    sampler: SamplerConfig = SamplerConfig()
    run: RunSettings = RunSettings(out=Path("data/runs/sd3_pair.zarr"))

    @property
    def n_models(self) -> int:
        return 1 if self.model_b is None else 2

    def config(self) -> SamplerConfig:
        return self.sampler.replace(weights=()) if self.model_b is None else self.sampler

    def latent_shape(self) -> tuple[int, int, int] | None:
        """Model A's latent shape from its configs (``pipeline_latent_shape``), or None."""
        return pipeline_latent_shape(self.config_a or self.model_a, "transformer", self.height, self.width)

    def check_models(self) -> None:
        if self.model_b is None:
            for field in ("config_b", "lora_b", "prompt_b"):
                if getattr(self, field) is not None:
                    raise SpecError("needs `model_b`", loc=(field,))

    def pipelines(self) -> list[tuple[str, FlowPipelineSpec, str]]:
        """``(key, pipeline spec, prompt)`` of each model."""
        out = []
        for key, path, config, lora, prompt in (("a", self.model_a, self.config_a, self.lora_a, self.prompt),
                                                ("b", self.model_b, self.config_b, self.lora_b,
                                                 self.prompt_b or self.prompt)):
            if path is None:
                continue
            out.append((key, FlowPipelineSpec(
                path=path, config=config, lora=lora, lora_scale=self.lora_scale, device=self.device,
                dtype=self.run.dtype, guidance=self.guidance, height=self.height, width=self.width,
                max_sequence_length=self.max_sequence_length, name=f"{key}: {path}"), prompt))
        return out


def build(spec: Spec):
    """The ``AMDMSampler`` over the pipelines (this loads their weights)."""
    from amdm_geom.sampling import AMDMSampler

    models, conds = [], []
    for _, pipeline, prompt in spec.pipelines():
        model = pipeline.build()
        conds.append(model.condition(prompt, negative_prompt=spec.negative_prompt))
        models.append(model)
    return AMDMSampler(models, conds, spec.config())


def run(spec: Spec, *, quiet: bool = False) -> Path:
    """Run the probe into ``spec.run.out`` and decode the final latents into PNG images beside it."""
    folder = images_folder(spec.run.out)
    built = []

    def make():
        built.append(build(spec))
        return built[0]

    def save_images(out) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for seed, image in zip(out.seeds, built[0].models[0].decode(out.z0)):
            image.save(folder / f"seed{seed}.png")
        if not quiet:
            print(f"decoded {len(out.seeds)} images into {folder}")

    return run_probe(spec, make, probe=NAME, quiet=quiet, after=save_images)

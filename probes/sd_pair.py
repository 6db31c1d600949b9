"""Probe: AMDM over real Stable Diffusion pipelines loaded from local weights.

Model A (theta_1) and, optionally, model B (theta_2) are pipeline folders (save_pretrained
layout) or single checkpoint files (with --config-a/--config-b, a local config folder). Each
can carry a LoRA; a GLIGEN pipeline takes --gligen-boxes/--gligen-phrases; an IP-Adapter can be
loaded into one of them. The run is recorded with the same store schema as every probe, and the
final latents are decoded by model A's VAE into PNG images beside the store
(``<out>_images/seed<seed>.png``). Models that the ecosystem check finds in different ecosystems
are refused unless --insist. Nothing is downloaded.

    amdm-geom probe sd --model-a PATH --model-b PATH --prompt "..." [--gligen-boxes ...] [--ip-adapter ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from amdm_geom.core.spec import SpecError, choice, existing, optional, real, sequence
from amdm_geom.models.specs import Device, ImageSize, PipelineSpec
from amdm_geom.probes.specs import ProbeSpec, RunSettings, run_probe
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["MAX_GLIGEN_OBJECTS", "NAME", "SUMMARY", "Spec", "build", "images_folder", "pipeline_latent_shape", "run"]

NAME = "sd"
SUMMARY = "AMDM over real Stable Diffusion pipelines from local weights (GLIGEN, IP-Adapter, LoRA)"
MAX_GLIGEN_OBJECTS = 30  # as StableDiffusionGLIGENPipeline (amdm_geom.models.pipelines)

Model = Annotated[Path, existing("pipeline folder or checkpoint file")]


def _maybe(what: str):
    return Annotated[Path | None, optional(existing(what))]


def pipeline_latent_shape(folder, net: str, height: int | None, width: int | None) -> tuple[int, int, int] | None:
    """A pipeline folder's latent shape from its configs alone, as the pipeline denoisers set it:
    ``(C, height / f, width / f)`` with C the ``net``'s (``"unet"`` or ``"transformer"``)
    in_channels, f the VAE's scale factor (2 ** (its blocks - 1)) and height and width by default
    the net's sample_size x f; ``None`` where the configs cannot be read (then the run's sizes are
    checked once the pipeline is loaded)."""
    import json

    try:
        vae = json.loads((Path(folder) / "vae" / "config.json").read_text())
        cfg = json.loads((Path(folder) / net / "config.json").read_text())
        factor = 2 ** (len(vae["block_out_channels"]) - 1)
        channels, size = int(cfg["in_channels"]), int(cfg["sample_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    height = size * factor if height is None else int(height)
    width = size * factor if width is None else int(width)
    return (channels, height // factor, width // factor)


class Spec(ProbeSpec):
    """AMDM over real Stable Diffusion pipelines from local weights (folders or single checkpoint
    files; LoRA, GLIGEN, IP-Adapter); the final latents are decoded into PNG images beside the
    store. Nothing is downloaded."""

    MAX_STEPS: ClassVar[int | None] = None  # (the sampler checks each pipeline's own schedule)

    model_a: Model
    """model 1 (theta_1): pipeline folder or checkpoint file."""
    model_b: Annotated[Path | None, optional(existing("pipeline folder or checkpoint file"))] = None
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
    guidance: Annotated[float, real(0.0)] = 7.5
    """classifier-free guidance scale, >= 0; <= 1 is no guidance."""
    height: ImageSize = None
    """image height, a multiple of 8 (default the model's)."""
    width: ImageSize = None
    """image width, a multiple of 8 (default the model's)."""
    gligen_boxes: Annotated[tuple[float, ...] | None,
                            optional(sequence(real(0.0, 1.0), accepted="numbers in [0, 1]", min_len=1))] = None
    """GLIGEN boxes X0 Y0 X1 Y1 in [0, 1], four numbers each (for the GLIGEN model(s))."""
    gligen_phrases: tuple[str, ...] | None = None
    """one phrase per GLIGEN box."""
    gligen_beta: Annotated[float, real(0.0, 1.0)] = 0.3
    """share of steps with GLIGEN grounding, in [0, 1]."""
    ip_adapter: _maybe("IP-Adapter weights folder or file") = None
    """IP-Adapter weights folder or file."""
    ip_adapter_weight_name: str | None = None
    """weights file name inside ip_adapter."""
    ip_adapter_subfolder: str = ""
    """subfolder of ip_adapter."""
    ip_adapter_image_encoder: _maybe("image encoder folder") = None
    """image encoder folder (default the pipeline's)."""
    ip_adapter_image: _maybe("reference image") = None
    """the reference image."""
    ip_adapter_scale: Annotated[float, real(0.0)] = 0.8
    """IP-Adapter scale, >= 0."""
    ip_adapter_model: Annotated[Literal["a", "b"], choice("a", "b")] = "b"
    """which model gets the IP-Adapter."""
    sampler: SamplerConfig = SamplerConfig()
    run: RunSettings = RunSettings(out=Path("data/runs/sd_pair.zarr"))

    @property
    def n_models(self) -> int:
        return 1 if self.model_b is None else 2

    def config(self) -> SamplerConfig:
        return self.sampler.replace(weights=()) if self.model_b is None else self.sampler

    def latent_shape(self) -> tuple[int, int, int] | None:
        """Model A's latent shape from its configs (``pipeline_latent_shape``), or None."""
        return pipeline_latent_shape(self.config_a or self.model_a, "unet", self.height, self.width)

    def boxes(self) -> list[tuple[float, ...]] | None:
        """The GLIGEN boxes, four numbers each."""
        b = self.gligen_boxes
        return None if b is None else [tuple(b[i:i + 4]) for i in range(0, len(b), 4)]

    def check_models(self) -> None:
        self._check_gligen()
        if self.ip_adapter is not None and self.ip_adapter_image is None:
            raise SpecError("needs `ip_adapter_image`", loc=("ip_adapter",))
        if self.ip_adapter is None and self.ip_adapter_image is not None:
            raise SpecError("needs `ip_adapter`", loc=("ip_adapter_image",))
        if self.ip_adapter_model == "b" and self.ip_adapter is not None and self.model_b is None:
            raise SpecError("b needs `model_b`", loc=("ip_adapter_model",))
        if self.model_b is None:
            for field in ("config_b", "lora_b", "prompt_b"):
                if getattr(self, field) is not None:
                    raise SpecError("needs `model_b`", loc=(field,))

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

    def pipelines(self) -> list[tuple[str, PipelineSpec, str]]:
        """``(key, pipeline spec, prompt)`` of each model."""
        out = []
        for key, path, config, lora, prompt in (("a", self.model_a, self.config_a, self.lora_a, self.prompt),
                                                ("b", self.model_b, self.config_b, self.lora_b,
                                                 self.prompt_b or self.prompt)):
            if path is None:
                continue
            ipa = self.ip_adapter if self.ip_adapter_model == key else None
            out.append((key, PipelineSpec(
                path=path, config=config, lora=lora, lora_scale=self.lora_scale, device=self.device,
                dtype=self.run.dtype, guidance=self.guidance, height=self.height, width=self.width,
                gligen_beta=self.gligen_beta, ip_adapter=ipa, ip_adapter_weight_name=self.ip_adapter_weight_name,
                ip_adapter_subfolder=self.ip_adapter_subfolder, ip_adapter_image_encoder=self.ip_adapter_image_encoder,
                ip_adapter_scale=self.ip_adapter_scale, name=f"{key}: {path}"), prompt))
        return out


def build(spec: Spec):
    """The ``AMDMSampler`` over the pipelines (this loads their weights)."""
    from amdm_geom.sampling import AMDMSampler

    boxes = spec.boxes()
    models, conds = [], []
    for _, pipeline, prompt in spec.pipelines():
        model = pipeline.build()
        image = None
        if pipeline.ip_adapter is not None:
            from PIL import Image

            with Image.open(spec.ip_adapter_image) as opened:
                image = opened.convert("RGB")
        grounded = boxes is not None and model.is_gligen
        conds.append(model.condition(prompt, negative_prompt=spec.negative_prompt,
                                     gligen_boxes=[list(b) for b in boxes] if grounded else None,
                                     gligen_phrases=list(spec.gligen_phrases) if grounded else None,
                                     ip_adapter_image=image))
        models.append(model)
    if boxes is not None and not any(m.is_gligen for m in models):
        raise ValueError("--gligen-boxes given, but neither model is a GLIGEN pipeline")
    return AMDMSampler(models, conds, spec.config())


def images_folder(out) -> Path:
    """The folder of PNG images beside a local store (a store at a URL has no "beside": refused)."""
    from amdm_geom.store import is_url

    if is_url(out):
        raise ValueError(f"this probe writes PNG images beside its store, so --out must be a local path; got {out}")
    return Path(out).with_name(Path(out).name.removesuffix(".zarr") + "_images")


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

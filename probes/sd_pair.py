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

import argparse
from pathlib import Path

from .common import (OptionError, add_sampler_arguments, device_name, existing, existing_path, finite_float,
                     image_size, nonneg_float, run_probe, sampler_config, unit_float)

NAME = "sd"
MAX_GLIGEN_OBJECTS = 30  # as StableDiffusionGLIGENPipeline (amdm_geom.denoisers.pipelines)
model_path = existing("pipeline folder or checkpoint file", name="model_path")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    m = parser.add_argument_group("models (local weights only)")
    m.add_argument("--model-a", required=True, type=model_path,
                   help="model 1 (theta_1): pipeline folder or checkpoint file")
    m.add_argument("--model-b", type=model_path, help="model 2 (theta_2); omit for a single-model run")
    m.add_argument("--config-a", type=existing_path, help="local config folder for a single-file model A")
    m.add_argument("--config-b", type=existing_path, help="local config folder for a single-file model B")
    m.add_argument("--lora-a", type=existing_path, help="LoRA weights (file or folder) for model A")
    m.add_argument("--lora-b", type=existing_path, help="LoRA weights (file or folder) for model B")
    m.add_argument("--lora-scale", type=finite_float, default=1.0, help="LoRA scale (default 1)")
    m.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:1, mps (default cpu)")
    m.add_argument("--insist", action="store_true", help="aggregate models of different ecosystems anyway")
    c = parser.add_argument_group("conditions")
    c.add_argument("--prompt", required=True, help="prompt of model A (and of model B unless --prompt-b)")
    c.add_argument("--prompt-b", help="prompt of model B")
    c.add_argument("--negative-prompt", default=None, help="negative prompt of both models")
    c.add_argument("--guidance", type=nonneg_float, default=7.5,
                   help="classifier-free guidance scale, >= 0; <= 1 is no guidance (default 7.5)")
    c.add_argument("--height", type=image_size, help="image height, a multiple of 8 (default the model's)")
    c.add_argument("--width", type=image_size, help="image width, a multiple of 8 (default the model's)")
    c.add_argument("--gligen-boxes", type=unit_float, nargs="+", metavar="X0 Y0 X1 Y1",
                   help="GLIGEN boxes in [0, 1], four numbers each (for the GLIGEN model(s))")
    c.add_argument("--gligen-phrases", nargs="+", help="one phrase per GLIGEN box")
    c.add_argument("--gligen-beta", type=unit_float, default=0.3,
                   help="share of steps with GLIGEN grounding, in [0, 1] (default 0.3)")
    c.add_argument("--ip-adapter", type=existing_path, help="IP-Adapter weights folder or file")
    c.add_argument("--ip-adapter-weight-name", help="weights file name inside --ip-adapter")
    c.add_argument("--ip-adapter-subfolder", default="", help="subfolder of --ip-adapter")
    c.add_argument("--ip-adapter-image-encoder", type=existing_path, help="image encoder folder (default the pipeline's)")
    c.add_argument("--ip-adapter-image", type=existing_path, help="the reference image")
    c.add_argument("--ip-adapter-scale", type=nonneg_float, default=0.8, help="IP-Adapter scale, >= 0 (default 0.8)")
    c.add_argument("--ip-adapter-model", choices=("a", "b"), default="b", help="which model gets the IP-Adapter")
    add_sampler_arguments(parser, "sd_pair")


def _boxes(args):
    if args.gligen_boxes is None:
        return None
    if len(args.gligen_boxes) % 4:
        raise OptionError("--gligen-boxes", f"takes four numbers per box; got {len(args.gligen_boxes)} numbers")
    return [args.gligen_boxes[i:i + 4] for i in range(0, len(args.gligen_boxes), 4)]


def n_models(args: argparse.Namespace) -> int:
    return 1 if args.model_b is None else 2


def check_args(args: argparse.Namespace) -> None:
    """The options that depend on each other, before any pipeline is loaded."""
    boxes = _boxes(args)
    if boxes is not None:
        for box in boxes:
            if box[0] > box[2] or box[1] > box[3]:
                raise OptionError("--gligen-boxes", f"boxes are X0 Y0 X1 Y1 with X0 <= X1 and Y0 <= Y1; "
                                                    f"got {' '.join(f'{v:g}' for v in box)}")
        if len(boxes) > MAX_GLIGEN_OBJECTS:
            raise OptionError("--gligen-boxes", f"takes at most {MAX_GLIGEN_OBJECTS} boxes; got {len(boxes)}")
        if args.gligen_phrases is None or len(args.gligen_phrases) != len(boxes):
            got = 0 if args.gligen_phrases is None else len(args.gligen_phrases)
            raise OptionError("--gligen-phrases", f"needs one phrase per box ({len(boxes)}); got {got}")
    elif args.gligen_phrases is not None:
        raise OptionError("--gligen-phrases", "needs --gligen-boxes, one box per phrase")
    if args.ip_adapter is not None and args.ip_adapter_image is None:
        raise OptionError("--ip-adapter", "needs --ip-adapter-image")
    if args.ip_adapter is None and args.ip_adapter_image is not None:
        raise OptionError("--ip-adapter-image", "needs --ip-adapter")
    if args.ip_adapter_model == "b" and args.ip_adapter is not None and args.model_b is None:
        raise OptionError("--ip-adapter-model", "b needs --model-b")
    if args.model_b is None:
        for option in ("config_b", "lora_b", "prompt_b"):
            if getattr(args, option) is not None:
                raise OptionError(f"--{option.replace('_', '-')}", "needs --model-b")


def build(args: argparse.Namespace):
    """The sampler and the pipeline denoisers: ``(AMDMSampler, [PipelineDenoiser, ...])``."""
    from amdm_geom.denoisers.pipelines import PipelineDenoiser, load_pipeline
    from amdm_geom.sampling import AMDMSampler

    check_args(args)
    sampler_cfg = sampler_config(args, n_models(args), allow_schedule_mismatch=args.insist)
    specs = [("a", args.model_a, args.config_a, args.lora_a, args.prompt)]
    if args.model_b is not None:
        specs.append(("b", args.model_b, args.config_b, args.lora_b, args.prompt_b or args.prompt))
    boxes = _boxes(args)
    models, conds = [], []
    for key, path, config, lora, prompt in specs:
        ipa = args.ip_adapter if args.ip_adapter_model == key else None
        pipe = load_pipeline(path, device=args.device, dtype=args.dtype, config=config, lora=lora,
                             lora_scale=args.lora_scale, ip_adapter=ipa, ip_adapter_weight_name=args.ip_adapter_weight_name,
                             ip_adapter_subfolder=args.ip_adapter_subfolder,
                             ip_adapter_image_encoder=args.ip_adapter_image_encoder, ip_adapter_scale=args.ip_adapter_scale)
        model = PipelineDenoiser(pipe, guidance_scale=args.guidance, height=args.height, width=args.width,
                                 name=f"{key}: {path}", gligen_scheduled_sampling_beta=args.gligen_beta,
                                 provenance={"path": str(path), "lora": str(lora) if lora else None,
                                             "ip_adapter": str(ipa) if ipa else None})
        image = None
        if ipa is not None:
            from PIL import Image

            with Image.open(args.ip_adapter_image) as opened:
                image = opened.convert("RGB")
        grounded = boxes is not None and model.is_gligen
        conds.append(model.condition(prompt, negative_prompt=args.negative_prompt,
                                     gligen_boxes=boxes if grounded else None,
                                     gligen_phrases=args.gligen_phrases if grounded else None, ip_adapter_image=image))
        models.append(model)
    if boxes is not None and not any(m.is_gligen for m in models):
        raise ValueError("--gligen-boxes given, but neither model is a GLIGEN pipeline")
    return AMDMSampler(models, conds, sampler_cfg), models


def images_folder(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".zarr") + "_images")


def run(args: argparse.Namespace, quiet: bool = False):
    check_args(args)
    folder = images_folder(Path(args.out))
    models = []

    def make():
        sampler, built = build(args)
        models.extend(built)
        return sampler

    def save_images(out) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for seed, image in zip(out.seeds, models[0].decode(out.z0)):
            image.save(folder / f"seed{seed}.png")
        if not quiet:
            print(f"decoded {len(out.seeds)} images into {folder}")

    return run_probe(make, args, quiet=quiet, after=save_images, n_models=n_models(args))

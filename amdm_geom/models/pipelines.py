"""Denoisers from diffusers pipelines loaded from local weights (nothing is ever downloaded).

``load_pipeline`` opens a pipeline folder (``save_pretrained`` layout, ``model_index.json``) or a
single checkpoint file (``.safetensors`` / ``.ckpt``, with a local config folder), optionally with
LoRA weights and an IP-Adapter, on a device and in a dtype, and gives it a ``DDIMScheduler`` built
from its own scheduler config (AMDM is defined on the DDIM step, eq. 4).

``PipelineDenoiser`` wraps a Stable Diffusion pipeline (SD 1.x/2.x, GLIGEN, with IP-Adapter or
LoRA) as ``eps = model(z_t, t, cond)``: the body of the pipeline's own denoising loop (the doubled
classifier-free-guidance batch, ``eps_u + s (eps_c - eps_u)``, GLIGEN's grounding tokens and
scheduled sampling, IP-Adapter image embeddings), so that one model run by the AMDM sampler gives
the pipeline's own latents. ``cond`` is an ``SDCondition`` made by ``model.condition(...)``.

Models in float16 run in float16; the sampler's geometry is computed in float64 regardless.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DDIMScheduler

from amdm_geom.models.base import check_latents
from amdm_geom.models.fingerprint import fingerprint, weights_hash
from amdm_geom.models.guidance import guided, uses_guidance

__all__ = ["CHECKPOINT_SUFFIXES", "PipelineDenoiser", "SDCondition", "check_device", "load_pipeline",
           "weights_hash"]

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
MAX_GLIGEN_OBJECTS = 30  # as StableDiffusionGLIGENPipeline


def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)}; got {dtype!r}")
    return names[dtype]


def check_device(device) -> torch.device:
    """``device`` as a ``torch.device`` this machine has (cpu, cuda, cuda:N, mps): a one-line
    ValueError otherwise, before any weights are read."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be cpu, cuda, cuda:N or mps; got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available (torch {torch.__version__}); use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: there are {torch.cuda.device_count()} CUDA devices")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {device!r}: MPS is not available here; use cpu")
    elif dev.type != "cpu":
        raise ValueError(f"device must be cpu, cuda, cuda:N or mps; got {device!r}")
    return dev


def load_pipeline(path, *, device: str | torch.device = "cpu", dtype="float32", config=None, lora=None,
                  lora_scale: float = 1.0, ip_adapter=None, ip_adapter_weight_name: str | None = None,
                  ip_adapter_subfolder: str = "", ip_adapter_image_encoder=None, ip_adapter_scale: float = 1.0):
    """A diffusers pipeline from local files, with a DDIM scheduler from its own config.

    ``path``: a pipeline folder (with ``model_index.json``) or a single checkpoint file (then
    ``config`` must name a local diffusers config folder of the same architecture: nothing is
    fetched). ``lora``: a LoRA weights file or folder, applied with ``lora_scale``. ``ip_adapter``:
    a folder or weights file (or a state dict), with ``ip_adapter_weight_name``, the image encoder
    folder ``ip_adapter_image_encoder`` (or None to keep the pipeline's) and ``ip_adapter_scale``.
    Errors are one line: a missing path, a folder that is not a diffusers pipeline, a single file
    without a config, a device this machine does not have.
    """
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    path = Path(path)
    torch_dtype = _dtype(dtype)
    check_device(device)
    if not path.exists():
        raise FileNotFoundError(f"no pipeline folder or checkpoint file at {path}")
    if path.is_dir():
        index = path / "model_index.json"
        if not index.exists():
            raise ValueError(f"{path} is not a diffusers pipeline (no model_index.json); pass a folder saved with "
                             "save_pretrained, or a single .safetensors/.ckpt checkpoint with --config")
        extra = {}
        if "safety_checker" in json.loads(index.read_text()):
            extra = {"safety_checker": None, "requires_safety_checker": False}  # not needed for latents
        pipe = DiffusionPipeline.from_pretrained(path, dtype=torch_dtype, local_files_only=True, **extra)
    elif path.suffix in CHECKPOINT_SUFFIXES:
        if config is None:
            raise ValueError(f"single-file checkpoint {path.name} needs config=, a local diffusers config folder of "
                             "the same architecture (offline, no config is fetched)")
        pipe = StableDiffusionPipeline.from_single_file(path, config=str(config), local_files_only=True,
                                                        dtype=torch_dtype)
    else:
        raise ValueError(f"{path} is neither a pipeline folder nor a checkpoint file "
                         f"({', '.join(CHECKPOINT_SUFFIXES)})")
    if not hasattr(pipe, "unet") or not hasattr(pipe, "scheduler"):
        raise ValueError(f"{path} holds a {type(pipe).__name__}, not a UNet diffusion pipeline")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    if lora is not None:
        lora = Path(lora)
        if not lora.exists():
            raise FileNotFoundError(f"no LoRA weights at {lora}")
        kwargs = {"weight_name": lora.name} if lora.is_file() else {}
        pipe.load_lora_weights(str(lora.parent if lora.is_file() else lora), adapter_name="amdm", **kwargs)
        pipe.set_adapters(["amdm"], adapter_weights=[float(lora_scale)])
    if ip_adapter is not None:
        source = ip_adapter if isinstance(ip_adapter, dict) else str(ip_adapter)
        if not isinstance(ip_adapter, dict) and not Path(ip_adapter).exists():
            raise FileNotFoundError(f"no IP-Adapter weights at {ip_adapter}")
        encoder = None if ip_adapter_image_encoder is None else str(ip_adapter_image_encoder)
        pipe.load_ip_adapter(source, subfolder=ip_adapter_subfolder, weight_name=ip_adapter_weight_name,
                             image_encoder_folder=encoder)
        pipe.set_ip_adapter_scale(float(ip_adapter_scale))
    return pipe.to(device)


@dataclass
class SDCondition:
    """A pipeline condition y: encoded prompt (and negative prompt), and the pipeline's extras.

    ``prompt_embeds`` and ``negative_prompt_embeds`` are ``(1, seq, dim)``; ``gligen`` holds the
    grounding tokens ``boxes (30, 4)``, ``positive_embeddings (30, dim)``, ``masks (30,)``;
    ``image_embeds`` the IP-Adapter embeddings as ``prepare_ip_adapter_image_embeds`` gives them
    for one image (negative then positive when guided)."""

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None = None
    gligen: dict | None = None
    image_embeds: list | None = None
    description: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return dict(self.description)


class PipelineDenoiser:
    """``out = model(z_t, t, cond)`` from a Stable Diffusion pipeline: its UNet's guided output, in
    its scheduler's ``prediction_type`` (eq. 4's epsilon for SD 1.x).

    ``guidance_scale`` s: classifier-free guidance as the pipeline does it (no guidance when
    s <= 1). ``height``/``width``: the image size (default the UNet's sample size times the VAE's
    scale factor), which sets ``latent_shape = (C, height / f, width / f)``.
    ``gligen_scheduled_sampling_beta``: the share of steps with GLIGEN grounding (GLIGEN pipelines).
    """

    def __init__(self, pipe, *, guidance_scale: float = 7.5, height: int | None = None, width: int | None = None,
                 name: str = "sd", gligen_scheduled_sampling_beta: float = 0.3, provenance: dict | None = None):
        self.pipe = pipe
        self.unet = pipe.unet
        self.scheduler = pipe.scheduler
        if not isinstance(self.scheduler, DDIMScheduler):
            self.scheduler = pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) \
                or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number; got {guidance_scale!r}")
        self.guidance_scale = float(guidance_scale)
        beta = gligen_scheduled_sampling_beta
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0 <= beta <= 1:
            raise ValueError(f"gligen_scheduled_sampling_beta must be in [0, 1]; got {beta!r}")
        factor = getattr(pipe, "vae_scale_factor", 8)
        size = self.unet.config.sample_size
        height = size * factor if height is None else height
        width = size * factor if width is None else width
        for what, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not hasattr(value, "__index__") or value < factor or value % factor:
                raise ValueError(f"{what} must be a positive multiple of the VAE's scale factor {factor}; "
                                 f"got {value!r}")
        height, width = int(height), int(width)
        self.image_size = (height, width)
        self.latent_shape = (int(self.unet.config.in_channels), height // factor, width // factor)
        self.dtype = self.unet.dtype
        self.device = self.unet.device
        self.name = name
        self.gligen_beta = float(gligen_scheduled_sampling_beta)
        self.provenance = dict(provenance or {})
        self._timesteps: list[int] | None = None
        self._fuser_on: bool | None = None

    @property
    def do_cfg(self) -> bool:
        """Whether eps is guided: diffusers' ``do_classifier_free_guidance``, ``s > 1``."""
        return uses_guidance(self.guidance_scale)

    @property
    def is_gligen(self) -> bool:
        return getattr(self.unet, "position_net", None) is not None

    # -- conditions --------------------------------------------------------------------------------

    def condition(self, prompt: str | None = None, *, negative_prompt: str | None = None,
                  prompt_embeds: torch.Tensor | None = None, negative_prompt_embeds: torch.Tensor | None = None,
                  gligen_boxes=None, gligen_phrases=None, ip_adapter_image=None) -> SDCondition:
        """Encode a prompt (or take embeddings) and the pipeline's extra conditions into y."""
        if prompt is None and prompt_embeds is None:
            raise ValueError("a condition needs a prompt or prompt_embeds")
        pos, neg = self.pipe.encode_prompt(prompt, self.device, 1, self.do_cfg, negative_prompt,
                                           prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds)
        desc = {"prompt": prompt, "negative_prompt": negative_prompt, "guidance_scale": self.guidance_scale}
        gligen = None
        if gligen_boxes is not None or gligen_phrases is not None:
            gligen = self._gligen_tokens(gligen_boxes, gligen_phrases)
            desc.update({"gligen_boxes": [list(map(float, b)) for b in gligen_boxes],
                         "gligen_phrases": list(gligen_phrases)})
        image_embeds = None
        if ip_adapter_image is not None:
            if not hasattr(self.unet, "encoder_hid_proj") or self.unet.encoder_hid_proj is None:
                raise ValueError("an IP-Adapter image needs a pipeline loaded with ip_adapter=")
            image_embeds = self.pipe.prepare_ip_adapter_image_embeds(ip_adapter_image, None, self.device, 1,
                                                                     self.do_cfg)
            desc["ip_adapter_image"] = True
        return SDCondition(pos, neg if self.do_cfg else None, gligen, image_embeds, desc)

    @property
    def condition_kind(self) -> str:
        """``"sd-prompt:D"``: pipelines whose UNets read prompt embeddings of width D take each
        other's ``SDCondition``."""
        return f"sd-prompt:{self.unet.config.cross_attention_dim}"

    def null_condition(self) -> SDCondition:
        """The empty prompt, the pipeline's own unconditional y (encoded once)."""
        if getattr(self, "_null", None) is None:
            self._null = self.condition("")
        return self._null

    @property
    def data_space(self) -> str | None:
        """The latent space: the VAE's weights hash (``None`` without a VAE)."""
        vae_hash = self.ecosystem()["vae_hash"]
        return None if vae_hash is None else f"latents of VAE sha256:{vae_hash}"

    def _gligen_tokens(self, boxes, phrases) -> dict:
        if not self.is_gligen:
            raise ValueError("GLIGEN boxes and phrases need a GLIGEN pipeline (a UNet with a position net)")
        if boxes is None or phrases is None or len(boxes) != len(phrases) or not len(boxes):
            raise ValueError(f"GLIGEN needs as many boxes as phrases (at least one); got {len(boxes or [])} boxes "
                             f"and {len(phrases or [])} phrases")
        if len(boxes) > MAX_GLIGEN_OBJECTS:
            raise ValueError(f"GLIGEN takes at most {MAX_GLIGEN_OBJECTS} objects; got {len(boxes)}")
        for box in boxes:
            if len(box) != 4 or not all(0.0 <= float(v) <= 1.0 for v in box) or box[0] > box[2] or box[1] > box[3]:
                raise ValueError("GLIGEN boxes are (x0, y0, x1, y1) in [0, 1] with x0 <= x1, y0 <= y1; "
                                 f"got {list(box)}")
        enc = self.pipe.text_encoder
        inputs = self.pipe.tokenizer(list(phrases), padding=True, return_tensors="pt").to(self.device)
        with torch.no_grad():
            pooled = enc(**inputs).pooler_output  # (n_objs, dim)
        n = len(boxes)
        out_boxes = torch.zeros(MAX_GLIGEN_OBJECTS, 4, device=self.device, dtype=enc.dtype)
        out_boxes[:n] = torch.tensor(boxes)
        emb = torch.zeros(MAX_GLIGEN_OBJECTS, self.unet.config.cross_attention_dim, device=self.device, dtype=enc.dtype)
        emb[:n] = pooled
        masks = torch.zeros(MAX_GLIGEN_OBJECTS, device=self.device, dtype=enc.dtype)
        masks[:n] = 1
        return {"boxes": out_boxes, "positive_embeddings": emb, "masks": masks}

    # -- the denoiser -------------------------------------------------------------------------------

    def prepare(self, timesteps) -> None:
        """Called by the sampler before a run: the timesteps, for GLIGEN's scheduled sampling."""
        self._timesteps = [int(t) for t in timesteps]

    def _grounding(self, t: int) -> bool:
        """GLIGEN's grounding is on for the first int(beta T) steps (as the pipeline does it)."""
        if self._timesteps is None:
            raise ValueError("GLIGEN needs the run's timesteps: the sampler calls prepare() first")
        return self._timesteps.index(int(t)) < int(self.gligen_beta * len(self._timesteps))

    def _set_fuser(self, on: bool) -> None:
        if on != self._fuser_on:
            self.pipe.enable_fuser(on)
            self._fuser_on = on

    def __call__(self, z_t: torch.Tensor, t, cond: SDCondition) -> torch.Tensor:
        """``z_t (B, C, H, W)`` at timestep t -> guided output ``(B, C, H, W)``, as the pipeline's loop."""
        check_latents(self, z_t)
        if not isinstance(cond, SDCondition):
            raise ValueError(f"cond must be an SDCondition from model.condition(...); got {type(cond).__name__}")
        B = z_t.shape[0]
        t = int(t)
        latent_in = torch.cat([z_t] * 2) if self.do_cfg else z_t  # (2B, C, H, W) with guidance
        latent_in = self.scheduler.scale_model_input(latent_in, t)
        pos = cond.prompt_embeds.expand(B, -1, -1)
        hidden = torch.cat([cond.negative_prompt_embeds.expand(B, -1, -1), pos]) if self.do_cfg else pos
        cross, added = None, None
        if cond.gligen is not None:
            self._set_fuser(self._grounding(t))
            g = cond.gligen
            boxes = g["boxes"].unsqueeze(0).expand(B, -1, -1).clone()
            emb = g["positive_embeddings"].unsqueeze(0).expand(B, -1, -1).clone()
            masks = g["masks"].unsqueeze(0).expand(B, -1).clone()
            if self.do_cfg:
                boxes, emb, masks = torch.cat([boxes] * 2), torch.cat([emb] * 2), torch.cat([masks] * 2)
                masks[:B] = 0
            cross = {"gligen": {"boxes": boxes, "positive_embeddings": emb, "masks": masks}}
        elif self.is_gligen:
            self._set_fuser(False)
        if cond.image_embeds is not None:
            embeds = []
            for e in cond.image_embeds:  # (2, ...) negative then positive, or (1, ...)
                if self.do_cfg:
                    neg, p = e.chunk(2)
                    embeds.append(torch.cat([neg.expand(B, *neg.shape[1:]), p.expand(B, *p.shape[1:])]))
                else:
                    embeds.append(e.expand(B, *e.shape[1:]))
            added = {"image_embeds": embeds}
        with torch.no_grad():
            eps = self.unet(latent_in, t, encoder_hidden_states=hidden, cross_attention_kwargs=cross,
                            added_cond_kwargs=added, return_dict=False)[0]
        if self.do_cfg:
            eps_u, eps_c = eps.chunk(2)
            eps = guided(eps_u, eps_c, self.guidance_scale)
        return eps

    # -- output and description ---------------------------------------------------------------------

    def decode(self, z0: torch.Tensor) -> list:
        """Final latents ``(B, C, H, W)`` -> PIL images, through the pipeline's VAE."""
        vae = self.pipe.vae
        with torch.no_grad():
            image = vae.decode(z0.to(vae.device, vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type="pil")

    def describe(self) -> dict:
        cfg = self.scheduler.config
        return {
            "family": "pipeline",
            "name": self.name,
            "pipeline": type(self.pipe).__name__,
            "latent_shape": list(self.latent_shape),
            "image_size": list(self.image_size),
            "dtype": str(self.dtype).replace("torch.", ""),
            "guidance_scale": self.guidance_scale,
            "gligen": self.is_gligen,
            "schedule": {k: cfg.get(k) for k in ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps",
                                                   "prediction_type", "timestep_spacing", "steps_offset")},
            **self.provenance,
        }

    def ecosystem(self) -> dict:
        """What Section 3.1 requires two models of one ecosystem to share (``fingerprint``; compared by
        ``amdm_geom.models.ecosystem``)."""
        return fingerprint(self.pipe, self.latent_shape)

"""Rectified-flow pipelines from local weights as velocity denoisers (App. G; nothing is ever
downloaded).

``load_flow_pipeline`` opens a Stable Diffusion 3 pipeline folder (``save_pretrained`` layout,
``model_index.json``) or a single checkpoint file (with a local config folder), optionally with
LoRA weights, on a device and in a dtype, and keeps its own ``FlowMatchEulerDiscreteScheduler``
(the flow of eq. 42: ``z_s = (1 - s) x0 + s eps``, Euler steps ``z + (s_next - s) v``).

``FlowPipelineDenoiser`` wraps it as ``v = model(z_t, t, cond)``: the body of
``StableDiffusion3Pipeline``'s denoising loop (the doubled classifier-free-guidance batch,
unconditional first, ``v_u + g (v_c - v_u)`` for g > 1; the timestep ``t`` expanded over the
batch), so that one model run by the AMDM sampler gives the pipeline's own latents bit for bit.
``cond`` is an ``SD3Condition`` made by ``model.condition(...)`` with the pipeline's own
``encode_prompt`` (two CLIP encoders and T5).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import torch

from amdm_geom.core.flow_schedules import FLOW_SCHEDULERS, GRID_KEYS, is_flow_scheduler
from amdm_geom.models.base import check_latents
from amdm_geom.models.fingerprint import SCHEDULER_KEYS, _jsonable, vae_facts
from amdm_geom.models.guidance import guided, uses_guidance
from amdm_geom.models.pipelines import CHECKPOINT_SUFFIXES, _dtype, check_device

__all__ = ["FLOW_PIPELINES", "FlowPipelineDenoiser", "SD3Condition", "flow_fingerprint", "load_flow_pipeline"]

#: The pipelines ``load_flow_pipeline`` opens (by class name, as ``model_index.json`` names them).
FLOW_PIPELINES = ("StableDiffusion3Pipeline",)


def load_flow_pipeline(path, *, device: str | torch.device = "cpu", dtype="float32", config=None, lora=None,
                       lora_scale: float = 1.0):
    """A ``StableDiffusion3Pipeline`` from local files, its flow-matching scheduler kept.

    ``path``: a pipeline folder (with ``model_index.json``) or a single checkpoint file (then
    ``config`` must name a local diffusers config folder of the same architecture: nothing is
    fetched). ``lora``: a LoRA weights file or folder, applied with ``lora_scale``. Errors are one
    line: a missing path, a folder that is not a diffusers pipeline or not a flow pipeline, a
    single file without a config, a device this machine does not have.
    """
    from diffusers import StableDiffusion3Pipeline

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
        name = json.loads(index.read_text()).get("_class_name")
        if name not in FLOW_PIPELINES:
            raise ValueError(f"{path} holds a {name}, not a flow-matching pipeline ({', '.join(FLOW_PIPELINES)}); "
                             "UNet pipelines go through `probe sd`")
        pipe = StableDiffusion3Pipeline.from_pretrained(path, dtype=torch_dtype, local_files_only=True)
    elif path.suffix in CHECKPOINT_SUFFIXES:
        if config is None:
            raise ValueError(f"single-file checkpoint {path.name} needs config=, a local diffusers config folder of "
                             "the same architecture (offline, no config is fetched)")
        pipe = StableDiffusion3Pipeline.from_single_file(path, config=str(config), local_files_only=True,
                                                         dtype=torch_dtype)
    else:
        raise ValueError(f"{path} is neither a pipeline folder nor a checkpoint file "
                         f"({', '.join(CHECKPOINT_SUFFIXES)})")
    if type(pipe.scheduler).__name__ not in FLOW_SCHEDULERS:
        raise ValueError(f"{path}'s scheduler is a {type(pipe.scheduler).__name__}; the flow sampler steps "
                         f"{', '.join(FLOW_SCHEDULERS)}")
    if lora is not None:
        lora = Path(lora)
        if not lora.exists():
            raise FileNotFoundError(f"no LoRA weights at {lora}")
        kwargs = {"weight_name": lora.name} if lora.is_file() else {}
        pipe.load_lora_weights(str(lora.parent if lora.is_file() else lora), adapter_name="amdm", **kwargs)
        pipe.set_adapters(["amdm"], adapter_weights=[float(lora_scale)])
    return pipe.to(device)


@dataclass
class SD3Condition:
    """A pipeline condition y: the encoded prompt and, when guided, the negative prompt.

    ``prompt_embeds (1, seq, joint_attention_dim)`` (CLIP tokens, padded, then T5 tokens) and
    ``pooled_prompt_embeds (1, pooled_projection_dim)``, as ``encode_prompt`` gives them."""

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None
    description: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return dict(self.description)


def _is_size(value, factor: int) -> bool:
    return not isinstance(value, bool) and hasattr(value, "__index__") and value >= factor and value % factor == 0


class FlowPipelineDenoiser:
    """``v = model(z_t, t, cond)`` from a ``StableDiffusion3Pipeline``: its transformer's guided
    velocity, as the pipeline's loop computes it.

    ``guidance_scale`` g: classifier-free guidance as the pipeline does it (none when g <= 1).
    ``height``/``width``: the image size (default the transformer's sample size times the VAE's
    scale factor; a multiple of the scale factor times the patch size), which sets
    ``latent_shape = (C, height / f, width / f)``. ``max_sequence_length``: T5's token count.
    ``flow_mu``: the resolution shift of a ``use_dynamic_shifting`` scheduler, as the pipeline
    computes it (None otherwise).
    """

    def __init__(self, pipe, *, guidance_scale: float = 7.0, height: int | None = None, width: int | None = None,
                 max_sequence_length: int = 256, name: str = "sd3", provenance: dict | None = None):
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.scheduler = pipe.scheduler
        if not is_flow_scheduler(self.scheduler):
            raise ValueError(f"the pipeline's scheduler must be a flow-matching scheduler; got "
                             f"{type(self.scheduler).__name__}")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) \
                or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number; got {guidance_scale!r}")
        self.guidance_scale = float(guidance_scale)
        if not _is_size(max_sequence_length, 1) or max_sequence_length > 512:
            raise ValueError(f"max_sequence_length must be an int in [1, 512]; got {max_sequence_length!r}")
        self.max_sequence_length = int(max_sequence_length)
        factor, patch = pipe.vae_scale_factor, self.transformer.config.patch_size
        size = self.transformer.config.sample_size * factor
        height, width = size if height is None else height, size if width is None else width
        for what, value in (("height", height), ("width", width)):
            if not _is_size(value, factor * patch):
                raise ValueError(f"{what} must be a positive multiple of {factor * patch} (the VAE's scale factor "
                                 f"{factor} x the patch size {patch}); got {value!r}")
        self.image_size = (int(height), int(width))
        self.latent_shape = (int(self.transformer.config.in_channels), int(height) // factor, int(width) // factor)
        self.dtype, self.device = self.transformer.dtype, self.transformer.device
        self.name = name
        self.provenance = dict(provenance or {})
        self._null: SD3Condition | None = None

    @property
    def do_cfg(self) -> bool:
        """Whether v is guided: the pipeline's ``do_classifier_free_guidance``, ``g > 1``."""
        return uses_guidance(self.guidance_scale)

    @property
    def flow_mu(self) -> float | None:
        """``calculate_shift`` of the latent's token count, as ``StableDiffusion3Pipeline`` computes
        it for a ``use_dynamic_shifting`` scheduler; None for a fixed shift."""
        cfg = self.scheduler.config
        if not cfg.get("use_dynamic_shifting"):
            return None
        p = self.transformer.config.patch_size
        seq = (self.latent_shape[1] // p) * (self.latent_shape[2] // p)
        base, top = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
        slope = (cfg.get("max_shift", 1.16) - cfg.get("base_shift", 0.5)) / (top - base)
        return seq * slope + cfg.get("base_shift", 0.5) - slope * base

    # -- conditions --------------------------------------------------------------------------------

    def condition(self, prompt: str | None = None, *, negative_prompt: str | None = None,
                  prompt_embeds: torch.Tensor | None = None, pooled_prompt_embeds: torch.Tensor | None = None,
                  negative_prompt_embeds: torch.Tensor | None = None,
                  negative_pooled_prompt_embeds: torch.Tensor | None = None) -> SD3Condition:
        """Encode a prompt (or take embeddings) with the pipeline's own ``encode_prompt`` into y."""
        if prompt is None and prompt_embeds is None:
            raise ValueError("a condition needs a prompt or prompt_embeds (with pooled_prompt_embeds)")
        if prompt_embeds is not None and pooled_prompt_embeds is None:
            raise ValueError("prompt_embeds need pooled_prompt_embeds (SD3 takes both)")
        with torch.no_grad():  # as the pipeline's __call__ (autograd changes CPU attention kernels, and bits)
            pos, neg, pooled, neg_pooled = self._encode(
                prompt, negative_prompt, prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds,
                negative_pooled_prompt_embeds)
        desc = {"prompt": prompt, "negative_prompt": negative_prompt, "guidance_scale": self.guidance_scale}
        if not self.do_cfg:
            neg = neg_pooled = None
        return SD3Condition(pos, pooled, neg, neg_pooled, desc)

    def _encode(self, prompt, negative_prompt, prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds,
                negative_pooled_prompt_embeds):
        return self.pipe.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=self.do_cfg, negative_prompt=negative_prompt, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            max_sequence_length=self.max_sequence_length)

    @property
    def condition_kind(self) -> str:
        """``"sd3-prompt:D:P"``: pipelines whose transformers read prompt embeddings of width D and
        pooled ones of width P take each other's ``SD3Condition``."""
        cfg = self.transformer.config
        return f"sd3-prompt:{cfg.joint_attention_dim}:{cfg.pooled_projection_dim}"

    def null_condition(self) -> SD3Condition:
        """The empty prompt, the pipeline's own unconditional y (encoded once)."""
        if self._null is None:
            self._null = self.condition("")
        return self._null

    @property
    def data_space(self) -> str | None:
        """The latent space: the VAE's weights hash (``None`` without a VAE)."""
        vae_hash = self.ecosystem()["vae_hash"]
        return None if vae_hash is None else f"latents of VAE sha256:{vae_hash}"

    # -- the denoiser -------------------------------------------------------------------------------

    def __call__(self, z_t: torch.Tensor, t, cond: SD3Condition) -> torch.Tensor:
        """``z_t (B, C, H, W)`` at timestep ``t`` (the scheduler's ``s * 1000``) -> guided
        velocity ``(B, C, H, W)``, as the pipeline's loop."""
        check_latents(self, z_t)
        if not isinstance(cond, SD3Condition):
            raise ValueError(f"cond must be an SD3Condition from model.condition(...); got {type(cond).__name__}")
        if self.do_cfg and cond.negative_prompt_embeds is None:
            raise ValueError("guidance needs a condition encoded by a guided model (with negative embeddings)")
        B = z_t.shape[0]
        t = torch.as_tensor(t, dtype=torch.float32, device=self.device)
        if t.numel() != 1:
            raise ValueError(f"t must be one timestep (a number or a one-element tensor); got shape {tuple(t.shape)}")
        latent_in = torch.cat([z_t] * 2) if self.do_cfg else z_t  # (2B, C, H, W) with guidance
        pos, pooled = cond.prompt_embeds.expand(B, -1, -1), cond.pooled_prompt_embeds.expand(B, -1)
        if self.do_cfg:
            hidden = torch.cat([cond.negative_prompt_embeds.expand(B, -1, -1), pos])
            pooled = torch.cat([cond.negative_pooled_prompt_embeds.expand(B, -1), pooled])
        else:
            hidden, pooled = pos.contiguous(), pooled.contiguous()
        with torch.no_grad():
            v = self.transformer(hidden_states=latent_in, timestep=t.reshape(()).expand(latent_in.shape[0]),
                                 encoder_hidden_states=hidden, pooled_projections=pooled, return_dict=False)[0]
        if self.do_cfg:
            v_u, v_c = v.chunk(2)
            v = guided(v_u, v_c, self.guidance_scale)
        return v

    # -- output and description ---------------------------------------------------------------------

    def decode(self, z0: torch.Tensor) -> list:
        """Final latents ``(B, C, H, W)`` -> PIL images, through the pipeline's VAE (with its
        scaling and shift factors, as the pipeline decodes)."""
        vae = self.pipe.vae
        latents = z0.to(vae.device, vae.dtype) / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        with torch.no_grad():
            image = vae.decode(latents, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type="pil")

    def describe(self) -> dict:
        cfg = self.scheduler.config
        return {
            "family": "flow-pipeline",
            "name": self.name,
            "pipeline": type(self.pipe).__name__,
            "latent_shape": list(self.latent_shape),
            "image_size": list(self.image_size),
            "dtype": str(self.dtype).replace("torch.", ""),
            "guidance_scale": self.guidance_scale,
            "max_sequence_length": self.max_sequence_length,
            "schedule": {k: _jsonable(cfg.get(k)) for k in (*GRID_KEYS, "stochastic_sampling")},
            **self.provenance,
        }

    def ecosystem(self) -> dict:
        """What Section 3.1 requires two models of one ecosystem to share (``flow_fingerprint``)."""
        return flow_fingerprint(self.pipe, self.latent_shape)


def flow_fingerprint(pipe, latent_shape) -> dict:
    """The ecosystem-defining facts of a flow pipeline, in the layout of ``fingerprint.fingerprint``
    (so ``ecosystem.compare`` reads both): the latent shape, the VAE's config and weights hash, the
    scheduler's entries (``SCHEDULER_KEYS``, absent ones None, and the flow's ``GRID_KEYS``) and,
    under ``alphas_cumprod_sha``, a hash of the flow's time grid (a flow has no ``alphas_cumprod``:
    its ``GRID_KEYS`` and training sigmas define the interpolant's time grid)."""
    sched = pipe.scheduler
    keys = {k: _jsonable(sched.config.get(k)) for k in (*SCHEDULER_KEYS, *GRID_KEYS)}
    grid = hashlib.sha256(json.dumps({k: keys[k] for k in GRID_KEYS}, sort_keys=True).encode())
    fresh = type(sched).from_config(sched.config)  # (the training grid, whatever set_timesteps did since)
    grid.update(fresh.sigmas.to(torch.float64).cpu().numpy().tobytes())
    return {
        "latent_shape": list(latent_shape),
        **vae_facts(pipe),
        "scheduler": keys,
        "alphas_cumprod_sha": grid.hexdigest(),
    }

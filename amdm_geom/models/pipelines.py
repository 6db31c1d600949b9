"""Denoisers from diffusers pipelines loaded from local weights (nothing is ever downloaded): one
loader and one denoiser for every pipeline kind, each kind a small strategy
(``amdm_geom.models.pipeline_kinds``: Stable Diffusion's epsilon under DDIM, eq. 4; Stable
Diffusion 3's velocity under its flow-matching scheduler, App. G eq. 42).

``load_pipeline(spec, dtype)`` opens a pipeline spec's (``amdm_geom.models.pipeline_specs``)
pipeline folder (``save_pretrained`` layout, ``model_index.json``) or single checkpoint file
(``.safetensors`` / ``.ckpt``, with a local config folder), with its LoRA and the kind's add-ons
(an IP-Adapter), on its device and in ``dtype``, with the scheduler its kind steps.

``PipelineDenoiser(pipe, spec)`` wraps it as ``out = model(z_t, t, cond)``: the body of the
pipeline's own denoising loop (the doubled classifier-free-guidance batch, unconditional first,
``out_u + s (out_c - out_u)`` for s > 1, and the kind's extras: GLIGEN's grounding tokens and
scheduled sampling, IP-Adapter image embeddings), so that one model run by the AMDM sampler gives
the pipeline's own latents bit for bit. ``cond`` is made by ``model.condition(...)``. A spec's
``build(dtype)`` does both.

Models in float16 run in float16; the sampler's geometry is computed in float64 regardless.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from amdm_geom.models.base import check_latents
from amdm_geom.models.constants import CHECKPOINT_SUFFIXES
from amdm_geom.models.guidance import guided, uses_guidance
from amdm_geom.models.pipeline_kinds import KINDS

__all__ = ["TORCH_DTYPES", "PipelineDenoiser", "load_pipeline", "torch_dtype"]

#: The dtypes a pipeline loads in, by name.
TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16,
                "float64": torch.float64}


def torch_dtype(dtype) -> torch.dtype:
    """``dtype`` (a name of ``TORCH_DTYPES`` or a torch dtype) as a torch dtype; one line otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(TORCH_DTYPES)}; got {dtype!r}")
    return TORCH_DTYPES[dtype]


def load_pipeline(spec, dtype="float32"):
    """The diffusers pipeline of ``spec`` (a ``PipelineSpec``) from local files, in ``dtype``.

    ``spec.path``: a pipeline folder (with ``model_index.json``) or a single checkpoint file (then
    ``spec.config`` must name a local diffusers config folder of the same architecture: nothing is
    fetched); ``spec.lora``: a LoRA weights file or folder, applied with ``spec.lora_scale``; then
    the kind's add-ons and its scheduler. Errors are one line: a missing path, a folder that is not
    a diffusers pipeline or not of the spec's kind, a single file without a config (the spec has
    checked its device).
    """
    kind = KINDS[spec.KIND]
    path = Path(spec.path)
    dtype = torch_dtype(dtype)
    if not path.exists():
        raise FileNotFoundError(f"no pipeline folder or checkpoint file at {path}")
    if path.is_dir():
        index = path / "model_index.json"
        if not index.exists():
            raise ValueError(f"{path} is not a diffusers pipeline (no model_index.json); pass a folder saved with "
                             "save_pretrained, or a single .safetensors/.ckpt checkpoint with its config folder")
        pipe = kind.open_folder(path, json.loads(index.read_text()), dtype, spec.load_options())
    elif path.suffix in CHECKPOINT_SUFFIXES:
        if spec.config is None:
            raise ValueError(f"single-file checkpoint {path.name} needs config=, a local diffusers config folder of "
                             "the same architecture (offline, no config is fetched)")
        pipe = kind.open_file(path, spec.config, dtype, spec.load_options())
    else:
        raise ValueError(f"{path} is neither a pipeline folder nor a checkpoint file "
                         f"({', '.join(CHECKPOINT_SUFFIXES)})")
    kind.check_scheduler(pipe, path)
    if spec.lora is not None:
        lora = Path(spec.lora)
        if not lora.exists():
            raise FileNotFoundError(f"no LoRA weights at {lora}")
        kwargs = {"weight_name": lora.name} if lora.is_file() else {}
        pipe.load_lora_weights(str(lora.parent if lora.is_file() else lora), adapter_name="amdm", **kwargs)
        pipe.set_adapters(["amdm"], adapter_weights=[float(spec.lora_scale)])
    kind.add_ons(pipe, spec)
    return pipe.to(spec.device)


def _is_size(value, step: int) -> bool:
    return not isinstance(value, bool) and hasattr(value, "__index__") and value >= step and value % step == 0


class PipelineDenoiser:
    """``out = model(z_t, t, cond)`` from a pipeline of ``spec``'s kind: its network's guided
    output, as the pipeline's loop computes it (epsilon, eq. 4, for SD; the velocity for SD3).

    ``spec.guidance`` s: classifier-free guidance as the pipeline does it (none when s <= 1).
    ``spec.height``/``spec.width``: the image size (default the network's sample size times the
    VAE's scale factor f; a multiple of f times the network's patch size), which sets
    ``latent_shape = (C, height / f, width / f)``. The rest of ``spec`` is read by its kind.
    """

    def __init__(self, pipe, spec):
        self.spec, self.kind, self.pipe = spec, KINDS[spec.KIND], pipe
        self.kind.check_scheduler(pipe, "the pipeline")
        self.net = getattr(pipe, self.kind.net)
        self.scheduler = pipe.scheduler
        self.guidance_scale = float(spec.guidance)
        factor, patch = getattr(pipe, "vae_scale_factor", 8), self.kind.patch(self.net)
        size = self.net.config.sample_size * factor
        height = size if spec.height is None else spec.height
        width = size if spec.width is None else spec.width
        for what, value in (("height", height), ("width", width)):
            if not _is_size(value, factor * patch):
                by = f" x the patch size {patch}" if patch > 1 else ""
                raise ValueError(f"{what} must be a positive multiple of {factor * patch} (the VAE's scale factor "
                                 f"{factor}{by}); got {value!r}")
        self.image_size = (int(height), int(width))
        self.latent_shape = (int(self.net.config.in_channels), int(height) // factor, int(width) // factor)
        self.dtype, self.device = self.net.dtype, self.net.device
        self.name = spec.name or str(spec.path)
        self.provenance = self.kind.provenance(spec)
        self._timesteps: list[int] | None = None
        self._fuser_on: bool | None = None
        self._null = None

    @property
    def do_cfg(self) -> bool:
        """Whether the output is guided: diffusers' ``do_classifier_free_guidance``, ``s > 1``."""
        return uses_guidance(self.guidance_scale)

    @property
    def is_gligen(self) -> bool:
        return getattr(self.net, "position_net", None) is not None

    @property
    def flow_mu(self) -> float | None:
        """The resolution shift of a ``use_dynamic_shifting`` flow scheduler, as the pipeline computes
        it; None otherwise."""
        return self.kind.flow_mu(self)

    # -- conditions --------------------------------------------------------------------------------

    def condition(self, prompt: str | None = None, **kwargs):
        """Encode a prompt (or take embeddings, and the kind's extras) into y: the kind's condition
        (``pipeline_kinds``: ``SDCondition`` or ``SD3Condition``)."""
        return self.kind.condition(self, prompt, **kwargs)

    @property
    def condition_kind(self) -> str:
        """Pipelines whose networks read prompt embeddings of one width take each other's y."""
        return self.kind.condition_kind(self.net)

    def null_condition(self):
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

    def prepare(self, timesteps) -> None:
        """Called by the sampler before a run: the timesteps, for GLIGEN's scheduled sampling."""
        self._timesteps = [int(t) for t in timesteps]

    def grounding(self, t: int) -> bool:
        """GLIGEN's grounding is on for the first int(beta T) steps (as the pipeline does it)."""
        if self._timesteps is None:
            raise ValueError("GLIGEN needs the run's timesteps: the sampler calls prepare() first")
        return self._timesteps.index(int(t)) < int(self.spec.gligen_beta * len(self._timesteps))

    def set_fuser(self, on: bool) -> None:
        """Turn GLIGEN's gated attention on or off (only when it changes)."""
        if on != self._fuser_on:
            self.pipe.enable_fuser(on)
            self._fuser_on = on

    def __call__(self, z_t: torch.Tensor, t, cond) -> torch.Tensor:
        """``z_t (B, C, H, W)`` at timestep t -> guided output ``(B, C, H, W)``, as the pipeline's loop."""
        check_latents(self, z_t)
        wanted = self.kind.condition_type
        if not isinstance(cond, wanted):
            raise ValueError(f"cond must be an {wanted.__name__} from model.condition(...); got {type(cond).__name__}")
        latent_in = torch.cat([z_t] * 2) if self.do_cfg else z_t  # (2B, C, H, W) with guidance
        out = self.kind.forward(self, latent_in, t, cond, z_t.shape[0])
        if self.do_cfg:
            out_u, out_c = out.chunk(2)
            out = guided(out_u, out_c, self.guidance_scale)
        return out

    # -- output and description ---------------------------------------------------------------------

    def decode(self, z0: torch.Tensor) -> list:
        """Final latents ``(B, C, H, W)`` -> PIL images, through the pipeline's VAE (with its scaling
        factor, and its shift where the kind has one, as the pipeline decodes)."""
        vae = self.pipe.vae
        latents = z0.to(vae.device, vae.dtype) / vae.config.scaling_factor
        shift = self.kind.vae_shift(vae)
        if shift is not None:
            latents = latents + shift
        with torch.no_grad():
            image = vae.decode(latents, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type="pil")

    def describe(self) -> dict:
        return {
            "family": self.kind.family,
            "name": self.name,
            "pipeline": type(self.pipe).__name__,
            "latent_shape": list(self.latent_shape),
            "image_size": list(self.image_size),
            "dtype": str(self.dtype).replace("torch.", ""),
            "guidance_scale": self.guidance_scale,
            **self.kind.describe(self),
            **self.provenance,
        }

    def ecosystem(self) -> dict:
        """What Section 3.1 requires two models of one ecosystem to share (``fingerprint``; compared by
        ``amdm_geom.models.ecosystem``)."""
        return self.kind.fingerprint(self.pipe, self.latent_shape)

"""Tiny transformer velocity models (App. G's DiT-style flow models), built offline from seeds.

- ``tiny_transformer_config`` / ``make_tiny_transformer``: small, randomly initialised
  ``SD3Transformer2DModel`` (MMDiT), ``FluxTransformer2DModel`` and ``DiTTransformer2DModel``
  (float32, eval), sized as diffusers' own tests size them;
- ``perturbed``: a "fine-tune", every weight moved by ``scale`` of its own spread (the rule of
  ``tiny_unets.perturbed_unet``);
- ``SD3FlowDenoiser``, ``FluxFlowDenoiser``, ``DiTFlowDenoiser`` (``flow_denoiser`` picks one):
  ``v = model(z_t, t, cond)`` under the flow contract (``amdm_geom.core.flow_schedules``): latents
  ``z_t (B, C, H, W)``, ``t`` the flow scheduler's timestep ``s * 1000``, the (guided) velocity
  ``v = eps - x0`` of the interpolant ``z_s = (1 - s) x0 + s eps`` that eq. (42)'s Euler step uses;
- ``text_condition`` and ``tiny_transformer_pair``: random "prompt embeddings" and a model pair of
  one flow ecosystem (a base and its perturbed copy, one scheduler).

Each wrapper calls its transformer as the diffusers pipeline of its family does: SD3 takes the
timestep ``t`` itself and ``(encoder_hidden_states, pooled_projections)``; Flux takes ``t / 1000``,
packed 2x2 latent patches as tokens with their ``img_ids`` and ``txt_ids``, and its guidance
embedding when the config has one; DiT takes class labels. diffusers' DiT predicts eps (and, with
``out_channels = 2 C``, a learned variance): here an untrained DiT-style backbone serves as a
velocity model, its first C output channels read as v. Classifier-free guidance is the toolkit's
one rule (``guidance``): ``v_u + g (v_c - v_u)`` for g > 1, one forward pass on the doubled batch.
Nothing is downloaded, and no factory touches the global torch RNG.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DiTTransformer2DModel, FluxTransformer2DModel, SD3Transformer2DModel

from amdm_geom.core.flow_schedules import GRID_KEYS, is_flow_scheduler, make_flow_scheduler
from amdm_geom.models.base import check_latents
from amdm_geom.models.checks import check_finite, check_seed, cpu_generator, seeded_cpu_rng
from amdm_geom.models.constants import TRANSFORMER_KINDS
from amdm_geom.models.fingerprint import weights_hash
from amdm_geom.models.guidance import guided, uses_guidance
from amdm_geom.models.tiny_unets import perturbed_unet

__all__ = ["DiTFlowDenoiser", "FluxFlowDenoiser", "SD3FlowDenoiser", "TransformerFlowDenoiser",
           "flow_denoiser", "make_tiny_transformer", "pack_latents", "perturbed", "text_condition",
           "tiny_transformer_config", "tiny_transformer_pair", "unpack_latents"]

_CLASSES = {"sd3": SD3Transformer2DModel, "flux": FluxTransformer2DModel, "dit": DiTTransformer2DModel}


def tiny_transformer_config(kind: str, *, sample_size: int = 8, in_channels: int = 4, **overrides: Any) -> dict:
    """A small config of ``kind`` ("sd3", "flux" or "dit") for ``(in_channels, sample_size,
    sample_size)`` latents. Flux's ``in_channels`` is that of its packed tokens, ``4 in_channels``;
    DiT learns a variance (``out_channels = 2 in_channels``) as the original DiT does.
    ``overrides`` replace entries as they are."""
    if kind not in TRANSFORMER_KINDS:
        raise ValueError(f"kind must be one of {', '.join(TRANSFORMER_KINDS)}; got {kind!r}")
    if kind == "sd3":
        config = {"sample_size": sample_size, "patch_size": 2, "in_channels": in_channels, "num_layers": 2,
                  "attention_head_dim": 8, "num_attention_heads": 2, "joint_attention_dim": 32,
                  "caption_projection_dim": 16, "pooled_projection_dim": 24, "out_channels": in_channels,
                  "pos_embed_max_size": 2 * sample_size}
    elif kind == "flux":
        config = {"patch_size": 1, "in_channels": 4 * in_channels, "num_layers": 1, "num_single_layers": 1,
                  "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 32,
                  "pooled_projection_dim": 24, "guidance_embeds": True, "axes_dims_rope": (4, 6, 6)}
    else:
        config = {"num_attention_heads": 2, "attention_head_dim": 8, "in_channels": in_channels,
                  "out_channels": 2 * in_channels, "num_layers": 2, "sample_size": sample_size, "patch_size": 2,
                  "norm_num_groups": 4, "num_embeds_ada_norm": 10}
    return {**config, **overrides}


def make_tiny_transformer(kind: str, seed: int = 0, **config: Any) -> torch.nn.Module:
    """A randomly initialised float32 transformer from ``tiny_transformer_config(kind, **config)``,
    in eval mode, seeded by ``seed`` without disturbing the global torch RNG."""
    cfg = tiny_transformer_config(kind, **config)
    with seeded_cpu_rng(check_seed(seed)):
        model = _CLASSES[kind](**cfg)
    return model.float().eval()  # (.float(): diffusers' .to(dtype) logs a warning on every cast)


def perturbed(base: torch.nn.Module, scale: float, seed: int) -> torch.nn.Module:
    """A deep copy of ``base`` with every floating parameter moved to ``p + scale * sigma_p * xi``,
    ``xi ~ N(0, 1)`` seeded by ``seed``, ``sigma_p`` the parameter's std (``perturbed_unet``'s
    rule, for any module): a stand-in for a fine-tune of the base, one ecosystem with it."""
    return perturbed_unet(base, scale, seed)


def text_condition(model: torch.nn.Module, seed: int, seq_len: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded standard-normal "prompt embeddings" for an SD3 or Flux transformer:
    ``(encoder_hidden_states (1, seq_len, joint_attention_dim), pooled_projections (1, pooled_projection_dim))``."""
    g = cpu_generator(check_seed(seed))
    cfg = model.config
    return (torch.randn((1, seq_len, cfg.joint_attention_dim), generator=g),
            torch.randn((1, cfg.pooled_projection_dim), generator=g))


def pack_latents(z: torch.Tensor) -> torch.Tensor:
    """Flux's tokens: ``(B, C, H, W)`` -> ``(B, H/2 * W/2, 4 C)``, one token per 2x2 patch."""
    B, C, H, W = z.shape
    return z.view(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, (H // 2) * (W // 2), 4 * C)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of ``pack_latents``: ``(B, H/2 * W/2, 4 C)`` -> ``(B, C, H, W)``."""
    B, _, D = tokens.shape
    return tokens.view(B, height // 2, width // 2, D // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(
        B, D // 4, height, width)


class TransformerFlowDenoiser:
    """``v = model(z_t, t, cond)`` from a diffusers transformer (one subclass per family).

    ``scheduler``: a ``FlowMatchEulerDiscreteScheduler`` (default ``make_flow_scheduler()``);
    ``guidance_scale`` g: ``v_u + g (v_c - v_u)`` for g > 1 with ``uncond`` (default the
    family's ``null_condition()``); ``provenance``: kept in ``describe()`` (seeds, perturbation).
    ``flow_mu`` is the resolution shift a ``use_dynamic_shifting`` scheduler needs, computed as
    the family's pipeline computes it from the image's token count (None otherwise)."""

    kind = ""

    def __init__(self, model: torch.nn.Module, scheduler=None, *, guidance_scale: float = 1.0, uncond=None,
                 name: str = "", provenance: dict | None = None):
        self.model = model.eval()
        self.scheduler = make_flow_scheduler() if scheduler is None else scheduler
        if not is_flow_scheduler(self.scheduler):
            raise ValueError(f"scheduler must be a flow-matching scheduler (FlowMatchEulerDiscreteScheduler); "
                             f"got {type(self.scheduler).__name__}")
        self.guidance_scale = check_finite("guidance_scale", guidance_scale)
        self.dtype, self.device = model.dtype, model.device
        self.name = name or self.kind
        self.provenance = dict(provenance or {})
        self.uncond = self.null_condition() if uncond is None else self._checked(uncond, 1)
        self._hash: str | None = None

    @property
    def do_cfg(self) -> bool:
        return uses_guidance(self.guidance_scale)

    def _image_seq_len(self) -> int:
        raise NotImplementedError

    @property
    def flow_mu(self) -> float | None:
        """diffusers' ``calculate_shift`` of the image's token count, for ``use_dynamic_shifting``."""
        cfg = self.scheduler.config
        if not cfg.get("use_dynamic_shifting"):
            return None
        base, top = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
        slope = (cfg.get("max_shift", 1.15) - cfg.get("base_shift", 0.5)) / (top - base)
        return self._image_seq_len() * slope + cfg.get("base_shift", 0.5) - slope * base

    def _timestep(self, t, n: int) -> torch.Tensor:
        """``t`` as the pipelines pass it: the scheduler's float32 timestep expanded to ``(n,)``."""
        t = torch.as_tensor(t, dtype=torch.float32, device=self.device)
        if t.numel() != 1:
            raise ValueError(f"t must be one timestep (a number or a one-element tensor); got shape {tuple(t.shape)}")
        return t.reshape(()).expand(n)

    def __call__(self, z_t: torch.Tensor, t, cond) -> torch.Tensor:
        """``z_t (B, C, H, W)`` at timestep ``t`` -> the (guided) velocity ``(B, C, H, W)``."""
        check_latents(self, z_t)
        B = z_t.shape[0]
        timestep = self._timestep(t, 2 * B if self.do_cfg else B)
        cond = self._checked(cond, B)
        if self.do_cfg:
            latent_in = torch.cat([z_t] * 2)  # (2B, C, H, W): unconditional first, as the SD pipelines
            cond_in = self._cat(self._checked(self.uncond, B), cond)
        else:
            latent_in, cond_in = z_t, cond
        with torch.no_grad():
            v = self._forward(latent_in, timestep, cond_in)
        if self.do_cfg:
            v_u, v_c = v.chunk(2)
            v = guided(v_u, v_c, self.guidance_scale)
        return v

    def describe(self) -> dict:
        if self._hash is None:
            self._hash = weights_hash(self.model)
        sched = self.scheduler.config
        return {
            "family": "transformer-flow",
            "kind": self.kind,
            "class": type(self.model).__name__,
            "name": self.name,
            "latent_shape": list(self.latent_shape),
            "dtype": str(self.dtype).replace("torch.", ""),
            "guidance_scale": self.guidance_scale,
            "config": {k: _plain(v) for k, v in dict(self.model.config).items() if not k.startswith("_")},
            "schedule": {k: _plain(sched.get(k)) for k in (*GRID_KEYS, "stochastic_sampling")},
            "weights_sha256": self._hash,
            **self.provenance,
        }


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


class _TextConditioned(TransformerFlowDenoiser):
    """SD3 and Flux: ``cond = (encoder_hidden_states (1 or B, seq, joint_attention_dim),
    pooled_projections (1 or B, pooled_projection_dim))``; the null condition is zeros of
    ``null_seq_len`` tokens (the uncond must have the cond's token count)."""

    def __init__(self, model, scheduler=None, *, null_seq_len: int = 8, **kwargs):
        self.null_seq_len = int(null_seq_len)
        super().__init__(model, scheduler, **kwargs)

    @property
    def condition_kind(self) -> str:
        return f"{self.kind}-embeds:{self.model.config.joint_attention_dim}x{self.model.config.pooled_projection_dim}"

    def null_condition(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.model.config
        return (torch.zeros((1, self.null_seq_len, cfg.joint_attention_dim), dtype=self.dtype, device=self.device),
                torch.zeros((1, cfg.pooled_projection_dim), dtype=self.dtype, device=self.device))

    def _checked(self, cond, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.model.config
        want = f"(encoder_hidden_states (1 or B, seq, {cfg.joint_attention_dim}), pooled_projections " \
               f"(1 or B, {cfg.pooled_projection_dim}))"
        if not (isinstance(cond, (tuple, list)) and len(cond) == 2 and all(isinstance(c, torch.Tensor) for c in cond)):
            raise ValueError(f"cond must be a pair {want}; got {type(cond).__name__}")
        hidden, pooled = cond
        if hidden.ndim != 3 or hidden.shape[-1] != cfg.joint_attention_dim or hidden.shape[0] not in (1, B) \
                or pooled.ndim != 2 or pooled.shape[-1] != cfg.pooled_projection_dim or pooled.shape[0] not in (1, B):
            raise ValueError(f"cond must be a pair {want} with B = {B}; got shapes {tuple(hidden.shape)} and "
                             f"{tuple(pooled.shape)}")
        return (hidden.to(self.device, self.dtype).expand(B, -1, -1).contiguous(),
                pooled.to(self.device, self.dtype).expand(B, -1).contiguous())

    def _cat(self, uncond, cond):
        if uncond[0].shape[1] != cond[0].shape[1]:
            raise ValueError(f"guidance needs the unconditional embeddings to have the condition's token count "
                             f"({cond[0].shape[1]}); got {uncond[0].shape[1]}")
        return torch.cat([uncond[0], cond[0]]), torch.cat([uncond[1], cond[1]])


class SD3FlowDenoiser(_TextConditioned):
    """An ``SD3Transformer2DModel`` (MMDiT): latents ``(in_channels, sample_size, sample_size)``,
    called as ``StableDiffusion3Pipeline`` calls it (``timestep = t`` expanded)."""

    kind = "sd3"

    def __init__(self, model: SD3Transformer2DModel, scheduler=None, **kwargs):
        cfg = model.config
        self.latent_shape = (int(cfg.in_channels), int(cfg.sample_size), int(cfg.sample_size))
        super().__init__(model, scheduler, **kwargs)

    def _image_seq_len(self) -> int:
        p = self.model.config.patch_size
        return (self.latent_shape[1] // p) * (self.latent_shape[2] // p)

    def _forward(self, z, timestep, cond):
        return self.model(hidden_states=z, timestep=timestep, encoder_hidden_states=cond[0],
                          pooled_projections=cond[1], return_dict=False)[0]


class FluxFlowDenoiser(_TextConditioned):
    """A ``FluxTransformer2DModel``: latents ``(in_channels / 4, height, width)`` (even sides),
    packed into 2x2-patch tokens, called as ``FluxPipeline`` calls it (``timestep = t / 1000``,
    ``img_ids`` of the token grid, zero ``txt_ids``, and ``guidance = embedded_guidance`` when
    the config has guidance embeddings)."""

    kind = "flux"

    def __init__(self, model: FluxTransformer2DModel, scheduler=None, *, height: int = 8, width: int = 8,
                 embedded_guidance: float = 3.5, **kwargs):
        if any(isinstance(x, bool) or not isinstance(x, int) or x < 2 or x % 2 for x in (height, width)):
            raise ValueError(f"height and width must be even ints >= 2 (2x2 patches); got {height!r}, {width!r}")
        self.latent_shape = (int(model.config.in_channels) // 4, height, width)
        self.embedded_guidance = check_finite("embedded_guidance", embedded_guidance)
        super().__init__(model, scheduler, **kwargs)
        ids = torch.zeros(height // 2, width // 2, 3)
        ids[..., 1] += torch.arange(height // 2)[:, None]
        ids[..., 2] += torch.arange(width // 2)[None, :]
        self.img_ids = ids.reshape(-1, 3).to(self.device, self.dtype)  # (H/2 * W/2, 3)

    def _image_seq_len(self) -> int:
        return (self.latent_shape[1] // 2) * (self.latent_shape[2] // 2)

    def _forward(self, z, timestep, cond):
        n = z.shape[0]
        guidance = None
        if self.model.config.guidance_embeds:
            guidance = torch.full([1], self.embedded_guidance, device=self.device, dtype=torch.float32).expand(n)
        txt_ids = torch.zeros(cond[0].shape[1], 3, device=self.device, dtype=self.dtype)
        out = self.model(hidden_states=pack_latents(z), timestep=timestep.to(z.dtype) / 1000, guidance=guidance,
                         pooled_projections=cond[1], encoder_hidden_states=cond[0], txt_ids=txt_ids,
                         img_ids=self.img_ids, return_dict=False)[0]
        return unpack_latents(out, *self.latent_shape[1:])

    def describe(self) -> dict:
        return {**super().describe(), "embedded_guidance": self.embedded_guidance}


class DiTFlowDenoiser(TransformerFlowDenoiser):
    """A ``DiTTransformer2DModel`` read as a velocity model: latents ``(in_channels, sample_size,
    sample_size)``, ``cond`` a class label (an int, or a ``(1,)`` / ``(B,)`` integer tensor) in
    ``[0, num_embeds_ada_norm)``; the null condition is the label ``num_embeds_ada_norm``, the row
    DiT keeps for classifier-free guidance. v is the first ``in_channels`` output channels (the
    rest, with a learned variance, are dropped as ``DiTPipeline`` drops them)."""

    kind = "dit"

    def __init__(self, model: DiTTransformer2DModel, scheduler=None, **kwargs):
        cfg = model.config
        self.latent_shape = (int(cfg.in_channels), int(cfg.sample_size), int(cfg.sample_size))
        super().__init__(model, scheduler, **kwargs)

    @property
    def condition_kind(self) -> str:
        return f"dit-class:{self.model.config.num_embeds_ada_norm}"

    def null_condition(self) -> torch.Tensor:
        return torch.tensor([self.model.config.num_embeds_ada_norm], device=self.device)

    def _checked(self, cond, B: int) -> torch.Tensor:
        n = int(self.model.config.num_embeds_ada_norm)
        labels = torch.as_tensor(cond, device=self.device).reshape(-1)
        if labels.is_floating_point() or labels.dtype == torch.bool or labels.shape[0] not in (1, B) \
                or ((labels < 0) | (labels > n)).any():
            raise ValueError(f"cond must be class labels in [0, {n}] ({n}: unconditional), one or one per latent "
                             f"(B = {B}); got {cond!r}")
        return labels.long().expand(B).contiguous()

    def _cat(self, uncond, cond):
        return torch.cat([uncond, cond])

    def _image_seq_len(self) -> int:
        p = self.model.config.patch_size
        return (self.latent_shape[1] // p) * (self.latent_shape[2] // p)

    def _forward(self, z, timestep, labels):
        out = self.model(z, timestep=timestep, class_labels=labels, return_dict=False)[0]  # (n, C or 2C, H, W)
        return out[:, :self.latent_shape[0]]


_DENOISERS = {SD3Transformer2DModel: SD3FlowDenoiser, FluxTransformer2DModel: FluxFlowDenoiser,
              DiTTransformer2DModel: DiTFlowDenoiser}


def flow_denoiser(model: torch.nn.Module, scheduler=None, **kwargs) -> TransformerFlowDenoiser:
    """The wrapper of ``model``'s family (``SD3FlowDenoiser``, ``FluxFlowDenoiser`` or ``DiTFlowDenoiser``)."""
    cls = _DENOISERS.get(type(model))
    if cls is None:
        raise ValueError(f"model must be an SD3Transformer2DModel, FluxTransformer2DModel or DiTTransformer2DModel; "
                         f"got {type(model).__name__}")
    return cls(model, scheduler, **kwargs)


def tiny_transformer_pair(kind: str, *, seed: int = 0, scale: float = 0.05, guidance_scale: float = 1.0,
                          shift: float = 1.0, cond_distance: float = 0.1, sample_size: int = 8, **config: Any):
    """Two models of one flow ecosystem: the tiny transformer of ``kind`` (seeded by ``seed``, for
    ``(4, sample_size, sample_size)`` latents) and its ``perturbed`` copy (``scale``, seed + 1), one
    ``make_flow_scheduler(shift)``, and nearby conditions ``(y1, y2)``: text embeddings with
    ``y2 = y1 + cond_distance * xi`` (SD3, Flux), or the class labels ``seed mod n`` and
    ``seed + 1 mod n`` (DiT). Returns ``([m1, m2], [y1, y2])``."""
    cond_distance = check_finite("cond_distance", cond_distance, minimum=0.0)
    flux = kind == "flux"
    base = make_tiny_transformer(kind, seed, **config, **({} if flux else {"sample_size": sample_size}))
    tuned = perturbed(base, scale, seed + 1)
    scheduler = make_flow_scheduler(shift)
    prov = {"model_seed": seed, "config_overrides": {k: _plain(v) for k, v in config.items()}, "flow_shift": shift}
    size = {"height": sample_size, "width": sample_size} if flux else {}
    models = [flow_denoiser(base, scheduler, guidance_scale=guidance_scale, name=f"{kind} base",
                            provenance={**prov, "perturb": 0.0}, **size),
              flow_denoiser(tuned, scheduler, guidance_scale=guidance_scale, name=f"{kind} fine-tune",
                            provenance={**prov, "perturb": float(scale), "perturb_seed": seed + 1}, **size)]
    if kind == "dit":
        n = int(base.config.num_embeds_ada_norm)
        return models, [torch.tensor([seed % n]), torch.tensor([(seed + 1) % n])]
    hidden, pooled = text_condition(base, seed)
    g = cpu_generator(seed + 2)
    y2 = (hidden + cond_distance * torch.randn(hidden.shape, generator=g),
          pooled + cond_distance * torch.randn(pooled.shape, generator=g))
    return models, [(hidden, pooled), y2]

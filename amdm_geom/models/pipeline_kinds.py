"""The kinds of diffusers pipeline the toolkit runs, each a small strategy of the one loader and
the one denoiser (``amdm_geom.models.pipelines``): what differs between them and nothing else.

- ``SD``: Stable Diffusion (SD 1.x/2.x, GLIGEN; LoRA, IP-Adapter): a UNet's epsilon (eq. 4) with a
  ``DDIMScheduler`` built from the pipeline's own scheduler config (AMDM is defined on the DDIM
  step); its condition an ``SDCondition``; the VAE decodes ``z / scaling_factor``.
- ``SD3``: Stable Diffusion 3, a rectified flow (App. G): a transformer's velocity, stepped by the
  pipeline's own ``FlowMatchEulerDiscreteScheduler`` (eq. 42's Euler step
  ``z + (s_next - s) v``); its condition an ``SD3Condition`` (two CLIP encoders and T5); the VAE
  decodes ``z / scaling_factor + shift_factor``.

Each kind says how its pipeline is opened (a folder or a single file) and checked, which network
and scheduler it steps, how a prompt becomes a condition, the network's call (the body of the
pipeline's own denoising loop, so that one model run by the AMDM sampler gives the pipeline's
latents bit for bit), the VAE's shift, its description and its ecosystem fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import DDIMScheduler

from amdm_geom.core.flow_schedules import FLOW_SCHEDULERS, GRID_KEYS, is_flow_scheduler
from amdm_geom.models.constants import MAX_GLIGEN_OBJECTS
from amdm_geom.models.fingerprint import fingerprint, flow_fingerprint, jsonable

__all__ = ["FLOW_PIPELINES", "KINDS", "SD", "SD3", "PipelineKind", "SD3Condition", "SDCondition"]

#: The flow pipelines ``SD3`` opens (by class name, as ``model_index.json`` names them).
FLOW_PIPELINES = ("StableDiffusion3Pipeline",)


@dataclass
class SDCondition:
    """A Stable Diffusion condition y: encoded prompt (and negative prompt), and the pipeline's extras.

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


@dataclass
class SD3Condition:
    """A Stable Diffusion 3 condition y: the encoded prompt and, when guided, the negative prompt.

    ``prompt_embeds (1, seq, joint_attention_dim)`` (CLIP tokens, padded, then T5 tokens) and
    ``pooled_prompt_embeds (1, pooled_projection_dim)``, as ``encode_prompt`` gives them."""

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None
    description: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return dict(self.description)


class PipelineKind:
    """One kind of pipeline: ``name`` (a pipeline spec's ``KIND``), ``net`` (its denoising network's
    attribute), ``family`` (its models' ``describe()["family"]``) and ``condition_type``."""

    name = ""
    net = ""
    family = ""
    condition_type: type = object

    def open_folder(self, path, index: dict, torch_dtype, options: dict):
        """The pipeline saved in folder ``path`` (``index``: its ``model_index.json``; ``options``:
        the spec's ``load_options()``)."""
        raise NotImplementedError

    def open_file(self, path, config, torch_dtype, options: dict):
        """The pipeline of single checkpoint file ``path`` with local config folder ``config``."""
        raise NotImplementedError

    def check_scheduler(self, pipe, where) -> None:
        """Give ``pipe`` the scheduler this kind steps, or refuse it (one line naming ``where``)."""

    def add_ons(self, pipe, spec) -> None:
        """Load what ``spec`` adds besides a LoRA (the IP-Adapter)."""

    def provenance(self, spec) -> dict:
        """Where the model's weights came from (kept in its description)."""
        return {"path": str(spec.path), "lora": str(spec.lora) if spec.lora else None}

    def patch(self, net) -> int:
        """The network's patch size (image sides are multiples of the VAE's factor times it)."""
        return 1

    def vae_shift(self, vae) -> float | None:
        """What ``decode`` adds after dividing by the VAE's scaling factor (None: nothing)."""
        return None

    def flow_mu(self, model) -> float | None:
        """The resolution shift of a ``use_dynamic_shifting`` scheduler (None: none)."""
        return None


class _SD(PipelineKind):
    name, net, family, condition_type = "sd", "unet", "pipeline", SDCondition

    def open_folder(self, path, index: dict, torch_dtype, options: dict):
        from diffusers import DiffusionPipeline

        extra = {"safety_checker": None, "requires_safety_checker": False} if "safety_checker" in index else {}
        return DiffusionPipeline.from_pretrained(path, dtype=torch_dtype, local_files_only=True, **extra, **options)

    def open_file(self, path, config, torch_dtype, options: dict):
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline.from_single_file(path, config=str(config), local_files_only=True,
                                                        dtype=torch_dtype, **options)

    def check_scheduler(self, pipe, where) -> None:
        if not hasattr(pipe, "unet") or not hasattr(pipe, "scheduler"):
            raise ValueError(f"{where} holds a {type(pipe).__name__}, not a UNet diffusion pipeline")
        if not isinstance(pipe.scheduler, DDIMScheduler):
            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)

    def add_ons(self, pipe, spec) -> None:
        from pathlib import Path

        if spec.ip_adapter is None:
            return
        if not Path(spec.ip_adapter).exists():
            raise FileNotFoundError(f"no IP-Adapter weights at {spec.ip_adapter}")
        encoder = None if spec.ip_adapter_image_encoder is None else str(spec.ip_adapter_image_encoder)
        pipe.load_ip_adapter(str(spec.ip_adapter), subfolder=spec.ip_adapter_subfolder,
                             weight_name=spec.ip_adapter_weight_name, image_encoder_folder=encoder)
        pipe.set_ip_adapter_scale(float(spec.ip_adapter_scale))

    def provenance(self, spec) -> dict:
        return {**super().provenance(spec), "ip_adapter": str(spec.ip_adapter) if spec.ip_adapter else None}

    def condition(self, model, prompt: str | None = None, *, negative_prompt: str | None = None,
                  prompt_embeds=None, negative_prompt_embeds=None, gligen_boxes=None, gligen_phrases=None,
                  ip_adapter_image=None) -> SDCondition:
        """Encode a prompt (or take embeddings) and the pipeline's extra conditions into y."""
        if prompt is None and prompt_embeds is None:
            raise ValueError("a condition needs a prompt or prompt_embeds")
        pos, neg = model.pipe.encode_prompt(prompt, model.device, 1, model.do_cfg, negative_prompt,
                                            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
                                            **model.spec.encode_options())
        desc = {"prompt": prompt, "negative_prompt": negative_prompt, "guidance_scale": model.guidance_scale}
        gligen = None
        if gligen_boxes is not None or gligen_phrases is not None:
            gligen = self.gligen_tokens(model, gligen_boxes, gligen_phrases)
            desc.update({"gligen_boxes": [list(map(float, b)) for b in gligen_boxes],
                         "gligen_phrases": list(gligen_phrases)})
        image_embeds = None
        if ip_adapter_image is not None:
            if getattr(model.net, "encoder_hid_proj", None) is None:
                raise ValueError("an IP-Adapter image needs a pipeline loaded with ip_adapter=")
            image_embeds = model.pipe.prepare_ip_adapter_image_embeds(ip_adapter_image, None, model.device, 1,
                                                                      model.do_cfg)
            desc["ip_adapter_image"] = True
        return SDCondition(pos, neg if model.do_cfg else None, gligen, image_embeds, desc)

    def gligen_tokens(self, model, boxes, phrases) -> dict:
        """GLIGEN's grounding tokens of ``boxes`` (x0, y0, x1, y1 in [0, 1]) and their phrases."""
        if not model.is_gligen:
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
        enc, device = model.pipe.text_encoder, model.device
        inputs = model.pipe.tokenizer(list(phrases), padding=True, return_tensors="pt").to(device)
        with torch.no_grad():
            pooled = enc(**inputs).pooler_output  # (n_objs, dim)
        n = len(boxes)
        out_boxes = torch.zeros(MAX_GLIGEN_OBJECTS, 4, device=device, dtype=enc.dtype)
        out_boxes[:n] = torch.tensor(boxes)
        emb = torch.zeros(MAX_GLIGEN_OBJECTS, model.net.config.cross_attention_dim, device=device, dtype=enc.dtype)
        emb[:n] = pooled
        masks = torch.zeros(MAX_GLIGEN_OBJECTS, device=device, dtype=enc.dtype)
        masks[:n] = 1
        return {"boxes": out_boxes, "positive_embeddings": emb, "masks": masks}

    def condition_kind(self, net) -> str:
        """``"sd-prompt:D"``: UNets that read prompt embeddings of width D take each other's y."""
        return f"sd-prompt:{net.config.cross_attention_dim}"

    def forward(self, model, latent_in: torch.Tensor, t, cond: SDCondition, B: int) -> torch.Tensor:
        """The UNet's output on ``latent_in (B or 2B, C, H, W)``, as the pipeline's loop calls it."""
        t = int(t)
        latent_in = model.scheduler.scale_model_input(latent_in, t)
        pos = cond.prompt_embeds.expand(B, -1, -1)
        hidden = torch.cat([cond.negative_prompt_embeds.expand(B, -1, -1), pos]) if model.do_cfg else pos
        cross, added = None, None
        if cond.gligen is not None:
            model.set_fuser(model.grounding(t))
            g = cond.gligen
            boxes = g["boxes"].unsqueeze(0).expand(B, -1, -1).clone()
            emb = g["positive_embeddings"].unsqueeze(0).expand(B, -1, -1).clone()
            masks = g["masks"].unsqueeze(0).expand(B, -1).clone()
            if model.do_cfg:
                boxes, emb, masks = torch.cat([boxes] * 2), torch.cat([emb] * 2), torch.cat([masks] * 2)
                masks[:B] = 0
            cross = {"gligen": {"boxes": boxes, "positive_embeddings": emb, "masks": masks}}
        elif model.is_gligen:
            model.set_fuser(False)
        if cond.image_embeds is not None:
            embeds = []
            for e in cond.image_embeds:  # (2, ...) negative then positive, or (1, ...)
                if model.do_cfg:
                    neg, p = e.chunk(2)
                    embeds.append(torch.cat([neg.expand(B, *neg.shape[1:]), p.expand(B, *p.shape[1:])]))
                else:
                    embeds.append(e.expand(B, *e.shape[1:]))
            added = {"image_embeds": embeds}
        with torch.no_grad():
            return model.net(latent_in, t, encoder_hidden_states=hidden, cross_attention_kwargs=cross,
                             added_cond_kwargs=added, return_dict=False)[0]

    def describe(self, model) -> dict:
        cfg = model.scheduler.config
        return {"gligen": model.is_gligen,
                "schedule": {k: cfg.get(k) for k in ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps",
                                                       "prediction_type", "timestep_spacing", "steps_offset")}}

    def fingerprint(self, pipe, latent_shape) -> dict:
        return fingerprint(pipe, latent_shape)


class _SD3(PipelineKind):
    name, net, family, condition_type = "sd3", "transformer", "flow-pipeline", SD3Condition

    def open_folder(self, path, index: dict, torch_dtype, options: dict):
        from diffusers import StableDiffusion3Pipeline

        name = index.get("_class_name")
        if name not in FLOW_PIPELINES:
            raise ValueError(f"{path} holds a {name}, not a flow-matching pipeline ({', '.join(FLOW_PIPELINES)}); "
                             "UNet pipelines go through `probe sd`")
        return StableDiffusion3Pipeline.from_pretrained(path, dtype=torch_dtype, local_files_only=True, **options)

    def open_file(self, path, config, torch_dtype, options: dict):
        from diffusers import StableDiffusion3Pipeline

        return StableDiffusion3Pipeline.from_single_file(path, config=str(config), local_files_only=True,
                                                         dtype=torch_dtype, **options)

    def check_scheduler(self, pipe, where) -> None:
        if not is_flow_scheduler(pipe.scheduler):
            raise ValueError(f"{where}'s scheduler is a {type(pipe.scheduler).__name__}; the flow sampler steps "
                             f"{', '.join(FLOW_SCHEDULERS)}")

    def patch(self, net) -> int:
        return int(net.config.patch_size)

    def vae_shift(self, vae) -> float | None:
        return vae.config.shift_factor or 0.0

    def flow_mu(self, model) -> float | None:
        """``calculate_shift`` of the latent's token count, as ``StableDiffusion3Pipeline`` computes
        it for a ``use_dynamic_shifting`` scheduler; None for a fixed shift."""
        cfg = model.scheduler.config
        if not cfg.get("use_dynamic_shifting"):
            return None
        p = model.net.config.patch_size
        seq = (model.latent_shape[1] // p) * (model.latent_shape[2] // p)
        base, top = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
        slope = (cfg.get("max_shift", 1.16) - cfg.get("base_shift", 0.5)) / (top - base)
        return seq * slope + cfg.get("base_shift", 0.5) - slope * base

    def condition(self, model, prompt: str | None = None, *, negative_prompt: str | None = None,
                  prompt_embeds=None, pooled_prompt_embeds=None, negative_prompt_embeds=None,
                  negative_pooled_prompt_embeds=None) -> SD3Condition:
        """Encode a prompt (or take embeddings) with the pipeline's own ``encode_prompt`` into y."""
        if prompt is None and prompt_embeds is None:
            raise ValueError("a condition needs a prompt or prompt_embeds (with pooled_prompt_embeds)")
        if prompt_embeds is not None and pooled_prompt_embeds is None:
            raise ValueError("prompt_embeds need pooled_prompt_embeds (SD3 takes both)")
        with torch.no_grad():  # as the pipeline's __call__ (autograd changes CPU attention kernels, and bits)
            pos, neg, pooled, neg_pooled = model.pipe.encode_prompt(
                prompt=prompt, prompt_2=None, prompt_3=None, device=model.device, num_images_per_prompt=1,
                do_classifier_free_guidance=model.do_cfg, negative_prompt=negative_prompt,
                prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
                pooled_prompt_embeds=pooled_prompt_embeds, negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
                **model.spec.encode_options())
        desc = {"prompt": prompt, "negative_prompt": negative_prompt, "guidance_scale": model.guidance_scale}
        if not model.do_cfg:
            neg = neg_pooled = None
        return SD3Condition(pos, pooled, neg, neg_pooled, desc)

    def condition_kind(self, net) -> str:
        """``"sd3-prompt:D:P"``: transformers that read prompt embeddings of width D and pooled ones
        of width P take each other's y."""
        return f"sd3-prompt:{net.config.joint_attention_dim}:{net.config.pooled_projection_dim}"

    def forward(self, model, latent_in: torch.Tensor, t, cond: SD3Condition, B: int) -> torch.Tensor:
        """The transformer's velocity on ``latent_in (B or 2B, C, H, W)`` at timestep ``t`` (the
        scheduler's ``s * 1000``, expanded over the batch), as the pipeline's loop calls it."""
        if model.do_cfg and cond.negative_prompt_embeds is None:
            raise ValueError("guidance needs a condition encoded by a guided model (with negative embeddings)")
        t = torch.as_tensor(t, dtype=torch.float32, device=model.device)
        if t.numel() != 1:
            raise ValueError(f"t must be one timestep (a number or a one-element tensor); got shape {tuple(t.shape)}")
        pos, pooled = cond.prompt_embeds.expand(B, -1, -1), cond.pooled_prompt_embeds.expand(B, -1)
        if model.do_cfg:
            hidden = torch.cat([cond.negative_prompt_embeds.expand(B, -1, -1), pos])
            pooled = torch.cat([cond.negative_pooled_prompt_embeds.expand(B, -1), pooled])
        else:
            hidden, pooled = pos.contiguous(), pooled.contiguous()
        with torch.no_grad():
            return model.net(hidden_states=latent_in, timestep=t.reshape(()).expand(latent_in.shape[0]),
                             encoder_hidden_states=hidden, pooled_projections=pooled, return_dict=False)[0]

    def describe(self, model) -> dict:
        cfg = model.scheduler.config
        return {"max_sequence_length": model.spec.max_sequence_length,
                "schedule": {k: jsonable(cfg.get(k)) for k in (*GRID_KEYS, "stochastic_sampling")}}

    def fingerprint(self, pipe, latent_shape) -> dict:
        return flow_fingerprint(pipe, latent_shape)


SD, SD3 = _SD(), _SD3()
#: kind name (a pipeline spec's ``KIND``) -> its strategy.
KINDS: dict[str, PipelineKind] = {k.name: k for k in (SD, SD3)}

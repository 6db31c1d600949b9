"""The digits network and its denoiser.

``DigitsNet``: a tiny diffusers ``UNet2DConditionModel`` on 16x16 RGB whose condition is one
learned token per attribute (position, colour, digit): ``cond (B, 3)`` int64 holds each
attribute's value, or -1 where the attribute is not given (the null token, also the dropped
condition of classifier-free guidance), embedded as ``encoder_hidden_states (B, 3, D)``. Two
fixed coordinate channels (y and x in [-1, 1], "CoordConv") are appended to the input, so that
the nearly translation-equivariant convolutions are told where in the image they are (the
quadrant is one of the attributes).

``DigitsDenoiser``: the ``amdm_geom.models.base.Denoiser`` of a trained net: its output in its
scheduler's ``prediction_type`` (v-prediction for the VP models, whose integer timestep it
takes), or, with a ``FlowMatchEulerDiscreteScheduler``, the rectified flow's velocity
v = eps - x0 of App. G (eq. 42) at the float timestep 1000 s; with classifier-free guidance as
diffusers' pipelines compute it (``amdm_geom.models.guidance``, also applied to v by SD3's
and Flux's pipelines), the null condition being every attribute at -1.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from amdm_geom.core.flow_schedules import is_flow_scheduler
from amdm_geom.models.base import check_latents
from amdm_geom.models.digits.data import ATTRIBUTES, N_VALUES, SIZE
from amdm_geom.models.guidance import guided, uses_guidance

__all__ = ["NET_CONFIG", "DigitsDenoiser", "DigitsNet", "as_condition", "null_condition"]

#: The UNet's config (about 0.25 M parameters with the embeddings: 1.0 MB in float32).
NET_CONFIG = dict(sample_size=SIZE, in_channels=5, out_channels=3, layers_per_block=1,
                  block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                  attention_head_dim=8, norm_num_groups=8)


class DigitsNet(nn.Module):
    """``out = net(z_t (B, 3, 16, 16), t (B,) or a number, cond (B, 3) int64)``; ``t`` an integer
    (VP) or float (flow: 1000 s) timestep, which the UNet's sinusoidal embedding takes alike."""

    def __init__(self, config: dict | None = None):
        super().__init__()
        cfg = dict(NET_CONFIG if config is None else config)
        self.config = cfg
        dim = int(cfg["cross_attention_dim"])
        # index 0 is the null token of each attribute; value v is index v + 1
        self.embed = nn.ModuleList([nn.Embedding(N_VALUES[a] + 1, dim) for a in ATTRIBUTES])
        self.unet = UNet2DConditionModel(**cfg)

    def encode(self, cond: torch.Tensor) -> torch.Tensor:
        """``(B, 3)`` int64 (-1: not given) -> ``encoder_hidden_states (B, 3, D)``."""
        return torch.stack([e(cond[:, k] + 1) for k, e in enumerate(self.embed)], dim=1)

    def forward(self, z_t: torch.Tensor, t, cond: torch.Tensor) -> torch.Tensor:
        """``z_t (B, 3, 16, 16)``, ``t (B,)``, ``cond (B, 3)`` -> the output ``(B, 3, 16, 16)``."""
        b, _, h, w = z_t.shape
        grid = torch.linspace(-1.0, 1.0, h, dtype=z_t.dtype, device=z_t.device)
        yy = grid[:, None].expand(h, w)
        xx = torch.linspace(-1.0, 1.0, w, dtype=z_t.dtype, device=z_t.device)[None, :].expand(h, w)
        coords = torch.stack([yy, xx])[None].expand(b, -1, -1, -1)
        return self.unet(torch.cat([z_t, coords], dim=1), t, encoder_hidden_states=self.encode(cond)).sample


def null_condition(batch: int = 1) -> torch.Tensor:
    """Every attribute not given: ``(batch, 3)`` of -1."""
    return torch.full((batch, len(ATTRIBUTES)), -1, dtype=torch.int64)


def as_condition(position: int | None = None, colour: int | None = None, digit: int | None = None) -> torch.Tensor:
    """``(1, 3)`` int64 condition, -1 where an attribute is not given (one-line error on a bad value)."""
    values = {"position": position, "colour": colour, "digit": digit}
    out = []
    for name, v in values.items():
        if v is None:
            out.append(-1)
        elif isinstance(v, int) and 0 <= v < N_VALUES[name]:
            out.append(v)
        else:
            raise ValueError(f"{name} must be an int in [0, {N_VALUES[name] - 1}] or None; got {v!r}")
    return torch.tensor([out], dtype=torch.int64)


class DigitsDenoiser:
    """A trained ``DigitsNet`` as a denoiser: ``model(z_t, t, cond)`` returns the net's output
    under guidance scale ``guidance_scale``: in ``scheduler.config.prediction_type`` at the
    integer timestep ``t`` for a VP scheduler (``DDIMScheduler``); the velocity eps - x0 at the
    float timestep ``t`` = 1000 s (a number or 0-d tensor, ``scheduler.timesteps[k]``) for a
    ``FlowMatchEulerDiscreteScheduler``.

    ``cond`` is ``(1, 3)`` or ``(B, 3)`` int64 (``as_condition``). ``attributes``: the
    attributes the model was trained to take (the others it has only seen as null)."""

    def __init__(self, net: DigitsNet, scheduler, *, guidance_scale: float = 1.0,
                 attributes: tuple[str, ...] = (), name: str = "digits"):
        self.net = net.eval()
        self.scheduler = scheduler
        self.latent_shape = (3, SIZE, SIZE)
        self.dtype = torch.float32
        self.device = torch.device("cpu")
        self.guidance_scale = float(guidance_scale)
        self.attributes = tuple(attributes)
        self.name = name
        self.objective = "flow" if is_flow_scheduler(scheduler) else "v_prediction"

    #: what a latent is (the ecosystem check compares it): the image itself
    data_space = f"pixels 3x{SIZE}x{SIZE} in [-1, 1]"

    @property
    def condition_kind(self) -> str:
        """The attributes it takes: two digits models accept one another's conditions only if
        they were trained on the same attributes."""
        return "digits:" + ",".join(self.attributes)

    def null_condition(self) -> torch.Tensor:
        return null_condition(1)

    def _cond(self, cond: Any, batch: int) -> torch.Tensor:
        cond = torch.as_tensor(cond, dtype=torch.int64)
        if cond.ndim != 2 or cond.shape[1] != len(ATTRIBUTES) or cond.shape[0] not in (1, batch):
            raise ValueError(f"condition must have shape (1, 3) or ({batch}, 3); got {tuple(cond.shape)}")
        return cond.expand(batch, -1)

    @torch.no_grad()
    def __call__(self, z_t: torch.Tensor, t, cond: Any) -> torch.Tensor:
        """``z_t (B, 3, 16, 16)``, ``t`` the timestep, ``cond (1 or B, 3)`` -> ``(B, 3, 16, 16)``."""
        check_latents(self, z_t)
        batch = z_t.shape[0]
        c = self._cond(cond, batch)
        if self.objective == "flow":
            tt = torch.full((batch,), float(t), dtype=torch.float32)
        else:
            tt = torch.full((batch,), int(t), dtype=torch.int64)
        if not uses_guidance(self.guidance_scale):
            return self.net(z_t, tt, c)
        out = self.net(torch.cat([z_t, z_t]), torch.cat([tt, tt]), torch.cat([null_condition(batch), c]))
        out_u, out_c = out.chunk(2)
        return guided(out_u, out_c, self.guidance_scale)

    def describe(self) -> dict:
        """Family, name, guidance, attributes, objective and what it predicts ('flow_velocity': eps - x0)."""
        predicts = "flow_velocity" if self.objective == "flow" else self.scheduler.config.prediction_type
        return {"family": "digits", "name": self.name, "guidance_scale": self.guidance_scale,
                "attributes": list(self.attributes), "objective": self.objective, "prediction_type": predicts}

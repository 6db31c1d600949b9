"""What makes a pipeline's diffusion ecosystem (Section 3.1, App. F.3): the facts two models must
share for AMDM to aggregate their latents.

``fingerprint(pipe, latent_shape)`` collects them: the latent shape, the VAE (its config and a
hash of its weights), and the SDE (the scheduler entries that define it and a hash of its
``alphas_cumprod``); ``flow_fingerprint`` the same for a rectified flow, whose time grid stands
for ``alphas_cumprod``. ``PipelineDenoiser.ecosystem()`` returns them; ``amdm_geom.models.ecosystem``
compares two of them. This module sits below both, so the dependency points one way.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from amdm_geom.core.flow_schedules import GRID_KEYS

__all__ = ["SCHEDULER_KEYS", "fingerprint", "flow_fingerprint", "jsonable", "vae_facts", "weights_hash"]

#: The scheduler config entries that define the SDE and its time grid.
SCHEDULER_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                  "prediction_type", "timestep_spacing", "steps_offset", "rescale_betas_zero_snr")


def weights_hash(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers, by name, in float32 little-endian (so a
    float16 copy of the same weights hashes alike only if it is exactly representable)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def jsonable(value):
    """A config value as JSON keeps it: tuples and arrays as lists."""
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def vae_facts(pipe) -> dict:
    """``{"vae_config": ..., "vae_hash": ...}`` of a pipeline's VAE (None without one); the hash is
    computed once and cached on ``pipe``."""
    vae = getattr(pipe, "vae", None)
    cache = getattr(pipe, "_amdm_vae_hash", None)
    if vae is not None and cache is None:
        cache = weights_hash(vae)
        pipe._amdm_vae_hash = cache
    return {"vae_config": None if vae is None else {k: jsonable(v) for k, v in dict(vae.config).items()
                                                    if not k.startswith("_")},
            "vae_hash": cache}


def fingerprint(pipe, latent_shape) -> dict:
    """The ecosystem-defining facts of a pipeline: VAE config and weight hash, SDE, latent shape.

    ``latent_shape`` is ``(C, H, W)``; the VAE's hash is computed once and cached on ``pipe``.
    """
    sched = pipe.scheduler
    alphas = sched.alphas_cumprod.to(torch.float64).numpy()
    return {
        "latent_shape": list(latent_shape),
        **vae_facts(pipe),
        "scheduler": {k: jsonable(sched.config.get(k)) for k in SCHEDULER_KEYS},
        "alphas_cumprod_sha": hashlib.sha256(alphas.tobytes()).hexdigest(),
    }


def flow_fingerprint(pipe, latent_shape) -> dict:
    """The ecosystem-defining facts of a flow pipeline, in the layout of ``fingerprint`` (so
    ``ecosystem.compare`` reads both): the latent shape, the VAE's config and weights hash, the
    scheduler's entries (``SCHEDULER_KEYS``, absent ones None, and the flow's ``GRID_KEYS``) and,
    under ``alphas_cumprod_sha``, a hash of the flow's time grid (a flow has no ``alphas_cumprod``:
    its ``GRID_KEYS`` and training sigmas define the interpolant's time grid, App. G)."""
    sched = pipe.scheduler
    keys = {k: jsonable(sched.config.get(k)) for k in (*SCHEDULER_KEYS, *GRID_KEYS)}
    grid = hashlib.sha256(json.dumps({k: keys[k] for k in GRID_KEYS}, sort_keys=True).encode())
    fresh = type(sched).from_config(sched.config)  # (the training grid, whatever set_timesteps did since)
    grid.update(fresh.sigmas.to(torch.float64).cpu().numpy().tobytes())
    return {
        "latent_shape": list(latent_shape),
        **vae_facts(pipe),
        "scheduler": keys,
        "alphas_cumprod_sha": grid.hexdigest(),
    }

"""Rectified-flow schedules (App. G): the interpolant, the Euler step of eq. (42) as diffusers'
``FlowMatchEulerDiscreteScheduler`` takes it, and its coefficients in the form of eq. (4).

Under the interpolant of SD3 and Flux, with s = sigma in [0, 1] the flow's noise level,

    z_s = (1 - s) x0 + s eps,          v = dz/ds = eps - x0,

a model predicts v. diffusers' step from s to s_next (dt = s_next - s < 0) is

    deterministic:   z_next = z + dt v                                      (Euler on eq. 42)
    stochastic:      z_next = (1 - s_next) x0_hat + s_next xi,  x0_hat = z - s v

so that, as in eq. (4), ``z_next = A z + B v + sigma xi`` with

    deterministic:   A = 1,            B = dt,                   sigma = 0
    stochastic:      A = 1 - s_next,   B = -(1 - s_next) s,      sigma = s_next.

The step's *location* ``mu = A z + B v`` (its deterministic part) is what AMDM's radial shift
moves towards (eq. 7), as the reverse-step mean mu is under DDIM. Eq. (46) prints the step as
``z_{t-1} = z'_t - v`` (no step size): ``flow_coefficients`` keeps dt so the two can be
compared.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
import xarray as xr
from diffusers import FlowMatchEulerDiscreteScheduler

__all__ = ["FLOW_SCHEDULERS", "flow_coefficients", "flow_shell_radius", "flow_stepper", "is_flow_scheduler",
           "make_flow_scheduler", "sigmas_of"]

#: The flow schedulers the sampler steps (by class name).
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)

#: Config keys that change the interpolant's time grid (two models share an ecosystem only if
#: these agree); ``stochastic_sampling`` is how one samples, not the model's SDE.
GRID_KEYS = ("num_train_timesteps", "shift", "use_dynamic_shifting", "base_shift", "max_shift",
             "base_image_seq_len", "max_image_seq_len", "invert_sigmas", "shift_terminal",
             "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "time_shift_type")


def is_flow_scheduler(scheduler) -> bool:
    """Whether ``scheduler`` is a rectified-flow scheduler (any class whose name starts with
    ``FlowMatch``; only ``FLOW_SCHEDULERS`` can be stepped)."""
    return type(scheduler).__name__.startswith("FlowMatch")


def make_flow_scheduler(shift: float = 1.0, *, stochastic: bool = False,
                        **overrides) -> FlowMatchEulerDiscreteScheduler:
    """A ``FlowMatchEulerDiscreteScheduler`` with 1000 training steps and time shift ``shift``
    (SD3 uses 3.0; 1.0 is the plain linear grid), deterministic unless ``stochastic``."""
    if not (isinstance(shift, (int, float)) and not isinstance(shift, bool) and math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a finite float > 0; got {shift!r}")
    config = {"num_train_timesteps": 1000, "shift": float(shift), "stochastic_sampling": bool(stochastic), **overrides}
    return FlowMatchEulerDiscreteScheduler(**config)


def flow_stepper(scheduler, num_inference_steps: int, *, stochastic: bool | None = None, mu: float | None = None,
                 who: str = "the model"):
    """A fresh flow scheduler like ``scheduler`` (diffusers keeps a step index: one per model),
    set to ``num_inference_steps``; ``stochastic`` overrides its ``stochastic_sampling``; ``mu``
    is the resolution shift a ``use_dynamic_shifting`` scheduler needs to define its step sizes."""
    name = type(scheduler).__name__
    if name not in FLOW_SCHEDULERS:
        raise ValueError(f"{who}'s flow scheduler {name} cannot be stepped here; accepted: "
                         f"{', '.join(FLOW_SCHEDULERS)}")
    config = dict(scheduler.config)
    if stochastic is not None:
        config["stochastic_sampling"] = bool(stochastic)
    if config.get("use_dynamic_shifting") and mu is None:
        raise ValueError(f"{who}'s flow scheduler has no step size: use_dynamic_shifting=True needs mu (the "
                         "resolution shift; give the model a flow_mu) or a scheduler with a fixed shift")
    out = FlowMatchEulerDiscreteScheduler.from_config(config)
    out.set_timesteps(int(num_inference_steps), mu=mu)
    return out


def sigmas_of(scheduler, num_inference_steps: int, mu: float | None = None) -> np.ndarray:
    """The T + 1 noise levels s_0 > ... > s_T = 0 of a flow scheduler set to T steps (float64
    copies of its float32 values)."""
    return flow_stepper(scheduler, num_inference_steps, mu=mu).sigmas.to(torch.float64).numpy()


def flow_coefficients(scheduler, num_inference_steps: int, *, stochastic: bool | None = None,
                      mu: float | None = None) -> xr.Dataset:
    """Per step k, the coefficients of ``z_next = A z + B v + sigma xi`` for diffusers' flow step
    (module docstring), as an ``xarray.Dataset`` over ``step``, in the schema of
    ``schedules.ddim_coefficients`` so one store layout serves both: ``t``, ``t_prev`` (the
    float timesteps s * num_train_timesteps), ``A``, ``B``, ``sigma`` (the step's noise scale,
    eq. 4's sigma_t: 0 when deterministic), ``alpha_bar``/``alpha_bar_prev`` (NaN: no VP
    schedule), and the flow's own ``flow_sigma`` (s), ``flow_sigma_next`` and ``dt``. The
    arithmetic is float64 on the scheduler's float32 sigmas (diffusers steps in float32)."""
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
            or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an int >= 1; got {num_inference_steps!r}")
    sched = flow_stepper(scheduler, num_inference_steps, stochastic=stochastic, mu=mu)
    s = sched.sigmas.to(torch.float64).numpy()
    n_train = float(sched.config.num_train_timesteps)
    s_t, s_next = s[:-1], s[1:]
    dt = s_next - s_t
    if sched.config.stochastic_sampling:
        A, B, sigma = 1.0 - s_next, -(1.0 - s_next) * s_t, s_next.copy()
    else:
        A, B, sigma = np.ones_like(s_t), dt, np.zeros_like(s_t)
    nan = np.full_like(s_t, np.nan)
    return xr.Dataset(
        {"t": ("step", sched.timesteps.to(torch.float64).numpy()), "t_prev": ("step", s_next * n_train),
         "alpha_bar": ("step", nan), "alpha_bar_prev": ("step", nan.copy()),
         "A": ("step", A), "B": ("step", B), "sigma": ("step", sigma),
         "flow_sigma": ("step", s_t), "flow_sigma_next": ("step", s_next), "dt": ("step", dt)},
        coords={"step": np.arange(len(s_t))},
        attrs={"kind": "flow", "stochastic": bool(sched.config.stochastic_sampling),
               "num_inference_steps": int(num_inference_steps),
               "scheduler_config": json.dumps({k: v for k, v in dict(sched.config).items()
                                               if isinstance(v, (str, int, float, bool)) or v is None}, sort_keys=True),
               "description": "flow step: z_next = A z + B v + sigma xi (diffusers' FlowMatchEulerDiscreteScheduler)"},
    )


def flow_shell_radius(s, n: int, data_sq_norm: float) -> np.ndarray:
    """The radius sqrt(E|z_s|^2) where flow latents concentrate: for x0 independent of eps,
    ``E|z_s|^2 = (1 - s)^2 E|x0|^2 + s^2 n`` (not sqrt(n) as under VP with unit-variance data:
    at s = 1/2 the noise contributes only n / 4). ``data_sq_norm`` is E|x0|^2."""
    s = np.asarray(s, dtype=np.float64)
    return np.sqrt((1.0 - s) ** 2 * float(data_sq_norm) + s**2 * int(n))

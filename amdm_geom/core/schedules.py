"""VP noise schedules, the DDIM/DDPM step coefficients of eq. (4), and the continuous-time
moments of App. D.1 (eqs. 37-41).

The reverse step of eq. (4), written per step k (timestep t -> t_prev) as

    mu    = A_t z_t + B_t eps,          A_t = sqrt(abar_prev / abar_t),
                                        B_t = sqrt(1 - abar_prev - sigma_t^2)
                                              - sqrt(abar_prev (1 - abar_t) / abar_t),
    z_{t-1} = mu + sigma_t xi,          sigma_t = eta sqrt((1 - abar_prev)/(1 - abar_t))
                                                      * sqrt(1 - abar_t / abar_prev),

is diffusers' ``DDIMScheduler.step`` (eta = 1 gives the DDPM posterior on the same timesteps)
when eps is the step's epsilon: the model output for epsilon prediction, and for v- or
x0-prediction (and clipped or thresholded x0) the epsilon ``step_epsilon`` derives from it, so
that eq. (4) holds on every step. ``ddim_coefficients`` tabulates the coefficients.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import torch
import xarray as xr
from diffusers import DDIMScheduler

__all__ = [
    "PREDICTION_TYPES",
    "SCHEDULE_KINDS",
    "SD15_SCHEDULER_CONFIG",
    "VESchedule",
    "ddim_coefficients",
    "discrete_moments",
    "integrated_beta",
    "make_scheduler",
    "predicted_epsilon",
    "schedule_params",
    "step_epsilon",
    "stepper",
    "vp_moments",
]

#: Stable Diffusion 1.x scheduler config (its scheduler_config.json). DDIMScheduler's own defaults
#: differ (clip_sample=True, set_alpha_to_one=True, steps_offset=0), so pass all of these.
SD15_SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "clip_sample": False,
}

#: Schedules by name: diffusers' beta_schedule and its default beta range. Everything else
#: (timestep spacing, offset, final alpha) follows SD 1.x, so that only the SDE differs.
SCHEDULE_KINDS: dict[str, dict] = {
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "linear": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    "cosine": {"beta_schedule": "squaredcos_cap_v2"},
}

#: What a model may predict (diffusers' ``prediction_type``); ``step_epsilon`` turns each into eps.
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

_COSINE_S = 0.008  # the offset of diffusers' squaredcos_cap_v2 (Nichol & Dhariwal 2021)


def make_scheduler(kind: str = "scaled_linear", **overrides) -> DDIMScheduler:
    """A DDIMScheduler with SD 1.x settings and the betas of ``kind``.

    ``kind`` is one of ``SCHEDULE_KINDS`` (``"scaled_linear"`` is SD 1.x itself); keyword
    overrides go to the config (e.g. ``beta_end=0.02``).
    """
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"schedule kind must be one of {sorted(SCHEDULE_KINDS)}; got {kind!r}")
    config = {**SD15_SCHEDULER_CONFIG, **SCHEDULE_KINDS[kind], **overrides}
    return DDIMScheduler(**config)


def _schedule_kind(config) -> str:
    names = {v["beta_schedule"]: k for k, v in SCHEDULE_KINDS.items()}
    if config.get("trained_betas") is not None or config["beta_schedule"] not in names:
        raise ValueError(
            f"continuous-time moments need beta_schedule in {sorted(names)}; "
            f"got {config['beta_schedule']!r}"
        )
    return names[config["beta_schedule"]]


def _check_affine(config) -> None:
    """The step is A z + B eps + sigma xi for the step's epsilon (``step_epsilon``) of any
    prediction type, clipped or not; a VE schedule steps an epsilon model without clipping."""
    kind = config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {list(PREDICTION_TYPES)}; got {kind!r}")
    if config.get("parametrization") == "ve" and (kind != "epsilon" or _clips(config)):
        raise ValueError(f"a VE schedule steps an epsilon model without clipping; got prediction_type={kind!r}, "
                         f"clip_sample={config.get('clip_sample')}, thresholding={config.get('thresholding')}")
    if config.get("rescale_betas_zero_snr", False):
        raise ValueError("ddim_coefficients does not support rescale_betas_zero_snr=True")


def _clips(config) -> bool:
    return bool(config.get("clip_sample", False) or config.get("thresholding", False))


def ddim_coefficients(scheduler, num_inference_steps: int, eta: float = 0.0) -> xr.Dataset:
    """The coefficients of eq. (4) per sampling step, as an ``xarray.Dataset`` over ``step``.

    ``scheduler`` is any diffusers scheduler with a DDIM-compatible config (it is not
    modified); ``num_inference_steps`` in [1, num_train_timesteps]; ``eta`` >= 0 the DDIM
    stochasticity (0: deterministic DDIM, 1: DDPM posterior variance).

    Variables, each ``(step,)``: ``t``, ``t_prev`` (int64; ``t_prev < 0`` means the final
    step, which uses ``final_alpha_cumprod``), ``alpha_bar``, ``alpha_bar_prev``, ``A``, ``B``,
    ``sigma`` (float64), such that ``A z + B eps + sigma xi`` equals
    ``DDIMScheduler.step(out, t, z, eta=eta, variance_noise=xi).prev_sample`` for a model output
    ``out`` in the scheduler's ``prediction_type`` (epsilon, v_prediction or sample, clipped or
    thresholded or not), with ``eps = step_epsilon(scheduler, out, t, z, eta)`` the step's
    epsilon (``out`` itself for epsilon prediction without clipping). The coefficients are
    computed in float64 from the scheduler's (float32) ``alphas_cumprod``.
    """
    config = dict(scheduler.config)
    _check_affine(config)
    n_train = int(config["num_train_timesteps"])
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
        raise ValueError(f"num_inference_steps must be an int; got {num_inference_steps!r}")
    if not 1 <= num_inference_steps <= n_train:
        raise ValueError(f"num_inference_steps must be in [1, {n_train}]; got {num_inference_steps}")
    if not (isinstance(eta, (int, float)) and eta >= 0 and math.isfinite(eta)):
        raise ValueError(f"eta must be a finite float >= 0; got {eta!r}")

    ve = config.get("parametrization") == "ve"
    if ve and eta != 0:
        raise ValueError(f"a VE schedule steps deterministically here; eta must be 0; got {eta!r}")
    sched = DDIMScheduler.from_config(_vp_config(config))
    sched.set_timesteps(int(num_inference_steps))
    alphas_cumprod = sched.alphas_cumprod.to(torch.float64).numpy()
    final = float(sched.final_alpha_cumprod)

    t = sched.timesteps.numpy().astype(np.int64)
    t_prev = t - n_train // int(num_inference_steps)  # as DDIMScheduler.step computes it
    abar = alphas_cumprod[t]
    abar_prev = np.where(t_prev >= 0, alphas_cumprod[np.maximum(t_prev, 0)], final)
    variance = (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)
    sigma = float(eta) * np.sqrt(variance)
    A = np.sqrt(abar_prev / abar)
    B = np.sqrt(1 - abar_prev - sigma**2) - np.sqrt(abar_prev * (1 - abar) / abar)
    if ve:  # x = z / sqrt(abar): x_prev = x + (sigma_prev - sigma_t) eps (VESchedule.step)
        A = np.ones_like(abar)
        B = np.sqrt((1 - abar_prev) / abar_prev) - np.sqrt((1 - abar) / abar)

    step = np.arange(len(t))
    return xr.Dataset(
        {
            "t": ("step", t),
            "t_prev": ("step", t_prev),
            "alpha_bar": ("step", abar),
            "alpha_bar_prev": ("step", abar_prev),
            "A": ("step", A),
            "B": ("step", B),
            "sigma": ("step", sigma),
        },
        coords={"step": step},
        attrs={
            "eta": float(eta),
            "num_inference_steps": int(num_inference_steps),
            "scheduler_config": json.dumps(_jsonable(config), sort_keys=True),
            "description": "eq. (4): z_{t-1} = A z_t + B eps + sigma xi",
        },
    )


def _vp_config(config) -> dict:
    """A scheduler config without this toolkit's own keys (diffusers would log about them)."""
    return {k: v for k, v in dict(config).items() if k != "parametrization"}


class VESchedule:
    """A variance-exploding (EDM/VE-style) SDE on the same time grid as a VP schedule.

    Latents are ``x_t = z_t / sqrt(abar_t) = x_0 + sigma_t xi`` with
    ``sigma_t = sqrt((1 - abar_t) / abar_t)``: the same data and noise levels as the VP schedule,
    in coordinates whose scale grows to ``1 / sqrt(abar_T)`` (15 for SD's schedule). The step is
    DDIM in these coordinates (the Euler step of the probability-flow ODE in sigma):
    ``x0 = x - sigma_t eps``, ``x_prev = x0 + sigma_prev eps``, that is ``A = 1``,
    ``B = sigma_prev - sigma_t`` and no noise. It implements the part of diffusers' scheduler API
    the sampler uses (``config``, ``alphas_cumprod``, ``set_timesteps``, ``timesteps``,
    ``init_noise_sigma``, ``step``); its config carries ``parametrization = "ve"``, so that
    ``same_schedule`` tells it from the VP schedule it is built on.
    """

    def __init__(self, vp_config):
        _check_affine(dict(vp_config, parametrization="ve"))
        self._vp = DDIMScheduler.from_config(_vp_config(vp_config))
        self.config = dict(_vp_config(vp_config), parametrization="ve")
        self.alphas_cumprod = self._vp.alphas_cumprod
        self.init_noise_sigma = 1.0
        self.timesteps = None

    def set_timesteps(self, num_inference_steps: int) -> None:
        self._vp.set_timesteps(num_inference_steps)
        self.timesteps = self._vp.timesteps
        self.num_inference_steps = num_inference_steps
        # x_T = z_T / sqrt(abar_T): the prior's scale in VE coordinates
        self.init_noise_sigma = 1.0 / math.sqrt(float(self._vp.alphas_cumprod[int(self.timesteps[0])]))

    def _sigma(self, t: int) -> float:
        abar = float(self._vp.alphas_cumprod[t]) if t >= 0 else float(self._vp.final_alpha_cumprod)
        return math.sqrt((1.0 - abar) / abar)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, eta: float = 0.0,
             variance_noise=None) -> SimpleNamespace:
        """One deterministic step ``x -> x_prev`` (``eta`` must be 0)."""
        if eta != 0:
            raise ValueError(f"a VE schedule steps deterministically here; eta must be 0; got {eta!r}")
        t = int(timestep)
        t_prev = t - self._vp.config.num_train_timesteps // self.num_inference_steps
        sigma_t, sigma_prev = self._sigma(t), self._sigma(t_prev)
        x0 = sample - sigma_t * model_output
        return SimpleNamespace(prev_sample=x0 + sigma_prev * model_output, pred_original_sample=x0)


def predicted_epsilon(scheduler, model_output: torch.Tensor, timestep, sample: torch.Tensor):
    """``(x0, eps)`` from a model output in ``scheduler.config.prediction_type``, before any
    clipping: step 3 of diffusers' ``DDIMScheduler.step``, the same arithmetic (so eps *is* the
    model output for epsilon prediction, and ``sqrt(abar_t) v + sqrt(1 - abar_t) z_t`` for v).
    ``model_output`` and ``sample`` are ``(B, *latent_shape)``; for a ``VESchedule`` the output is
    eps and ``x0 = x_t - sigma_t eps``."""
    config = scheduler.config
    t = int(timestep)
    if config.get("parametrization") == "ve":
        return sample - scheduler._sigma(t) * model_output, model_output
    alpha_prod_t = scheduler.alphas_cumprod[t]
    beta_prod_t = 1 - alpha_prod_t
    kind = config.get("prediction_type", "epsilon")
    if kind == "epsilon":
        return (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5), model_output
    if kind == "sample":
        return model_output, (sample - alpha_prod_t ** (0.5) * model_output) / beta_prod_t ** (0.5)
    if kind == "v_prediction":
        return ((alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output,
                (alpha_prod_t**0.5) * model_output + (beta_prod_t**0.5) * sample)
    raise ValueError(f"prediction_type must be one of {list(PREDICTION_TYPES)}; got {kind!r}")


def step_epsilon(scheduler, model_output: torch.Tensor, timestep, sample: torch.Tensor, eta: float = 0.0,
                 clipped_x0: torch.Tensor | None = None) -> torch.Tensor:
    """The step's epsilon: the eps with ``mu = A_t z_t + B_t eps`` (eq. 4, ``ddim_coefficients``)
    for ``scheduler.step(model_output, timestep, sample, eta)`` (``scheduler`` set to its steps).

    Without clipping it is ``predicted_epsilon``'s eps (for epsilon prediction the model output
    itself, bit for bit). diffusers' step with ``clip_sample`` or ``thresholding`` (and its
    default ``use_clipped_model_output=False``) takes ``mu = sqrt(abar_prev) clip(x0) + c eps``
    with the *unclipped* eps, so eq. (4) holds for ``eps + sqrt(abar_prev) / B_t (clip(x0) - x0)``
    (in float64, cast back): equal to eps wherever x0 was not clipped. ``clipped_x0``: the step's
    ``pred_original_sample`` if at hand (else x0 is clipped here as diffusers does it). Where
    ``B_t = 0`` (``abar_prev = abar_t``) no eps represents a clipped step, and eps is returned.
    """
    config = scheduler.config
    if config.get("prediction_type", "epsilon") == "epsilon" and not _clips(config) \
            or config.get("parametrization") == "ve":
        return model_output
    x0, eps = predicted_epsilon(scheduler, model_output, timestep, sample)
    if not _clips(config):
        return eps
    if clipped_x0 is None:
        clipped_x0 = scheduler._threshold_sample(x0) if config.get("thresholding") else \
            x0.clamp(-config.clip_sample_range, config.clip_sample_range)
    t = int(timestep)
    t_prev = t - config.num_train_timesteps // scheduler.num_inference_steps
    abar = float(scheduler.alphas_cumprod[t])
    abar_prev = float(scheduler.alphas_cumprod[t_prev]) if t_prev >= 0 else float(scheduler.final_alpha_cumprod)
    sigma2 = float(eta) ** 2 * (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)
    B = math.sqrt(max(1 - abar_prev - sigma2, 0.0)) - math.sqrt(abar_prev * (1 - abar) / abar)
    if B == 0:
        return eps
    shifted = eps.double() + math.sqrt(abar_prev) / B * (clipped_x0.double() - x0.double())
    return torch.where(clipped_x0 == x0, eps, shifted.to(eps.dtype))


def stepper(scheduler, num_inference_steps: int):
    """A fresh scheduler that steps like ``scheduler`` (DDIM, or VE), set to ``num_inference_steps``."""
    if dict(scheduler.config).get("parametrization") == "ve":
        out = VESchedule(scheduler.config)
    else:
        out = DDIMScheduler.from_config(_vp_config(scheduler.config))
    out.set_timesteps(num_inference_steps)
    return out


def _jsonable(config: dict) -> dict:
    out = {}
    for k, v in config.items():
        if isinstance(v, (np.ndarray, torch.Tensor)):
            v = np.asarray(v).tolist()
        elif isinstance(v, tuple):
            v = list(v)
        if isinstance(v, (str, int, float, bool, list, dict)) or v is None:
            out[k] = v
    return out


# --------------------------------------------------------------------------------------------
# continuous time, App. D.1


def schedule_params(scheduler=None, kind=None, beta_start=None, beta_end=None,
                    num_train_timesteps=None) -> tuple[str, float | None, float | None, int]:
    """``(kind, beta_start, beta_end, N)`` of a VP schedule (App. D.1): a scheduler's config, or
    ``kind``'s defaults (``SCHEDULE_KINDS``; default "scaled_linear", N = 1000) where not given."""
    if scheduler is not None:
        config = dict(scheduler.config)
        kind = _schedule_kind(config)
        beta_start, beta_end = config["beta_start"], config["beta_end"]
        num_train_timesteps = config["num_train_timesteps"]
    kind = kind or "scaled_linear"
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"schedule kind must be one of {sorted(SCHEDULE_KINDS)}; got {kind!r}")
    defaults = SCHEDULE_KINDS[kind]
    beta_start = defaults.get("beta_start") if beta_start is None else beta_start
    beta_end = defaults.get("beta_end") if beta_end is None else beta_end
    n = 1000 if num_train_timesteps is None else int(num_train_timesteps)
    return kind, beta_start, beta_end, n


def integrated_beta(t, kind: str = "scaled_linear", *, beta_start=None, beta_end=None,
                    num_train_timesteps=None, scheduler=None):
    """``int_0^t beta(s) ds`` for the continuous-time limit of a discrete VP schedule, t in [0, 1].

    With N training steps, discrete step j has ``beta_j ~ beta(j / (N - 1)) / N``, so that
    ``prod_{j <= i} (1 - beta_j) ~ exp(-int_0^{(i+1)/N} beta)``:

    - ``scaled_linear`` (SD): ``beta(s) = N (sqrt(b0) + s (sqrt(b1) - sqrt(b0)))^2``;
    - ``linear``: ``beta(s) = N (b0 + s (b1 - b0))``;
    - ``cosine``: ``exp(-int beta) = f(t)/f(0)``, ``f(t) = cos^2((t + s)/(1 + s) pi/2)``,
      ``s = 0.008`` (the ``alpha_bar_fn`` of diffusers' squaredcos_cap_v2, before its 0.999
      clipping of betas).

    Pass ``scheduler`` to take the kind, betas and N from its config.
    """
    kind, b0, b1, n = schedule_params(scheduler, kind, beta_start, beta_end, num_train_timesteps)
    t = np.asarray(t, dtype=np.float64)
    if np.any((t < 0) | (t > 1)):
        raise ValueError(f"t must be in [0, 1]; got {float(t[(t < 0) | (t > 1)].flat[0])!r}")
    if kind == "scaled_linear":
        r0, r1 = math.sqrt(b0), math.sqrt(b1)
        d = r1 - r0
        if d == 0:
            return n * b0 * t
        return n * ((r0 + t * d) ** 3 - r0**3) / (3 * d)
    if kind == "linear":
        return n * (b0 * t + (b1 - b0) * t**2 / 2)
    f = lambda s: np.cos((s + _COSINE_S) / (1 + _COSINE_S) * np.pi / 2) ** 2  # noqa: E731
    return -np.log(f(t) / f(0.0))


def vp_moments(t, kind: str = "scaled_linear", *, m0=1.0, P0=0.0, **schedule):
    """The mean and variance of ``p(z_t)`` under the VP SDE (37), eqs. (40)-(41):

        m(t) = m(0) exp(-1/2 int_0^t beta),      P(t) = 1 + (P(0) - 1) exp(-int_0^t beta).

    ``t`` in [0, 1] (float or array); ``m0``, ``P0`` the per-coordinate data mean and variance
    (the paper's extreme case is m(0) = 1, P(0) = 0). ``schedule`` is passed to
    ``integrated_beta`` (``beta_start``, ``beta_end``, ``num_train_timesteps``, ``scheduler``).
    Returns ``(m, P)`` as float64 arrays (or floats).
    """
    integral = integrated_beta(t, kind, **schedule)
    m = m0 * np.exp(-0.5 * integral)
    P = 1.0 + (P0 - 1.0) * np.exp(-integral)
    if np.ndim(m) == 0 and np.ndim(P) == 0:
        return float(m), float(P)
    return m, P


def discrete_moments(scheduler, *, m0=1.0, P0=0.0) -> xr.Dataset:
    """Exact moments of the discrete forward process ``z_i = sqrt(abar_i) z_0 + sqrt(1 - abar_i) xi``:

    ``m_i = sqrt(abar_i) m0``, ``P_i = abar_i P0 + 1 - abar_i``, over ``timestep`` i = 0..N-1,
    with the continuous time ``t = (i + 1) / N`` of ``integrated_beta`` as a coordinate.
    """
    abar = scheduler.alphas_cumprod.to(torch.float64).numpy()
    n = len(abar)
    i = np.arange(n)
    return xr.Dataset(
        {"m": ("timestep", np.sqrt(abar) * m0), "P": ("timestep", abar * P0 + 1 - abar),
         "alpha_bar": ("timestep", abar)},
        coords={"timestep": i, "t": ("timestep", (i + 1) / n)},
        attrs={"m0": float(m0), "P0": float(P0)},
    )

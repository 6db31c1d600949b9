"""Algorithm 1's settings: ``SamplerConfig``, a frozen, self-validating record (the sampling
layer's spec; stored with every run and given back by ``amdm_geom.store.run_config``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MIX_RULES", "SHIFT_MEANS", "SamplerConfig", "as_number", "is_int", "is_real", "is_sequence"]

MIX_RULES = ("slerp", "lerp", "orthogonal_mix")
SHIFT_MEANS = ("step", "aggregate")

@dataclass(frozen=True)
class SamplerConfig:
    """Algorithm 1's settings. Defaults are the paper's (App. F.2): T = 50, s = 20, w = 0.5,
    eta = 0.3.

    - ``num_inference_steps``: T, the number of DDIM steps.
    - ``agg_steps``: s, the aggregation window is the first s steps, unless ``agg_window`` =
      (start, stop) gives any window of steps [start, stop) (the stage ablation, Table 3).
    - ``weights``: w_1 .. w_{N-1} in [0, 1] (w = 0 keeps model 1).
    - ``eta``: the radial shift of eq. (7), one value or one per model, >= 0, in absolute
      units of latent norm.
    - ``mix``: ``"slerp"`` (eq. 6), ``"lerp"`` (Figure 5's baseline) or ``"orthogonal_mix"``
      (the earlier version's eq. 9, where w weighs model 1).
    - ``shift_mean``: ``"step"``: mu_i(z_t^i, t, y_i) from the step (Algorithm 1);
      ``"aggregate"``: mu_i(z', t, y_i) evaluated at z' as eq. (7) prints it (one more call).
    - ``ddim_eta``: DDIM's eta (0: deterministic; 1: DDPM posterior variance).
    - ``shared_init``: every model starts from model 1's z_T (the earlier version).
    - ``allow_schedule_mismatch``: aggregate models of different ecosystems anyway: schedules
      that differ, or (for pipeline models) a different VAE or latent space.
    - ``continue_after_window``: models 2..N keep sampling on their own after the window (for
      logging, as the paper's Table 5 does after t = 30); model 1's trajectory is unchanged.
    - ``record_cross_eps``: while a recorder or hook is attached, two more calls per partner
      model i >= 2 and step, for the terms of eqs. (20)-(22): ``model{i}.eps_cross`` =
      eps_theta1(z_t^1, t, y_i) (model 1 under model i's condition) and ``model{i}.eps_at_z1`` =
      eps_thetai(z_t^1, t, y_i) (model i at model 1's input). They do not change the trajectory.

    Numbers may be Python, numpy or torch scalars (``np.float64(0.5)``, ``np.int64(50)``, a 0-d
    tensor): they are stored as Python ints and floats, and sequences as tuples. Bools, NaN, inf
    and non-integral step counts are refused, with one line naming the field and what it accepts
    (``check``, which ``AMDMSampler`` calls before any work).
    """

    num_inference_steps: int = 50
    agg_steps: int = 20
    agg_window: tuple[int, int] | None = None
    weights: tuple[float, ...] = (0.5,)
    eta: float | tuple[float, ...] = 0.3
    mix: str = "slerp"
    shift_mean: str = "step"
    ddim_eta: float = 0.0
    shared_init: bool = False
    allow_schedule_mismatch: bool = False
    continue_after_window: bool = False
    record_cross_eps: bool = False

    def __post_init__(self):
        # numpy and torch real scalars (np.float64(0.5), np.int64(50), a 0-d tensor) become Python
        # numbers, and sequences tuples, so that they behave, compare and serialise as Python
        # values; anything else is left as given for ``check`` to refuse in one line
        norm = object.__setattr__
        norm(self, "num_inference_steps", as_number(self.num_inference_steps))
        norm(self, "agg_steps", as_number(self.agg_steps))
        if self.agg_window is not None and is_sequence(self.agg_window):
            norm(self, "agg_window", tuple(as_number(v) for v in self.agg_window))
        if is_sequence(self.weights):
            norm(self, "weights", tuple(as_number(w) for w in self.weights))
        eta = as_number(self.eta)
        norm(self, "eta", tuple(as_number(e) for e in eta) if is_sequence(eta) else eta)
        norm(self, "ddim_eta", as_number(self.ddim_eta))
        for flag in ("shared_init", "allow_schedule_mismatch", "continue_after_window", "record_cross_eps"):
            if isinstance(getattr(self, flag), np.bool_):
                norm(self, flag, bool(getattr(self, flag)))

    @property
    def window(self) -> tuple[int, int]:
        return tuple(self.agg_window) if self.agg_window is not None else (0, self.agg_steps)

    def check(self, n_models: int) -> None:
        """Every setting, for a run of ``n_models`` models, without the models: a one-line
        ValueError naming the field, the bad value and what is accepted. (``AMDMSampler`` calls
        it; the probes call it before they build any model.)"""
        steps = self.num_inference_steps
        if not (is_int(steps) and steps >= 1):
            raise ValueError(f"num_inference_steps must be an int >= 1; got {steps!r}")
        if n_models > 1:  # with one model there is nothing to aggregate and the window is not used
            if self.agg_window is None and not (is_int(self.agg_steps) and 0 <= self.agg_steps <= steps):
                raise ValueError(f"agg_steps must be an int in [0, {steps}]; got {self.agg_steps!r}")
            window = self.window if self.agg_window is None or is_sequence(self.agg_window) else (self.agg_window,)
            if not (len(window) == 2 and all(is_int(v) for v in window) and 0 <= window[0] <= window[1] <= steps):
                raise ValueError(f"agg_window must be (start, stop) with 0 <= start <= stop <= {steps}; "
                                 f"got {window!r}")
        if not is_sequence(self.weights):
            raise ValueError(f"weights must be a sequence of N - 1 numbers in [0, 1]; got {self.weights!r}")
        if len(self.weights) != n_models - 1:
            raise ValueError(f"need {n_models - 1} weights w_1..w_{{N-1}} for {n_models} models; "
                             f"got {len(self.weights)}")
        for w in self.weights:
            if not (is_real(w) and 0.0 <= w <= 1.0):
                raise ValueError(f"weights must be in [0, 1]; got {w!r}")
        etas = self.eta if is_sequence(self.eta) else (self.eta,)
        if is_sequence(self.eta) and len(etas) != n_models:
            raise ValueError(f"eta must be one value or one per model ({n_models}); got {len(etas)}")
        for e in etas:
            if not (is_real(e) and e >= 0):
                raise ValueError(f"eta must be a finite number >= 0; got {e!r}")
        if self.mix not in MIX_RULES:
            raise ValueError(f"mix must be one of {MIX_RULES}; got {self.mix!r}")
        if self.shift_mean not in SHIFT_MEANS:
            raise ValueError(f"shift_mean must be one of {SHIFT_MEANS}; got {self.shift_mean!r}")
        if not (is_real(self.ddim_eta) and self.ddim_eta >= 0):
            raise ValueError(f"ddim_eta must be a finite float >= 0; got {self.ddim_eta!r}")
        for flag in ("shared_init", "allow_schedule_mismatch", "continue_after_window", "record_cross_eps"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be True or False; got {getattr(self, flag)!r}")


def is_sequence(value) -> bool:
    return isinstance(value, (tuple, list)) or (isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 1)


def as_number(value):
    """A numpy or torch real scalar (or 0-d array or tensor) as a Python int or float; bools,
    complex numbers and everything else unchanged."""
    if isinstance(value, (bool, np.bool_)):
        return value
    if isinstance(value, torch.Tensor):
        if value.ndim == 0 and value.dtype != torch.bool and not value.is_complex():
            return value.item()
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        return value.item()
    return value


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A finite Python int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

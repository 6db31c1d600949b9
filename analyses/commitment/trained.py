"""When the trained digits models commit to each attribute: x0-detector readings per step, U-turns, and the
speciation prediction from the digits training data.

The exact family (``times``) knows the posterior of every attribute; a trained network does not, so here the
attribute a state has decided is read from the model's predicted clean image at that state. At DDIM step k (state
k: the z_t entering step k) the sampler emits x0 = sqrt(abar) z_t - sqrt(1 - abar) v (the v-prediction models'
x0 of eq. 2 given z_t, diffusers' ``pred_original_sample``, unclipped with ``clip_sample=False``); the detectors
(``amdm_geom.models.digits.detectors.detect``) read (position, colour, digit) from it, and state T is the
finished image. A sample's commitment state for an attribute is the first state from which the reading equals the
final reading for good: ``times.commitment_index`` on the 0/1 path "reading == final" at threshold 1/2.

The U-turn (``uturn``) asks the same question causally: noise the finished sample back to state k and regenerate
with the same model and condition (stochastic, eta_ddim = 1); the attribute survives if the detectors read the
same value again. Its survival rate estimates the posterior of the original value given the state (``uturn``'s
docstring), at 1 when the state has decided the attribute and at chance when it has decided nothing.

The speciation prediction (Biroli et al. 2024, ``speciation``) on the digits data: the images flattened, the
classes an attribute's values, ``Lambda`` the data's variance along the top eigenvector of the between-class
covariance (``data_separation``), ``t_S = log(Lambda) / 2`` and ``abar_S = 1 / Lambda``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from amdm_geom.analyses.commitment import speciation as sp
from amdm_geom.analyses.commitment import times, uturn
from amdm_geom.models.digits.targets import ATTRIBUTES, conditions, targets

__all__ = ["ATTRIBUTES", "THRESHOLD", "commitment_states", "conditions", "crossing", "data_separation",
           "readings_along", "reading_paths", "survival", "targets", "uturn_readings"]

#: The path "reading == final" is 0 or 1: committed from the first state after its last 0.
THRESHOLD = 0.5


def _detect(images) -> np.ndarray:
    from amdm_geom.models.digits.detectors import detect

    return detect(np.asarray(images, dtype=np.float64).clip(-1.0, 1.0))


def reading_paths(x0_states: np.ndarray, final: np.ndarray) -> np.ndarray:
    """``(T + 1, B, 3)`` int64: what the detectors read from the predicted x0 at each of ``x0_states (T, B, 3, 16,
    16)`` (state k = step k) and, at state T, from the finished images ``final (B, 3, 16, 16)``; -1 where blank."""
    x0_states, final = np.asarray(x0_states), np.asarray(final)
    if x0_states.ndim != 5 or final.ndim != 4 or x0_states.shape[1:] != final.shape:
        raise ValueError(f"x0_states must be (T, B, 3, 16, 16) and final (B, 3, 16, 16); got {x0_states.shape} and "
                         f"{final.shape}")
    T, B = x0_states.shape[:2]
    flat = np.concatenate([x0_states.reshape(T * B, *final.shape[1:]), final])
    return _detect(flat).reshape(T + 1, B, 3)


def commitment_states(readings: np.ndarray) -> np.ndarray:
    """``(B, A)`` int64 from ``readings (S, B, A)``: per sample and attribute the first state from which the
    reading equals the last state's for good (``times.commitment_index`` of the 0/1 path at ``THRESHOLD``);
    at most S - 1, the last state agreeing with itself."""
    r = np.asarray(readings)
    if r.ndim != 3 or r.shape[0] < 1:
        raise ValueError(f"readings must have shape (states, samples, attributes) with >= 1 state; got {r.shape}")
    same = (r == r[-1][None]).astype(np.float64)
    return np.stack([times.commitment_index(same[..., a], THRESHOLD) for a in range(r.shape[2])], axis=1)


def readings_along(models, conds, config, seeds) -> dict:
    """One run of ``AMDMSampler(models, conds, config)`` on ``seeds``: model 1's predicted x0 at every step read
    by the detectors. Returns ``readings (T + 1, B, 3)``, ``images`` (the finished samples, float32, clamped to
    [-1, 1]), ``alpha_bar (T + 1,)`` (each state's; the output's is the last step's ``alpha_bar_prev``) and
    ``seconds`` (the sampling's wall time)."""
    import time

    from amdm_geom.sampling import AMDMSampler

    start = time.perf_counter()
    with torch.no_grad():
        out, ds = AMDMSampler(models, conds, config).run_with_cache(list(seeds), names_filter=["model0.x0"])
    seconds = time.perf_counter() - start
    images = out.z0.detach().to(torch.float32).clamp(-1, 1).numpy()
    abar = np.append(ds.alpha_bar.values, ds.alpha_bar_prev.values[-1]).astype(np.float64)
    return {"readings": reading_paths(ds.x0.isel(model=0).values, images), "images": images, "alpha_bar": abar,
            "seconds": seconds}


def uturn_readings(model, cond, images: np.ndarray, ks, seeds_of, *, steps: int) -> np.ndarray:
    """``(K, B, 3)``: what the detectors read after the U-turn (``uturn.uturn``, eta_ddim = 1) of ``images (B, 3,
    16, 16)`` at each state of ``ks`` with ``model`` under ``cond``; ``seeds_of(k)`` gives the B per-sample seeds
    of state k's noise."""
    x0 = torch.as_tensor(np.asarray(images), dtype=model.dtype)
    out = []
    for k in ks:
        regen = uturn.uturn(model, cond, x0, int(k), seeds_of(int(k)), steps=steps, ddim_eta=1.0)
        out.append(_detect(regen.detach().to(torch.float32).numpy()))
    return np.stack(out)


def survival(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hits, n)`` per leading index of ``after (..., B, A)`` against ``before (B, A)``: how many samples read
    the same value after the U-turn, each ``(..., A)``."""
    same = np.asarray(after) == np.asarray(before)
    return same.sum(-2), np.full(same.shape[:-2] + same.shape[-1:], same.shape[-2])


def crossing(ks, rates, level: float = 0.5) -> float:
    """The state where ``rates`` (survival at the increasing states ``ks``) first crosses ``level`` upwards,
    linear between the bracketing states; NaN where no pair of neighbours brackets it."""
    ks, rates = np.asarray(ks, dtype=np.float64), np.asarray(rates, dtype=np.float64)
    for i in range(ks.size - 1):
        r0, r1 = rates[i], rates[i + 1]
        if r0 < level <= r1:
            return float(ks[i] + (level - r0) / (r1 - r0) * (ks[i + 1] - ks[i]))
    return math.nan


def data_separation(x: np.ndarray, labels: np.ndarray) -> sp.Separation:
    """The direction that separates the classes ``labels (N,)`` of the data ``x (N, ...)`` (flattened, float64): the
    top eigenpair of the between-class covariance ``B = sum_v P_v (m_v - m)(m_v - m)^T`` (empirical class shares
    ``P_v`` and means ``m_v``), through the V x V Gram matrix of the weighted centred class means, and the data's
    (population) variance ``Lambda = u^T C u`` along its eigenvector ``u`` (as ``speciation.separation``)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    labels = np.asarray(labels)
    if labels.shape != (x.shape[0],) or x.shape[0] < 2:
        raise ValueError(f"labels must be one per row of x (>= 2 rows); got {labels.shape} for {x.shape[0]} rows")
    values = np.unique(labels)
    if values.size < 2:
        raise ValueError(f"labels must name at least two classes; got {values.size}")
    m = x.mean(0)
    p = np.array([(labels == v).mean() for v in values])
    scaled = np.sqrt(p)[:, None] * np.stack([x[labels == v].mean(0) - m for v in values])  # (V, n)
    lam, vec = np.linalg.eigh(scaled @ scaled.T)
    between = float(max(lam[-1], 0.0))
    if between <= 0.0:
        raise ValueError("the classes do not separate the data (their means coincide)")
    u = scaled.T @ vec[:, -1] / math.sqrt(between)
    Lambda = float((((x - m) @ u) ** 2).mean())
    return sp.Separation(between, Lambda, Lambda - between, u)

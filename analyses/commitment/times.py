"""Commitment times: when a trajectory's exact posterior settles on the attribute value it ends with.

On the exact Gaussian-mixture family (``amdm_geom.models.gmm``) the posterior over components is exact at
every state of a trajectory: with ``v_k = abar s_k^2 + 1 - abar`` (the diffused mixture behind eq. 4),

    p_t(k | z_t) = pi_k N(z_t; sqrt(abar) mu_k, v_k I) / sum_j pi_j N(z_t; sqrt(abar) mu_j, v_j I),

and the posterior of an attribute value (a position, a colour, a style) is the sum over the components that
carry it. The prior ``pi`` here is the family's own (uniform): the posterior says what the state ``z_t`` alone
tells about the attribute, the same measure for every model and for AMDM (a model's conditioned weights
would put the condition's prior mass, 0.9, on its attribute before any step).

A sample's commitment state for an attribute is the first state after which the posterior of its final value
(the value with the largest posterior at the last state) stays above ``THRESHOLD`` (0.9) for good; a sample
that is above it only at no state, or drops below it at the end, commits "never" (index ``S``, the number of
states). States are indexed 0 .. T: state k < T is the ``z_t`` entering DDIM step k, state T the output.

Summaries: a proportion (samples committed by a given state) gets its exact (Clopper-Pearson) interval; a
quantile of the commitment times its distribution-free order-statistic interval (the count of samples below
the true quantile is binomial), both at ``LEVEL``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

from amdm_geom.core import stats as core_stats

__all__ = ["LEVEL", "THRESHOLD", "attribute_posteriors", "commitment_index", "final_value", "ou_time",
           "proportion_interval", "quantile_interval"]

#: The posterior of the final value must stay above this for a sample to count as committed.
THRESHOLD = 0.9
#: The confidence level of every interval.
LEVEL = 0.95


def attribute_posteriors(mixture, z: torch.Tensor, alpha_bar: float, weights=None) -> dict[str, np.ndarray]:
    """``{attribute: (B, V)}``: the exact posterior of each value of each labelled attribute of ``mixture`` at
    ``z (B, n)`` (any float dtype; computed in float64) at ``alpha_bar`` in (0, 1], summed over the components
    that carry the value; ``weights`` the prior over components (None: the mixture's own, uniform)."""
    if not (isinstance(alpha_bar, (int, float)) and 0.0 < float(alpha_bar) <= 1.0):
        raise ValueError(f"alpha_bar must be a number in (0, 1]; got {alpha_bar!r}")
    flat = torch.as_tensor(z).detach().reshape(z.shape[0], -1).to(dtype=torch.float64)
    r = mixture.responsibilities(flat, weights, float(alpha_bar)).numpy()  # (B, K)
    out = {}
    for name, labels in mixture.labels.items():
        lab = np.asarray(labels, dtype=np.int64)
        out[name] = np.stack([r[:, lab == v].sum(1) for v in range(int(lab.max()) + 1)], axis=1)
    return out


def final_value(posterior: np.ndarray) -> np.ndarray:
    """``(B,)``: the value each sample ends with, the argmax of the last state's posterior in
    ``posterior (S, B, V)``."""
    posterior = np.asarray(posterior)
    if posterior.ndim != 3 or posterior.shape[0] < 1:
        raise ValueError(f"posterior must have shape (states, samples, values) with >= 1 state; got {posterior.shape}")
    return posterior[-1].argmax(-1)


def commitment_index(path: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """``(B,)`` ints: for ``path (S, B)``, the posterior of each sample's final value at states 0 .. S-1, the
    first state from which it stays above ``threshold`` to the end; ``S`` where the last state is not above it
    (never committed). NaN counts as not above."""
    path = np.asarray(path, dtype=np.float64)
    if path.ndim != 2 or path.shape[0] < 1:
        raise ValueError(f"path must have shape (states, samples) with >= 1 state; got {path.shape}")
    if not (0.0 < threshold < 1.0):
        raise ValueError(f"threshold must be in (0, 1); got {threshold!r}")
    above = path > threshold
    stays = np.flip(np.logical_and.accumulate(np.flip(above, 0), axis=0), 0)  # above here and at every later state
    first = stays.argmax(0)
    return np.where(stays[-1], first, path.shape[0])


def ou_time(alpha_bar) -> np.ndarray:
    """The Ornstein-Uhlenbeck time of Biroli et al. (2024), ``t = -log(abar) / 2`` (their forward process
    ``x_t = e^{-t} x_0 + sqrt(1 - e^{-2t}) xi`` is the VP process of eq. 4 with ``abar = e^{-2t}``)."""
    a = np.asarray(alpha_bar, dtype=np.float64)
    if np.any(~(a > 0)) or np.any(a > 1):
        raise ValueError(f"alpha_bar must lie in (0, 1]; got values in [{np.nanmin(a)}, {np.nanmax(a)}]")
    return -0.5 * np.log(a)


#: The exact (Clopper-Pearson) interval of a proportion, ``amdm_geom.core.stats.proportion_interval``.
proportion_interval = core_stats.proportion_interval


def quantile_interval(x, q: float, level: float = LEVEL) -> tuple[float, float]:
    """A distribution-free interval for the ``q``-quantile of the law of ``x`` (1-D, finite or +inf): the
    order statistics ``x_(j_lo), x_(j_hi)`` (1-based) with ``j_lo = F^-1(alpha/2)`` and ``j_hi = F^-1(1 - alpha/2)
    + 1``, F the Binomial(n, q) law of the count below the quantile, so each end misses with probability at most
    alpha/2; -inf / +inf where n is too small for an end."""
    x = np.sort(np.asarray(x, dtype=np.float64).ravel())
    if x.size == 0 or np.isnan(x).any():
        raise ValueError(f"x must be a non-empty array without NaN; got {x.size} values")
    if not (0.0 < q < 1.0):
        raise ValueError(f"q must be in (0, 1); got {q!r}")
    alpha, n = 1.0 - level, x.size
    j_lo = int(stats.binom.ppf(alpha / 2, n, q))
    j_hi = int(stats.binom.ppf(1 - alpha / 2, n, q)) + 1
    lo = x[j_lo - 1] if j_lo >= 1 else -math.inf
    hi = x[j_hi - 1] if j_hi <= n else math.inf
    return float(lo), float(hi)

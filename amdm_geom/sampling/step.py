"""Algorithm 1's aggregation step, as one pure function shared by every loop (the diffusion
sampler here, the 2D benchmark, later samplers).

At an aggregation step, given each model's sampled latent ``z_next_i`` (B, *latent):

    z'      = Mix(z_next_1, ..., z_next_N; w_1, ..., w_{N-1})        # eq. (6): successive pairwise
    z_i     = z' - eta_i (z' - mu_i) / |z' - mu_i|                   # eq. (7): model i's radial shift

``mu_i`` is the mean model i's shift moves towards: Algorithm 1 takes the reverse-step mean at
the model's own z_t^i; eq. (7) as printed evaluates it at z'. The caller decides by passing the
means, or a function ``mean(i, z_agg)`` that computes them from the aggregate. Mixing and
shifting are ``amdm_geom.core.geometry``'s, computed in float64 and returned in the inputs' dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from amdm_geom.core import geometry

__all__ = ["MIXERS", "AggregateStep", "aggregate_step", "mix"]

#: The mixing rules: eq. (6)'s slerp, Figure 5's lerp baseline, the earlier version's eq. (9).
MIXERS: dict[str, Callable] = {
    "slerp": geometry.slerp_chain,
    "lerp": geometry.lerp_chain,
    "orthogonal_mix": geometry.orthogonal_mix,
}


@dataclass
class AggregateStep:
    """What one aggregation step produced: ``z_agg`` (z', (B, *latent)), and per model the
    mean its shift used (``mu_shift``) and its shifted latent (``z_shift``, the next z_t^i)."""

    z_agg: torch.Tensor
    mu_shift: list[torch.Tensor]
    z_shift: list[torch.Tensor]


def mix(z_next: Sequence[torch.Tensor], weights: Sequence[float], rule: str | Callable = "slerp") -> torch.Tensor:
    """z' of eq. (6) (or another rule of ``MIXERS``, or a callable ``rule(zs, weights)``)."""
    fn = MIXERS[rule] if isinstance(rule, str) else rule
    return fn(list(z_next), list(weights))


def aggregate_step(z_next: Sequence[torch.Tensor], weights: Sequence[float], etas: Sequence[float],
                   mean: Sequence[torch.Tensor] | Callable[[int, torch.Tensor], torch.Tensor],
                   rule: str | Callable = "slerp") -> AggregateStep:
    """Mix the models' ``z_next`` (eq. 6), then shift the aggregate towards each model's mean by
    its ``eta`` (eq. 7). ``mean`` is the list of means, or ``mean(i, z_agg)`` (called for
    i = 0..N-1 in order, after the mix). Each weight and eta is a float or a ``(B,)`` array of
    per-sample values (as ``amdm_geom.core.geometry`` accepts)."""
    z_agg = mix(z_next, weights, rule)
    mus, shifted = [], []
    for i, eta in enumerate(etas):
        mu = mean(i, z_agg) if callable(mean) else mean[i]
        mus.append(mu)
        shifted.append(geometry.radial_shift(z_agg, mu, eta))
    return AggregateStep(z_agg=z_agg, mu_shift=mus, z_shift=shifted)

"""The diffusion samplers of the 2D benchmark: AMDM (Algorithm 1), reverse diffusion with the
summed score, and the oracle. Every sampler returns ``n`` samples ``(n, 2)`` per seed, all
samples of all seeds in one batch per step, and steps with the DDPM coefficients of the schedule
(``ddpm_step``): ``z_{t-1} = A z + B eps + sigma xi`` (sigma = 0 on the last step, which
returns E[x0 | z_0]).

- ``amdm``: Algorithm 1 with the two experts as the two models, through the shared step
  ``amdm_geom.sampling.step.aggregate_step``: both take a reverse step from their own latent,
  z' = slerp(z1_next, z2_next, w) (eq. 6), then each model's latent is z' shifted radially
  towards its own reverse-step mean mu_i by eta (eq. 7); aggregation over the first s steps
  (default s = T), then model 1 alone; the output is model 1's. In 2D two independent latents
  are antipodal (where slerp is undefined and ``geometry.slerp`` raises) with small but non-zero
  probability: the mixing rule ``SlerpOrLerp`` falls back to ``geometry.lerp`` on those rows
  and counts them.
- ``summed_score``: reverse diffusion with eps1 + eps2 (the product of experts' score).
- ``oracle``: reverse diffusion with the exact eps of the diffused TRUE product p_t. It is not
  an exact sampler: 100 DDPM steps with the posterior variance under-disperse structure at the
  data's 0.03 scale (for a Gaussian of std 0.03 the output std is 0.0204), a bias every method
  shares.

Randomness: one numpy Generator per block of ``n`` points, keyed (seed, stream, model)
(``Noise``, ``STREAMS``), so a block's draws do not depend on its batch mates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from amdm_geom.analyses.toy.experts import ExactExpert, Schedule, eps_pair, eps_sum
from amdm_geom.core import geometry
from amdm_geom.models.mixture import GaussianMixture
from amdm_geom.sampling.step import aggregate_step

__all__ = ["STREAMS", "Noise", "SlerpOrLerp", "amdm", "as_seed_list", "blocks", "ddpm_step", "oracle", "reverse",
           "slerp_or_lerp", "summed_score"]

#: random streams: the key of a block's generator is (seed, stream); AMDM settings share theirs
STREAMS = {"target": 0, "amdm": 1, "summed_score": 2, "du_ula": 3, "du_mala": 4, "du_hmc": 5, "oracle": 6,
           "reference": 7, "trajectory": 8}


class Noise:
    """One numpy Generator per block of ``n`` points, keyed (seed, stream, model); draws concatenate
    the blocks, so a block's draws do not depend on its batch mates."""

    def __init__(self, seeds: Sequence[int], stream: int, n: int, repeats: int = 1, model: int = 0):
        self.n = n
        self.gens = [np.random.default_rng([int(s), int(stream), int(model)]) for _ in range(repeats) for s in seeds]

    def normal(self) -> np.ndarray:
        """Standard normal draws ``(blocks * n, 2)``."""
        return np.concatenate([g.standard_normal((self.n, 2)) for g in self.gens])

    def uniform(self) -> np.ndarray:
        """Uniform draws on [0, 1), ``(blocks * n,)``."""
        return np.concatenate([g.random(self.n) for g in self.gens])


def as_seed_list(seeds) -> tuple[list[int], bool]:
    """``(seed list, single)``: an int seed is a list of one, and ``single`` says so."""
    if isinstance(seeds, (int, np.integer)):
        return [int(seeds)], True
    return [int(s) for s in seeds], False


def blocks(x: np.ndarray, n_blocks: int, single: bool) -> np.ndarray:
    """``x (n_blocks * n, 2)`` as ``(n_blocks, n, 2)``, or ``(n, 2)`` for a single seed."""
    out = x.reshape(n_blocks, -1, 2)
    return out[0] if single else out


def ddpm_step(sched: Schedule, k: int, z: np.ndarray, eps: np.ndarray, xi: np.ndarray):
    """Step ``k``: ``(mu, z_next)`` with mu = A z + B eps the reverse-step mean and
    z_next = mu + sigma xi (mu itself where sigma = 0)."""
    c = sched.coeffs
    mu = float(c.A[k]) * z + float(c.B[k]) * eps
    s = float(c.sigma[k])
    return mu, (mu + s * xi if s > 0 else mu)


def slerp_or_lerp(a, b, w):
    """``geometry.slerp(a, b, w)`` (eq. 6) row-wise for ``a, b (B, 2)``, ``w (B,)``, with
    ``geometry.lerp`` on the rows where slerp is undefined (antipodal pairs,
    pi - phi < ANTIPODAL_TOL, or a zero-norm input; ``geometry.slerp`` raises there). Returns
    the result (the array type of ``a``) and the count of those rows."""
    try:
        return geometry.slerp(a, b, w), 0
    except ValueError:
        pass
    a_t, b_t = torch.as_tensor(a), torch.as_tensor(b)
    w_t = torch.as_tensor(w, dtype=torch.float64).expand(a_t.shape[0])
    phi = torch.as_tensor(geometry.angle(a_t, b_t))
    bad = ~(torch.isfinite(phi) & (math.pi - torch.nan_to_num(phi, nan=math.pi) >= geometry.ANTIPODAL_TOL))
    out = torch.empty_like(a_t)
    good = ~bad
    if good.any():
        out[good] = geometry.slerp(a_t[good], b_t[good], w_t[good])
    out[bad] = geometry.lerp(a_t[bad], b_t[bad], w_t[bad])
    return (out.numpy() if isinstance(a, np.ndarray) else out), int(bad.sum())


class SlerpOrLerp:
    """The benchmark's mixing rule for ``aggregate_step``, ``rule(zs, weights)`` with two
    latents and one weight (a float or per row, ``(B,)``): ``slerp_or_lerp``; ``fallbacks``
    counts the rows that fell back to lerp."""

    def __init__(self):
        self.fallbacks = 0

    def __call__(self, zs, weights):
        (a, b), (w,) = zs, weights
        out, bad = slerp_or_lerp(a, b, w)
        self.fallbacks += bad
        return out


def amdm(e1, e2, sched: Schedule, seeds, n: int, w=0.5, eta=0.3, agg_steps: int | None = None,
         record: dict | None = None, record_steps: Sequence[int] = (), record_points: int = 500):
    """AMDM (Algorithm 1) with experts ``e1`` (model 1) and ``e2``: ``n`` samples per seed.

    ``w`` and ``eta`` are floats or sequences of equal length (settings run side by side in one
    batch; the output is then ``(setting, seed, n, 2)``). Aggregation over the first
    ``agg_steps`` steps (default all T), then model 1 alone. Returns model 1's final latent:
    ``(n, 2)`` for an int seed and one setting, ``(S, n, 2)`` for a list of seeds.
    ``record``: a dict filled with model 1's latents before each step in ``record_steps`` (and
    after the last, key T) for the first ``record_points`` points, ``phi``, the angle between
    the two models' sampled latents at each aggregation step (same points), and ``antipodal``,
    the count of slerp's fallbacks to lerp.
    """
    seed_list, single = as_seed_list(seeds)
    ws, etas = np.atleast_1d(np.asarray(w, dtype=np.float64)), np.atleast_1d(np.asarray(eta, dtype=np.float64))
    if ws.shape != etas.shape or ws.ndim != 1:
        raise ValueError(f"w and eta must be floats or sequences of one length; got {ws.shape}, {etas.shape}")
    n_set, T = len(ws), sched.T
    s = T if agg_steps is None else int(agg_steps)
    if not 0 <= s <= T:
        raise ValueError(f"agg_steps must be in [0, {T}]; got {s}")
    noise1 = Noise(seed_list, STREAMS["amdm"], n, repeats=n_set)
    noise2 = Noise(seed_list, STREAMS["amdm"], n, repeats=n_set, model=1)
    w_rows, eta_rows = (np.repeat(v, len(seed_list) * n) for v in (ws, etas))
    z1, z2 = noise1.normal(), noise2.normal()
    rule = SlerpOrLerp()
    for k in range(T):
        t = int(sched.t[k])
        if record is not None and k in record_steps:
            record[k] = z1[:record_points].copy()
        if k >= s:
            _, z1 = ddpm_step(sched, k, z1, e1.eps(z1, t), noise1.normal())
            continue
        eps1, eps2 = eps_pair(e1, e2, z1, z2, t)
        mu1, z1_next = ddpm_step(sched, k, z1, eps1, noise1.normal())
        mu2, z2_next = ddpm_step(sched, k, z2, eps2, noise2.normal())
        if record is not None:
            record.setdefault("phi", []).append(geometry.angle(z1_next[:record_points], z2_next[:record_points]))
        as_t = torch.from_numpy
        step = aggregate_step([as_t(z1_next), as_t(z2_next)], [w_rows], [eta_rows, eta_rows],
                              [as_t(mu1), as_t(mu2)], rule=rule)
        z1, z2 = step.z_shift[0].numpy(), step.z_shift[1].numpy()
    if record is not None:
        record[T] = z1[:record_points].copy()
        record["antipodal"] = rule.fallbacks
    out = z1.reshape(n_set, len(seed_list), n, 2)
    if np.ndim(w) == 0 and np.ndim(eta) == 0:
        out = out[0]
        return out[0] if single else out
    return out[:, 0] if single else out


def reverse(eps_fn, sched: Schedule, noise: Noise, after=None) -> np.ndarray:
    """Reverse diffusion from ``noise``'s N(0, I) with ``eps_fn(z, t)``; ``after(z, t_prev)``
    (if given) runs after each step that lands on a level ``t_prev >= 0``. Returns z_0."""
    z = noise.normal()
    for k in range(sched.T):
        t = int(sched.t[k])
        _, z = ddpm_step(sched, k, z, eps_fn(z, t), noise.normal())
        if after is not None and int(sched.t_prev[k]) >= 0:
            z = after(z, int(sched.t_prev[k]))
    return z


def summed_score(e1, e2, sched: Schedule, seeds, n: int):
    """Reverse diffusion with eps1 + eps2 (the product of experts' score), no MCMC."""
    seed_list, single = as_seed_list(seeds)
    z = reverse(lambda z, t: eps_sum(e1, e2, z, t), sched, Noise(seed_list, STREAMS["summed_score"], n))
    return blocks(z, len(seed_list), single)


def oracle(target: GaussianMixture, sched: Schedule, seeds, n: int):
    """Reverse diffusion with the exact eps of the diffused TRUE product p_t (a sanity reference)."""
    seed_list, single = as_seed_list(seeds)
    ex = ExactExpert(target, sched)
    z = reverse(ex.eps, sched, Noise(seed_list, STREAMS["oracle"], n))
    return blocks(z, len(seed_list), single)

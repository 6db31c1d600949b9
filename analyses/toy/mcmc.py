"""Du et al. (2023)'s annealed MCMC composition on the 2D benchmark: ULA, MALA and HMC.

After each reverse step with the summed score (to level t >= 0), ``steps`` MCMC steps target
p1,t p2,t. Step sizes are CONSTANT over noise levels, as in Du et al.'s 2D toy code (ULA/MALA
1e-3, HMC 0.03 with 3 leapfrog steps, momentum damping 0.5, unit mass; their image code scales
steps with beta_t instead). MALA and HMC accept with the exact energy -log p1,t - log p2,t for
exact experts and with Du et al.'s "score-only" estimate for MLP experts: the energy difference
as a trapezoidal line integral of the summed score along the move (``energy_difference``). By
default with 2 points (the scores at both ends, already computed; exact for a Gaussian), where
Du et al.'s code uses 3, 5 or 10: each extra point is one more evaluation of both networks per
MCMC step (``n_trapezoid``). HMC keeps its momentum on rejection (no flip), as their sampler
does. Points are numpy ``(N, 2)`` float64.
"""

from __future__ import annotations

import math

import numpy as np

from amdm_geom.analyses.toy.experts import eps_sum, score_sum
from amdm_geom.analyses.toy.samplers import STREAMS, Noise, as_seed_list, blocks, reverse

__all__ = ["KINDS", "AnnealedMCMC", "du_mcmc", "energy_difference"]

KINDS = ("ula", "mala", "hmc")


def energy_difference(score_fn, x: np.ndarray, x_new: np.ndarray, s: np.ndarray, s_new: np.ndarray,
                      n_points: int) -> np.ndarray:
    """log p(x_new) - log p(x), ``(N,)``, by the trapezoidal rule with ``n_points`` points for
    int_0^1 s(x + u d) . d du, d = x_new - x; ``s``, ``s_new`` are the scores at the two ends
    and ``score_fn`` gives those in between."""
    d = x_new - x
    u = np.linspace(0.0, 1.0, n_points)
    vals = [(s * d).sum(1)]
    for ui in u[1:-1]:
        vals.append((score_fn(x + ui * d) * d).sum(1))
    vals.append((s_new * d).sum(1))
    vals = np.stack(vals, 1)
    h = np.diff(u)
    return (0.5 * h * (vals[:, 1:] + vals[:, :-1])).sum(1)


class AnnealedMCMC:
    """The MCMC steps at each noise level (``level(x, t)``, the ``after`` hook of
    ``samplers.reverse``), with the acceptance counts over the run (``accepted``, ``counted``)
    and HMC's momentum ``v``, carried from level to level."""

    def __init__(self, e1, e2, kind: str, h: float, steps: int, leapfrog: int, damping: float, energy: str,
                 n_trapezoid: int, noise: Noise, size: int):
        self.e1, self.e2, self.kind, self.h, self.steps = e1, e2, kind, h, steps
        self.leapfrog, self.damping, self.energy, self.n_trapezoid, self.noise = \
            leapfrog, damping, energy, n_trapezoid, noise
        self.accepted = np.zeros(size)
        self.counted = 0
        self.v = None

    def _f(self, z, t):
        """(log p1,t p2,t or None, the summed score)."""
        if self.energy == "exact":
            l1, s1 = self.e1.log_prob_and_score(z, t)
            l2, s2 = self.e2.log_prob_and_score(z, t)
            return l1 + l2, s1 + s2
        return None, score_sum(self.e1, self.e2, z, t)

    def _dlogp(self, t, x0, x1, lp0, lp1, s0, s1):
        if self.energy == "exact":
            return lp1 - lp0
        return energy_difference(lambda z: score_sum(self.e1, self.e2, z, t), x0, x1, s0, s1, self.n_trapezoid)

    def _accept(self, log_a) -> np.ndarray:
        acc = self.noise.uniform() < np.exp(np.minimum(log_a, 0.0))
        self.accepted[:] += acc
        self.counted += 1
        return acc

    def level(self, x: np.ndarray, t: int) -> np.ndarray:
        """``steps`` MCMC steps targeting p1,t p2,t from ``x``."""
        h = self.h
        if self.kind == "ula":
            for _ in range(self.steps):
                x = x + h * score_sum(self.e1, self.e2, x, t) + math.sqrt(2 * h) * self.noise.normal()
            return x
        lp, s = self._f(x, t)
        if self.kind == "mala":
            for _ in range(self.steps):
                prop = x + h * s + math.sqrt(2 * h) * self.noise.normal()
                lp_new, s_new = self._f(prop, t)
                fwd = -((prop - x - h * s) ** 2).sum(1) / (4 * h)
                rev = -((x - prop - h * s_new) ** 2).sum(1) / (4 * h)
                acc = self._accept(self._dlogp(t, x, prop, lp, lp_new, s, s_new) + rev - fwd)
                x = np.where(acc[:, None], prop, x)
                s = np.where(acc[:, None], s_new, s)
                lp = np.where(acc, lp_new, lp) if lp is not None else None
            return x
        return self._hmc(x, t, lp, s)

    def _hmc(self, x, t, lp, s):
        h, v = self.h, self.v
        for _ in range(self.steps):
            v_p = self.damping * v + math.sqrt(1 - self.damping**2) * self.noise.normal()
            xk, vk, sk, lpk = x, v_p.copy(), s, lp
            for _ in range(self.leapfrog):
                vk = vk + 0.5 * h * sk
                xk = xk + h * vk
                lpk, sk = self._f(xk, t)
                vk = vk + 0.5 * h * sk
            acc = self._accept(self._dlogp(t, x, xk, lp, lpk, s, sk) - 0.5 * (vk**2).sum(1) + 0.5 * (v_p**2).sum(1))
            x = np.where(acc[:, None], xk, x)
            s = np.where(acc[:, None], sk, s)
            v = np.where(acc[:, None], vk, v_p)
            lp = np.where(acc, lpk, lp) if lp is not None else None
        self.v = v
        return x


def du_mcmc(e1, e2, sched, seeds, n: int, kind: str = "hmc", steps: int = 10, step_size=None,
            leapfrog: int = 3, damping: float = 0.5, energy: str | None = None, n_trapezoid: int = 2,
            stats: dict | None = None):
    """Du et al. (2023)'s annealed MCMC: reverse steps with eps1 + eps2, each followed (at every
    level t >= 0) by ``steps`` MCMC steps targeting p1,t p2,t; ``n`` samples per seed.

    ``kind``: ``"ula"``, ``"mala"`` (step 1e-3) or ``"hmc"`` (step 0.03, ``leapfrog`` steps,
    momentum ``damping``, unit mass). ``energy``: ``"exact"`` (-log p1,t - log p2,t; needs
    exact experts) or ``"score"`` (the trapezoidal line integral of the summed score with
    ``n_trapezoid`` points); default exact when both experts have densities. ``stats`` gets the
    mean acceptance rate per seed (``accept``) and the energy used (``energy``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    seed_list, single = as_seed_list(seeds)
    has_energy = all(hasattr(e, "log_prob_and_score") for e in (e1, e2))
    energy = energy or ("exact" if has_energy else "score")
    if energy not in ("exact", "score") or (energy == "exact" and not has_energy):
        raise ValueError(f"energy must be 'exact' (experts with densities) or 'score'; got {energy!r}")
    h = float(step_size if step_size is not None else (0.03 if kind == "hmc" else 1e-3))
    noise = Noise(seed_list, STREAMS[f"du_{kind}"], n)
    n_blocks = len(seed_list)
    chain = AnnealedMCMC(e1, e2, kind, h, steps, leapfrog, damping, energy, n_trapezoid, noise, n_blocks * n)
    if kind == "hmc":
        chain.v = noise.normal()  # the initial momentum, unit mass
    z0 = reverse(lambda z, t: eps_sum(e1, e2, z, t), sched, noise, after=chain.level)
    if stats is not None:
        rate = chain.accepted / max(chain.counted, 1) if kind != "ula" else np.full(chain.accepted.shape, np.nan)
        stats["accept"] = rate.reshape(n_blocks, n).mean(1)
        stats["energy"] = energy if kind != "ula" else "none"
    return blocks(z0, n_blocks, single)

"""The schedule and the experts of the 2D composition benchmark (App. E, Table 7).

Schedule (``make_schedule``): Du et al.'s cosine VP schedule with T = 100, as diffusers'
``squaredcos_cap_v2`` through ``amdm_geom.core.schedules.make_scheduler("cosine",
num_train_timesteps=100, steps_offset=0, set_alpha_to_one=True)``; the 100 sampling steps cover
t = 99 .. 0 (checked), the last one going to abar = 1. Every method steps with the DDPM
coefficients of ``amdm_geom.core.schedules.ddim_coefficients(..., eta=1)``.

Experts: ``ExactExpert``, eps_i(z, t) = -sqrt(1 - abar_t) grad log p_i,t(z) (eq. 4) from the
exact diffused mixture; ``MLPExpert``, a small MLP per expert (3 hidden SiLU layers of 48;
inputs z, Fourier features sin/cos(pi 2^j z), j < 5, which the ring's 0.03-wide modes need, and
sinusoidal features of t), trained by denoising score matching (``train_mlp``: epsilon
prediction, 2500 Adam steps of 1024 fresh exact samples of p_i), seeded, on CPU. Width 48 rather
than 64 because the MLP evaluations (about 1e8 per network in a full run, mostly HMC's leapfrog
steps) dominate the run time. ``eps_pair``, ``eps_sum`` and ``score_sum`` evaluate two experts
together (one batched pass for two MLPs). Points are numpy ``(N, 2)`` float64.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from amdm_geom.analyses.toy import targets
from amdm_geom.analyses.toy.mlp import MLP, pair_forward
from amdm_geom.core.schedules import ddim_coefficients, make_scheduler
from amdm_geom.models.mixture import GaussianMixture

__all__ = ["MLP", "ExactExpert", "MLPExpert", "Schedule", "eps_pair", "eps_sum", "make_schedule", "score_sum",
           "train_mlp"]


@dataclass
class Schedule:
    """The DDPM step coefficients (``ddim_coefficients(..., eta=1)``) and abar per timestep."""

    coeffs: xr.Dataset
    abar: np.ndarray  # (T,) alpha_bar per timestep t = 0..T-1, float64
    T: int

    @property
    def t(self) -> np.ndarray:
        return self.coeffs.t.values

    @property
    def t_prev(self) -> np.ndarray:
        return self.coeffs.t_prev.values


def make_schedule(T: int = 100) -> Schedule:
    """Du et al.'s cosine VP schedule with ``T`` steps, sampled over every timestep t = T-1..0."""
    sched = make_scheduler("cosine", num_train_timesteps=T, steps_offset=0, set_alpha_to_one=True)
    coeffs = ddim_coefficients(sched, T, eta=1.0)
    t = coeffs.t.values
    if not np.array_equal(t, np.arange(T - 1, -1, -1)) or int(coeffs.t_prev.values[-1]) != -1 \
            or float(coeffs.alpha_bar_prev.values[-1]) != 1.0:
        raise RuntimeError(f"the schedule does not cover t = {T - 1}..0 ending at abar = 1: t = {t}")
    abar = np.empty(T)
    abar[t] = coeffs.alpha_bar.values
    return Schedule(coeffs, abar, T)


class ExactExpert:
    """eps(z, t) = -sqrt(1 - abar_t) grad log p_t(z) for a mixture, exact; ``t = -1`` is the data
    itself (abar = 1). The engine caches the diffused components per abar."""

    kind = "exact"

    def __init__(self, mix: GaussianMixture, schedule: Schedule):
        self.mixture, self.schedule = mix, schedule

    def alpha_bar(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.schedule.abar[int(t)])

    def eps(self, z: np.ndarray, t: int) -> np.ndarray:
        scale = 0.0 if t < 0 else math.sqrt(1 - self.schedule.abar[int(t)])
        return -scale * self.score(z, t)

    def score(self, z: np.ndarray, t: int) -> np.ndarray:
        return targets.score(self.mixture, z, self.alpha_bar(t))

    def log_prob_and_score(self, z: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        return targets.log_prob_and_score(self.mixture, z, self.alpha_bar(t))


class MLPExpert:
    """A trained epsilon-prediction MLP as an expert: eps(z, t), score = -eps / sqrt(1 - abar_t).
    It has no energy: MALA and HMC use Du et al.'s score-only acceptance with it."""

    kind = "mlp"

    def __init__(self, net: MLP, schedule: Schedule, info: dict | None = None):
        self.net, self.schedule, self.info = net, schedule, dict(info or {})

    @torch.no_grad()
    def eps(self, z: np.ndarray, t: int) -> np.ndarray:
        if t < 0:
            raise ValueError(f"an MLP expert is trained for t = 0..T-1 only; got t = {t}")
        zz = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
        return self.net.hidden(self.net.z_features(zz), int(t)).numpy().astype(np.float64)

    def score(self, z: np.ndarray, t: int) -> np.ndarray:
        return -self.eps(z, t) / math.sqrt(1 - self.schedule.abar[int(t)])


def eps_pair(e1, e2, z1: np.ndarray, z2: np.ndarray | None, t: int) -> tuple[np.ndarray, np.ndarray]:
    """``(eps1(z1, t), eps2(z2, t))`` (``z2 = None``: both at ``z1``); one batched forward pass
    when both experts are MLPs of one shape."""
    if isinstance(e1, MLPExpert) and isinstance(e2, MLPExpert) and t >= 0:
        out = pair_forward(e1.net, e2.net, z1, z2, t)
        if out is not None:
            return out
    return e1.eps(z1, t), e2.eps(z1 if z2 is None else z2, t)


def eps_sum(e1, e2, z: np.ndarray, t: int) -> np.ndarray:
    """eps1(z, t) + eps2(z, t), the product of experts' epsilon."""
    a, b = eps_pair(e1, e2, z, None, t)
    return a + b


def score_sum(e1, e2, z: np.ndarray, t: int) -> np.ndarray:
    """The summed score s1 + s2 at level t >= 0 (both experts share the schedule)."""
    if isinstance(e1, MLPExpert) and isinstance(e2, MLPExpert):
        return -eps_sum(e1, e2, z, t) / math.sqrt(1 - e1.schedule.abar[int(t)])
    return e1.score(z, t) + e2.score(z, t)


def train_mlp(mix: GaussianMixture, schedule: Schedule, seed: int = 0, iters: int = 2500, batch: int = 1024,
              width: int = 48, lr: float = 3e-3, n_zfreq: int = 5) -> MLPExpert:
    """Denoising score matching (epsilon prediction, t uniform on 0..T-1) on fresh exact samples
    of ``mix``; Adam with a cosine learning-rate decay. Seeded by ``seed`` through its own numpy
    and torch generators. The wall time and final loss are in ``expert.info``."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 99])
    gen = torch.Generator().manual_seed(int(seed))
    net = MLP(schedule.T, width=width, n_zfreq=n_zfreq, generator=gen)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sqrt_abar = torch.from_numpy(np.sqrt(schedule.abar)).to(torch.float32)
    sqrt_1m = torch.from_numpy(np.sqrt(1 - schedule.abar)).to(torch.float32)
    losses = []
    for it in range(iters):
        for g in opt.param_groups:
            g["lr"] = lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * it / iters)))
        x0 = torch.from_numpy(targets.sample(mix, batch, rng).astype(np.float32))
        t = torch.from_numpy(rng.integers(0, schedule.T, batch))
        xi = torch.randn(batch, 2, generator=gen)
        z = sqrt_abar[t, None] * x0 + sqrt_1m[t, None] * xi
        loss = ((net(z, t) - xi) ** 2).sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    info = {"seed": int(seed), "iters": int(iters), "batch": int(batch), "width": int(width), "lr": float(lr),
            "n_zfreq": int(n_zfreq), "final_loss": float(np.mean(losses[-100:])), "train_s": time.perf_counter() - t0}
    return MLPExpert(net, schedule, info)

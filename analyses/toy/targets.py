"""The 2D targets of App. E's composition benchmark (Table 7), with an exact ground truth.

Each task's target is ``p = p1 p2 / Z`` in 2D with p1, p2 Gaussian mixtures, built with the one
engine ``amdm_geom.models.mixture.GaussianMixture`` (full covariances; a product of mixtures
is a mixture, and under the VP forward process a component N(mu, S) becomes
N(sqrt(abar) mu, abar S + (1 - abar) I), so every density and score is exact):

- ``"ring_bar"``: Du et al.'s ring of 8 Gaussians (radius 0.5, std 0.03, equal weights) times a
  bar. Du et al.'s bar is uniform on x in [-0.2, 0.2], y in [-1, 1] (their code also puts 1% of
  the mass uniformly on [-1.1, 1.1]^2). Here the bar is a mixture of 20 equal Gaussians with
  means (0, y_j), y_j = -0.95, -0.85, ..., 0.95 (spacing 0.1), and covariance
  diag(0.1^2, 0.06^2): along y the components overlap into a plateau flat to 0.4% for
  |y| <= 0.85 that falls to half height at |y| = 1 (the uniform's edge) and to under 1% by
  |y| = 1.2; along x a single Gaussian of std 0.1 (the uniform's std is 0.115). This deviates
  from the hard-edged uniform bar on purpose: with Gaussian components the product, every
  diffused density and every score are exact, and the log-likelihood of a sample off the bar
  is finite. The product has two modes at (0, +-0.5) holding 98.7% of the mass; the smooth bar
  leaves four faint modes near (+-0.33, +-0.33) (0.3% each), which the hard bar would cut.
- ``"gmm_product"``: two 3-component mixtures with full covariances whose modes partially
  overlap; the product has two strong modes and a weak third one.

The benchmark works on numpy point sets ``x (N, 2)`` float64; ``log_prob``, ``score``,
``log_prob_and_score`` and ``sample`` here are the engine's, read and returned as numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from amdm_geom.models.mixture import GaussianMixture

__all__ = ["TASKS", "Task", "bar", "log_prob", "log_prob_and_score", "make_task", "mixture", "ring", "sample",
           "score"]

TASKS = ("ring_bar", "gmm_product")


def mixture(weights, means, covs) -> GaussianMixture:
    """A 2D mixture: ``weights (K,)`` (normalised), ``means (K, 2)``, ``covs (K, 2, 2)``."""
    means = np.asarray(means, dtype=np.float64)
    if means.ndim != 2 or means.shape[1] != 2:
        raise ValueError(f"means must have shape (K, 2); got {means.shape}")
    return GaussianMixture.full(means, np.asarray(covs, dtype=np.float64), np.asarray(weights, dtype=np.float64))


def ring(n: int = 8, radius: float = 0.5, std: float = 0.03) -> GaussianMixture:
    """Du et al.'s ring: n equal Gaussians of std ``std`` on a circle of radius ``radius``."""
    a = 2 * np.pi * np.arange(n) / n
    return mixture(np.ones(n), radius * np.stack([np.cos(a), np.sin(a)], 1), np.tile(std**2 * np.eye(2), (n, 1, 1)))


def bar(n: int = 20, half_length: float = 1.0, std_x: float = 0.1, std_y: float = 0.06) -> GaussianMixture:
    """A Gaussian-mixture bar: n equal components at (0, y_j), y_j the centres of n equal cells of
    [-half_length, half_length], covariance diag(std_x^2, std_y^2) (see the module docstring)."""
    y = np.linspace(-half_length, half_length, n + 1)
    y = 0.5 * (y[1:] + y[:-1])
    means = np.stack([np.zeros(n), y], 1)
    return mixture(np.ones(n), means, np.tile(np.diag([std_x**2, std_y**2]), (n, 1, 1)))


@dataclass
class Task:
    """A composition task: experts p1, p2 and the exact target p = p1 p2 / Z (``log_z`` = log Z)."""

    name: str
    p1: GaussianMixture
    p2: GaussianMixture
    target: GaussianMixture
    log_z: float
    description: str
    extent: tuple[float, float, float, float]  # plotting window (x0, x1, y0, y1)


def make_task(name: str = "ring_bar") -> Task:
    """``"ring_bar"`` or ``"gmm_product"`` (see the module docstring)."""
    if name == "ring_bar":
        p1, p2 = ring(), bar()
        desc = ("Du et al. (2023)'s ring of 8 Gaussians (radius 0.5, std 0.03) times a bar, the bar a mixture of 20 "
                "Gaussians at (0, y_j), y_j = -0.95..0.95, cov diag(0.1^2, 0.06^2), standing in for their uniform "
                "bar x in [-0.2, 0.2], y in [-1, 1] so that every density and score is exact")
        extent = (-1.1, 1.1, -1.1, 1.1)
    elif name == "gmm_product":
        p1 = mixture([0.35, 0.35, 0.3], [[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
                     [[[0.09, 0.03], [0.03, 0.06]], [[0.06, -0.02], [-0.02, 0.09]], [[0.05, 0.0], [0.0, 0.05]]])
        p2 = mixture([0.4, 0.3, 0.3], [[-0.7, 0.4], [1.2, 0.5], [0.0, -1.0]],
                     [[[0.08, 0.0], [0.0, 0.08]], [[0.1, 0.04], [0.04, 0.07]], [[0.06, 0.0], [0.0, 0.06]]])
        desc = ("two 3-component 2D Gaussian mixtures with full covariances and partially overlapping modes; the "
                "product has two strong modes and a weak one")
        extent = (-2.0, 2.0, -2.0, 2.0)
    else:
        raise ValueError(f"task must be one of {TASKS}; got {name!r}")
    target, log_z = p1.product(p2)
    return Task(name, p1, p2, target, log_z, desc, extent)


# --------------------------------------------------------------------------------------------
# numpy views of the engine


def _points(x) -> torch.Tensor:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2); got {x.shape}")
    return torch.from_numpy(x)


def log_prob(mix: GaussianMixture, x, alpha_bar: float = 1.0) -> np.ndarray:
    """log p_t(x) of the mixture's own weights at ``abar`` (1: the data) for ``x (N, 2)`` -> ``(N,)``."""
    return mix.log_prob(_points(x), None, alpha_bar).numpy()


def score(mix: GaussianMixture, x, alpha_bar: float = 1.0) -> np.ndarray:
    """grad log p_t(x), ``(N, 2)``."""
    return mix.score(_points(x), None, alpha_bar).numpy()


def log_prob_and_score(mix: GaussianMixture, x, alpha_bar: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(log p_t(x) (N,), grad log p_t(x) (N, 2))`` in one pass."""
    lp, s = mix.log_prob_and_score(_points(x), None, alpha_bar)
    return lp.numpy(), s.numpy()


def sample(mix: GaussianMixture, n: int, rng: np.random.Generator, alpha_bar: float = 1.0) -> np.ndarray:
    """``n`` exact draws ``(n, 2)`` of p_t (of the data at ``abar = 1``) from ``rng``."""
    return mix.sample_diffused(None, n, alpha_bar, rng)[0].numpy()

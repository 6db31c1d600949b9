"""The metrics of the 2D benchmark (Table 7's ln MMD, LL and "Var", and W2 and mode coverage),
each a function of a sample set ``x (N, 2)`` (numpy float64) and the exact target:

- ``log_likelihood``: mean log p(x) under the normalised analytic target (higher is better).
- ``mmd2``/``ln_mmd``: the biased V-statistic MMD^2 (>= 0) with a Gaussian kernel
  exp(-|x - y|^2 / (2 h^2)) for h in (0.05, 0.1, 0.2, 0.4) (halving, so each kernel is the
  previous one squared twice), reported as ln MMD = ln sqrt(MMD^2) (of MMD, not MMD^2).
- ``w2``: the 2-Wasserstein distance between the first 500 points of each set, by exact
  assignment (``scipy.optimize.linear_sum_assignment`` on squared distances).
- ``cov_error`` ("Var"): the Frobenius norm of cov(samples) - cov(target), the target's
  covariance analytic. The paper's "Var" is undefined; this is our reading.
- ``mode_coverage``: the share of the target's modes (clusters of components holding >= 2% of
  the mass, ``target_modes``) with at least 5 samples within 2 std of the mode's centre.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from amdm_geom.analyses.toy import targets
from amdm_geom.models.mixture import GaussianMixture

__all__ = ["BANDWIDTHS", "cov_error", "kernel_means", "ln_mmd", "log_likelihood", "mmd2", "mode_coverage",
           "sq_distances", "target_modes", "w2"]

BANDWIDTHS = (0.05, 0.1, 0.2, 0.4)


def log_likelihood(x: np.ndarray, target: GaussianMixture) -> float:
    """Mean log p(x) under the normalised target."""
    return float(np.mean(targets.log_prob(target, x)))


def sq_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared distances ``(N, M)`` as |x|^2 + |y|^2 - 2 x.y (one matrix product), clipped at 0."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    d = x @ (-2.0 * y.T)
    d += (x * x).sum(1)[:, None]
    d += (y * y).sum(1)[None, :]
    return np.maximum(d, 0.0, out=d)


def kernel_means(d2: np.ndarray, bandwidths: Sequence[float]) -> np.ndarray:
    """mean exp(-d2 / (2 h^2)) for each bandwidth h, ``(H,)``. When each bandwidth is half the
    previous one (largest first), the next kernel is the previous one squared twice, exactly,
    and ``d2`` is overwritten; otherwise every kernel is its own exp."""
    hs = np.asarray(bandwidths, dtype=np.float64)
    order = np.argsort(hs)[::-1]
    halving = all(math.isclose((hs[a] / hs[b]) ** 2, 4.0, rel_tol=1e-12) for a, b in zip(order[:-1], order[1:]))
    out = np.empty(len(hs))
    if not halving:
        for i, h in enumerate(hs):
            out[i] = np.exp(d2 * (-0.5 / h**2)).mean()
        return out
    K = np.exp(np.multiply(d2, -0.5 / hs[order[0]] ** 2, out=d2), out=d2)
    out[order[0]] = K.mean()
    for i in order[1:]:
        np.square(K, out=K)
        np.square(K, out=K)
        out[i] = K.mean()
    return out


def mmd2(x: np.ndarray, y: np.ndarray, bandwidths: Sequence[float] = BANDWIDTHS, yy: np.ndarray | None = None):
    """Biased (V-statistic) MMD^2 between point sets ``x (N, 2)`` and ``y (M, 2)`` for a Gaussian
    kernel exp(-|a - b|^2 / (2 h^2)) per bandwidth h: mean k(x, x') + mean k(y, y') - 2 mean
    k(x, y), clipped at 0 against rounding. Shape ``(len(bandwidths),)``. ``yy``: the
    ``kernel_means`` of ``y`` against itself, when already known."""
    kxx = kernel_means(sq_distances(x, x), bandwidths)
    kyy = kernel_means(sq_distances(y, y), bandwidths) if yy is None else yy
    kxy = kernel_means(sq_distances(x, y), bandwidths)
    return np.maximum(kxx + kyy - 2 * kxy, 0.0)


def ln_mmd(m2) -> np.ndarray:
    """ln MMD = 0.5 ln MMD^2 (of MMD, not MMD^2); -inf where MMD^2 = 0."""
    m2 = np.asarray(m2, dtype=np.float64)
    with np.errstate(divide="ignore"):  # ln 0 = -inf: identical sets
        return 0.5 * np.log(m2)


def w2(x: np.ndarray, y: np.ndarray, max_points: int = 500) -> float:
    """2-Wasserstein distance between the first ``max_points`` points of two sets (equal
    counts), by exact assignment on squared distances (differences taken exactly)."""
    m = min(len(x), len(y), max_points)
    d = np.asarray(x[:m], dtype=np.float64)[:, None, :] - np.asarray(y[:m], dtype=np.float64)[None, :, :]
    c = (d * d).sum(-1)
    r, col = linear_sum_assignment(c)
    return float(math.sqrt(c[r, col].mean()))


def cov_error(x: np.ndarray, target: GaussianMixture) -> float:
    """"Var": the Frobenius norm of cov(samples) (unbiased) - cov(target) (analytic)."""
    return float(np.linalg.norm(np.cov(np.asarray(x).T) - target.covariance().numpy()))


def target_modes(target: GaussianMixture, min_mass: float = 0.02):
    """The target's modes: components clustered greedily by weight (a component joins a
    cluster whose centre lies within 3 std of either), clusters holding >= ``min_mass``.
    Returns ``(centres (M, 2), radii (M,), masses (M,))``; radius = 2 std of the cluster's
    moment-matched covariance along its widest axis."""
    weights, means = target.weights.numpy(), target.means.numpy()
    covs = target.full_covariances().numpy()
    order = np.argsort(weights)[::-1]
    sd = np.sqrt(np.linalg.eigvalsh(covs)[:, -1])
    clusters: list[list[int]] = []
    for k in order:
        if weights[k] < 1e-12:
            break
        for c in clusters:
            head = c[0]
            if np.linalg.norm(means[k] - means[head]) < 3 * max(sd[k], sd[head]):
                c.append(k)
                break
        else:
            clusters.append([k])
    centres, radii, masses = [], [], []
    for c in clusters:
        wts = weights[c]
        mass = wts.sum()
        if mass < min_mass:
            continue
        sub = targets.mixture(wts, means[c], covs[c])
        centres.append(sub.mean().numpy())
        radii.append(2 * math.sqrt(np.linalg.eigvalsh(sub.covariance().numpy())[-1]))
        masses.append(mass)
    return np.array(centres).reshape(-1, 2), np.array(radii), np.array(masses)


def mode_coverage(x: np.ndarray, target: GaussianMixture, min_count: int = 5, min_mass: float = 0.02) -> float:
    """Share of the target's modes (``target_modes``) with at least ``min_count`` samples
    within the mode's radius of its centre."""
    centres, radii, _ = target_modes(target, min_mass)
    d = np.linalg.norm(np.asarray(x, dtype=np.float64)[:, None, :] - centres[None, :, :], axis=-1)
    return float(np.mean((d <= radii[None, :]).sum(0) >= min_count))

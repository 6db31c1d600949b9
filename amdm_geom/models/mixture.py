"""Gaussian mixtures under the VP forward process: the one exact engine behind every exact model
of the toolkit (the SD-size fine-grained family of ``gmm`` and the 2D benchmark of App. E).

Data ``x_0 | y ~ sum_k pi_k(y) N(mu_k, S_k)`` in ``R^n`` over K components. ``S_k`` is diagonal
(``variances (K, n)``, the per-coordinate ``s_k^2``; any n, e.g. n = 16384 for SD's 4x64x64
latent) or full (``covariances (K, n, n)``, for small n such as the 2D benchmark; log densities
then cost ``n (n + 1) / 2 + n + 1`` features per point). A condition ``y`` is a weight vector
``pi(y)`` over the components, ``(K,)`` or one per sample ``(B, K)``; ``None`` stands for the
mixture's own ``weights`` (uniform unless given). Under the forward process
``z_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) xi`` every component stays Gaussian,

    p_t(z | y) = sum_k pi_k(y) N(z; sqrt(abar_t) mu_k, V_k),  V_k = abar_t S_k + (1 - abar_t) I,

so the log density, the score and the epsilon of eq. (4), ``eps = -sqrt(1 - abar_t) grad log
p_t(z | y)``, are exact (``abar_t = 1`` is the data itself). A product of two mixtures is a
mixture (``product``): ``N(x; a, A) N(x; b, B) = N(a; b, A + B) N(x; c, C)`` with
``C = (A^-1 + B^-1)^-1``, ``c = C (A^-1 a + B^-1 b)``. Everything is float64 torch; ``(B, n)``
matrix products against the ``(K, n)`` means keep the diagonal case fast at n = 16384.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["GaussianMixture"]

_LOG2PI = math.log(2 * math.pi)


@dataclass
class GaussianMixture:
    """K Gaussian components in ``R^n`` shaped as ``latent_shape``.

    ``means (K, n)``; ``variances (K, n)`` (per-coordinate ``s_k^2``, broadcast from ``(1, n)``)
    for diagonal components, or ``covariances (K, n, n)`` for full ones (then ``variances`` is
    derived as their diagonals; build those with ``GaussianMixture.full``). ``labels`` maps an
    attribute name to a ``(K,)`` integer label per component; ``weights (K,)`` are the mixture's
    own (uniform by default; normalised to sum to 1). All float64.
    """

    means: torch.Tensor
    variances: torch.Tensor | None
    latent_shape: tuple[int, ...]
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    covariances: torch.Tensor | None = None
    weights: torch.Tensor | None = None

    def __post_init__(self):
        self.means = torch.as_tensor(self.means, dtype=torch.float64)
        n = math.prod(self.latent_shape)
        if self.means.ndim != 2 or self.means.shape[1] != n:
            raise ValueError(f"means must have shape (K, {n}) for latent_shape {self.latent_shape}; "
                             f"got {tuple(self.means.shape)}")
        if self.covariances is not None:
            if self.variances is not None:
                raise ValueError("give variances (diagonal components) or covariances (full ones), not both")
            self.covariances = _checked_covariances(self.covariances, *self.means.shape)
            self.variances = torch.diagonal(self.covariances, dim1=1, dim2=2).clone()
        else:
            self.variances = torch.as_tensor(self.variances, dtype=torch.float64).expand_as(self.means).clone()
            if (self.variances <= 0).any():
                raise ValueError("component variances must be > 0")
        self.weights = _checked_own_weights(self.weights, self.n_components)

    @classmethod
    def full(cls, means, covariances, weights=None, labels: dict | None = None) -> GaussianMixture:
        """A mixture of flat vectors with full covariances: ``means (K, n)``, ``covariances
        (K, n, n)`` symmetric positive definite, ``weights (K,)`` (normalised; uniform if None)."""
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, n); got {tuple(means.shape)}")
        return cls(means, None, (means.shape[1],), dict(labels or {}), covariances=covariances, weights=weights)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def is_full(self) -> bool:
        """Whether the components have full covariances (else diagonal)."""
        return self.covariances is not None

    def full_covariances(self) -> torch.Tensor:
        """The components' covariances ``(K, n, n)`` (diagonal ones expanded; for small n)."""
        return self.covariances if self.is_full else torch.diag_embed(self.variances)

    def check_weights(self, weights: torch.Tensor | None) -> torch.Tensor:
        """A ``(K,)`` or ``(B, K)`` float64 weight tensor, checked to be a distribution; ``None``
        gives the mixture's own weights."""
        if weights is None:
            return self.weights
        w = torch.as_tensor(weights, dtype=torch.float64)
        if w.shape[-1] != self.n_components or w.ndim not in (1, 2):
            raise ValueError(f"condition weights must have shape ({self.n_components},) or "
                             f"(B, {self.n_components}); got {tuple(w.shape)}")
        if (w < 0).any() or not torch.allclose(w.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-9):
            raise ValueError("condition weights must be >= 0 and sum to 1")
        return w

    # -- the diffused mixture ------------------------------------------------------------------

    def _diffused(self, alpha_bar: float):
        """The components at ``abar``, cached for the last few ``abar`` (every model of a step
        asks for the same one; full covariances are for small n, so a whole schedule's worth is
        kept). Diagonal: means, inverse variances ``(K, n)``, log-determinants ``(K,)``. Full:
        means and the terms of ``_full_terms``."""
        cache = self.__dict__.setdefault("_diffused_cache", {})
        if alpha_bar not in cache:
            if len(cache) >= (1024 if self.is_full else 4):
                cache.pop(next(iter(cache)))
            if self.is_full:
                cache[alpha_bar] = _full_terms(math.sqrt(alpha_bar) * self.means, self._covariance_at(alpha_bar))
            else:
                v = alpha_bar * self.variances + (1.0 - alpha_bar)  # (K, n)
                cache[alpha_bar] = (math.sqrt(alpha_bar) * self.means, 1.0 / v, torch.log(v).sum(1))
        return cache[alpha_bar]

    def _covariance_at(self, alpha_bar: float) -> torch.Tensor:
        eye = torch.eye(self.dim, dtype=torch.float64)
        return alpha_bar * self.covariances + (1 - alpha_bar) * eye

    def component_log_density(self, z: torch.Tensor, alpha_bar: float = 1.0) -> torch.Tensor:
        """``log N(z; sqrt(abar) mu_k, V_k)`` for ``z (B, n)`` float64 -> ``(B, K)``."""
        if self.is_full:
            return (self._diffused(alpha_bar)[1] @ _quadratic_features(z)).T
        mean_t, inv_v, log_det = self._diffused(alpha_bar)
        # |z - m|^2_V = z^2 . v^-1 - 2 z . (m v^-1) + m^2 . v^-1, as three (B, n) x (n, K) products
        quad = (z * z) @ inv_v.T - 2.0 * z @ (mean_t * inv_v).T + (mean_t * mean_t * inv_v).sum(1)
        return -0.5 * (quad + log_det + self.dim * _LOG2PI)

    def log_prob(self, z: torch.Tensor, weights: torch.Tensor | None = None, alpha_bar: float = 1.0) -> torch.Tensor:
        """Exact ``log p_t(z | y)`` for ``z (B, n)``, weights ``(K,)``, ``(B, K)`` or None -> ``(B,)``."""
        if self.is_full:
            return self._full_eval(z, weights, alpha_bar, False)[0]
        return torch.logsumexp(self._log_joint(z, weights, alpha_bar), dim=1)

    def responsibilities(self, z: torch.Tensor, weights: torch.Tensor | None = None,
                         alpha_bar: float = 1.0) -> torch.Tensor:
        """Posterior component probabilities ``p_t(k | z, y)``, ``(B, K)``."""
        return torch.softmax(self._log_joint(z, weights, alpha_bar), dim=1)

    def _log_joint(self, z, weights, alpha_bar):
        return torch.log(self.check_weights(weights)) + self.component_log_density(z, alpha_bar)

    def score(self, z: torch.Tensor, weights: torch.Tensor | None = None, alpha_bar: float = 1.0) -> torch.Tensor:
        """Exact ``grad_z log p_t(z | y)`` for ``z (B, n)`` float64 -> ``(B, n)``:
        ``sum_k r_k(z) V_k^-1 (sqrt(abar) mu_k - z)`` with responsibilities ``r_k``."""
        if self.is_full:
            return self._full_eval(z, weights, alpha_bar, True)[1]
        return self._diagonal_score(self.responsibilities(z, weights, alpha_bar), z, alpha_bar)

    def log_prob_and_score(self, z: torch.Tensor, weights: torch.Tensor | None = None,
                           alpha_bar: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p_t(z | y) (B,), grad_z log p_t(z | y) (B, n))`` from one evaluation of the
        components."""
        if self.is_full:
            return self._full_eval(z, weights, alpha_bar, True)
        joint = self._log_joint(z, weights, alpha_bar)
        return torch.logsumexp(joint, dim=1), self._diagonal_score(torch.softmax(joint, dim=1), z, alpha_bar)

    def scaled_score(self, z: torch.Tensor, weights: torch.Tensor | None = None, alpha_bar: float = 1.0,
                     factor: float = 1.0) -> torch.Tensor:
        """``factor * score(z, weights, alpha_bar)`` (eq. 4's eps is ``factor = -sqrt(1 - abar)``),
        float64 ``(B, n)``. Where every component has the same variances (the fine-grained family),
        ``V_k^-1 = P`` for all k and the score is ``P (sum_k r_k m_k - z)``: one matrix product and
        two passes over ``(B, n)``, the responsibilities from ``z . (P m_k)`` alone (``z^T P z`` is
        common to all components and cancels). Equal to the general formula up to float64 rounding."""
        if self.is_full or not self._shared_variances():
            return factor * self.score(z, weights, alpha_bar)
        mean_t, prec_mean, const, prec = self._shared_terms(alpha_bar)
        # log pi_k + log N(z; m_k, V) up to a per-row constant, (B, K)
        joint = torch.log(self.check_weights(weights)) + torch.addmm(const, z, prec_mean.T)
        r = torch.softmax(joint, dim=1)
        out = torch.addmm(z, r, mean_t, alpha=-1.0)  # z - sum_k r_k m_k
        return out.mul_(prec * -factor)

    def _shared_variances(self) -> bool:
        """Whether all components have the same (diagonal) variances, checked once."""
        if "_shared" not in self.__dict__:
            self.__dict__["_shared"] = bool((self.variances == self.variances[:1]).all())
        return self.__dict__["_shared"]

    def _shared_terms(self, alpha_bar: float):
        """For shared variances at ``abar``: means ``(K, n)``, ``P m_k (K, n)``, the per-component
        constant ``-(m_k . P m_k + log det V + n log 2 pi) / 2 (K,)`` and the precision ``P``
        (a float when it is one number, else ``(n,)``), cached for the last few ``abar``."""
        cache = self.__dict__.setdefault("_shared_cache", {})
        if alpha_bar not in cache:
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            mean_t, inv_v, log_det = self._diffused(alpha_bar)
            row = inv_v[0]
            prec_mean = mean_t * row
            const = -0.5 * ((mean_t * prec_mean).sum(1) + log_det + self.dim * _LOG2PI)
            prec = float(row[0]) if bool((row == row[0]).all()) else row
            cache[alpha_bar] = (mean_t, prec_mean, const, prec)
        return cache[alpha_bar]

    def _diagonal_score(self, r: torch.Tensor, z: torch.Tensor, alpha_bar: float) -> torch.Tensor:
        mean_t, inv_v, _ = self._diffused(alpha_bar)
        return r @ (mean_t * inv_v) - z * (r @ inv_v)

    def _full_eval(self, z: torch.Tensor, weights, alpha_bar: float, with_score: bool):
        """Full covariances: ``(log p_t (B,), score (B, n) or None)``, components first
        (``(K, B)``: the reductions over K run elementwise across rows). The score is
        ``sum_k r_k P_k m_k - (sum_k r_k P_k) z`` with ``P_k = V_k^-1``."""
        _, rows, resp_rows, _ = self._diffused(alpha_bar)
        log_w = torch.log(self.check_weights(weights))  # (K,) or (B, K)
        joint = rows @ _quadratic_features(z) + (log_w[:, None] if log_w.ndim == 1 else log_w.T)  # (K, B)
        top = joint.amax(0)
        e = torch.exp(joint - top)
        total = e.sum(0)
        log_p = top + torch.log(total)
        if not with_score:
            return log_p, None
        n = z.shape[1]
        avg = (resp_rows @ e) / total  # sum_k r_k [P_k (pairs i <= j), P_k m_k], (n (n + 1) / 2 + n, B)
        pair = {ij: a for a, ij in enumerate((i, j) for i in range(n) for j in range(i, n))}
        cols = z.T
        g = []
        for i in range(n):
            gi = avg[len(pair) + i]
            for j in range(n):
                gi = gi - avg[pair[min(i, j), max(i, j)]] * cols[j]
            g.append(gi)
        return log_p, torch.stack(g, 1)

    def diffused(self, alpha_bar: float) -> GaussianMixture:
        """The law of ``z_t`` at ``abar`` in (0, 1] as a mixture of its own (same weights, labels)."""
        alpha_bar = float(alpha_bar)
        if not 0 < alpha_bar <= 1:
            raise ValueError(f"alpha_bar must be in (0, 1]; got {alpha_bar}")
        mean_t = math.sqrt(alpha_bar) * self.means
        if self.is_full:
            return GaussianMixture(mean_t, None, self.latent_shape, dict(self.labels),
                                   covariances=self._covariance_at(alpha_bar), weights=self.weights)
        return GaussianMixture(mean_t, alpha_bar * self.variances + (1.0 - alpha_bar), self.latent_shape,
                               dict(self.labels), weights=self.weights)

    # -- products and moments ---------------------------------------------------------------------

    def product(self, other: GaussianMixture) -> tuple[GaussianMixture, float]:
        """The normalised product ``p q / Z`` of the two mixtures (their own weights) as a mixture
        of ``K1 K2`` full-covariance components (component ``i K2 + j`` from ``(i, j)``), and
        ``log Z``."""
        if other.dim != self.dim:
            raise ValueError(f"a product needs mixtures of one dimension; got {self.dim} and {other.dim}")
        A, B = self.full_covariances()[:, None], other.full_covariances()[None, :]  # (K1, 1, n, n), (1, K2, n, n)
        a, b = self.means[:, None], other.means[None, :]
        S = A + B
        diff = a - b
        quad = torch.einsum("...i,...ij,...j->...", diff, torch.linalg.inv(S), diff)
        log_w = (torch.log(self.weights)[:, None] + torch.log(other.weights)[None, :]
                 - 0.5 * self.dim * _LOG2PI - 0.5 * torch.logdet(S) - 0.5 * quad)
        A_inv, B_inv = torch.linalg.inv(A), torch.linalg.inv(B)
        C = torch.linalg.inv(A_inv + B_inv)
        C = 0.5 * (C + C.transpose(-1, -2))
        c = (C @ ((A_inv @ a[..., None]) + (B_inv @ b[..., None])))[..., 0]
        flat = log_w.reshape(-1)
        log_z = float(torch.logsumexp(flat, 0))
        out = GaussianMixture.full(c.reshape(-1, self.dim), C.reshape(-1, self.dim, self.dim),
                                   torch.exp(flat - log_z))
        return out, log_z

    def mean(self, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The mixture's mean ``(n,)`` under one weight vector (its own if None)."""
        return self._one_weight_vector(weights) @ self.means

    def covariance(self, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The mixture's covariance ``(n, n)``: ``sum_k w_k (S_k + mu_k mu_k^T) - m m^T`` (small n)."""
        w = self._one_weight_vector(weights)
        m = w @ self.means
        second = torch.einsum("k,kij->ij", w, self.full_covariances()
                              + torch.einsum("ki,kj->kij", self.means, self.means))
        return second - torch.outer(m, m)

    def _one_weight_vector(self, weights) -> torch.Tensor:
        w = self.check_weights(weights)
        if w.ndim != 1:
            raise ValueError(f"this takes one weight vector ({self.n_components},); got {tuple(w.shape)}")
        return w

    # -- sampling ground truth --------------------------------------------------------------------

    def sample(self, weights: torch.Tensor | None,
               generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact draws ``x_0 ~ p_0(x | y)``, one per generator: ``(x0 (B, n), component (B,))``."""
        w = self.check_weights(weights)
        w = w.expand(len(generators), -1)
        chol = self._diffused(1.0)[3] if self.is_full else None
        ks, xs = [], []
        for b, g in enumerate(generators):
            k = int(torch.multinomial(w[b], 1, generator=g))
            noise = torch.randn(self.dim, generator=g, dtype=torch.float64)
            ks.append(k)
            xs.append(self.means[k] + (chol[k] @ noise if chol is not None else noise * self.variances[k].sqrt()))
        return torch.stack(xs), torch.tensor(ks)

    def sample_diffused(self, weights: torch.Tensor | None, count: int, alpha_bar: float,
                        rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` exact draws of ``z_t ~ p_t(z | y)`` at once, for reference sets (not the
        per-sample streams of a run): component k, then ``N(sqrt(abar) mu_k, V_k)``, which is
        the law of ``sqrt(abar) x_0 + sqrt(1 - abar) xi``. Returns ``(z (count, n), component (count,))``."""
        w = self.check_weights(weights)
        if w.ndim != 1:
            raise ValueError(f"sample_diffused takes one weight vector ({self.n_components},); got {tuple(w.shape)}")
        ks = torch.from_numpy(rng.choice(self.n_components, size=count, p=(w / w.sum()).numpy()))
        noise = torch.from_numpy(rng.standard_normal((count, self.dim)))
        if self.is_full:
            mean_t, _, _, chol = self._diffused(alpha_bar)
            return mean_t[ks] + (chol[ks] * noise[:, None, :]).sum(-1), ks
        mean_t, inv_v, _ = self._diffused(alpha_bar)
        return mean_t[ks] + noise / inv_v[ks].sqrt(), ks


# --------------------------------------------------------------------------------------------
# full covariances


def _checked_covariances(covariances, k: int, n: int) -> torch.Tensor:
    """``covariances`` as float64 ``(K, n, n)``, checked finite, symmetric and positive definite."""
    cov = torch.as_tensor(covariances, dtype=torch.float64)
    if cov.shape != (k, n, n):
        raise ValueError(f"covariances must have shape ({k}, {n}, {n}); got {tuple(cov.shape)}")
    if not torch.isfinite(cov).all():
        raise ValueError("covariances must be finite")
    if not torch.allclose(cov, cov.transpose(1, 2)):
        raise ValueError("covariances must be symmetric")
    bad = torch.linalg.cholesky_ex(cov).info
    if (bad != 0).any():
        raise ValueError(f"covariances must be positive definite; component {int(bad.nonzero()[0])} is not")
    return cov.clone()


def _checked_own_weights(weights, k: int) -> torch.Tensor:
    """A mixture's own weights ``(K,)``: uniform if None, else checked and normalised (left as
    they are when they already sum to exactly 1)."""
    if weights is None:
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    if w.shape != (k,):
        raise ValueError(f"weights must have shape ({k},); got {tuple(w.shape)}")
    if not torch.isfinite(w).all() or (w < 0).any() or not float(w.sum()) > 0:
        raise ValueError(f"weights must be finite and >= 0 with a positive sum; got {w.tolist()}")
    total = w.sum()
    return w.clone() if float(total) == 1.0 else w / total


def _full_terms(mean_t: torch.Tensor, cov_t: torch.Tensor):
    """Everything a full-covariance evaluation needs at one ``abar`` (``mean_t (K, n)``,
    ``cov_t (K, n, n)``): the rows ``(K, F)`` with ``log N(z; m_k, V_k) = rows[k] . f(z)`` for
    the quadratic features ``f`` (``_quadratic_features``); the precisions ``P_k = V_k^-1`` on
    the pairs i <= j and ``P_k m_k`` side by side, ``(n (n + 1) / 2 + n, K)``; the Cholesky
    factors ``(K, n, n)``."""
    k, n = mean_t.shape
    chol = torch.linalg.cholesky(cov_t)
    prec = torch.cholesky_inverse(chol)
    prec = 0.5 * (prec + prec.transpose(1, 2))
    prec_mean = (prec @ mean_t[..., None])[..., 0]  # (K, n)
    log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
    i, j = torch.triu_indices(n, n)
    upper = prec[:, i, j]  # (K, n (n + 1) / 2)
    quad = torch.where(i == j, -0.5, -1.0) * upper  # -x^T P x / 2 over the pairs i <= j
    const = -0.5 * ((prec_mean * mean_t).sum(1) + log_det + n * _LOG2PI)
    rows = torch.cat([quad, prec_mean, const[:, None]], dim=1)  # (K, F)
    return mean_t, rows, torch.cat([upper, prec_mean], dim=1).T.contiguous(), chol


def _quadratic_features(z: torch.Tensor) -> torch.Tensor:
    """``[z_i z_j (i <= j), z_i, 1]`` for ``z (B, n)`` -> ``(n (n + 1) / 2 + n + 1, B)``."""
    n = z.shape[1]
    cols = z.T.contiguous()  # (n, B)
    pairs = [cols[i] * cols[j] for i in range(n) for j in range(i, n)]
    return torch.stack([*pairs, *cols, torch.ones_like(cols[0])])

"""The paper's closed-form bounds, and the exact quantities they bound.

- Proposition 3.1, eq. (5) (proof in App. B): ``norm_gap_bound``, ``cos_angle_lower_bound``,
  ``delta_bound``.
- Lemma A.1, eq. (9): ``shell_probability_lower_bound`` against ``shell_probability_exact``
  (the chi law, via scipy).
- Proposition 3.2, eq. (8) (proof in App. C): ``max_distance`` and ``prop32_lower_bound``
  against ``prop32_probability_exact``.
- Proposition G.1 (App. G, rectified flow): eq. (43) is eq. (5) on the flow's latents
  (``norm_gap_bound``, ``cos_angle_lower_bound``); eq. (47) is ``flow_delta_bound``.

Each bound holds only on a domain, which its docstring states. Two kinds of input are told
apart:

- a parameter that is not admissible at all (``w`` outside [0, 1], ``eta < 0``, ``n < 1``, a
  negative Lipschitz constant or ``sigma``) raises a one-line ``ValueError``;
- values for which the paper's derivation does not hold give ``NaN`` in those cells, never a
  number that reads as a guarantee. A *vacuous* bound (a probability bound <= 0) is returned
  as it is: it is true and says nothing.

Scalar functions are vectorised over floats, numpy arrays and torch tensors (broadcasting);
they compute in float64 and return a float64 result of the kind given (tensor if any argument
is a tensor, else numpy, else float). Functions of latents take batch-first ``(B, ...)``
tensors or arrays and return ``(B,)`` float64.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from scipy import stats

from amdm_geom.core import geometry as geo
from amdm_geom.core import latent64 as f64

__all__ = [
    "cos_angle_lower_bound",
    "delta_bound",
    "delta_noise_coverage",
    "flow_delta_bound",
    "max_distance",
    "norm_gap_bound",
    "prop32_effective_eps",
    "prop32_lower_bound",
    "prop32_probability_exact",
    "shell_miss_probability_bound",
    "shell_miss_probability_exact",
    "shell_probability_exact",
    "shell_probability_lower_bound",
    "shift_shell_roots",
]


# --------------------------------------------------------------------------------------------
# vectorisation over floats, numpy arrays and tensors


def _vectorised(fn):
    """Run ``fn`` on float64 numpy arrays; give back the kind of array it was called with."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        as_tensor = any(isinstance(v, torch.Tensor) for v in (*args, *kwargs.values()))
        scalar = all(np.ndim(_np(v)) == 0 for v in (*args, *kwargs.values()))

        out = fn(*(_np(v) for v in args), **{k: _np(v) for k, v in kwargs.items()})
        if as_tensor:
            return torch.from_numpy(np.asarray(out, dtype=np.float64))
        return float(out) if scalar else np.asarray(out, dtype=np.float64)

    return wrapper


def _np(v):
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().to(torch.float64).numpy()
    if v is None or isinstance(v, str):
        return v
    return np.asarray(v, dtype=np.float64)


def _require(cond, name: str, accepted: str, value) -> None:
    """One-line ValueError naming the first offending value."""
    cond = np.asarray(cond)
    if not cond.all():
        bad = np.broadcast_to(np.asarray(value), cond.shape)[~cond].flat[0]
        raise ValueError(f"{name} must be {accepted}; got {float(bad)!r}")


# --------------------------------------------------------------------------------------------
# Proposition 3.1


def norm_gap_bound(a, b):
    """Prop. 3.1, eq. (5): ``| |a| - |b| | <= sqrt(1 - 2 alpha (1 - cos phi)) delta``.

    ``a, b (B, ...)``; returns the right-hand side per sample, ``(B,)`` float64, with
    ``alpha = |a||b| / (|a| + |b|)^2`` in [0, 1/4], ``phi`` the angle and
    ``delta = |a - b|`` measured from the inputs.

    Domain: every pair. With the measured ``delta`` this is Cauchy-Schwarz (eq. 17) and an
    identity (eq. 18), so it holds exactly, with equality when ``a + b`` is parallel to
    ``a - b``; the paper's approximation enters only through ``delta_bound``. Where one sample
    is zero, ``alpha = 0`` and the bound is ``delta``; where both are, it is 0.
    """
    a64, b64 = f64.to64(a, "a"), f64.to64(b, "b")
    f64.same_shape([a64, b64], ["a", "b"])
    ra, rb = f64.flat_norm(a64), f64.flat_norm(b64)
    delta = f64.flat_norm(a64 - b64)
    s = ra + rb
    alpha = torch.where(s > 0, ra * rb / torch.where(s > 0, s, 1.0) ** 2, 0.0)
    phi = f64.angle64(a64, b64)
    one_minus_cos = 2.0 * torch.sin(phi / 2) ** 2  # 1 - cos(phi), accurate at small phi
    shrink = torch.where(alpha > 0, 2 * alpha * one_minus_cos, 0.0)
    return f64.measure(torch.sqrt(1 - shrink) * delta, a)


def cos_angle_lower_bound(a, b, *, strict: bool = True):
    """Prop. 3.1, eq. (5): ``cos phi >= 1 - delta^2 / (|a|^2 + |b|^2)``, per sample.

    ``a, b (B, ...)``; returns the right-hand side, ``(B,)`` float64.

    Domain: ``cos phi >= 0`` (phi <= pi/2) and both samples non-zero. Eq. (25) replaces
    ``2|a||b|`` by the larger ``|a|^2 + |b|^2`` in the denominator of
    ``cos phi = (|a|^2 + |b|^2 - delta^2) / (2|a||b|)``, which lowers the value only while the
    numerator ``2 <a, b>`` is >= 0. For an obtuse pair of unequal norms the printed inequality
    is false, by exactly ``-2<a,b> (|a| - |b|)^2 / (2|a||b| (|a|^2 + |b|^2))``; for equal
    norms it is an equality everywhere. With ``strict`` (default) such samples give NaN;
    ``strict=False`` returns the printed formula everywhere, for showing where it fails.
    """
    a64, b64 = f64.to64(a, "a"), f64.to64(b, "b")
    f64.same_shape([a64, b64], ["a", "b"])
    ra2, rb2 = f64.flat_norm(a64) ** 2, f64.flat_norm(b64) ** 2
    delta2 = f64.flat_norm(a64 - b64) ** 2
    bound = 1 - delta2 / (ra2 + rb2)
    ok = (ra2 > 0) & (rb2 > 0)
    if strict:
        dot = (a64.flatten(1) * b64.flatten(1)).sum(dim=1)
        ok &= dot >= 0
    return f64.measure(torch.where(ok, bound, torch.nan), a)


@_vectorised
def delta_bound(B_t, L_theta, L_task, L_t, sigma_t, n, *, noise_quantile=None):
    """Prop. 3.1: ``delta <= |B_t| (L_theta L_task + L_t) + sigma_t sqrt(2n)`` (eqs. 20-23).

    ``B_t`` is the coefficient of epsilon in the step (eq. 4; negative for DDIM, so its
    magnitude is used), ``L_theta`` the local Lipschitz constant of model 1 in the condition,
    ``L_task`` the condition distance ``|y1 - y2|`` it multiplies, ``L_t`` the functional
    proximity ``|eps_theta1(z, t, y2) - eps_theta2(z, t, y2)|``, ``sigma_t`` the step's noise
    scale and ``n`` the latent dimension.

    Domain and caveat: the first term bounds ``|B_t| |eps_1 - eps_2|`` whenever the constants
    do. The second replaces ``sigma_t |xi_1 - xi_2|`` (independent standard normals) by its
    typical size ``sigma_t sqrt(2n)``, which is not an upper bound: ``|xi_1 - xi_2|^2 / 2`` is
    chi-square with n degrees of freedom, so ``sqrt(2n)`` covers the noise only with
    probability ``delta_noise_coverage(n) = P(chi2_n <= n)``, about 1/2 for every n. Pass
    ``noise_quantile=q`` to use ``sigma_t sqrt(2 chi2_n.ppf(q))`` instead, which covers it
    with probability q. With ``sigma_t = 0`` (DDIM, eta = 0) the noise term vanishes and the
    bound is exact given the constants.

    Raises ValueError for negative constants or ``sigma_t``, ``n < 1``, or q outside (0, 1).
    """
    for name, v in (("L_theta", L_theta), ("L_task", L_task), ("L_t", L_t), ("sigma_t", sigma_t)):
        _require(v >= 0, name, ">= 0", v)
    _require(n >= 1, "n", ">= 1", n)
    if noise_quantile is None:
        noise = np.sqrt(2.0 * n)
    else:
        _require((noise_quantile > 0) & (noise_quantile < 1), "noise_quantile", "in (0, 1)",
                 noise_quantile)
        noise = np.sqrt(2.0 * stats.chi2.ppf(noise_quantile, n))
    return np.abs(B_t) * (L_theta * L_task + L_t) + sigma_t * noise


@_vectorised
def flow_delta_bound(L_theta, L_task, L_t, step=1.0):
    """Prop. G.1, eq. (47): ``delta <= L_theta L_T + L_t`` for two rectified-flow models stepped
    from one point z'_t by eq. (46), ``z_{t-1} = z'_t - v(z'_t, t, y)``.

    ``L_theta L_T`` bounds model 1's change with the condition, ``|v_1(z', y1) - v_1(z', y2)|``,
    and ``L_t`` the functional proximity ``|v_1(z', y2) - v_2(z', y2)|``. As printed, eq. (46)
    has no step size, so delta is the velocities' difference itself; diffusers' Euler step is
    ``z + dt v`` (``flow_schedules``), whose delta is ``|dt|`` times it: pass ``step = |dt|``
    (default 1, as printed) for the bound of the step actually taken (``delta_bound`` with
    ``B_t = dt`` and no noise). Domain: two models started from one point; Algorithm 1 starts
    them from two shifted points, which adds their distance.
    """
    for name, v in (("L_theta", L_theta), ("L_task", L_task), ("L_t", L_t), ("step", step)):
        _require(v >= 0, name, ">= 0", v)
    return step * (L_theta * L_task + L_t)


@_vectorised
def delta_noise_coverage(n):
    """``P(|xi_1 - xi_2| <= sqrt(2n)) = P(chi2_n <= n)`` for independent ``xi_i ~ N(0, I_n)``:
    how often the noise term of ``delta_bound`` covers the noise it stands for."""
    _require(n >= 1, "n", ">= 1", n)
    return stats.chi2.cdf(n, n)


# --------------------------------------------------------------------------------------------
# Lemma A.1


@_vectorised
def shell_probability_lower_bound(n, eps):
    """Lemma A.1, eq. (9): ``P(| |X| - sqrt(n) s | <= eps sqrt(n) s) >= 1 - 2 exp(-n eps^2 / (1 + 2 eps))``

    for ``X ~ N(0, s^2 I_n)``. Returns the right-hand side (independent of ``s``).

    Domain: every ``n >= 1`` and ``eps >= 0``, although the printed proof does not establish
    it: eq. (15) uses ``sqrt(1 - delta) >= 1 - delta/2``, which is false (the square root is
    the smaller), so the lower tail is not bounded as written. The conclusion is still true:
    the exact Chernoff bound of the lower tail,
    ``P(chi2_n <= (1 - eps)^2 n) <= exp(-(n/2)(-d - ln(1 - d)))`` with ``d = 2 eps - eps^2``,
    is at most ``exp(-n eps^2 / (1 + 2 eps))`` for every eps in [0, 1) (and the lower event is
    empty for eps >= 1); the upper tail step is right. The tests check the result against the
    chi law on a grid of n from 2 to 16384. The bound is vacuous (<= 0) for small ``n eps^2``.

    Raises ValueError for ``n < 1`` or ``eps < 0``.
    """
    return 1.0 - shell_miss_probability_bound.__wrapped__(n, eps)


@_vectorised
def shell_miss_probability_bound(n, eps):
    """The complement of Lemma A.1's bound, ``2 exp(-n eps^2 / (1 + 2 eps))``: an upper bound
    on the probability of falling outside the shell (compare on a log scale)."""
    _require(n >= 1, "n", ">= 1", n)
    _require(eps >= 0, "eps", ">= 0", eps)
    return 2.0 * np.exp(-n * eps**2 / (1.0 + 2.0 * eps))


@_vectorised
def shell_probability_exact(n, eps):
    """The exact probability that Lemma A.1 bounds, ``P(| |X| - sqrt(n) s | <= eps sqrt(n) s)``,
    from the chi law with n degrees of freedom (``|X| / s ~ chi_n``)."""
    return 1.0 - shell_miss_probability_exact.__wrapped__(n, eps)


@_vectorised
def shell_miss_probability_exact(n, eps):
    """``P(| |X| - sqrt(n) s | > eps sqrt(n) s)`` from the chi law, as upper tail plus lower
    tail, so that it keeps its relative accuracy when it is tiny."""
    _require(n >= 1, "n", ">= 1", n)
    _require(eps >= 0, "eps", ">= 0", eps)
    root_n = np.sqrt(n)
    upper = stats.chi.sf((1.0 + eps) * root_n, n)
    lower = np.where(eps < 1, stats.chi.cdf(np.maximum(1.0 - eps, 0.0) * root_n, n), 0.0)
    return upper + lower


# --------------------------------------------------------------------------------------------
# Proposition 3.2


def max_distance(phi, delta, w, eta):
    """Prop. 3.2: the maximum distance ``d = phi_w(phi) delta + eta`` (eqs. 31-34).

    ``phi`` the angle between ``z1 = z_{t-1}^{theta1}`` and ``z2 = z_{t-1}^{theta2}``,
    ``delta = |z1 - z2|``, ``w`` the slerp weight, ``eta`` the shift of eq. (7). Floats,
    arrays or tensors, broadcast.

    Domain: ``phi`` in [0, pi] (NaN outside). The chord identity (32)-(33),
    ``|z' - z2| = phi_w(phi) delta`` for ``z' = slerp(z1, z2, w)``, is exact when
    ``|z1| = |z2|``, and then ``|z~ - z2| <= d`` is the triangle inequality (31). With unequal
    norms ``|z' - z2|`` differs from ``phi_w(phi) delta`` and ``d`` can fall short of
    ``|z~ - z2|`` (for instance ``|z2| << |z1|`` at w = 1/2): there ``d`` is an
    approximation, not a bound (see tests/test_bounds.py for the exact region).

    Raises ValueError for ``w`` outside [0, 1], ``delta < 0`` or ``eta < 0``.
    """
    as_tensor = any(isinstance(v, torch.Tensor) for v in (phi, delta, w, eta))
    phi_, delta_, w_, eta_ = (_np(v) for v in (phi, delta, w, eta))
    _require(delta_ >= 0, "delta", ">= 0", delta_)
    _require(eta_ >= 0, "eta", ">= 0", eta_)
    out = geo.phi_w(phi_, w_) * delta_ + eta_  # phi_w checks w and gives NaN outside [0, pi]
    if as_tensor:
        return torch.from_numpy(np.asarray(out, dtype=np.float64))
    return out


@_vectorised
def prop32_effective_eps(n, eps, d, sigma):
    """The shell half-width left after moving by ``d``: ``eps - d / (sigma sqrt(n))`` (eq. 35).

    NaN where ``sigma = 0`` (a deterministic step has no shell, eq. 26 is empty) and where it
    is negative (the ball of radius ``d`` does not fit in the shell, so eq. 35 gives nothing).
    """
    _require(n >= 1, "n", ">= 1", n)
    _require(eps >= 0, "eps", ">= 0", eps)
    _require(d >= 0, "d", ">= 0", d)
    _require(sigma >= 0, "sigma", ">= 0", sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = eps - d / (sigma * np.sqrt(n))
    return np.where((sigma > 0) & (e >= 0), e, np.nan)


@_vectorised
def prop32_lower_bound(n, eps, d, sigma):
    """Prop. 3.2, eq. (8): ``P(z~ in D) >= 1 - 2 exp(-n e^2 / (1 + 2 e))``, ``e = eps - d/(sigma sqrt n)``.

    ``n`` the latent dimension, ``eps`` the half-width of model 2's shell (eq. 26), ``d`` the
    maximum distance (``max_distance``), ``sigma`` the step's noise scale ``sigma_t``.

    Domain: ``sigma > 0`` and ``e >= 0`` (NaN otherwise, see ``prop32_effective_eps``); in
    particular the bound says nothing for DDIM with eta = 0. Within it, the chain of eq. (36)
    is Lemma A.1 applied to the narrower shell, valid when ``|z~ - z2| <= d`` (equal norms,
    see ``max_distance``) and ``z2 - mu_theta2 ~ N(0, sigma^2 I)``. The bound is vacuous
    (<= 0) unless ``n e^2`` is of order 1 or more.
    """
    e = prop32_effective_eps.__wrapped__(n, eps, d, sigma)
    with np.errstate(invalid="ignore"):
        return 1.0 - 2.0 * np.exp(-n * e**2 / (1.0 + 2.0 * e))


@_vectorised
def prop32_probability_exact(n, eps, d, sigma):
    """The exact probability of the event eq. (36)'s second line bounds:
    ``P(| |z2 - mu_2| - sigma sqrt n | <= e sigma sqrt n)`` with ``e = eps - d/(sigma sqrt n)``,
    from the chi law. Same domain as ``prop32_lower_bound``."""
    e = prop32_effective_eps.__wrapped__(n, eps, d, sigma)
    ok = np.isfinite(e)
    safe = np.where(ok, e, 0.0)
    return np.where(ok, shell_probability_exact.__wrapped__(n, safe), np.nan)


def shift_shell_roots(along, dist, radius):
    """The step sizes at which eq. (7)'s move ``z~ = z' - eta u`` (``u`` a unit vector) puts z~
    on the sphere ``|z~ - c| = radius`` (a shell of eq. 26 has ``radius = sigma sqrt n``):
    ``eta = b -+ sqrt(radius^2 - (|z' - c|^2 - b^2))``, ``b = <z' - c, u>`` (``along``),
    ``|z' - c|`` (``dist``). For ``c = mu_1`` and ``u = (z' - mu_1)/|z' - mu_1|`` (eq. 7's line,
    through mu_1) the roots are ``|z' - mu_1| -+ radius``, so the larger one is positive always;
    the smaller (nearer) one is positive only when z' lies outside the sphere.

    Returns ``(low, high)`` float64 numpy arrays, NaN where the line misses the sphere; raises
    ValueError for ``radius < 0`` or ``dist < 0``.
    """
    b, r, R = (np.asarray(_np(v), dtype=np.float64) for v in (along, dist, radius))
    _require(R >= 0, "radius", ">= 0", R)
    _require(r >= 0, "dist", ">= 0", r)
    off = np.clip(r**2 - b**2, 0.0, None)  # squared distance from c to the line (>= 0 up to rounding)
    with np.errstate(invalid="ignore"):
        root = np.sqrt(R**2 - off)
    return b - root, b + root

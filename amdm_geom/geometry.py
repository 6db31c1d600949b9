"""Latent geometry of AMDM: slerp (eq. 6), successive aggregation (Algorithm 1), the radial
shift of deviation optimisation (eq. 7), and the measurements of Proposition 3.1.

Conventions (DESIGN.md):

- Inputs are batch-first latents ``z`` of shape ``(B, ...)`` (``(B, C, H, W)`` for image
  latents, ``(B, n)`` for vectors), torch tensors or numpy arrays. Every quantity is per
  sample, over all non-batch dims (``z.flatten(1)``); a norm over a whole batch is never taken.
- Geometry is computed in float64 whatever the input dtype (a float16 sum of squares over
  16384 entries overflows, NOTES.md section 5).
- Latent-valued results (``slerp``, ``lerp``, chains, ``orthogonal_mix``, ``radial_shift``)
  come back in the input's dtype and array type. Per-sample measurements (``norm``,
  ``angle``, ``norm_gap``) come back in float64, shape ``(B,)``: rounding a measurement to
  float16 would put back the very resolution floor the toolkit measures (Table 5).
- Weights ``w`` and shifts ``eta`` are a float or one value per sample, shape ``(B,)``.
- Paper references are to the current version (ICLR 2026 submission) unless said otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "ANTIPODAL_TOL",
    "angle",
    "lerp",
    "lerp_chain",
    "norm",
    "norm_gap",
    "orthogonal_mix",
    "phi_w",
    "radial_shift",
    "slerp",
    "slerp_chain",
]

#: Pairs whose angle is within this many radians of pi are treated as antipodal by ``slerp``:
#: the great circle through them is undefined at pi, and near it the coefficients of eq. (6)
#: grow like 1/(pi - phi), so the result loses about -log10(pi - phi) digits to cancellation.
ANTIPODAL_TOL = 1e-6

Latent = torch.Tensor | np.ndarray
Weight = float | torch.Tensor | np.ndarray


# --------------------------------------------------------------------------------------------
# conversion and validation


def _to64(z: Latent, name: str) -> torch.Tensor:
    """A float64 torch copy of a batch-first latent, checked for a batch dim and a float dtype."""
    if isinstance(z, np.ndarray):
        t = torch.from_numpy(z)
    elif isinstance(z, torch.Tensor):
        t = z
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray; got {type(z).__name__}")
    if t.ndim < 2:
        raise ValueError(
            f"{name} must be batch-first with at least 2 dims (B, ...); got shape {tuple(t.shape)}"
        )
    if not (t.is_floating_point()):
        raise TypeError(f"{name} must have a floating dtype; got {t.dtype}")
    if t.device.type == "mps":  # no float64 on Apple GPUs: compute on the CPU, cast back in _like
        t = t.to("cpu")
    return t.detach().to(torch.float64)


def _like(x64: torch.Tensor, ref: Latent) -> Latent:
    """Cast a float64 result back to the dtype, device and array type of ``ref``."""
    if isinstance(ref, np.ndarray):
        return x64.cpu().numpy().astype(ref.dtype, copy=False)
    return x64.to(dtype=ref.dtype, device=ref.device)


def _measure(x64: torch.Tensor, ref: Latent) -> Latent:
    """A float64 per-sample measurement, as a numpy array when ``ref`` is one."""
    return x64.cpu().numpy() if isinstance(ref, np.ndarray) else x64


def _same_shape(zs: Sequence[torch.Tensor], names: Sequence[str]) -> None:
    shapes = [tuple(z.shape) for z in zs]
    if any(s != shapes[0] for s in shapes):
        described = ", ".join(f"{n}={s}" for n, s in zip(names, shapes))
        raise ValueError(f"latents must have the same shape; got {described}")


def _per_sample(v: Weight, batch: int, name: str, lo: float, hi: float) -> torch.Tensor:
    """A (B,) float64 tensor from a float or a (B,) array, checked to lie in [lo, hi]."""
    t = torch.as_tensor(np.asarray(v) if isinstance(v, np.ndarray) else v, dtype=torch.float64)
    t = t.detach().cpu().to(torch.float64)
    if t.ndim == 0:
        t = t.expand(batch)
    elif t.shape != (batch,):
        raise ValueError(
            f"{name} must be a float or have shape ({batch},) (one per sample); "
            f"got shape {tuple(t.shape)}"
        )
    bad = ~((t >= lo) & (t <= hi))  # also catches NaN
    if bad.any():
        value = t[bad][0].item()
        accepted = f"[{lo:g}, {hi:g}]" if math.isfinite(hi) else f">= {lo:g}"
        raise ValueError(f"{name} must be {accepted}; got {value!r}")
    return t


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) tensor to broadcast against a (B, ...) tensor."""
    return v.to(like.device).reshape((-1,) + (1,) * (like.ndim - 1))


def _flat_norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x.flatten(1), dim=1)


def _sinc(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised sinc, sin(x)/x, equal to 1 at x = 0."""
    return torch.sinc(x / math.pi)


# --------------------------------------------------------------------------------------------
# measurements


def norm(z: Latent) -> Latent:
    """Per-sample Euclidean norm over all non-batch dims: ``z (B, ...) -> (B,)`` float64."""
    return _measure(_flat_norm(_to64(z, "z")), z)


def _angle64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle between float64 latents; NaN where either has zero norm."""
    u = a.flatten(1) / _flat_norm(a)[:, None]
    v = b.flatten(1) / _flat_norm(b)[:, None]
    return 2.0 * torch.atan2(_flat_norm(u - v), _flat_norm(u + v))


def angle(a: Latent, b: Latent) -> Latent:
    """Angle phi in [0, pi] between each pair of samples, ``(B, ...) x 2 -> (B,)`` float64.

    Computed as ``2 atan2(|u - v|, |u + v|)`` on the unit vectors, which is accurate at small
    angles, where ``acos`` of a cosine resolves nothing below sqrt(2 eps) (NOTES.md section 5).
    NaN where either sample has zero norm (the angle is undefined there).
    """
    a64, b64 = _to64(a, "a"), _to64(b, "b")
    _same_shape([a64, b64], ["a", "b"])
    return _measure(_angle64(a64, b64), a)


def norm_gap(a: Latent, b: Latent) -> Latent:
    """The norm gap ``| |a| - |b| |`` of Proposition 3.1, eq. (5), per sample, float64 ``(B,)``.

    Evaluated as ``|<a - b, a + b>| / (|a| + |b|)`` (the first line of eq. 17), which keeps its
    relative accuracy when the two norms nearly agree. Zero where both samples are zero.
    """
    a64, b64 = _to64(a, "a"), _to64(b, "b")
    _same_shape([a64, b64], ["a", "b"])
    num = ((a64 - b64).flatten(1) * (a64 + b64).flatten(1)).sum(dim=1).abs()
    den = _flat_norm(a64) + _flat_norm(b64)
    gap = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)
    return _measure(gap, a)


def phi_w(phi, w):
    """The chord ratio of Proposition 3.2, ``phi_w(phi) = sin((1-w) phi/2) / sin(phi/2)``.

    From eqs. (32)-(33): for two latents of equal norm at angle ``phi`` and their slerp ``z'``
    with weight ``w``, ``|z' - z2| = phi_w(phi) |z1 - z2|``. Its limit at phi -> 0 is
    ``1 - w`` (App. D.3), which this evaluation reaches smoothly (a ratio of sincs). ``phi``
    and ``w`` are floats, numpy arrays or tensors and broadcast; the result is float64 of the
    same kind. Domain phi in [0, pi] (an angle between vectors); NaN outside it.
    """
    if isinstance(phi, torch.Tensor) or isinstance(w, torch.Tensor):
        phi_t = torch.as_tensor(phi, dtype=torch.float64)
        w_t = torch.as_tensor(w, dtype=torch.float64)
        _check_unit_interval(w_t, "w")
        out = (1 - w_t) * _sinc((1 - w_t) * phi_t / 2) / _sinc(phi_t / 2)
        return torch.where((phi_t >= 0) & (phi_t <= math.pi), out, torch.nan)
    phi_a = np.asarray(phi, dtype=np.float64)
    w_a = np.asarray(w, dtype=np.float64)
    _check_unit_interval(torch.from_numpy(np.atleast_1d(w_a)), "w")
    out = (1 - w_a) * np.sinc((1 - w_a) * phi_a / (2 * np.pi)) / np.sinc(phi_a / (2 * np.pi))
    out = np.where((phi_a >= 0) & (phi_a <= np.pi), out, np.nan)
    return out if out.ndim else float(out)


def _check_unit_interval(w: torch.Tensor, name: str) -> None:
    bad = ~((w >= 0) & (w <= 1))
    if bad.any():
        raise ValueError(f"{name} must be in [0, 1]; got {w[bad].flatten()[0].item()!r}")


# --------------------------------------------------------------------------------------------
# aggregation rules


def slerp(a: Latent, b: Latent, w: Weight) -> Latent:
    """Spherical aggregation, eq. (6): ``sin((1-w) phi)/sin(phi) a + sin(w phi)/sin(phi) b``.

    ``a, b (B, ...)``; ``w`` a float or ``(B,)`` in [0, 1]; ``w = 0`` returns ``a`` and
    ``w = 1`` returns ``b`` exactly. The coefficients are evaluated as
    ``(1-w) sinc((1-w) phi) / sinc(phi)``, the same quantity, so small angles fall back
    smoothly to ``lerp`` (the limit at phi = 0) with no branch.

    Eq. (6) interpolates the raw vectors: with ``|a| = |b|`` it keeps the norm and turns the
    direction by ``w phi``; with unequal norms the result tilts towards the longer input and its
    angle to ``a`` is not ``w phi`` (Proposition 3.1 is what makes the norms nearly equal).

    Raises ValueError for a zero-norm sample (no direction) and for antipodal pairs
    (``pi - phi < ANTIPODAL_TOL``), where the great circle, hence the result, is undefined.
    """
    a64, b64 = _to64(a, "a"), _to64(b, "b")
    _same_shape([a64, b64], ["a", "b"])
    w64 = _per_sample(w, a64.shape[0], "w", 0.0, 1.0)
    return _like(_slerp64(a64, b64, w64), a)


def _slerp64(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    phi = _angle64(a, b)  # (B,)
    if torch.isnan(phi).any():
        i = int(torch.isnan(phi).nonzero()[0])
        raise ValueError(f"slerp: sample {i} has a zero-norm input, so its direction is undefined")
    if (math.pi - phi < ANTIPODAL_TOL).any():
        i = int((math.pi - phi < ANTIPODAL_TOL).nonzero()[0])
        raise ValueError(
            f"slerp: sample {i} is antipodal (phi = {phi[i].item():.10f}, pi - phi < "
            f"{ANTIPODAL_TOL:g}); the great circle through an antipodal pair is undefined"
        )
    w = w.to(phi.device)
    ca = (1 - w) * _sinc((1 - w) * phi) / _sinc(phi)
    cb = w * _sinc(w * phi) / _sinc(phi)
    return _col(ca, a) * a + _col(cb, b) * b


def lerp(a: Latent, b: Latent, w: Weight) -> Latent:
    """Linear aggregation ``(1 - w) a + w b`` (the linear baseline of Figure 5).

    Same conventions as ``slerp``: ``w = 0`` returns ``a``, ``w = 1`` returns ``b``.
    """
    a64, b64 = _to64(a, "a"), _to64(b, "b")
    _same_shape([a64, b64], ["a", "b"])
    w64 = _per_sample(w, a64.shape[0], "w", 0.0, 1.0)
    return _like(_col(1 - w64, a64) * a64 + _col(w64, b64) * b64, a)


def _chain(zs: Sequence[Latent], ws: Sequence[Weight], rule: str) -> tuple[list, list]:
    zs, ws = list(zs), list(ws)
    if len(zs) < 2:
        raise ValueError(f"{rule} needs at least 2 latents; got {len(zs)}")
    if len(ws) != len(zs) - 1:
        raise ValueError(
            f"{rule} needs len(ws) == len(zs) - 1 = {len(zs) - 1} weights for {len(zs)} "
            f"latents; got {len(ws)}"
        )
    z64 = [_to64(z, f"zs[{i}]") for i, z in enumerate(zs)]
    _same_shape(z64, [f"zs[{i}]" for i in range(len(zs))])
    batch = z64[0].shape[0]
    w64 = [_per_sample(w, batch, f"ws[{i}]", 0.0, 1.0) for i, w in enumerate(ws)]
    return z64, w64


def slerp_chain(zs: Sequence[Latent], ws: Sequence[Weight]) -> Latent:
    """Algorithm 1's N-model aggregation by successive pairwise slerp.

    ``z' = slerp(...slerp(slerp(z1, z2, w1), z3, w2)..., zN, w_{N-1})``; ``zs`` is a sequence
    of N latents ``(B, ...)`` and ``ws`` of N - 1 weights. The pairwise folding is done in
    float64 throughout, then cast to the dtype of ``zs[0]``.
    """
    z64, w64 = _chain(zs, ws, "slerp_chain")
    acc = z64[0]
    for z, w in zip(z64[1:], w64):
        acc = _slerp64(acc, z, w)
    return _like(acc, zs[0])


def lerp_chain(zs: Sequence[Latent], ws: Sequence[Weight]) -> Latent:
    """Successive pairwise ``lerp``, the linear counterpart of ``slerp_chain``."""
    z64, w64 = _chain(zs, ws, "lerp_chain")
    acc = z64[0]
    for z, w in zip(z64[1:], w64):
        acc = _col(1 - w, acc) * acc + _col(w, z) * z
    return _like(acc, zs[0])


def orthogonal_mix(zs: Sequence[Latent], ws: Sequence[Weight]) -> Latent:
    """The earlier version's aggregation, eq. (9) there: ``x' = w x1 + sqrt(1 - w^2) x2``.

    It is slerp under the assumption that the inputs are orthogonal and of equal norm; note that
    ``w`` weighs model 1 here, whereas in the current version's eq. (6) ``w`` weighs model 2.
    For N models it is applied successively,
    ``x' = w_{N-1} (... (w1 x1 + sqrt(1-w1^2) x2) ...) + sqrt(1 - w_{N-1}^2) xN``, so model k
    (k >= 2) gets ``sqrt(1 - w_{k-1}^2) w_k ... w_{N-1}`` and the squared weights sum to 1.
    The earlier version's printed N-model formula (its Algorithm 2) instead gives the last
    model ``sqrt(1-w1^2) ... sqrt(1-w_{N-1}^2)``; for N >= 3 its squared weights do not sum
    to 1, so it is not implemented here.
    """
    z64, w64 = _chain(zs, ws, "orthogonal_mix")
    acc = z64[0]
    for z, w in zip(z64[1:], w64):
        acc = _col(w, acc) * acc + _col(torch.sqrt(1 - w * w), z) * z
    return _like(acc, zs[0])


# --------------------------------------------------------------------------------------------
# deviation optimisation


def radial_shift(z: Latent, mu: Latent, eta: Weight) -> Latent:
    """Deviation optimisation, eq. (7): ``z~ = z - eta (z - mu) / |z - mu|``.

    Moves ``z (B, ...)`` by ``eta`` along the ray from ``mu (B, ...)`` through ``z``, towards
    ``mu`` (``eta`` a float or ``(B,)``, >= 0, in absolute units of latent norm, as in the
    paper: eta = 0.3 in the current version, 35-55 in the earlier one). For ``eta < |z - mu|``
    the distance to ``mu`` drops by exactly ``eta``; a larger ``eta`` carries the point past
    ``mu``. Where ``z == mu`` the direction is undefined and ``z`` comes back unchanged.
    """
    z64, mu64 = _to64(z, "z"), _to64(mu, "mu")
    _same_shape([z64, mu64], ["z", "mu"])
    eta64 = _per_sample(eta, z64.shape[0], "eta", 0.0, math.inf)
    d = z64 - mu64
    r = _flat_norm(d)  # (B,)
    step = torch.where(r > 0, eta64.to(r.device) / torch.where(r > 0, r, 1.0), 0.0)
    return _like(z64 - _col(step, d) * d, z)

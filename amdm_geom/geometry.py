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
- Non-finite values (issue 10, "NaN never becomes a number"): a sample with a NaN or inf
  entry in any latent input is undefined, per sample. Measurements give NaN for it and
  latent-valued results give an all-NaN sample; the other samples of the batch come out as if
  it were absent. Never an error for it, never a finite number. A non-finite *parameter*
  (``w``, ``eta``) can only be a mistake and raises ValueError saying "non-finite".
- Finite latents give finite latents or an error: norms are taken with a per-sample
  power-of-two rescaling (bit-identical to the plain sum of squares wherever that neither
  over- nor underflows), and a finite result that does not fit the input's dtype (a float16
  value that would round to inf, 65520 or more) raises OverflowError instead of coming back
  as inf. (Only ``norm`` of a float64 sample whose norm is truly beyond 1.8e308 gives inf.)
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


def _like(x64: torch.Tensor, ref: Latent, fn: str) -> Latent:
    """Cast a float64 result back to the dtype, device and array type of ``ref``.

    A finite value that the cast would round to inf (a float16 value of magnitude >= 65520,
    say) raises OverflowError naming ``fn``, the dtype and its largest finite value.
    """
    if isinstance(ref, np.ndarray):
        if ref.dtype != np.float64:
            info = np.finfo(ref.dtype)
            x64 = _fit(x64, float(info.max), float(info.eps), fn, f"numpy.{ref.dtype}")
        return x64.cpu().numpy().astype(ref.dtype, copy=False)
    if ref.dtype != torch.float64:
        info = torch.finfo(ref.dtype)
        x64 = _fit(x64, float(info.max), float(info.eps), fn, str(ref.dtype))
    return x64.to(dtype=ref.dtype).to(device=ref.device)


def _fit(x64: torch.Tensor, top: float, eps: float, fn: str, dtype: str) -> torch.Tensor:
    """Check that finite ``x64`` rounds to a finite value of a dtype whose largest is ``top``.

    Round to nearest sends ``|x| >= top + half a step at top`` to inf (65520 for float16): that
    raises. Below it, clamping to ``top`` gives what correct rounding gives, and keeps a cast
    that rounds twice (float64 -> float32 -> float16) from reaching inf.
    """
    limit = top + math.ldexp(eps, math.frexp(top)[1] - 2)  # top + eps * 2^floor(log2 top) / 2
    over = x64.abs() >= limit  # False for NaN (the non-finite samples)
    if over.any():
        i = int(over.flatten(1).any(dim=1).nonzero()[0])
        worst = x64[i][over[i]].abs().max().item()
        raise OverflowError(
            f"{fn}: sample {i} has a finite result of magnitude {worst:.6g}, beyond the largest "
            f"finite {dtype} ({top:.6g}); pass the inputs in a wider dtype"
        )
    return x64.clamp(-top, top)


def _measure(x64: torch.Tensor, ref: Latent) -> Latent:
    """A float64 per-sample measurement, as a numpy array when ``ref`` is one."""
    return x64.cpu().numpy() if isinstance(ref, np.ndarray) else x64


def _same_shape(zs: Sequence[torch.Tensor], names: Sequence[str]) -> None:
    shapes = [tuple(z.shape) for z in zs]
    if any(s != shapes[0] for s in shapes):
        described = ", ".join(f"{n}={s}" for n, s in zip(names, shapes))
        raise ValueError(f"latents must have the same shape; got {described}")


def _check_range(t: torch.Tensor, name: str, lo: float, hi: float, per_sample: bool) -> None:
    """Raise a one-line ValueError unless every value of ``t`` is finite and in [lo, hi]."""
    accepted = f"in [{lo:g}, {hi:g}]" if math.isfinite(hi) else f"finite and >= {lo:g}"
    finite = torch.isfinite(t)
    bad = ~(finite & (t >= lo) & (t <= hi))
    if not bad.any():
        return
    flat_bad, flat_finite = bad.flatten(), finite.flatten()
    nonfinite = flat_bad & ~flat_finite
    i = int((nonfinite if nonfinite.any() else flat_bad).nonzero()[0])  # report a non-finite first
    value = t.flatten()[i].item()
    got = f"non-finite {value!r}" if not flat_finite[i] else repr(value)
    where = f" (sample {i})" if per_sample else ""
    raise ValueError(f"{name} must be {accepted}; got {got}{where}")


def _per_sample(v: Weight, batch: int, name: str, lo: float, hi: float) -> torch.Tensor:
    """A (B,) float64 tensor from a float or a (B,) array, checked to be finite and in [lo, hi]."""
    t = torch.as_tensor(v, dtype=torch.float64).detach().cpu()
    per_sample = t.ndim > 0
    if t.ndim == 0:
        t = t.expand(batch)
    elif t.shape != (batch,):
        raise ValueError(
            f"{name} must be a float or have shape ({batch},) (one per sample); "
            f"got shape {tuple(t.shape)}"
        )
    _check_range(t, name, lo, hi, per_sample)
    return t


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) tensor to broadcast against a (B, ...) tensor."""
    return v.to(like.device).reshape((-1,) + (1,) * (like.ndim - 1))


def _nonfinite(*xs: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the samples with a NaN or inf entry in any of ``xs``."""
    bad = ~torch.isfinite(xs[0].flatten(1)).all(dim=1)
    for x in xs[1:]:
        bad |= ~torch.isfinite(x.flatten(1)).all(dim=1)
    return bad


def _pow2_scale(*xs: torch.Tensor) -> torch.Tensor:
    """(B,) float64 powers of two ``s`` with ``max |x| / s`` in [1, 2) per sample, over all ``xs``
    (``s`` kept within [2^-1022, 2^1023], so a zero or subnormal maximum gets less than that).

    Dividing by ``s`` is exact (barring subnormals), so a computation done on ``x / s`` and
    scaled back by ``s`` gives the same bits as the plain one wherever that does not overflow or
    underflow, and stays finite where the plain one would not (norms of float64 latents with
    entries beyond 1e154). ``s = 1`` for samples that are not finite (their results are NaN).
    """
    m = torch.zeros(xs[0].shape[0], dtype=torch.float64, device=xs[0].device)
    for x in xs:
        if x.flatten(1).shape[1]:  # amax of an empty row is an error
            m = torch.maximum(m, x.flatten(1).abs().amax(dim=1))
    finite = torch.isfinite(m)
    _, e = torch.frexp(torch.where(finite, m, 0.0))  # m in [2^(e-1), 2^e)
    k = torch.where(finite, (e.to(torch.int64) - 1).clamp(-1022, 1023), 0)
    return ((k + 1023) << 52).view(torch.float64)  # 2^k, built from its bits: exact


def _flat_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norm of a float64 tensor, safe from over- and underflow."""
    s = _pow2_scale(x)
    return s * torch.linalg.vector_norm((x / _col(s, x)).flatten(1), dim=1)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """``x / |x|`` per sample, flattened to (B, n); NaN rows where ``x`` is zero or non-finite."""
    xs = x / _col(_pow2_scale(x), x)
    return xs.flatten(1) / torch.linalg.vector_norm(xs.flatten(1), dim=1)[:, None]


def _settle(out: torch.Tensor, bad: torch.Tensor, fn: str) -> torch.Tensor:
    """Blank the non-finite samples of a float64 result to NaN; raise if a finite one overflowed."""
    out = torch.where(_col(bad, out), torch.nan, out)
    over = ~bad & ~torch.isfinite(out.flatten(1)).all(dim=1)
    if over.any():
        i = int(over.nonzero()[0])
        raise OverflowError(
            f"{fn}: sample {i} has finite inputs but its result exceeds the float64 range "
            f"(largest finite {torch.finfo(torch.float64).max:.6g})"
        )
    return out


def _sinc(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised sinc, sin(x)/x, equal to 1 at x = 0."""
    return torch.sinc(x / math.pi)


# --------------------------------------------------------------------------------------------
# measurements


def norm(z: Latent) -> Latent:
    """Per-sample Euclidean norm over all non-batch dims: ``z (B, ...) -> (B,)`` float64.

    NaN for a sample with a NaN or inf entry. (A finite float64 sample whose norm exceeds the
    float64 range, about 1.8e308, gives inf: there is no closer float64.)
    """
    z64 = _to64(z, "z")
    return _measure(torch.where(_nonfinite(z64), torch.nan, _flat_norm(z64)), z)


def _angle64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle between float64 latents; NaN where either has zero norm or is not finite."""
    u, v = _unit(a), _unit(b)
    phi = 2.0 * torch.atan2(torch.linalg.vector_norm(u - v, dim=1), torch.linalg.vector_norm(u + v, dim=1))
    return torch.where(_nonfinite(a, b), torch.nan, phi)


def angle(a: Latent, b: Latent) -> Latent:
    """Angle phi in [0, pi] between each pair of samples, ``(B, ...) x 2 -> (B,)`` float64.

    Computed as ``2 atan2(|u - v|, |u + v|)`` on the unit vectors, which is accurate at small
    angles, where ``acos`` of a cosine resolves nothing below sqrt(2 eps) (NOTES.md section 5).
    NaN where either sample has zero norm (the angle is undefined there) or a NaN or inf entry.
    """
    a64, b64 = _to64(a, "a"), _to64(b, "b")
    _same_shape([a64, b64], ["a", "b"])
    return _measure(_angle64(a64, b64), a)


def norm_gap(a: Latent, b: Latent) -> Latent:
    """The norm gap ``| |a| - |b| |`` of Proposition 3.1, eq. (5), per sample, float64 ``(B,)``.

    Evaluated as ``|<a - b, a + b>| / (|a| + |b|)`` (the first line of eq. 17), which keeps its
    relative accuracy when the two norms nearly agree. Zero where both samples are zero; NaN
    where either sample has a NaN or inf entry (the gap is unknown there, not zero).
    """
    a64, b64 = _to64(a, "a"), _to64(b, "b")
    _same_shape([a64, b64], ["a", "b"])
    s = _pow2_scale(a64, b64)  # a common scale: the ratio below is unchanged by it
    a_s, b_s = a64 / _col(s, a64), b64 / _col(s, b64)
    num = ((a_s - b_s).flatten(1) * (a_s + b_s).flatten(1)).sum(dim=1).abs()
    den = _flat_norm(a_s) + _flat_norm(b_s)
    gap = s * torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)
    return _measure(torch.where(_nonfinite(a64, b64), torch.nan, gap), a)


def phi_w(phi, w):
    """The chord ratio of Proposition 3.2, ``phi_w(phi) = sin((1-w) phi/2) / sin(phi/2)``.

    From eqs. (32)-(33): for two latents of equal norm at angle ``phi`` and their slerp ``z'``
    with weight ``w``, ``|z' - z2| = phi_w(phi) |z1 - z2|``. Its limit at phi -> 0 is
    ``1 - w`` (App. D.3), which this evaluation reaches smoothly (a ratio of sincs). ``phi``
    and ``w`` are floats, numpy arrays or tensors and broadcast; the result is float64 of the
    same kind. Domain phi in [0, pi] (an angle between vectors); NaN outside it, including a NaN
    or infinite ``phi``. A ``w`` that is non-finite or outside [0, 1] raises ValueError.
    """
    if isinstance(phi, torch.Tensor) or isinstance(w, torch.Tensor):
        phi_t = torch.as_tensor(phi, dtype=torch.float64)
        w_t = torch.as_tensor(w, dtype=torch.float64)
        _check_unit_interval(w_t, "w")
        inside = (phi_t >= 0) & (phi_t <= math.pi)
        phi_t = torch.where(inside, phi_t, 0.0)
        out = (1 - w_t) * _sinc((1 - w_t) * phi_t / 2) / _sinc(phi_t / 2)
        return torch.where(inside, out, torch.nan)
    phi_a = np.asarray(phi, dtype=np.float64)
    w_a = np.asarray(w, dtype=np.float64)
    _check_unit_interval(torch.from_numpy(np.atleast_1d(w_a)), "w")
    with np.errstate(invalid="ignore"):  # NaN phi: comparisons are False, no warning wanted
        inside = (phi_a >= 0) & (phi_a <= np.pi)
    phi_a = np.where(inside, phi_a, 0.0)  # sinc(inf) would warn; the value is NaN'd below
    out = (1 - w_a) * np.sinc((1 - w_a) * phi_a / (2 * np.pi)) / np.sinc(phi_a / (2 * np.pi))
    out = np.where(inside, out, np.nan)
    return out if out.ndim else float(out)


def _check_unit_interval(w: torch.Tensor, name: str) -> None:
    _check_range(w, name, 0.0, 1.0, per_sample=False)


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

    A sample with a NaN or inf entry in ``a`` or ``b`` comes back all NaN (whatever ``w``), the
    others as if it were absent. Raises ValueError for a ``w`` that is non-finite or outside
    [0, 1], for a finite zero-norm sample (no direction) and for antipodal pairs
    (``pi - phi < ANTIPODAL_TOL``), where the great circle, hence the result, is undefined;
    OverflowError where a finite result does not fit the input's dtype.
    """
    a64, b64 = _to64(a, "a"), _to64(b, "b")
    _same_shape([a64, b64], ["a", "b"])
    w64 = _per_sample(w, a64.shape[0], "w", 0.0, 1.0)
    return _like(_slerp64(a64, b64, w64, "slerp", _nonfinite(a64, b64)), a, "slerp")


def _slerp64(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, fn: str, bad: torch.Tensor) -> torch.Tensor:
    """Eq. (6) in float64; ``bad`` marks samples known to be undefined (a non-finite input
    anywhere in a chain): they come back NaN and are exempt from the zero-norm and antipodal
    checks, as are samples with a non-finite entry in ``a`` or ``b``."""
    bad = bad | _nonfinite(a, b)
    s = _pow2_scale(a, b)  # common power-of-two scale: exact, keeps |a|, |b| in float64 range
    a, b = a / _col(s, a), b / _col(s, b)
    zero = ~bad & ((_flat_norm(a) == 0) | (_flat_norm(b) == 0))
    if zero.any():
        i = int(zero.nonzero()[0])
        raise ValueError(f"{fn}: sample {i} has a zero-norm input, so its direction is undefined")
    phi = _angle64(a, b)  # (B,), NaN exactly on the bad samples
    antipodal = math.pi - phi < ANTIPODAL_TOL  # False for NaN
    if antipodal.any():
        i = int(antipodal.nonzero()[0])
        raise ValueError(
            f"{fn}: sample {i} is antipodal (phi = {phi[i].item():.10f}, pi - phi < "
            f"{ANTIPODAL_TOL:g}); the great circle through an antipodal pair is undefined"
        )
    phi = torch.where(bad, 0.0, phi)
    w = w.to(phi.device)
    ca = (1 - w) * _sinc((1 - w) * phi) / _sinc(phi)
    cb = w * _sinc(w * phi) / _sinc(phi)
    return _settle(_col(s, a) * (_col(ca, a) * a + _col(cb, b) * b), bad, fn)


def lerp(a: Latent, b: Latent, w: Weight) -> Latent:
    """Linear aggregation ``(1 - w) a + w b`` (the linear baseline of Figure 5).

    Same conventions as ``slerp``: ``w = 0`` returns ``a``, ``w = 1`` returns ``b``; a sample
    with a NaN or inf entry in ``a`` or ``b`` comes back all NaN (even where its weight is 0),
    and a ``w`` that is non-finite or outside [0, 1] raises ValueError.
    """
    a64, b64 = _to64(a, "a"), _to64(b, "b")
    _same_shape([a64, b64], ["a", "b"])
    w64 = _per_sample(w, a64.shape[0], "w", 0.0, 1.0)
    return _like(_lerp64(a64, b64, w64, "lerp", _nonfinite(a64, b64)), a, "lerp")


def _lerp64(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, fn: str, bad: torch.Tensor) -> torch.Tensor:
    return _settle(_col(1 - w, a) * a + _col(w, b) * b, bad | _nonfinite(a, b), fn)


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
    float64 throughout, then cast to the dtype of ``zs[0]``. A sample with a NaN or inf entry
    in any of the ``zs`` comes back all NaN; errors as for ``slerp``.
    """
    z64, w64 = _chain(zs, ws, "slerp_chain")
    bad = _nonfinite(*z64)  # undefined from the start: no zero-norm error for them midway
    acc = z64[0]
    for z, w in zip(z64[1:], w64):
        acc = _slerp64(acc, z, w, "slerp_chain", bad)
    return _like(acc, zs[0], "slerp_chain")


def lerp_chain(zs: Sequence[Latent], ws: Sequence[Weight]) -> Latent:
    """Successive pairwise ``lerp``, the linear counterpart of ``slerp_chain``.

    A sample with a NaN or inf entry in any of the ``zs`` comes back all NaN.
    """
    z64, w64 = _chain(zs, ws, "lerp_chain")
    bad = _nonfinite(*z64)
    acc = z64[0]
    for z, w in zip(z64[1:], w64):
        acc = _lerp64(acc, z, w, "lerp_chain", bad)
    return _like(acc, zs[0], "lerp_chain")


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

    A sample with a NaN or inf entry in any of the ``zs`` comes back all NaN; a weight that is
    non-finite or outside [0, 1] raises ValueError; OverflowError where a finite result does
    not fit the dtype of ``zs[0]`` (the mix can exceed its inputs by up to sqrt(2) per step).
    """
    z64, w64 = _chain(zs, ws, "orthogonal_mix")
    bad = _nonfinite(*z64)
    acc = z64[0]
    for z, w in zip(z64[1:], w64):
        mixed = _col(w, acc) * acc + _col(torch.sqrt(1 - w * w), z) * z
        acc = _settle(mixed, bad | _nonfinite(acc, z), "orthogonal_mix")
    return _like(acc, zs[0], "orthogonal_mix")


# --------------------------------------------------------------------------------------------
# deviation optimisation


def radial_shift(z: Latent, mu: Latent, eta: Weight) -> Latent:
    """Deviation optimisation, eq. (7): ``z~ = z - eta (z - mu) / |z - mu|``.

    Moves ``z (B, ...)`` by ``eta`` along the ray from ``mu (B, ...)`` through ``z``, towards
    ``mu`` (``eta`` a float or ``(B,)``, finite and >= 0, in absolute units of latent norm, as
    in the paper: eta = 0.3 in the current version, 35-55 in the earlier one). For
    ``eta < |z - mu|`` the distance to ``mu`` drops by exactly ``eta``; a larger ``eta`` carries
    the point past ``mu``. Where ``z == mu`` the direction is undefined and ``z`` comes back
    unchanged.

    A sample with a NaN or inf entry in ``z`` or ``mu`` comes back all NaN (even with
    ``eta = 0``). An ``eta`` that is NaN, infinite or negative raises ValueError;
    OverflowError where a finite result does not fit the dtype of ``z``.
    """
    z64, mu64 = _to64(z, "z"), _to64(mu, "mu")
    _same_shape([z64, mu64], ["z", "mu"])
    eta64 = _per_sample(eta, z64.shape[0], "eta", 0.0, math.inf)
    bad = _nonfinite(z64, mu64)
    s = _pow2_scale(z64, mu64)  # (eta / |d|) d == (eta / |d/s|) (d/s): exact, no overflow in d
    d = z64 / _col(s, z64) - mu64 / _col(s, mu64)
    r = _flat_norm(d)  # (B,)
    step = torch.where(r > 0, eta64.to(r.device) / torch.where(r > 0, r, 1.0), 0.0)
    return _like(_settle(z64 - _col(step, d) * d, bad, "radial_shift"), z, "radial_shift")

"""Latent geometry of AMDM: slerp (eq. 6), successive aggregation (Algorithm 1), the radial
shift of deviation optimisation (eq. 7), and the measurements of Proposition 3.1.

Conventions:

- Inputs are batch-first latents ``z`` of shape ``(B, ...)`` (``(B, C, H, W)`` for image
  latents, ``(B, n)`` for vectors), torch tensors or numpy arrays. Every quantity is per
  sample, over all non-batch dims (``z.flatten(1)``); a norm over a whole batch is never taken.
- Geometry is computed in float64 whatever the input dtype (a float16 sum of squares over
  16384 entries overflows).
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

The float64 machinery (conversion, checks, non-finite samples, overflow-safe norms) lives in
the private module ``amdm_geom.core.latent64``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from amdm_geom.core import latent64 as f64
from amdm_geom.core.latent64 import Latent, Weight

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


# --------------------------------------------------------------------------------------------
# measurements


def norm(z: Latent) -> Latent:
    """Per-sample Euclidean norm over all non-batch dims: ``z (B, ...) -> (B,)`` float64.

    NaN for a sample with a NaN or inf entry. (A finite float64 sample whose norm exceeds the
    float64 range, about 1.8e308, gives inf: there is no closer float64.)
    """
    z64 = f64.to64(z, "z")
    return f64.measure(torch.where(f64.nonfinite(z64), torch.nan, f64.flat_norm(z64)), z)


def angle(a: Latent, b: Latent) -> Latent:
    """Angle phi in [0, pi] between each pair of samples, ``(B, ...) x 2 -> (B,)`` float64.

    Computed as ``2 atan2(|u - v|, |u + v|)`` on the unit vectors, which is accurate at small
    angles, where ``acos`` of a cosine resolves nothing below sqrt(2 eps).
    NaN where either sample has zero norm (the angle is undefined there) or a NaN or inf entry.
    """
    a64, b64 = f64.to64(a, "a"), f64.to64(b, "b")
    f64.same_shape([a64, b64], ["a", "b"])
    return f64.measure(f64.angle64(a64, b64), a)


def norm_gap(a: Latent, b: Latent) -> Latent:
    """The norm gap ``| |a| - |b| |`` of Proposition 3.1, eq. (5), per sample, float64 ``(B,)``.

    Evaluated as ``|<a - b, a + b>| / (|a| + |b|)`` (the first line of eq. 17), which keeps its
    relative accuracy when the two norms nearly agree. Zero where both samples are zero; NaN
    where either sample has a NaN or inf entry (the gap is unknown there, not zero).
    """
    a64, b64 = f64.to64(a, "a"), f64.to64(b, "b")
    f64.same_shape([a64, b64], ["a", "b"])
    s = f64.pow2_scale(a64, b64)  # a common scale: the ratio below is unchanged by it
    a_s, b_s = a64 / f64.col(s, a64), b64 / f64.col(s, b64)
    num = ((a_s - b_s).flatten(1) * (a_s + b_s).flatten(1)).sum(dim=1).abs()
    den = f64.flat_norm(a_s) + f64.flat_norm(b_s)
    gap = s * torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)
    return f64.measure(torch.where(f64.nonfinite(a64, b64), torch.nan, gap), a)


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
        out = (1 - w_t) * f64.sinc((1 - w_t) * phi_t / 2) / f64.sinc(phi_t / 2)
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
    f64.check_range(w, name, 0.0, 1.0, per_sample=False)


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
    a64, b64 = f64.to64(a, "a"), f64.to64(b, "b")
    f64.same_shape([a64, b64], ["a", "b"])
    w64 = f64.per_sample(w, a64.shape[0], "w", 0.0, 1.0)
    out, m = _slerp64(a64, b64, w64, "slerp", f64.nonfinite(a64, b64))
    return f64.like(out, a, "slerp", m)


def _slerp64(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, fn: str, bad: torch.Tensor,
             ma: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (6) in float64; ``bad`` marks samples known to be undefined (a non-finite input
    anywhere in a chain): they come back NaN and are exempt from the zero-norm and antipodal
    checks, as are samples with a non-finite entry in ``a`` or ``b``. Returns the result and its
    per-sample ``amax_abs`` (``ma`` is that of ``a`` when known: a chain passes it along)."""
    ma = f64.amax_abs(a) if ma is None else ma
    mb = f64.amax_abs(b)  # (B,) one reduction each: finiteness, scale, zero norm
    bad = bad | ~torch.isfinite(ma) | ~torch.isfinite(mb)
    s = f64.pow2_scale(a, b, maxima=(ma, mb))  # common power-of-two scale: exact, keeps |a|, |b| in range
    a, b = a / f64.col(s, a), b / f64.col(s, b)
    zero = ~bad & ((ma == 0) | (mb == 0))  # |x| = 0 exactly when max |x| = 0 (also after the exact scaling)
    if zero.any():
        i = int(zero.nonzero()[0])
        raise ValueError(f"{fn}: sample {i} has a zero-norm input, so its direction is undefined")
    phi = f64.angle64(a, b, maxima=(ma / s, mb / s))  # (B,), NaN exactly where a or b is not finite
    antipodal = math.pi - phi < ANTIPODAL_TOL  # False for NaN
    if antipodal.any():
        i = int(antipodal.nonzero()[0])
        raise ValueError(
            f"{fn}: sample {i} is antipodal (phi = {phi[i].item():.10f}, pi - phi < "
            f"{ANTIPODAL_TOL:g}); the great circle through an antipodal pair is undefined"
        )
    phi = torch.where(bad, 0.0, phi)
    w = w.to(phi.device)
    ca = (1 - w) * f64.sinc((1 - w) * phi) / f64.sinc(phi)
    cb = w * f64.sinc(w * phi) / f64.sinc(phi)
    out = a.mul(f64.col(ca, a))
    out += b.mul(f64.col(cb, b))
    out *= f64.col(s, a)
    return f64.settled(out, bad, fn)


def lerp(a: Latent, b: Latent, w: Weight) -> Latent:
    """Linear aggregation ``(1 - w) a + w b`` (the linear baseline of Figure 5).

    Same conventions as ``slerp``: ``w = 0`` returns ``a``, ``w = 1`` returns ``b``; a sample
    with a NaN or inf entry in ``a`` or ``b`` comes back all NaN (even where its weight is 0),
    and a ``w`` that is non-finite or outside [0, 1] raises ValueError.
    """
    a64, b64 = f64.to64(a, "a"), f64.to64(b, "b")
    f64.same_shape([a64, b64], ["a", "b"])
    w64 = f64.per_sample(w, a64.shape[0], "w", 0.0, 1.0)
    return f64.like(_lerp64(a64, b64, w64, "lerp", f64.nonfinite(a64, b64)), a, "lerp")


def _lerp64(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, fn: str, bad: torch.Tensor) -> torch.Tensor:
    return f64.settle(f64.col(1 - w, a) * a + f64.col(w, b) * b, bad | f64.nonfinite(a, b), fn)


def _chain(zs: Sequence[Latent], ws: Sequence[Weight], rule: str) -> tuple[list, list]:
    zs, ws = list(zs), list(ws)
    if len(zs) < 2:
        raise ValueError(f"{rule} needs at least 2 latents; got {len(zs)}")
    if len(ws) != len(zs) - 1:
        raise ValueError(
            f"{rule} needs len(ws) == len(zs) - 1 = {len(zs) - 1} weights for {len(zs)} "
            f"latents; got {len(ws)}"
        )
    z64 = [f64.to64(z, f"zs[{i}]") for i, z in enumerate(zs)]
    f64.same_shape(z64, [f"zs[{i}]" for i in range(len(zs))])
    batch = z64[0].shape[0]
    w64 = [f64.per_sample(w, batch, f"ws[{i}]", 0.0, 1.0) for i, w in enumerate(ws)]
    return z64, w64


def slerp_chain(zs: Sequence[Latent], ws: Sequence[Weight]) -> Latent:
    """Algorithm 1's N-model aggregation by successive pairwise slerp.

    ``z' = slerp(...slerp(slerp(z1, z2, w1), z3, w2)..., zN, w_{N-1})``; ``zs`` is a sequence
    of N latents ``(B, ...)`` and ``ws`` of N - 1 weights. The pairwise folding is done in
    float64 throughout, then cast to the dtype of ``zs[0]``. A sample with a NaN or inf entry
    in any of the ``zs`` comes back all NaN; errors as for ``slerp``.
    """
    z64, w64 = _chain(zs, ws, "slerp_chain")
    bad = f64.nonfinite(*z64)  # undefined from the start: no zero-norm error for them midway
    acc, m = z64[0], None
    for z, w in zip(z64[1:], w64):
        acc, m = _slerp64(acc, z, w, "slerp_chain", bad, m)
    return f64.like(acc, zs[0], "slerp_chain", m)


def lerp_chain(zs: Sequence[Latent], ws: Sequence[Weight]) -> Latent:
    """Successive pairwise ``lerp``, the linear counterpart of ``slerp_chain``.

    A sample with a NaN or inf entry in any of the ``zs`` comes back all NaN.
    """
    z64, w64 = _chain(zs, ws, "lerp_chain")
    bad = f64.nonfinite(*z64)
    acc = z64[0]
    for z, w in zip(z64[1:], w64):
        acc = _lerp64(acc, z, w, "lerp_chain", bad)
    return f64.like(acc, zs[0], "lerp_chain")


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
    bad = f64.nonfinite(*z64)
    acc = z64[0]
    for z, w in zip(z64[1:], w64):
        mixed = f64.col(w, acc) * acc + f64.col(torch.sqrt(1 - w * w), z) * z
        acc = f64.settle(mixed, bad | f64.nonfinite(acc, z), "orthogonal_mix")
    return f64.like(acc, zs[0], "orthogonal_mix")


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
    z64, mu64 = f64.to64(z, "z"), f64.to64(mu, "mu")
    f64.same_shape([z64, mu64], ["z", "mu"])
    eta64 = f64.per_sample(eta, z64.shape[0], "eta", 0.0, math.inf)
    mz, mm = f64.amax_abs(z64), f64.amax_abs(mu64)  # (B,) one pass each: finiteness and scale
    bad = ~torch.isfinite(mz) | ~torch.isfinite(mm)
    s = f64.pow2_scale(z64, mu64, maxima=(mz, mm))  # (eta / |d|) d == (eta / |d/s|) (d/s): exact
    d = z64 / f64.col(s, z64)
    d -= mu64 / f64.col(s, mu64)
    r = f64.flat_norm(d)  # (B,)
    step = torch.where(r > 0, eta64.to(r.device) / torch.where(r > 0, r, 1.0), 0.0)
    d *= f64.col(step, d)
    out, m = f64.settled(torch.sub(z64, d, out=d), bad, "radial_shift")
    return f64.like(out, z, "radial_shift", m)

"""The float64 machinery behind ``amdm_geom.core.geometry`` and ``amdm_geom.core.bounds``: conversion of
batch-first latents ``z (B, ...)`` to float64 and back, argument checks with one-line errors,
the samples with non-finite entries, and norms that neither over- nor underflow.

Conventions are the ones stated in ``amdm_geom.core.geometry``: per-sample quantities over all
non-batch dims (``z.flatten(1)``), float64 throughout; a finite result that does not fit the
input's dtype raises OverflowError; a sample with a NaN or inf entry gives NaN, never an error
and never a finite number. Private to the core layer: its names may change with geometry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

Latent = torch.Tensor | np.ndarray
Weight = float | torch.Tensor | np.ndarray


def to64(z: Latent, name: str) -> torch.Tensor:
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
    if t.device.type == "mps":  # no float64 on Apple GPUs: compute on the CPU, cast back in like
        t = t.to("cpu")
    return t.detach().to(torch.float64)


def like(x64: torch.Tensor, ref: Latent, fn: str, maxima: torch.Tensor | None = None) -> Latent:
    """Cast a float64 result back to the dtype, device and array type of ``ref``.

    A finite value that the cast would round to inf (a float16 value of magnitude >= 65520,
    say) raises OverflowError naming ``fn``, the dtype and its largest finite value.
    """
    if isinstance(ref, np.ndarray):
        if ref.dtype != np.float64:
            info = np.finfo(ref.dtype)
            x64 = fit(x64, float(info.max), float(info.eps), fn, f"numpy.{ref.dtype}", maxima)
        return x64.cpu().numpy().astype(ref.dtype, copy=False)
    if ref.dtype != torch.float64:
        info = torch.finfo(ref.dtype)
        x64 = fit(x64, float(info.max), float(info.eps), fn, str(ref.dtype), maxima)
    return x64.to(dtype=ref.dtype).to(device=ref.device)


def fit(x64: torch.Tensor, top: float, eps: float, fn: str, dtype: str,
        maxima: torch.Tensor | None = None) -> torch.Tensor:
    """Check that finite ``x64`` rounds to a finite value of a dtype whose largest is ``top``.

    Round to nearest sends ``|x| >= top + half a step at top`` to inf (65520 for float16): that
    raises. Below it, clamping to ``top`` gives what correct rounding gives, and keeps a cast
    that rounds twice (float64 -> float32 -> float16) from reaching inf.
    """
    limit = top + math.ldexp(eps, math.frexp(top)[1] - 2)  # top + eps * 2^floor(log2 top) / 2
    m = amax_abs(x64) if maxima is None else maxima  # (B,) per-sample max |x|; NaN rows compare False
    over = m >= limit
    if over.any():
        i = int(over.nonzero()[0])
        worst = m[i].item()
        raise OverflowError(
            f"{fn}: sample {i} has a finite result of magnitude {worst:.6g}, beyond the largest "
            f"finite {dtype} ({top:.6g}); pass the inputs in a wider dtype"
        )
    return x64.clamp(-top, top) if bool((m > top).any()) else x64  # (a no-op clamp skipped)


def measure(x64: torch.Tensor, ref: Latent) -> Latent:
    """A float64 per-sample measurement, as a numpy array when ``ref`` is one."""
    return x64.cpu().numpy() if isinstance(ref, np.ndarray) else x64


def same_shape(zs: Sequence[torch.Tensor], names: Sequence[str]) -> None:
    shapes = [tuple(z.shape) for z in zs]
    if any(s != shapes[0] for s in shapes):
        described = ", ".join(f"{n}={s}" for n, s in zip(names, shapes))
        raise ValueError(f"latents must have the same shape; got {described}")


def check_range(t: torch.Tensor, name: str, lo: float, hi: float, per_sample: bool) -> None:
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


def per_sample(v: Weight, batch: int, name: str, lo: float, hi: float) -> torch.Tensor:
    """A (B,) float64 tensor from a float or a (B,) array, checked to be finite and in [lo, hi]."""
    t = torch.as_tensor(v, dtype=torch.float64).detach().cpu()
    given_per_sample = t.ndim > 0
    if t.ndim == 0:
        t = t.expand(batch)
    elif t.shape != (batch,):
        raise ValueError(
            f"{name} must be a float or have shape ({batch},) (one per sample); "
            f"got shape {tuple(t.shape)}"
        )
    check_range(t, name, lo, hi, given_per_sample)
    return t


def col(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) tensor to broadcast against a (B, ...) tensor ``x``, on its device."""
    return v.to(x.device).reshape((-1,) + (1,) * (x.ndim - 1))


def amax_abs(x: torch.Tensor) -> torch.Tensor:
    """(B,) per-sample ``max |x|`` as ``max(-min x, max x)``, two fast reductions and no (B, n)
    temporary (CPU ``aminmax`` and ``abs().amax`` are several times slower): NaN for a sample
    with a NaN entry, inf for one with an inf entry and no NaN, 0 for a sample with no entries."""
    flat = x.flatten(1)
    if not flat.shape[1]:  # amax of an empty row is an error
        return torch.zeros(flat.shape[0], dtype=x.dtype, device=x.device)
    return torch.maximum(-flat.amin(dim=1), flat.amax(dim=1))  # NaN propagates


def nonfinite(*xs: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the samples with a NaN or inf entry in any of ``xs``."""
    bad = ~torch.isfinite(amax_abs(xs[0]))
    for x in xs[1:]:
        bad |= ~torch.isfinite(amax_abs(x))
    return bad


def pow2_scale(*xs: torch.Tensor, maxima: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """(B,) float64 powers of two ``s`` with ``max |x| / s`` in [1, 2) per sample, over all ``xs``
    (``s`` kept within [2^-1022, 2^1023], so a zero or subnormal maximum gets less than that).

    Dividing by ``s`` is exact (barring subnormals), so a computation done on ``x / s`` and
    scaled back by ``s`` gives the same bits as the plain one wherever that does not overflow or
    underflow, and stays finite where the plain one would not (norms of float64 latents with
    entries beyond 1e154). ``s = 1`` for samples that are not finite (their results are NaN).
    ``maxima`` are the ``amax_abs`` of ``xs`` when the caller has them already.
    """
    maxima = [amax_abs(x) for x in xs] if maxima is None else maxima
    m = torch.zeros(xs[0].shape[0], dtype=torch.float64, device=xs[0].device)
    for mx in maxima:
        m = torch.maximum(m, mx.to(torch.float64))
    finite = torch.isfinite(m)
    _, e = torch.frexp(torch.where(finite, m, 0.0))  # m in [2^(e-1), 2^e)
    k = torch.where(finite, (e.to(torch.int64) - 1).clamp(-1022, 1023), 0)
    return ((k + 1023) << 52).view(torch.float64)  # 2^k, built from its bits: exact


def flat_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norm of a float64 tensor, safe from over- and underflow."""
    s = pow2_scale(x)
    return s * torch.linalg.vector_norm((x / col(s, x)).flatten(1), dim=1)


def unit(x: torch.Tensor, maxima: torch.Tensor | None = None) -> torch.Tensor:
    """``x / |x|`` per sample, flattened to (B, n); NaN rows where ``x`` is zero or non-finite.
    ``maxima`` is ``amax_abs(x)`` when the caller has it already."""
    xs = x / col(pow2_scale(x, maxima=None if maxima is None else (maxima,)), x)
    flat = xs.flatten(1)
    flat /= torch.linalg.vector_norm(flat, dim=1)[:, None]
    return flat


def settle(out: torch.Tensor, bad: torch.Tensor, fn: str) -> torch.Tensor:
    """Blank the non-finite samples of a float64 result to NaN; raise if a finite one overflowed."""
    return settled(out, bad, fn)[0]


def settled(out: torch.Tensor, bad: torch.Tensor, fn: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``settle``, and the result's ``amax_abs`` (for ``like``'s ``maxima``)."""
    if bool(bad.any()):
        out = torch.where(col(bad, out), torch.nan, out)
    m = amax_abs(out)
    over = ~bad & ~torch.isfinite(m)
    if over.any():
        i = int(over.nonzero()[0])
        raise OverflowError(
            f"{fn}: sample {i} has finite inputs but its result exceeds the float64 range "
            f"(largest finite {torch.finfo(torch.float64).max:.6g})"
        )
    return out, m


def sinc(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised sinc, sin(x)/x, equal to 1 at x = 0."""
    return torch.sinc(x / math.pi)



def angle64(a: torch.Tensor, b: torch.Tensor, maxima: Sequence[torch.Tensor] | None = None,
            bad: torch.Tensor | None = None) -> torch.Tensor:
    """Angle between float64 latents; NaN where either has zero norm or is not finite.
    ``maxima`` (``amax_abs`` of ``a`` and ``b``) and ``bad`` (``nonfinite(a, b)``) when the caller
    has them already."""
    ma, mb = maxima if maxima is not None else (amax_abs(a), amax_abs(b))
    u, v = unit(a, ma), unit(b, mb)
    diff = torch.sub(u, v)
    u += v
    phi = 2.0 * torch.atan2(torch.linalg.vector_norm(diff, dim=1), torch.linalg.vector_norm(u, dim=1))
    bad = (~torch.isfinite(ma) | ~torch.isfinite(mb)) if bad is None else bad
    return torch.where(bad, torch.nan, phi)

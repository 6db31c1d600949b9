"""Argument checks and seeded generators shared by the denoiser factories.

Every check raises a one-line ``ValueError`` naming the value and what is accepted. The seeded
helpers never touch the caller's global torch RNG stream.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["check_finite", "check_seed", "cpu_generator", "seeded_cpu_rng"]


def check_seed(seed: Any) -> int:
    """``seed`` if it is a non-negative int (not a bool)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    return seed


def check_finite(name: str, value: Any, minimum: float | None = None) -> float:
    """``value`` as a float if it is a finite real number (not a bool), at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite float; got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value!r}")
    return float(value)


@contextlib.contextmanager
def seeded_cpu_rng(seed: int) -> Iterator[None]:
    """Seed the global CPU generator for the block and restore its state afterwards.

    Only the CPU generator is forked and seeded (``torch.manual_seed`` would also reseed CUDA
    generators without restoring them), so module construction on CPU is reproducible and the
    caller's RNG stream is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        yield


def cpu_generator(seed: int) -> torch.Generator:
    """A fresh CPU generator seeded with ``seed`` (the global generator is not used)."""
    return torch.Generator(device="cpu").manual_seed(int(seed))

"""Seeds: one random generator per (model, sample), so a sample's draws do not depend on its
batch mates (NVlabs/edm's one generator per seed)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from amdm_geom.core.spec import as_number, is_int

__all__ = ["as_seed", "draw", "sample_generators"]


def as_seed(seed) -> int:
    """An int seed in [0, 2**63) (numpy and torch integers too, and integral floats); one line otherwise."""
    value = as_number(seed)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not (is_int(value) and 0 <= value < 2**63):
        raise ValueError(f"seeds must be ints in [0, 2**63), one sample per seed; got {seed!r}")
    return value


def sample_generators(seeds: Sequence[int], model_index: int) -> list[torch.Generator]:
    """One CPU generator per sample for model ``model_index``. Model 0 uses the seed itself
    (so a one-model run matches a plain loop seeded per sample); model i > 0 a stream derived
    from (seed, i), independent of model 0's."""
    gens = []
    for s in seeds:
        seed = int(s) if model_index == 0 else int(np.random.SeedSequence([int(s), model_index]).generate_state(1)[0])
        gens.append(torch.Generator().manual_seed(seed))
    return gens


def draw(gens: list[torch.Generator], shape: tuple[int, ...], dtype, device) -> torch.Tensor:
    """``(B, *shape)`` standard normals, sample b from generator b (float32 draws, cast)."""
    return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device=device, dtype=dtype)

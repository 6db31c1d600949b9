"""The digits benchmarks' per-sample targets and each model's conditions on them (shared by the
digits benchmark, its grid and the commitment analyses, so that their samples are the same)."""

from __future__ import annotations

import numpy as np

from amdm_geom.models.digits.specs import MODEL_ATTRIBUTES

__all__ = ["ATTRIBUTES", "conditions", "targets"]

#: The attributes of a target, in the order of the detectors' (B, 3) readings.
ATTRIBUTES = ("position", "colour", "digit")


def targets(batch: int, seed: int = 0) -> np.ndarray:
    """``(batch, 3)`` int64: sample k's (position, colour, digit), the k-th of a seeded shuffle of
    all 4 x 4 x 10 combinations, repeated in blocks of 16 so that every (position, colour)
    pair is asked about equally often in each block of 16 samples."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1; got {batch!r}")
    rng = np.random.default_rng([seed, 7])
    pc = np.array([(p, c) for p in range(4) for c in range(4)])
    out = []
    for _ in range(-(-batch // 16)):
        order = rng.permutation(16)
        digits = rng.integers(0, 10, 16)
        out.append(np.column_stack([pc[order], digits]))
    return np.concatenate(out)[:batch].astype(np.int64)


def conditions(model: str, tgt: np.ndarray):
    """Model ``model``'s per-sample conditions ``(B, 3)`` (a torch int64 tensor): the targets'
    values of the attributes it was trained on (``MODEL_ATTRIBUTES``), -1 elsewhere."""
    import torch

    if model not in MODEL_ATTRIBUTES:
        raise ValueError(f"model must be one of {', '.join(MODEL_ATTRIBUTES)}; got {model!r}")
    keep = np.array([a in MODEL_ATTRIBUTES[model] for a in ATTRIBUTES])
    return torch.from_numpy(np.where(keep[None, :], np.asarray(tgt, dtype=np.int64), -1))

"""Read the three attributes back from images ``(N, 3, 16, 16)`` in [-1, 1] (generated or rendered).

- position: the quadrant holding the ink's centroid (ink = max over channels of (x + 1) / 2);
- colour: the palette colour nearest (Euclidean, after scaling each to a maximum channel of 1) to
  the ink-weighted mean RGB;
- digit: the 8x8 ink of the detected quadrant, classified by an RBF support-vector classifier
  trained on the ``train`` split of the 8x8 digits (deterministic; ``digit_classifier``).

An image with (almost) no ink gets -1 for every attribute (nothing to read).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from amdm_geom.models.digits.data import PALETTE, SIZE, digit_images

__all__ = ["MIN_INK", "detect", "detect_colour", "detect_digit", "detect_position", "digit_classifier", "ink_of"]

#: Total ink below which an image counts as blank.
MIN_INK = 1.0


def _as_images(x) -> np.ndarray:
    x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if x.ndim != 4 or x.shape[1:] != (3, SIZE, SIZE):
        raise ValueError(f"images must have shape (N, 3, {SIZE}, {SIZE}); got {x.shape}")
    return np.clip(x, -1.0, 1.0)


def ink_of(x) -> np.ndarray:
    """``(N, 16, 16)`` ink in [0, 1]: the brightest channel, mapped from [-1, 1]."""
    return (_as_images(x).max(axis=1) + 1.0) / 2.0


def detect_position(x) -> np.ndarray:
    ink = ink_of(x)
    total = ink.sum(axis=(1, 2))
    grid = np.arange(SIZE) + 0.5
    cy = (ink.sum(axis=2) * grid).sum(1) / np.maximum(total, 1e-12)
    cx = (ink.sum(axis=1) * grid).sum(1) / np.maximum(total, 1e-12)
    pos = (cy >= SIZE / 2).astype(np.int64) * 2 + (cx >= SIZE / 2).astype(np.int64)
    return np.where(total >= MIN_INK, pos, -1)


def detect_colour(x) -> np.ndarray:
    x = _as_images(x)
    ink = (x.max(axis=1) + 1.0) / 2.0
    rgb = ((x + 1.0) / 2.0 * ink[:, None]).sum(axis=(2, 3)) / np.maximum(ink.sum(axis=(1, 2)), 1e-12)[:, None]
    rgb = rgb / np.maximum(rgb.max(axis=1, keepdims=True), 1e-12)
    pal = PALETTE / PALETTE.max(axis=1, keepdims=True)
    col = ((rgb[:, None, :] - pal[None]) ** 2).sum(-1).argmin(1)
    return np.where(ink.sum(axis=(1, 2)) >= MIN_INK, col, -1)


@lru_cache(maxsize=1)
def digit_classifier():
    """The SVC on the ``train`` split's 8x8 ink (deterministic: no randomness in its fit)."""
    from sklearn.svm import SVC

    ink, cls = digit_images("train")
    return SVC(C=10.0, gamma=0.001).fit(ink.reshape(len(ink), -1) * 16.0, cls)


def detect_digit(x, position: np.ndarray | None = None) -> np.ndarray:
    ink = ink_of(x)
    pos = detect_position(x) if position is None else np.asarray(position)
    r, c = (np.maximum(pos, 0) // 2) * 8, (np.maximum(pos, 0) % 2) * 8
    crops = np.stack([ink[k, r[k]:r[k] + 8, c[k]:c[k] + 8] for k in range(len(ink))]) if len(ink) else ink[:, :8, :8]
    if not len(crops):
        return np.zeros(0, dtype=np.int64)
    pred = digit_classifier().predict(crops.reshape(len(crops), -1) * 16.0).astype(np.int64)
    return np.where(pos >= 0, pred, -1)


def detect(x) -> np.ndarray:
    """``(N, 3)`` int64: position, colour, digit per image (-1 where blank)."""
    pos = detect_position(x)
    return np.stack([pos, detect_colour(x), detect_digit(x, pos)], axis=1)

"""The digits data set: 16x16 RGB images in [-1, 1], each one 8x8 digit of scikit-learn's
``load_digits`` (shipped in its wheel, no download) placed in one of 4 quadrants and tinted one of
4 colours. Three attributes per image: ``position`` (quadrant, 0..3: top-left, top-right,
bottom-left, bottom-right), ``colour`` (0..3, ``PALETTE``) and ``digit`` (0..9).

The 1,797 digits are split once by a fixed permutation (``split``): the ``train`` digits render
the diffusion models' training images, the ``test`` digits only the detectors' check. An image is
``-1 + 2 ink (x) rgb`` in its quadrant and -1 (black) elsewhere, ink = pixel / 16 in [0, 1].
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["ATTRIBUTES", "COLOURS", "N_VALUES", "PALETTE", "POSITIONS", "SIZE", "Digits", "digit_images",
           "make_dataset", "render"]

SIZE = 16
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
COLOURS = ("red", "green", "blue", "yellow")
#: RGB in [0, 1] of each colour (chromaticities far apart, each with a channel at 1).
PALETTE = np.array([[1.0, 0.15, 0.15], [0.15, 0.9, 0.15], [0.2, 0.4, 1.0], [1.0, 0.85, 0.1]])
ATTRIBUTES = ("position", "colour", "digit")
N_VALUES = {"position": len(POSITIONS), "colour": len(COLOURS), "digit": 10}
#: The permutation seed of the train/test split of the 1,797 digits, and the test share.
SPLIT_SEED, TEST_COUNT = 1234, 397


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def digit_images(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The ink ``(M, 8, 8)`` in [0, 1] and classes ``(M,)`` of one split ("train" or "test")."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    ink, cls = _digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(cls))
    idx = order[TEST_COUNT:] if split == "train" else order[:TEST_COUNT]
    return ink[idx], cls[idx]


def render(ink: np.ndarray, position: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Images ``(N, 3, 16, 16)`` float32 in [-1, 1] from ink ``(N, 8, 8)`` in [0, 1], quadrants and
    colours ``(N,)``."""
    ink, position, colour = np.asarray(ink), np.asarray(position), np.asarray(colour)
    n = len(ink)
    out = np.full((n, 3, SIZE, SIZE), -1.0, dtype=np.float32)
    rows, cols = (position // 2) * 8, (position % 2) * 8
    rgb = PALETTE[colour].astype(np.float32)  # (N, 3)
    for k in range(n):
        out[k, :, rows[k]:rows[k] + 8, cols[k]:cols[k] + 8] = -1.0 + 2.0 * rgb[k][:, None, None] * ink[k][None]
    return out


@dataclass(frozen=True)
class Digits:
    """A rendered set: ``images (N, 3, 16, 16)`` and the attributes ``position``, ``colour``,
    ``digit`` ``(N,)``; ``sha256`` of the images and attributes (the training data's hash)."""

    images: np.ndarray
    position: np.ndarray
    colour: np.ndarray
    digit: np.ndarray
    seed: int
    split: str

    @property
    def labels(self) -> np.ndarray:
        """``(N, 3)`` int64: position, colour, digit."""
        return np.stack([self.position, self.colour, self.digit], axis=1)

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for a in (self.images, self.labels):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def make_dataset(n: int = 16384, seed: int = 0, split: str = "train") -> Digits:
    """``n`` images of the ``split``'s digits, each with a uniformly drawn digit, quadrant and
    colour from ``numpy.random.default_rng(seed)``: the same ``(n, seed, split)`` gives the same bytes."""
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    ink, cls = digit_images(split)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(cls), n)
    position = rng.integers(0, len(POSITIONS), n)
    colour = rng.integers(0, len(COLOURS), n)
    return Digits(render(ink[pick], position, colour), position, colour, cls[pick], seed, split)

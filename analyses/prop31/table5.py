"""The paper's Table 5 (App. D.2) for any trace store: phi, delta and the norm gap of the two
models' sampled latents per t, beside the paper's own numbers, and what a float16 pipeline's
arithmetic does to them. Used by ``norm_angle`` (Prop. 3.1) and ``precision``.

Rows t = T (z_T) and t = T - 1 - k (the sample ``z_{t-1}`` after step k) as the paper counts
them; ``a, b (B, n)`` are the two models' latents flattened per sample.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from amdm_geom.analyses.common import both_sampled, checked_store, finite_samples, latent_block, sample_slices
from amdm_geom.core import geometry

__all__ = ["REFERENCE", "beside_paper", "float16_arithmetic", "float16_grid_share", "paper_table5", "table5",
           "table5_partial"]

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "reference"
_COLUMNS = ("phi", "delta", "norm_gap", "phi_std", "delta_std", "norm_gap_std")


def paper_table5() -> pd.DataFrame:
    """The paper's Table 5 (InteractDiffusion(+MIGC), float16), indexed by t."""
    return pd.read_csv(REFERENCE / "table5.csv", comment="#").set_index("t")


def _f16(x):
    return np.asarray(x, dtype=np.float64).astype(np.float16).astype(np.float64)


def float16_arithmetic(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """phi, delta and norm gap as a float16 pipeline computes them (the authors' code): every
    reduction rounded to float16, the angle as acos of a float16 cosine. ``a, b (B, n)``."""
    na, nb = _f16(geometry.norm(a)), _f16(geometry.norm(b))
    dot = _f16(np.sum(a * b, axis=1))
    cos = _f16(dot / _f16(na * nb))
    phi = _f16(np.arccos(np.clip(cos, -1.0, 1.0)))
    return phi, _f16(geometry.norm(a - b)), _f16(np.abs(na - nb))


def _row(ds, var, k, pair, slices, float16_arithmetic_):
    """phi, delta and norm gap of one row's finite samples (read a slice of samples at a time) and
    the finite mask over all samples."""
    parts, oks = [], []
    for samples in slices:
        a, b = latent_block(ds, var, k, pair[0], samples), latent_block(ds, var, k, pair[1], samples)
        ok = finite_samples(a, b)
        a, b = a[ok], b[ok]
        if ok.any():
            parts.append(float16_arithmetic(a, b) if float16_arithmetic_ else
                         (geometry.angle(a, b), geometry.norm(a - b), geometry.norm_gap(a, b)))
        oks.append(ok)
    values = tuple(np.concatenate([p[i] for p in parts]) for i in range(3)) if parts else None
    return values, np.concatenate(oks)


def table5_partial(store, pair: tuple[int, int] = (0, 1), *,
                   float16_arithmetic_: bool = False, chunk: int | None = None) -> tuple[pd.DataFrame, dict]:
    """``table5`` and what it left out, as ``qualify``'s keywords (``nonfinite`` samples of
    ``total``, the store's ``incomplete`` note). The latents are read ``chunk`` samples at a time
    (``common.sample_slices``), so memory does not grow with the number of samples."""
    ds, T, note = checked_store(store, ("z_next", "z"))
    slices = sample_slices(ds, "z_next", chunk)
    rows = []
    latents = [(T, "z", 0)] + [(T - 1 - k, "z_next", k) for k in both_sampled(ds, pair, chunk)]
    bad = np.zeros(ds.sizes["sample"], dtype=bool)
    for t, var, k in latents:
        values, ok = _row(ds, var, k, pair, slices, float16_arithmetic_)
        bad |= ~ok
        row = {"t": t, "samples": int(ok.sum())}
        if values is not None:
            phi, delta, gap = values
            row.update({"phi": phi.mean(), "delta": delta.mean(), "norm_gap": gap.mean(),
                        "phi_std": phi.std(), "delta_std": delta.std(), "norm_gap_std": gap.std()})
        else:
            row.update(dict.fromkeys(_COLUMNS, math.nan))
        rows.append(row)
    partial = {"nonfinite": int(bad.sum()), "total": int(ds.sizes["sample"]), "incomplete": note}
    return pd.DataFrame(rows).set_index("t"), partial


def table5(store, pair: tuple[int, int] = (0, 1), *, float16_arithmetic_: bool = False) -> pd.DataFrame:
    """The Table 5 layout for a store: rows t = T (z_T), T - 1, ... (the sample after each
    completed step where both models sampled), columns phi, delta, norm_gap (mean over the
    finite samples, counted in ``samples``) and their std.

    Geometry in float64 from the stored values; ``float16_arithmetic_=True`` instead reproduces a
    float16 pipeline's arithmetic (see ``float16_arithmetic``)."""
    return table5_partial(store, pair, float16_arithmetic_=float16_arithmetic_)[0]


def beside_paper(table: pd.DataFrame) -> pd.DataFrame:
    """A store's Table 5 beside the paper's, on the paper's t (T = 50)."""
    paper = paper_table5().add_prefix("paper_")
    return table[["phi", "delta", "norm_gap"]].join(paper, how="outer").sort_index(ascending=False)


def float16_grid_share(values: np.ndarray, tol: float = 6e-5) -> float:
    """Share of angles that equal 0.03125 sqrt(k) (acos of a float16 cosine 1 - k 2^-11) to the
    table's printed precision."""
    values = np.asarray(values, dtype=np.float64)
    k = np.round((values / 0.03125) ** 2)
    return float(np.mean(np.abs(0.03125 * np.sqrt(k) - values) <= tol))

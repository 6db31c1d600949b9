"""The precision study (App. D.2, Table 5): one configuration recorded in several dtypes, its
Table 5 in float64 geometry per dtype, and the float16 run through a float16 pipeline's
arithmetic, asking whether the paper's Table 5 resolves phi during aggregation.

The analysis ``Precision`` (``amdm_geom.analyses.base.Analysis``): ``compute(stores)`` -> an
``xarray.Dataset`` (dims ``dtype``, ``t``; written as ``precision.zarr`` and
``precision_table5.csv``), ``verdicts``, ``plot``, ``tables``. Each store's dtype is read from
its attrs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.common import LATENT_HINTS, open_store
from amdm_geom.analyses.prop31.table5 import float16_grid_share, paper_table5, table5_partial
from amdm_geom.core.palette import colour
from amdm_geom.core.verdicts import Verdict, at_least, qualify, status_of
from amdm_geom.store import require, sampler_config

__all__ = ["CAPTIONS", "NAME", "Precision", "compute", "plot", "precision_study", "precision_verdict", "tables",
           "verdicts"]

NAME = "precision"
#: The figures' captions (fnmatch patterns over the figure names, ``amdm_geom.app.runner.output.caption_of``).
CAPTIONS = {
    "precision_phi": (
        "App. D.2, Table 5: the angle phi between the two models' sampled latents per sampling step (time runs "
        "right to left; symlog scale), one line per recorded dtype, measured in float64, and the float16 run "
        "measured in float16 arithmetic (line with dots). The dotted grey lines are 0.03125 sqrt(k), the only "
        "angles float16 can report near 0: the paper's Table 5 sits on them during aggregation, so where the "
        "float64 line falls below the first one, the paper's phi there says only 'below float16's resolution'."),
}


def _stores_by_dtype(stores) -> dict:
    """``{dtype: (name, Dataset)}`` from ``{name: store}`` or a list of stores, each dtype read
    from its store's attrs. One-line ValueError unless the dtypes are distinct and at least 2."""
    items = list(stores.items()) if isinstance(stores, Mapping) else [
        (Path(p).name.removesuffix(".zarr") if not isinstance(p, xr.Dataset) else f"store {i}", p)
        for i, p in enumerate(stores)]
    found = []
    for name, store in items:
        ds = open_store(store)
        require(ds, variables=("z_next", "z"), attrs=("dtype",), hints=LATENT_HINTS)
        found.append((str(ds.attrs["dtype"]), str(name), ds))
    dtypes = [d for d, _, _ in found]
    listed = ", ".join(f"{n} ({d})" for d, n, _ in found) or "none"
    dup = sorted({d for d in dtypes if dtypes.count(d) > 1})
    if dup:
        raise ValueError(f"the precision study needs one store per dtype; {', '.join(dup)} is recorded more than "
                         f"once among the stores {listed}")
    if len(set(dtypes)) < 2:
        raise ValueError(f"the precision study needs stores in at least 2 distinct dtypes; got {listed}")
    return {d: (n, ds) for d, n, ds in found}


def precision_study(stores: Mapping | Sequence) -> xr.Dataset:
    """Table 5 for one configuration run in several dtypes, in float64 geometry, plus the
    float16 run through float16 arithmetic (``float16_arith``).

    ``stores``: ``{name: store}`` or a list of stores (paths or Datasets); each store's dtype is
    read from its attrs, and the result's ``dtype`` coordinate is that dtype. Stores must be in
    at least 2 distinct dtypes, one store each (one-line ValueError naming the dtypes found).
    What the stores left out (non-finite samples, incomplete stores) is in the attrs and in
    ``precision_verdict``'s detail."""
    by_dtype = _stores_by_dtype(stores)
    tables_, notes, nonfinite, total = {}, [], 0, 0
    for dtype, (name, ds) in by_dtype.items():
        tables_[dtype], partial = table5_partial(ds, (0, 1))
        nonfinite += partial["nonfinite"]
        total += partial["total"]
        if partial["incomplete"]:
            notes.append(f"{partial['incomplete']} ({name})")
    if "float16" in by_dtype:
        tables_["float16_arith"] = table5_partial(by_dtype["float16"][1], (0, 1), float16_arithmetic_=True)[0]
    index = sorted(set.intersection(*(set(t.index) for t in tables_.values())), reverse=True)
    data = {col: (("dtype", "t"), np.stack([tables_[d].loc[index, col].values for d in tables_]))
            for col in ("phi", "delta", "norm_gap")}
    res = xr.Dataset(data, coords={"dtype": list(tables_), "t": index})
    cfg = sampler_config(next(iter(by_dtype.values()))[1])
    T, s = cfg.num_inference_steps, cfg.agg_steps
    res.attrs.update({"agg_first_t": T - 2, "agg_last_t": T - 1 - s})  # samples from shifted starts
    paper = paper_table5()
    agg_rows = paper.loc[(paper.index < 49) & (paper.index >= 30), "phi"]
    res.attrs["paper_phi_on_float16_grid"] = float16_grid_share(agg_rows.values)
    res.attrs.update({"stores": [n for n, _ in by_dtype.values()], "nonfinite": nonfinite, "samples": total,
                      "incomplete": notes})
    return res


def compute(stores: Mapping, *, quick: bool = False, seed: int = 0, runs=None) -> xr.Dataset:
    """``precision_study(stores)`` (``quick``, ``seed`` and ``runs`` change nothing)."""
    return precision_study(stores)


def precision_verdict(prec: xr.Dataset) -> Verdict:
    """Whether the paper's Table 5 resolves phi during aggregation, beside our float64 values."""
    share = float(prec.attrs["paper_phi_on_float16_grid"])
    rows = [t for t in prec.t.values if prec.attrs["agg_last_t"] <= t <= prec.attrs["agg_first_t"]]
    ours = prec.phi.sel(t=rows)

    def median(dtype):
        v = ours.sel(dtype=dtype).values
        v = v[np.isfinite(v)]
        return float(np.median(v)) if len(v) else math.nan

    f64 = median("float64" if "float64" in prec.dtype else prec.dtype.values[0])
    arith = median("float16_arith") if "float16_arith" in prec.dtype else math.nan
    notes = prec.attrs.get("incomplete", [])
    return qualify(Verdict(
        key="table5_resolution", claim="Table 5 resolves phi during aggregation", where="App. D.2, Table 5",
        status=status_of(at_least(share, 0.9)), kind="finding",
        measured=f"{100 * share:.0f}% of phi on f16 grid", bound="resolved values", value=share, reference=0.0,
        detail=(f"The paper's phi for t = 48..30 are all of the form 0.03125 sqrt(k), the acos of a float16 "
                f"cosine 1 - k 2^-11, which is below float16's resolution. On our GMM run in float64, phi "
                f"after the first aggregation is {f64:.2g} rad (median); float16 arithmetic on the float16 "
                f"run reports {arith:.3g}.")),
        nonfinite=int(prec.attrs.get("nonfinite", 0)), total=int(prec.attrs.get("samples", 0)),
        incomplete=[notes] if isinstance(notes, str) else notes)


def verdicts(prec: xr.Dataset) -> list[Verdict]:
    """``[precision_verdict(prec)]``."""
    return [precision_verdict(prec)]


def plot(prec: xr.Dataset) -> dict:
    """``{"precision_phi": figure}``: what float16 does to phi, the same run in each dtype and
    float16 arithmetic."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for d in prec.dtype.values:
        ax.plot(prec.t, prec.phi.sel(dtype=d), "o-" if d == "float16_arith" else "-", ms=3, label=d)
    for k in range(1, 4):
        ax.axhline(0.03125 * math.sqrt(k), color=colour("reference"), lw=0.6, ls=":")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_xlabel("t (sampling step)")
    ax.set_ylabel("phi (rad)")
    ax.set_title("What float16 does to phi (dotted: 0.03125 sqrt(k))")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    fig.tight_layout()
    return {"precision_phi": fig}


def tables(prec: xr.Dataset) -> dict:
    """``{"precision_table5": phi, delta and norm gap per t, one column per dtype}``."""
    return {"precision_table5": prec.to_dataframe().unstack("dtype")}


class Precision(Analysis):
    """What float16 does to Table 5 (App. D.2): ``compute``, ``verdicts``, ``plot``, ``tables`` above."""

    name, family, stores, reads, result, captions = NAME, "prop31", "required", ("dtypes",), "precision", CAPTIONS
    summary = "Table 5 of one configuration recorded in several dtypes (each store's dtype from its attrs)"
    compute, verdicts, plot, tables = map(staticmethod, (compute, verdicts, plot, tables))

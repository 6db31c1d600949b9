"""Proposition 3.1 on recorded trajectories: norm gap, angle and delta (App. D.2, D.3).

For a pair of models (model 1 = index 0 and a partner i) and every step where both sampled, on
the sampled latents ``z_{t-1}`` (the store's ``z_next``), per sample:

- ``norm_gap``, ``phi``, ``delta`` and the bounds of eq. (5): ``norm_gap_bound``,
  ``cos_bound`` (NaN off its domain, see ``amdm_geom.bounds``);
- delta taken apart. The two sampled latents differ by

      z_next_1 - z_next_i = A (z_1 - z_i) + B (eps_1 - eps_i) + (A_1 - A_i) z_i + (B_1 - B_i) eps_i
                            + (noise_1 - noise_i),

  and ``eps_1 - eps_i`` telescopes (eqs. 20-22) into the conditional term
  ``eps_theta1(z_1, y_1) - eps_theta1(z_1, y_i)``, the functional-proximity term
  ``eps_theta1(z_1, y_i) - eps_thetai(z_1, y_i)`` and the effect of the two models starting from
  different points, ``eps_thetai(z_1, y_i) - eps_thetai(z_i, y_i)``. The proof assumes both start
  from one point z'_t; Algorithm 1 starts them from two shifted points. The conditional and
  functional terms need a run recorded with ``record_cross_eps`` (``--cross-eps``);
- ``delta_bound``: ``|B_t| (L_theta L_T + L_t) + sigma_t sqrt(2n)`` with the Lipschitz products
  replaced by the measured terms (the tightest constants valid at the recorded inputs).

``table5`` gives the paper's Table 5 layout for any store (``t``, phi, delta, norm gap; t = T is
z_T, t = T - 1 - k the sample after step k), ``paper_table5`` the paper's own numbers, and
``precision_study`` what float16 does to that table. Geometry and bounds come from
``amdm_geom``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from amdm_geom import bounds, geometry
from amdm_geom.store import completed_steps, incomplete_note, open_run, require, run_config
from amdm_geom.verdicts import Verdict, at_least, at_most, margin_text, qualify

from .output import (check_replaceable, finite_samples, result_folder, save_dataset, save_figures, save_verdicts,
                     scatter, slot_written)

__all__ = ["beside_paper", "compute", "paper_table5", "plot", "plot_precision", "precision_study",
           "precision_verdict", "report", "report_precision", "table5", "verdicts"]

REFERENCE = Path(__file__).resolve().parent.parent / "data" / "reference"
_TERMS = ("start_part", "eps_part", "schedule_part", "noise_part")
#: What ``compute`` reads: the sampled latents, the step's inputs and the schedule.
_NEEDS = ("z_next", "z", "eps", "noise", "model_A", "model_B", "model_sigma", "aggregated", "t")
_HINTS = {"z_next": "record the hook model*.z_next", "z": "record the hook model*.z",
          "eps": "record the hook model*.eps", "noise": "record the hook model*.noise"}


def _open(store) -> xr.Dataset:
    return store if isinstance(store, xr.Dataset) else open_run(store)


def _checked(store, variables=_NEEDS) -> tuple[xr.Dataset, int, str]:
    """The store restricted to its completed steps, its full step count T and its
    ``incomplete_note``, after checking it has what ``variables`` names (one-line StoreError)."""
    ds = _open(store)
    require(ds, variables=variables, attrs=("config",), hints=_HINTS)
    return completed_steps(ds), int(ds.sizes["step"]), incomplete_note(ds)


def _block(ds: xr.Dataset, var: str, k: int, model: int) -> np.ndarray:
    """``(sample, n)`` float64 values of ``var`` at step k for one model."""
    a = ds[var].isel(step=k, model=model).values.astype(np.float64)
    return a.reshape(a.shape[0], -1)


def _both_sampled(ds: xr.Dataset, pair: tuple[int, int]) -> list[int]:
    """The (completed) steps at which both models wrote their sampled latent ``z_next``."""
    return [k for k in range(ds.sizes["step"])
            if all(slot_written(ds["z_next"].isel(step=k, model=m).values) for m in pair)]


def _step_quantities(a, b, z1, z2, e1, e2, noise1, noise2, coef, n, cross):
    """Prop. 3.1's per-sample quantities at one step, on finite samples only."""
    A1, B1, A2, B2, sigma = coef
    out = {"norm_1": geometry.norm(a), "norm_2": geometry.norm(b), "norm_gap": geometry.norm_gap(a, b),
           "phi": geometry.angle(a, b), "delta": geometry.norm(a - b),
           "norm_gap_bound": bounds.norm_gap_bound(a, b), "cos_bound": bounds.cos_angle_lower_bound(a, b),
           "start_part": geometry.norm(A1 * (z1 - z2)), "eps_part": geometry.norm(B1 * (e1 - e2)),
           "schedule_part": geometry.norm((A1 - A2) * z2 + (B1 - B2) * e2),
           "noise_part": geometry.norm(noise1 - noise2)}
    if cross is not None:
        ec, ea = cross
        cond, func = geometry.norm(e1 - ec), geometry.norm(ec - ea)
        out.update({"cond_term": cond, "func_term": func, "start_eps_term": geometry.norm(ea - e2),
                    "delta_bound": bounds.delta_bound(B1, 1.0, cond, func, sigma, n),
                    "delta_bound_q999": bounds.delta_bound(B1, 1.0, cond, func, sigma, n, noise_quantile=0.999)})
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


_NAMES = ("norm_1", "norm_2", "norm_gap", "phi", "delta", "norm_gap_bound", "cos_bound", *_TERMS)
_CROSS_NAMES = ("cond_term", "func_term", "start_eps_term", "delta_bound", "delta_bound_q999")


def compute(store, pair: tuple[int, int] = (0, 1)) -> xr.Dataset:
    """Prop. 3.1's quantities per step (where both models sampled) and sample.

    Only completed steps are read (``attrs["incomplete"]`` says when the store is incomplete).
    A sample with a non-finite value in anything a step's quantities use is NaN in all of them
    at that step (``finite`` is false there) and is left out of every verdict, which counts it.
    """
    ds = _open(store)
    if "model" in ds.sizes and (max(pair) >= ds.sizes["model"] or pair[0] == pair[1]):
        raise ValueError(f"pair must be two model indices in [0, {ds.sizes['model'] - 1}]; got {tuple(pair)}")
    ds, T, note = _checked(ds)
    i0, i1 = pair
    cross = "eps_cross" in ds and "eps_at_z1" in ds
    steps = _both_sampled(ds, pair)
    if not steps:
        raise ValueError(f"models {i0} and {i1} never sampled the same step in this store"
                         + (f" ({note})" if note else ""))
    n = int(np.prod([ds.sizes[d] for d in ds["z"].dims[3:]]))
    names = _NAMES + (_CROSS_NAMES if cross else ())
    out: dict[str, list] = {name: [] for name in names}
    finite = []
    for k in steps:
        blocks = [_block(ds, v, k, m) for v in ("z_next", "z", "eps", "noise") for m in (i0, i1)]
        if cross:
            blocks += [_block(ds, "eps_cross", k, i1), _block(ds, "eps_at_z1", k, i1)]
        ok = finite_samples(*blocks)
        coef = (float(ds.model_A[i0, k]), float(ds.model_B[i0, k]), float(ds.model_A[i1, k]),
                float(ds.model_B[i1, k]), float(ds.model_sigma[i0, k]))
        if ok.any():
            a, b, z1, z2, e1, e2, n1, n2, *rest = (x[ok] for x in blocks)
            values = _step_quantities(a, b, z1, z2, e1, e2, n1, n2, coef, n, rest or None)
        else:
            values = {name: np.empty(0) for name in names}
        for name, v in scatter(ok, values).items():
            out[name].append(v)
        finite.append(ok)
    agg = ds.aggregated.values
    from_aggregate = [k > 0 and bool(agg[k - 1]) for k in steps]  # the premise of Prop. 3.1
    coords = {"step": steps, "sample": ds.sample.values, "t": ("step", ds.t.values[steps]),
              "t_index": ("step", [T - 1 - k for k in steps]),  # the paper's Table 5 index
              "aggregated": ("step", agg[steps]), "from_aggregate": ("step", from_aggregate),
              "B": ("step", ds.model_B.values[i0, steps]),
              "sigma": ("step", ds.model_sigma.values[i0, steps])}
    res = xr.Dataset({name: (("step", "sample"), np.stack(v)) for name, v in out.items()}, coords=coords)
    res["finite"] = (("step", "sample"), np.stack(finite))
    cfg = run_config(ds)
    res.attrs.update({"pair": list(pair), "n": n, "cross_eps": int(cross), "T": T,
                      "ddim_eta": float(cfg["sampler"]["ddim_eta"]), "store_dtype": ds.attrs.get("dtype", ""),
                      "etas": list(cfg["etas"]), "weights": list(cfg["sampler"]["weights"]),
                      "incomplete": note})
    res["cos_phi"] = np.cos(res["phi"])
    a, b = _first(ds, "z", i0), _first(ds, "z", i1)
    ok = finite_samples(a, b)
    first = scatter(ok, {"z_T_phi": geometry.angle(a[ok], b[ok]), "z_T_delta": geometry.norm(a[ok] - b[ok]),
                         "z_T_norm_gap": geometry.norm_gap(a[ok], b[ok])} if ok.any() else
                    {"z_T_phi": np.empty(0), "z_T_delta": np.empty(0), "z_T_norm_gap": np.empty(0)})
    for name, v in first.items():
        res[name] = ("sample", v)
    res["z_T_finite"] = ("sample", ok)
    return res


def _first(ds, var, model):
    return _block(ds, var, 0, model)


# --------------------------------------------------------------------------------------------
# verdicts


def _where(res: xr.DataArray) -> str:
    """Steps (and t) where a boolean (step, sample) array is true, compactly."""
    steps = res.step.values[res.any("sample").values]
    ts = res.t.values[res.any("sample").values]
    if len(steps) == 0:
        return "nowhere"
    shown = ", ".join(f"{s} (t={t})" for s, t in zip(steps[:4], ts[:4]))
    return f"steps {shown}" + (f" and {len(steps) - 4} more" if len(steps) > 4 else "")


def _max(da: xr.DataArray) -> float:
    """The largest non-NaN value (NaN, silently, if there is none)."""
    return float(da.max()) if bool(da.notnull().any()) else math.nan


def _min(da: xr.DataArray) -> float:
    return float(da.min()) if bool(da.notnull().any()) else math.nan


def _finite(res: xr.Dataset) -> xr.DataArray:
    return res["finite"] if "finite" in res else xr.ones_like(res.delta, dtype=bool)


def partial_data(res: xr.Dataset) -> dict:
    """What a results dataset left out, as ``qualify``'s keywords: samples non-finite at any of
    its steps, of all samples, and the store's incomplete note."""
    fin = _finite(res)
    return {"nonfinite": int((~fin).any("step").sum()), "total": int(res.sizes["sample"]),
            "incomplete": res.attrs.get("incomplete", "")}


def verdicts(res: xr.Dataset, name: str = "run") -> list[Verdict]:
    """Verdict rows for one store's Prop. 3.1 quantities (from ``compute``).

    Decided on the finite (step, sample) cells; comparisons of a measurement with its bound
    count agreement to rounding as equality (``at_least``, ``at_most``). Non-finite samples and
    an incomplete store are said first in each detail, and such a verdict never holds
    (``qualify``)."""
    out = []
    fin = _finite(res)
    cells = int(fin.sum())
    partial = partial_data(res)
    ratio = res.norm_gap / res.norm_gap_bound.where(res.norm_gap_bound > 0)
    worst = _max(ratio)
    measured = fin & res.norm_gap.notnull() & res.norm_gap_bound.notnull()
    bad = measured & ~at_most(res.norm_gap, res.norm_gap_bound, rtol=1e-9, atol=1e-12)
    slack = res.norm_gap_bound - res.norm_gap
    out.append(Verdict(
        key=f"prop31_gap_run_{name}", claim=f"{name}: norm gap <= eq. (5) bound", where="Prop. 3.1, eq. (5)",
        status="violated" if bool(bad.any()) else ("holds" if bool(measured.any()) else "vacuous"),
        measured=f"max gap/bound {worst:.3f}", bound="<= 1",
        value=worst, reference=1.0,
        detail=(f"{int(bad.sum())} of {cells} finite (step, sample) cells violate it ({_where(bad)}). "
                f"Smallest slack bound - gap: {_min(slack):.2e}.")))

    defined = res.cos_bound.notnull() & fin & res.cos_phi.notnull()
    short = defined & ~at_least(res.cos_phi, res.cos_bound, atol=1e-12)
    slack = (res.cos_phi - res.cos_bound).where(defined)
    out.append(Verdict(
        key=f"prop31_angle_run_{name}", claim=f"{name}: cos phi >= eq. (5) bound", where="Prop. 3.1, eq. (5)",
        status="violated" if bool(short.any()) else ("holds" if bool(defined.any()) else "vacuous"),
        measured=f"min slack {_min(slack):.2e}", bound=">= 0", value=_min(slack), reference=0.0,
        detail=(f"Defined (cos phi >= 0) on {int(defined.sum())} of {cells} finite cells; violated on "
                f"{int(short.sum())} ({_where(short)}).")))

    premise = res.isel(step=res.from_aggregate.values)
    if "delta_bound" in res and premise.sizes["step"]:
        # only where the premise holds: both models started the step from one aggregate z'_t
        pf = _finite(premise) & premise.delta.notnull() & premise.delta_bound.notnull()
        over = pf & ~at_most(premise.delta, premise.delta_bound, rtol=1e-9)
        r = (premise.delta / premise.delta_bound).where(pf)
        head = dict(key=f"prop31_delta_run_{name}", claim=f"{name}: delta <= |B|(LL+L)+s sqrt(2n)",
                    where="Prop. 3.1, eq. (23)", bound="<= 1", reference=1.0)
        if not bool(pf.any()):
            out.append(Verdict(**head, status="vacuous", measured="no finite cell", value=math.nan,
                               detail="No finite (step, sample) cell on the steps that start from an aggregate."))
        else:
            k, s = np.unravel_index(int(np.nanargmax(r.values)), r.shape)
            cell = premise.isel(step=k, sample=s)
            parts = {p: float(cell[p]) for p in _TERMS}
            top = max(parts, key=parts.get)
            out.append(Verdict(
                **head, status="violated" if bool(over.any()) else "holds",
                measured=f"max delta/bound {_max(r):.3g}", value=_max(r),
                detail=(f"On the steps that start from an aggregate (the premise), with the Lipschitz products set "
                        f"to the measured conditional and functional terms, delta exceeds the bound on "
                        f"{int(over.sum())} of {int(pf.sum())} cells ({_where(over)}). At the worst "
                        f"(step {int(cell.step)}, t={int(cell.t)}) delta = {float(cell.delta):.5g} against "
                        f"{float(cell.delta_bound):.5g} ({margin_text(float(cell.delta_bound), float(cell.delta))}); "
                        f"its largest part is {top.replace('_part', '')} "
                        f"({parts[top]:.5g}): " + ("the two models start the step from different shifted points, "
                                                   "which the proof assumes away." if top == "start_part" else
                                                   "the noise exceeds sigma sqrt(2n)." if top == "noise_part" else
                                                   "the epsilons differ by more than the measured terms.")),
            ))
    return [qualify(v, **partial) for v in out]


# --------------------------------------------------------------------------------------------
# Table 5


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


def _table5(store, pair, float16_arithmetic_: bool) -> tuple[pd.DataFrame, dict]:
    """``table5`` and what it left out (``qualify``'s keywords)."""
    ds, T, note = _checked(store, ("z_next", "z"))
    rows = []
    latents = [(T, _first(ds, "z", pair[0]), _first(ds, "z", pair[1]))]
    latents += [(T - 1 - k, _block(ds, "z_next", k, pair[0]), _block(ds, "z_next", k, pair[1]))
                for k in _both_sampled(ds, pair)]
    bad = np.zeros(ds.sizes["sample"], dtype=bool)
    for t, a, b in latents:
        ok = finite_samples(a, b)
        bad |= ~ok
        a, b = a[ok], b[ok]
        row = {"t": t, "samples": int(ok.sum())}
        if ok.any():
            if float16_arithmetic_:
                phi, delta, gap = float16_arithmetic(a, b)
            else:
                phi, delta, gap = geometry.angle(a, b), geometry.norm(a - b), geometry.norm_gap(a, b)
            row.update({"phi": phi.mean(), "delta": delta.mean(), "norm_gap": gap.mean(),
                        "phi_std": phi.std(), "delta_std": delta.std(), "norm_gap_std": gap.std()})
        else:
            row.update(dict.fromkeys(("phi", "delta", "norm_gap", "phi_std", "delta_std", "norm_gap_std"), math.nan))
        rows.append(row)
    partial = {"nonfinite": int(bad.sum()), "total": int(ds.sizes["sample"]), "incomplete": note}
    return pd.DataFrame(rows).set_index("t"), partial


def table5(store, pair: tuple[int, int] = (0, 1), *, float16_arithmetic_: bool = False) -> pd.DataFrame:
    """The Table 5 layout for a store: rows t = T (z_T), T - 1, ... (the sample after each
    completed step where both models sampled), columns phi, delta, norm_gap (mean over the
    finite samples, counted in ``samples``) and their std.

    Geometry in float64 from the stored values; ``float16_arithmetic_=True`` instead reproduces a
    float16 pipeline's arithmetic (see ``float16_arithmetic``)."""
    return _table5(store, pair, float16_arithmetic_)[0]


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


def _stores_by_dtype(stores) -> dict:
    """``{dtype: (name, Dataset)}`` from ``{name: store}`` or a list of stores, each dtype read
    from its store's attrs. One-line ValueError unless the dtypes are distinct and at least 2."""
    items = list(stores.items()) if isinstance(stores, Mapping) else [
        (Path(p).name.removesuffix(".zarr") if not isinstance(p, xr.Dataset) else f"store {i}", p)
        for i, p in enumerate(stores)]
    found = []
    for name, store in items:
        ds = _open(store)
        require(ds, variables=("z_next", "z"), attrs=("config", "dtype"), hints=_HINTS)
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
    tables, notes, nonfinite, total = {}, [], 0, 0
    for dtype, (name, ds) in by_dtype.items():
        tables[dtype], partial = _table5(ds, (0, 1), False)
        nonfinite += partial["nonfinite"]
        total += partial["total"]
        if partial["incomplete"]:
            notes.append(f"{partial['incomplete']} ({name})")
    if "float16" in by_dtype:
        tables["float16_arith"] = _table5(by_dtype["float16"][1], (0, 1), True)[0]
    index = sorted(set.intersection(*(set(t.index) for t in tables.values())), reverse=True)
    data = {col: (("dtype", "t"), np.stack([tables[d].loc[index, col].values for d in tables]))
            for col in ("phi", "delta", "norm_gap")}
    res = xr.Dataset(data, coords={"dtype": list(tables), "t": index})
    cfg = run_config(next(iter(by_dtype.values()))[1])["sampler"]
    T, s = cfg["num_inference_steps"], cfg["agg_steps"]
    res.attrs.update({"agg_first_t": T - 2, "agg_last_t": T - 1 - s})  # samples from shifted starts
    paper = paper_table5()
    agg_rows = paper.loc[(paper.index < 49) & (paper.index >= 30), "phi"]
    res.attrs["paper_phi_on_float16_grid"] = float16_grid_share(agg_rows.values)
    res.attrs.update({"stores": [n for n, _ in by_dtype.values()], "nonfinite": nonfinite, "samples": total,
                      "incomplete": notes})
    return res


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
        status="violated" if at_least(share, 0.9) else "holds",
        measured=f"{100 * share:.0f}% of phi on f16 grid", bound="resolved values", value=share, reference=0.0,
        detail=(f"The paper's phi for t = 48..30 are all of the form 0.03125 sqrt(k), the acos of a float16 "
                f"cosine 1 - k 2^-11, which is below float16's resolution. On our GMM run in float64, phi "
                f"after the first aggregation is {f64:.2g} rad (median); float16 arithmetic on the float16 "
                f"run reports {arith:.3g}.")),
        nonfinite=int(prec.attrs.get("nonfinite", 0)), total=int(prec.attrs.get("samples", 0)),
        incomplete=[notes] if isinstance(notes, str) else notes)


# --------------------------------------------------------------------------------------------
# figures


def plot(res: xr.Dataset, *, table: pd.DataFrame | None = None):
    """Figures: norm gap with its bound (cf. Figure 7), angle and delta (cf. Figure 8, with the
    paper's Table 5 when ``table`` is given), and delta taken apart against its bound."""
    import matplotlib.pyplot as plt

    figs = []
    t = res.t_index.values  # sampling steps, as the paper's Table 5 and Figures 7-8 count them
    band = lambda ax, da, label, **kw: _band(ax, t, da, label, **kw)  # noqa: E731

    fig, ax = plt.subplots(figsize=(6.4, 4))
    band(ax, res.norm_gap, "| |z1| - |z2| |")
    band(ax, res.norm_gap_bound, "bound, eq. (5)", ls="--")
    _shade_window(ax, res)
    ax.set_yscale("log")
    ax.set_xlabel("t (sampling step)")
    ax.set_ylabel("norm gap")
    ax.set_title("Norm gap of the sampled latents (cf. Figure 7)")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs.append(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    band(axes[0], res.phi, "phi (float64)")
    band(axes[1], res.delta, "delta = |z1 - z2|")
    if table is not None:
        paper = paper_table5()
        axes[0].plot(paper.index, paper.phi, "k.", ms=3, label="paper, Table 5 (float16)")
        axes[1].plot(paper.index, paper.delta, "k.", ms=3, label="paper, Table 5")
    for ax, label in zip(axes, ("phi (rad)", "delta")):
        _shade_window(ax, res)
        ax.set_yscale("log")
        ax.set_xlabel("t (sampling step)")
        ax.set_ylabel(label)
        ax.invert_xaxis()
        ax.legend(fontsize=8)
    axes[0].set_title("Angle (cf. Figure 8a)")
    axes[1].set_title("Difference norm (cf. Figure 8b)")
    fig.tight_layout()
    figs.append(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4))
    band(ax, res.delta, "delta", color="k")
    for part, style in zip(_TERMS, ("-", "-", ":", "-")):
        if float(res[part].max()) > 0:
            band(ax, res[part], part.replace("_", " "), ls=style)
    if "delta_bound" in res:
        band(ax, res.delta_bound, "bound |B|(cond+func) + s sqrt(2n)", ls="--", color="C3")
        band(ax, abs(res.B) * (res.cond_term + res.func_term), "|B| (cond + func), eqs. (21)-(22)", ls="-.")
    _shade_window(ax, res)
    ax.set_yscale("log")
    ax.set_xlabel("t (sampling step)")
    ax.set_ylabel("norm")
    ax.set_title("delta taken apart (eqs. 20-23)")
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    fig.tight_layout()
    figs.append(fig)

    return figs


def plot_precision(precision: xr.Dataset):
    """What float16 does to phi: the same run in each dtype, and float16 arithmetic."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for d in precision.dtype.values:
        ax.plot(precision.t, precision.phi.sel(dtype=d), "o-" if d == "float16_arith" else "-", ms=3, label=d)
    for k in range(1, 4):
        ax.axhline(0.03125 * math.sqrt(k), color="grey", lw=0.6, ls=":")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_xlabel("t (sampling step)")
    ax.set_ylabel("phi (rad)")
    ax.set_title("What float16 does to phi (dotted: 0.03125 sqrt(k))")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def report(stores: dict, out, pair: tuple[int, int] = (0, 1)) -> list[Verdict]:
    """For each store (``{name: path}``): results, Table 5 beside the paper's, verdicts and
    figures in ``out/<name>/``. Returns every verdict row.

    Every store is checked (``require``) and every target folder found replaceable before any
    work."""
    for name, path in stores.items():
        _checked(path)
        check_replaceable(Path(out) / name)
    rows = []
    for name, path in stores.items():
        res = compute(path, pair)
        found = verdicts(res, name)
        table = table5(path, pair)
        with result_folder(Path(out) / name) as tmp:
            save_dataset(res, tmp / "results.zarr")
            beside_paper(table).to_csv(tmp / "table5.csv", float_format="%.6g")
            save_figures(plot(res, table=table), tmp, ["norm_gap", "angle_delta", "delta_parts"])
            save_verdicts(found, tmp)
        rows += found
    return rows


def report_precision(stores: Mapping | Sequence, out) -> list[Verdict]:
    """The precision study (``precision_study``) of stores recorded in several dtypes, in
    ``out``. ``stores``: ``{name: path}`` or a list of paths; each store's dtype is read from its
    attrs, and duplicate dtypes or fewer than 2 are refused in one line before any work."""
    prec = precision_study(stores)
    found = [precision_verdict(prec)]
    with result_folder(out) as tmp:
        save_dataset(prec, tmp / "precision.zarr")
        prec.to_dataframe().unstack("dtype").to_csv(tmp / "precision_table5.csv", float_format="%.6g")
        save_figures([plot_precision(prec)], tmp, ["precision_phi"])
        save_verdicts(found, tmp)
    return found


def _band(ax, t, da: xr.DataArray, label: str, **kw):
    with warnings.catch_warnings():  # a step with no finite sample is a gap in the figure, not an error
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, lo, hi = da.mean("sample").values, da.min("sample").values, da.max("sample").values
    line, = ax.plot(t, mean, label=label, **kw)
    if da.sizes["sample"] > 1:
        ax.fill_between(t, lo, hi, color=line.get_color(), alpha=0.15, lw=0)


def _shade_window(ax, res: xr.Dataset):
    agg = res.t_index.values[res.aggregated.values]
    if len(agg):
        ax.axvspan(agg.max(), agg.min(), color="0.9", zorder=0, label="aggregation window")

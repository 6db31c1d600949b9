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
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from amdm_geom import bounds, geometry
from amdm_geom.store import open_run, run_config
from amdm_geom.verdicts import Verdict

from .output import result_folder, save_dataset, save_figures, save_verdicts

__all__ = ["beside_paper", "compute", "paper_table5", "plot", "plot_precision", "precision_study",
           "precision_verdict", "report", "report_precision", "table5", "verdicts"]

REFERENCE = Path(__file__).resolve().parent.parent / "data" / "reference"
_TERMS = ("start_part", "eps_part", "schedule_part", "noise_part")


def _open(store) -> xr.Dataset:
    return store if isinstance(store, xr.Dataset) else open_run(store)


def _block(ds: xr.Dataset, var: str, k: int, model: int) -> np.ndarray:
    """``(sample, n)`` float64 values of ``var`` at step k for one model."""
    a = ds[var].isel(step=k, model=model).values.astype(np.float64)
    return a.reshape(a.shape[0], -1)


def _both_sampled(ds: xr.Dataset, pair: tuple[int, int]) -> list[int]:
    steps = []
    for k in range(int(ds.attrs.get("steps_completed", ds.sizes["step"]))):
        first = ds["z_next"].isel(step=k, sample=0)
        if all(np.isfinite(first.isel(model=m).values.ravel()[:1]).all() for m in pair):
            steps.append(k)
    return steps


def compute(store, pair: tuple[int, int] = (0, 1)) -> xr.Dataset:
    """Prop. 3.1's quantities per step (where both models sampled) and sample."""
    ds = _open(store)
    if "z_next" not in ds:
        raise ValueError("norm_angle needs the z_next hook in the store (record model*.z_next)")
    i0, i1 = pair
    if max(pair) >= ds.sizes["model"] or i0 == i1:
        raise ValueError(f"pair must be two model indices in [0, {ds.sizes['model'] - 1}]; got {tuple(pair)}")
    cross = "eps_cross" in ds and "eps_at_z1" in ds
    steps = _both_sampled(ds, pair)
    if not steps:
        raise ValueError(f"models {i0} and {i1} never sampled the same step in this store")
    n = int(np.prod([ds.sizes[d] for d in ds["z"].dims[3:]]))
    out: dict[str, list] = {}

    def put(name, value):
        out.setdefault(name, []).append(np.asarray(value, dtype=np.float64))

    for k in steps:
        a, b = _block(ds, "z_next", k, i0), _block(ds, "z_next", k, i1)
        put("norm_1", geometry.norm(a))
        put("norm_2", geometry.norm(b))
        put("norm_gap", geometry.norm_gap(a, b))
        put("phi", geometry.angle(a, b))
        put("delta", geometry.norm(a - b))
        put("norm_gap_bound", bounds.norm_gap_bound(a, b))
        put("cos_bound", bounds.cos_angle_lower_bound(a, b))
        A1, B1 = float(ds.model_A[i0, k]), float(ds.model_B[i0, k])
        A2, B2 = float(ds.model_A[i1, k]), float(ds.model_B[i1, k])
        z1, z2 = _block(ds, "z", k, i0), _block(ds, "z", k, i1)
        e1, e2 = _block(ds, "eps", k, i0), _block(ds, "eps", k, i1)
        put("start_part", geometry.norm(A1 * (z1 - z2)))
        put("eps_part", geometry.norm(B1 * (e1 - e2)))
        put("schedule_part", geometry.norm((A1 - A2) * z2 + (B1 - B2) * e2))
        put("noise_part", geometry.norm(_block(ds, "noise", k, i0) - _block(ds, "noise", k, i1)))
        sigma = float(ds.model_sigma[i0, k])
        if cross:
            ec, ea = _block(ds, "eps_cross", k, i1), _block(ds, "eps_at_z1", k, i1)
            cond, func = geometry.norm(e1 - ec), geometry.norm(ec - ea)
            put("cond_term", cond)
            put("func_term", func)
            put("start_eps_term", geometry.norm(ea - e2))
            put("delta_bound", bounds.delta_bound(B1, 1.0, cond, func, sigma, n))
            put("delta_bound_q999", bounds.delta_bound(B1, 1.0, cond, func, sigma, n, noise_quantile=0.999))
    agg = ds.aggregated.values
    from_aggregate = [k > 0 and bool(agg[k - 1]) for k in steps]  # the premise of Prop. 3.1
    T = ds.sizes["step"]
    coords = {"step": steps, "sample": ds.sample.values, "t": ("step", ds.t.values[steps]),
              "t_index": ("step", [T - 1 - k for k in steps]),  # the paper's Table 5 index
              "aggregated": ("step", agg[steps]), "from_aggregate": ("step", from_aggregate),
              "B": ("step", ds.model_B.values[i0, steps]),
              "sigma": ("step", ds.model_sigma.values[i0, steps])}
    res = xr.Dataset({name: (("step", "sample"), np.stack(v)) for name, v in out.items()}, coords=coords)
    cfg = run_config(ds)
    res.attrs.update({"pair": list(pair), "n": n, "cross_eps": int(cross), "T": int(ds.sizes["step"]),
                      "ddim_eta": float(cfg["sampler"]["ddim_eta"]), "store_dtype": ds.attrs.get("dtype", ""),
                      "etas": list(cfg["etas"]), "weights": list(cfg["sampler"]["weights"])})
    res["cos_phi"] = np.cos(res["phi"])
    res["z_T_phi"] = ("sample", geometry.angle(_first(ds, "z", i0), _first(ds, "z", i1)))
    res["z_T_delta"] = ("sample", geometry.norm(_first(ds, "z", i0) - _first(ds, "z", i1)))
    res["z_T_norm_gap"] = ("sample", geometry.norm_gap(_first(ds, "z", i0), _first(ds, "z", i1)))
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


def verdicts(res: xr.Dataset, name: str = "run") -> list[Verdict]:
    """Verdict rows for one store's Prop. 3.1 quantities (from ``compute``)."""
    out = []
    ratio = res.norm_gap / res.norm_gap_bound.where(res.norm_gap_bound > 0)
    worst = float(ratio.max())
    bad = res.norm_gap > res.norm_gap_bound * (1 + 1e-9) + 1e-12
    out.append(Verdict(
        key=f"prop31_gap_run_{name}", claim=f"{name}: norm gap <= eq. (5) bound", where="Prop. 3.1, eq. (5)",
        status="violated" if bool(bad.any()) else "holds", measured=f"max gap/bound {worst:.3f}", bound="<= 1",
        value=worst, reference=1.0,
        detail=(f"{int(bad.sum())} of {bad.size} (step, sample) cells violate it ({_where(bad)}). "
                f"Smallest slack bound - gap: {float((res.norm_gap_bound - res.norm_gap).min()):.2e}.")))

    defined = res.cos_bound.notnull()
    short = (res.cos_phi < res.cos_bound - 1e-12) & defined
    slack = (res.cos_phi - res.cos_bound).where(defined)
    out.append(Verdict(
        key=f"prop31_angle_run_{name}", claim=f"{name}: cos phi >= eq. (5) bound", where="Prop. 3.1, eq. (5)",
        status="violated" if bool(short.any()) else ("holds" if bool(defined.any()) else "vacuous"),
        measured=f"min slack {float(slack.min()):.2e}", bound=">= 0", value=float(slack.min()), reference=0.0,
        detail=(f"Defined (cos phi >= 0) on {int(defined.sum())} of {defined.size} cells; violated on "
                f"{int(short.sum())} ({_where(short)}).")))

    premise = res.isel(step=res.from_aggregate.values)
    if "delta_bound" in res and premise.sizes["step"]:
        # only where the premise holds: both models started the step from one aggregate z'_t
        over = premise.delta > premise.delta_bound * (1 + 1e-9)
        r = premise.delta / premise.delta_bound
        k, s = np.unravel_index(int(np.nanargmax(r.values)), r.shape)
        cell = premise.isel(step=k, sample=s)
        parts = {p: float(cell[p]) for p in _TERMS}
        top = max(parts, key=parts.get)
        out.append(Verdict(
            key=f"prop31_delta_run_{name}", claim=f"{name}: delta <= |B|(LL+L)+s sqrt(2n)", where="Prop. 3.1, eq. (23)",
            status="violated" if bool(over.any()) else "holds",
            measured=f"max delta/bound {float(r.max()):.3g}", bound="<= 1", value=float(r.max()), reference=1.0,
            detail=(f"On the steps that start from an aggregate (the premise), with the Lipschitz products set "
                    f"to the measured conditional and functional terms, delta exceeds the bound on "
                    f"{int(over.sum())} of {over.size} cells ({_where(over)}). At the worst "
                    f"(step {int(cell.step)}, t={int(cell.t)}) delta = {float(cell.delta):.5g} against "
                    f"{float(cell.delta_bound):.5g}; its largest part is {top.replace('_part', '')} "
                    f"({parts[top]:.5g}): " + ("the two models start the step from different shifted points, which "
                                               "the proof assumes away." if top == "start_part" else
                                               "the noise exceeds sigma sqrt(2n)." if top == "noise_part" else
                                               "the epsilons differ by more than the measured terms.")),
        ))
    return out


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


def table5(store, pair: tuple[int, int] = (0, 1), *, float16_arithmetic_: bool = False) -> pd.DataFrame:
    """The Table 5 layout for a store: rows t = T (z_T), T - 1, ... (the sample after each step
    where both models sampled), columns phi, delta, norm_gap (mean over samples) and their std.

    Geometry in float64 from the stored values; ``float16_arithmetic_=True`` instead reproduces a
    float16 pipeline's arithmetic (see ``float16_arithmetic``)."""
    ds = _open(store)
    T = ds.sizes["step"]
    rows = []
    latents = [(T, _first(ds, "z", pair[0]), _first(ds, "z", pair[1]))]
    latents += [(T - 1 - k, _block(ds, "z_next", k, pair[0]), _block(ds, "z_next", k, pair[1]))
                for k in _both_sampled(ds, pair)]
    for t, a, b in latents:
        if float16_arithmetic_:
            phi, delta, gap = float16_arithmetic(a, b)
        else:
            phi, delta, gap = geometry.angle(a, b), geometry.norm(a - b), geometry.norm_gap(a, b)
        rows.append({"t": t, "phi": phi.mean(), "delta": delta.mean(), "norm_gap": gap.mean(),
                     "phi_std": phi.std(), "delta_std": delta.std(), "norm_gap_std": gap.std()})
    return pd.DataFrame(rows).set_index("t")


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


def precision_study(stores: dict) -> xr.Dataset:
    """Table 5 for one configuration run in several dtypes (``{"float16": path, ...}``), in
    float64 geometry, plus the float16 run through float16 arithmetic (``float16_arith``)."""
    tables = {dtype: table5(path) for dtype, path in stores.items()}
    if "float16" in stores:
        tables["float16_arith"] = table5(stores["float16"], float16_arithmetic_=True)
    index = sorted(set.intersection(*(set(t.index) for t in tables.values())), reverse=True)
    data = {col: (("dtype", "t"), np.stack([tables[d].loc[index, col].values for d in tables]))
            for col in ("phi", "delta", "norm_gap")}
    res = xr.Dataset(data, coords={"dtype": list(tables), "t": index})
    cfg = run_config(_open(next(iter(stores.values()))))["sampler"]
    T, s = cfg["num_inference_steps"], cfg["agg_steps"]
    res.attrs.update({"agg_first_t": T - 2, "agg_last_t": T - 1 - s})  # samples from shifted starts
    paper = paper_table5()
    agg_rows = paper.loc[(paper.index < 49) & (paper.index >= 30), "phi"]
    res.attrs["paper_phi_on_float16_grid"] = float16_grid_share(agg_rows.values)
    return res


def precision_verdict(prec: xr.Dataset) -> Verdict:
    """Whether the paper's Table 5 resolves phi during aggregation, beside our float64 values."""
    share = float(prec.attrs["paper_phi_on_float16_grid"])
    rows = [t for t in prec.t.values if prec.attrs["agg_last_t"] <= t <= prec.attrs["agg_first_t"]]
    ours = prec.phi.sel(t=rows)
    f64 = float(np.median(ours.sel(dtype="float64" if "float64" in prec.dtype else prec.dtype.values[0])))
    arith = float(np.median(ours.sel(dtype="float16_arith"))) if "float16_arith" in prec.dtype else math.nan
    return Verdict(
        key="table5_resolution", claim="Table 5 resolves phi during aggregation", where="App. D.2, Table 5",
        status="violated" if share >= 0.9 else "holds",
        measured=f"{100 * share:.0f}% of phi on f16 grid", bound="resolved values", value=share, reference=0.0,
        detail=(f"The paper's phi for t = 48..30 are all of the form 0.03125 sqrt(k), the acos of a float16 "
                f"cosine 1 - k 2^-11, which is below float16's resolution. On our GMM run in float64, phi "
                f"after the first aggregation is {f64:.2g} rad (median); float16 arithmetic on the float16 "
                f"run reports {arith:.3g}."))


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
    figures in ``out/<name>/``. Returns every verdict row."""
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


def report_precision(stores: dict, out) -> list[Verdict]:
    """The precision study of stores recorded in several dtypes (``{dtype: path}``), in ``out``."""
    prec = precision_study(stores)
    found = [precision_verdict(prec)]
    with result_folder(out) as tmp:
        save_dataset(prec, tmp / "precision.zarr")
        prec.to_dataframe().unstack("dtype").to_csv(tmp / "precision_table5.csv", float_format="%.6g")
        save_figures([plot_precision(prec)], tmp, ["precision_phi"])
        save_verdicts(found, tmp)
    return found


def _band(ax, t, da: xr.DataArray, label: str, **kw):
    mean = da.mean("sample").values
    line, = ax.plot(t, mean, label=label, **kw)
    if da.sizes["sample"] > 1:
        ax.fill_between(t, da.min("sample").values, da.max("sample").values, color=line.get_color(), alpha=0.15, lw=0)


def _shade_window(ax, res: xr.Dataset):
    agg = res.t_index.values[res.aggregated.values]
    if len(agg):
        ax.axvspan(agg.max(), agg.min(), color="0.9", zorder=0, label="aggregation window")

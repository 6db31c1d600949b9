"""Proposition 3.1 on recorded trajectories: norm gap, angle and delta (App. D.2, D.3).

For a pair of models (model 1 = index 0 and a partner i) and every step where both sampled, on
the sampled latents ``z_{t-1}`` (the store's ``z_next``), per sample:

- ``norm_gap``, ``phi``, ``delta`` and the bounds of eq. (5): ``norm_gap_bound``,
  ``cos_bound`` (NaN off its domain, see ``amdm_geom.core.bounds``);
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

``prop31(store)`` computes these for one store and ``prop31_verdicts`` judges them. The analysis
contract (``amdm_geom.analyses``): ``compute(stores)`` gives an ``xarray.DataTree`` with, per
store, ``/<store>/results`` (``prop31``) and ``/<store>/table5`` (the paper's Table 5 layout,
``amdm_geom.analyses.prop31.table5``); written as ``<store>/results.zarr``, ``<store>/table5.csv``
(beside the paper's) and ``<store>/{norm_gap,angle_delta,delta_parts}.png``. Geometry and bounds
come from ``amdm_geom``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.common import (
    both_sampled,
    checked_store,
    finite_cells,
    finite_samples,
    latent_block,
    open_store,
    partial_data,
    sample_slices,
    streamed,
)
from amdm_geom.analyses.common.cells import steps_where
from amdm_geom.analyses.prop31.figures import CAPTIONS, prop31_figures
from amdm_geom.analyses.prop31.table5 import beside_paper, table5
from amdm_geom.core import bounds, geometry
from amdm_geom.core.verdicts import Verdict, at_least, at_most, margin_text, qualify, status_of, tolerance
from amdm_geom.store import built_of, etas, sampler_config

__all__ = ["CAPTIONS", "NAME", "NormAngle", "compute", "plot", "prop31", "prop31_verdicts", "saved",
           "tables", "verdicts"]

NAME = "norm_angle"

_TERMS = ("start_part", "eps_part", "schedule_part", "noise_part")
#: What ``prop31`` reads: the sampled latents, the step's inputs and the schedule.
_NEEDS = ("z_next", "z", "eps", "noise", "model_A", "model_B", "model_sigma", "aggregated", "t")

def _step_quantities(a, b, z1, z2, e1, e2, noise1, noise2, coef, n, cross):
    """Prop. 3.1's per-sample quantities at one step, on finite samples only."""
    A1, B1, A2, B2, sigma = coef
    out = {"norm_1": geometry.norm(a), "norm_2": geometry.norm(b), "norm_gap": geometry.norm_gap(a, b),
           "phi": geometry.angle(a, b), "delta": geometry.norm(a - b),
           "norm_gap_bound": bounds.norm_gap_bound(a, b), "cos_bound": bounds.cos_angle_lower_bound(a, b),
           "start_gap": geometry.norm(z1 - z2), "start_part": geometry.norm(A1 * (z1 - z2)),
           "eps_part": geometry.norm(B1 * (e1 - e2)),
           "schedule_part": geometry.norm((A1 - A2) * z2 + (B1 - B2) * e2),
           "noise_part": geometry.norm(noise1 - noise2)}
    if cross is not None:
        ec, ea = cross
        cond, func = geometry.norm(e1 - ec), geometry.norm(ec - ea)
        out.update({"cond_term": cond, "func_term": func, "start_eps_term": geometry.norm(ea - e2),
                    "delta_bound": bounds.delta_bound(B1, 1.0, cond, func, sigma, n),
                    "delta_bound_q999": bounds.delta_bound(B1, 1.0, cond, func, sigma, n, noise_quantile=0.999)})
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


_NAMES = ("norm_1", "norm_2", "norm_gap", "phi", "delta", "norm_gap_bound", "cos_bound", "start_gap", *_TERMS)
_CROSS_NAMES = ("cond_term", "func_term", "start_eps_term", "delta_bound", "delta_bound_q999")


def _step_slice(ds, k, pair, cross, n, names):
    """The per-slice reader of step k for ``streamed``: Prop. 3.1's quantities on one slice of samples."""
    i0, i1 = pair
    coef = (float(ds.model_A[i0, k]), float(ds.model_B[i0, k]), float(ds.model_A[i1, k]),
            float(ds.model_B[i1, k]), float(ds.model_sigma[i0, k]))

    def per_slice(samples):
        blocks = [latent_block(ds, v, k, m, samples) for v in ("z_next", "z", "eps", "noise") for m in (i0, i1)]
        if cross:
            blocks += [latent_block(ds, "eps_cross", k, i1, samples), latent_block(ds, "eps_at_z1", k, i1, samples)]
        ok = finite_samples(*blocks)
        if not ok.any():
            return ok, {name: np.empty(0) for name in names}
        a, b, z1, z2, e1, e2, n1, n2, *rest = (x[ok] for x in blocks)
        return ok, _step_quantities(a, b, z1, z2, e1, e2, n1, n2, coef, n, rest or None)

    return per_slice


def _start_slice(ds, pair):
    """The per-slice reader of the starting latents z_T (step 0's ``z``) for ``streamed``."""
    def per_slice(samples):
        a, b = latent_block(ds, "z", 0, pair[0], samples), latent_block(ds, "z", 0, pair[1], samples)
        ok = finite_samples(a, b)
        if not ok.any():
            return ok, {"z_T_phi": np.empty(0), "z_T_delta": np.empty(0), "z_T_norm_gap": np.empty(0)}
        a, b = a[ok], b[ok]
        return ok, {"z_T_phi": geometry.angle(a, b), "z_T_delta": geometry.norm(a - b),
                    "z_T_norm_gap": geometry.norm_gap(a, b)}

    return per_slice


def prop31(store, pair: tuple[int, int] = (0, 1), *, chunk: int | None = None) -> xr.Dataset:
    """Prop. 3.1's quantities per step (where both models sampled) and sample, for one store
    (dims ``step``, ``sample``).

    Only completed steps are read (``attrs["incomplete"]`` says when the store is incomplete).
    A sample with a non-finite value in anything a step's quantities use is NaN in all of them
    at that step (``finite`` is false there) and is left out of every verdict, which counts it.

    The latents are streamed: each step is read and reduced a slice of ``chunk`` samples at a time
    (``common.sample_slices``: by default whole store chunks up to ``common.CHUNK_BYTES``), so
    peak memory does not grow with the number of samples. Values do not depend on ``chunk`` beyond
    rounding (an angle may differ in its last bit: torch's vectorised kernels round a batch's
    remainder differently); a store small enough to read in one slice reads as it always did.
    """
    ds = open_store(store)
    if "model" in ds.sizes and (max(pair) >= ds.sizes["model"] or pair[0] == pair[1]):
        raise ValueError(f"pair must be two model indices in [0, {ds.sizes['model'] - 1}]; got {tuple(pair)}")
    ds, T, note = checked_store(ds, _NEEDS)
    i0, i1 = pair
    slices = sample_slices(ds, "z_next", chunk)
    cross = "eps_cross" in ds and "eps_at_z1" in ds
    steps = both_sampled(ds, pair, chunk)
    if not steps:
        raise ValueError(f"models {i0} and {i1} never sampled the same step in this store"
                         + (f" ({note})" if note else ""))
    n = int(np.prod([ds.sizes[d] for d in ds["z"].dims[3:]]))
    names = _NAMES + (_CROSS_NAMES if cross else ())
    out: dict[str, list] = {name: [] for name in names}
    finite = []
    for k in steps:
        values, ok = streamed(slices, _step_slice(ds, k, pair, cross, n, names))
        for name, v in values.items():
            out[name].append(v)
        finite.append(ok)
    agg = ds.aggregated.values
    from_aggregate = [k > 0 and bool(agg[k - 1]) for k in steps]  # the premise of Prop. 3.1
    coords = {"step": steps, "sample": ds.sample.values, "t": ("step", ds.t.values[steps]),
              "t_index": ("step", [T - 1 - k for k in steps]),  # the paper's Table 5 index
              "aggregated": ("step", agg[steps]), "from_aggregate": ("step", from_aggregate),
              "A": ("step", ds.model_A.values[i0, steps]), "B": ("step", ds.model_B.values[i0, steps]),
              "sigma": ("step", ds.model_sigma.values[i0, steps])}
    res = xr.Dataset({name: (("step", "sample"), np.stack(v)) for name, v in out.items()}, coords=coords)
    res["finite"] = (("step", "sample"), np.stack(finite))
    cfg, kinds = sampler_config(ds), built_of(ds).cross_terms or ()
    res.attrs.update({"pair": list(pair), "n": n, "cross_eps": int(cross), "T": T,
                      "cross_terms": str(kinds[i1]) if cross and i1 < len(kinds) and kinds[i1] else "conditional",
                      "ddim_eta": cfg.ddim_eta, "store_dtype": ds.attrs.get("dtype", ""),
                      "etas": etas(ds), "weights": list(cfg.weights), "incomplete": note})
    res["cos_phi"] = np.cos(res["phi"])
    first, ok = streamed(slices, _start_slice(ds, pair))
    for name, v in first.items():
        res[name] = ("sample", v)
    res["z_T_finite"] = ("sample", ok)
    return res


# --------------------------------------------------------------------------------------------
# verdicts


def _max(da: xr.DataArray) -> float:
    """The largest non-NaN value (NaN, silently, if there is none)."""
    return float(da.max()) if bool(da.notnull().any()) else math.nan


def _min(da: xr.DataArray) -> float:
    return float(da.min()) if bool(da.notnull().any()) else math.nan


def prop31_verdicts(res: xr.Dataset, name: str = "run") -> list[Verdict]:
    """Verdict rows for one store's Prop. 3.1 quantities (from ``prop31``).

    Decided on the finite (step, sample) cells; comparisons of a measurement with its bound
    count agreement to rounding as equality (``at_least``, ``at_most``). Non-finite samples and
    an incomplete store are said first in each detail, and such a verdict never holds
    (``qualify``)."""
    out = []
    fin = finite_cells(res)
    cells = int(fin.sum())
    partial = partial_data(res)
    ratio = res.norm_gap / res.norm_gap_bound.where(res.norm_gap_bound > 0)
    worst = _max(ratio)
    measured = fin & res.norm_gap.notnull() & res.norm_gap_bound.notnull()
    bad = measured & ~at_most(res.norm_gap, res.norm_gap_bound, rtol=1e-9, atol=1e-12)
    slack = res.norm_gap_bound - res.norm_gap
    out.append(Verdict(
        key=f"prop31_gap_run_{name}", claim=f"{name}: norm gap <= eq. (5) bound", where="Prop. 3.1, eq. (5)",
        status=status_of(bad.any(), measured.any()),
        measured=f"max gap/bound {worst:.3f}", bound="<= 1",
        value=worst, reference=1.0,
        detail=(f"{int(bad.sum())} of {cells} finite (step, sample) cells violate it ({steps_where(bad)}). "
                f"Smallest slack bound - gap: {_min(slack):.2e}.")))

    defined = res.cos_bound.notnull() & fin & res.cos_phi.notnull()
    short = defined & ~at_least(res.cos_phi, res.cos_bound, atol=1e-12)
    slack = (res.cos_phi - res.cos_bound).where(defined)
    out.append(Verdict(
        key=f"prop31_angle_run_{name}", claim=f"{name}: cos phi >= eq. (5) bound", where="Prop. 3.1, eq. (5)",
        status=status_of(short.any(), defined.any()),
        measured=f"min slack {_min(slack):.2e}", bound=">= 0", value=_min(slack), reference=0.0,
        detail=(f"Defined (cos phi >= 0) on {int(defined.sum())} of {cells} finite cells; violated on "
                f"{int(short.sum())} ({steps_where(short)}).")))

    premise = res.isel(step=res.from_aggregate.values)
    if "delta_bound" in res and premise.sizes["step"]:
        # only where the premise holds: both models started the step from one aggregate z'_t
        pf = finite_cells(premise) & premise.delta.notnull() & premise.delta_bound.notnull()
        over = pf & ~at_most(premise.delta, premise.delta_bound, rtol=1e-9)
        r = (premise.delta / premise.delta_bound).where(pf)
        head = dict(key=f"prop31_delta_run_{name}", claim=f"{name}: delta <= |B|(LL+L)+s sqrt(2n)",
                    where="Prop. 3.1, eq. (23)", bound="<= 1", reference=1.0)
        if not bool(pf.any()):
            out.append(Verdict(**head, status="vacuous", measured="no finite cell", value=math.nan,
                               detail="No finite (step, sample) cell on the steps that start from an aggregate."))
        else:
            out.append(_delta_verdict(res, premise, pf, over, r, head))
    out += _start_gap_verdict(res, name)
    return [qualify(v, **partial) for v in out]


def _delta_status(premise: xr.Dataset, pf, over) -> tuple[str, xr.DataArray]:
    """Eq. (23)'s status and the cells over the bound even with the start terms added. Its premise
    (Prop. 3.1: both models sample from one z'_t) fails where the two starts differ; a bound
    exceeded only there, and met with the start terms A |z_1 - z_i| + |B| |eps_i(z_1) - eps_i(z_i)|
    added, is "outside domain"; a cell over the bound with those terms too is "violated"."""
    with_start = premise.delta_bound + premise.start_part + abs(premise.B) * premise.start_eps_term
    beyond = over & ~at_most(premise.delta, with_start, rtol=1e-9)
    apart = premise.start_gap > tolerance(premise.start_gap, 0.0, atol=1e-12 * premise.norm_1)
    if bool(over.any()) and not bool(beyond.any()) and bool((apart | ~over).all()):
        return "outside domain", beyond
    return status_of(over.any()), beyond


def _delta_verdict(res: xr.Dataset, premise: xr.Dataset, pf, over, r, head: dict) -> Verdict:
    """Eq. (23)'s row on the steps that start from an aggregate (``prop31_verdicts``)."""
    status, beyond = _delta_status(premise, pf, over)
    k, s = np.unravel_index(int(np.nanargmax(r.values)), r.shape)
    cell = premise.isel(step=k, sample=s)
    parts = {p: float(cell[p]) for p in _TERMS}
    top = max(parts, key=parts.get)
    cause = ("the two models start the step from different shifted points, which the proof assumes away."
             if top == "start_part" else "the noise exceeds sigma sqrt(2n)." if top == "noise_part" else
             "the epsilons differ by more than the measured terms.")
    said = (f" With the start terms added (A |z_1 - z_i| + |B| |eps_i(z_1) - eps_i(z_i)|), delta exceeds it on "
            f"{int(beyond.sum())} of {int(pf.sum())} cells")
    others = np.maximum(np.maximum(premise.start_part, premise.eps_part), premise.schedule_part)
    noisy = bool(beyond.any()) and bool((premise.noise_part >= others).where(beyond, True).all())
    if status == "outside domain":
        said += (": every exceedance comes from the two models starting at different points, which Prop. 3.1's "
                 "premise (both sample from one z'_t) excludes, so the bound is not tested here (prop31_start_gap).")
    elif noisy:
        said += (f" ({steps_where(beyond)}), each with the noise as its largest part: sigma |xi_1 - xi_2| exceeds "
                 "sigma sqrt(2n), which the proof writes as 'approximately' (eq. 23: sqrt(2n) is the noise's typical "
                 "size and covers it with probability P(chi2_n <= n), about 1/2; prop31_delta_noise). Read as "
                 "printed, the bound fails there, so the row stays violated.")
    else:
        said += f" ({steps_where(beyond)})." if bool(beyond.any()) else "."
    return Verdict(
        **head, status=status, measured=f"max delta/bound {_max(r):.3g}", value=_max(r),
        detail=(("Cross terms measured unconditionally (the models take different kinds of condition): the "
                 "conditional term is model 1's guidance |eps_1(y_1) - eps_1(null)| and the functional term "
                 "the models' unconditional difference. " if res.attrs.get("cross_terms") == "unconditional" else "")
                + f"On the steps that start from an aggregate (the premise), with the Lipschitz products set "
                f"to the measured conditional and functional terms, delta exceeds the bound on "
                f"{int(over.sum())} of {int(pf.sum())} cells ({steps_where(over)}). At the worst "
                f"(step {int(cell.step)}, t={int(cell.t)}) delta = {float(cell.delta):.5g} against "
                f"{float(cell.delta_bound):.5g} ({margin_text(float(cell.delta_bound), float(cell.delta))}); "
                f"its largest part is {top.replace('_part', '')} ({parts[top]:.5g}): {cause}" + said),
        extra={"over_with_start": int(beyond.sum())})


def _start_gap_verdict(res: xr.Dataset, name: str) -> list[Verdict]:
    """The premise of eq. (23)'s proof, that both models start the step from one point z'_t,
    against what Algorithm 1 does: each model starts from z'_t shifted by its own eta towards
    its own mean (eq. 7), so the two starts are up to eta_1 + eta_i (2 eta) apart. Measured on
    the steps that follow an aggregation; with the delta-bound terms recorded (``--cross-eps``),
    also the bound with the start terms added, A |z_1 - z_i| + |B| |eps_i(z_1) - eps_i(z_i)|."""
    premise = res.isel(step=res.from_aggregate.values)
    if not premise.sizes["step"]:
        return []
    i0, i1 = res.attrs["pair"]
    etas = res.attrs["etas"]
    reach = float(etas[i0] + etas[i1])
    pf = finite_cells(premise) & premise.start_gap.notnull()
    cells = int(pf.sum())
    gap = premise.start_gap.where(pf)
    top = _max(gap)
    apart = pf & (premise.start_gap > tolerance(premise.start_gap, 0.0, atol=1e-12 * premise.norm_1))
    beyond = pf & ~at_most(premise.start_gap, reach, rtol=1e-6)
    share = (premise.start_part / premise.delta).where(pf & (premise.delta > 0))
    text = (f"Algorithm 1 starts model 1 and model {i1 + 1} from z'_t shifted by eta = {etas[i0]:g} and {etas[i1]:g} "
            f"towards their own means (eq. 7), so the starts differ by up to eta_1 + eta_i = {reach:g}; the proof of "
            f"eq. (23) takes both from one z'_t. The starts differ on {int(apart.sum())} of {cells} finite cells "
            f"(median {float(gap.median()) if cells else math.nan:.3g}, max {top:.3g}"
            + (f", over eta_1 + eta_i on {int(beyond.sum())} cells: {steps_where(beyond)}" if bool(beyond.any())
               else "")
            + f"); the start term A |z_1 - z_i| is a median {float(share.median()) if cells else math.nan:.2f} "
            "of delta.")
    if "delta_bound" in premise:
        with_start = premise.delta_bound + premise.start_part + abs(premise.B) * premise.start_eps_term
        over = pf & premise.delta_bound.notnull() & ~at_most(premise.delta, with_start, rtol=1e-9)
        text += (f" With the start terms added to the bound (A |z_1 - z_i| + |B| |eps_i(z_1) - eps_i(z_i)|), delta "
                 f"exceeds it on {int(over.sum())} of {cells} cells"
                 + (f" ({steps_where(over)})" if bool(over.any()) else "") + ".")
    return [Verdict(
        key=f"prop31_start_gap_run_{name}", claim=f"{name}: models start each step at one z'", n=cells,
        where="Prop. 3.1, eq. (23) (proof); Alg. 1", measured=f"start gap up to {top:.3g}",
        bound=f"0 (proof); <= {reach:g} (Alg. 1)", value=top, reference=0.0, test="max |z_1 - z_i| over cells",
        status=status_of(cells and bool(apart.any()), cells),
        detail=text, extra={"eta_reach": reach, "over_eta_reach": int(beyond.sum())})]


# --------------------------------------------------------------------------------------------
# the analysis contract


def compute(stores: Mapping, *, quick: bool = False, seed: int = 0, runs=None,
            pair: tuple[int, int] = (0, 1), chunk: int | None = None) -> xr.DataTree:
    """Per store (``{name: path or opened store}``): ``/<name>/results`` (``prop31``, read ``chunk``
    samples at a time) and ``/<name>/table5`` (``table5``, dim ``t``). Every store is checked
    (``require``) before any is read. ``quick``, ``seed`` and ``runs`` change nothing: every
    recorded step is read."""
    for store in stores.values():
        checked_store(store, _NEEDS)
    parts = {}
    for name, store in stores.items():
        parts[f"{name}/results"] = prop31(store, pair, chunk=chunk)
        parts[f"{name}/table5"] = xr.Dataset.from_dataframe(table5(store, pair))
    return xr.DataTree.from_dict(parts)


def verdicts(tree: xr.DataTree) -> list[Verdict]:
    """Each store's ``prop31_verdicts``, in the stores' order."""
    return [v for name, node in tree.children.items() for v in prop31_verdicts(node["results"].to_dataset(), name)]


def plot(tree: xr.DataTree) -> dict:
    """Per store: ``<store>/norm_gap``, ``<store>/angle_delta`` (with the paper's Table 5) and
    ``<store>/delta_parts`` (``prop31_figures``)."""
    return {f"{name}/{fig_name}": fig for name, node in tree.children.items()
            for fig_name, fig in prop31_figures(node["results"].to_dataset(), paper=True).items()}


def tables(tree: xr.DataTree) -> dict[str, pd.DataFrame]:
    """Per store: ``<store>/table5``, its Table 5 beside the paper's (``beside_paper``)."""
    return {f"{name}/table5": beside_paper(node["table5"].to_dataset().to_dataframe())
            for name, node in tree.children.items()}


def saved(tree: xr.DataTree) -> xr.DataTree:
    """What is written as zarr: each store's ``results`` (its Table 5 is written as CSV)."""
    return xr.DataTree.from_dict({f"{name}/results": node["results"].to_dataset()
                                  for name, node in tree.children.items()})


class NormAngle(Analysis):
    """Prop. 3.1 along recorded trajectories (``compute``, ``verdicts``, ... above)."""

    name, family, stores, reads, captions = NAME, "prop31", "required", ("trajectory",), CAPTIONS
    summary = "Prop. 3.1: norm gap, angle, delta and its parts per step; Table 5 beside the paper's"
    compute, verdicts, plot, tables, saved = map(staticmethod, (compute, verdicts, plot, tables, saved))

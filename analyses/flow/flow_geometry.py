"""App. G on recorded rectified-flow runs: Proposition G.1, eq. (46), "set mu = v", and eq. (8).

Per flow pair store (model 1 = index 0 and model 2 = index 1), on every step both models sampled,
per sample (``g1``):

- Prop. G.1, eq. (43): the norm gap, the angle and delta = |z_next_1 - z_next_2| of the sampled
  latents, with the bounds of eq. (43) (``amdm_geom.core.bounds.norm_gap_bound`` and
  ``cos_angle_lower_bound``: eq. (43) is eq. (5) on flow latents);
- eq. (47): delta against L_theta L_T + L_t with the Lipschitz products replaced by the measured
  terms at model 1's start z_1 (a run recorded with ``--cross-eps``): the conditional term
  |v_1(z_1, y_1) - v_1(z_1, y_2)| and the functional term |v_1(z_1, y_2) - v_2(z_1, y_2)|
  (``bounds.flow_delta_bound``), and the same bound for the step actually taken, scaled by
  |dt| (diffusers' step is z + dt v; eq. 46 prints z' - v);
- eq. (46) as printed, z_{t-1} = z_t - v(z_t), against the scheduler's step: the distance between
  the two updates and the ratio of their lengths (1 / |dt| for the deterministic step).

Per aggregation step (``mu_v``): what eq. (7)'s shift does when its target is the velocity
(App. G: "simply set mu = v") rather than the step's location mu (``steppers``): how much closer
to mu it moves z', against eta for the location target.

Where stochastic flow steps put noise (sigma_t = s_next > 0), Prop. 3.2's eq. (8) is judged by
``membership`` as for DDIM; a deterministic flow step has no noise and no shell: eq. (8) is then
outside its domain. Where flow latents concentrate is ``flow_shell`` (its own runs).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import xarray as xr

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.common import (
    both_sampled,
    checked_store,
    finite_samples,
    latent_block,
    membership,
    open_store,
    partial_data,
    sample_slices,
    streamed,
)
from amdm_geom.analyses.common.cells import steps_where
from amdm_geom.analyses.flow import shell as flow_shell
from amdm_geom.analyses.flow.figures import CAPTIONS, figures
from amdm_geom.core import bounds, geometry
from amdm_geom.core.verdicts import Verdict, at_least, at_most, qualify, status_of
from amdm_geom.store import etas, step_input, step_kinds

__all__ = ["CAPTIONS", "NAME", "FlowGeometry", "compute", "g1", "g1_verdicts", "mu_v", "plot", "saved", "tables",
           "verdicts"]

NAME = "flow_geometry"

_NEEDS = ("z_next", "z", "model_B", "model_sigma", "model_dt", "aggregated", "t")
_HINTS = {"v": "a flow run records model*.v", "z": "record the hook model*.z", "z_next": "record model*.z_next",
          "model_dt": "a run of flow models (App. G)"}
_G1 = ("norm_1", "norm_2", "norm_gap", "phi", "delta", "norm_gap_bound", "cos_bound", "start_gap", "step_1",
       "printed_step_1", "eq46_gap_1")
_CROSS = ("cond_term", "func_term", "printed_delta", "bound47", "bound47_step")


def _flow_store(store):
    ds, T, note = checked_store(open_store(store), _NEEDS, _HINTS)
    kinds = step_kinds(ds)
    if "flow" not in kinds:
        raise ValueError(f"store {ds.encoding.get('source', '(in memory)')} has no flow model (step kinds {kinds})")
    return ds, T, note


def _g1_step(a, b, z1, z2, v1, v2, dt, B1, sigma, n, cross) -> dict:
    """Prop. G.1's per-sample quantities at one step, on finite samples only."""
    printed = z1 - v1  # eq. (46) as printed, from model 1's own start
    out = {"norm_1": geometry.norm(a), "norm_2": geometry.norm(b), "norm_gap": geometry.norm_gap(a, b),
           "phi": geometry.angle(a, b), "delta": geometry.norm(a - b),
           "norm_gap_bound": bounds.norm_gap_bound(a, b), "cos_bound": bounds.cos_angle_lower_bound(a, b),
           "start_gap": geometry.norm(z1 - z2), "step_1": geometry.norm(a - z1),
           "printed_step_1": geometry.norm(v1), "eq46_gap_1": geometry.norm(printed - a)}
    if cross is not None:
        vc, va = cross  # v_1(z_1, y_2) and v_2(z_1, y_2)
        cond, func = geometry.norm(v1 - vc), geometry.norm(vc - va)
        out.update({"cond_term": cond, "func_term": func, "printed_delta": geometry.norm(v1 - va),
                    "bound47": bounds.flow_delta_bound(1.0, cond, func),
                    "bound47_step": bounds.delta_bound(B1, 1.0, cond, func, sigma, n)})
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def _g1_slice(ds, k, pair, inputs, cross, n, names):
    """The per-slice reader of step k for ``streamed``: Prop. G.1's quantities on one slice of samples."""
    i0, i1 = pair
    coef = (float(ds.model_dt[i0, k]), float(ds.model_B[i0, k]), float(ds.model_sigma[i0, k]))

    def per_slice(samples):
        blocks = [latent_block(ds, v, k, m, samples) for v in ("z_next", "z") for m in (i0, i1)]
        blocks += [latent_block(ds, inputs[0], k, i0, samples), latent_block(ds, inputs[1], k, i1, samples)]
        if cross:
            blocks += [latent_block(ds, "v_cross", k, i1, samples), latent_block(ds, "v_at_z1", k, i1, samples)]
        ok = finite_samples(*blocks)
        if not ok.any():
            return ok, {name: np.empty(0) for name in names}
        a, b, z1, z2, v1, v2, *rest = (x[ok] for x in blocks)
        return ok, _g1_step(a, b, z1, z2, v1, v2, *coef, n, rest or None)

    return per_slice


def g1(store, pair: tuple[int, int] = (0, 1), *, chunk: int | None = None) -> xr.Dataset:
    """Prop. G.1's quantities per step (where both models sampled) and sample (dims ``step``,
    ``sample``); non-finite samples are NaN at that step (``finite`` false) and counted. The
    latents are streamed, a slice of ``chunk`` samples at a time (``common.sample_slices``), so
    memory does not grow with the number of samples."""
    ds, T, note = _flow_store(store)
    i0, i1 = pair
    inputs = [step_input(ds, i) for i in pair]  # v, or a VP partner's eps
    if inputs[0] != "v":
        raise ValueError(f"model {i0} of the pair must be a flow model (step kinds {step_kinds(ds)})")
    # eq. (47)'s terms compare velocities: only between two flow models
    cross = "v_cross" in ds and "v_at_z1" in ds and inputs[1] == "v"
    slices = sample_slices(ds, "z_next", chunk)
    steps = both_sampled(ds, pair, chunk)
    if not steps:
        raise ValueError("the two models never sampled the same step in this store" + (f" ({note})" if note else ""))
    n = int(np.prod([ds.sizes[d] for d in ds["z"].dims[3:]]))
    names = _G1 + (_CROSS if cross else ())
    cols: dict[str, list] = {name: [] for name in names}
    finite = []
    for k in steps:
        values, ok = streamed(slices, _g1_slice(ds, k, pair, inputs, cross, n, names))
        for name, v in values.items():
            cols[name].append(v)
        finite.append(ok)
    agg = ds.aggregated.values
    res = xr.Dataset({name: (("step", "sample"), np.stack(v)) for name, v in cols.items()},
                     coords={"step": steps, "sample": ds.sample.values, "t": ("step", ds.t.values[steps]),
                             "flow_sigma": ("step", ds.model_flow_sigma.values[i0, steps]),
                             "dt": ("step", ds.model_dt.values[i0, steps]), "aggregated": ("step", agg[steps]),
                             "from_aggregate": ("step", [k > 0 and bool(agg[k - 1]) for k in steps])})
    res["finite"] = (("step", "sample"), np.stack(finite))
    res["cos_phi"] = np.cos(res["phi"])
    res.attrs.update({"pair": list(pair), "n": n, "cross_eps": int(cross), "T": T, "incomplete": note,
                      "kinds": list(step_kinds(ds)), "etas": etas(ds),
                      "stochastic": int(float(ds.model_sigma.max()) > 0), "store_dtype": ds.attrs.get("dtype", "")})
    return res


_MU_V = ("d0", "d_mu", "d_v", "cos_dirs")


def _mu_v_slice(ds, k, i, eta):
    """The per-slice reader of step k and flow model i for ``streamed``: ``mu_v``'s distances."""
    def per_slice(samples):
        agg, mu, v = (latent_block(ds, var, k, m, samples) for var, m in (("agg_z", None), ("mu", i), ("v", i)))
        ok = finite_samples(agg, mu, v)
        if not ok.any():
            return ok, {name: np.empty(0) for name in _MU_V}
        z, m, w = agg[ok], mu[ok], v[ok]
        values = (geometry.norm(z - m), geometry.norm(geometry.radial_shift(z, m, eta) - m),
                  geometry.norm(geometry.radial_shift(z, w, eta) - m), np.cos(geometry.angle(m - z, w - z)))
        return ok, {name: np.asarray(val, dtype=np.float64) for name, val in zip(_MU_V, values)}

    return per_slice


def mu_v(store, eta: float | None = None, *, chunk: int | None = None) -> xr.Dataset | None:
    """Per aggregation step, flow model and sample: |z' - mu| (before the shift), and after
    eq. (7)'s shift by eta towards the step's location mu (``d_mu``) or towards the velocity v as
    App. G prints it (``d_v``); ``cos_dirs`` the cosine between the two shift directions. None
    when the store has no aggregation step. The latents are streamed, a slice of ``chunk`` samples
    at a time (``common.sample_slices``), so memory does not grow with the number of samples."""
    ds, T, note = _flow_store(store)
    if "agg_z" not in ds or not bool(ds.aggregated.any()):
        return None
    eta = etas(ds)[0] if eta is None else float(eta)
    kinds = step_kinds(ds)
    models = [i for i in range(ds.sizes["model"]) if kinds[i] == "flow"]
    steps = [k for k in range(ds.sizes["step"]) if bool(ds.aggregated[k])]
    slices = sample_slices(ds, "agg_z", chunk)
    out = {name: np.full((len(steps), len(models), ds.sizes["sample"]), np.nan) for name in _MU_V}
    for a, k in enumerate(steps):
        for b, i in enumerate(models):
            values, _ = streamed(slices, _mu_v_slice(ds, k, i, eta))
            for name, val in values.items():
                out[name][a, b] = val
    res = xr.Dataset({k: (("step", "model", "sample"), v) for k, v in out.items()},
                     coords={"step": steps, "model": models, "sample": ds.sample.values,
                             "t": ("step", ds.t.values[steps])})
    res.attrs.update({"eta": eta, "incomplete": note, "T": T})
    return res


# --------------------------------------------------------------------------------------------
# verdicts


def g1_verdicts(res: xr.Dataset, name: str) -> list[Verdict]:
    """Eq. (43)'s two bounds, eq. (47)'s delta bound (on the steps that start from an aggregate)
    and eq. (46) as printed against the step, for one store."""
    fin = res.finite
    partial = partial_data(res)
    cells = int(fin.sum())
    measured = fin & res.norm_gap_bound.notnull()
    bad = measured & ~at_most(res.norm_gap, res.norm_gap_bound, rtol=1e-9, atol=1e-12)
    worst = float((res.norm_gap / res.norm_gap_bound.where(res.norm_gap_bound > 0)).max())
    out = [Verdict(key=f"flowG1_gap_{name}", claim=f"{name}: norm gap <= eq. (43) bound",
                   where="App. G, Prop. G.1, eq. (43)",
                   status=status_of(bad.any(), measured.any()),
                   measured=f"max gap/bound {worst:.3f}", bound="<= 1", value=worst, reference=1.0, n=cells,
                   detail=(f"On the flow models' sampled latents: {int(bad.sum())} of {cells} finite (step, sample) "
                           f"cells violate it ({steps_where(bad)}). With the measured delta it is Cauchy-Schwarz "
                           "(eqs. 44-45), as eq. (5) is."))]
    defined = fin & res.cos_bound.notnull()
    short = defined & ~at_least(res.cos_phi, res.cos_bound, atol=1e-12)
    slack = float((res.cos_phi - res.cos_bound).where(defined).min())
    out.append(Verdict(key=f"flowG1_angle_{name}", claim=f"{name}: cos phi >= eq. (43) bound",
                       where="App. G, Prop. G.1, eq. (43)", n=int(defined.sum()),
                       status=status_of(short.any(), defined.any()),
                       measured=f"min slack {slack:.2e}", bound=">= 0", value=slack, reference=0.0,
                       detail=f"Defined (cos phi >= 0) on {int(defined.sum())} of {cells} cells; violated on "
                              f"{int(short.sum())} ({steps_where(short)})."))
    out += _delta_verdict(res, name)
    out.append(_eq46_verdict(res, name))
    return [qualify(v, **partial) for v in out]


def _delta_verdict(res: xr.Dataset, name: str) -> list[Verdict]:
    premise = res.isel(step=res.from_aggregate.values)
    if "bound47" not in res or not premise.sizes["step"]:
        return []
    pf = premise.finite & premise.bound47.notnull()
    over = pf & ~at_most(premise.delta, premise.bound47, rtol=1e-9)
    r = (premise.delta / premise.bound47).where(pf)
    over_step = pf & ~at_most(premise.delta, premise.bound47_step, rtol=1e-9)
    with_start = premise.bound47_step + premise.start_gap
    over_start = pf & ~at_most(premise.delta, with_start, rtol=1e-9)
    ratio = float(r.max()) if bool(pf.any()) else math.nan
    printed_ratio = float((premise.printed_delta / premise.delta).where(pf).median()) if bool(pf.any()) else math.nan
    # eqs. (42) and (46) are a deterministic (ODE) step: a stochastic step's delta carries its noise
    noisy = bool(res.attrs.get("stochastic"))
    status = "outside domain" if noisy and bool(pf.any()) else status_of(over.any(), pf.any())
    return [Verdict(
        key=f"flowG1_delta_{name}", claim=f"{name}: delta <= L_theta L_T + L_t", where="App. G, Prop. G.1, eq. (47)",
        status=status,
        measured=f"max delta/bound {ratio:.3g}", bound="<= 1", value=ratio, reference=1.0, n=int(pf.sum()),
        test="per (step, sample) on steps that start from an aggregate: delta <= measured cond + func terms",
        detail=(("Outside its domain: eq. (42) is an ODE and eq. (46) a deterministic step, while these steps add "
                 "noise s_next xi, whose difference between the models eq. (47) has no term for. " if noisy else "")
                + f"With L_theta L_T and L_t set to the measured conditional and functional terms at model 1's start, "
                f"delta exceeds eq. (47) on {int(over.sum())} of {int(pf.sum())} cells ({steps_where(over)}). Eq. (47) "
                f"bounds |v_1 - v_2| (eq. 46 has no step size): that printed delta is a median {printed_ratio:.3g} "
                f"times the delta of the step taken (z + dt v). The bound of the step taken, |B| (cond + func) "
                f"+ sigma sqrt(2n), is exceeded on {int(over_step.sum())} cells; adding the distance between the "
                f"two shifted starts (Algorithm 1 starts the models eta apart), on {int(over_start.sum())}."),
        extra={"over_step_bound": int(over_step.sum()), "over_with_start": int(over_start.sum()),
               "printed_over_taken": printed_ratio})]


def _eq46_verdict(res: xr.Dataset, name: str) -> Verdict:
    fin = res.finite & res.step_1.notnull()
    rel = (res.eq46_gap_1 / res.norm_1).where(fin)
    length = (res.printed_step_1 / res.step_1.where(res.step_1 > 0)).where(fin)
    dt = np.abs(res.dt.values)
    tol = 1e-5  # float32 steps: the two updates agree to this relative distance if eq. (46) were the step
    wrong = fin & (rel > tol)
    return Verdict(
        key=f"flow_eq46_{name}", claim=f"{name}: z_t-1 = z'_t - v is the flow step", where="App. G, eq. (46)",
        status=status_of(wrong.any(), fin.any()),
        measured=f"median |printed - step|/|z| {float(rel.median()):.3g}", bound=f"<= {tol:g}",
        value=float(rel.median()), reference=tol, n=int(fin.sum()),
        test="per (step, sample): |(z - v) - z_next| / |z_next| against float32 rounding",
        detail=(f"Eq. (46) prints the step without its size: diffusers' Euler step is z + dt v with |dt| = "
                f"{dt.min():.3g}..{dt.max():.3g} here (1/T for a uniform grid), so the printed update is "
                f"{float(length.median()):.3g} times as long (median) and lands a median "
                f"{float(rel.median()):.3g} |z| from the step's result ({int(wrong.sum())} of {int(fin.sum())} cells "
                "beyond rounding). Prop. G.1's argument survives with delta scaled by |dt| (flowG1_delta)."),
        extra={"length_ratio_median": float(length.median())})


def mu_v_verdict(res: xr.Dataset, name: str) -> Verdict:
    """Whether the shift towards v (App. G's mu = v) moves z' towards the step's location mu, as
    the shift towards mu does by eta, judged on the share of cells where it brings z' closer."""
    from scipy import stats

    ok = res.d0.notnull() & res.d_v.notnull()
    n = int(ok.sum())
    closer = int(((res.d_v < res.d0) & ok).sum())
    ci = stats.binomtest(closer, n).proportion_ci(0.95, method="exact") if n else None
    share = closer / n if n else math.nan
    target = 0.95
    status = status_of(n and ci.high < target, n and ci.low >= target, "inconclusive" if n else "vacuous")
    gain_v = float((res.d0 - res.d_v).where(ok).median())
    return Verdict(
        key=f"flow_mu_v_{name}", claim=f"{name}: with mu = v the shift moves z' towards the step",
        where="App. G (Prop. 3.2 with mu = v)", status=status, measured=f"closer on {share:.2f} of cells",
        bound=f">= {target:g}", value=share, reference=target, n=n,
        interval=(float(ci.low), float(ci.high)) if n else None, level=0.95 if n else None,
        test="Clopper-Pearson on the share of (step, model, sample) cells where |shift(z', v) - mu| < |z' - mu|",
        detail=(f"Eq. (7) with the step's location mu as target moves z' exactly eta = {res.attrs['eta']:g} closer "
                f"to mu (until it overshoots); with the velocity v as target (App. G: 'simply set mu = v') it moves "
                f"z' a median {gain_v:.3g} closer, closer at all on {closer} of {n} cells; the two shift directions "
                f"have median cosine {float(res.cos_dirs.where(ok).median()):.3g}. A velocity is a direction of "
                "motion, not a point of the latent space: as a target it pulls z' towards v's coordinates."))


# --------------------------------------------------------------------------------------------
# the analysis contract


def compute(stores: Mapping, *, quick: bool = False, seed: int = 0, runs=None) -> xr.DataTree:
    """Per flow store: ``/<name>/g1`` (``g1``; pairs only), ``/<name>/mu_v`` (``mu_v``, where it
    aggregated), ``/<name>/prop32`` (``membership.prop32`` where stochastic steps add noise); and
    ``/shell``: where flow latents concentrate (``flow_shell.shell``, its own runs)."""
    for store in stores.values():
        _flow_store(store)
    parts = {}
    for name, store in stores.items():
        ds = open_store(store)
        if ds.sizes["model"] > 1:
            parts[f"{name}/g1"] = g1(store)
        mv = mu_v(store)
        if mv is not None:
            parts[f"{name}/mu_v"] = mv
        if ds.sizes["model"] > 1 and bool((ds.model_sigma > 0).any()) and bool(ds.aggregated.any()):
            parts[f"{name}/prop32"] = membership.prop32(store)
    parts["shell"] = flow_shell.shell(quick=quick, seed=seed)
    return xr.DataTree.from_dict(parts)


def _prefixed(v: Verdict, name: str) -> Verdict:
    return dataclasses.replace(v, key=f"flow_{v.key}_{name}", claim=f"{name} (flow): {v.claim}",
                               where=f"App. G; {v.where}")


def verdicts(tree: xr.DataTree) -> list[Verdict]:
    """Per store: Prop. G.1 and eq. (46) (``g1_verdicts``), mu = v (``mu_v_verdict``), eq. (8)
    (``membership.prop32_verdicts`` on stochastic flow steps; outside its domain on deterministic
    ones); then the shell (``flow_shell.verdicts``)."""
    out = []
    for name, node in tree.children.items():
        if name == "shell":
            continue
        if "g1" in node:
            out += g1_verdicts(node["g1"].to_dataset(), name)
        if "mu_v" in node:
            out.append(mu_v_verdict(node["mu_v"].to_dataset(), name))
        if "prop32" in node:
            summary = membership.summarize({name: node["prop32"].to_dataset()})
            out += [_prefixed(v, name) for v in membership.prop32_verdicts(summary)]
        elif "g1" in node and not node["g1"].attrs.get("stochastic"):
            out.append(flow_shell.deterministic_eq8(node["g1"].to_dataset(), name))
    return out + flow_shell.verdicts(tree["shell"].to_dataset())


def plot(tree: xr.DataTree) -> dict:
    return figures(tree)


def tables(tree: xr.DataTree) -> dict:
    """``shell``: per step the measured and predicted radii; per store ``<name>/g1``: per step medians."""
    out = {"shell": tree["shell"].to_dataset().drop_dims("sample", errors="ignore").to_dataframe()}
    for name, node in tree.children.items():
        if "g1" in node:
            g = node["g1"].to_dataset()
            out[f"{name}/g1"] = g[[v for v in g.data_vars if v != "finite"]].median("sample").to_dataframe()
    return out


def saved(tree: xr.DataTree) -> xr.DataTree:
    return tree


class FlowGeometry(Analysis):
    """App. G's geometry on flow stores (``compute``, ``verdicts``, ... above)."""

    name, family, stores, reads, captions = NAME, "app-g", "required", ("flow",), CAPTIONS
    summary = "App. G: Prop. G.1 (eqs. 43, 47), eq. (46) against the step, mu = v, eq. (8) and the flow's shell"
    compute, verdicts, plot, tables, saved = map(staticmethod, (compute, verdicts, plot, tables, saved))


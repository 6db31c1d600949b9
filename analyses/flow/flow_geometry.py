"""App. G on recorded rectified-flow runs: Proposition G.1, eq. (46), "set mu = v", and eq. (8).

Per flow pair store (model 1 = index 0 and model 2 = index 1), on every step both models sampled,
per sample (``g1``):

- Prop. G.1, eq. (43): the norm gap, the angle and delta = |z_next_1 - z_next_2| of the sampled
  latents, with the bounds of eq. (43) (``amdm_geom.core.bounds.norm_gap_bound`` and
  ``cos_angle_lower_bound``: eq. (43) is eq. (5) on flow latents);
- eq. (47): delta against |dt| (L_theta L_T + L_t), the bound for the step actually taken
  (diffusers' step is z + dt v; eq. 46 prints z' - v), with the Lipschitz products replaced by the
  measured terms at model 1's start z_1 (a run recorded with ``--cross-eps``): the conditional term
  |v_1(z_1, y_1) - v_1(z_1, y_2)| and the functional term |v_1(z_1, y_2) - v_2(z_1, y_2)|; and
  against eq. (47) as printed, with no |dt| (``bounds.flow_delta_bound``);
- eq. (46) as printed, z_{t-1} = z_t - v(z_t), against the scheduler's step: the distance between
  the two updates and the ratio of their lengths (1 / |dt| for the deterministic step).

Per aggregation step (``mu_v``): what eq. (7)'s shift does when its target is the velocity
(App. G: "simply set mu = v") rather than the step's location mu (``steppers``): how much closer
to mu it moves z', against eta for the location target.

Where stochastic flow steps put noise (sigma_t = s_next > 0), Prop. 3.2's eq. (8) is judged by
``membership`` as for DDIM; a deterministic flow step has no noise and no shell: eq. (8) is then
outside its domain. Where flow latents concentrate is ``flow_shell`` (its own runs). Prop. G.1's
verdicts are ``g1_verdicts``'s.
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
    sample_slices,
    streamed,
)
from amdm_geom.analyses.flow import shell as flow_shell
from amdm_geom.analyses.flow.figures import CAPTIONS, figures
from amdm_geom.analyses.flow.g1_verdicts import g1_verdicts
from amdm_geom.core import bounds, geometry
from amdm_geom.core.verdicts import Verdict, status_of
from amdm_geom.store import etas, step_input, step_kinds

__all__ = ["CAPTIONS", "NAME", "FlowGeometry", "compute", "g1", "g1_verdicts", "mu_v", "plot", "saved", "tables",
           "verdicts"]

NAME = "flow_geometry"

_NEEDS = ("z_next", "z", "model_B", "model_sigma", "model_dt", "aggregated", "t")
_HINTS = {"v": "a flow run records model*.v", "z": "record the hook model*.z", "z_next": "record model*.z_next",
          "model_dt": "a run of flow models (App. G)"}
_G1 = ("norm_1", "norm_2", "norm_gap", "phi", "delta", "norm_gap_bound", "cos_bound", "start_gap", "step_1",
       "printed_step_1", "eq46_gap_1")
_CROSS = ("cond_term", "func_term", "printed_delta", "bound47", "bound47_step", "start_v_term")


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
                    "bound47_step": bounds.delta_bound(B1, 1.0, cond, func, sigma, n),
                    # model 2's velocity at its own start against at model 1's: what the common start hides
                    "start_v_term": geometry.norm(va - v2)})
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
                             "A": ("step", ds.model_A.values[i0, steps]), "B": ("step", ds.model_B.values[i0, steps]),
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
    eta, d0 = float(res.attrs["eta"]), float(res.d0.where(ok).median())
    cone = math.degrees(math.acos(min(1.0, eta / (2 * d0)))) if n and d0 > 0 else math.nan
    return Verdict(
        key=f"flow_mu_v_{name}", claim=f"{name}: with mu = v the shift moves z' closer to the step's location",
        where="App. G (Prop. 3.2 with mu = v)", status=status, measured=f"closer on {share:.2f} of cells",
        bound=f">= {target:g}", value=share, reference=target, n=n,
        interval=(float(ci.low), float(ci.high)) if n else None, level=0.95 if n else None,
        test="Clopper-Pearson on the share of (step, model, sample) cells where |shift(z', v) - mu| < |z' - mu|",
        detail=(f"Eq. (7) with the step's location mu as target moves z' exactly eta = {res.attrs['eta']:g} closer "
                f"to mu (until it overshoots); with the velocity v as target (App. G: 'simply set mu = v') it moves "
                f"z' a median {gain_v:.3g} closer, closer at all on {closer} of {n} cells; the two shift directions "
                f"have median cosine {float(res.cos_dirs.where(ok).median()):.3g}. A velocity is a direction of "
                "motion, not a point of the latent space: as a target it pulls z' towards v's coordinates. What "
                "'closer' decides is weak: a move of eta along a direction at cosine c to mu's shortens |z' - mu| "
                f"exactly when c > eta / (2 |z' - mu|), and |z' - mu| is a median {d0:.3g} here, so any direction "
                f"within about {cone:.0f} degrees of mu's counts; the shift towards v achieves a median "
                f"{gain_v / eta:.0%} of the location's gain eta. A share near 1 says v's direction falls in that "
                "cone (a wide one where |z' - mu| is large, as when a stochastic step's noise s_next xi dominates "
                "it), not that v locates the step."),
        extra={"gain_share": gain_v / eta, "cone_degrees": cone})


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


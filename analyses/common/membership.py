"""Proposition 3.2 on recorded runs: whether the shifted latent lies where model 2 puts its mass.

- ``prop32``: on a run with sigma_t > 0, per aggregation step and sample, whether the shifted
  latent z~ (model 1's ``z_shift``) lies in model 2's shell A(eps) around mu_theta2 (eq. 26),
  against the bound of eq. (8) with d = phi_w(phi) delta + eta taken from the run; for the GMM
  family also whether z~ lies in the generation domain D itself, taken as the level set of the
  exact density p_{t-1}(z | y2) that holds ``level`` of that density's own exact samples.
- ``sweep`` / ``summarize``: ``prop32`` over several runs (eps, eta, w), summarised per run and
  eps; ``prop32_verdicts`` judges the summary (eq. 8 pooled or per run: ``bound_verdicts``).

Used by the ``shell`` analysis.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import xarray as xr
from scipy import stats

from amdm_geom.analyses.common import (
    finite_samples,
    latent_block,
    open_store,
    pooled_partial,
    sample_slices,
    slot_written_streamed,
    streamed,
)
from amdm_geom.core import bounds, geometry
from amdm_geom.core.verdicts import Verdict, at_least, margin_text, qualify, status_of
from amdm_geom.models.gmm import from_description
from amdm_geom.store import Built, built_of, completed_steps, etas, incomplete_note, require, sampler_config

__all__ = ["EPS_GRID", "bound_verdicts", "prop32", "prop32_verdicts", "summarize", "sweep"]

EPS_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


#: What ``prop32`` reads.
_NEEDS = ("z_next", "mu", "z_shift", "agg_z", "z", "model_sigma", "model_alpha_bar_prev", "aggregated", "t")
_HINTS = {v: f"record the hook {'agg.z' if v == 'agg_z' else 'model*.' + v}" for v in ("z_next", "mu", "z_shift",
                                                                                       "agg_z", "z")}


def prop32(store, eps_grid=EPS_GRID, *, level: float = 0.95, n_ref: int = 256, seed: int = 0,
           partner: int = 1, chunk: int | None = None) -> xr.Dataset:
    """Prop. 3.2 on one run, per aggregation step with sigma_t > 0 and per sample.

    Variables: ``radius`` = |z~ - mu_2| / (sigma sqrt n) (1 on model 2's shell), the same for
    model 2's own sample (``radius_own``), ``d`` and ``d_scaled`` = d / (sigma sqrt n), and over
    ``eps``: ``in_shell``, ``bound`` (eq. 8, NaN off its domain) and ``exact`` (the chi
    probability of eq. 36's event). For a GMM-family run, ``in_domain`` (z~ in the level set of
    p_{t-1}(z | y2) holding ``level`` of its own exact samples) and the same for model 2's and
    model 1's own samples (``in_domain_own``, ``in_domain_model1``), with the threshold ``tau``.

    Only completed steps are read (``attrs["incomplete"]``). ``finite`` marks the (step,
    sample) cells whose inputs are all finite; the others are NaN (False for the memberships)
    and left out of ``summarize``, which counts them. The latents are streamed, a slice of
    ``chunk`` samples at a time (``common.sample_slices``), so memory does not grow with the
    number of samples.
    """
    ds = open_store(store)
    require(ds, variables=_NEEDS, hints=_HINTS)
    if partner < 1 or partner >= ds.sizes["model"]:
        raise ValueError(f"partner must be a model index in [1, {ds.sizes['model'] - 1}]; got {partner}")
    cfg = sampler_config(ds)
    T, note = int(ds.sizes["step"]), incomplete_note(ds)
    ds = completed_steps(ds)
    w = cfg.weights[partner - 1] if partner == 1 else math.nan
    eta = etas(ds)[0]
    n = int(np.prod([ds.sizes[d] for d in ds["z"].dims[3:]]))
    slices = sample_slices(ds, "z_next", chunk)
    steps = [k for k in range(ds.sizes["step"])
             if bool(ds.aggregated[k]) and float(ds.model_sigma[partner, k]) > 0
             and all(slot_written_streamed(ds, v, k, m, slices) for v, m in _reads(partner))]
    if not steps:
        raise ValueError("prop32 needs aggregation steps with sigma_t > 0: record a run with --ddim-eta > 0"
                         + (f" ({note})" if note else ""))
    gmm = _gmm_partner(built_of(ds), partner)
    eps = np.asarray(eps_grid, dtype=np.float64)
    cols: dict[str, list] = {}
    finite = []
    for k in steps:
        domain = None
        if gmm is not None:  # the step's threshold: once per step, whatever the samples
            abar = float(ds.model_alpha_bar_prev[partner, k])
            domain = (gmm, abar, _level(gmm[0], gmm[1], abar, level, n_ref, seed + k))
        full, ok = streamed(slices, _step_slice(ds, k, partner, (n, w, eta, eps), domain))
        if domain is not None:
            full["tau"] = np.full(ok.shape[0], domain[2])
        for name, v in full.items():
            cols.setdefault(name, []).append(v)
        finite.append(ok)
    data = {}
    for name, values in cols.items():
        arr = np.stack(values)
        dims = ("step", "sample", "eps") if arr.ndim == 3 else ("step", "sample")
        data[name] = (dims, arr.astype(np.float64) if arr.dtype != bool else arr)
    data["finite"] = (("step", "sample"), np.stack(finite))
    res = xr.Dataset(data, coords={"step": steps, "sample": ds.sample.values, "eps": eps,
                                   "t": ("step", ds.t.values[steps]), "t_index": ("step", [T - 1 - k for k in steps]),
                                   "sigma": ("step", ds.model_sigma.values[partner, steps])})
    with np.errstate(invalid="ignore"):
        res["in_shell"] = (np.abs(res.radius - 1) <= res.eps) & res.finite
        res["in_shell_own"] = (np.abs(res.radius_own - 1) <= res.eps) & res.finite
    res.attrs.update({"n": n, "w": w, "eta": eta, "level": level, "partner": partner, "gmm": int(gmm is not None),
                      "ddim_eta": cfg.ddim_eta, "T": T, "incomplete": note})
    return res


def _reads(partner: int) -> tuple:
    """What ``prop32`` reads at a step, as (variable, model): z~, mu_2, model 2's and model 1's
    samples, and the aggregate (no model dim)."""
    return ("z_shift", 0), ("mu", partner), ("z_next", partner), ("z_next", 0), ("agg_z", None)


def _step_slice(ds, k, partner, consts, domain):
    """The per-slice reader of step k for ``streamed``: Prop. 3.2's quantities on one slice of
    samples (``consts``: n, w, eta and the eps grid; ``domain``: the GMM partner, abar and tau, or
    None)."""
    n, w, eta, eps = consts
    sigma = float(ds.model_sigma[partner, k])

    def per_slice(samples):
        blocks = [latent_block(ds, v, k, m, samples) for v, m in _reads(partner)]
        ok = finite_samples(*blocks)
        z_tilde, mu2, own, z1, agg = (b[ok] for b in blocks)
        values = _step_values(z_tilde, mu2, own, z1, agg, sigma, n, w, eta, eps) if ok.any() else {
            name: np.empty((0, len(eps)) if name in ("bound", "exact", "printed") else 0) for name in _STEP_NAMES}
        if domain is not None:
            (model, cond), abar, tau = domain
            log_p = lambda z: model.mixture.log_prob(torch.from_numpy(z), cond, abar).numpy()  # noqa: E731
            values.update({"in_domain": log_p(z_tilde) >= tau, "in_domain_own": log_p(own) >= tau,
                           "in_domain_model1": log_p(z1) >= tau} if ok.any() else
                          {name: np.empty(0, dtype=bool) for name in _DOMAIN_NAMES})
        return ok, values

    return per_slice


_STEP_NAMES = ("radius", "radius_own", "radius_aggregate", "d", "d_scaled", "phi", "bound", "exact", "printed")
_DOMAIN_NAMES = ("in_domain", "in_domain_own", "in_domain_model1")


def _step_values(z_tilde, mu2, own, z1, agg, sigma, n, w, eta, eps) -> dict:
    """Prop. 3.2's per-sample quantities at one step, on finite samples only."""
    scale = sigma * math.sqrt(n)
    phi, delta = geometry.angle(z1, own), geometry.norm(z1 - own)
    d = bounds.max_distance(phi, delta, w, eta)
    return {"radius": geometry.norm(z_tilde - mu2) / scale, "radius_own": geometry.norm(own - mu2) / scale,
            "radius_aggregate": geometry.norm(agg - mu2) / scale, "d": d, "d_scaled": d / scale, "phi": phi,
            "bound": bounds.prop32_lower_bound(n, eps[:, None], d[None, :], sigma).T,
            "printed": _printed_formula(n, eps[:, None] - (d / scale)[None, :]).T,
            "exact": bounds.prop32_probability_exact(n, eps[:, None], d[None, :], sigma).T}


def _printed_formula(n: int, e):
    """Eq. (8)'s right-hand side as printed, 1 - 2 exp(-n e^2 / (1 + 2 e)), for any e = eps -
    d/(sigma sqrt n), its domain (e >= 0) or not; written out here rather than taken from
    ``bounds.prop32_lower_bound``, which is NaN off the domain. For -1/2 < e < 0 it is near 1
    at large n; below -1/2 it is hugely negative (-inf where exp overflows)."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return 1.0 - 2.0 * np.exp(-n * e**2 / (1.0 + 2.0 * e))


def _gmm_partner(built: Built, partner: int):
    desc = built.models[partner]
    if desc.get("family") != "gmm" or "family_params" not in desc:
        return None
    model = from_description(desc, dtype=torch.float64)
    cond = torch.tensor(built.conditions[partner], dtype=torch.float64)
    return model, cond / cond.sum()


def _level(model, cond, abar: float, level: float, n_ref: int, seed: int) -> float:
    """The log-density threshold tau with P(log p_t(Z | y) >= tau) = level for Z ~ p_t(. | y),
    from ``n_ref`` exact draws (the forward process applied to exact samples of p_0)."""
    z, _ = model.mixture.sample_diffused(cond, n_ref, abar, np.random.default_rng(seed))
    return float(np.quantile(model.mixture.log_prob(z, cond, abar).numpy(), 1 - level))


def sweep(stores: dict, **kwargs) -> xr.Dataset:
    """``prop32`` over several runs (``{name: path}``), summarised (see ``summarize``)."""
    return summarize({name: prop32(path, **kwargs) for name, path in stores.items()})


def _finite_mean(da: xr.DataArray, finite: xr.DataArray, dims=None) -> xr.DataArray:
    """The mean of ``da`` over the finite cells (NaN, silently, where there is none)."""
    dims = dims or finite.dims
    with np.errstate(invalid="ignore", divide="ignore"):
        return da.where(finite).sum(dims) / finite.sum(dims)


def _off_domain(later: xr.Dataset, fin: xr.DataArray) -> dict:
    """Where eq. (8) is off its domain by less than 1/2 (0 < d/(sigma sqrt n) - eps < 1/2), its
    printed formula is still a number near 1: the share of such cells (``off_share``), the
    formula's mean there (``printed_off``) and how often z~ is in A(eps) there
    (``membership_off``); NaN where there is no such cell."""
    if "printed" not in later:
        nan = xr.full_like(later.eps, math.nan, dtype=np.float64)
        return {"off_share": nan, "printed_off": nan, "membership_off": nan}
    over = later.d_scaled - later.eps
    off = (over > 0) & (over < 0.5) & fin
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"off_share": _finite_mean(off, fin), "printed_off": later.printed.where(off).sum(fin.dims) / off.sum(
            fin.dims), "membership_off": (later.in_shell & off).sum(fin.dims) / off.sum(fin.dims)}


def summarize(rows: dict) -> xr.Dataset:
    """``prop32`` results (``{name: Dataset}``) summarised per run and eps over the aggregation
    steps after the first (the first starts from independent z_T, App. D.3), on the finite
    (step, sample) cells only. Per run: ``nonfinite`` (samples non-finite at any step
    ``prop32`` read), ``samples`` and ``incomplete`` (the store's note, "" when complete)."""
    summary = {}
    for name, res in rows.items():
        later = res.isel(step=slice(1, None)) if res.sizes["step"] > 1 else res
        fin = later["finite"] if "finite" in later else xr.ones_like(later.radius, dtype=bool)
        mean = lambda da: _finite_mean(da, fin)  # noqa: E731
        summary[name] = {
            "membership": mean(later.in_shell),
            "membership_own": mean(later.in_shell_own),
            "bound_mean": mean(later.bound.fillna(0.0).clip(min=0.0)),
            "defined_share": mean(later.bound.notnull()),
            **_off_domain(later, fin),
            "radius": mean(later.radius), "radius_own": mean(later.radius_own),
            "d_scaled": mean(later.d_scaled), "w": res.attrs["w"], "eta": res.attrs["eta"],
            "in_domain": mean(later.in_domain) if "in_domain" in later else math.nan,
            "in_domain_count": int((later.in_domain & fin).sum()) if "in_domain" in later else 0,
            "in_domain_own": mean(later.in_domain_own) if "in_domain_own" in later else math.nan,
            "in_domain_model1": mean(later.in_domain_model1) if "in_domain_model1" in later else math.nan,
            "nonfinite": int((~res.finite).any("step").sum()) if "finite" in res else 0,
            "samples": int(res.sizes["sample"]), "incomplete": str(res.attrs.get("incomplete", "")),
            "cells": int(fin.sum()), "in_shell_count": (later.in_shell & fin).sum(fin.dims),
        }
    names = list(summary)
    eps = rows[names[0]].eps.values
    out = xr.Dataset(coords={"run": names, "eps": eps})
    for key in ("membership", "membership_own", "bound_mean", "defined_share", "off_share", "printed_off",
                "membership_off"):
        out[key] = (("run", "eps"), np.stack([summary[n][key].values for n in names]))
    for key in ("radius", "radius_own", "d_scaled", "w", "eta", "in_domain", "in_domain_own", "in_domain_model1"):
        out[key] = ("run", np.array([float(summary[n][key]) for n in names]))
    for key in ("nonfinite", "samples", "cells", "in_domain_count"):
        out[key] = ("run", np.array([summary[n][key] for n in names], dtype=np.int64))
    out["in_shell_count"] = (("run", "eps"), np.stack([summary[n]["in_shell_count"].values for n in names]))
    out["incomplete"] = ("run", np.array([summary[n]["incomplete"] for n in names], dtype=object))
    out.attrs["level"] = rows[names[0]].attrs["level"]
    out.attrs["n"] = rows[names[0]].attrs["n"]
    return out


def _nanmin(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.min(values[np.isfinite(values)])) if np.isfinite(values).any() else math.nan


def _off_domain_text(summary: xr.Dataset) -> str:
    """What eq. (8)'s printed formula says where it is off its domain (see ``_off_domain``)."""
    if "printed_off" not in summary or not np.isfinite(summary.printed_off.values).any():
        return ""
    printed = summary.printed_off.values
    i, j = np.unravel_index(int(np.nanargmax(printed)), printed.shape)
    member = summary.membership_off.values
    return (f" Where d/(sigma sqrt n) exceeds eps (by less than 1/2; {float(np.nanmean(summary.off_share)):.0%} of "
            f"(step, sample, eps) cells) eq. (8) does not apply, yet its printed formula, evaluated there, returns "
            f"{float(np.nanmin(printed)):.3f}..{float(np.nanmax(printed)):.3f} (mean per run and eps; "
            f"{printed[i, j]:.3f} at {summary.run.values[i]}, eps = {float(summary.eps[j]):g}) while z~ lies in A(eps) "
            f"on {float(np.nanmin(member)):.2f}..{float(np.nanmax(member)):.2f} of those cells "
            f"({member[i, j]:.2f} there).")


def _clopper_pearson(summary: xr.Dataset, count: str, worst: int, rule: str, eps: float | None = None) -> dict:
    """The Clopper-Pearson interval (95%) of the worst run's frequency ``count`` (at ``eps``
    where it has that dim) over its finite (step, sample) cells, treated as independent
    outcomes; ``rule`` says how the verdict was decided."""
    if "cells" not in summary or count not in summary or int(summary.cells[worst]) == 0:
        return {}
    n = int(summary.cells[worst])
    counts = summary[count] if eps is None else summary[count].sel(eps=eps)
    ci = stats.binomtest(int(counts[worst]), n).proportion_ci(0.95, method="exact")
    return {"interval": (float(ci.low), float(ci.high)), "level": 0.95, "n": n,
            "test": f"Clopper-Pearson over (step, sample) cells, treated as independent; {rule}"}


def _bound_verdict(summary: xr.Dataset, key: str, claim: str) -> Verdict:
    """Eq. (8) against the membership frequency over the (run, eps) cells of ``summary``."""
    defined = summary.defined_share > 0
    violated = ~at_least(summary.membership, summary.bound_mean) & defined
    holds = defined & ~violated
    runs = "; ".join(f"w={float(summary.w[i]):g}, eta={float(summary.eta[i]):g}" for i in range(summary.sizes["run"]))
    eps_text = ", ".join(f"{e:g}" for e in summary.eps.values)
    why = (f"It is vacuous where d/(sigma sqrt n) >= eps: here d/(sigma sqrt n) = {_nanmin(summary.d_scaled):.2f}"
           f"..{-_nanmin(-summary.d_scaled.values):.2f}, because delta itself is mostly sampling noise of size "
           f"sigma sqrt(2n).")
    gap = (summary.membership - summary.bound_mean).where(holds)
    if bool(holds.any()):
        i, j = np.unravel_index(int(np.nanargmin(gap.values)), gap.shape)
        tight = (f" (membership minus bound >= {float(gap.min()):.2f}; tightest at {summary.run.values[i]}, "
                 f"eps = {float(summary.eps[j]):g}: {float(summary.membership[i, j]):.17g} against "
                 f"{float(summary.bound_mean[i, j]):.17g}, "
                 f"{margin_text(summary.membership[i, j], summary.bound_mean[i, j])})")
    else:
        tight = ""
    return Verdict(
        key=key, claim=claim, where="Prop. 3.2, eq. (8)",
        status=status_of(violated.any(), holds.any()),
        measured=f"{int(defined.sum())}/{defined.size} cells non-vacuous", bound="eq. (8)",
        value=float(gap.min()) if bool(holds.any()) else math.nan, reference=0.0,
        detail=(f"Over runs ({runs}) and eps = {eps_text}: {int(holds.sum())} (run, eps) cells hold" + tight
                + f", {int(violated.sum())} violated, {int((~defined).sum())} vacuous. " + why
                + _off_domain_text(summary)),
        test="eq. (8) against the membership frequency, per (run, eps)")


def bound_verdicts(summary: xr.Dataset, *, per_run: bool = False) -> list[Verdict]:
    """Eq. (8) over a ``sweep``: one row pooled over its runs (``prop32_bound_runs``), or, with
    ``per_run``, one row per run (``prop32_bound_runs_<run>``), so that a run where eq. (8) is
    informative does not lend its "holds" to runs where it is vacuous. Each row says what its
    runs left out (``qualify``)."""
    claim = "z~ in A(eps) w.p. >= eq. (8)"
    if not per_run:
        return [qualify(_bound_verdict(summary, "prop32_bound_runs", claim), **pooled_partial(summary, "run"))]
    out = []
    for i, run in enumerate(summary.run.values):
        one = summary.isel(run=[i])
        label = f"{run} (w={float(summary.w[i]):g}, eta={float(summary.eta[i]):g}): {claim}"
        out.append(qualify(_bound_verdict(one, f"prop32_bound_runs_{run}", label), **pooled_partial(one, "run")))
    return out


def prop32_verdicts(summary: xr.Dataset, *, per_run: bool = False) -> list[Verdict]:
    """Verdicts over a ``sweep``: eq. (8) where it says something (``bound_verdicts``: pooled, or
    per run with ``per_run``), the prose claim (z~ lies in model 2's shell with high
    probability), and, for GMM runs, membership of D.

    Membership and bounds are compared up to rounding (``at_least``); each row says what was
    left out (non-finite samples, incomplete stores) and then never holds (``qualify``)."""
    partial = pooled_partial(summary, "run")  # what the runs left out
    runs = "; ".join(f"w={float(summary.w[i]):g}, eta={float(summary.eta[i]):g}" for i in range(summary.sizes["run"]))
    out = []

    # the prose: with high probability z~ is in model 2's shell; judged at the thinnest shell that
    # holds 99% of model 2's own samples
    own = summary.membership_own.mean("run")
    enough = at_least(own.values, 0.99)
    eps_star = float(summary.eps[int(np.argmax(enough))]) if bool(enough.any()) else float(summary.eps[-1])
    got = summary.membership.sel(eps=eps_star)
    ref = float(summary.membership_own.sel(eps=eps_star).mean())
    worst = int(np.nanargmin(got.values)) if np.isfinite(got.values).any() else 0
    lo, hi = float(summary.radius.min()), float(summary.radius.max())
    where = ("inside the ball around mu_2, off its shell" if hi < 1 - eps_star else
             "outside model 2's shell (the shift carried it past the mean)" if lo > 1 + eps_star else
             "inside the shell's ball for some runs and outside it for others" if lo < 1 - eps_star < 1 + eps_star < hi
             else "near the shell")
    out.append(Verdict(
        key="prop32_shell_claim", claim="z~ in model 2's shell w.h.p.", where="Prop. 3.2 (text)",
        status="holds" if at_least(float(got.min()), ref - 0.1) else "violated",
        measured=f"P(z~ in A({eps_star:g})) {float(got.min()):.2f}", bound=f"{ref:.2f} (model 2's own)",
        value=float(got.min()), reference=ref,
        **_clopper_pearson(summary, "in_shell_count", worst, "decided against 0.1 below model 2's own", eps_star),
        detail=(f"At eps = {eps_star:g}, the thinnest shell holding 99% of model 2's own samples, z~ falls in it with "
                f"frequency {', '.join(f'{float(v):.2f}' for v in got.values)} over runs ({runs}); worst at "
                f"{summary.run.values[worst]}. z~ sits at |z~ - mu_2| = {float(summary.radius.min()):.2f}.."
                f"{float(summary.radius.max()):.2f} sigma sqrt n (mean per run) against model 2's own "
                f"{float(summary.radius_own.mean()):.3f}: {where}.")))

    if np.isfinite(summary.in_domain.values).any():
        inside = float(np.nanmin(summary.in_domain))
        own_d = float(np.nanmean(summary.in_domain_own))
        other = float(np.nanmean(summary.in_domain_model1))
        level = summary.attrs["level"]
        plain = (" It does not discriminate, though: model 1's own samples fall in D as often, because at this "
                 "dimension the level set is set by the norm (the log-density spread of order sqrt(n) swamps a "
                 "condition's log-weights), so membership of D cannot tell y2's domain from y1's."
                 if other >= level - 0.05 else "")
        out.append(Verdict(
            key="prop32_domain_runs", claim="z~ in model 2's domain D (GMM)", where="Prop. 3.2, D",
            status="holds" if at_least(inside, level - 0.05) else "violated",
            measured=f"P(z~ in D) >= {inside:.2f}", bound=f"{level:.2f} (D's own mass)", value=inside, reference=level,
            **_clopper_pearson(summary, "in_domain_count", int(np.nanargmin(summary.in_domain)), "decided against 0.05 "
                               "below D's own mass"),
            detail=(f"D = the level set of the exact p_(t-1)(z | y2) holding {100 * level:.0f}% of its own exact "
                    f"samples. Model 2's own samples fall in it at {own_d:.2f}, model 1's at {other:.2f}. A Gaussian's "
                    f"high-density set is a ball, not a shell, so a point nearer the mean is inside D although it is "
                    f"off the shell A(eps)." + plain)))
    return bound_verdicts(summary, per_run=per_run) + [qualify(v, **partial) for v in out]

"""Lemma A.1 and Proposition 3.2: where Gaussian mass lies, and whether the shifted latent lies
where model 2 puts its mass.

- ``lemma_grid``: over n (2 .. 16384) and eps, the Monte Carlo probability that |X| lies within
  eps sqrt(n) sigma of sqrt(n) sigma, the exact chi probability and the bound of eq. (9); a
  verdict per cell.
- ``prop32``: on a run with sigma_t > 0, per aggregation step and sample, whether the shifted
  latent z~ (model 1's ``z_shift``) lies in model 2's shell A(eps) around mu_theta2 (eq. 26),
  against the bound of eq. (8) with d = phi_w(phi) delta + eta taken from the run; for the GMM
  family also whether z~ lies in the generation domain D itself, taken as the level set of the
  exact density p_{t-1}(z | y2) that holds ``level`` of that density's own exact samples.
- ``sweep``: ``prop32`` over several runs (eps, eta, w), summarised.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import xarray as xr

from amdm_geom import bounds, geometry
from amdm_geom.denoisers.gmm import from_description
from amdm_geom.store import completed_steps, incomplete_note, open_run, require, run_config
from amdm_geom.verdicts import Verdict, at_least, at_most, margin_text, qualify

from .output import (check_replaceable, finite_samples, result_folder, save_dataset, save_figures, save_verdicts,
                     scatter, slot_written)

__all__ = ["EPS_GRID", "lemma_grid", "lemma_verdicts", "plot", "prop32", "prop32_verdicts", "report", "summarize",
           "sweep"]

N_GRID = (2, 4, 16, 64, 256, 1024, 4096, 16384)
EPS_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
LEMMA_EPS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


# --------------------------------------------------------------------------------------------
# Lemma A.1


def lemma_grid(n_grid=N_GRID, eps_grid=LEMMA_EPS, draws: int = 4000, seed: int = 0) -> xr.Dataset:
    """Monte Carlo, exact and bound of Lemma A.1 over ``n x eps`` (sigma = 1 without loss)."""
    g = torch.Generator().manual_seed(seed)
    mc = np.zeros((len(n_grid), len(eps_grid)))
    for i, n in enumerate(n_grid):
        left, norms = draws, []
        while left:  # in blocks, to keep memory flat at n = 16384
            m = min(left, max(1, 2**22 // n))
            norms.append(geometry.norm(torch.randn(m, n, generator=g, dtype=torch.float64)).numpy())
            left -= m
        r = np.concatenate(norms) / math.sqrt(n)
        mc[i] = [np.mean(np.abs(r - 1) <= e) for e in eps_grid]
    n, eps = np.meshgrid(np.asarray(n_grid, float), np.asarray(eps_grid, float), indexing="ij")
    exact = bounds.shell_probability_exact(n, eps)
    return xr.Dataset(
        {"monte_carlo": (("n", "eps"), mc), "exact": (("n", "eps"), exact),
         "bound": (("n", "eps"), bounds.shell_probability_lower_bound(n, eps)),
         "mc_se": (("n", "eps"), np.sqrt(np.clip(exact * (1 - exact), 1e-12, None) / draws))},
        coords={"n": list(n_grid), "eps": list(eps_grid)}, attrs={"draws": draws, "seed": seed})


def lemma_cells(grid: xr.Dataset) -> xr.DataArray:
    """The verdict of each (n, eps) cell: holds, violated or vacuous."""
    # bound <= exact up to rounding: where both round to 1, a last-bit difference decides nothing
    status = np.where(grid.bound <= 0, "vacuous",
                      np.where(at_most(grid.bound.values, grid.exact.values), "holds", "violated"))
    return xr.DataArray(status, dims=("n", "eps"), coords={"n": grid.n, "eps": grid.eps})


def lemma_verdicts(grid: xr.Dataset) -> list[Verdict]:
    """One row for the whole grid. The slack is measured on the scale of the mass outside the
    shell (bound's miss / exact miss >= 1), which stays resolved where both probabilities round
    to 1."""
    cells = lemma_cells(grid)
    z = np.abs(grid.monte_carlo - grid.exact) / grid.mc_se
    violated, vac = int((cells == "violated").sum()), int((cells == "vacuous").sum())
    n, eps = np.meshgrid(grid.n.values.astype(float), grid.eps.values, indexing="ij")
    miss_exact = bounds.shell_miss_probability_exact(n, eps)
    resolved = (miss_exact > 1e-300) & (cells.values == "holds")
    ratio = np.where(resolved, bounds.shell_miss_probability_bound(n, eps) / np.where(resolved, miss_exact, 1), np.inf)
    worst = float(ratio.min())
    i, j = np.unravel_index(int(np.argmin(ratio)), ratio.shape)
    return [Verdict(
        key="lemma_a1_grid", claim="|X| within eps sqrt(n) s w.p. >= bound", where="Lemma A.1, eq. (9)",
        status="violated" if violated else ("holds" if (cells == "holds").any() else "vacuous"),
        measured=f"min bound/exact miss {worst:.2f}", bound=">= 1 (chi law)", value=worst, reference=1.0,
        detail=(f"{int((cells == 'holds').sum())} (n, eps) cells hold, {violated} violated, {vac} vacuous (bound <= 0 "
                f"where n eps^2 is small) over n = {int(grid.n[0])}..{int(grid.n[-1])}, eps = "
                f"{float(grid.eps[0]):g}..{float(grid.eps[-1]):g}; tightest at n = {int(grid.n[i])}, eps = "
                f"{float(grid.eps[j]):g}. Monte Carlo ({grid.attrs['draws']} draws a cell) agrees with the chi law "
                f"to within {float(z.max()):.1f} standard errors. The printed step (15) uses sqrt(1-d) >= 1-d/2, "
                "which is false; the conclusion holds (an exact Chernoff bound of the lower tail)."))]


# --------------------------------------------------------------------------------------------
# Proposition 3.2


def _block(ds, var, k, model=None):
    da = ds[var].isel(step=k) if model is None else ds[var].isel(step=k, model=model)
    a = da.values.astype(np.float64)
    return a.reshape(a.shape[0], -1)


#: What ``prop32`` reads.
_NEEDS = ("z_next", "mu", "z_shift", "agg_z", "z", "model_sigma", "model_alpha_bar_prev", "aggregated", "t")
_HINTS = {v: f"record the hook {'agg.z' if v == 'agg_z' else 'model*.' + v}" for v in ("z_next", "mu", "z_shift",
                                                                                       "agg_z", "z")}


def prop32(store, eps_grid=EPS_GRID, *, level: float = 0.95, n_ref: int = 256, seed: int = 0,
           partner: int = 1) -> xr.Dataset:
    """Prop. 3.2 on one run, per aggregation step with sigma_t > 0 and per sample.

    Variables: ``radius`` = |z~ - mu_2| / (sigma sqrt n) (1 on model 2's shell), the same for
    model 2's own sample (``radius_own``), ``d`` and ``d_scaled`` = d / (sigma sqrt n), and over
    ``eps``: ``in_shell``, ``bound`` (eq. 8, NaN off its domain) and ``exact`` (the chi
    probability of eq. 36's event). For a GMM-family run, ``in_domain`` (z~ in the level set of
    p_{t-1}(z | y2) holding ``level`` of its own exact samples) and the same for model 2's and
    model 1's own samples (``in_domain_own``, ``in_domain_model1``), with the threshold ``tau``.

    Only completed steps are read (``attrs["incomplete"]``). ``finite`` marks the (step,
    sample) cells whose inputs are all finite; the others are NaN (False for the memberships)
    and left out of ``summarize``, which counts them.
    """
    ds = open_run(store) if not isinstance(store, xr.Dataset) else store
    require(ds, variables=_NEEDS, attrs=("config",), hints=_HINTS)
    if partner < 1 or partner >= ds.sizes["model"]:
        raise ValueError(f"partner must be a model index in [1, {ds.sizes['model'] - 1}]; got {partner}")
    cfg = run_config(ds)
    T, note = int(ds.sizes["step"]), incomplete_note(ds)
    ds = completed_steps(ds)
    w = float(cfg["sampler"]["weights"][partner - 1]) if partner == 1 else math.nan
    eta = float(cfg["etas"][0])
    n = int(np.prod([ds.sizes[d] for d in ds["z"].dims[3:]]))
    steps = [k for k in range(ds.sizes["step"])
             if bool(ds.aggregated[k]) and float(ds.model_sigma[partner, k]) > 0
             and all(slot_written(ds[v].isel(step=k, model=m).values)
                     for v, m in (("z_shift", 0), ("mu", partner), ("z_next", 0), ("z_next", partner)))
             and slot_written(ds["agg_z"].isel(step=k).values)]
    if not steps:
        raise ValueError("prop32 needs aggregation steps with sigma_t > 0: record a run with --ddim-eta > 0"
                         + (f" ({note})" if note else ""))
    gmm = _gmm_partner(cfg, partner)
    eps = np.asarray(eps_grid, dtype=np.float64)
    cols: dict[str, list] = {}
    finite = []
    for k in steps:
        sigma = float(ds.model_sigma[partner, k])
        blocks = (_block(ds, "z_shift", k, 0), _block(ds, "mu", k, partner), _block(ds, "z_next", k, partner),
                  _block(ds, "z_next", k, 0), _block(ds, "agg_z", k))
        ok = finite_samples(*blocks)
        z_tilde, mu2, own, z1, agg = (b[ok] for b in blocks)
        values = _step_values(z_tilde, mu2, own, z1, agg, sigma, n, w, eta, eps) if ok.any() else {
            name: np.empty((0, len(eps)) if name in ("bound", "exact") else 0) for name in _STEP_NAMES}
        if gmm is not None:
            model, cond = gmm
            abar = float(ds.model_alpha_bar_prev[partner, k])
            log_p = lambda z: model.mixture.log_prob(torch.from_numpy(z), cond, abar).numpy()  # noqa: E731
            tau = _level(model, cond, abar, level, n_ref, seed + k)
            values.update({"in_domain": log_p(z_tilde) >= tau, "in_domain_own": log_p(own) >= tau,
                           "in_domain_model1": log_p(z1) >= tau} if ok.any() else
                          {name: np.empty(0, dtype=bool) for name in _DOMAIN_NAMES})
        full = scatter(ok, values)
        if gmm is not None:
            full["tau"] = np.full(ok.shape[0], tau)  # the step's threshold, whatever the samples
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
                      "ddim_eta": float(cfg["sampler"]["ddim_eta"]), "T": T, "incomplete": note})
    return res


_STEP_NAMES = ("radius", "radius_own", "radius_aggregate", "d", "d_scaled", "phi", "bound", "exact")
_DOMAIN_NAMES = ("in_domain", "in_domain_own", "in_domain_model1")


def _step_values(z_tilde, mu2, own, z1, agg, sigma, n, w, eta, eps) -> dict:
    """Prop. 3.2's per-sample quantities at one step, on finite samples only."""
    scale = sigma * math.sqrt(n)
    phi, delta = geometry.angle(z1, own), geometry.norm(z1 - own)
    d = bounds.max_distance(phi, delta, w, eta)
    return {"radius": geometry.norm(z_tilde - mu2) / scale, "radius_own": geometry.norm(own - mu2) / scale,
            "radius_aggregate": geometry.norm(agg - mu2) / scale, "d": d, "d_scaled": d / scale, "phi": phi,
            "bound": bounds.prop32_lower_bound(n, eps[:, None], d[None, :], sigma).T,
            "exact": bounds.prop32_probability_exact(n, eps[:, None], d[None, :], sigma).T}


def _gmm_partner(cfg: dict, partner: int):
    desc = cfg["models"][partner]
    if desc.get("family") != "gmm" or "family_params" not in desc:
        return None
    model = from_description(desc, dtype=torch.float64)
    cond = torch.tensor(cfg["conditions"][partner], dtype=torch.float64)
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
            "radius": mean(later.radius), "radius_own": mean(later.radius_own),
            "d_scaled": mean(later.d_scaled), "w": res.attrs["w"], "eta": res.attrs["eta"],
            "in_domain": mean(later.in_domain) if "in_domain" in later else math.nan,
            "in_domain_own": mean(later.in_domain_own) if "in_domain_own" in later else math.nan,
            "in_domain_model1": mean(later.in_domain_model1) if "in_domain_model1" in later else math.nan,
            "nonfinite": int((~res.finite).any("step").sum()) if "finite" in res else 0,
            "samples": int(res.sizes["sample"]), "incomplete": str(res.attrs.get("incomplete", "")),
        }
    names = list(summary)
    eps = rows[names[0]].eps.values
    out = xr.Dataset(coords={"run": names, "eps": eps})
    for key in ("membership", "membership_own", "bound_mean", "defined_share"):
        out[key] = (("run", "eps"), np.stack([summary[n][key].values for n in names]))
    for key in ("radius", "radius_own", "d_scaled", "w", "eta", "in_domain", "in_domain_own", "in_domain_model1"):
        out[key] = ("run", np.array([float(summary[n][key]) for n in names]))
    for key in ("nonfinite", "samples"):
        out[key] = ("run", np.array([summary[n][key] for n in names], dtype=np.int64))
    out["incomplete"] = ("run", np.array([summary[n]["incomplete"] for n in names], dtype=object))
    out.attrs["level"] = rows[names[0]].attrs["level"]
    out.attrs["n"] = rows[names[0]].attrs["n"]
    return out


def partial_data(summary: xr.Dataset) -> dict:
    """What a ``summarize`` result left out, as ``qualify``'s keywords."""
    if "nonfinite" not in summary:
        return {}
    notes = [f"{note} ({run})" for run, note in zip(summary.run.values, summary.incomplete.values) if note]
    return {"nonfinite": int(summary.nonfinite.sum()), "total": int(summary.samples.sum()), "incomplete": notes}


def _nanmin(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.min(values[np.isfinite(values)])) if np.isfinite(values).any() else math.nan


def prop32_verdicts(summary: xr.Dataset) -> list[Verdict]:
    """Verdicts over a ``sweep``: eq. (8) where it says something, the prose claim (z~ lies in
    model 2's shell with high probability), and, for GMM runs, membership of D.

    Membership and bounds are compared up to rounding (``at_least``); each row says what was
    left out (non-finite samples, incomplete stores) and then never holds (``qualify``)."""
    partial = partial_data(summary)
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
    out = [Verdict(
        key="prop32_bound_runs", claim="z~ in A(eps) w.p. >= eq. (8)", where="Prop. 3.2, eq. (8)",
        status="violated" if bool(violated.any()) else ("holds" if bool(holds.any()) else "vacuous"),
        measured=f"{int(defined.sum())}/{defined.size} cells non-vacuous", bound="eq. (8)",
        value=float(gap.min()) if bool(holds.any()) else math.nan, reference=0.0,
        detail=(f"Over runs ({runs}) and eps = {eps_text}: {int(holds.sum())} (run, eps) cells hold" + tight
                + f", {int(violated.sum())} violated, {int((~defined).sum())} vacuous. " + why))]

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
            detail=(f"D = the level set of the exact p_(t-1)(z | y2) holding {100 * level:.0f}% of its own exact samples. "
                    f"Model 2's own samples fall in it at {own_d:.2f}, model 1's at {other:.2f}. A Gaussian's "
                    f"high-density set is a ball, not a shell, so a point nearer the mean is inside D although it is "
                    f"off the shell A(eps)." + plain)))
    return [qualify(v, **partial) for v in out]


# --------------------------------------------------------------------------------------------
# figures


def plot(grid: xr.Dataset | None = None, runs: dict | None = None, summary: xr.Dataset | None = None):
    """Figures: Lemma A.1's cells; where z~ sits relative to model 2's shell per step; membership
    against the bound over eps."""
    import matplotlib.pyplot as plt

    figs = []
    if grid is not None:
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for e in grid.eps.values:
            line, = ax.semilogx(grid.n, grid.exact.sel(eps=e), "-", label=f"eps={e:g}")
            ax.semilogx(grid.n, grid.monte_carlo.sel(eps=e), "o", ms=3, color=line.get_color())
            ax.semilogx(grid.n, grid.bound.sel(eps=e).clip(min=0), "--", color=line.get_color())
        ax.set_xlabel("n")
        ax.set_ylabel("P(| |X| - sqrt(n) | <= eps sqrt(n))")
        ax.set_title("Lemma A.1: exact (line), Monte Carlo (dots), bound (dashed)")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        figs.append(fig)
    for name, res in (runs or {}).items():
        fig, ax = plt.subplots(figsize=(6.4, 4))
        t = res.t_index.values
        for var, label in (("radius", "shifted z~ (model 1)"), ("radius_own", "model 2's own sample")):
            with warnings.catch_warnings():  # a step without a finite sample is a gap, not an error
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, lo, hi = (res[var].mean("sample"), res[var].min("sample"), res[var].max("sample"))
            ax.plot(t, mean, label=label)
            ax.fill_between(t, lo, hi, alpha=0.2)
        for e in (0.05, 0.2):
            ax.axhspan(1 - e, 1 + e, color="C2", alpha=0.1)
        ax.axhline(1, color="C2", lw=0.8, label="model 2's shell, eps = 0.05 and 0.2")
        ax.set_xlabel("t (sampling step)")
        ax.set_ylabel("|z - mu_2| / (sigma_t sqrt n)")
        ax.set_title(f"{name}: where z~ lies relative to model 2's shell")
        ax.invert_xaxis()
        ax.legend(fontsize=8)
        fig.tight_layout()
        figs.append(fig)
    if summary is not None:
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for i, run in enumerate(summary.run.values):
            line, = ax.plot(summary.eps, summary.membership.isel(run=i), "o-",
                            label=f"{run}: w={float(summary.w[i]):g}, eta={float(summary.eta[i]):g}")
            ax.plot(summary.eps, summary.bound_mean.isel(run=i), "--", color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlabel("eps")
        ax.set_ylabel("P(z~ in A(eps))")
        ax.set_title("Prop. 3.2: membership (solid) against eq. (8) (dashed, 0 where vacuous)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        figs.append(fig)
    return figs


def report(stores: dict, out, *, lemma_draws: int = 4000, **kwargs) -> list[Verdict]:
    """Lemma A.1's grid and Prop. 3.2 over ``stores`` (``{name: path}``, runs with sigma_t > 0),
    with verdicts and figures in ``out``. Returns the verdict rows. The stores and ``out`` are
    checked before any work."""
    check_replaceable(out)
    runs = {name: prop32(path, **kwargs) for name, path in stores.items()} if stores else {}
    grid = lemma_grid(draws=lemma_draws)
    summary = summarize(runs) if runs else None
    found = lemma_verdicts(grid) + (prop32_verdicts(summary) if summary is not None else [])
    with result_folder(out) as tmp:
        save_dataset(grid, tmp / "lemma_grid.zarr")
        names = ["lemma_a1"] + [f"radius_{n}" for n in runs] + (["membership"] if summary is not None else [])
        for name, res in runs.items():
            save_dataset(res, tmp / f"prop32_{name}.zarr")
        if summary is not None:
            save_dataset(summary, tmp / "prop32_summary.zarr")
            summary.to_dataframe().to_csv(tmp / "prop32_summary.csv", float_format="%.6g")
        save_figures(plot(grid, runs, summary), tmp, names)
        save_verdicts(found, tmp)
    return found

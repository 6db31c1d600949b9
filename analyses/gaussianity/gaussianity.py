"""Gaussianity of the latents under SD's schedule (App. D.1, eqs. 37-41, Figure 6).

- ``schedule_moments``: the discrete SD 1.x schedule (scaled-linear betas) and its continuous
  limit, with linear and cosine beside it: m(t) and P(t) (eqs. 40-41) for the paper's extreme
  case m(0) = 1, P(0) = 0 or given data moments; the t from which |m| and |P - 1| stay under
  a tolerance; the values at t = T.
- ``forward_gaussianity``: the forward process applied to non-Gaussian data (the GMM family at SD latent size,
  components far apart per coordinate), per timestep: whether |z_t| concentrates around sqrt(E|z_t|^2) as Lemma
  A.1 says a Gaussian would, and per-coordinate normality tests (Kolmogorov-Smirnov against the exact
  per-coordinate moments, Anderson-Darling), with a verdict per t.
- ``trajectory_gaussianity``: the same checks on the recorded reverse trajectory of a store; its rows
  (``trajectory_rows``) judge App. D.1's claim on the steps with t > 0.6 and report the rest as a finding.
- ``forward_norm_concentration`` is decided by the share's exact interval (``concentration``).

The analysis ``Gaussianity`` (``amdm_geom.analyses.base.Analysis``): ``compute(stores)`` gives an ``xarray.DataTree``
with nodes ``moments`` (dims ``kind``, ``t``, ``i``), ``forward`` (dims ``timestep``, ``sample``, ``coord``) and
``trajectories/<store>`` (dims ``step``, ``sample``), written as ``<node>.zarr``; the figures ``figure6_moments``,
``forward_gaussianity``, ``trajectory_<store>`` (its figures module); the table ``schedule_summary.csv``."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import xarray as xr
from scipy import stats

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.common import (
    finite_samples,
    open_store,
    rejection_band,
    sample_slices,
    slot_written_streamed,
    streamed,
)
from amdm_geom.analyses.gaussianity.concentration import concentration_verdict
from amdm_geom.analyses.gaussianity.figures import CAPTIONS, PAPER_T, figures
from amdm_geom.analyses.gaussianity.time_scale import printed_time_scale, time_scale_verdict
from amdm_geom.analyses.gaussianity.trajectory_rows import partial, trajectory_verdicts
from amdm_geom.core import bounds, geometry, schedules
from amdm_geom.core.verdicts import Verdict, at_least, at_most, qualify
from amdm_geom.models.gmm import FineGrainedFamily, GaussianMixture, fine_grained_family, from_description
from amdm_geom.store import built_of, completed_steps, incomplete_note, require

__all__ = ["CAPTIONS", "PAPER_T", "Gaussianity", "coordinate_moments", "default_family", "expected_sq_norm", "figures",
           "forward_gaussianity", "forward_verdicts", "schedule_moments", "schedule_verdicts", "trajectory_gaussianity",
           "trajectory_verdicts"]

KINDS = ("scaled_linear", "linear", "cosine")


# --------------------------------------------------------------------------------------------
# the schedule's moments


def _converged_from(t: np.ndarray, m: np.ndarray, P: np.ndarray, tol: float) -> float:
    """The first t from which |m| <= tol and |P - 1| <= tol for every later t (NaN if never)."""
    ok = (np.abs(m) <= tol) & (np.abs(P - 1) <= tol)
    bad = np.nonzero(~ok)[0]
    if len(bad) == 0:
        return float(t[0])
    return float(t[bad[-1] + 1]) if bad[-1] + 1 < len(t) else math.nan


def _halfway_from(t: np.ndarray, m: np.ndarray, P: np.ndarray, m0: float, P0: float) -> float:
    """The onset reading of "rapidly converges for t > 0.6": the first t from which m and P have
    each covered at least half the way from (m(0), P(0)) to (0, 1), |m| <= |m0|/2 and
    |P - 1| <= |P0 - 1|/2, for every later t (NaN if never)."""
    ok = (np.abs(m) <= abs(m0) / 2) & (np.abs(P - 1) <= abs(P0 - 1) / 2)
    bad = np.nonzero(~ok)[0]
    if len(bad) == 0:
        return float(t[0])
    return float(t[bad[-1] + 1]) if bad[-1] + 1 < len(t) else math.nan


def schedule_moments(kinds=KINDS, *, m0: float = 1.0, P0: float = 0.0, tol: float = 0.1,
                     n_t: int = 1001) -> xr.Dataset:
    """Continuous (eqs. 40-41) and discrete moments per schedule kind.

    Variables over ``(kind, t)``: ``m``, ``P`` (continuous, t in [0, 1]); over ``(kind, i)``:
    ``m_discrete``, ``P_discrete`` (the exact moments of the discrete forward process after
    training step i, at continuous time (i + 1)/N); per kind: ``converged_from`` (continuous),
    ``converged_from_discrete``, ``m_T``, ``P_T``, ``m_T_discrete``, ``P_T_discrete``.
    """
    t = np.linspace(0.0, 1.0, n_t)
    ms, Ps, md, Pd, rows = [], [], [], [], []
    for kind in kinds:
        m, P = schedules.vp_moments(t, kind, m0=m0, P0=P0)
        disc = schedules.discrete_moments(schedules.make_scheduler(kind), m0=m0, P0=P0)
        ms.append(m)
        Ps.append(P)
        md.append(disc["m"].values)
        Pd.append(disc["P"].values)
        rows.append({"converged_from": _converged_from(t, m, P, tol),
                     "converged_from_discrete": _converged_from(disc["t"].values, disc["m"].values, disc["P"].values,
                                                                tol),
                     "m_T": m[-1], "P_T": P[-1], "m_T_discrete": float(disc["m"][-1]),
                     "P_T_discrete": float(disc["P"][-1]),
                     "m_at_paper_t": float(np.interp(PAPER_T, t, m)), "P_at_paper_t": float(np.interp(PAPER_T, t, P)),
                     **printed_time_scale(kind, m0=m0, P0=P0, tol=tol, paper_t=PAPER_T)})
    n_train = len(md[0])
    ds = xr.Dataset(
        {"m": (("kind", "t"), np.stack(ms)), "P": (("kind", "t"), np.stack(Ps)),
         "m_discrete": (("kind", "i"), np.stack(md)), "P_discrete": (("kind", "i"), np.stack(Pd))},
        coords={"kind": list(kinds), "t": t, "i": np.arange(n_train),
                "t_discrete": ("i", (np.arange(n_train) + 1) / n_train)},
        attrs={"m0": m0, "P0": P0, "tol": tol})
    for key in rows[0]:
        ds[key] = ("kind", [r[key] for r in rows])
    return ds


def schedule_verdicts(ds: xr.Dataset) -> list[Verdict]:
    """The SD schedule at t = T, and the paper's reading that the moments converge for t > 0.6."""
    sd = ds.sel(kind="scaled_linear")
    tol = float(ds.attrs["tol"])
    m_T, P_T = float(sd.m_T), float(sd.P_T)
    others = ", ".join(f"{k}: from t = {float(ds.converged_from.sel(kind=k)):.2f}" for k in ds.kind.values
                       if k != "scaled_linear")
    case = f"m(0) = {ds.attrs['m0']:g}, P(0) = {ds.attrs['P0']:g}"
    t_star = float(sd.converged_from)
    onset = _halfway_from(ds.t.values, sd.m.values, sd.P.values, ds.attrs["m0"], ds.attrs["P0"])
    return [
        Verdict(key="sd_gaussian_T", claim="SD schedule: p(z_T) ~ N(0, I)", where="App. D.1, eq. (40)-(41)",
                status="holds" if at_most(abs(m_T), tol) and at_most(abs(P_T - 1), tol) else "violated",
                measured=f"m(T) {m_T:.3f}, P(T) {P_T:.4f}", bound=f"|m|, |P-1| <= {tol:g}",
                value=max(abs(m_T), abs(P_T - 1)), reference=tol,
                detail=(f"{case}, continuous limit; the discrete schedule at t = 999 gives m = "
                        f"{float(sd.m_T_discrete):.3f}, P = {float(sd.P_T_discrete):.4f}. sqrt(abar_T) is not 0, so "
                        "p(z_T) keeps a trace of the data.")),
        Verdict(key="sd_converged_from", claim=f"moments within {tol:g} at every t > 0.6", where="App. D.1, Figure 6",
                status="holds" if at_most(t_star, PAPER_T) else "violated",
                measured=f"converged from t = {t_star:.3f}", bound=f"t <= {PAPER_T}", value=t_star, reference=PAPER_T,
                extra={"onset_t": onset},
                detail=(f"Reads 'when t > 0.6, the mean rapidly converges to 0 while the variance rapidly converges "
                        f"to 1' as: |m| and |P - 1| within {tol:g} at every t > 0.6. {case}. At t = {PAPER_T}, m = "
                        f"{float(sd.m_at_paper_t):.3f} and P = {float(sd.P_at_paper_t):.3f}. Beside it: {others}. "
                        f"The onset reading (the convergence is under way by t = 0.6: m and P have each covered half "
                        f"the way from m(0), P(0) to 0, 1 at every later t) is met from t = {onset:.3f}, "
                        + ("before 0.6." if at_most(onset, PAPER_T) else "after 0.6 too."))),
        time_scale_verdict(ds, PAPER_T)]


# --------------------------------------------------------------------------------------------
# the forward process on non-Gaussian data


def default_family(latent_shape=(4, 64, 64), seed: int = 0) -> FineGrainedFamily:
    """Non-Gaussian data at SD latent size: 2 x 2 components whose means differ by about one unit
    per coordinate (component std 0.2), so every coordinate's marginal is multimodal at t = 0."""
    n = math.prod(latent_shape)
    return fine_grained_family(latent_shape, n_positions=2, n_colours=2, separation=math.sqrt(2 * n),
                               component_std=0.2, seed=seed)


def coordinate_moments(mixture: GaussianMixture, weights: torch.Tensor, abar: float, coords: np.ndarray):
    """Exact per-coordinate mean and variance of z_t for the chosen coordinates."""
    mu = mixture.means[:, coords].numpy()  # (K, c)
    var = mixture.variances[:, coords].numpy()
    w = weights.numpy()[:, None]
    mean0 = (w * mu).sum(0)
    second0 = (w * (mu**2 + var)).sum(0)
    return math.sqrt(abar) * mean0, abar * (second0 - mean0**2) + 1 - abar


def expected_sq_norm(mix: GaussianMixture, weights: torch.Tensor, abar: float) -> float:
    """E|z_t|^2 = abar E|x_0|^2 + n (1 - abar), exactly."""
    e_x0 = float((weights * ((mix.means**2).sum(1) + mix.variances.sum(1))).sum())
    return abar * e_x0 + mix.dim * (1 - abar)


def forward_gaussianity(family: FineGrainedFamily | None = None, *, timesteps=None, n_samples: int = 256,
                        n_coords: int = 64, eps: float = 0.05, alpha: float = 0.01, seed: int = 0,
                        scheduler=None) -> xr.Dataset:
    """Per training timestep t: exact draws of z_t (the forward process on exact data samples),
    the norm ratio |z_t| / sqrt(E|z_t|^2), the share within eps (against Lemma A.1's bound and
    the chi law a Gaussian would follow), and the per-coordinate KS and AD rejection rates at
    level alpha (the KS null uses the exact per-coordinate moments)."""
    family = family or default_family()
    scheduler = scheduler or schedules.make_scheduler()
    abars = scheduler.alphas_cumprod.to(torch.float64).numpy()
    n_train = len(abars)
    if timesteps is None:
        timesteps = [0, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999]
    timesteps = np.asarray(timesteps)
    rng = np.random.default_rng(seed)
    w = family.condition()  # all components (uniform weights)
    n = family.mixture.dim
    coords = rng.choice(n, size=min(n_coords, n), replace=False)
    out = {k: [] for k in ("ratio", "ks_reject", "ad_reject", "ks_stat", "finite")}
    for t in timesteps:
        abar = float(abars[int(t)])
        z, _ = family.mixture.sample_diffused(w, n_samples, abar, rng)  # (n_samples, n)
        ok = finite_samples(z.numpy())  # exact draws are finite; if one were not, it is left out and counted
        out["finite"].append(ok)
        ratio = np.full(n_samples, np.nan)
        expected = expected_sq_norm(family.mixture, w, abar)
        ratio[ok] = geometry.norm(z[torch.from_numpy(ok)]).numpy() / math.sqrt(expected)
        out["ratio"].append(ratio)
        mean, var = coordinate_moments(family.mixture, w, abar, coords)
        x = z[:, coords].numpy()[ok]
        ks = stats.kstest((x - mean) / np.sqrt(var), "norm", axis=0)
        ad = np.array([stats.anderson(x[:, j], "norm", method="interpolate").pvalue for j in range(x.shape[1])])
        out["ks_reject"].append(ks.pvalue <= alpha)
        out["ad_reject"].append(ad <= alpha)
        out["ks_stat"].append(ks.statistic)
    res = xr.Dataset(
        {"ratio": (("timestep", "sample"), np.stack(out["ratio"])),
         "ks_reject": (("timestep", "coord"), np.stack(out["ks_reject"])),
         "ad_reject": (("timestep", "coord"), np.stack(out["ad_reject"])),
         "ks_stat": (("timestep", "coord"), np.stack(out["ks_stat"])),
         "finite": (("timestep", "sample"), np.stack(out["finite"]))},
        coords={"timestep": timesteps, "t": ("timestep", (timesteps + 1) / n_train), "coord": coords,
                "alpha_bar": ("timestep", abars[timesteps])},
        attrs={"n": n, "eps": eps, "alpha": alpha, "n_samples": n_samples, "seed": seed})
    with np.errstate(invalid="ignore", divide="ignore"):  # the share over the finite samples
        res["within_eps"] = ((np.abs(res.ratio - 1) <= eps) & res.finite).sum("sample") / res.finite.sum("sample")
    res["lemma_bound"] = bounds.shell_probability_lower_bound(n, eps)
    res["chi_exact"] = bounds.shell_probability_exact(n, eps)
    res["ks_rate"] = res.ks_reject.mean("coord")
    res["ad_rate"] = res.ad_reject.mean("coord")
    # a verdict per t: normal per coordinate (both rejection rates consistent with the level), and
    # the norm within eps at least as often as Lemma A.1 guarantees a Gaussian
    band = rejection_band(alpha, res.sizes["coord"])
    res["verdict_normal"] = ("timestep", np.where(at_most(res.ks_rate.values, band) & at_most(res.ad_rate.values, band),
                                                  "holds", "violated"))
    res["verdict_norm"] = ("timestep", np.where(at_least(res.within_eps.values, float(res.lemma_bound)),
                                                "holds", "violated"))
    return res


def forward_verdicts(res: xr.Dataset) -> list[Verdict]:
    """Per-coordinate normality after the paper's t = 0.6, and norm concentration along the way.
    Rates and shares are compared with their bounds up to rounding (``at_most``, ``at_least``),
    and the concentration row reports its margin."""
    band = rejection_band(res.attrs["alpha"], res.sizes["coord"])
    gaussian = at_most(res.ks_rate, band) & at_most(res.ad_rate, band)
    late = res.t > PAPER_T
    rows_text = ", ".join(f"t={float(t):.2f}: KS {float(k):.2f}/AD {float(a):.2f}" for t, k, a in
                          zip(res.t.values, res.ks_rate.values, res.ad_rate.values))
    first_ok = res.t.values[np.argmax(gaussian.values)] if bool(gaussian.any()) else math.nan
    all_from = next((float(t) for i, t in enumerate(res.t.values) if bool(gaussian.values[i:].all())), math.nan)
    bad_late = res.t.values[late.values & ~gaussian.values]
    out = [Verdict(
        key="forward_gaussian_coords", claim="z_t Gaussian per coordinate for t > 0.6", where="App. D.1",
        status="holds" if len(bad_late) == 0 else "violated",
        measured=f"Gaussian from t = {all_from:.2f}", bound=f"t <= {PAPER_T}", value=all_from, reference=PAPER_T,
        detail=(f"Non-Gaussian GMM data at n = {res.attrs['n']}, {res.attrs['n_samples']} exact draws a timestep, "
                f"{res.sizes['coord']} coordinates tested; rejection rates at level {res.attrs['alpha']:g} "
                f"(consistent with Gaussian up to {band:.3f}): {rows_text}."
                + (f" Rejected after t = 0.6 at t = {', '.join(f'{t:.2f}' for t in bad_late)}."
                   if len(bad_late) else "")
                + (f" First passing t: {first_ok:.2f}." if np.isfinite(first_ok) else "")))]
    out.append(concentration_verdict(res))
    left_out = partial(res, "timestep")
    return [qualify(v, **left_out) for v in out]


# --------------------------------------------------------------------------------------------
# recorded reverse trajectories


_HINTS = {"z": "record the hook model*.z"}


def _trajectory_slice(ds, k, model, expected, coords, alpha):
    """The per-slice reader of step k for ``streamed``: each sample's norm ratio and AD test."""
    def per_slice(samples):
        z = ds.z.isel(step=k, model=model, sample=samples).values.astype(np.float64)
        z = z.reshape(len(z), -1)
        ok = finite_samples(z)
        return ok, {"ratio": geometry.norm(z[ok]) / math.sqrt(expected), "ad_reject": np.array(
            [stats.anderson(row[coords], "norm", method="interpolate").pvalue <= alpha for row in z[ok]], dtype=bool)}
    return per_slice


def trajectory_gaussianity(store, *, model: int = 0, eps: float = 0.05, alpha: float = 0.01,
                           max_coords: int = 2048, seed: int = 0, chunk: int | None = None) -> xr.Dataset:
    """Per completed step of a store (model ``model``'s input z_t): |z_t| against
    sqrt(E|z_t|^2) (exact for GMM-family runs, n otherwise) and whether each sample's
    coordinates pass a normality test (AD with estimated mean and variance, on up to
    ``max_coords`` coordinates). Samples with a non-finite entry are NaN (``finite`` false) and
    left out; ``attrs["incomplete"]`` says when the store is incomplete. Both are per sample: z_t
    is streamed, a slice of ``chunk`` samples at a time (``common.sample_slices``)."""
    ds = open_store(store)
    require(ds, variables=("z", "model_alpha_bar", "t"), hints=_HINTS)
    built = built_of(ds)
    T, note = int(ds.sizes["step"]), incomplete_note(ds)
    ds = completed_steps(ds)
    desc = built.models[model]
    is_gmm = desc.get("family") == "gmm" and "family_params" in desc
    gmm = from_description(desc, dtype=torch.float64) if is_gmm else None
    cond = torch.tensor(built.conditions[model], dtype=torch.float64) if gmm is not None else None
    n = int(np.prod([ds.sizes[d] for d in ds["z"].dims[3:]]))
    rng = np.random.default_rng(seed)
    coords = rng.choice(n, size=min(max_coords, n), replace=False)
    slices = sample_slices(ds, "z", chunk)
    steps = [k for k in range(ds.sizes["step"]) if slot_written_streamed(ds, "z", k, model, slices)]
    if not steps:
        raise ValueError(f"model {model} has no recorded z_t in this store" + (f" ({note})" if note else ""))
    abars = [float(ds.model_alpha_bar[model, k]) for k in steps]
    expected = [expected_sq_norm(gmm.mixture, cond / cond.sum(), a) if gmm is not None else float(n) for a in abars]
    parts = [streamed(slices, _trajectory_slice(ds, k, model, e, coords, alpha)) for k, e in zip(steps, expected)]
    res = xr.Dataset({"ratio": (("step", "sample"), np.stack([p[0]["ratio"] for p in parts])),
                      "ad_reject": (("step", "sample"), np.stack([p[0]["ad_reject"] for p in parts])),
                      "finite": (("step", "sample"), np.stack([p[1] for p in parts]))},
                     coords={"step": steps, "t": ("step", ds.t.values[steps]),
                             "t_index": ("step", [T - 1 - k for k in steps])},
                     attrs={"n": n, "eps": eps, "alpha": alpha, "T": T, "incomplete": note,
                            "n_train": int(desc.get("schedule", {}).get("num_train_timesteps", 1000)),
                            "expected_norm": "exact (GMM)" if gmm is not None else "sqrt(n)"})
    with np.errstate(invalid="ignore", divide="ignore"):
        res["within_eps"] = ((np.abs(res.ratio - 1) <= eps) & res.finite).sum("sample") / res.finite.sum("sample")
        rate = res.ad_reject.sum("sample") / res.finite.sum("sample")
    res["lemma_bound"] = bounds.shell_probability_lower_bound(n, eps)
    band = rejection_band(alpha, res.sizes["sample"])
    res["verdict_normal"] = ("step", np.where(at_most(rate.values, band), "holds", "violated"))
    on_shell = at_most(np.abs(res.ratio.values - 1), eps) | ~res.finite.values
    res["verdict_norm"] = ("step", np.where(on_shell.all(axis=1) & res.finite.values.any(axis=1), "holds", "violated"))
    return res


# --------------------------------------------------------------------------------------------
# the analysis


def _trajectories(tree: xr.DataTree) -> dict[str, xr.Dataset]:
    return {n: node.to_dataset() for n, node in tree["trajectories"].children.items()} if "trajectories" in tree else {}


class Gaussianity(Analysis):
    """App. D.1: the schedule's moments, the forward process and the stores' trajectories."""

    name, family, other_families, captions = "gaussianity", "app-d1", ("lemma-a1",), CAPTIONS
    stores, reads = "optional", ("moments",)
    summary = "App. D.1: the schedule's moments (Figure 6), forward normality, and any stores' trajectories"

    def compute(self, stores: Mapping | None = None, *, quick: bool = False, seed: int = 0, runs=None,
                m0: float = 1.0, P0: float = 0.0, tol: float = 0.1) -> xr.DataTree:
        """The schedule's moments (``m0``, ``P0``, ``tol``: ``schedule_moments``), the forward process on the default
        family (``quick``: latent 4 x 32 x 32, 128 draws and 32 coordinates a timestep; else 4 x 64 x 64, 256 and 64)
        and each store's trajectory (``{name: path or opened store}``, checked before any work). ``seed`` seeds all."""
        trajectories = {name: trajectory_gaussianity(store, seed=seed) for name, store in (stores or {}).items()}
        moments = schedule_moments(m0=m0, P0=P0, tol=tol)
        shape = (4, 32, 32) if quick else (4, 64, 64)
        forward = forward_gaussianity(default_family(shape, seed=seed), n_samples=128 if quick else 256,
                                      n_coords=32 if quick else 64, seed=seed)
        return xr.DataTree.from_dict({"moments": moments, "forward": forward,
                                      **{f"trajectories/{name}": res for name, res in trajectories.items()}})

    def verdicts(self, tree: xr.DataTree) -> list[Verdict]:
        """The schedule's rows, the forward process' rows, then one row per store's trajectory."""
        found = schedule_verdicts(tree["moments"].to_dataset()) + forward_verdicts(tree["forward"].to_dataset())
        for name, res in _trajectories(tree).items():
            found += trajectory_verdicts(res, name)
        return found

    def plot(self, tree: xr.DataTree) -> dict:
        """``figure6_moments``, ``forward_gaussianity`` and ``trajectory_<store>`` per store."""
        out = dict(zip(("figure6_moments", "forward_gaussianity"),
                       figures(tree["moments"].to_dataset(), tree["forward"].to_dataset())))
        for name, res in _trajectories(tree).items():
            out[f"trajectory_{name}"], = figures(trajectory=res)
        return out

    def tables(self, tree: xr.DataTree) -> dict:
        """``schedule_summary``: per schedule kind, where the moments converged and their values at T."""
        columns = ["converged_from", "converged_from_discrete", "m_T", "P_T", "m_T_discrete", "P_T_discrete"]
        return {"schedule_summary": tree["moments"].to_dataset()[columns].to_dataframe()}

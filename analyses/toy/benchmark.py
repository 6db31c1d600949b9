"""The 2D benchmark's sweep (App. E, Table 7): every method on one task with each kind of expert
and every seed, scored per seed against exact target samples, as one Dataset.

Methods (``METHODS``): ``amdm`` (each (w, eta) setting its own entry), ``summed_score``,
``du_ula``, ``du_mala``, ``du_hmc`` and ``oracle`` (``samplers``, ``mcmc``). Experts:
``"exact"`` and ``"mlp"`` (``experts``); every method runs with both kinds, which separates the
model's error (mlp against exact) from the sampler's (method against oracle). The oracle does
not use the experts: its row is one run, repeated under each expert kind. The true-vs-true floor
(two independent exact sets of the same N, scored alike) is reported beside every metric.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence

import numpy as np
import xarray as xr

from amdm_geom.analyses.toy import targets
from amdm_geom.analyses.toy.experts import ExactExpert, Schedule, make_schedule, train_mlp
from amdm_geom.analyses.toy.mcmc import du_mcmc
from amdm_geom.analyses.toy.metrics import (
    BANDWIDTHS,
    cov_error,
    kernel_means,
    ln_mmd,
    log_likelihood,
    mmd2,
    mode_coverage,
    sq_distances,
    w2,
)
from amdm_geom.analyses.toy.samplers import STREAMS, amdm, oracle, summed_score

__all__ = ["DU_METHODS", "EXPERTS", "METHODS", "Scores", "best_method", "floor_sizes", "mean_over_seeds", "method_rows",
           "run_benchmark", "run_method"]

METHODS = ("amdm", "summed_score", "du_ula", "du_mala", "du_hmc", "oracle")
DU_METHODS = ("du_ula", "du_mala", "du_hmc")
EXPERTS = ("exact", "mlp")
#: the per-seed metrics, in the order ``Scores.metrics`` returns them
_METRICS = ("ll", "ln_mmd", "ln_mmd_avg", "w2", "var", "coverage")


def run_method(method: str, e1, e2, target, sched: Schedule, seeds, n: int, **kw):
    """Dispatch by name (``METHODS``); ``amdm`` takes ``w``, ``eta``, ``agg_steps``; the Du
    methods take the keywords of ``mcmc.du_mcmc``."""
    if method == "amdm":
        return amdm(e1, e2, sched, seeds, n, **kw)
    if method == "summed_score":
        return summed_score(e1, e2, sched, seeds, n)
    if method in DU_METHODS:
        return du_mcmc(e1, e2, sched, seeds, n, kind=method[3:], **kw)
    if method == "oracle":
        return oracle(target, sched, seeds, n)
    raise ValueError(f"method must be one of {METHODS}; got {method!r}")


def method_rows(ws, etas) -> list[tuple[str, str, float, float]]:
    """The Dataset's ``method`` entries: ``(name, family, w, eta)``, the AMDM grid first."""
    rows = [(f"amdm[w={w:g},eta={e:g}]", "amdm", float(w), float(e)) for w in ws for e in etas]
    rows += [(m, m, math.nan, math.nan) for m in ("summed_score", *DU_METHODS, "oracle")]
    return rows


class Scores:
    """The per-seed metrics of every (method, expert) against fixed exact reference sets: ``ref``
    (compared with every method) and ``ref2`` (the floor), drawn per seed from the ``reference``
    stream; ``samples`` keeps seed 0's output."""

    def __init__(self, target, seed_list, n: int, bw: np.ndarray, n_methods: int, n_experts: int, w2_points: int):
        self.target, self.bw, self.w2_points = target, bw, w2_points
        self.refs, self.ref2s, self.kyy = [], [], []
        for sd in seed_list:
            rng = np.random.default_rng([sd, STREAMS["reference"]])
            self.refs.append(targets.sample(target, n, rng))
            self.ref2s.append(targets.sample(target, n, rng))
            self.kyy.append(kernel_means(sq_distances(self.refs[-1], self.refs[-1]), bw))
        shape = (n_methods, n_experts, len(seed_list))
        self.arrays = {m: np.full(shape + ((len(bw),) if m == "ln_mmd" else ()), np.nan) for m in _METRICS}
        self.arrays["accept"] = np.full(shape, np.nan)
        self.wall = np.full(shape[:2], np.nan)
        self.samples = np.full((n_methods, n_experts, n, 2), np.nan)
        self.metrics_s = 0.0

    def metrics(self, x: np.ndarray, j: int) -> tuple:
        """The metrics of ``x (n, 2)`` against seed ``j``'s reference set, in ``_METRICS`` order."""
        m2 = mmd2(x, self.refs[j], self.bw, yy=self.kyy[j])
        return (log_likelihood(x, self.target), ln_mmd(m2), float(ln_mmd(m2.mean())),
                w2(x, self.refs[j], self.w2_points), cov_error(x, self.target), mode_coverage(x, self.target))

    def store(self, i: int, e: int, out: np.ndarray) -> None:
        """Score method ``i``'s output ``out (seeds, n, 2)`` under expert kind ``e``."""
        t0 = time.perf_counter()
        for j in range(out.shape[0]):
            for name, value in zip(_METRICS, self.metrics(out[j], j)):
                self.arrays[name][i, e, j] = value
        self.samples[i, e] = out[0]
        self.metrics_s += time.perf_counter() - t0

    def copy_row(self, i: int, e_from: int, e_to: int) -> None:
        for arr in (*(self.arrays[m] for m in _METRICS), self.samples):
            arr[i, e_to] = arr[i, e_from]
        self.wall[i, e_to] = self.wall[i, e_from]


def _experts(kind: str, tk, sched: Schedule, mlp_iters: int, mlp_width: int, info: dict):
    if kind == "exact":
        return ExactExpert(tk.p1, sched), ExactExpert(tk.p2, sched)
    e1 = train_mlp(tk.p1, sched, seed=1, iters=mlp_iters, width=mlp_width)
    e2 = train_mlp(tk.p2, sched, seed=2, iters=mlp_iters, width=mlp_width)
    info["mlp"] = {"p1": e1.info, "p2": e2.info}
    return e1, e2


def _run_kind(ei: int, kind: str, e1, e2, tk, sched, rows, seed_list, n, scores: Scores, info: dict, oracle_at,
              agg_steps, mcmc_steps: int, n_trapezoid: int):
    """Every method with one kind of expert; returns the expert index the oracle ran under."""
    t0 = time.perf_counter()  # AMDM: every setting side by side in one batch
    grid = [(i, r) for i, r in enumerate(rows) if r[1] == "amdm"]
    rec: dict = {}
    out = amdm(e1, e2, sched, seed_list, n, w=np.array([r[2] for _, r in grid]), eta=np.array([r[3] for _, r in grid]),
               agg_steps=agg_steps, record=rec)
    info["antipodal_fallbacks"][kind] = int(rec["antipodal"])
    dt = (time.perf_counter() - t0) / len(grid)
    for a, (i, _) in enumerate(grid):
        scores.store(i, ei, out[a])
        scores.wall[i, ei] = dt
    for i, (_name, fam, _, _) in enumerate(rows):
        if fam == "amdm":
            continue
        t0 = time.perf_counter()
        if fam == "oracle" and oracle_at is not None:  # one run, whatever the experts: copy its row
            scores.copy_row(i, oracle_at, ei)
            continue
        if fam == "oracle":
            out, oracle_at = oracle(tk.target, sched, seed_list, n), ei
        elif fam == "summed_score":
            out = summed_score(e1, e2, sched, seed_list, n)
        else:
            st: dict = {}
            out = du_mcmc(e1, e2, sched, seed_list, n, kind=fam[3:], steps=mcmc_steps, n_trapezoid=n_trapezoid,
                          stats=st)
            scores.arrays["accept"][i, ei] = st["accept"]
            info["energy"][f"{fam}/{kind}"] = st["energy"]
        scores.wall[i, ei] = time.perf_counter() - t0
        scores.store(i, ei, out)
    return oracle_at


def floor_sizes(n: int) -> list[int]:
    """The sample sizes the true-vs-true floor is also measured at (N/8, N/4, N/2, N; at least 2):
    the floor of the biased MMD^2 is a finite-sample bias of order 1/N, so ln MMD's floor falls by
    about 0.5 ln 2 = 0.35 per doubling of N."""
    return sorted({max(2, n // k) for k in (8, 4, 2, 1)})


def _dataset(scores: Scores, rows, experts, seed_list, bw, n: int) -> xr.Dataset:
    a = scores.arrays
    fl = [scores.metrics(scores.ref2s[j], j) for j in range(len(seed_list))]  # the floor
    mes = ("method", "expert", "seed")
    data = {name: (mes + (("bandwidth",) if name == "ln_mmd" else ()), a[name]) for name in (*_METRICS, "accept")}
    data["wall_s"] = (("method", "expert"), scores.wall)
    for k, name in enumerate(_METRICS):
        dims = ("seed", "bandwidth") if name == "ln_mmd" else "seed"
        data[f"{name}_floor"] = (dims, np.stack([f[k] for f in fl]))
    sizes = floor_sizes(n)
    by_n = np.stack([[mmd2(scores.ref2s[j][:m], scores.refs[j][:m], bw) for m in sizes]
                     for j in range(len(seed_list))])  # (seed, floor_n, bandwidth): MMD^2
    data["ln_mmd_floor_n"] = (("seed", "floor_n", "bandwidth"), ln_mmd(by_n))
    data["ln_mmd_avg_floor_n"] = (("seed", "floor_n"), ln_mmd(by_n.mean(-1)))
    data["samples"] = (("method", "expert", "point", "coord"), scores.samples)
    data["target_samples"] = (("point", "coord"), scores.ref2s[0])
    coords = {"method": [r[0] for r in rows], "family": ("method", [r[1] for r in rows]),
              "w": ("method", [r[2] for r in rows]), "eta": ("method", [r[3] for r in rows]),
              "expert": list(experts), "seed": seed_list, "bandwidth": bw, "point": np.arange(n), "coord": ["x", "y"],
              "floor_n": sizes}
    return xr.Dataset(data, coords=coords)


def _add_trajectory(ds: xr.Dataset, tk, sched: Schedule, seed: int, n: int, setting) -> xr.Dataset:
    """Model 1's latents of one AMDM run (exact experts, ``setting`` = (w, eta)) at several steps,
    and the angle between the two models' latents at every aggregation step."""
    steps = (0, 40, 60, 75, 85, 92, 97)
    rec: dict = {}
    amdm(ExactExpert(tk.p1, sched), ExactExpert(tk.p2, sched), sched, seed, min(n, 500),
         w=float(setting[0]), eta=float(setting[1]), record=rec, record_steps=steps)
    keys = [*steps, sched.T]
    ds["trajectory"] = (("snapshot", "tpoint", "coord"), np.stack([rec[k] for k in keys]))
    ds["trajectory_phi"] = (("agg_step", "tpoint"), np.stack(rec["phi"]))
    ds = ds.assign_coords(snapshot=np.arange(len(keys)),
                          snapshot_t=("snapshot", [int(sched.t[k]) if k < sched.T else -1 for k in keys]))
    ds.attrs["trajectory_setting"] = json.dumps({"w": float(setting[0]), "eta": float(setting[1]),
                                                 "expert": "exact", "seed": seed})
    return ds


def _attrs(tk, n: int, sched: Schedule, agg_steps, mcmc_steps: int, n_trapezoid: int, info: dict, quick: bool) -> dict:
    return {
        "task": tk.name, "task_description": tk.description, "n": n, "T": sched.T,
        "schedule": "cosine (squaredcos_cap_v2), T = 100, DDPM steps (ddim_coefficients eta = 1), t = 99..0",
        "scheduler_config": sched.coeffs.attrs["scheduler_config"],
        "agg_steps": sched.T if agg_steps is None else int(agg_steps),
        "mcmc": json.dumps({"steps_per_level": mcmc_steps, "ula_mala_step": 1e-3, "hmc_step": 0.03, "leapfrog": 3,
                            "damping": 0.5, "mass": 1.0, "n_trapezoid": n_trapezoid,
                            "step_sizes": "constant over noise levels (Du et al.'s 2D toy code)"}),
        "energy": json.dumps(info["energy"]), "mlp": json.dumps(info["mlp"]),
        "antipodal_fallbacks": json.dumps(info["antipodal_fallbacks"]),
        "ln_mmd_definition": "ln MMD = 0.5 ln MMD^2_b, biased V-statistic, Gaussian kernel exp(-d^2/(2h^2)); "
                             "ln_mmd_avg uses the average of the kernels over the bandwidths",
        "var_definition": "Frobenius norm of cov(samples) - cov(target) (the paper's Var is undefined)",
        "coverage_definition": "share of target modes (clusters >= 2% mass) with >= 5 samples within 2 std",
        "floor": "exact target samples (independent set) scored like every method, against the same reference set",
        "oracle_note": "the oracle does not use the experts: its row is one run, repeated under each expert kind",
        "quick": int(bool(quick)),
    }


def run_benchmark(task: str = "ring_bar", n: int | None = None, seeds=None, experts: Sequence[str] | None = None,
                  quick: bool = False, ws: Sequence[float] | None = None, etas: Sequence[float] | None = None,
                  agg_steps: int | None = None, bandwidths: Sequence[float] = BANDWIDTHS, mcmc_steps: int = 10,
                  n_trapezoid: int = 2, mlp_iters: int | None = None, mlp_width: int = 48, w2_points: int = 500,
                  trajectory: tuple[float, float] | None = (0.5, 0.3)) -> xr.Dataset:
    """Run every method on ``task`` with each kind of expert and every seed; metrics per seed.

    Defaults (full): N = 2000, seeds 0..4, experts ("exact", "mlp"), w in (0.3, 0.5, 0.7) x eta
    in (0, 0.01, 0.05, 0.3), MLP experts trained 2500 iterations. ``quick=True``: N = 500, 3
    seeds, exact experts only unless ``experts`` says otherwise, w in (0.3, 0.5, 0.7) x eta in
    (0, 0.3), 1000 training iterations. ``seeds`` is a count or a list. ``trajectory``: the
    (w, eta) of the AMDM run whose latents are kept for the trajectory figure (exact experts,
    the first seed; None: none).

    Returns a Dataset over ``method`` (AMDM settings are separate entries, with ``family``,
    ``w``, ``eta`` coordinates), ``expert``, ``seed`` (and ``bandwidth``): ``ll``, ``ln_mmd``,
    ``ln_mmd_avg`` (the average kernel), ``w2``, ``var``, ``coverage``, ``accept``, ``wall_s``;
    the floor: ``ll_floor``, ``ln_mmd_floor``, ``ln_mmd_avg_floor``, ``w2_floor``, ``var_floor``,
    ``coverage_floor``, and the MMD floor at smaller N (the first N' points of both exact sets,
    ``floor_sizes``): ``ln_mmd_floor_n`` (seed, floor_n, bandwidth), ``ln_mmd_avg_floor_n``;
    seed 0's ``samples`` and ``target_samples``; the AMDM ``trajectory``.
    """
    t_start = time.perf_counter()
    n = int(n if n is not None else (500 if quick else 2000))
    if seeds is None:
        seeds = 3 if quick else 5
    seed_list = list(range(seeds)) if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]
    ws = tuple(ws if ws is not None else (0.3, 0.5, 0.7))
    etas = tuple(etas if etas is not None else ((0.0, 0.3) if quick else (0.0, 0.01, 0.05, 0.3)))
    mlp_iters = int(mlp_iters if mlp_iters is not None else (1000 if quick else 2500))
    experts = tuple(experts if experts is not None else (("exact",) if quick else EXPERTS))
    if not experts or any(e not in EXPERTS for e in experts):
        raise ValueError(f"experts must be a non-empty subset of {EXPERTS}; got {experts}")
    tk, sched = targets.make_task(task), make_schedule(100)
    bw = np.asarray(bandwidths, dtype=np.float64)
    rows = method_rows(ws, etas)
    scores = Scores(tk.target, seed_list, n, bw, len(rows), len(experts), w2_points)
    info: dict = {"antipodal_fallbacks": {}, "mlp": {}, "energy": {}}
    oracle_at = None  # the expert index under which the oracle ran
    for ei, kind in enumerate(experts):
        e1, e2 = _experts(kind, tk, sched, mlp_iters, mlp_width, info)
        oracle_at = _run_kind(ei, kind, e1, e2, tk, sched, rows, seed_list, n, scores, info, oracle_at, agg_steps,
                              mcmc_steps, n_trapezoid)
    ds = _dataset(scores, rows, experts, seed_list, bw, n)
    if trajectory is not None:
        ds = _add_trajectory(ds, tk, sched, seed_list[0], n, trajectory)
    ds.attrs.update(_attrs(tk, n, sched, agg_steps, mcmc_steps, n_trapezoid, info, quick))
    ds.attrs.update({"metrics_s": scores.metrics_s, "compute_s": time.perf_counter() - t_start})
    return ds


# --------------------------------------------------------------------------------------------
# reading the Dataset


def mean_over_seeds(ds: xr.Dataset, var: str, **sel) -> float:
    """The mean over seeds of ``ds[var]`` at ``sel`` (``method=..., expert=...``)."""
    return float(ds[var].sel(sel).mean("seed"))  # .sel takes a dict: ``method`` is also a keyword of DataArray.sel


def best_method(ds: xr.Dataset, expert: str, families: Sequence[str]) -> str:
    """The method (entry) of the given families with the highest mean LL under ``expert``."""
    cand = [m for m, f in zip(ds.method.values, ds.family.values) if f in families]
    lls = [mean_over_seeds(ds, "ll", method=m, expert=expert) for m in cand]
    return cand[int(np.nanargmax(lls))]

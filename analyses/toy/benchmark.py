"""The 2D benchmark's sweep (App. E, Table 7): every method on one task with each kind of expert
and every seed, scored per seed against exact target samples, as one Dataset.

A paired benchmark (``amdm_geom.analyses.common.paired``): its arms are specs (``settings.arms``:
``amdm``, each (w, eta) setting its own arm, ``summed_score``, ``du_ula``, ``du_mala``, ``du_hmc``
and ``oracle``; ``samplers``, ``mcmc``), its settings one spec (``settings.Benchmark``), the
scoring function (``Scores``) maps an arm's samples to per-seed metrics (the arms are paired by
seed: one reference set per seed), and the result is one Dataset over ``arm`` with ``method``,
``w`` and ``eta`` as coordinates. Experts: ``"exact"`` and ``"mlp"`` (``experts``); every method
runs with both kinds, which separates the model's error (mlp against exact) from the sampler's
(method against oracle). The oracle does not use the experts: its row is one run, repeated under
each expert kind. The true-vs-true floor (two independent exact sets of the same N, scored
alike) is reported beside every metric.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import numpy as np
import xarray as xr

from amdm_geom.analyses.common import paired
from amdm_geom.analyses.toy import targets
from amdm_geom.analyses.toy.experts import ExactExpert, Schedule, make_schedule, train_mlp
from amdm_geom.analyses.toy.mcmc import du_mcmc
from amdm_geom.analyses.toy.metrics import (
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
from amdm_geom.analyses.toy.settings import Arm, Benchmark, arms

__all__ = ["Scores", "best_arm", "floor_sizes", "mean_over_seeds", "run_benchmark"]

#: the per-seed metrics, in the order ``Scores.metrics`` returns them
_METRICS = ("ll", "ln_mmd", "ln_mmd_avg", "w2", "var", "coverage")
#: the Dataset's dims of each per-arm outcome (after ``arm``)
_DIMS = {**{m: ("expert", "seed") for m in (*_METRICS, "accept")}, "ln_mmd": ("expert", "seed", "bandwidth"),
         "wall_s": ("expert",), "samples": ("expert", "point", "coord")}


class Scores:
    """The scoring function: the per-seed metrics of every (arm, expert) against fixed exact
    reference sets: ``ref`` (compared with every arm) and ``ref2`` (the floor), drawn per seed from
    the ``reference`` stream; ``samples`` keeps seed 0's output."""

    def __init__(self, target, seed_list, n: int, bw: np.ndarray, n_arms: int, n_experts: int, w2_points: int):
        self.target, self.bw, self.w2_points = target, bw, w2_points
        self.refs, self.ref2s, self.kyy = [], [], []
        for sd in seed_list:
            rng = np.random.default_rng([sd, STREAMS["reference"]])
            self.refs.append(targets.sample(target, n, rng))
            self.ref2s.append(targets.sample(target, n, rng))
            self.kyy.append(kernel_means(sq_distances(self.refs[-1], self.refs[-1]), bw))
        shape = (n_arms, n_experts, len(seed_list))
        self.arrays = {m: np.full(shape + ((len(bw),) if m == "ln_mmd" else ()), np.nan) for m in _METRICS}
        self.arrays["accept"] = np.full(shape, np.nan)
        self.wall = np.full(shape[:2], np.nan)
        self.samples = np.full((n_arms, n_experts, n, 2), np.nan)
        self.metrics_s = 0.0

    def metrics(self, x: np.ndarray, j: int) -> tuple:
        """The metrics of ``x (n, 2)`` against seed ``j``'s reference set, in ``_METRICS`` order."""
        m2 = mmd2(x, self.refs[j], self.bw, yy=self.kyy[j])
        return (log_likelihood(x, self.target), ln_mmd(m2), float(ln_mmd(m2.mean())),
                w2(x, self.refs[j], self.w2_points), cov_error(x, self.target), mode_coverage(x, self.target))

    def store(self, i: int, e: int, out: np.ndarray) -> None:
        """Score arm ``i``'s output ``out (seeds, n, 2)`` under expert kind ``e``."""
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


def _experts(kind: str, tk, sched: Schedule, spec: Benchmark, info: dict):
    if kind == "exact":
        return ExactExpert(tk.p1, sched), ExactExpert(tk.p2, sched)
    e1 = train_mlp(tk.p1, sched, seed=1, iters=spec.mlp_iters, width=spec.mlp_width)
    e2 = train_mlp(tk.p2, sched, seed=2, iters=spec.mlp_iters, width=spec.mlp_width)
    info["mlp"] = {"p1": e1.info, "p2": e2.info}
    return e1, e2


def _run_kind(spec: Benchmark, plan: list[Arm], ei: int, kind: str, experts, tk, sched, scores: Scores,
              info: dict, oracle_at):
    """Every arm with one kind of expert (``experts``: the pair); returns the expert index the
    oracle ran under."""
    e1, e2 = experts
    seed_list, n = list(spec.seeds), spec.n
    t0 = time.perf_counter()  # AMDM: every setting side by side in one batch
    grid = [(i, a) for i, a in enumerate(plan) if a.method == "amdm"]
    rec: dict = {}
    out = amdm(e1, e2, sched, seed_list, n, w=np.array([a.w for _, a in grid]), eta=np.array([a.eta for _, a in grid]),
               agg_steps=spec.agg_steps, record=rec)
    info["antipodal_fallbacks"][kind] = int(rec["antipodal"])
    dt = (time.perf_counter() - t0) / len(grid)
    for a, (i, _) in enumerate(grid):
        scores.store(i, ei, out[a])
        scores.wall[i, ei] = dt
    for i, arm in enumerate(plan):
        if arm.method == "amdm":
            continue
        t0 = time.perf_counter()
        if arm.method == "oracle" and oracle_at is not None:  # one run, whatever the experts: copy its row
            scores.copy_row(i, oracle_at, ei)
            continue
        if arm.method == "oracle":
            out, oracle_at = oracle(tk.target, sched, seed_list, n), ei
        elif arm.method == "summed_score":
            out = summed_score(e1, e2, sched, seed_list, n)
        else:
            st: dict = {}
            out = du_mcmc(e1, e2, sched, seed_list, n, kind=arm.method[3:], steps=spec.mcmc_steps,
                          n_trapezoid=spec.n_trapezoid, stats=st)
            scores.arrays["accept"][i, ei] = st["accept"]
            info["energy"][f"{arm.method}/{kind}"] = st["energy"]
        scores.wall[i, ei] = time.perf_counter() - t0
        scores.store(i, ei, out)
    return oracle_at


def floor_sizes(n: int) -> list[int]:
    """The sample sizes the true-vs-true floor is also measured at (N/8, N/4, N/2, N; at least 2):
    the floor of the biased MMD^2 is a finite-sample bias of order 1/N, so ln MMD's floor falls by
    about 0.5 ln 2 = 0.35 per doubling of N."""
    return sorted({max(2, n // k) for k in (8, 4, 2, 1)})


def _dataset(scores: Scores, spec: Benchmark, plan: list[Arm], bw: np.ndarray) -> xr.Dataset:
    """One Dataset over ``arm`` (``paired.arm_dataset``): each arm's per-seed metrics, wall time
    and seed 0's samples; then the floor's."""
    a, n, seed_list = scores.arrays, spec.n, list(spec.seeds)
    outcomes = {arm.name: {**{name: a[name][i] for name in (*_METRICS, "accept")}, "wall_s": scores.wall[i],
                           "samples": scores.samples[i]} for i, arm in enumerate(plan)}
    sizes = floor_sizes(n)
    ds = paired.arm_dataset(plan, outcomes, dims=_DIMS, settings={"method": "method", "w": "w", "eta": "eta"},
                            coords={"expert": list(spec.experts), "seed": seed_list, "bandwidth": bw,
                                    "point": np.arange(n), "coord": ["x", "y"], "floor_n": sizes})
    fl = [scores.metrics(scores.ref2s[j], j) for j in range(len(seed_list))]  # the floor
    for k, name in enumerate(_METRICS):
        dims = ("seed", "bandwidth") if name == "ln_mmd" else "seed"
        ds[f"{name}_floor"] = (dims, np.stack([f[k] for f in fl]))
    by_n = np.stack([[mmd2(scores.ref2s[j][:m], scores.refs[j][:m], bw) for m in sizes]
                     for j in range(len(seed_list))])  # (seed, floor_n, bandwidth): MMD^2
    ds["ln_mmd_floor_n"] = (("seed", "floor_n", "bandwidth"), ln_mmd(by_n))
    ds["ln_mmd_avg_floor_n"] = (("seed", "floor_n"), ln_mmd(by_n.mean(-1)))
    ds["target_samples"] = (("point", "coord"), scores.ref2s[0])
    return ds


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


def _attrs(tk, spec: Benchmark, sched: Schedule, info: dict) -> dict:
    return {
        "task": tk.name, "task_description": tk.description, "n": spec.n, "T": sched.T,
        "schedule": "cosine (squaredcos_cap_v2), T = 100, DDPM steps (ddim_coefficients eta = 1), t = 99..0",
        "scheduler_config": sched.coeffs.attrs["scheduler_config"],
        "agg_steps": sched.T if spec.agg_steps is None else int(spec.agg_steps),
        "mcmc": json.dumps({"steps_per_level": spec.mcmc_steps, "ula_mala_step": 1e-3, "hmc_step": 0.03,
                            "leapfrog": 3, "damping": 0.5, "mass": 1.0, "n_trapezoid": spec.n_trapezoid,
                            "step_sizes": "constant over noise levels (Du et al.'s 2D toy code)"}),
        "energy": json.dumps(info["energy"]), "mlp": json.dumps(info["mlp"]),
        "antipodal_fallbacks": json.dumps(info["antipodal_fallbacks"]),
        "ln_mmd_definition": "ln MMD = 0.5 ln MMD^2_b, biased V-statistic, Gaussian kernel exp(-d^2/(2h^2)); "
                             "ln_mmd_avg uses the average of the kernels over the bandwidths",
        "var_definition": "Frobenius norm of cov(samples) - cov(target) (the paper's Var is undefined)",
        "coverage_definition": "share of target modes (clusters >= 2% mass) with >= 5 samples within 2 std",
        "floor": "exact target samples (independent set) scored like every method, against the same reference set",
        "oracle_note": "the oracle does not use the experts: its row is one run, repeated under each expert kind",
        "benchmark": spec.model_dump_json(),
    }


def run_benchmark(spec: Benchmark) -> xr.Dataset:
    """Run every arm (``settings.arms``) on ``spec.task`` with each kind of expert and every seed;
    metrics per seed (``settings.settings`` makes ``spec`` at full or quick scale).

    Returns a Dataset over ``arm`` (AMDM settings are separate arms; coordinates ``method``, ``w``,
    ``eta``), ``expert``, ``seed`` (and ``bandwidth``): ``ll``, ``ln_mmd``, ``ln_mmd_avg`` (the
    average kernel), ``w2``, ``var``, ``coverage``, ``accept``, ``wall_s``; the floor:
    ``ll_floor``, ``ln_mmd_floor``, ``ln_mmd_avg_floor``, ``w2_floor``, ``var_floor``,
    ``coverage_floor``, and the MMD floor at smaller N (the first N' points of both exact sets,
    ``floor_sizes``): ``ln_mmd_floor_n`` (seed, floor_n, bandwidth), ``ln_mmd_avg_floor_n``; seed
    0's ``samples`` and ``target_samples``; the AMDM ``trajectory`` (``spec.trajectory``: its (w,
    eta), exact experts, the first seed). ``attrs["benchmark"]`` keeps ``spec``.
    """
    t_start = time.perf_counter()
    seed_list = list(spec.seeds)
    tk, sched = targets.make_task(spec.task), make_schedule(100)
    bw = np.asarray(spec.bandwidths, dtype=np.float64)
    plan = arms(spec)
    scores = Scores(tk.target, seed_list, spec.n, bw, len(plan), len(spec.experts), spec.w2_points)
    info: dict = {"antipodal_fallbacks": {}, "mlp": {}, "energy": {}}
    oracle_at = None  # the expert index under which the oracle ran
    for ei, kind in enumerate(spec.experts):
        experts = _experts(kind, tk, sched, spec, info)
        oracle_at = _run_kind(spec, plan, ei, kind, experts, tk, sched, scores, info, oracle_at)
    ds = _dataset(scores, spec, plan, bw)
    if spec.trajectory is not None:
        ds = _add_trajectory(ds, tk, sched, seed_list[0], spec.n, spec.trajectory)
    ds.attrs.update(_attrs(tk, spec, sched, info))
    ds.attrs.update({"metrics_s": scores.metrics_s, "compute_s": time.perf_counter() - t_start})
    return ds


# --------------------------------------------------------------------------------------------
# reading the Dataset


def mean_over_seeds(ds: xr.Dataset, var: str, **sel) -> float:
    """The mean over seeds of ``ds[var]`` at ``sel`` (``arm=..., expert=...``)."""
    return float(ds[var].sel(sel).mean("seed"))


def best_arm(ds: xr.Dataset, expert: str, methods: Sequence[str]) -> str:
    """The arm of the given methods with the highest mean LL under ``expert``."""
    cand = [a for a, m in zip(ds.arm.values, ds.method.values) if m in methods]
    lls = [mean_over_seeds(ds, "ll", arm=a, expert=expert) for a in cand]
    return str(cand[int(np.nanargmax(lls))])

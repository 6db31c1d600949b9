"""The 2D benchmark's settings as specs (App. E, Table 7): what one run of the benchmark does
(``Benchmark``), its sizes at full and quick scale (``ToyScale``, ``FULL``, ``QUICK``), and its
arms (``Arm``: one method, each AMDM setting (w, eta) its own arm), the arms of a paired
benchmark (``amdm_geom.analyses.common.paired``) paired by seed."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import model_validator

from amdm_geom.analyses.common import paired
from amdm_geom.analyses.toy.metrics import BANDWIDTHS
from amdm_geom.analyses.toy.targets import TASKS
from amdm_geom.core.spec import Spec, SpecError, choice, integer, optional, real, seed, sequence

__all__ = ["DU_METHODS", "EXPERTS", "FULL", "METHODS", "QUICK", "Arm", "Benchmark", "ToyScale", "arms", "settings"]

METHODS = ("amdm", "summed_score", "du_ula", "du_mala", "du_hmc", "oracle")
DU_METHODS = ("du_ula", "du_mala", "du_hmc")
EXPERTS = ("exact", "mlp")

_Weights = Annotated[tuple[float, ...], sequence(real(0.0, 1.0), accepted="numbers in [0, 1]", min_len=1)]
_Etas = Annotated[tuple[float, ...], sequence(real(0.0), accepted="finite numbers >= 0", min_len=1)]
_Experts = Annotated[tuple[Literal[EXPERTS], ...], sequence(choice(*EXPERTS), accepted="exact and/or mlp", min_len=1)]


class Arm(Spec):
    """One arm of the 2D benchmark: a method, with AMDM's weight ``w`` and shift ``eta`` (None
    for the other methods)."""

    name: str
    method: Annotated[Literal[METHODS], choice(*METHODS)]
    w: Annotated[float | None, optional(real(0.0, 1.0))] = None
    """AMDM's weight of model 1 (eq. 6)."""
    eta: Annotated[float | None, optional(real(0.0))] = None
    """AMDM's radial shift (eq. 7)."""


class ToyScale(paired.Scale):
    """The 2D benchmark's sizes (full or quick)."""

    n: Annotated[int, integer(2)]
    """N, samples per method and seed."""
    seeds: Annotated[int, integer(1)]
    """how many seeds."""
    etas: _Etas
    """AMDM's shifts (beside w = 0.3, 0.5, 0.7)."""
    mlp_iters: Annotated[int, integer(1)]
    """the MLP experts' training iterations."""
    experts: _Experts
    """the kinds of expert."""


FULL = ToyScale(n=2000, seeds=5, etas=(0.0, 0.01, 0.05, 0.3), mlp_iters=2500, experts=EXPERTS)
QUICK = ToyScale(n=500, seeds=3, etas=(0.0, 0.3), mlp_iters=1000, experts=("exact",))


class Benchmark(Spec):
    """One run of the 2D benchmark: the task, the samples, the seeds, the experts, AMDM's grid and
    the MCMC and metric settings."""

    task: Annotated[Literal[TASKS], choice(*TASKS)] = "ring_bar"
    """the composition task (``targets.make_task``)."""
    n: Annotated[int, integer(2)]
    """N, samples per method and seed."""
    seeds: Annotated[tuple[int, ...], sequence(seed(), accepted="seeds (ints in [0, 2**63))", min_len=1)]
    """the seeds; each method is scored per seed (paired by seed)."""
    experts: _Experts
    """exact and/or mlp experts (each method runs with each kind)."""
    ws: _Weights = (0.3, 0.5, 0.7)
    """AMDM's weights w (the grid is ws x etas)."""
    etas: _Etas
    """AMDM's shifts eta."""
    agg_steps: Annotated[int | None, optional(integer(0))] = None
    """AMDM's aggregation steps s (None: all T)."""
    bandwidths: Annotated[tuple[float, ...], sequence(real(0.0, low_open=True), accepted="numbers > 0",
                                                      min_len=1)] = BANDWIDTHS
    """the MMD's kernel bandwidths h."""
    mcmc_steps: Annotated[int, integer(1)] = 10
    """Du et al.'s MCMC steps per noise level."""
    n_trapezoid: Annotated[int, integer(1)] = 2
    """trapezoid points of the MCMC's energy integral."""
    mlp_iters: Annotated[int, integer(1)]
    """the MLP experts' training iterations."""
    mlp_width: Annotated[int, integer(1)] = 48
    """the MLP experts' width."""
    w2_points: Annotated[int, integer(2)] = 500
    """points of the W2 estimate."""
    trajectory: Annotated[tuple[float, float] | None, optional(sequence(real(0.0), accepted="(w, eta)"))] = (0.5, 0.3)
    """the (w, eta) of the AMDM run whose latents are kept for the trajectory figure (None: none)."""

    @model_validator(mode="after")
    def _distinct(self):
        if len(set(self.experts)) != len(self.experts):
            raise SpecError("must name each kind once", self.experts, loc=("experts",))
        if self.trajectory is not None and len(self.trajectory) != 2:
            raise SpecError("must be (w, eta)", self.trajectory, loc=("trajectory",))
        return self


def settings(quick: bool = False, *, seed: int = 0, **changes) -> Benchmark:
    """The benchmark's settings at full or ``quick`` scale (``FULL``, ``QUICK``), with
    ``changes`` (``Benchmark``'s fields, each checked: a one-line ``SpecError``). ``seeds``: a
    list, or a count meaning ``seed, seed + 1, ...`` (by default the scale's count)."""
    sc = paired.at_scale(quick, FULL, QUICK)
    seeds = changes.pop("seeds", None)
    seeds = sc.seeds if seeds is None else seeds
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = tuple(range(int(seed), int(seed) + seeds))
    defaults = {"n": sc.n, "experts": sc.experts, "etas": sc.etas, "mlp_iters": sc.mlp_iters}
    return Benchmark(**{**defaults, **changes, "seeds": seeds})


def arms(spec: Benchmark) -> list[Arm]:
    """The arms, in the Dataset's order: the AMDM grid (w, eta) first, then the summed score, Du
    et al.'s ULA, MALA and HMC, and the oracle."""
    grid = [Arm(name=f"amdm[w={w:g},eta={e:g}]", method="amdm", w=float(w), eta=float(e))
            for w in spec.ws for e in spec.etas]
    return grid + [Arm(name=m, method=m) for m in ("summed_score", *DU_METHODS, "oracle")]

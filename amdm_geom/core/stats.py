"""Statistical decisions on paired outcomes: a comparison of runs that share their per-sample seeds
is decided from the per-sample differences, with a confidence interval at a stated level, never
from a fixed threshold on the means.

The interval. ``paired_interval`` is the paired t interval on the per-sample differences
``a_i - b_i`` (scipy.stats.t): exact when the differences are normal, and close to its level for
bounded differences (success masses in [0, 1]) at the sample sizes used here (central limit
theorem; ``tests/test_stats.py`` measures its coverage on 0/1 outcomes). It is chosen over a
bootstrap (BCa) because it is deterministic without a seed, costs nothing, and the bootstrap
under-covers at small n and collapses to a point when every resampled difference is equal, as
does the t interval. That one degenerate case, every difference equal to d, is handled
honestly when the outcomes' range is known (``value_range``): n equal draws only show that a
different difference has probability at most p = 1 - (alpha/2)^(1/n) (the exact binomial bound
for 0 events in n), so the mean difference lies in d + p [lo - d, hi - d] (lo, hi the range of a
difference).

The deciders:

- ``decide(interval, margin, direction)``: a one-sided claim ("A beats B"): ``holds`` when the
  whole interval lies beyond the margin in the claimed direction, ``violated`` when it lies
  entirely on the other side (touching the margin counts there: an exact tie does not beat),
  ``inconclusive`` when it straddles the margin;
- ``decide_equivalence(interval, margin)``: "A does as well as B" (|diff| <= margin): ``holds``
  when the interval lies inside [-margin, margin], ``violated`` when it lies entirely outside,
  else ``inconclusive``;
- ``best_of(outcomes, claimed)``: "the claimed arm is best of k": the k - 1 paired differences
  claimed - rival, each with a Bonferroni interval at level 1 - alpha / (k - 1), so the k - 1
  intervals hold together with probability >= level. ``holds`` when the claimed arm beats every
  rival, ``violated`` when some rival is significantly better (or tied exactly), else
  ``inconclusive``. Under the null (all arms alike) it holds with probability <= alpha / 2.

A claim over a grid of settings. ``grid_decision(cells, margin, direction)`` decides one claim
("difference ``direction`` ``margin``") in each of m cells (settings: T, guidance, s, role
order), each a ``Paired`` comparison, with familywise control across the cells by Bonferroni
simultaneous intervals: every cell's interval is re-derived at level 1 - alpha / m (``at_level``;
alpha = 1 - level), so the m intervals cover their true differences together with probability
>= 1 - alpha whatever the dependence between cells, and each cell is decided by ``decide`` on
its own interval. A false per-cell decision (a "holds" where the claim is false, or a "violated"
where it is true) needs an interval that misses, so the chance of any false decision anywhere
is <= alpha, and of a false "holds" (one-sided) <= alpha / 2. Simultaneous intervals are chosen
over Holm's step-down tests because they control both directions at once (the grid's status
needs "decided true" and "decided false" in the same family), because the heatmap then draws
intervals that hold together as drawn, and because ``best_of`` already uses them. They cost
some power against Holm, whose thresholds relax after each rejection (alpha / m, alpha / (m - 1),
...), but Holm gives no intervals to draw and decides one direction per family. Per cell the
decision is "holds", "violated" or "inconclusive" (undecided); over the grid (``GRID_OUTCOMES``):

- "holds everywhere" (status "holds"): decided true in every cell;
- "violated everywhere" (status "violated"): decided false in every cell;
- "setting-dependent" (status "setting-dependent"): decided true in some cells and false in
  others (cells left undecided, if any, are named too);
- status "inconclusive" otherwise: "holds in some cells, undecided in the rest", "violated in
  some cells, undecided in the rest" (shown false where decided, yet not everywhere), or
  "undecided everywhere".

Power. ``n_to_resolve`` is the sample size (per arm; the arms are paired) at which a true
difference ``delta`` (0.05 in success probability by default) is decided with probability
``power`` by these intervals, given the paired standard deviation: the normal approximation
n = ((z_{1 - alpha'/2} + z_power) sd / delta)^2, alpha' = alpha / (k - 1) for a best-of-k claim;
``power_at`` the converse, the power a given n has: Phi(sqrt(n) delta / sd - z_{1 - alpha'/2}).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

__all__ = ["DELTA", "GRID_OUTCOMES", "LEVEL", "POWER", "BestOf", "GridDecision", "Paired", "at_level", "best_of",
           "decide", "decide_equivalence", "grid_decision", "interval_text", "n_to_resolve", "paired_interval",
           "power_at", "proportion_interval"]

#: The confidence level every comparison is decided at.
LEVEL = 0.95
#: The true difference in success probability a comparison should resolve, and with what power.
DELTA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Paired:
    """A paired comparison a - b: the mean difference, its interval at ``level``, the standard
    deviation of the per-sample differences, the number of pairs ``n`` and the test used."""

    mean: float
    interval: tuple[float, float]
    sd: float
    n: int
    level: float
    test: str


def paired_interval(a, b, level: float = LEVEL, *, value_range: tuple[float, float] | None = None,
                    atol: float = 0.0) -> Paired:
    """The paired t interval of mean(a - b) at ``level`` from per-sample outcomes ``a``, ``b``
    (same seeds, same order; NaN pairs are dropped). ``value_range``: the range of one outcome
    (``(0, 1)`` for a success mass), used only when every difference is equal (see the module
    docstring); without it such an interval is the point itself. ``atol``: differences within it
    of one another count as equal (the outcomes' rounding, e.g. 1e-9 for float64 posterior
    masses: two runs that agree differ by rounding). Fewer than two pairs: NaN."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes need two 1-D arrays of one length; got {a.shape} and {b.shape}")
    d = a - b
    d = d[np.isfinite(d)]
    n = len(d)
    test = f"paired t interval, {100 * level:.3g}%"
    if n < 2:
        return Paired(math.nan, (math.nan, math.nan), math.nan, n, level, test)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if float(d.max() - d.min()) <= atol:
        if value_range is None:
            return Paired(mean, (mean, mean), 0.0, n, level, test + " (all differences equal)")
        lo, hi = value_range[0] - value_range[1], value_range[1] - value_range[0]
        p = 1.0 - ((1.0 - level) / 2.0) ** (1.0 / n)
        return Paired(mean, (mean + p * (lo - mean), mean + p * (hi - mean)), 0.0, n, level,
                      f"all {n} differences equal: exact binomial bound on a differing one, {100 * level:.3g}%")
    half = float(stats.t.ppf(0.5 + level / 2.0, n - 1)) * sd / math.sqrt(n)
    return Paired(mean, (mean - half, mean + half), sd, n, level, test)


def decide(interval: tuple[float, float], margin: float = 0.0, direction: str = ">") -> str:
    """"holds", "violated" or "inconclusive" for the claim "difference ``direction`` ``margin``"
    (``">"`` or ``"<"``) from the difference's confidence interval (see the module docstring)."""
    lo, hi = (float(x) for x in interval)
    if direction == "<":
        lo, hi, margin = -hi, -lo, -margin
    elif direction != ">":
        raise ValueError(f"direction must be '>' or '<'; got {direction!r}")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if lo > margin:
        return "holds"
    if hi <= margin:
        return "violated"
    return "inconclusive"


def decide_equivalence(interval: tuple[float, float], margin: float) -> str:
    """"holds" when the interval lies inside [-margin, margin], "violated" when it lies entirely
    outside it, else "inconclusive"."""
    lo, hi = (float(x) for x in interval)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if -margin <= lo and hi <= margin:
        return "holds"
    if lo > margin or hi < -margin:
        return "violated"
    return "inconclusive"


@dataclass(frozen=True)
class BestOf:
    """A best-of-k decision: ``status``; per rival the paired comparison claimed - rival at the
    Bonferroni level ``per_level`` (``comparisons``); the rival that decides it (``deciding``:
    among the rivals whose own decision is the overall status, the one with the lowest upper
    bound if violated, else the lowest lower bound: its interval agrees with the status) and
    the level the k - 1 intervals hold at together."""

    status: str
    claimed: str
    comparisons: dict[str, Paired]
    deciding: str
    level: float
    per_level: float
    test: str

    @property
    def value(self) -> float:
        """The claimed arm's mean margin over the deciding rival."""
        return self.comparisons[self.deciding].mean

    @property
    def n(self) -> int:
        return min(c.n for c in self.comparisons.values())


def best_of(outcomes: dict, claimed: str, level: float = LEVEL, *, margin: float = 0.0,
            value_range: tuple[float, float] | None = None, atol: float = 0.0) -> BestOf:
    """Whether arm ``claimed`` of ``outcomes`` (name -> per-sample outcomes, paired) is best: the
    k - 1 differences claimed - rival, each at level 1 - (1 - level) / (k - 1) (Bonferroni:
    simultaneous at ``level``). "holds" when every one is decided "holds" (beyond ``margin``),
    "violated" when any is "violated", else "inconclusive". ``value_range`` and ``atol``: as
    for ``paired_interval``."""
    rivals = [r for r in outcomes if r != claimed]
    if claimed not in outcomes or not rivals:
        raise ValueError(f"best_of needs the claimed arm {claimed!r} and at least one rival; got {list(outcomes)}")
    per_level = 1.0 - (1.0 - level) / len(rivals)
    comps = {r: paired_interval(outcomes[claimed], outcomes[r], per_level, value_range=value_range, atol=atol)
             for r in rivals}
    statuses = [decide(c.interval, margin) for c in comps.values()]
    status = "violated" if "violated" in statuses else "holds" if all(s == "holds" for s in statuses) \
        else "inconclusive"
    same = [r for r, s in zip(rivals, statuses) if s == status]
    deciding = min(same, key=lambda r: comps[r].interval[1 if status == "violated" else 0])
    test = (f"best of {len(rivals) + 1}: paired t intervals, Bonferroni over {len(rivals)} rivals "
            f"({per_level:.2%} each, {level:.0%} together)") if len(rivals) > 1 else comps[rivals[0]].test
    return BestOf(status, claimed, comps, deciding, level, per_level, test)


#: The grid's outcomes (``grid_decision``) and the verdict status each maps to.
GRID_OUTCOMES = {"holds everywhere": "holds", "violated everywhere": "violated",
                 "setting-dependent": "setting-dependent",
                 "holds in some cells, undecided in the rest": "inconclusive",
                 "violated in some cells, undecided in the rest": "inconclusive",
                 "undecided everywhere": "inconclusive"}


@functools.lru_cache(maxsize=256)
def _t_quantile(q: float, df: int) -> float:
    """Student's t quantile (cached: a grid asks for the same one in every cell)."""
    return float(stats.t.ppf(q, df))


def at_level(p: Paired, level: float) -> Paired:
    """``p`` (from ``paired_interval``) with its interval re-derived at ``level``: the paired t
    interval mean +- t_{(1 + level) / 2, n - 1} sd / sqrt(n) where the differences vary; where every
    difference is equal, the exact binomial bound's interval scaled by p(level) / p(p.level),
    p(L) = 1 - ((1 - L) / 2)^(1 / n) (a point stays a point); NaN stays NaN."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1); got {level!r}")
    lo, hi = (float(x) for x in p.interval)
    if not (math.isfinite(p.mean) and math.isfinite(lo) and math.isfinite(hi)) or p.n < 2:
        return replace(p, interval=(math.nan, math.nan), level=level)
    test = p.test.replace(f"{100 * p.level:.3g}%", f"{100 * level:.3g}%")
    if p.sd > 0:
        half = _t_quantile(0.5 + level / 2.0, p.n - 1) * p.sd / math.sqrt(p.n)
        return replace(p, interval=(p.mean - half, p.mean + half), level=level, test=test)
    old, new = (1.0 - ((1.0 - lv) / 2.0) ** (1.0 / p.n) for lv in (p.level, level))
    k = new / old
    return replace(p, interval=(p.mean + k * (lo - p.mean), p.mean + k * (hi - p.mean)), level=level, test=test)


@dataclass(frozen=True)
class GridDecision:
    """One claim decided over a grid of cells (see the module docstring): ``outcome`` (a key of
    ``GRID_OUTCOMES``) and its verdict ``status``; per cell the comparison at the Bonferroni level
    ``per_level`` (``cells``) and its decision (``decisions``: "holds", "violated" or
    "inconclusive"); ``level``, the level the intervals hold at together."""

    status: str
    outcome: str
    cells: dict[str, Paired]
    decisions: dict[str, str]
    level: float
    per_level: float
    margin: float
    direction: str
    test: str

    def where(self, decision: str) -> list[str]:
        """The cells (in order) whose own decision is ``decision``."""
        return [c for c, d in self.decisions.items() if d == decision]


def grid_decision(cells: Mapping[str, Paired], level: float = LEVEL, *, margin: float = 0.0,
                  direction: str = ">") -> GridDecision:
    """The claim "difference ``direction`` ``margin``" over the grid ``cells`` (cell label ->
    ``Paired``, at any level): every interval re-derived at 1 - (1 - level) / m (``at_level``,
    Bonferroni over the m cells: simultaneous at ``level``), each cell decided by ``decide``, the
    grid by the rules of the module docstring."""
    if not cells:
        raise ValueError("a grid decision needs one or more cells; got none")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1); got {level!r}")
    m = len(cells)
    per_level = 1.0 - (1.0 - level) / m
    wide = {str(c): at_level(p, per_level) for c, p in cells.items()}
    decisions = {c: decide(p.interval, margin, direction) for c, p in wide.items()}
    said = set(decisions.values())
    if said == {"holds"}:
        outcome = "holds everywhere"
    elif said == {"violated"}:
        outcome = "violated everywhere"
    elif {"holds", "violated"} <= said:
        outcome = "setting-dependent"
    elif "holds" in said:
        outcome = "holds in some cells, undecided in the rest"
    elif "violated" in said:
        outcome = "violated in some cells, undecided in the rest"
    else:
        outcome = "undecided everywhere"
    test = (f"paired t intervals, Bonferroni over {m} cells ({100 * per_level:.3g}% each, "
            f"{100 * level:.3g}% together)")
    return GridDecision(GRID_OUTCOMES[outcome], outcome, wide, decisions, level, per_level, float(margin), direction,
                        test)


def n_to_resolve(sd: float, delta: float = DELTA, level: float = LEVEL, power: float = POWER,
                 comparisons: int = 1) -> int:
    """Pairs needed so that a true paired difference ``delta`` is decided (the ``level`` interval,
    Bonferroni over ``comparisons``, excludes 0) with probability ``power``, given the paired
    standard deviation ``sd``: ceil(((z_{1-alpha'/2} + z_power) sd / delta)^2), alpha' = (1 -
    level) / comparisons (normal approximation). At least 2; NaN sd: 0 (unknown)."""
    if not math.isfinite(sd):
        return 0
    alpha = (1.0 - level) / max(int(comparisons), 1)
    z = float(stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power))
    return max(2, math.ceil((z * sd / delta) ** 2))


def power_at(n: int, sd: float, delta: float = DELTA, level: float = LEVEL, comparisons: int = 1) -> float:
    """The probability that ``n`` pairs decide a true paired difference ``delta`` (the ``level``
    interval, Bonferroni over ``comparisons``, excludes 0 on the side of ``delta``), given the
    paired standard deviation ``sd``: Phi(sqrt(n) delta / sd - z_{1-alpha'/2}) (normal
    approximation, the converse of ``n_to_resolve``). sd = 0: 1; NaN sd or n < 2: NaN."""
    if not math.isfinite(sd) or n < 2:
        return math.nan
    if sd == 0:
        return 1.0
    alpha = (1.0 - level) / max(int(comparisons), 1)
    return float(stats.norm.cdf(math.sqrt(n) * delta / sd - stats.norm.ppf(1.0 - alpha / 2.0)))


def interval_text(p: Paired, digits: int = 3) -> str:
    """``"+0.031 [-0.012, +0.074] (95%, n = 48)"``."""
    lo, hi = p.interval
    return f"{p.mean:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}] ({100 * p.level:.3g}%, n = {p.n})"


def proportion_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval of a binomial proportion, ``k`` successes
    in ``n`` (scipy's ``binomtest``). Raises ValueError for ``n < 1`` or ``k`` outside [0, n]."""
    if not (n >= 1 and 0 <= k <= n):
        raise ValueError(f"need 0 <= k <= n and n >= 1; got k = {k!r}, n = {n!r}")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)

"""Paired benchmarks: one shape for every benchmark that runs several arms on the same per-sample
seeds (the ablations, the digits and flow benchmarks, the 2D benchmark of App. E).

- An arm is a spec (``amdm_geom.core.spec.Spec``, with a ``name``): its models, the sampler's
  settings, the method. Arms share their seeds, so two arms are compared sample by sample.
- A scoring function maps an arm's output (its samples, or the store it wrote) to per-sample
  outcomes: ``{variable: array}``, ``(sample,)`` by default (a posterior mass, a 0/1 success), or
  any dims the benchmark names (``(expert, seed)`` for the 2D benchmark, whose samples are
  paired by seed).
- ``arm_dataset`` puts them in one ``xarray.Dataset`` over ``arm``: each variable stacked over
  the arms (NaN-padded where arms differ in length along a dim, e.g. their number of steps), and
  every setting that varies between the arms a coordinate on ``arm`` (``eta``, ``agg_steps``,
  ``mix``, ...), read from the specs, so that no reader parses a setting out of an arm's name.
  ``settings`` names coordinates that are there whatever the arms (``steps`` for
  ``sampler.num_inference_steps``); ``attrs["specs"]`` keeps every arm's spec (``arms_of``
  gives them back typed).
- Paired statistics come from ``amdm_geom.core.stats``: ``compare`` (the paired t interval of
  mean(a - b)) and ``best`` (best of k, Bonferroni over the rivals), at ``LEVEL``, with the
  outcomes' range ``PAIRED``; ``paired_verdict``, ``best_verdict`` and ``equivalence_verdict``
  make the ``Verdict`` of one, with the sample size that would resolve it (``stats.n_to_resolve``)
  and the power the samples at hand have.
- ``Scale``: the sizes of one benchmark (a subclass per benchmark, its ``FULL`` and ``QUICK``
  instances); ``at_scale(quick, FULL, QUICK)`` is the benchmark's one quick/full switch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import xarray as xr

from amdm_geom.core import stats
from amdm_geom.core.spec import Spec, SpecError
from amdm_geom.core.verdicts import Verdict

__all__ = ["EQUIVALENCE_MARGIN", "LEVEL", "PAIRED", "Scale", "arm_dataset", "arms_of", "at_scale", "best",
           "best_verdict", "compare", "equivalence_verdict", "in_group", "outcome", "paired_verdict", "run_arms",
           "varied_settings", "with_mean"]

#: The confidence level of every comparison (simultaneous over a best-of-k claim's rivals).
LEVEL = stats.LEVEL
#: "Does as well as": the paired difference in success probability lies within +- this.
EQUIVALENCE_MARGIN = stats.DELTA
#: Every benchmark's outcome lies in [0, 1] (a posterior mass, a 0/1 success); two arms that agree
#: differ by float64 rounding only (``stats.paired_interval``'s ``value_range`` and ``atol``).
PAIRED = {"value_range": (0.0, 1.0), "atol": 1e-9}

S = TypeVar("S")


# --------------------------------------------------------------------------------------------
# the sizes


class Scale(Spec):
    """The sizes of one benchmark at one scale (full or quick). A benchmark subclasses it, one
    field per size (each checked like any spec's: a bad size is a one-line ``SpecError``), and
    defines its ``FULL`` and ``QUICK`` instances; ``at_scale`` picks one."""


def at_scale(quick: bool, full: S, small: S) -> S:
    """``small`` for a quick run, else ``full``: a benchmark's one quick/full switch. ``quick``
    must be True or False (a one-line ``SpecError`` otherwise)."""
    if not isinstance(quick, (bool, np.bool_)):
        raise SpecError("must be True or False", quick, loc=("quick",))
    return small if quick else full


# --------------------------------------------------------------------------------------------
# the Dataset over arm


def _leaves(tree: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """A spec's JSON dump as ``{path: value}``; lists (tuples) and empty dicts are leaves."""
    if isinstance(tree, dict) and tree:
        out = {}
        for key, value in tree.items():
            out.update(_leaves(value, (*path, str(key))))
        return out
    return {path: tree}


def _coordinate(values: list) -> np.ndarray:
    """One setting over the arms as an array: bools, numbers (NaN where an arm has none), text,
    else each value's JSON text."""
    if all(isinstance(v, bool) for v in values):
        return np.array(values, dtype=bool)
    numbers = [v for v in values if v is not None]
    if numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        if len(numbers) == len(values) and all(isinstance(v, int) for v in values):
            return np.array(values, dtype=np.int64)
        return np.array([math.nan if v is None else float(v) for v in values])
    if all(isinstance(v, str) for v in values):
        return np.array(values, dtype=str)
    return np.array([json.dumps(v) for v in values], dtype=str)


def _check_arms(arms: Sequence) -> list[str]:
    if not arms:
        raise ValueError("a benchmark needs one or more arms; got none")
    for arm in arms:
        if not isinstance(arm, Spec) or not isinstance(getattr(arm, "name", None), str):
            raise ValueError(f"an arm must be a spec (amdm_geom.core.spec.Spec) with a name; got {arm!r}")
    names = [arm.name for arm in arms]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"arm names must be unique; got {', '.join(twice)} more than once")
    return names


def varied_settings(arms: Sequence[Spec], settings: Mapping[str, str | Callable] | None = None,
                    exclude: Sequence[str] = (), taken: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The arms' settings as coordinates ``{name: (arm,) array}``: first ``settings`` (name ->
    a dotted field path such as ``"sampler.eta"``, or a function of the arm, which stands for the
    field of its name), whatever the arms; then every other field whose value differs between the
    arms, named by its last part (its whole path joined by ``_`` where that name is taken).
    ``exclude``: field paths left out (and ``name``, the arm itself); ``taken``: names in use (the
    Dataset's variables and dims)."""
    _check_arms(arms)
    leaves = [_leaves(arm.model_dump(mode="json")) for arm in arms]
    out: dict[str, np.ndarray] = {}
    covered = [("name",), *(tuple(p.split(".")) for p in exclude)]
    for name, how in (settings or {}).items():
        if name in taken or name == "arm":
            raise ValueError(f"setting {name}: the name of one of the Dataset's variables or dims")
        if callable(how):  # (it stands for the field of its name, if there is one)
            out[name] = _coordinate([how(arm) for arm in arms])
            covered.append((name,))
            continue
        path = tuple(how.split("."))
        values = [{p: v for p, v in lv.items() if p[:len(path)] == path} for lv in leaves]
        if not values[0]:
            raise ValueError(f"setting {name}: {type(arms[0]).__name__} has no field {how}")
        out[name] = _coordinate([v[path] if path in v else {".".join(p[len(path):]): x for p, x in v.items()}
                                 for v in values])
        covered.append(path)
    for path in dict.fromkeys(p for lv in leaves for p in lv):  # (in the order the arms name them)
        if any(path[:len(c)] == c for c in covered):
            continue
        values = [lv.get(path) for lv in leaves]
        if all(v == values[0] for v in values):
            continue
        name = path[-1]
        if name in out or name in taken or name == "arm":
            name = "_".join(path)
        if name in out or name in taken:
            raise ValueError(f"setting {'.'.join(path)}: its coordinate name {name} is taken")
        out[name] = _coordinate(values)
    return out


def _stack(values: list[np.ndarray]) -> np.ndarray:
    """The arms' arrays stacked along a first axis; arrays of different lengths along a dim are
    padded at the end with NaN."""
    shapes = {v.shape for v in values}
    if len(shapes) == 1:
        return np.stack(values)
    if len({v.ndim for v in values}) != 1:
        raise ValueError(f"an outcome has different numbers of dims in different arms: {sorted(shapes)}")
    full = np.full((len(values), *np.max([v.shape for v in values], axis=0)), np.nan)
    for i, v in enumerate(values):
        full[(i, *(slice(0, s) for s in v.shape))] = v
    return full


def arm_dataset(arms: Sequence[Spec], outcomes: Mapping[str, Mapping[str, Any]], *,
                dims: Mapping[str, tuple[str, ...]] | None = None, coords: Mapping | None = None,
                settings: Mapping[str, str | Callable] | None = None, exclude: Sequence[str] = (),
                attrs: Mapping | None = None) -> xr.Dataset:
    """One Dataset over ``arm`` (in the arms' order): each variable of ``outcomes`` (arm name ->
    ``{variable: array}``, the same variables for every arm) stacked over the arms, with dims
    ``("arm", *dims[variable])`` (default: none for a scalar, ``("sample",)`` for a 1-d array);
    ``coords``: the other dims' coordinates; the arms' settings as coordinates
    (``varied_settings(arms, settings, exclude)``); ``attrs`` and ``attrs["specs"]``, the arms'
    specs as a JSON list."""
    names = _check_arms(arms)
    missing = [n for n in names if n not in outcomes]
    if missing:
        raise ValueError(f"no outcomes for arm(s) {', '.join(missing)}; got {', '.join(map(str, outcomes))}")
    dims = dict(dims or {})
    data = {}
    for var in outcomes[names[0]]:
        values = [np.asarray(outcomes[n][var]) for n in names]
        if var not in dims and values[0].ndim > 1:
            raise ValueError(f"outcome {var} has {values[0].ndim} dims: name them (dims={{{var!r}: (...)}})")
        var_dims = dims.get(var, ("sample",) if values[0].ndim == 1 else ())
        data[var] = (("arm", *var_dims), _stack(values))
    ds = xr.Dataset(data, coords={"arm": names, **(coords or {})})
    if "sample" in ds.dims and "sample" not in ds.coords:
        ds = ds.assign_coords(sample=np.arange(ds.sizes["sample"]))
    found = varied_settings(arms, settings, exclude, taken=[*ds.variables, *ds.dims])
    ds = ds.assign_coords({name: ("arm", values) for name, values in found.items()})
    ds.attrs.update({**(attrs or {}), "specs": json.dumps([arm.model_dump(mode="json") for arm in arms])})
    return ds


def run_arms(arms: Sequence[Spec], score: Callable[[Spec], Mapping[str, Any]], *, progress: bool = False,
             desc: str = "", **dataset) -> xr.Dataset:
    """Run and score every arm (``score(arm) -> {variable: per-sample outcomes}``, in the arms'
    order; a tqdm bar with ``progress``), as ``arm_dataset(arms, ..., **dataset)``."""
    from tqdm import tqdm

    _check_arms(arms)
    outcomes = {arm.name: score(arm) for arm in tqdm(arms, desc=desc, disable=not progress)}
    return arm_dataset(arms, outcomes, **dataset)


def arms_of(ds: xr.Dataset, cls: type[S]) -> list[S]:
    """The arms' specs, typed (``cls.model_validate`` of each in ``attrs["specs"]``), in order."""
    return [cls.model_validate(spec) for spec in json.loads(ds.attrs["specs"])]


def in_group(ds: xr.Dataset, group: str, **where) -> list[str]:
    """The arms of ``group`` (the ``group`` coordinate), in order, whose coordinates equal
    ``where`` (``mix="slerp"``)."""
    keep = ds.group == group
    for name, value in where.items():
        keep = keep & (ds[name] == value)
    return [str(a) for a in ds.arm.values[np.asarray(keep)]]


def with_mean(ds: xr.Dataset, var: str, name: str) -> xr.Dataset:
    """``ds`` with ``name``, the mean of ``var`` over the samples per arm, and ``name_se``, its
    standard error (ddof 1)."""
    ds[name] = ds[var].mean("sample")
    ds[f"{name}_se"] = ds[var].std("sample", ddof=1) / math.sqrt(ds.sizes["sample"])
    return ds


# --------------------------------------------------------------------------------------------
# paired statistics (amdm_geom.core.stats) and their verdicts


def outcome(ds: xr.Dataset, arm: str, var: str) -> np.ndarray:
    """Arm ``arm``'s per-sample outcomes ``var``, float64."""
    return ds[var].sel(arm=arm).values.astype(np.float64)


def compare(ds: xr.Dataset, a: str, b: str, var: str) -> stats.Paired:
    """The paired comparison a - b of two arms' outcomes ``var`` (``stats.paired_interval`` at ``LEVEL``)."""
    return stats.paired_interval(outcome(ds, a, var), outcome(ds, b, var), LEVEL, **PAIRED)


def best(ds: xr.Dataset, claimed: str, rivals: Sequence[str], var: str) -> stats.BestOf:
    """Whether arm ``claimed`` beats every one of ``rivals`` on ``var`` (``stats.best_of`` at ``LEVEL``)."""
    return stats.best_of({a: outcome(ds, a, var) for a in (claimed, *rivals)}, claimed, LEVEL, **PAIRED)


def _power(sd: float, status: str, comparisons: int = 1, n_used: int = 0) -> tuple[dict, str]:
    """The sample size that resolves a true difference of ``stats.DELTA``, and the power the
    ``n_used`` samples have for it (extra, and a sentence)."""
    n = stats.n_to_resolve(sd, comparisons=comparisons) if sd > 0 else 0
    power = stats.power_at(n_used, sd, comparisons=comparisons)
    if n:
        text = (f"about {n} samples per arm would resolve a true difference of {stats.DELTA:g} with power "
                f"{stats.POWER:g} (paired sd {sd:.3f}, normal approximation); the {n_used} here have power "
                f"{power:.2f}")
    else:
        why = "every paired difference is equal here" if sd == 0 else "fewer than two samples"
        text = f"{why}, so the sample size that would resolve a difference of {stats.DELTA:g} is unknown"
    said = f"Inconclusive: {text}." if status == "inconclusive" else f"Power: {text}."
    return {"n_to_resolve": n, "delta": stats.DELTA, "power": stats.POWER, "paired_sd": sd,
            "power_at_n": power, "comparisons": comparisons}, said


def paired_verdict(p: stats.Paired, status: str, comparisons: int = 1, sd: float | None = None,
                   **fields) -> Verdict:
    """A verdict on one paired comparison ``p`` (its mean, interval, level, n and test); the power
    sentence uses ``sd`` (default ``p.sd``) over ``comparisons`` simultaneous intervals."""
    extra, said = _power(p.sd if sd is None else sd, status, comparisons, p.n)
    detail = fields.pop("detail")
    return Verdict(status=status, value=p.mean, interval=tuple(float(x) for x in p.interval), level=p.level,
                   n=p.n, test=fields.pop("test", p.test), extra={**extra, **fields.pop("extra", {})},
                   detail=f"{detail} {said}", **fields)


def best_verdict(b: stats.BestOf, **fields) -> Verdict:
    """A verdict on a best-of-k decision ``b`` (the deciding rival's comparison as value and interval)."""
    near = b.comparisons[b.deciding]
    sd = max(c.sd for c in b.comparisons.values())
    others = "; ".join(f"minus {r}: {stats.interval_text(c)}" for r, c in b.comparisons.items())
    fields["detail"] = f"{fields['detail']} Paired differences, {b.claimed} {others}."
    return paired_verdict(near, b.status, len(b.comparisons), sd, test=b.test,
                          extra={"rival": b.deciding, "simultaneous_level": b.level}, **fields)


def equivalence_verdict(p: stats.Paired, margin: float = EQUIVALENCE_MARGIN, **fields) -> Verdict:
    """A verdict on "a does as well as b": the paired difference ``p`` lies within +- ``margin``
    (``stats.decide_equivalence``)."""
    status = stats.decide_equivalence(p.interval, margin)
    lo, hi = (float(x) for x in p.interval)
    if status == "inconclusive" and (lo > 0 or hi < 0):  # undecided for +-margin, yet a difference is shown
        fields["detail"] = (f"{fields['detail']} The interval excludes 0: the first does significantly "
                            f"{'better' if lo > 0 else 'worse'} than the second here, by an amount the interval "
                            f"cannot place inside or outside +-{margin:g}.")
    return paired_verdict(p, status, bound=f"|diff| <= {margin:g}", reference=margin,
                          test=f"{p.test}, equivalence within +-{margin:g}", **fields)

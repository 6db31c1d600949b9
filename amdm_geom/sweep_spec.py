"""A sweep's spec file: a probe, its base settings and a grid of values over its spec's fields,
read from TOML (or YAML) and expanded into typed probe specs, every one checked before any work.

    probe = "gmm_pair"
    [base]                      # the probe's Spec fields, nested as in its JSON
    family = { latent_shape = [4, 8, 8] }
    run = { batch = 4 }
    [grid]                      # the cartesian product; dotted field paths
    "sampler.eta" = [0.0, 0.3]
    "sampler.agg_steps" = [4, 8]

Each grid point becomes ``Spec.model_validate(base + point)`` of the probe, with ``run.out =
OUT/<name>.zarr``, where the name is made from the point's values (``eta=0.3_agg_steps=8``), so
that a sweep started again finds its own stores.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FILE_KEYS", "Point", "SweepError", "expand", "load_sweep", "point_name", "read_sweep_file"]

#: The keys of a sweep file.
FILE_KEYS = ("probe", "base", "grid")
#: Run settings the sweep itself sets for every point.
_SET_BY_SWEEP = ("run.out", "run.overwrite")
_UNSAFE = re.compile(r"[^A-Za-z0-9.=+_-]+")


class SweepError(ValueError):
    """A refused sweep (its file, a grid point, or the cluster): one line naming what and why."""


@dataclass(frozen=True)
class Point:
    """One grid point: its name, the values it sets (dotted path -> value), its store and the
    probe spec it runs (``spec``, typed and checked)."""

    name: str
    values: dict[str, Any]
    store: Path
    spec: Any = field(repr=False)


def read_sweep_file(path) -> dict:
    """The sweep file at ``path`` (``.toml``, ``.yaml`` or ``.yml``) as a dict; one line if it
    cannot be read or parsed."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise SweepError(f"sweep file {path} must end in .toml, .yaml or .yml; got {suffix or 'no suffix'!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SweepError(f"cannot read sweep file {path}: {exc.strerror or exc}") from None
    try:
        if suffix == ".toml":
            import tomllib

            doc = tomllib.loads(text)
        else:
            import yaml

            doc = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - (tomllib's and yaml's errors, shown as one line)
        raise SweepError(f"sweep file {path} is not valid {suffix[1:].upper()}: {' '.join(str(exc).split())}") \
            from None
    if not isinstance(doc, dict):
        raise SweepError(f"sweep file {path} must hold a table with {', '.join(FILE_KEYS)}; got {type(doc).__name__}")
    return doc


def _check_doc(doc: dict, source: str) -> tuple[str, dict, dict]:
    unknown = [k for k in doc if k not in FILE_KEYS]
    if unknown:
        raise SweepError(f"{source}: unknown key {unknown[0]!r}; a sweep file has {', '.join(FILE_KEYS)}")
    probe, base, grid = doc.get("probe"), doc.get("base", {}), doc.get("grid", {})
    if not isinstance(probe, str) or not probe:
        raise SweepError(f"{source}: probe must name a probe (amdm-geom probe --help lists them); got {probe!r}")
    if not isinstance(base, dict):
        raise SweepError(f"{source}: base must be a table of the probe's settings; got {base!r}")
    if not isinstance(grid, dict):
        raise SweepError(f"{source}: grid must be a table of dotted field paths to lists; got {grid!r}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{source}: grid value of {key!r} must be a non-empty list; got {values!r}")
    for key in _SET_BY_SWEEP:
        head, leaf = key.split(".")
        if key in grid or (isinstance(base.get(head), dict) and leaf in base[head]):
            raise SweepError(f"{source}: {key} is set by the sweep (OUT/<point>.zarr, redone when incomplete); "
                             "remove it")
    return probe, base, grid


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(_text(v) for v in value)
    if isinstance(value, dict):
        return "+".join(f"{k}-{_text(v)}" for k, v in value.items())
    return str(value)


def point_name(values: dict[str, Any]) -> str:
    """A stable, file-safe name of a grid point: ``leaf=value`` joined by ``_`` (the whole dotted
    path where two paths end alike), e.g. ``eta=0.3_agg_steps=8``; ``base`` for no values."""
    leaves = [key.rsplit(".", 1)[-1] for key in values]
    parts = []
    for key, leaf in zip(values, leaves):
        label = leaf if leaves.count(leaf) == 1 else key
        parts.append(f"{label}={_text(values[key])}")
    name = _UNSAFE.sub("-", "_".join(parts)).strip(".") or "base"
    return name


def _with(base: dict, key: str, value) -> dict:
    """A deep copy of ``base`` with the dotted path ``key`` set to ``value``."""
    out = dict(base)
    head, _, rest = key.partition(".")
    if not rest:
        out[head] = value
        return out
    inner = out.get(head, {})
    out[head] = _with(inner if isinstance(inner, dict) else {}, rest, value)
    return out


def expand(probe_name: str, base: dict, grid: dict, out, *, source: str = "sweep") -> list[Point]:
    """Every grid point as a checked probe spec writing ``out/<name>.zarr``. The first refused
    point raises ``SweepError`` naming the point and the field (the spec's own message)."""
    from .runner.registry import load_probe
    from .spec import SpecError

    try:
        module = load_probe(probe_name)
    except ValueError as exc:
        raise SweepError(f"{source}: {exc}") from None
    if not hasattr(module, "Spec"):
        raise SweepError(f"{source}: probe {probe_name!r} has no Spec, so it cannot be swept")
    out = Path(out).absolute()
    keys = list(grid)
    points: list[Point] = []
    names: dict[str, int] = {}
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        name = point_name(values)
        if name in names:  # (values that differ but read alike once made file-safe)
            names[name] += 1
            name = f"{name}_{names[name]}"
        names.setdefault(name, 0)
        data = base
        for key, value in values.items():
            data = _with(data, key, value)
        store = out / f"{name}.zarr"
        data = _with(_with(data, "run.out", str(store)), "run.overwrite", False)
        try:
            spec = module.Spec.model_validate(data)
        except (SpecError, ValueError) as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items()) or "(base)"
            raise SweepError(f"{source}: grid point {name} ({shown}): {' '.join(str(exc).split())}") from None
        points.append(Point(name, values, store, spec))
    return points


def load_sweep(path, out) -> tuple[str, list[Point]]:
    """``(probe name, points)`` of the sweep file at ``path``, every point checked, stores under
    ``out``."""
    doc = read_sweep_file(path)
    probe, base, grid = _check_doc(doc, str(path))
    return probe, expand(probe, base, grid, out, source=str(path))

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

Sizes are bounded before any work (``amdm_geom.core.budget``): the file is read only up to
``MAX_SWEEP_FILE_BYTES`` (1 MiB), a YAML file with at most ``MAX_YAML_ALIASES`` aliases and
``MAX_YAML_NODES`` nodes once they are followed (a "billion laughs" is refused, not expanded); the
grid's points, the product of its axes' lengths, are counted before the grid is expanded (at
most ``MAX_SWEEP_POINTS``); then each point's store and sampler (``probes.specs.check_size``) and
the points' stores together against the free disk. ``force_size`` (``--force-size``) lifts the
size checks, not the file's bounds.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amdm_geom.app.runner.registry import load_probe
from amdm_geom.core.budget import (
    MAX_SWEEP_FILE_BYTES,
    MAX_YAML_ALIASES,
    MAX_YAML_NODES,
    SizeError,
    check_points,
    check_sweep,
    human,
)
from amdm_geom.core.spec import SpecError
from amdm_geom.probes.specs import check_size, latent_shape, size_of
from amdm_geom.store import is_complete, is_trace_store, open_run

__all__ = ["FILE_KEYS", "Point", "SweepError", "check_sizes", "expand", "load_sweep", "point_name", "read_sweep_file",
           "read_yaml"]

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


def read_yaml(text: str, source: str):
    """The YAML document ``text`` as Python data (yaml's safe loader), refused in one line naming
    ``source`` if it uses more than ``MAX_YAML_ALIASES`` aliases (counted as the parser meets
    them), or holds more than ``MAX_YAML_NODES`` nodes once its aliases are followed (counted on
    the parsed graph, each alias as the node it names, before anything is built from it), or an
    alias inside the node it names."""
    import yaml

    class Bounded(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_YAML_ALIASES:
                    raise SweepError(f"sweep file {source} uses more than {MAX_YAML_ALIASES} YAML aliases (*name); "
                                     f"a sweep file may use at most {MAX_YAML_ALIASES}, so that a small file cannot "
                                     "expand without bound")
            return super().compose_node(parent, index)

    loader = Bounded(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        nodes = _expanded(node, {}, source)
        if nodes > MAX_YAML_NODES:
            raise SweepError(f"sweep file {source} holds {nodes:,} values once its YAML aliases are followed, above "
                             f"the {MAX_YAML_NODES:,} a sweep file may hold")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded(node, memo: dict, source: str) -> int:
    """Nodes under ``node`` (itself included) with every alias followed; each node counted once
    per place it appears, each shared node's count computed once."""
    key = id(node)
    if key in memo:
        if memo[key] is None:
            raise SweepError(f"sweep file {source} has a YAML alias inside the node it names (a recursive "
                             "structure), which a sweep file cannot hold")
        return memo[key]
    memo[key] = None
    value = node.value
    if isinstance(value, list):
        children = [c for pair in value for c in pair] if value and isinstance(value[0], tuple) else value
        total = 1 + sum(_expanded(child, memo, source) for child in children)
    else:
        total = 1
    memo[key] = total
    return total


def read_sweep_file(path) -> dict:
    """The sweep file at ``path`` (``.toml``, ``.yaml`` or ``.yml``) as a dict; one line if it
    cannot be read or parsed, is larger than ``MAX_SWEEP_FILE_BYTES``, or (YAML) expands beyond
    its bounds (``read_yaml``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise SweepError(f"sweep file {path} must end in .toml, .yaml or .yml; got {suffix or 'no suffix'!r}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SWEEP_FILE_BYTES + 1)
    except OSError as exc:
        raise SweepError(f"cannot read sweep file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SWEEP_FILE_BYTES:
        size = path.stat().st_size if path.is_file() else len(data)
        raise SweepError(f"sweep file {path} holds {human(size)}, above the {MAX_SWEEP_FILE_BYTES >> 20} MiB a sweep "
                         "file may hold")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SweepError(f"sweep file {path} is not UTF-8 text (byte {exc.start}: {data[exc.start]:#04x}); a sweep "
                         "file is TOML or YAML") from None
    try:
        if suffix == ".toml":
            import tomllib

            doc = tomllib.loads(text)
        else:
            doc = read_yaml(text, str(path))
    except SweepError:
        raise
    except RecursionError:
        raise SweepError(f"sweep file {path} is nested too deeply to read") from None
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


def expand(probe_name: str, base: dict, grid: dict, out, *, source: str = "sweep",
           force_size: bool = False) -> list[Point]:
    """Every grid point as a checked probe spec writing ``out/<name>.zarr``. The first refused
    point raises ``SweepError`` naming the point and the field (the spec's own message). The
    grid's points are counted first, from its axes, and more than the cap are refused
    (``amdm_geom.core.budget.check_points``) unless ``force_size``, which also sets each point's
    ``run.force_size`` where its spec has it."""
    try:
        module = load_probe(probe_name)
    except ValueError as exc:
        raise SweepError(f"{source}: {exc}") from None
    if not hasattr(module, "Spec"):
        raise SweepError(f"{source}: probe {probe_name!r} has no Spec, so it cannot be swept")
    lengths = [len(values) for values in grid.values()]
    if not force_size:
        try:
            check_points(math.prod(lengths), lengths, source=source)
        except SizeError as exc:
            raise SweepError(str(exc)) from None
    run_field = module.Spec.model_fields.get("run")
    forced = force_size and "force_size" in getattr(run_field.annotation, "model_fields", {}) if run_field else False
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
        if forced:
            data = _with(data, "run.force_size", True)
        try:
            spec = module.Spec.model_validate(data)
        except (SpecError, ValueError) as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items()) or "(base)"
            raise SweepError(f"{source}: grid point {name} ({shown}): {' '.join(str(exc).split())}") from None
        points.append(Point(name, values, store, spec))
    return points


def _done(store: Path) -> bool:
    """Whether a complete trace store is at ``store`` already (its point is skipped)."""
    if not store.exists() or not is_trace_store(store):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open_run(store) as ds:
                return bool(is_complete(ds))
    except (OSError, ValueError, KeyError):
        return False


def check_sizes(points: list[Point], out, *, source: str = "sweep", force_size: bool = False) -> None:
    """Refuse (``SweepError``, one line) a point whose store or sampler is too large
    (``probes.specs.check_size``, unless its ``run.force_size``), or points whose stores, those
    not complete already, together do not fit on the disk at ``out``; nothing if ``force_size``."""
    if force_size:
        return
    stores = []
    for p in points:
        try:
            check_size(p.spec)
        except SizeError as exc:
            raise SweepError(f"{source}: grid point {p.name}: {exc}") from None
        shape = latent_shape(p.spec)
        stores.append(0 if shape is None or _done(p.store) else size_of(p.spec, shape).store_bytes)
    try:
        check_sweep(stores, out, source=source)
    except SizeError as exc:
        raise SweepError(str(exc)) from None


def load_sweep(path, out, *, force_size: bool = False) -> tuple[str, list[Point]]:
    """``(probe name, points)`` of the sweep file at ``path``, every point checked, stores under
    ``out``; the grid's size, each point's sizes and their stores' total are checked before any
    work (``expand``, ``check_sizes``) unless ``force_size``."""
    doc = read_sweep_file(path)
    probe, base, grid = _check_doc(doc, str(path))
    points = expand(probe, base, grid, out, source=str(path), force_size=force_size)
    check_sizes(points, out, source=str(path), force_size=force_size)
    return probe, points

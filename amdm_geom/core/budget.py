"""Sizes before work: what a run will write and hold, against the machine and the caps.

Every command that samples (``probe``, ``rerun``, ``sweep``, and ``validate`` through its probes)
estimates, from the spec alone and before anything is built or created:

- the trace store's bytes (``RunSize.store_bytes``): per recorded variable, steps x slots x
  samples x latent size x the dtype's bytes, where a per-model variable (``model{i}.z``, ...)
  has one slot per model and the aggregate (``agg.z``) one; samples are counted as stored, in
  whole chunks of ``--chunk``;
- the sampler's memory held at once (``RunSize.peak_bytes``): one block is a chunk's samples x
  latent size x the dtype's bytes, and Algorithm 1's loop holds 6 N + 4 blocks for N models at
  an aggregation step (``peak_blocks``: counted below, 16 for two models), beside one random
  generator per model and sample of the chunk (``GENERATOR_BYTES``) and the seeds; the
  recorder's queue of pending writes and a model's own activations come on top, uncounted, so
  that a run refused for memory is one that cannot fit;
- for a sweep, the sum of its points' stores and the number of points.

``check_run`` refuses (``SizeError``, one line naming the value, the estimate, the limit and the
option ``--force-size``) a store above the cap ``MAX_STORE_BYTES`` or the free disk where it goes
(the nearest existing folder of ``--out``; a ``memory://`` store counts against memory), or a peak
above the memory available (``/proc/meminfo``'s MemAvailable). ``check_points`` refuses a grid of
more than ``MAX_SWEEP_POINTS`` points from its axes' lengths, before the grid is expanded. The caps
can be changed through the environment (``AMDM_GEOM_MAX_STORE_BYTES``,
``AMDM_GEOM_MAX_SWEEP_POINTS``); ``--force-size`` runs anyway. A sweep file is read within
``MAX_SWEEP_FILE_BYTES``, ``MAX_YAML_ALIASES`` and ``MAX_YAML_NODES`` (``amdm_geom.app.sweep_spec``),
which nothing overrides.

Pure arithmetic and the machine's figures: nothing of the toolkit is imported here.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ENV_MAX_STORE_BYTES", "ENV_MAX_SWEEP_POINTS", "FORCE_OPTION", "MAX_STORE_BYTES", "MAX_SWEEP_FILE_BYTES",
           "MAX_SWEEP_POINTS", "MAX_YAML_ALIASES", "MAX_YAML_NODES", "RunSize", "SizeError", "available_memory", "cap",
           "check_points", "check_run", "check_sweep", "cores", "free_disk", "human", "peak_blocks", "run_size"]

#: The option that runs a refused size anyway (the same name on every command).
FORCE_OPTION = "--force-size"
#: The largest trace store a run may write without ``--force-size`` (100 GB; the full validate's
#: largest store is under 0.1 GB). Changed by ``ENV_MAX_STORE_BYTES``.
MAX_STORE_BYTES = 100 * 10**9
ENV_MAX_STORE_BYTES = "AMDM_GEOM_MAX_STORE_BYTES"
#: The most grid points a sweep may have without ``--force-size``. Changed by ``ENV_MAX_SWEEP_POINTS``.
MAX_SWEEP_POINTS = 10_000
ENV_MAX_SWEEP_POINTS = "AMDM_GEOM_MAX_SWEEP_POINTS"
#: The largest sweep file read (1 MiB).
MAX_SWEEP_FILE_BYTES = 1 << 20
#: The most aliases (``*name``) a YAML sweep file may use.
MAX_YAML_ALIASES = 32
#: The most nodes (scalars, lists and tables) a YAML sweep file may hold once its aliases are
#: followed, each alias counted as the node it names.
MAX_YAML_NODES = 1_000_000

#: Blocks Algorithm 1's loop holds per model at a step (``AMDMSampler._run``; one block = a
#: chunk's samples x latent): its z_t, its output (kept for the step), mu and z_next (kept until
#: the step ends).
STEP_BLOCKS_PER_MODEL = 4
#: Blocks of the model being stepped while they are emitted: its x0 and its noise (its eps is
#: its output for an epsilon model).
STEP_BLOCKS_EMITTED = 2
#: Blocks an aggregation step adds per model and once: the N shifted latents and z', made by
#: chunks of rows and then joined (both held while they are joined).
AGGREGATE_BLOCKS_PER_MODEL = 2
AGGREGATE_BLOCKS_SHARED = 2
#: Blocks the cross terms (``--cross-eps``) add while a partner's are computed: two outputs and
#: their two step inputs.
CROSS_BLOCKS = 4
#: Bytes of one sample's random generator, one per model and sample of a chunk
#: (``sampling.rng.sample_generators``: a torch CPU generator, 2.65 kB measured).
GENERATOR_BYTES = 2_700
#: Bytes per sample of the run's seeds (Python ints in lists, and the store's seed coordinate).
SEED_BYTES = 100


class SizeError(ValueError):
    """A run, a store or a sweep above the machine or a cap: one line naming the value, the
    estimate, the limit and ``--force-size``."""


def human(n: float) -> str:
    """Bytes in decimal units: ``512 B``, ``10.0 kB``, ``2.6 TB``."""
    if n < 1000:
        return f"{int(n)} B"
    for unit in ("kB", "MB", "GB", "TB", "PB", "EB", "ZB"):
        n /= 1000
        if n < 1000 or unit == "ZB":
            return f"{n:,.1f} {unit}"
    raise AssertionError  # pragma: no cover


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _values(n: int) -> str:
    return "value" if n == 1 else "values"


def _shape(shape: Iterable[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


# --------------------------------------------------------------------------------------------
# the machine and the caps


def available_memory() -> int:
    """Bytes of memory available to a new process: MemAvailable of ``/proc/meminfo`` (Linux), else
    psutil's figure where it is installed, else the free physical pages."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - (not installed, or no figure on this system)
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - (no figure at all: no limit)
        return 2**63


def free_disk(path) -> tuple[int, Path]:
    """``(free bytes, folder)`` of the file system where ``path`` would be created: its nearest
    existing folder."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        folder = folder.parent
    return shutil.disk_usage(folder).free, folder


def cap(name: str, default: int) -> int:
    """The cap set by the environment variable ``name`` (an int >= 0; ``_`` allowed, as in
    ``10_000``), else ``default``; one line naming the variable if it is not one."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise SizeError(f"environment variable {name} must be an int >= 0 (bytes or points); got {text!r}")
    return value


# --------------------------------------------------------------------------------------------
# a run's sizes


def peak_blocks(n_models: int, *, aggregated: bool = True, cross_terms: bool = False) -> int:
    """Blocks of one chunk's latents Algorithm 1's loop holds at once for ``n_models`` models
    (``STEP_BLOCKS_PER_MODEL`` and the others above): 4 N + 2, and 2 N + 2 more at an aggregation
    step (16 for two models), 4 more with the cross terms."""
    blocks = STEP_BLOCKS_PER_MODEL * n_models + STEP_BLOCKS_EMITTED
    if aggregated and n_models > 1:
        blocks += AGGREGATE_BLOCKS_PER_MODEL * n_models + AGGREGATE_BLOCKS_SHARED
    return blocks + (CROSS_BLOCKS if cross_terms and n_models > 1 else 0)


@dataclass(frozen=True)
class RunSize:
    """A run's estimated sizes, and the terms they are made of (shown in a refusal)."""

    store_bytes: int
    store_terms: str
    peak_bytes: int
    peak_terms: str


def run_size(*, steps: int, n_models: int, samples: int, latent_shape: Iterable[int], itemsize: int,
             per_model: int, shared: int = 0, chunk: int | None = None, aggregated: bool = True,
             cross_terms: bool = False) -> RunSize:
    """The sizes of a run of ``samples`` samples of ``latent_shape`` over ``steps`` recorded steps,
    in a dtype of ``itemsize`` bytes, recording ``per_model`` per-model variables and ``shared``
    variables without a model slot, ``chunk`` samples at a time (None: all); ``aggregated``: some
    step is aggregated, ``cross_terms``: the cross terms are computed."""
    shape = tuple(int(s) for s in latent_shape)
    values = math.prod(shape)
    block = min(samples, chunk) if chunk else samples
    stored = -(-samples // block) * block  # (whole chunks, the last one padded)
    slots = per_model * n_models + shared
    store = steps * slots * stored * values * itemsize
    store_terms = (f"{_count(steps, 'step')} x {_count(slots, 'variable slot')} ({per_model} per model x "
                   f"{_count(n_models, 'model')}{f' + {shared}' if shared else ''}) x {_count(stored, 'sample')} x "
                   f"{_shape(shape)} {_values(values)} x {itemsize} bytes")
    blocks = peak_blocks(n_models, aggregated=aggregated, cross_terms=cross_terms)
    generators = n_models * block
    peak = blocks * block * values * itemsize + generators * GENERATOR_BYTES + samples * SEED_BYTES
    peak_terms = (f"{blocks} latents of {_count(block, 'sample')} x {_shape(shape)} {_values(values)} x {itemsize} "
                  f"bytes for {_count(n_models, 'model')}, and {generators:,} random generators of "
                  f"{human(GENERATOR_BYTES)}")
    return RunSize(store, store_terms, peak, peak_terms)


def _force(text: str) -> str:
    return f"{text}; pass {FORCE_OPTION} to run it anyway"


def check_run(size: RunSize, out, *, local: bool = True, in_memory: bool = False, what: str = "the run") -> None:
    """Refuse ``size`` (``SizeError``, one line) if its store is above the cap or the free disk at
    ``out`` (a local path; ``local=False``: a store at a URL, whose room is not known here;
    ``in_memory``: a ``memory://`` store, counted against memory), or its peak with such a store
    above the memory available."""
    limit = cap(ENV_MAX_STORE_BYTES, MAX_STORE_BYTES)
    if size.store_bytes > limit:
        raise SizeError(_force(f"{what} is too large: its trace store would hold {human(size.store_bytes)} "
                               f"({size.store_terms}), above the cap of {human(limit)} on one store "
                               f"(environment variable {ENV_MAX_STORE_BYTES})"))
    if local and not in_memory:
        free, folder = free_disk(out)
        if size.store_bytes > free:
            raise SizeError(_force(f"{what} is too large: its trace store would hold {human(size.store_bytes)} "
                                   f"({size.store_terms}), above the {human(free)} free on the disk of {folder}"))
    memory = available_memory()
    held = size.peak_bytes + (size.store_bytes if in_memory else 0)
    if held > memory:
        store = f" and its in-memory store {human(size.store_bytes)}" if in_memory else ""
        raise SizeError(_force(f"{what} is too large: its sampler would hold {human(size.peak_bytes)} at once "
                               f"({size.peak_terms}){store}, above the {human(memory)} of memory available"))


def check_points(n_points: int, axes: Iterable[int], *, source: str) -> None:
    """Refuse a grid of ``n_points`` (the product of ``axes``' lengths) above the points cap."""
    limit = cap(ENV_MAX_SWEEP_POINTS, MAX_SWEEP_POINTS)
    if n_points > limit:
        lengths = " x ".join(f"{n:,}" for n in axes)
        raise SizeError(_force(f"{source}: the grid has {n_points:,} points ({lengths} values), above the cap of "
                               f"{limit:,} points on one sweep (environment variable {ENV_MAX_SWEEP_POINTS})"))


def check_sweep(stores: list[int], out, *, source: str, local: bool = True) -> None:
    """Refuse a sweep whose points' stores (``stores``: each point's bytes, 0 for one already
    complete) together do not fit on the disk at ``out``."""
    total = sum(stores)
    if not local or total == 0:
        return
    free, folder = free_disk(out)
    if total > free:
        raise SizeError(_force(f"{source}: the sweep's {len(stores):,} points would store {human(total)}, above "
                               f"the {human(free)} free on the disk of {folder}"))


def cores() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - (not Linux)
        return os.cpu_count() or 1

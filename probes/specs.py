"""What every probe shares: the probe spec's base class (``ProbeSpec``, the sampling layer's
``RunSpec``: models + Algorithm 1's settings + the run's ``RunSettings``, checked together before
anything is built), running a sampler into a trace store that keeps its spec (``run_probe``),
and running a store's kept spec again (``rerun``).

Before anything is built or created, a run's sizes are estimated from its spec (``size_of``:
the trace store's bytes and the sampler's peak, ``amdm_geom.core.budget``) and a run too large for the
machine or a cap is refused in one line (``check_size``), unless ``--force-size``
(``RunSettings.force_size``). The latent shape comes from the spec (``latent_shape``: a probe
spec's own ``latent_shape()``, or a nested spec's ``latent_shape`` field such as the GMM
family's); a spec that cannot say is checked once its sampler is built, before its store is made.

A store made by a probe keeps ``attrs["spec"]`` (the spec as JSON) and ``attrs["probe"]`` (the
probe's registered name); a store made by an analysis' own runs (the ablations) keeps
``attrs["analysis"]`` instead, and that analysis' module names the probe-like module of its runs
as ``RUNS``. The app finds that module through the registry (``amdm_geom.app.runner.registry.maker``)
and gives its ``run`` to ``rerun``; nothing here loads a module by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from amdm_geom.core.budget import FORCE_OPTION, RunSize, check_run, run_size
from amdm_geom.core.spec import MAX_SEED, Spec, flag
from amdm_geom.models.specs import TRAIN_TIMESTEPS
from amdm_geom.sampling import config as _config
from amdm_geom.sampling.config import DTYPE_NAMES, RunSpec, planned_hook_names
from amdm_geom.sampling.hooks import parse_hook_name
from amdm_geom.store import ZarrRecorder, check_output_path, is_url

__all__ = ["DTYPE_NAMES", "FORCE_OPTION", "ITEMSIZE", "MAX_SEED", "ProbeSpec", "RunSettings", "TRAIN_TIMESTEPS",
           "check_size", "latent_shape", "rerun", "run_probe", "size_of", "store_attrs"]

#: A probe's spec is a run's spec: its models, then ``sampler`` and ``run``.
ProbeSpec = RunSpec
#: Bytes per value of each run dtype.
ITEMSIZE = {"float16": 2, "float32": 4, "float64": 8}


class RunSettings(_config.RunSettings):
    """The run: samples and their seeds, the dtype, and the trace store.

    A probe's run settings: the sampling layer's (``amdm_geom.sampling.config.RunSettings``) and
    ``force_size``."""

    force_size: Annotated[bool, flag] = False
    """run even if the estimated trace store or the sampler's memory is above the free disk, the
    memory available or a cap (AMDM_GEOM_MAX_STORE_BYTES, default 100 GB; README, "Sizes and caps")."""


# --------------------------------------------------------------------------------------------
# a run's sizes, before any work


def latent_shape(spec: Spec) -> tuple[int, ...] | None:
    """The per-sample latent shape of ``spec``'s run, from the spec alone: its own
    ``latent_shape()`` (or ``latent_shape`` field), else that of a nested spec (the GMM family's
    ``latent_shape``); ``None`` if the spec cannot say without building its models."""
    own = getattr(spec, "latent_shape", None)
    if callable(own):
        own = own()
    if own is not None:
        return tuple(int(s) for s in own)
    for name in type(spec).model_fields:
        inner = getattr(spec, name)
        shape = getattr(inner, "latent_shape", None) if isinstance(inner, Spec) else None
        if isinstance(shape, tuple) and shape:
            return tuple(int(s) for s in shape)
    return None


def size_of(spec: RunSpec, shape: tuple[int, ...], *, steps=None) -> RunSize:
    """The estimated sizes of ``spec``'s run with latents of ``shape`` (``amdm_geom.core.budget.run_size``):
    the variables its recorder keeps (``run.names``), its steps (or only ``steps``), models,
    samples, chunk and dtype."""
    config, n = spec.config(), spec.n_models
    names = planned_hook_names(n, config, list(spec.run.names) if spec.run.names is not None else None,
                               kinds=spec.step_kinds())
    variables = {parse_hook_name(name) for name in names}
    per_model = len({var for var, model in variables if model is not None})
    shared = len({var for var, model in variables if model is None})
    total = config.num_inference_steps
    recorded = total if steps is None else len({int(k) for k in steps if 0 <= int(k) < total})
    start, stop = config.window
    return run_size(steps=recorded, n_models=n, samples=spec.run.batch, latent_shape=shape,
                    itemsize=ITEMSIZE[spec.run.dtype], per_model=per_model, shared=shared, chunk=spec.run.chunk,
                    aggregated=start < min(stop, total), cross_terms=config.record_cross_eps)


def check_size(spec: RunSpec, shape: tuple[int, ...] | None = None, *, steps=None, force: bool = False) -> bool:
    """Refuse ``spec``'s run in one line (``amdm_geom.core.budget.SizeError``, a ``ValueError``) if its
    store or its sampler's peak is above the free disk, the memory available or a cap, unless
    ``force`` or ``spec.run.force_size``. ``shape``: the latent shape (default: ``latent_shape(spec)``).
    Returns whether the sizes were checked (False: forced, or no shape known yet)."""
    if force or getattr(spec.run, "force_size", False):
        return False
    shape = latent_shape(spec) if shape is None else tuple(shape)
    if shape is None:
        return False
    out = spec.run.out
    text = str(out)
    in_memory = isinstance(out, str) and text.startswith("memory://")
    local = not isinstance(out, str) or text.startswith("file://")
    where = text.removeprefix("file://") if isinstance(out, str) else out
    check_run(size_of(spec, shape, steps=steps), where, local=local, in_memory=in_memory)
    return True


def images_folder(out) -> Path:
    """The folder of PNG images beside a local store ``out`` (``<out>_images``; a store at a URL has
    no "beside": refused in one line)."""
    if is_url(out):
        raise ValueError(f"this probe writes PNG images beside its store, so --out must be a local path; got {out}")
    return Path(out).with_name(Path(out).name.removesuffix(".zarr") + "_images")


def store_attrs(spec: Spec, *, probe: str | None = None, analysis: str | None = None) -> dict:
    """The attributes that let a store be run again: the spec as JSON and who made it."""
    attrs = {"spec": spec.model_dump_json()}
    if probe is not None:
        attrs["probe"] = probe
    if analysis is not None:
        attrs["analysis"] = analysis
    return attrs


def run_probe(spec: ProbeSpec, build: Callable, *, probe: str, quiet: bool = False,
              after: Callable | None = None, attrs: dict | None = None, steps=None) -> Path | str:
    """Run ``build()``'s sampler on the spec's seeds into ``spec.run.out`` (a path, or an fsspec URL)
    with ``spec.run.compressor``; return the store's path (a ``Path``) or URL (text).

    The spec was checked when it was made; here the output path is checked (it exists without
    ``overwrite``, is not a trace store, or cannot be created: one line) and the run's sizes
    (``check_size``: from the spec, or, for a spec that cannot say its latent shape, from the
    built sampler), and only then is ``build()`` called and the store created. The store keeps
    the spec (``store_attrs``).
    ``after(output)`` is called with the ``SampleOutput`` (e.g. to decode images); ``steps``
    keeps only those steps."""
    run = spec.run
    check_output_path(run.out, run.overwrite)
    known = latent_shape(spec) is not None
    check_size(spec, steps=steps)
    sampler = build()
    if not known:
        check_size(spec, tuple(sampler.models[0].latent_shape), steps=steps)
    recorder = ZarrRecorder(run.out, overwrite=run.overwrite, steps=steps, compressor=run.compressor,
                            names_filter=list(run.names) if run.names is not None else None,
                            attrs=attrs if attrs is not None else store_attrs(spec, probe=probe))
    start = time.perf_counter()
    with sampler.recording(recorder):
        out = sampler.sample(run.seeds, progress=run.progress and not quiet, chunk_size=run.chunk)
    if not quiet:
        print(f"wrote {run.out} ({recorder.bytes_written / 1e6:.1f} MB, {out.model_calls} model calls, "
              f"{time.perf_counter() - start:.1f} s)")
    if after is not None:
        after(out)
    return run.out


# --------------------------------------------------------------------------------------------
# a store's spec, and running it again


def rerun(spec: RunSpec, run: Callable, *, out, overwrite: bool = False, progress: bool = False,
          quiet: bool = False, force_size: bool = False) -> Path | str:
    """Run ``spec`` (a store's kept spec, ``amdm_geom.store.spec_of``) again with ``run`` (the
    ``run`` of the probe, or of the analysis' runs, that made the store: the registry's
    ``maker``) into ``out``, a path or an fsspec URL. The same spec, seeds and models give the
    same arrays, bit for bit. The run's sizes are checked again here (``check_size``: the kept
    spec may have been edited), unless ``force_size``."""
    target = str(out) if is_url(out) else Path(out)
    changes = {"out": target, "overwrite": overwrite, "progress": progress}
    if "force_size" in type(spec.run).model_fields:
        changes["force_size"] = force_size
    spec = spec.replace(run=spec.run.replace(**changes))
    check_size(spec, force=force_size)
    return run(spec, quiet=quiet)

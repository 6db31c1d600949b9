"""What every probe shares: the probe spec's base class (``ProbeSpec``, the sampling layer's
``RunSpec``: models + Algorithm 1's settings + the run's ``RunSettings``, checked together before
anything is built), running a sampler into a trace store that keeps its spec (``run_probe``),
and getting a store's spec back (``spec_of``) to run it again (``rerun``).

A store made by a probe keeps ``attrs["spec"]`` (the spec as JSON) and ``attrs["probe"]`` (the
probe's registered name); a store made by an analysis' own runs (the ablations) keeps
``attrs["analysis"]`` instead, and that analysis' module names the probe-like module of its runs
as ``RUNS``. Both are found through the entry points of ``amdm_geom.probes`` and
``amdm_geom.analyses``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from amdm_geom.denoisers.specs import TRAIN_TIMESTEPS
from amdm_geom.sampling.config import DTYPE_NAMES, RunSettings, RunSpec
from amdm_geom.spec import MAX_SEED, Spec

__all__ = ["DTYPE_NAMES", "MAX_SEED", "ProbeSpec", "RunSettings", "TRAIN_TIMESTEPS", "maker", "rerun", "run_probe",
           "spec_of", "store_attrs"]

#: A probe's spec is a run's spec: its models, then ``sampler`` and ``run``.
ProbeSpec = RunSpec


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
    ``overwrite``, is not a trace store, or cannot be created: one line), and only then is
    ``build()`` called and the store created. The store keeps the spec (``store_attrs``).
    ``after(output)`` is called with the ``SampleOutput`` (e.g. to decode images); ``steps``
    keeps only those steps."""
    from amdm_geom.store import ZarrRecorder, check_output_path

    run = spec.run
    check_output_path(run.out, run.overwrite)
    sampler = build()
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


def _registered(group: str, name: str):
    found = [ep for ep in entry_points(group=group) if ep.name == name]
    if not found:
        raise ValueError(f"{name!r} is not installed in the entry-point group {group}")
    return found[0].load()


def _attrs(store) -> tuple[dict, str]:
    import xarray as xr

    from amdm_geom.store import open_run

    ds = store if isinstance(store, xr.Dataset) else open_run(store)
    source = ds.encoding.get("source") or "(in memory)"
    if "spec" not in ds.attrs or not ({"probe", "analysis"} & set(ds.attrs)):
        raise ValueError(f"store {source} keeps no spec (it was made before stores kept their spec, or by code "
                         "outside a probe), so it cannot be run again")
    return dict(ds.attrs), source


def maker(store):
    """The probe-like module that made ``store`` (a path or an opened store): a probe's module,
    or the ``RUNS`` module of an analysis. It has ``Spec``, ``build`` and ``run``."""
    attrs, _ = _attrs(store)
    if "probe" in attrs:
        return _registered("amdm_geom.probes", attrs["probe"])
    module = _registered("amdm_geom.analyses", attrs["analysis"])
    if not hasattr(module, "RUNS"):
        raise ValueError(f"analysis {attrs['analysis']!r} runs no stores of its own (it has no RUNS)")
    return module.RUNS


def spec_of(store) -> Spec:
    """The typed spec ``store`` (a path or an opened store) was made from, as it was made."""
    attrs, _ = _attrs(store)
    return maker(store).Spec.model_validate_json(attrs["spec"])


def rerun(store, *, out=None, overwrite: bool = False, progress: bool = False, quiet: bool = False) -> Path:
    """Run ``store``'s spec again into ``out`` (default: the store itself, which then needs
    ``overwrite``). The same spec, seeds and models give the same arrays, bit for bit."""
    spec = spec_of(store)
    from amdm_geom.store import is_url

    target = store if out is None else out
    target = str(target) if is_url(target) else Path(target)
    spec = spec.replace(run=spec.run.replace(out=target, overwrite=overwrite, progress=progress))
    return maker(store).run(spec, quiet=quiet)


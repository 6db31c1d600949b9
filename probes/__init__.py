"""Probes: one module per experiment family. Each builds models from a typed spec, runs the
AMDM sampler with a recorder, and writes a trace store that keeps its spec, so that
``amdm-geom rerun STORE`` repeats it bit for bit.

The probe contract. A probe module, registered under the entry-point group
``amdm_geom.probes`` (a user's package adds its own the same way), has:

- ``NAME: str``: its registered name;
- ``SUMMARY: str``: one line for ``amdm-geom probe --help``;
- ``Spec``: its spec, a ``ProbeSpec`` (``amdm_geom.probes.specs``): the models' settings (nested
  model specs, such as a model family, ``family: TinyUNetPairSpec``, or one spec per model,
  ``model_a`` and ``model_b``, whose ``build()`` makes the model), then
  ``sampler: SamplerConfig`` and ``run: RunSettings``. The command line
  ``amdm-geom probe NAME [options]`` is generated from it (its docstring and fields' docstrings
  are the help; a per-model spec's options carry its name, ``--model-a.guidance``), and it is
  checked when made, before any work;
- ``build(spec) -> AMDMSampler``: the models and the sampler;
- ``run(spec, *, quiet=False) -> Path``: the run into ``spec.run.out`` (``run_probe``), the
  store keeping ``attrs["spec"]`` and ``attrs["probe"] = NAME``.

``amdm_geom.app.runner.registry.spec_of(store)`` gives back the spec a store was made from (found
through the registry), and ``rerun(spec, run, out=...)`` runs it again.
"""

from amdm_geom.probes.specs import DTYPE_NAMES, ProbeSpec, RunSettings, rerun, run_probe, store_attrs

__all__ = ["DTYPE_NAMES", "ProbeSpec", "RunSettings", "rerun", "run_probe", "store_attrs"]

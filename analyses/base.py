"""The one contract every analysis follows: a subclass of ``Analysis``.

An analysis is registered as ``name = "package.module:Class"`` under the entry-point group
``amdm_geom.analyses``; the registry (``amdm_geom.app.runner.registry``) loads the class, refuses in
one line anything that is not a subclass of ``Analysis`` (or leaves out ``compute``, ``verdicts``
or ``plot``), and hands out an instance. Everything else has a default here, so a new analysis is
one class and one entry point. The class says what the rest of the toolkit needs to know, and the
rest follows from it: which stores of ``amdm-geom validate``'s plan it is given (``reads``, the
kinds in ``STORE_KINDS``), the runs it plans for itself (``run_module`` and ``planned``), when it
is scheduled (``priority``), and the section of the report its verdicts go to (``family``: a
verdict's ``family`` is filled in from it by the runner, unless the verdict names one of
``other_families`` itself).

``compute(stores, *, quick=False, seed=0, runs=None) -> xarray.Dataset | xarray.DataTree``:
``stores`` is a ``Mapping[str, Path | xarray.Dataset]`` (store name -> a trace store's path or the
opened store; empty for ``stores = "none"``); ``quick`` asks for smaller settings where the analysis
has them; ``seed`` seeds its own random draws; ``runs`` is a folder under which an analysis that
runs its own trace stores writes them (``runs / name``), ``None`` where it runs none. A DataTree
is for results whose parts have different dims (one node per part, e.g. one per store).
``verdicts(result) -> list[Verdict]`` decides from ``compute``'s result alone; ``plot(result) ->
{file name: Figure}`` (``.png`` added where absent); ``tables(result) -> {file name: DataFrame}``
(``.csv`` added where absent); ``saved(result)``: what of the result is written (default all).

What the runner writes, atomically, into ``<out>/<name>/`` (``amdm_geom.app.runner.output``): a
Dataset result as ``<result>.zarr``; a DataTree's nodes that hold variables each as
``<node path>.zarr`` (the root's own variables as ``<result>.zarr``); each figure as ``<name>.png``
with its caption (the first of ``captions``' fnmatch patterns its name matches); each table as
``<name>.csv``; the verdicts as ``verdicts.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from amdm_geom.core.verdicts import Verdict

__all__ = ["PRIORITY", "STORE_KINDS", "STORE_NEEDS", "Analysis"]

#: The values of ``Analysis.stores``: it needs at least one trace store, can take some, or takes none.
STORE_NEEDS = ("required", "optional", "none")

#: The kinds of trace store ``amdm-geom validate``'s plan writes (each of its stores is tagged with
#: the kinds it is): an analysis names those it reads in ``Analysis.reads`` and is given every
#: store of those kinds, in the plan's order.
STORE_KINDS = {
    "checked": "one run of each model kind and sampler, its every step checked against eq. (4) (or the flow's "
               "step) and its every shift against eq. (7)",
    "trajectory": "a VP pair recorded with the cross predictions (eqs. 20-22): Prop. 3.1 along its trajectory",
    "stochastic": "a VP pair sampled with sigma_t > 0 (ddim_eta > 0), where the bound of Prop. 3.2 says something",
    "moments": "a VP pair of the exact GMM family, whose marginal moments are known (App. D.1)",
    "dtypes": "one configuration recorded in several dtypes (what float16 does to Table 5)",
    "flow": "a rectified-flow pair (App. G): exact GMM velocities or tiny SD3-, Flux- and DiT-style transformers",
}

#: The scheduling priority of an analysis that says nothing (higher starts first; probes start at 10).
PRIORITY = 5


class Analysis:
    """One question the paper raises: ``compute`` measures it, ``verdicts`` decides it, ``plot``
    shows it. Subclasses set the class attributes and override the three methods; every other
    hook has a default (the module docstring says what each one is)."""

    #: Its registered name, and the name of its result folder ``<out>/<name>/``.
    name: ClassVar[str] = ""
    #: One line for ``amdm-geom analyze --help`` and the README.
    summary: ClassVar[str] = ""
    #: The report section its verdicts go to: the id of one of ``amdm_geom.app.runner.families.FAMILIES``
    #: (the paper's claim families), or ``"checks"`` for checks of the toolkit itself.
    family: ClassVar[str] = ""
    #: Further families single verdicts may name themselves (``Verdict(family=...)``); the runner refuses
    #: any other.
    other_families: ClassVar[tuple[str, ...]] = ()
    #: One of ``STORE_NEEDS``; the runner refuses the wrong kind in one line before any work.
    stores: ClassVar[str] = "none"
    #: The kinds of store (``STORE_KINDS``) ``validate`` gives it.
    reads: ClassVar[tuple[str, ...]] = ()
    #: Its scheduling priority in ``validate`` (higher starts first): the longest start first.
    priority: ClassVar[int] = PRIORITY
    #: The file stem of a Dataset result (``<result>.zarr``).
    result: ClassVar[str] = "results"
    #: fnmatch patterns over the figure names (without ``.png``) -> the caption the report shows.
    captions: ClassVar[Mapping[str, str]] = {}
    #: A probe-like module (``Spec``, ``run(spec, quiet=...)``) that runs the stores ``planned`` names,
    #: ``None`` for an analysis that runs none of its own.
    run_module: ClassVar[ModuleType | None] = None
    #: Whether ``compute`` takes ``grid=True`` (``amdm-geom analyze NAME --grid``): a full grid of settings
    #: beyond what ``validate`` runs.
    full_grid: ClassVar[bool] = False

    def compute(self, stores: Mapping, *, quick: bool = False, seed: int = 0, runs: Path | None = None) -> Any:
        """The measurement: a Dataset or a DataTree."""
        raise NotImplementedError(f"analysis {self.name or type(self).__name__} does not define compute")

    def verdicts(self, result) -> list[Verdict]:
        """The verdicts, from ``compute``'s result alone."""
        raise NotImplementedError(f"analysis {self.name or type(self).__name__} does not define verdicts")

    def plot(self, result) -> dict:
        """``{file name: Figure}``."""
        raise NotImplementedError(f"analysis {self.name or type(self).__name__} does not define plot")

    def tables(self, result) -> dict:
        """``{file name: DataFrame}``; none by default."""
        return {}

    def saved(self, result):
        """What of the result is written; all of it by default."""
        return result

    def planned(self, *, quick: bool = False, seed: int = 0, runs: Path) -> dict:
        """``{run name: run_module.Spec}``: the trace stores it runs for itself when given none, each
        into its ``run.out`` under ``runs / name``; none by default."""
        return {}

    def __repr__(self) -> str:
        return f"<analysis {self.name} ({type(self).__module__}.{type(self).__qualname__})>"

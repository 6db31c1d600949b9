"""The registry of analyses and probes: entry points in the groups ``amdm_geom.analyses`` and
``amdm_geom.probes`` (``importlib.metadata``), so a user's package adds its own by declaring
one, without editing this project. Listing names imports nothing.

An analysis entry point names a class (``"package.module:Class"``), a subclass of
``amdm_geom.analyses.base.Analysis`` (checked with ``issubclass``, as xarray checks its backend
entry points): loading it checks its declarations (name, family, the stores it takes and reads,
the three methods every analysis defines) and gives an instance. A probe entry point names a
module with ``run``."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

from amdm_geom.analyses.base import STORE_KINDS, STORE_NEEDS, Analysis
from amdm_geom.app.runner.families import FAMILY_IDS

__all__ = ["ANALYSIS_GROUP", "MAKERS", "PROBE_CONTRACT", "PROBE_GROUP", "REQUIRED", "analysis_names",
           "analysis_summaries", "check_analysis", "load_analyses", "load_analysis", "load_probe", "maker",
           "probe_names", "run_maker", "summary"]

ANALYSIS_GROUP = "amdm_geom.analyses"
PROBE_GROUP = "amdm_geom.probes"
#: The methods every analysis defines itself (``Analysis`` has a default for every other hook).
REQUIRED = ("compute", "verdicts", "plot")
#: What every probe module has.
PROBE_CONTRACT = ("run",)


def _group(group: str) -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=group):
        if ep.value not in (e.value for e in found.get(ep.name, [])):  # one distribution seen twice on the path
            found.setdefault(ep.name, []).append(ep)
    return found


def _entry_point(group: str, kind: str, name: str) -> EntryPoint:
    found = _group(group)
    if name not in found:
        raise ValueError(f"unknown {kind} {name!r}; {kind}s are {', '.join(sorted(found)) or '(none installed)'}")
    if len(found[name]) > 1:
        raise ValueError(f"{kind} {name!r} is declared twice in entry-point group {group}: "
                         f"{' and '.join(e.value for e in found[name])}; uninstall one")
    return found[name][0]


def analysis_names() -> list[str]:
    """The registered analyses' names, sorted (imports none of them)."""
    return sorted(_group(ANALYSIS_GROUP))


def probe_names() -> list[str]:
    """The registered probes' names, sorted (imports none of them)."""
    return sorted(_group(PROBE_GROUP))


def _declarations(cls: type[Analysis], where: str) -> None:
    """One-line ValueError for the first declaration of ``cls`` that is not one the toolkit can use."""
    if not isinstance(cls.name, str) or not cls.name.isidentifier():
        raise ValueError(f"analysis {where}: name must be a Python identifier (its result folder); got {cls.name!r}")
    if not isinstance(cls.summary, str) or not cls.summary.strip() or "\n" in cls.summary:
        raise ValueError(f"analysis {where}: summary must be one non-empty line; got {cls.summary!r}")
    for family in (cls.family, *cls.other_families):
        if family not in FAMILY_IDS:
            raise ValueError(f"analysis {where}: family must be one of {', '.join(FAMILY_IDS)}; got {family!r}")
    if cls.stores not in STORE_NEEDS:
        raise ValueError(f"analysis {where}: stores must be one of {', '.join(STORE_NEEDS)}; got {cls.stores!r}")
    unknown = [k for k in cls.reads if k not in STORE_KINDS]
    if isinstance(cls.reads, str) or unknown:
        raise ValueError(f"analysis {where}: reads must be a tuple of the store kinds {', '.join(STORE_KINDS)}; "
                         f"got {cls.reads!r}")
    if cls.reads and cls.stores == "none":
        raise ValueError(f"analysis {where}: reads {', '.join(cls.reads)} but takes no stores (stores = 'none')")
    if isinstance(cls.priority, bool) or not isinstance(cls.priority, int) or not 0 <= cls.priority < 10:
        raise ValueError(f"analysis {where}: priority must be an int in [0, 10) (probes run at 10); "
                         f"got {cls.priority!r}")
    plans = cls.planned is not Analysis.planned
    if (cls.run_module is not None) != plans or (plans and not all(hasattr(cls.run_module, a) for a in
                                                                     ("Spec", "run"))):
        raise ValueError(f"analysis {where}: an analysis that runs its own stores sets both run_module (a module "
                         f"with Spec and run) and planned; got run_module={cls.run_module!r}, "
                         f"planned {'defined' if plans else 'not defined'}")


def check_analysis(obj, name: str | None = None) -> Analysis:
    """An instance of ``obj`` (a subclass of ``Analysis``, or an instance of one) if it declares what
    the toolkit needs (and is registered as ``name``, when given); a one-line ValueError saying what
    is wrong otherwise."""
    cls = obj if isinstance(obj, type) else type(obj)
    what = getattr(obj, "__name__", None) or type(obj).__name__
    if not issubclass(cls, Analysis):
        raise ValueError(f"analysis {name or what!r}: {what} is not a subclass of amdm_geom.analyses.base.Analysis "
                         f"(an analysis is a class: class MyCheck(Analysis), registered as 'package.module:MyCheck')")
    where = f"{cls.__module__}.{cls.__qualname__}"
    missing = [m for m in REQUIRED if getattr(cls, m) is getattr(Analysis, m)]
    if missing:
        raise ValueError(f"analysis {where} lacks {', '.join(missing)} of the analysis contract "
                         f"({', '.join(REQUIRED)}: every other hook has a default)")
    _declarations(cls, where)
    if name is not None and cls.name != name:
        raise ValueError(f"analysis {name!r} is registered under another name than its name {cls.name!r} ({where})")
    return obj if isinstance(obj, Analysis) else cls()


def load_analysis(name: str) -> Analysis:
    """The analysis registered as ``name``: its class, loaded and checked, as an instance."""
    ep = _entry_point(ANALYSIS_GROUP, "analysis", name)
    obj = ep.load()
    if not (isinstance(obj, type) and issubclass(obj, Analysis)):
        kind = "a module" if isinstance(obj, ModuleType) else f"{type(obj).__name__} {obj!r}"
        raise ValueError(f"analysis {name!r}: entry point {ep.value} must name a subclass of "
                         f"amdm_geom.analyses.base.Analysis ('package.module:Class'); it names {kind}")
    return check_analysis(obj, name)


def load_analyses() -> list[Analysis]:
    """Every registered analysis, loaded and checked, in the order of their names."""
    return [load_analysis(name) for name in analysis_names()]


def load_probe(name: str) -> ModuleType:
    """The probe module registered as ``name``, checked against the probe contract."""
    ep = _entry_point(PROBE_GROUP, "probe", name)
    module = ep.load()
    if not isinstance(module, ModuleType):
        raise ValueError(f"probe {name!r} ({ep.value}) must name a module; got {type(module).__name__}")
    missing = [a for a in PROBE_CONTRACT if not hasattr(module, a)]
    if missing:
        raise ValueError(f"probe module {module.__name__} lacks {', '.join(missing)} of the probe contract "
                         f"({', '.join(PROBE_CONTRACT)})")
    return module


def summary(module: ModuleType) -> str:
    """A probe module's one line: its ``SUMMARY``, else its docstring's first line."""
    text = getattr(module, "SUMMARY", None) or (module.__doc__ or "").strip().split("\n")[0]
    return " ".join(str(text).split())


def analysis_summaries() -> dict[str, str]:
    """``{name: summary}`` of every registered analysis (this imports them)."""
    return {a.name: a.summary for a in load_analyses()}


#: What made a run, as its store records it (``attrs["probe"]`` or ``attrs["analysis"]``) and as
#: ``amdm_geom.app.engine.run_spec`` names it.
MAKERS = ("probe", "analysis")


def run_maker(kind: str, name: str) -> ModuleType:
    """The module that runs a spec of the probe ``name`` (``kind="probe"``) or of the analysis
    ``name``'s own runs (``kind="analysis"``: its ``run_module``); it has ``Spec`` and
    ``run(spec, quiet=...)``. Only registered names are found: anything else (a dotted module
    name, an unknown kind) is a one-line ValueError."""
    if kind == "probe":
        return load_probe(name)
    if kind == "analysis":
        module = load_analysis(name).run_module
        if module is None:
            raise ValueError(f"analysis {name!r} runs no stores of its own (it has no run_module)")
        return module
    raise ValueError(f"a run is made by a {' or an '.join(MAKERS)}; got {kind!r}")


def maker(ds) -> ModuleType:
    """The module that made the opened trace store ``ds`` (``run_maker`` of its ``probe`` or
    ``analysis`` attribute), whose ``Spec`` reads the spec it keeps (``amdm_geom.store.spec_of``).
    One-line ValueError for a store that no probe and no analysis' runs made."""
    for kind in MAKERS:
        if kind in ds.attrs and "spec" in ds.attrs:
            return run_maker(kind, str(ds.attrs[kind]))
    source = ds.encoding.get("source") or "(in memory)"
    raise ValueError(f"store {source} keeps no spec to run again: no probe and no analysis made it (it was made "
                     "before stores kept their spec, or by code outside a probe)")

"""The registry of analyses and probes: entry points in the groups ``amdm_geom.analyses`` and
``amdm_geom.probes`` (``importlib.metadata``), so a user's package adds its own by declaring
one, without editing this project. Listing names imports nothing; a module is imported when
it is loaded, and checked against its contract (``amdm_geom.analyses``' docstring)."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

__all__ = ["ANALYSIS_CONTRACT", "ANALYSIS_GROUP", "PROBE_CONTRACT", "PROBE_GROUP", "STORE_KINDS", "analysis_names",
           "analysis_summaries", "check_analysis", "load_analysis", "load_probe", "probe_names", "summary"]

ANALYSIS_GROUP = "amdm_geom.analyses"
PROBE_GROUP = "amdm_geom.probes"
#: What every analysis module has (``tables``, ``RESULT`` and ``saved`` are optional).
ANALYSIS_CONTRACT = ("NAME", "SUMMARY", "STORES", "compute", "verdicts", "plot")
#: What every probe module has.
PROBE_CONTRACT = ("run",)
#: The values of an analysis' ``STORES``.
STORE_KINDS = ("required", "optional", "none")


def _group(group: str) -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=group):
        if ep.value not in (e.value for e in found.get(ep.name, [])):  # one distribution seen twice on the path
            found.setdefault(ep.name, []).append(ep)
    return found


def _load(group: str, kind: str, name: str) -> ModuleType:
    found = _group(group)
    if name not in found:
        raise ValueError(f"unknown {kind} {name!r}; {kind}s are {', '.join(sorted(found)) or '(none installed)'}")
    if len(found[name]) > 1:
        raise ValueError(f"{kind} {name!r} is declared twice in entry-point group {group}: "
                         f"{' and '.join(e.value for e in found[name])}; uninstall one")
    module = found[name][0].load()
    if not isinstance(module, ModuleType):
        raise ValueError(f"{kind} {name!r} ({found[name][0].value}) must name a module; got {type(module).__name__}")
    return module


def _check(module: ModuleType, kind: str, contract: tuple[str, ...]) -> ModuleType:
    missing = [a for a in contract if not hasattr(module, a)]
    if missing:
        raise ValueError(f"{kind} module {module.__name__} lacks {', '.join(missing)} of the {kind} contract "
                         f"({', '.join(contract)})")
    return module


def analysis_names() -> list[str]:
    """The registered analyses' names, sorted (imports none of them)."""
    return sorted(_group(ANALYSIS_GROUP))


def probe_names() -> list[str]:
    """The registered probes' names, sorted (imports none of them)."""
    return sorted(_group(PROBE_GROUP))


def check_analysis(module: ModuleType, name: str | None = None) -> ModuleType:
    """``module`` if it follows the analysis contract (and is registered as ``name``, when
    given); a one-line ValueError naming what it lacks otherwise."""
    _check(module, "analysis", ANALYSIS_CONTRACT)
    for fn in ("compute", "verdicts", "plot"):
        if not callable(getattr(module, fn)):
            raise ValueError(f"analysis module {module.__name__}: {fn} must be a function")
    if module.STORES not in STORE_KINDS:
        raise ValueError(f"analysis module {module.__name__}: STORES must be one of {', '.join(STORE_KINDS)}; "
                         f"got {module.STORES!r}")
    if name is not None and module.NAME != name:
        raise ValueError(f"analysis {name!r} is registered under another name than its NAME {module.NAME!r} "
                         f"({module.__name__})")
    return module


def load_analysis(name: str) -> ModuleType:
    """The analysis module registered as ``name``, checked against the contract."""
    return check_analysis(_load(ANALYSIS_GROUP, "analysis", name), name)


def load_probe(name: str) -> ModuleType:
    """The probe module registered as ``name``, checked against the probe contract."""
    return _check(_load(PROBE_GROUP, "probe", name), "probe", PROBE_CONTRACT)


def summary(module: ModuleType) -> str:
    """A module's one line: its ``SUMMARY``, else its docstring's first line."""
    text = getattr(module, "SUMMARY", None) or (module.__doc__ or "").strip().split("\n")[0]
    return " ".join(str(text).split())


def analysis_summaries() -> dict[str, str]:
    """``{name: SUMMARY}`` of every registered analysis (this imports them)."""
    return {name: summary(load_analysis(name)) for name in analysis_names()}

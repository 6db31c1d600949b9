"""No private name is imported across modules.

Every module of amdm_geom/, probes/ and analyses/ (named as installed: ``amdm_geom.probes...``,
``amdm_geom.analyses...``) is read with ``ast``; a module that takes a private name (one
underscore, not a dunder such as ``__version__``) of another of the project's modules fails the
check, whichever way it takes it:

- ``from amdm_geom.store.lock import _StoreLock`` (or relatively, ``from .lock import _StoreLock``),
  a private module included (``from amdm_geom.store import _lock``);
- ``schedules._schedule_params(...)`` through a module it imported (``from amdm_geom.core import
  schedules``, ``import amdm_geom.core.schedules as schedules``).

A package's ``__init__`` is a module of its own: re-exporting a submodule's private name from it
(``from amdm_geom.store.lock import _StoreLock`` in ``store/__init__.py``) is a cross-module import
too. A name another module needs is public where it is defined (``StoreLock``), or the code that
needs it moves beside it. Third-party private names (tyro's ``_errors``, which the CLI's error hook
reads) are not the project's and are not checked here; a private name used inside its own module,
or a method called on an object, is not an import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Each folder of the project and the package it installs as.
LAYOUT = {"amdm_geom": "amdm_geom", "probes": "amdm_geom.probes", "analyses": "amdm_geom.analyses"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def modules(root: Path, layout: dict[str, str]) -> dict[str, tuple[Path, bool]]:
    """``{module name: (path, is a package's __init__)}`` of every ``.py`` file under ``root``'s
    folders, named as installed."""
    out = {}
    for folder, package in layout.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            init = parts[-1] == "__init__"
            out[".".join((package, *(parts[:-1] if init else parts)))] = (path, init)
    return out


def _source(node: ast.ImportFrom, name: str, init: bool) -> str:
    """The absolute module an ``import from`` reads, resolving a relative one from module ``name``."""
    if not node.level:
        return node.module or ""
    base = name.split(".")
    base = base[:len(base) - node.level + (1 if init else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def private_imports(root: Path = ROOT, layout: dict[str, str] = LAYOUT) -> list[str]:
    """``"<file>:<line>: <module> takes <name> from <other module>"`` for every private name a
    module takes from another of the project's modules (see the module's docstring)."""
    found = modules(root, layout)
    ours = tuple(sorted({p.split(".")[0] for p in layout.values()}))
    out = []
    for name, (path, init) in found.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        bound: dict[str, str] = {}  # a local name -> the project's module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _source(node, name, init)
                if source.split(".")[0] not in ours:
                    continue
                for alias in node.names:
                    if _private(alias.name):
                        out.append(f"{path.relative_to(root)}:{node.lineno}: {name} takes {alias.name} from {source}")
                    if f"{source}.{alias.name}" in found:
                        bound[alias.asname or alias.name] = f"{source}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in ours and alias.name in found:
                        bound[alias.asname or alias.name] = alias.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                owner = ast.unparse(node.value)
                module = bound.get(owner, owner if owner in found else None)
                if module is not None and module != name:
                    out.append(f"{path.relative_to(root)}:{node.lineno}: {name} takes {node.attr} from {module}")
    return sorted(out)


def test_no_private_name_is_imported_across_modules():
    found = modules(ROOT, LAYOUT)
    assert {"amdm_geom.store.recorder", "amdm_geom.probes.specs", "amdm_geom.analyses.prop31.norm_angle",
            "amdm_geom.store"} <= set(found)  # (all three folders are read)
    assert private_imports() == []


PLANTED = {
    "pkg/__init__.py": "from pkg.inner import _hidden\n",
    "pkg/inner.py": "_hidden = 1\nshown = 2\n\n\ndef _own():\n    return _hidden\n",
    "pkg/absolute.py": "from pkg.inner import _hidden, shown\n",
    "pkg/relative.py": "from .inner import _hidden\n",
    "pkg/attribute.py": "from pkg import inner\nimport pkg.inner as again\n\nx = inner._hidden + again._hidden\n",
    "pkg/dotted.py": "import pkg.inner\n\nx = pkg.inner._hidden\n",
    "pkg/fine.py": "import os\nfrom pkg.inner import shown\nfrom os import _exit\n\n"
                   "x = shown + os._exit.__name__.count('_')\n\n\n"
                   "class A:\n    def _m(self):\n        return self._m\n",
    "pkg/sub/__init__.py": "from .. import inner\n\ny = inner._hidden\n",
}


def test_a_planted_private_import_fails_the_check(tmp_path):
    """Each way of taking another module's private name is found, with its file and line; a
    public name, a private name of the standard library and a method on ``self`` are not."""
    for rel, text in PLANTED.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = private_imports(tmp_path, {"pkg": "pkg"})
    assert found == sorted([
        "pkg/__init__.py:1: pkg takes _hidden from pkg.inner",
        "pkg/absolute.py:1: pkg.absolute takes _hidden from pkg.inner",
        "pkg/attribute.py:4: pkg.attribute takes _hidden from pkg.inner",
        "pkg/attribute.py:4: pkg.attribute takes _hidden from pkg.inner",
        "pkg/dotted.py:3: pkg.dotted takes _hidden from pkg.inner",
        "pkg/relative.py:1: pkg.relative takes _hidden from pkg.inner",
        "pkg/sub/__init__.py:3: pkg.sub takes _hidden from pkg.inner",
    ]), found

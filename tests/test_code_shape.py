"""The house rules of the code's shape (README, "Architecture"): no module over 400 lines and no
function over 80 lines in ``amdm_geom/``, ``probes/`` or ``analyses/``, unless the module's or
the function's first line (its docstring's first line) says why, starting with "Long:"."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("amdm_geom", "probes", "analyses")
MAX_MODULE, MAX_FUNCTION = 400, 80


def _sources():
    return sorted(p for f in FOLDERS for p in (ROOT / f).rglob("*.py"))


def _says_why(node) -> bool:
    doc = ast.get_docstring(node) or ""
    return doc.strip().startswith("Long:")


def _too_long(path: Path) -> list[str]:
    text = path.read_text()
    tree = ast.parse(text)
    out = []
    lines = len(text.splitlines())
    if lines > MAX_MODULE and not _says_why(tree):
        out.append(f"{path.relative_to(ROOT)}: {lines} lines")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION and not _says_why(node):
                out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    return out


def test_the_rule_catches_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION))
    p = tmp_path / "m.py"
    p.write_text(f"def f():\n{body}\n")
    assert len(_too_long_rel(p)) == 1
    p.write_text(f'def f():\n    """Long: a table."""\n{body}\n')
    assert _too_long_rel(p) == []


def _too_long_rel(p: Path) -> list[str]:
    global ROOT
    saved, ROOT = ROOT, p.parent
    try:
        return _too_long(p)
    finally:
        ROOT = saved


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_module_or_function_too_long(folder):
    found = [msg for p in _sources() if p.is_relative_to(ROOT / folder) for msg in _too_long(p)]
    assert not found, "too long (say why with a first line 'Long: ...'):\n" + "\n".join(found)

"""Copies, found and checked: no run of ``MIN_LINES`` or more lines is shared by two modules of
``amdm_geom/``, ``probes/`` or ``analyses/`` unless one side is a copy kept on purpose, and such a
copy says so and stays equal to its source (diffusers' ``utils/check_copies.py`` discipline).

A copy kept on purpose is a ``def`` or ``class`` under a mark naming its source by its installed
dotted name, optionally with renames applied to the source before comparing::

    # Copied from amdm_geom.models.gmm.MixtureModel.null_condition with uncond_weights->null_weights
    def null_condition(self): ...

Lines are compared with their whitespace normalised; blank lines, comments, import statements and
docstrings are skipped (they repeat legitimately and carry no logic). The planted-copy tests show
that the finder and the mark check can fail.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: folder -> the package it installs as
PACKAGES = {"amdm_geom": "amdm_geom", "probes": "amdm_geom.probes", "analyses": "amdm_geom.analyses"}
MIN_LINES = 10
MARK = re.compile(r"^\s*# Copied from (?P<target>[\w.]+)(?: with (?P<renames>\S+->\S+(?:, *\S+->\S+)*))?\s*$")


@dataclass(frozen=True)
class Copy:
    """A marked block: lines ``start``..``end`` (1-based, inclusive) of ``path``."""

    path: Path
    start: int
    end: int
    target: str
    renames: tuple[tuple[str, str], ...]


def sources(root: Path) -> list[Path]:
    """The Python modules of the three packages under ``root``."""
    return sorted(p for folder in PACKAGES if (root / folder).is_dir() for p in (root / folder).rglob("*.py")
                  if "__pycache__" not in p.parts)


def module_name(path: Path, root: Path) -> str:
    """``path``'s installed dotted name (``probes/sd_pair.py`` -> ``amdm_geom.probes.sd_pair``)."""
    parts = path.relative_to(root).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join((PACKAGES[parts[0]], *parts[1:]))


def skipped(tree: ast.Module) -> set[int]:
    """The line numbers of import statements and docstrings."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update(range(node.lineno, node.end_lineno + 1))
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body and \
                isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and \
                isinstance(body[0].value.value, str):
            out.update(range(body[0].lineno, body[0].end_lineno + 1))
    return out


def kept_lines(text: str, tree: ast.Module) -> list[tuple[int, str]]:
    """``(line number, normalised line)`` of the lines that count: comments cut (found by the
    tokenizer, so a ``#`` inside a string stays), whitespace collapsed."""
    skip, lines = skipped(tree), text.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            lines[row - 1] = lines[row - 1][:col]
    out = []
    for number, line in enumerate(lines, 1):
        norm = " ".join(line.split())
        if norm and number not in skip:
            out.append((number, norm))
    return out


def _first_line(node) -> int:
    return min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])


def copied_blocks(path: Path, text: str, tree: ast.Module) -> list[Copy]:
    """The marked copies in one module: a ``def``/``class`` right under a ``# Copied from`` line."""
    lines, out = text.splitlines(), []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = _first_line(node)
            mark = MARK.match(lines[first - 2]) if first >= 2 else None
            if mark:
                renames = tuple(tuple(r.strip().split("->")) for r in (mark["renames"] or "").split(",") if r.strip())
                out.append(Copy(path, first, node.end_lineno, mark["target"], renames))
    return out


def _find(tree: ast.Module, qualname: list[str]):
    body = tree.body
    node = None
    for name in qualname:
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == name), None)
        if node is None:
            return None
        body = node.body
    return node


def _dedented(lines: list[str]) -> list[str]:
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return [line[indent:].rstrip() for line in lines]


def source_of(target: str, root: Path) -> list[str] | None:
    """The source lines of dotted ``target`` (a module's def or class, nested ones too), or None."""
    modules = {module_name(p, root): p for p in sources(root)}
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        path = modules.get(".".join(parts[:cut]))
        if path is not None:
            text = path.read_text()
            node = _find(ast.parse(text), parts[cut:])
            if node is None:
                return None
            return text.splitlines()[_first_line(node) - 1:node.end_lineno]
    return None


def copy_problems(root: Path) -> list[str]:
    """One line per marked copy that names no source or no longer equals it (after its renames)."""
    problems = []
    for path in sources(root):
        text = path.read_text()
        for copy in copied_blocks(path, text, ast.parse(text)):
            where = f"{path.relative_to(root)}:{copy.start}-{copy.end}"
            source = source_of(copy.target, root)
            if source is None:
                problems.append(f"{where}: copied from {copy.target}, which is not found")
                continue
            want = "\n".join(_dedented(source))
            for old, new in copy.renames:
                want = want.replace(old, new)
            if _dedented(text.splitlines()[copy.start - 1:copy.end]) != want.split("\n"):
                problems.append(f"{where}: differs from {copy.target} (its source changed, or the copy did)")
    return problems


def duplicates(root: Path, min_lines: int = MIN_LINES) -> list[str]:
    """One line per pair of modules sharing a run of ``min_lines`` or more kept lines, neither side
    inside a marked copy: ``a.py:10-24 ~ b.py:40-54``."""
    kept, copied = {}, {}
    for path in sources(root):
        text = path.read_text()
        tree = ast.parse(text)
        kept[path] = kept_lines(text, tree)
        copied[path] = {n for c in copied_blocks(path, text, tree) for n in range(c.start, c.end + 1)}
    windows = defaultdict(list)
    for path, lines in kept.items():
        for i in range(len(lines) - min_lines + 1):
            windows[tuple(line for _, line in lines[i:i + min_lines])].append((path, i))
    found: dict[tuple[Path, Path], tuple[set, set]] = defaultdict(lambda: (set(), set()))
    for places in windows.values():
        for a, (pa, ia) in enumerate(places):
            for pb, ib in places[a + 1:]:
                runs = [[n for n, _ in kept[p][i:i + min_lines]] for p, i in ((pa, ia), (pb, ib))]
                if pa == pb or any(set(run) <= copied[p] for run, p in zip(runs, (pa, pb))):
                    continue  # (one module; or one side is a marked copy, checked by copy_problems)
                for lines, run in zip(found[(pa, pb)], runs):
                    lines.update(run)
    return sorted(" ~ ".join(f"{p.relative_to(root)}:{min(lines)}-{max(lines)}" for p, lines in zip(pair, sides))
                  for pair, sides in found.items())


# --------------------------------------------------------------------------------------------
# the repository


def test_every_marked_copy_equals_its_source():
    assert copy_problems(ROOT) == []


def test_no_unmarked_copy_of_ten_lines_across_modules():
    assert duplicates(ROOT) == []


# --------------------------------------------------------------------------------------------
# the checks can fail: copies planted in a tree made here


FUNCTION = '''
def spread(values, *, scale=1.0):
    """A docstring that may differ between the copies."""
    total = 0.0
    for v in values:
        total += v * scale
    mean = total / len(values)
    square = 0.0
    for v in values:
        square += (v * scale - mean) ** 2
    variance = square / len(values)
    low = min(values) * scale
    high = max(values) * scale
    return {"mean": mean, "variance": variance, "low": low, "high": high}
'''


def plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_planted_copy_is_reported_whatever_its_spacing_comments_and_imports(tmp_path):
    spaced = FUNCTION.replace("    total = 0.0\n", "    total  =  0.0   # (a comment)\n\n").replace(
        '"""A docstring that may differ between the copies."""', '"""Another docstring."""')
    root = plant(tmp_path, {"amdm_geom/core/a.py": "import math\n" + FUNCTION,
                            "probes/b.py": "from os import path\n\n" + spaced})
    assert duplicates(root) == ["amdm_geom/core/a.py:3-15 ~ probes/b.py:4-17"]
    short = "\n".join(FUNCTION.splitlines()[:11])  # (nine lines that count: below the threshold)
    assert duplicates(plant(tmp_path, {"probes/b.py": short})) == []
    assert duplicates(plant(tmp_path, {"probes/b.py": FUNCTION, "probes/c.py": FUNCTION})) == [
        "amdm_geom/core/a.py:3-15 ~ probes/b.py:2-14", "amdm_geom/core/a.py:3-15 ~ probes/c.py:2-14",
        "probes/b.py:2-14 ~ probes/c.py:2-14"]


def test_a_marked_copy_is_allowed_while_it_equals_its_source(tmp_path):
    marked = "# Copied from amdm_geom.core.a.spread\n" + FUNCTION.lstrip("\n")
    root = plant(tmp_path, {"amdm_geom/core/a.py": FUNCTION, "analyses/toy/b.py": "x = 1\n\n\n" + marked})
    assert duplicates(root) == [] and copy_problems(root) == []
    renamed = ("# Copied from amdm_geom.core.a.spread with spread->widths, scale->factor\n"
               + FUNCTION.lstrip("\n").replace("spread", "widths").replace("scale", "factor"))
    plant(tmp_path, {"analyses/toy/b.py": renamed})
    assert copy_problems(root) == [] and duplicates(root) == []


def test_a_marked_copy_that_drifted_or_names_nothing_is_reported(tmp_path):
    drifted = "# Copied from amdm_geom.core.a.spread\n" + FUNCTION.lstrip("\n").replace("/ len(values)\n    low",
                                                                                        "/ (len(values) - 1)\n    low")
    root = plant(tmp_path, {"amdm_geom/core/a.py": FUNCTION, "probes/b.py": drifted})
    assert copy_problems(root) == ["probes/b.py:2-14: differs from amdm_geom.core.a.spread (its source changed, or "
                                   "the copy did)"]
    plant(tmp_path, {"probes/b.py": "# Copied from amdm_geom.core.a.gone\n" + FUNCTION.lstrip("\n")})
    assert copy_problems(root) == ["probes/b.py:2-14: copied from amdm_geom.core.a.gone, which is not found"]
    assert duplicates(root) == []  # (marked: the mark's own check reports it)


@pytest.mark.parametrize("line,target,renames", [
    ("# Copied from amdm_geom.models.gmm.MixtureModel.null_condition", "amdm_geom.models.gmm.MixtureModel"
     ".null_condition", None),
    ("    # Copied from amdm_geom.probes.specs.images_folder with out->store", "amdm_geom.probes.specs.images_folder",
     "out->store"),
    ("# copied from x.y", None, None),
])
def test_the_mark(line, target, renames):
    found = MARK.match(line)
    assert (found and found["target"], found and found["renames"]) == (target, renames)

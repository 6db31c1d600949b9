"""Rewrite the README's list of analyses from the registry (the lines between its
``<!-- analyses`` and ``<!-- /analyses -->`` markers: ``- `name` (family): summary``).

    .venv/bin/python tests/scripts/readme_analyses.py [--check]

An analysis added in this repository (one class, one entry point) reaches the README by running
this once; ``--check`` only says whether the list is current (exit 1 when not), as
``tests/test_runner.py`` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amdm_geom.app.runner.registry import load_analyses

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- analyses", "<!-- /analyses -->"


def block() -> str:
    """The list's lines as the registry has them, in name order."""
    return "".join(f"- `{a.name}` ({a.family}): {a.summary}\n" for a in load_analyses())


def rewritten(text: str) -> str:
    """``text`` (the README) with its list replaced by ``block()``."""
    start = text.index("\n", text.index(START)) + 1
    return text[:start] + block() + text[text.index(END):]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only say whether the README's list is current")
    args = p.parse_args(argv)
    text = README.read_text()
    new = rewritten(text)
    if args.check:
        print("README's list of analyses is current" if new == text else "README's list of analyses is out of date")
        return 0 if new == text else 1
    README.write_text(new)
    print(f"wrote the list of {block().count(chr(10))} analyses into {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

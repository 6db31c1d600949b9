"""Print the README's claim tables from a ``verdicts.json`` (``amdm-geom validate --json``): the
paper's claims, App. G's rectified-flow claims, then the implementation checks, one markdown
row per verdict (measured value, then its interval with level and n where it has them).

    .venv/bin/python tests/scripts/readme_claims.py data/report/verdicts.json [MORE.json ...]

Later files replace earlier rows of the same key (e.g. one analysis rerun on its own)."""

from __future__ import annotations

import json
import sys


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def _measured(r: dict) -> str:
    out = r["measured"]
    if r.get("interval"):
        lo, hi = r["interval"]
        out += f" [{lo:.3g}, {hi:.3g}]" + (f" ({r['level']:g})" if r.get("level") else "")
    if r.get("n") is not None and "n = " not in out:
        out += f", n = {r['n']}"
    return out


def table(rows: list[dict]) -> str:
    lines = ["| claim | where | measured | bound or paper | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {_cell(r['claim'])} | {_cell(r['where'])} | {_cell(_measured(r))} | {_cell(r['bound'])} | "
              f"{r['status']} |" for r in rows]
    return "\n".join(lines)


def main(paths: list[str]) -> None:
    rows: dict[str, dict] = {}
    for path in paths:
        for r in json.load(open(path)):
            rows[r["key"]] = r
    rows_ = list(rows.values())
    checks = [r for r in rows_ if r.get("kind") == "implementation check"]
    claims = [r for r in rows_ if r.get("kind") != "implementation check"]
    flow = [r for r in claims if "App. G" in r["where"]]
    paper = [r for r in claims if "App. G" not in r["where"]]
    for title, part in (("paper", paper), ("App. G", flow), ("checks", checks)):
        print(f"<!-- {title}: {len(part)} rows -->")
        print(table(part))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])

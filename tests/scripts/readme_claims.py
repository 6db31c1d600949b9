"""Print the README's claim tables from a ``verdicts.json`` (``amdm-geom validate --json``), one
kind of verdict after another in the order of ``KINDS``: the paper's claims (App. G's
rectified-flow claims in a table of their own), the paper's reported numbers checked against each
other, the findings (about samplers, libraries and this toolkit's setup), then the implementation
checks; one markdown row per verdict (measured value, then its interval with level and n where it
has them). Each table is preceded by a comment naming its kind and counting its rows; a kind with
no verdict prints an empty table.

    .venv/bin/python tests/scripts/readme_claims.py data/report/verdicts.json [MORE.json ...]

Later files replace earlier rows of the same key (e.g. one analysis rerun on its own)."""

from __future__ import annotations

import json
import sys

from amdm_geom.core.verdicts import KINDS


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def _measured(r: dict) -> str:
    out = r["measured"]
    if r.get("interval"):
        lo, hi = r["interval"]
        ends = ", ".join("unbounded" if x is None else f"{x:.3g}" for x in (lo, hi))  # (an end few samples pin down)
        out += f" [{ends}]" + (f" ({r['level']:g})" if r.get("level") else "")
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
    unknown = sorted({str(r.get("kind", "paper claim")) for r in rows_} - set(KINDS))
    if unknown:
        raise SystemExit(f"readme_claims: kind must be one of {KINDS}; got {', '.join(unknown)}")
    of = {k: [r for r in rows_ if r.get("kind", "paper claim") == k] for k in KINDS}
    claims = of["paper claim"]
    parts = [("paper claims", [r for r in claims if "App. G" not in r["where"]]),
             ("paper claims, App. G", [r for r in claims if "App. G" in r["where"]]),
             ("reported numbers", of["reported numbers"]), ("findings", of["finding"]),
             ("implementation checks", of["implementation check"])]
    for title, part in parts:
        print(f"<!-- {title}: {len(part)} rows -->")
        print(table(part))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])

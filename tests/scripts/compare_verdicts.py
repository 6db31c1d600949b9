"""Compare two ``verdicts.json`` files: keys, statuses and numbers.

    .venv/bin/python tests/scripts/compare_verdicts.py data/reference/verdicts_quick_before_issue11.json \
        data/report/verdicts.json [--rtol 1e-9]

Prints one line per difference (a key only in one file, a status that changed, a ``value``,
``reference``, interval end, ``n`` or ``level`` that differs by more than ``rtol`` relative, and
with ``--printed`` the printed ``measured`` and ``bound`` texts) and a summary; exits 1 when
anything differs. The reference files were written by ``amdm-geom validate --quick`` on main just
before each house redesign (``data/reference/verdicts_quick_before_issue11.json``,
``..._issue23.json``), so a redesign can show that every verdict came out the same.
"""

from __future__ import annotations

import argparse
import json
import math
import sys


def _load(path: str) -> dict[str, dict]:
    rows = json.load(open(path))
    return {r["key"] or r["claim"]: r for r in rows}


def _same(a, b, rtol: float) -> bool:
    if a is None or b is None:  # NaN is written as null
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=rtol, abs_tol=rtol * 1e-6)


def differences(before: dict, after: dict, rtol: float, printed: bool = False) -> list[str]:
    out = [f"only before: {k}" for k in before if k not in after]
    out += [f"only after: {k}" for k in after if k not in before]
    for key in (k for k in before if k in after):
        a, b = before[key], after[key]
        if a["status"] != b["status"]:
            out.append(f"status {key}: {a['status']} -> {b['status']}")
        for field in ("value", "reference", "n", "level"):
            if not _same(a.get(field), b.get(field), rtol):
                out.append(f"{field} {key}: {a.get(field)!r} -> {b.get(field)!r}")
        ia, ib = a.get("interval") or [None, None], b.get("interval") or [None, None]
        if not all(_same(x, y, rtol) for x, y in zip(ia, ib)):
            out.append(f"interval {key}: {a.get('interval')!r} -> {b.get('interval')!r}")
        for field in ("measured", "bound") if printed else ():
            if a.get(field) != b.get(field):
                out.append(f"{field} {key}: {a.get(field)!r} -> {b.get(field)!r}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--rtol", type=float, default=1e-9, help="relative tolerance on numbers (default 1e-9)")
    p.add_argument("--printed", action="store_true", help="also compare the printed measured and bound texts")
    args = p.parse_args(argv)
    before, after = _load(args.before), _load(args.after)
    diffs = differences(before, after, args.rtol, args.printed)
    for line in diffs:
        print(line)
    print(f"{len(before)} verdicts before, {len(after)} after, {len(diffs)} differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())

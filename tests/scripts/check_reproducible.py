"""Does ``amdm-geom validate --quick`` give the same verdicts on every run? (issue 12, point 6)

    .venv/bin/python tests/scripts/check_reproducible.py [--keep DIR]

Runs ``validate --quick`` three times, each into its own folder: twice as configured, and once
with ``OMP_NUM_THREADS=1`` (torch then uses one thread, and the batched matrix products round
differently). Compares every verdict's key, status and printed text (``measured`` and ``bound``:
the numbers to the precision the report prints them). Prints one line per difference and exits
1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = {"first": {}, "again": {}, "one thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}


def run(folder: Path, env_extra: dict) -> dict[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("amdm-geom")
    cmd = [str(exe), "validate", "--quick", "--runs", str(folder / "runs"), "--report", str(folder / "report"),
           "--json", str(folder / "verdicts.json")]
    subprocess.run(cmd, env={**os.environ, **env_extra}, check=True, stdout=subprocess.DEVNULL)
    return {r["key"]: r for r in json.loads((folder / "verdicts.json").read_text())}


def differences(a: dict, b: dict) -> list[str]:
    out = [f"key only in one run: {k}" for k in sorted(set(a) ^ set(b))]
    for key in sorted(set(a) & set(b)):
        for field in ("status", "measured", "bound"):
            if a[key][field] != b[key][field]:
                out.append(f"{key} {field}: {a[key][field]!r} != {b[key][field]!r}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", type=Path, help="keep the three runs under this folder")
    args = p.parse_args(argv)
    base = args.keep or Path(tempfile.mkdtemp(prefix="amdm-geom-repro-"))
    found = {name: run(base / name.replace(" ", "_"), env) for name, env in RUNS.items()}
    diffs = []
    for name in ("again", "one thread"):
        diffs += [f"first vs {name}: {d}" for d in differences(found["first"], found[name])]
    for line in diffs:
        print(line)
    print(f"{len(found['first'])} verdicts, 3 runs, {len(diffs)} differences in status or printed numbers")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())

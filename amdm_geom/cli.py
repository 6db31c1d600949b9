"""The ``amdm-geom`` command line.

- ``amdm-geom validate [--quick]``: the main job. Runs every closed-form check, the default
  probes (into ``data/runs/validate/``) and the checks on their stores, and prints the verdict
  table. A violated bound is a finding, not a failure: it exits non-zero only on an internal
  error.
- ``amdm-geom probe <name> [options]``: run one probe into ``data/runs/<name>.zarr``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__

__all__ = ["build_parser", "main"]

#: Settings of the probes ``validate`` runs: (probe, options). Small enough for minutes on 2 cores.
VALIDATE_PROBES = {
    "full": [
        ("gmm_pair", ["--batch", "4"]),
        ("gmm_cross_ecosystem", ["--batch", "4"]),
        ("unet_pair", ["--batch", "2", "--sample-size", "32"]),
    ],
    "quick": [
        ("gmm_pair", ["--batch", "2", "--steps", "20", "--agg-steps", "8", "--latent-shape", "4", "32", "32"]),
        ("gmm_cross_ecosystem", ["--batch", "2", "--steps", "20", "--agg-steps", "8", "--latent-shape", "4", "32", "32"]),
        ("unet_pair", ["--batch", "1", "--steps", "20", "--agg-steps", "8", "--sample-size", "16",
                       "--channels", "8", "16"]),
    ],
}


def _probe_args(name: str, argv: list[str]) -> argparse.Namespace:
    """Parse a probe's own options (``amdm-geom probe NAME --help`` lists them)."""
    import probes

    module = probes.load(name)
    parser = argparse.ArgumentParser(prog=f"amdm-geom probe {name}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    return parser.parse_args(argv)


def _validate(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    import probes
    from analyses import closed_forms, trace_checks

    from .verdicts import format_table, to_json

    mode = "quick" if args.quick else "full"
    print(f"amdm-geom validate ({mode}): closed forms, default probes, trace checks", flush=True)
    rows = closed_forms.verdicts(closed_forms.compute(seed=args.seed))
    stores = {}
    for name, options in VALIDATE_PROBES[mode]:
        out = Path(args.runs) / f"{name}.zarr"
        probe_args = _probe_args(name, [*options, "--seed", str(args.seed), "--out", str(out), "--overwrite",
                                        "--no-progress"])
        t0 = time.perf_counter()
        stores[name] = probes.load(name).run(probe_args, quiet=True)
        print(f"  probe {name}: {out} ({time.perf_counter() - t0:.1f} s)", flush=True)
    rows += trace_checks.verdicts(trace_checks.compute(stores))
    print()
    print(format_table(rows))
    print(f"\n({time.perf_counter() - start:.1f} s)")
    if args.json:
        Path(args.json).write_text(to_json(rows))
    return 0


def _probe(args: argparse.Namespace) -> int:
    import probes

    probes.load(args.probe).run(_probe_args(args.probe, args.probe_args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    import probes

    parser = argparse.ArgumentParser(
        prog="amdm-geom",
        description="Theory validation and latent geometry for AMDM (aggregation of multiple diffusion models).",
    )
    parser.add_argument("--version", action="version", version=f"amdm-geom {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="run every check and the default probes; print the verdict table")
    p.add_argument("--quick", action="store_true", help="smaller probes (under 2 minutes; the tests use it)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the checks and probes (default 0)")
    p.add_argument("--runs", default="data/runs/validate", help="where the probe stores go (overwritten)")
    p.add_argument("--json", metavar="PATH", help="also write the verdicts as JSON to PATH")
    p.set_defaults(func=_validate)

    listing = "\n".join(f"  {name:22s} {text}" for name, (_, text) in probes.PROBES.items())
    p = sub.add_parser("probe", help="run one probe into a trace store (data/runs/<name>.zarr)",
                       description=f"probes:\n{listing}\n\n'amdm-geom probe NAME --help' lists a probe's options.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("probe", choices=list(probes.PROBES), metavar="NAME", help="the probe to run")
    p.add_argument("probe_args", nargs=argparse.REMAINDER, help="the probe's options")
    p.set_defaults(func=_probe)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"amdm-geom {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

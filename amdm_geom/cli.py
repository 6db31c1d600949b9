"""The ``amdm-geom`` command line: ``amdm-geom validate`` runs every check that exists and
prints the verdict table."""

from __future__ import annotations

import argparse
import sys
import time

from . import __version__

__all__ = ["main"]


def _validate(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    from analyses import closed_forms

    from .verdicts import format_table, to_json

    print("amdm-geom validate: closed-form checks (schedule, Prop. 3.1, Lemma A.1, Prop. 3.2, App. D.1)",
          flush=True)
    ds = closed_forms.compute(seed=args.seed)
    rows = closed_forms.verdicts(ds)
    print()
    print(format_table(rows))
    print(f"\n({time.perf_counter() - start:.1f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(to_json(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amdm-geom",
        description="Theory validation and latent geometry for AMDM (aggregation of multiple diffusion models).",
    )
    parser.add_argument("--version", action="version", version=f"amdm-geom {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="run every check and print the verdict table")
    p.add_argument("--seed", type=int, default=0, help="random seed of the checks (default 0)")
    p.add_argument("--json", metavar="PATH", help="also write the verdicts as JSON to PATH")
    p.set_defaults(func=_validate)
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

"""The ``amdm-geom`` command line.

- ``amdm-geom validate [--quick]``: the main job. Runs the closed-form checks, the default
  probes (into ``data/runs/validate/``), every analysis on their stores and the ablations,
  writes each analysis' results and figures under ``data/report/`` and the report
  ``data/report/index.html`` (the verdict table, then the figures), and prints the verdict
  table. A violated bound is a finding, not a failure: it exits non-zero only on an internal
  error.
- ``amdm-geom probe <name> [options]``: run one probe into ``data/runs/<name>.zarr``.
- ``amdm-geom analyze <analysis> <store>... [--out data/report]``: one analysis on given stores.
- ``amdm-geom ecosystem PATH_A PATH_B``: whether two pipelines are one diffusion ecosystem.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from . import __version__

__all__ = ["ANALYSES", "USER_ERRORS", "UsageError", "build_parser", "main"]

_GMM_QUICK = ["--steps", "20", "--agg-steps", "8", "--latent-shape", "4", "32", "32"]

#: The probes ``validate`` runs: store name -> (probe, options). Small enough for minutes on 2
#: cores (--quick: under 2 minutes). Roles: "trace" stores get the eq. (4)/(7) checks, "norm_angle"
#: Prop. 3.1, "shell" Prop. 3.2 (they need sigma_t > 0), "precision:<dtype>" the precision study.
VALIDATE_PROBES = {
    "full": {
        "gmm_pair": ("gmm_pair", ["--batch", "4", "--perturb", "0.05", "--cross-eps", "--continue-after-window"]),
        "gmm_cross_ecosystem": ("gmm_cross_ecosystem", ["--batch", "4"]),
        "unet_pair": ("unet_pair", ["--batch", "2", "--sample-size", "32", "--cross-eps"]),
        "gmm_ddpm": ("gmm_pair", ["--batch", "4", "--ddim-eta", "1", "--cross-eps", "--perturb", "0.05"]),
        "gmm_ddpm_eta40": ("gmm_pair", ["--batch", "4", "--ddim-eta", "1", "--eta", "40"]),
        "gmm_ddpm_w0.8": ("gmm_pair", ["--batch", "4", "--ddim-eta", "1", "--w", "0.8"]),
        "gmm_float16": ("gmm_pair", ["--batch", "2", "--dtype", "float16", "--continue-after-window"]),
        "gmm_float32": ("gmm_pair", ["--batch", "2", "--dtype", "float32", "--continue-after-window"]),
        "gmm_float64": ("gmm_pair", ["--batch", "2", "--dtype", "float64", "--continue-after-window"]),
    },
    "quick": {
        "gmm_pair": ("gmm_pair", ["--batch", "2", *_GMM_QUICK, "--perturb", "0.05", "--cross-eps",
                                  "--continue-after-window"]),
        "gmm_cross_ecosystem": ("gmm_cross_ecosystem", ["--batch", "2", *_GMM_QUICK]),
        "unet_pair": ("unet_pair", ["--batch", "1", "--steps", "20", "--agg-steps", "8", "--sample-size", "16",
                                    "--channels", "8", "16", "--cross-eps"]),
        "gmm_ddpm": ("gmm_pair", ["--batch", "2", *_GMM_QUICK, "--ddim-eta", "1", "--cross-eps", "--perturb", "0.05"]),
        "gmm_ddpm_eta40": ("gmm_pair", ["--batch", "2", *_GMM_QUICK, "--ddim-eta", "1", "--eta", "40"]),
        "gmm_float16": ("gmm_pair", ["--batch", "2", *_GMM_QUICK, "--dtype", "float16", "--continue-after-window"]),
        "gmm_float64": ("gmm_pair", ["--batch", "2", *_GMM_QUICK, "--dtype", "float64", "--continue-after-window"]),
    },
}
_ROLES = {
    "trace": ["gmm_pair", "gmm_cross_ecosystem", "unet_pair", "gmm_ddpm"],
    "norm_angle": ["gmm_pair", "gmm_ddpm"],
    "shell": ["gmm_ddpm", "gmm_ddpm_eta40", "gmm_ddpm_w0.8"],
    "precision": ["gmm_float16", "gmm_float32", "gmm_float64"],
    "gaussianity": ["gmm_pair", "gmm_ddpm"],
    "toy_mixture": [],
    "ablations": [],
}

#: analysis name -> one line; ``amdm-geom analyze NAME STORE...``
ANALYSES = {
    "norm_angle": "Prop. 3.1: norm gap, angle, delta and its parts per step; Table 5 beside the paper's",
    "shell": "Lemma A.1 grid and Prop. 3.2 shell and domain membership (stores with --ddim-eta > 0)",
    "precision": "Table 5 of one configuration recorded in several dtypes (each store's dtype from its attrs)",
    "trace_checks": "every recorded step obeys eq. (4) and every shift eq. (7)",
    "gaussianity": "App. D.1: the schedule's moments (Figure 6), forward normality, and any stores' trajectories",
    "toy_mixture": "App. E, Table 7: AMDM against product-of-experts samplers on 2D mixtures with exact ground truth",
    "ablations": "Tables 1-4, Figure 5, Table 10 on the exact GMM family (runs its own stores into --runs)",
}
_NEED_STORES = {"norm_angle", "shell", "precision", "trace_checks"}
_NO_STORES = {"toy_mixture"}


class UsageError(ValueError):
    """A command line ``argparse`` refused: reported by ``main`` as one line, exit code 2."""

    def __init__(self, command: str | None, message: str):
        super().__init__(message)
        self.command = command


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``main`` prints them), not usage and exit.
    Values such as ``-1e-3``, ``-inf`` and ``-nan`` are read as (negative) numbers, not as
    options, so that the option's own check reports them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$",
                                                   re.IGNORECASE)

    def error(self, message: str):
        words = self.prog.split()
        raise UsageError(words[1] if len(words) > 1 else None, message)


def _probe_args(name: str, argv: list[str]) -> argparse.Namespace:
    """Parse a probe's own options (``amdm-geom probe NAME --help`` lists them)."""
    from amdm_geom import probes

    module = probes.load(name)
    parser = _Parser(prog=f"amdm-geom probe {name}", description=module.__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    return parser.parse_args(argv)


def run_analysis(name: str, stores: dict, out: Path, *, quick: bool = False, runs_dir="data/runs") -> list:
    """Run analysis ``name`` on ``stores`` (``{store name: path}``), writing under ``out/name``."""
    from amdm_geom.analyses import gaussianity, norm_angle, shell, trace_checks

    if name not in ANALYSES:
        raise ValueError(f"unknown analysis {name!r}; analyses are {', '.join(ANALYSES)}")
    if not stores and name in _NEED_STORES:
        raise ValueError(f"analysis {name} needs at least one store")
    if stores and name in _NO_STORES:
        raise ValueError(f"analysis {name} takes no stores; got {len(stores)}: {', '.join(map(str, stores.values()))}")
    target = Path(out) / name
    if name == "gaussianity":
        return gaussianity.report(target, stores, quick=quick)
    if name == "toy_mixture":
        from amdm_geom.analyses import toy_mixture

        return toy_mixture.report(target, quick=quick)
    if name == "ablations":
        from amdm_geom.analyses import ablations

        if stores:
            ds = ablations.compute(stores)
            found = ablations.verdicts(ds)
            ablations.write(ds, found, target)
            return found
        return ablations.report(target, Path(runs_dir) / "ablations", quick=quick)
    if name == "norm_angle":
        return norm_angle.report(stores, target)
    if name == "shell":
        return shell.report(stores, target)
    if name == "precision":  # (each store's dtype is read from its attrs; duplicates are refused)
        return norm_angle.report_precision(stores, target)
    return trace_checks.report(stores, target)


def _stores(paths) -> dict:
    """``{store name: path}``; one line for a path that is not a store or a name given twice."""
    out = {}
    for p in map(Path, paths):
        if not (p / "zarr.json").exists():
            raise FileNotFoundError(f"no trace store at {p}")
        name = p.name.removesuffix(".zarr")
        if name in out:
            raise ValueError(f"two stores are named {name}: {out[name]} and {p}; analyses tell stores apart by "
                             "name, so rename one")
        out[name] = p
    return out


def _max_batch(mode: str) -> int:
    batches = [int(opts[opts.index("--batch") + 1]) for _, opts in VALIDATE_PROBES[mode].values() if "--batch" in opts]
    return max(batches, default=4)


def _validate(args: argparse.Namespace) -> int:
    from amdm_geom.probes.common import MAX_SEED, OptionError

    from .store import check_output_path

    mode = "quick" if args.quick else "full"
    if args.seed + _max_batch(mode) > MAX_SEED:  # every probe's samples use seed, seed + 1, ...
        raise OptionError("--seed", f"must leave room for {_max_batch(mode)} samples below 2**63 "
                                    f"(seeds seed..seed+{_max_batch(mode) - 1}); got {args.seed}")
    for name in VALIDATE_PROBES[mode]:  # (replaced, but only if they are trace stores)
        check_output_path(Path(args.runs) / f"{name}.zarr", overwrite=True)
    start = time.perf_counter()
    from amdm_geom import probes
    from amdm_geom.analyses import closed_forms

    from .report import write_report
    from .verdicts import format_table, to_json

    report = Path(args.report)
    report.mkdir(parents=True, exist_ok=True)
    print(f"amdm-geom validate ({mode}): closed forms, {len(VALIDATE_PROBES[mode])} probes, analyses", flush=True)
    rows = closed_forms.report(report / "closed_forms", seed=args.seed)
    stores = {}
    for name, (probe, options) in VALIDATE_PROBES[mode].items():
        out = Path(args.runs) / f"{name}.zarr"
        probe_args = _probe_args(probe, [*options, "--seed", str(args.seed), "--out", str(out), "--overwrite",
                                         "--no-progress"])
        t0 = time.perf_counter()
        stores[name] = probes.load(probe).run(probe_args, quiet=True)
        print(f"  probe {name}: {out} ({time.perf_counter() - t0:.1f} s)", flush=True)
    for analysis, names in _ROLES.items():
        chosen = {n: stores[n] for n in names if n in stores}
        t0 = time.perf_counter()
        analysis_name = "trace_checks" if analysis == "trace" else analysis
        rows += run_analysis(analysis_name, chosen, report, quick=args.quick, runs_dir=args.runs)
        print(f"  analysis {analysis_name}: {report / analysis_name} ({time.perf_counter() - t0:.1f} s)", flush=True)
    print()
    print(format_table(rows))
    elapsed = time.perf_counter() - start
    (report / "verdicts.json").write_text(to_json(rows))
    index = write_report(rows, report, context={"mode": mode, "seed": args.seed, "runs": args.runs,
                                                 "seconds": f"{elapsed:.0f}"})
    print(f"\nreport: {index} ({elapsed:.1f} s)")
    if args.json:
        Path(args.json).write_text(to_json(rows))
    return 0


def _probe(args: argparse.Namespace) -> int:
    from amdm_geom import probes

    probes.load(args.probe).run(_probe_args(args.probe, args.probe_args))
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from .verdicts import format_table

    rows = run_analysis(args.analysis, _stores(args.stores), Path(args.out), quick=args.quick)
    print(format_table(rows))
    print(f"\nresults and figures in {Path(args.out) / args.analysis}")
    return 0


def _ecosystem(args: argparse.Namespace) -> int:
    import json

    from .ecosystem import check, format_report

    report = check(args.path_a, args.path_b, prompt=args.prompt, device=args.device, dtype=args.dtype)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps({"verdict": report.verdict, "checks": report.checks,
                                               "proximity": report.proximity, "names": list(report.names)}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from amdm_geom import probes
    from amdm_geom.probes.common import creatable_dir, device_name, existing, seed_int, writable_file

    model_path = existing("pipeline folder or checkpoint file", name="model_path")
    parser = _Parser(
        prog="amdm-geom",
        description="Theory validation and latent geometry for AMDM (aggregation of multiple diffusion models).",
    )
    parser.add_argument("--version", action="version", version=f"amdm-geom {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="run every check, the default probes and the analyses; print the verdicts")
    p.add_argument("--quick", action="store_true", help="smaller probes (under 2 minutes; the tests use it)")
    p.add_argument("--seed", type=seed_int, default=0,
                   help="random seed of the checks and probes, in [0, 2**63) (default 0)")
    p.add_argument("--runs", type=creatable_dir, default="data/runs/validate",
                   help="where the probe stores go (overwritten)")
    p.add_argument("--report", type=creatable_dir, default="data/report",
                   help="where results and figures go (default data/report)")
    p.add_argument("--json", metavar="PATH", type=writable_file,
                   help="also write the verdicts as JSON to PATH (its folder must exist)")
    p.set_defaults(func=_validate)

    listing = "\n".join(f"  {name:22s} {text}" for name, (_, text) in probes.PROBES.items())
    p = sub.add_parser("probe", help="run one probe into a trace store (data/runs/<name>.zarr)",
                       description=f"probes:\n{listing}\n\n'amdm-geom probe NAME --help' lists a probe's options.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("probe", choices=list(probes.PROBES), metavar="NAME", help="the probe to run")
    p.add_argument("probe_args", nargs=argparse.REMAINDER, help="the probe's options")
    p.set_defaults(func=_probe)

    listing = "\n".join(f"  {name:14s} {text}" for name, text in ANALYSES.items())
    p = sub.add_parser("analyze", help="run one analysis on trace stores; results and figures under data/report",
                       description=f"analyses:\n{listing}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("analysis", choices=list(ANALYSES), metavar="ANALYSIS", help="the analysis to run")
    p.add_argument("stores", nargs="*", metavar="STORE", help="trace stores (.zarr folders)")
    p.add_argument("--out", type=creatable_dir, default="data/report", help="report folder (default data/report)")
    p.add_argument("--quick", action="store_true", help="smaller settings where the analysis has them")
    p.set_defaults(func=_analyze)

    p = sub.add_parser("ecosystem", help="are two pipelines one diffusion ecosystem? (VAE, SDE, latent shape, proximity)",
                       description="Compares what Section 3.1 requires of two models (the same VAE by config and "
                                   "weights, the same SDE, the same latent shape) and measures functional proximity "
                                   "|eps_A - eps_B| / |eps_A| over t on random z_t. Local weights only.")
    p.add_argument("path_a", metavar="PATH_A", type=model_path, help="pipeline folder or checkpoint file")
    p.add_argument("path_b", metavar="PATH_B", type=model_path, help="pipeline folder or checkpoint file")
    p.add_argument("--prompt", default="a photograph", help="the prompt both models encode (default 'a photograph')")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:N, mps (default cpu)")
    p.add_argument("--dtype", default="float32", choices=("float16", "float32", "bfloat16"), help="model dtype")
    p.add_argument("--json", metavar="PATH", type=writable_file,
                   help="also write the report as JSON (its folder must exist)")
    p.set_defaults(func=_ecosystem)
    return parser


#: What a user's input can cause: reported as one line with exit code 2, never a traceback.
#: (``ValueError`` includes ``UsageError``, the probes' ``OptionError`` and the store's
#: ``StoreError``.)
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line; a bad option or input is one line on stderr,
    ``amdm-geom COMMAND: error: ...``, exit code 2, before any work or any file is written."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if a in ("validate", "probe", "analyze", "ecosystem")), None)
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        return args.func(args)
    except USER_ERRORS as exc:
        if isinstance(exc, UsageError) and exc.command:
            command = exc.command
        prefix = f"amdm-geom {command}" if command else "amdm-geom"
        print(f"{prefix}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""What every probe shares: the sampler's command-line options (defaults from the paper, App.
F.2: T = 50, s = 20, w = 0.5, eta = 0.3) and running a sampler into a trace store."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from amdm_geom.sampler import AMDMSampler, SamplerConfig
from amdm_geom.store import ZarrRecorder

__all__ = ["DTYPES", "add_sampler_arguments", "run_probe", "sampler_config"]

DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


def _nonneg_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; got {value}")
    return value


def add_sampler_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """The options of Algorithm 1 and of the run, with the paper's defaults."""
    g = parser.add_argument_group("AMDM (Algorithm 1)")
    g.add_argument("--steps", type=int, default=50, help="T, DDIM steps (default 50)")
    g.add_argument("--agg-steps", type=_nonneg_int, default=20, help="s, aggregate the first s steps (default 20)")
    g.add_argument("--agg-window", type=_nonneg_int, nargs=2, metavar=("START", "STOP"),
                   help="aggregate steps [START, STOP) instead of the first s")
    g.add_argument("--w", type=float, nargs="+", default=[0.5], help="weights w_1..w_{N-1} (default 0.5)")
    g.add_argument("--eta", type=float, nargs="+", default=[0.3],
                   help="radial shift of eq. (7), one value or one per model, latent-norm units (default 0.3)")
    g.add_argument("--mix", choices=("slerp", "lerp", "orthogonal_mix"), default="slerp")
    g.add_argument("--shift-mean", choices=("step", "aggregate"), default="step",
                   help="mean of the shift: mu_i(z_t^i) as in Algorithm 1 (step) or mu_i(z') as eq. (7) prints it")
    g.add_argument("--ddim-eta", type=float, default=0.0, help="DDIM eta (0 deterministic, 1 DDPM variance)")
    g.add_argument("--shared-init", action="store_true", help="one z_T for all models (the earlier version)")
    g.add_argument("--continue-after-window", action="store_true",
                   help="models 2..N keep sampling on their own after the window (as Table 5 logs them)")
    g.add_argument("--cross-eps", action="store_true",
                   help="record eps_theta1(z, t, y_i) and eps_thetai(z_t^1, t, y_i) for the delta decomposition "
                        "(two more model calls per partner and step)")
    r = parser.add_argument_group("run")
    r.add_argument("--batch", type=int, default=4, help="samples, one generator each (default 4)")
    r.add_argument("--seed", type=int, default=0, help="first seed; sample b uses seed + b (default 0)")
    r.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="model and store dtype")
    r.add_argument("--out", type=Path, default=Path("data/runs") / f"{name}.zarr", help="trace store path")
    r.add_argument("--overwrite", action="store_true", help="replace an existing store")
    r.add_argument("--names", nargs="+", default=None, metavar="GLOB",
                   help="record only hook names matching these globs (default: all)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def sampler_config(args: argparse.Namespace, n_models: int, **overrides) -> SamplerConfig:
    """A ``SamplerConfig`` from the parsed options (errors are the sampler's one-liners)."""
    eta = args.eta[0] if len(args.eta) == 1 else tuple(args.eta)
    return SamplerConfig(
        num_inference_steps=args.steps, agg_steps=min(args.agg_steps, args.steps),
        agg_window=tuple(args.agg_window) if args.agg_window else None,
        weights=tuple(args.w) if n_models > 1 else (), eta=eta, mix=args.mix, shift_mean=args.shift_mean,
        ddim_eta=args.ddim_eta, shared_init=args.shared_init, continue_after_window=args.continue_after_window,
        record_cross_eps=args.cross_eps, **overrides)


def run_probe(sampler: AMDMSampler, args: argparse.Namespace, *, quiet: bool = False, after=None) -> Path:
    """Run ``sampler`` on ``args.batch`` seeds into ``args.out``; return the store's path.
    ``after(output)`` is called with the ``SampleOutput`` (e.g. to decode images)."""
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1; got {args.batch}")
    recorder = ZarrRecorder(args.out, overwrite=args.overwrite, names_filter=args.names)
    seeds = list(range(args.seed, args.seed + args.batch))
    start = time.perf_counter()
    with sampler.recording(recorder):
        out = sampler.sample(seeds, progress=not (args.no_progress or quiet))
    if not quiet:
        print(f"wrote {args.out} ({recorder.bytes_written / 1e6:.1f} MB, {out.model_calls} model calls, "
              f"{time.perf_counter() - start:.1f} s)")
    if after is not None:
        after(out)
    return Path(args.out)

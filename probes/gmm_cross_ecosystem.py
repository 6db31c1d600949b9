"""Probe: two exact GMM models whose SDEs differ (App. F.3, Table 10), aggregated anyway.

The same fine-grained family as ``gmm_pair``, but model 2 follows another VP schedule
(``--schedule-b``, default cosine): at every t the two models' latents sit at different noise
levels, which is the paper's "different ecosystem" failure. The sampler refuses such a pair
unless told otherwise; this probe opts in.

    amdm-geom probe gmm_cross_ecosystem [--schedule-b cosine|linear] [sampler options]
"""

from __future__ import annotations

import argparse

from amdm_geom.schedules import SCHEDULE_KINDS

from . import gmm_pair
from .common import TRAIN_TIMESTEPS, add_sampler_arguments, run_probe

NAME = "gmm_cross_ecosystem"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    gmm_pair.add_family_arguments(parser)
    parser.add_argument("--schedule-b", choices=sorted(k for k in SCHEDULE_KINDS if k != "scaled_linear"),
                        default="cosine", help="model 2's VP schedule (model 1 keeps SD's scaled-linear)")
    add_sampler_arguments(parser, NAME)


def run(args: argparse.Namespace, quiet: bool = False):
    gmm_pair.check_family_args(args)
    return run_probe(lambda: gmm_pair.build(args, schedule_b=args.schedule_b, allow_mismatch=True), args, quiet=quiet,
                     max_steps=TRAIN_TIMESTEPS)

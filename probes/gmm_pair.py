"""Probe: two exact GMM models of one ecosystem (the fine-grained family at SD latent size).

Model 1 is conditioned on a position, model 2 on a colour; their intersection is the
fine-grained target. Both share the components and the SD 1.x schedule, so they are one
ecosystem by construction; ``--perturb`` moves model 2's means (a "fine-tune").

    amdm-geom probe gmm_pair [--steps 50 --agg-steps 20 --w 0.5 --eta 0.3 ...]
"""

from __future__ import annotations

import argparse

from amdm_geom.denoisers.gmm import fine_grained_family
from amdm_geom.sampler import AMDMSampler

from .common import DTYPES, add_sampler_arguments, run_probe, sampler_config

NAME = "gmm_pair"


def add_family_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("GMM family")
    g.add_argument("--latent-shape", type=int, nargs="+", default=[4, 64, 64], help="per-sample latent shape")
    g.add_argument("--positions", type=int, default=4, help="values of attribute 1 (default 4)")
    g.add_argument("--colours", type=int, default=4, help="values of attribute 2 (default 4)")
    g.add_argument("--separation", type=float, default=8.0, help="distance between components (default 8)")
    g.add_argument("--component-std", type=float, default=0.6, help="per-coordinate component std (default 0.6)")
    g.add_argument("--strength", type=float, default=0.9, help="mass a condition puts on its components")
    g.add_argument("--position", type=int, default=0, help="model 1's condition y1 (default 0)")
    g.add_argument("--colour", type=int, default=0, help="model 2's condition y2 (default 0)")
    g.add_argument("--guidance", type=float, default=1.0, help="guidance scale of both models (default 1)")
    g.add_argument("--perturb", type=float, default=0.0, help="perturb model 2's means by this share of the separation")
    g.add_argument("--family-seed", type=int, default=0, help="seed of the components")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_family_arguments(parser)
    add_sampler_arguments(parser, NAME)


def family(args: argparse.Namespace):
    return fine_grained_family(tuple(args.latent_shape), n_positions=args.positions, n_colours=args.colours,
                               separation=args.separation, component_std=args.component_std,
                               strength=args.strength, seed=args.family_seed)


def build(args: argparse.Namespace, schedule_b: str = "scaled_linear", allow_mismatch: bool = False) -> AMDMSampler:
    fam = family(args)
    dtype = DTYPES[args.dtype]
    m1 = fam.model("scaled_linear", guidance_scale=args.guidance, dtype=dtype, name=f"position={args.position}")
    m2 = fam.model(schedule_b, guidance_scale=args.guidance, dtype=dtype, name=f"colour={args.colour}",
                   perturb=args.perturb)
    conds = [fam.condition(position=args.position), fam.condition(colour=args.colour)]
    config = sampler_config(args, 2, allow_schedule_mismatch=allow_mismatch)
    return AMDMSampler([m1, m2], conds, config)


def run(args: argparse.Namespace, quiet: bool = False):
    return run_probe(build(args), args, quiet=quiet)

"""Probe: two exact GMM models of one ecosystem (the fine-grained family at SD latent size).

Model 1 is conditioned on a position, model 2 on a colour; their intersection is the
fine-grained target. Both share the components and the SD 1.x schedule, so they are one
ecosystem by construction; ``--perturb`` moves model 2's means (a "fine-tune").

    amdm-geom probe gmm_pair [--steps 50 --agg-steps 20 --w 0.5 --eta 0.3 ...]
"""

from __future__ import annotations

import argparse

from .common import (TRAIN_TIMESTEPS, OptionError, add_sampler_arguments, float_in, nonneg_float, nonneg_int,
                     positive_float, positive_int, run_probe, sampler_config, seed_int)

NAME = "gmm_pair"

#: A condition's mass on its components: (0, 1]
strength_float = float_in(0.0, 1.0, low_open=True, name="strength_float")


def add_family_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("GMM family")
    g.add_argument("--latent-shape", type=positive_int, nargs="+", default=[4, 64, 64],
                   help="per-sample latent shape, positive ints (default 4 64 64)")
    g.add_argument("--positions", type=positive_int, default=4, help="values of attribute 1 (default 4)")
    g.add_argument("--colours", type=positive_int, default=4, help="values of attribute 2 (default 4)")
    g.add_argument("--separation", type=nonneg_float, default=8.0, help="distance between components, >= 0 (default 8)")
    g.add_argument("--component-std", type=positive_float, default=0.6,
                   help="per-coordinate component std, > 0 (default 0.6)")
    g.add_argument("--strength", type=strength_float, default=0.9,
                   help="mass a condition puts on its components, in (0, 1] (default 0.9)")
    g.add_argument("--position", type=nonneg_int, default=0, help="model 1's condition y1, < --positions (default 0)")
    g.add_argument("--colour", type=nonneg_int, default=0, help="model 2's condition y2, < --colours (default 0)")
    g.add_argument("--guidance", type=nonneg_float, default=1.0, help="guidance scale of both models, >= 0 (default 1)")
    g.add_argument("--perturb", type=nonneg_float, default=0.0,
                   help="perturb model 2's means by this share of the separation, >= 0 (default 0)")
    g.add_argument("--family-seed", type=seed_int, default=0, help="seed of the components")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_family_arguments(parser)
    add_sampler_arguments(parser, NAME)


def check_family_args(args: argparse.Namespace) -> None:
    """The family options that depend on each other, before anything is built."""
    if args.position >= args.positions:
        raise OptionError("--position", f"must be in [0, --positions) = [0, {args.positions}); got {args.position}")
    if args.colour >= args.colours:
        raise OptionError("--colour", f"must be in [0, --colours) = [0, {args.colours}); got {args.colour}")


def family(args: argparse.Namespace):
    from amdm_geom.denoisers.gmm import fine_grained_family

    return fine_grained_family(tuple(args.latent_shape), n_positions=args.positions, n_colours=args.colours,
                               separation=args.separation, component_std=args.component_std,
                               strength=args.strength, seed=args.family_seed)


def build(args: argparse.Namespace, schedule_b: str = "scaled_linear", allow_mismatch: bool = False):
    import torch

    from amdm_geom.sampling import AMDMSampler

    config = sampler_config(args, 2, allow_schedule_mismatch=allow_mismatch)
    fam = family(args)
    dtype = getattr(torch, args.dtype)
    m1 = fam.model("scaled_linear", guidance_scale=args.guidance, dtype=dtype, name=f"position={args.position}")
    m2 = fam.model(schedule_b, guidance_scale=args.guidance, dtype=dtype, name=f"colour={args.colour}",
                   perturb=args.perturb)
    conds = [fam.condition(position=args.position), fam.condition(colour=args.colour)]
    return AMDMSampler([m1, m2], conds, config)


def run(args: argparse.Namespace, quiet: bool = False):
    check_family_args(args)
    return run_probe(lambda: build(args), args, quiet=quiet, max_steps=TRAIN_TIMESTEPS)

"""Probe: two tiny diffusers UNets (random init, offline) aggregated by AMDM.

``--variant perturbed`` pairs a base UNet with a weight-perturbed copy (a "fine-tune"),
``adapter`` with the base plus a scaled-in additive adapter (both one ecosystem), and
``independent`` with an independently initialised UNet on another schedule (a different
ecosystem: the probe opts in to aggregating it). The conditions are two nearby random prompt
embeddings (fine-grained conditions), ``--cond-distance`` apart.

    amdm-geom probe unet_pair [--variant perturbed --scale 0.05 --sample-size 64] [sampler options]
"""

from __future__ import annotations

import argparse

from .common import (TRAIN_TIMESTEPS, OptionError, add_sampler_arguments, nonneg_float, positive_int, run_probe,
                     sampler_config, seed_int)

NAME = "unet_pair"
#: The variants of ``amdm_geom.denoisers.unet.FAMILY_VARIANTS`` (listed here so that parsing
#: the options does not import diffusers)
VARIANTS = ("perturbed", "adapter", "independent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("tiny UNet family")
    g.add_argument("--variant", choices=VARIANTS, default="perturbed", help="how model 2 relates to model 1")
    g.add_argument("--scale", type=nonneg_float, default=0.05, help="perturbation or adapter scale, >= 0 (default 0.05)")
    g.add_argument("--sample-size", type=positive_int, default=64,
                   help="latent height and width, >= 1 (default 64: SD's 4x64x64)")
    g.add_argument("--channels", type=positive_int, nargs="+", default=[32, 64],
                   help="block_out_channels: two or more even widths (default 32 64)")
    g.add_argument("--guidance", type=nonneg_float, default=3.0, help="classifier-free guidance scale, >= 0 (default 3)")
    g.add_argument("--cond-distance", type=nonneg_float, default=0.1, help="distance between y1 and y2, >= 0 (default 0.1)")
    g.add_argument("--model-seed", type=seed_int, default=0, help="seed of the UNets and conditions")
    add_sampler_arguments(parser, NAME)


def check_family_args(args: argparse.Namespace) -> None:
    """The UNet options, before anything is built."""
    from amdm_geom.denoisers.unet import tiny_unet_config

    if args.dtype != "float32":
        raise OptionError("--dtype", f"unet_pair builds float32 UNets; got {args.dtype}")
    if len(args.channels) < 2:
        raise OptionError("--channels", f"takes two or more block widths; got {' '.join(map(str, args.channels))}")
    if args.model_seed + 1000 >= 2**63:  # the independent variant's second UNet uses model_seed + 1000
        raise OptionError("--model-seed", f"must be < 2**63 - 1000; got {args.model_seed}")
    try:  # (a pure function: widths against heads and norm groups)
        tiny_unet_config(sample_size=args.sample_size, block_out_channels=tuple(args.channels))
    except ValueError as exc:
        raise OptionError("--channels", f"{' '.join(map(str, args.channels))} refused: {exc}") from None


def build(args: argparse.Namespace):
    from amdm_geom.denoisers.unet import condition_pair, tiny_unet_family
    from amdm_geom.sampling import AMDMSampler

    if args.dtype != "float32":
        raise ValueError(f"unet_pair builds float32 UNets; got --dtype {args.dtype}")
    config = sampler_config(args, 2, allow_schedule_mismatch=args.variant == "independent")
    m1, m2 = tiny_unet_family(args.variant, seed=args.model_seed, scale=args.scale, guidance_scale=args.guidance,
                              sample_size=args.sample_size, block_out_channels=tuple(args.channels))
    y1, y2 = condition_pair(args.model_seed, distance=args.cond_distance, dim=m1.cross_attention_dim)
    return AMDMSampler([m1, m2], [y1, y2], config)


def run(args: argparse.Namespace, quiet: bool = False):
    check_family_args(args)
    return run_probe(lambda: build(args), args, quiet=quiet, max_steps=TRAIN_TIMESTEPS)

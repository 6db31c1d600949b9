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

from amdm_geom.denoisers.unet import FAMILY_VARIANTS, condition_pair, tiny_unet_family
from amdm_geom.sampler import AMDMSampler

from .common import add_sampler_arguments, run_probe, sampler_config

NAME = "unet_pair"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("tiny UNet family")
    g.add_argument("--variant", choices=FAMILY_VARIANTS, default="perturbed", help="how model 2 relates to model 1")
    g.add_argument("--scale", type=float, default=0.05, help="perturbation or adapter scale (default 0.05)")
    g.add_argument("--sample-size", type=int, default=64, help="latent height and width (default 64: SD's 4x64x64)")
    g.add_argument("--channels", type=int, nargs="+", default=[32, 64], help="block_out_channels (default 32 64)")
    g.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default 3)")
    g.add_argument("--cond-distance", type=float, default=0.1, help="distance between y1 and y2 (default 0.1)")
    g.add_argument("--model-seed", type=int, default=0, help="seed of the UNets and conditions")
    add_sampler_arguments(parser, NAME)


def build(args: argparse.Namespace) -> AMDMSampler:
    if args.dtype != "float32":
        raise ValueError(f"unet_pair builds float32 UNets; got --dtype {args.dtype}")
    m1, m2 = tiny_unet_family(args.variant, seed=args.model_seed, scale=args.scale, guidance_scale=args.guidance,
                              sample_size=args.sample_size, block_out_channels=tuple(args.channels))
    y1, y2 = condition_pair(args.model_seed, distance=args.cond_distance, dim=m1.cross_attention_dim)
    config = sampler_config(args, 2, allow_schedule_mismatch=args.variant == "independent")
    return AMDMSampler([m1, m2], [y1, y2], config)


def run(args: argparse.Namespace, quiet: bool = False):
    return run_probe(build(args), args, quiet=quiet)

"""Probes: thin scripts, one per experiment family, that build models, run the AMDM sampler
with a recorder and write ``data/runs/<name>.zarr``. Each module has ``add_arguments(parser)``
and ``run(args) -> Path``; ``amdm-geom probe <name> [options]`` fronts them."""

from importlib import import_module

#: probe name -> (module path, one line on what it runs); listing them imports nothing heavy
PROBES = {
    "gmm_pair": ("amdm_geom.probes.gmm_pair", "two exact GMM models of one ecosystem (fine-grained family, SD latent size)"),
    "gmm_cross_ecosystem": ("amdm_geom.probes.gmm_cross_ecosystem", "two exact GMM models whose SDEs differ, aggregated anyway"),
    "unet_pair": ("amdm_geom.probes.unet_pair", "two tiny diffusers UNets (perturbed, adapter or independent pair)"),
    "sd": ("amdm_geom.probes.sd_pair", "AMDM over real Stable Diffusion pipelines from local weights (GLIGEN, IP-Adapter, LoRA)"),
}


def load(name: str):
    """The probe module called ``name`` (one-line error listing the probes otherwise)."""
    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r}; probes are {', '.join(PROBES)}")
    return import_module(PROBES[name][0])

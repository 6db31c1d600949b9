"""amdm-geom: theory validation and latent geometry for AMDM.

AMDM aggregates several diffusion models without training by spherical interpolation of their
latents (eq. 6) followed by a radial shift (eq. 7). This package measures whether the geometry
the paper relies on holds: ``geometry`` (pure tensor math), ``bounds`` (the paper's closed forms
and the exact quantities they bound), ``schedules`` (VP schedules and the DDIM step of eq. 4).
"""

__version__ = "0.1.0"

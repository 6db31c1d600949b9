"""Probe: two exact GMM models of one ecosystem (the fine-grained family at SD latent size).

Model 1 is conditioned on a position, model 2 on a colour; their intersection is the
fine-grained target. Both share the components and the SD 1.x schedule, so they are one
ecosystem by construction; ``--perturb`` moves model 2's means (a "fine-tune").

    amdm-geom probe gmm_pair [--steps 50 --agg-steps 20 --w 0.5 --eta 0.3 ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from amdm_geom.core.spec import SpecError, integer, real
from amdm_geom.models.specs import GMMFamilySpec, GMMModelSpec
from amdm_geom.probes.specs import ProbeSpec, RunSettings, run_probe
from amdm_geom.sampling import AMDMSampler
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["NAME", "SUMMARY", "PairSpec", "Spec", "build", "run"]

NAME = "gmm_pair"
SUMMARY = "two exact GMM models of one ecosystem (fine-grained family, SD latent size)"


class PairSpec(ProbeSpec):
    """Two exact GMM models of the fine-grained family: model 1 conditioned on a position, model 2
    on a colour (the models' fields of ``gmm_pair`` and ``gmm_cross_ecosystem``)."""

    family: GMMFamilySpec = GMMFamilySpec()
    position: Annotated[int, integer(0)] = 0
    """model 1's condition y1, in [0, positions)."""
    colour: Annotated[int, integer(0)] = 0
    """model 2's condition y2, in [0, colours)."""
    guidance: Annotated[float, real(0.0)] = 1.0
    """guidance scale of both models, >= 0."""
    perturb: Annotated[float, real(0.0)] = 0.0
    """perturb model 2's means by this share of the separation, >= 0."""

    def model_b_schedule(self) -> str:
        """Model 2's VP schedule (model 1 keeps SD's scaled-linear)."""
        return "scaled_linear"

    def models(self) -> tuple[GMMModelSpec, GMMModelSpec]:
        """The two models: y1 = position, y2 = colour."""
        return (GMMModelSpec(attribute="position", value=self.position, guidance=self.guidance,
                             name=f"position={self.position}"),
                GMMModelSpec(attribute="colour", value=self.colour, sde=self.model_b_schedule(), guidance=self.guidance,
                             perturb=self.perturb, name=f"colour={self.colour}"))

    def check_models(self) -> None:
        for field, model in zip(("position", "colour"), self.models()):
            try:
                model.check(self.family)
            except SpecError as exc:
                raise SpecError(exc.reason, exc.value, loc=(field,)) from None


class Spec(PairSpec):
    """Two exact GMM models of one ecosystem (the fine-grained family at SD latent size): model 1
    conditioned on a position, model 2 on a colour; --perturb moves model 2's means (a
    "fine-tune")."""

    sampler: SamplerConfig = SamplerConfig()
    run: RunSettings = RunSettings(out=Path("data/runs/gmm_pair.zarr"))


def build(spec: PairSpec):
    """The ``AMDMSampler`` of the two models."""
    fam = spec.family.build()
    built = [m.build(fam, spec.run.torch_dtype()) for m in spec.models()]
    return AMDMSampler([m for m, _ in built], [c for _, c in built], spec.config())


def run(spec: Spec, *, quiet: bool = False) -> Path:
    """Run the probe into ``spec.run.out``."""
    return run_probe(spec, lambda: build(spec), probe=NAME, quiet=quiet)

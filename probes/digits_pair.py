"""Probe: trained models of the digits ecosystem (``amdm_geom.models.digits``) aggregated by AMDM.

By default model 1 is the position fine-tune and model 2 the colour fine-tune, the target
quadrant 0 and colour 0 (red): two fine-tunes of one base, each controlling one aspect, each
conditioned on its own attribute of the target. Any shipped model can take any role
(``--models position_scratch colour`` for the from-scratch control, ``position_linear`` for the
other-schedule one: the probe then aggregates across ecosystems, as Table 10 does; ``--models
position colour digit --digit 3 --w 0.5 0.67`` for three). The final latents are the images: a PNG grid with what
the detectors read is written beside the store (``<out>_images/grid.png``).

    amdm-geom probe digits_pair [--models position colour --position 2 --colour 1] [sampler options]
"""

from __future__ import annotations

from pathlib import Path

from amdm_geom.core.spec import SpecError
from amdm_geom.models.digits.data import SIZE
from amdm_geom.models.digits.detectors import detect
from amdm_geom.models.digits.specs import DigitsSpec
from amdm_geom.probes.specs import ProbeSpec, RunSettings, images_folder, run_probe
from amdm_geom.sampling import AMDMSampler
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["NAME", "SUMMARY", "Spec", "build", "run", "save_grid"]

NAME = "digits_pair"
SUMMARY = "trained digits models (fine-tunes of one base, or the controls) aggregated by AMDM"


class Spec(ProbeSpec):
    """Trained models of the digits ecosystem (pixel-space tiny UNets, v-prediction, x0 clipped),
    each under its own condition, aggregated by AMDM."""

    digits: DigitsSpec = DigitsSpec()
    sampler: SamplerConfig = SamplerConfig()
    run: RunSettings = RunSettings(out=Path("data/runs/digits_pair.zarr"), batch=16)

    @property
    def n_models(self) -> int:
        return len(self.digits.models)

    def latent_shape(self) -> tuple[int, int, int]:
        """The digits models' pixels: 3 x 16 x 16."""
        return (3, SIZE, SIZE)

    def check_models(self) -> None:
        if self.run.dtype != "float32":
            raise SpecError("must be float32: the digits models are float32", self.run.dtype, loc=("run", "dtype"))

    def config(self) -> SamplerConfig:
        if self.digits.mixed_ecosystems() and not self.sampler.allow_schedule_mismatch:  # aggregated anyway
            return self.sampler.replace(allow_schedule_mismatch=True)
        return self.sampler


def build(spec: Spec):
    """The ``AMDMSampler`` of the models."""
    models, conds = spec.digits.build()
    return AMDMSampler(models, conds, spec.config())


def save_grid(images, path: Path, *, columns: int = 8, scale: int = 4) -> Path:
    """A PNG grid of images ``(N, 3, 16, 16)`` in [-1, 1], each enlarged ``scale`` times."""
    import numpy as np
    from PIL import Image

    x = np.clip((np.asarray(images, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
    n, _, h, w = x.shape
    cols = min(columns, n)
    rows = -(-n // cols)
    grid = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1, 3), 0.5)
    for k in range(n):
        r, c = divmod(k, cols)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = x[k].transpose(1, 2, 0)
    img = Image.fromarray((grid * 255).round().astype(np.uint8)).resize(
        (grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def run(spec: Spec, *, quiet: bool = False) -> Path:
    """Run the probe into ``spec.run.out`` and write the image grid beside it."""
    folder = images_folder(spec.run.out)

    def after(out) -> None:
        path = save_grid(out.z0.numpy(), folder / "grid.png")
        read = detect(out.z0)
        (folder / "detected.csv").write_text("seed,position,colour,digit\n" + "".join(
            f"{s},{p},{c},{d}\n" for s, (p, c, d) in zip(out.seeds, read.tolist())))
        if not quiet:
            print(f"images in {path}")

    return run_probe(spec, lambda: build(spec), probe=NAME, quiet=quiet, after=after)

"""What the pipeline probes share (``sd``, ``sd3``): AMDM over one or two diffusers pipelines
from local weights, each model a nested pipeline spec of the probe's kind
(``amdm_geom.models.pipeline_specs``: on the command line ``--model-a.path``,
``--model-a.guidance``, ..., and ``--model-b.*`` for the optional second model), the prompts they
are conditioned on, and the run, which decodes the final latents with model A's VAE into PNG
images beside the store (``<out>_images/seed<seed>.png``).

A pipeline option is a field of its kind's pipeline spec and nothing else: the probe's options,
its JSON and the model it builds follow from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Generic, TypeVar

from amdm_geom.core.spec import PREFIXED, SpecError
from amdm_geom.models.pipeline_specs import PipelineSpec
from amdm_geom.probes.specs import ProbeSpec, images_folder, run_probe
from amdm_geom.sampling import AMDMSampler
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["PairSpec", "build", "run"]

M = TypeVar("M", bound=PipelineSpec)


class PairSpec(ProbeSpec, Generic[M]):
    """One or two pipelines of one kind (``PairSpec[SDPipelineSpec]``) and their prompts."""

    MAX_STEPS: ClassVar[int | None] = None  # (the sampler checks each pipeline's own schedule)

    model_a: Annotated[M, PREFIXED]
    """model 1 (theta_1): its pipeline (folder or checkpoint file) and settings."""
    model_b: Annotated[M | None, PREFIXED] = None
    """model 2 (theta_2): its pipeline and settings; omit for a single-model run."""
    prompt: str
    """prompt of model A (and of model B unless prompt_b)."""
    prompt_b: str | None = None
    """prompt of model B."""
    negative_prompt: str | None = None
    """negative prompt of both models."""

    @property
    def n_models(self) -> int:
        return 1 if self.model_b is None else 2

    def config(self) -> SamplerConfig:
        return self.sampler.replace(weights=()) if self.model_b is None else self.sampler

    def step_kinds(self) -> tuple[str, ...]:
        return tuple(m.STEP_KIND for m, _ in self.models())

    def latent_shape(self) -> tuple[int, int, int] | None:
        """Model A's latent shape from its configs (``PipelineSpec.latent_shape``), or None."""
        return self.model_a.latent_shape()

    def check_models(self) -> None:
        if self.model_b is None and self.prompt_b is not None:
            raise SpecError("needs `model_b.path`", loc=("prompt_b",))

    def models(self) -> list[tuple[PipelineSpec, str]]:
        """``(pipeline spec, prompt)`` of each model; a model without a name is named by its key
        and path (``a: PATH``)."""
        out = []
        for key, model, prompt in (("a", self.model_a, self.prompt), ("b", self.model_b, self.prompt_b or self.prompt)):
            if model is not None:
                out.append((model if model.name else model.replace(name=f"{key}: {model.path}"), prompt))
        return out

    def condition_options(self, model) -> dict:
        """The kind's extra condition options for a built ``model`` (none here)."""
        return {}


def build(spec: PairSpec):
    """The ``AMDMSampler`` over the pipelines (this loads their weights)."""
    models, conds = [], []
    for pipeline, prompt in spec.models():
        model = pipeline.build(spec.run.dtype)
        conds.append(model.condition(prompt, negative_prompt=spec.negative_prompt, **spec.condition_options(model)))
        models.append(model)
    return AMDMSampler(models, conds, spec.config())


def run(spec: PairSpec, make, *, probe: str, quiet: bool = False) -> Path:
    """Run ``make()``'s sampler (a probe's ``build``) into ``spec.run.out`` and decode the final
    latents into PNG images beside it."""
    folder = images_folder(spec.run.out)
    built = []

    def sampler():
        built.append(make())
        return built[0]

    def save_images(out) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for seed, image in zip(out.seeds, built[0].models[0].decode(out.z0)):
            image.save(folder / f"seed{seed}.png")
        if not quiet:
            print(f"decoded {len(out.seeds)} images into {folder}")

    return run_probe(spec, sampler, probe=probe, quiet=quiet, after=save_images)

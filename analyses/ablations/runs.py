"""The ablation runs as specs: each run of ``amdm_geom.analyses.ablations.ablations`` is a ``Spec`` like a
probe's (its models, Algorithm 1's settings, the run), built and run like a probe's, and kept
in its store, so that ``amdm-geom rerun`` repeats any of them bit for bit.

Every model is an exact model of the fine-grained GMM family (``GMMModelSpec``): conditioned on
one attribute's value 0, under SD's VP schedule, another VP schedule, or in VE coordinates.
Model 1's sampled latents (``model0.z_next``) are kept at a few steps (``recorded_steps``), in
float32: about 84 MB a run at full size (256 samples), 3.3 GB for all. (Not float16: the earlier version's
rule inflates the norm by up to sqrt(2) a step and overflows it.) Every run uses the same
per-sample seeds, so comparisons between runs are paired.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from amdm_geom.analyses.common import paired
from amdm_geom.core.spec import SpecError, choice, integer, real, sequence
from amdm_geom.models.specs import GMMFamilySpec, GMMModelSpec
from amdm_geom.sampling import AMDMSampler
from amdm_geom.sampling.config import RunSettings, RunSpec, SamplerConfig
from amdm_geom.store import ZarrRecorder, check_output_path

__all__ = ["FULL", "GROUPS", "NAME", "QUICK", "SUMMARY", "Scale", "Spec", "build", "recorded_steps", "run",
           "run_settings", "settings"]

NAME = "ablation_run"
SUMMARY = "one ablation run: exact GMM models of one family, each on one attribute and SDE"
#: The analysis whose runs these are (a store keeps it as ``attrs["analysis"]``).
ANALYSIS = "ablations"
GROUPS = ("tables12", "figure5", "table3", "table4", "n3", "table10", "variants")


class Spec(RunSpec):
    """One ablation run, one arm of the ablations' paired benchmark (``amdm_geom.analyses.common.paired``):
    which exact GMM models (each conditioned on one attribute, on one SDE), Algorithm 1's settings
    and the run; ``name``, ``group`` and ``label`` place it in the ablations' tables and figures
    (the settings it varies, ``eta``, ``agg_steps``, ``mix``, ..., become the result's coordinates)."""

    name: str
    """the run's name (its store is NAME.zarr)."""
    group: Annotated[Literal[GROUPS], choice(*GROUPS)]
    """the table or figure it belongs to."""
    label: str = ""
    """its label in tables and figures."""
    family: GMMFamilySpec = GMMFamilySpec()
    models: tuple[GMMModelSpec, ...]
    """the models: model 1 first."""
    sampler: SamplerConfig = SamplerConfig()
    run: RunSettings = RunSettings(batch=48, names=("model0.z_next",), overwrite=True, progress=False)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def check_models(self) -> None:
        if not self.models:
            raise SpecError("takes one or more models", self.models, loc=("models",))
        for i, model in enumerate(self.models):
            try:
                model.check(self.family)
            except SpecError as exc:
                raise exc.within("models", str(i)) from None


def recorded_steps(config: SamplerConfig) -> list[int]:
    """The steps whose sampled latent is kept: a few for the deviation, and the last (the output)."""
    T = config.num_inference_steps
    return sorted({1, T // 4, T // 2, 3 * T // 4, T - 1})


class Scale(paired.Scale):
    """The sizes of one ablation set (full or quick)."""

    latent_shape: Annotated[tuple[int, ...], sequence(integer(1), accepted="a shape of ints >= 1", min_len=1)]
    """the latent's shape (channels, height, width)."""
    steps: Annotated[int, integer(2)]
    """T, the sampler's steps."""
    agg_steps: Annotated[int, integer(1)]
    """s, the aggregation steps."""
    batch: Annotated[int, integer(2)]
    """samples per run (every run on the same seeds)."""
    s_grid: Annotated[tuple[int, ...], sequence(integer(1), accepted="ints >= 1", min_len=1)]
    """Figure 5's aggregation steps s."""
    stage_steps: Annotated[int, integer(2)]
    """Table 3's T."""
    stage_window: Annotated[int, integer(1)]
    """Table 3's window length."""
    etas: Annotated[tuple[float, ...], sequence(real(0.0), accepted="finite numbers >= 0", min_len=1)]
    """Table 4's shifts eta."""


# The sample sizes, by power and by time. The target masses are nearly 0 or 1 per sample, so the
# paired sd of a difference between runs is 0.2-0.6 (measured, full validate): resolving a true
# difference of 0.05 at 95% with power 0.8 takes ((1.96 + 0.84) sd / 0.05)^2 = 130-1300 samples
# per arm, more under Bonferroni (amdm_geom.core.stats.n_to_resolve; each verdict prints its own and the
# power its n has, and the report tabulates them). One full-size two-model run of 256 samples
# costs about 5 s to sample and 0.7 s to measure (measured on 2 cores), 3.8 min for the 41 runs:
# 256 is what fits validate's 10 minutes beside the other analyses. It resolves the comparisons
# whose paired sd is up to about 0.3 (Figure 5, Table 4); those that need more are reported
# inconclusive with the n that would decide them. Disk: 5 recorded steps of float32 latents, about
# 84 MB a run, 3.3 GB in all. The quick set: 48 samples (about 16 CPU-s for its 41 runs).
FULL = Scale(latent_shape=(4, 64, 64), steps=50, agg_steps=20, batch=256, s_grid=(5, 10, 20, 30, 50), stage_steps=20,
             stage_window=10, etas=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 2.0, 10.0, 40.0))
QUICK = Scale(latent_shape=(4, 16, 16), steps=20, agg_steps=8, batch=48, s_grid=(2, 8, 20), stage_steps=10,
              stage_window=5, etas=(0.0, 0.3, 40.0))


P, C, S = (GMMModelSpec(attribute=a) for a in ("position", "colour", "style"))


def _grid(sc: Scale, arm) -> list[Spec]:
    """Figure 5's mixing rules over s, Table 3's stages and Table 4's etas (``arm``: the run
    maker of ``settings``)."""
    out = []
    for mix in ("slerp", "lerp", "orthogonal_mix"):
        # the orthogonal mix weighs model 1 by w and model 2 by sqrt(1 - w^2): 1/sqrt(2) weighs them alike
        w = 1 / math.sqrt(2) if mix == "orthogonal_mix" else 0.5
        out += [arm(f"{mix}_s{s}", "figure5", f"{mix}, s = {s}", mix=mix, agg_steps=s, weights=(w,))
                for s in sc.s_grid]
    T3, s3 = sc.stage_steps, sc.stage_window
    for stage, start in (("early", 0), ("middle", (T3 - s3) // 2), ("late", T3 - s3)):
        out.append(arm(f"stage_{stage}", "table3", f"{stage}: steps [{start}, {start + s3}) of {T3}",
                       num_inference_steps=T3, agg_window=(start, start + s3)))
    out += [arm(f"eta_{eta:g}", "table4", f"eta = {eta:g}", eta=eta) for eta in sc.etas]
    return out


def settings(quick: bool = False, *, seed: int = 0, out=Path(".")) -> list[Spec]:
    """Every ablation run, in the order they are reported, into ``out/<name>.zarr``; the family's
    components use ``seed`` and the samples seeds ``1000 seed, 1000 seed + 1, ...``."""
    sc = paired.at_scale(quick, FULL, QUICK)
    two = GMMFamilySpec(latent_shape=sc.latent_shape, seed=seed)
    three = GMMFamilySpec(latent_shape=sc.latent_shape, n_positions=3, n_colours=3, n_styles=3, seed=seed)
    base = SamplerConfig(num_inference_steps=sc.steps, agg_steps=sc.agg_steps)
    run = RunSettings(batch=sc.batch, seed=seed * 1000, names=("model0.z_next",), overwrite=True, progress=False)

    def arm(name: str, group: str, label: str, models=(P, C), family=two, **sampler) -> Spec:
        return Spec(name=name, group=group, label=label, family=family, models=models,
                    sampler=base.replace(**sampler), run=run.replace(out=Path(out) / f"{name}.zarr"))

    return [
        arm("model1", "tables12", "model 1 alone (position)", models=(P,), weights=()),
        arm("model2", "tables12", "model 2 alone (colour)", models=(C,), weights=()),
        arm("amdm", "tables12", "AMDM, model 1 (+model 2)"),
        arm("amdm_swapped", "tables12", "AMDM, model 2 (+model 1)", models=(C, P)),
        *_grid(sc, arm),
        *(arm(f"n3_{m.attribute}", "n3", f"{m.attribute} model alone", models=(m,), family=three, weights=())
          for m in (P, C, S)),
        arm("n3_amdm", "n3", "AMDM of three (w1 = 0.5, w2 = 0.65)", models=(P, C, S), family=three,
            weights=(0.5, 0.65)),
        *(arm(f"cross_{sde}", "table10", f"model 2 on {'VE (EDM-style)' if sde == 've' else sde + ' VP'}",
              models=(P, C.replace(sde=sde)), allow_schedule_mismatch=True) for sde in ("linear", "cosine", "ve")),
        arm("mean_at_aggregate", "variants", "mu at z' (eq. 7 as printed)", shift_mean="aggregate"),
        arm("earlier_eta0.3", "variants", "earlier rule, shared z_T, eta = 0.3", mix="orthogonal_mix",
            shared_init=True),
        arm("earlier_eta40", "variants", "earlier rule, shared z_T, eta = 40", mix="orthogonal_mix", shared_init=True,
            eta=40.0),
    ]


def build(spec: Spec, family=None):
    """The ``AMDMSampler`` of the run (``family``: the built ``spec.family``, if at hand)."""
    fam = spec.family.build() if family is None else family
    built = [m.build(fam) for m in spec.models]
    return AMDMSampler([m for m, _ in built], [c for _, c in built], spec.config())


def run(spec: Spec, *, quiet: bool = True, family=None) -> Path:
    """Run ``spec`` into ``spec.run.out``, keeping model 1's sampled latents at ``recorded_steps``
    and the spec in the store."""
    check_output_path(spec.run.out, spec.run.overwrite)
    sampler = build(spec, family)
    recorder = ZarrRecorder(spec.run.out, names_filter=list(spec.run.names or ()) or None,
                            overwrite=spec.run.overwrite, steps=recorded_steps(spec.sampler),
                            compressor=spec.run.compressor,
                            attrs={"spec": spec.model_dump_json(), "analysis": ANALYSIS})
    with sampler.recording(recorder):
        sampler.sample(spec.run.seeds, progress=spec.run.progress and not quiet, chunk_size=spec.run.chunk)
    return Path(spec.run.out)


def run_settings(out, *, quick: bool = False, seed: int = 0, only=None, progress: bool = False) -> dict[str, Path]:
    """Run every setting (or those named in ``only``) into ``out/<name>.zarr``; returns the paths."""
    paths, families = {}, {}
    for spec in settings(quick, seed=seed, out=out):
        if only is not None and spec.name not in only:
            continue
        if spec.family not in families:
            families[spec.family] = spec.family.build()
        spec = spec.replace(run=spec.run.replace(progress=progress)) if progress else spec
        paths[spec.name] = run(spec, quiet=not progress, family=families[spec.family])
    return paths

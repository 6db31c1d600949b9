"""The digits benchmark's arms as specs: each arm is one method run on shipped digits models
(``amdm_geom.models.digits``) for one batch of samples, every arm on the same seeds and the same
per-sample targets, so that comparisons between arms are paired.

Targets: sample k asks for the k-th (position, colour, digit) of a fixed shuffle of all 160
combinations (``targets``), so every (position, colour) pair is asked about equally often. Each
model is conditioned on the sample's target values of the attributes it was trained on
(``DigitsSpec.condition``): the position fine-tune sees the position, the colour fine-tune the
colour, the digit fine-tune the digit class.

Methods: ``amdm`` (Algorithm 1, ``AMDMSampler``; one model alone is a plain DDIM run) and the
peers of ``amdm_geom.peers``: ``composable`` (Liu et al. 2022's summed guidance),
``superdiff_and`` (Skreta et al. 2024) and ``ula`` (Du et al. 2023's annealed ULA). Every arm
records its final images, what the detectors read, and its network evaluations per sample (a
guided call counts two: the conditional and the unconditional pass). Every model runs at
guidance 1 (conditional, unguided: ``DIGITS_GUIDANCE``); Composable Diffusion's weights are its
guidance, each 1 here, so it sums the two models' conditional directions.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

import numpy as np
from pydantic import model_validator

from amdm_geom import peers
from amdm_geom.analyses.common import paired
from amdm_geom.core.spec import Spec, SpecError, choice, integer, real, sequence
from amdm_geom.models.digits.detectors import detect
from amdm_geom.models.digits.specs import DIGITS_GUIDANCE, DIGITS_MODELS
from amdm_geom.models.digits.targets import conditions, targets
from amdm_geom.sampling import AMDMSampler
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["FULL", "GROUPS", "METHODS", "QUICK", "Arm", "Scale", "arms", "conditions", "run_arm", "targets"]

GROUPS = ("singles", "amdm", "s", "eta", "mix", "stage", "partners", "peers", "n3", "flow", "readings")
METHODS = ("amdm", "composable", "superdiff_and", "ula", "fkc")


class Arm(Spec):
    """One arm of the benchmark (a paired benchmark's arm, ``amdm_geom.analyses.common.paired``): a
    method on shipped models, for ``batch`` samples."""

    name: str
    group: Annotated[Literal[GROUPS], choice(*GROUPS)]
    label: str = ""
    method: Annotated[Literal[METHODS], choice(*METHODS)] = "amdm"
    models: tuple[Literal[DIGITS_MODELS], ...]
    sampler: SamplerConfig = SamplerConfig()
    guidance_scale: Annotated[float, real(0.0)] = DIGITS_GUIDANCE
    """every model's guidance (1: the conditional model; ``DIGITS_GUIDANCE`` says why)."""
    ula_steps: Annotated[int, integer(0)] = 1
    """K, Langevin steps per noise level (``ula`` only; Du et al.'s step size rule of ``amdm_geom.peers``)."""
    particles: Annotated[int, integer(1)] = 2
    """K, particles per sample (``fkc`` only: FKC's product of experts, K N T evaluations per sample)."""
    clip_sample: bool = True
    """x0 clipped to [-1, 1] in each VP model's step (the ecosystem as trained), or not (``False``: the
    variant that takes guidance, as SD's schedulers; ``zoo.load``)."""
    batch: Annotated[int, integer(1)] = 128
    seed: Annotated[int, integer(0)] = 0

    @model_validator(mode="after")
    def _check_method(self):
        if self.method != "amdm" and len(self.models) < 2:
            raise SpecError("composes two or more models", self.models, loc=("models",))
        return self


class Scale(paired.Scale):
    """The benchmark's sizes (full or quick)."""

    batch: Annotated[int, integer(2)]
    """samples per arm (every arm on the same seeds and targets)."""
    steps: Annotated[int, integer(2)]
    """T."""
    agg_steps: Annotated[int, integer(1)]
    """s."""
    s_grid: Annotated[tuple[int, ...], sequence(integer(1), accepted="ints >= 1")]
    """the other aggregation steps s."""
    etas: Annotated[tuple[float, ...], sequence(real(0.0), accepted="finite numbers >= 0")]
    """the shifts eta (0.3 is AMDM's own)."""
    window: Annotated[int, integer(1)]
    """the middle and late aggregation windows' length."""
    proximity_batch: Annotated[int, integer(1)]
    """samples per timestep of the ecosystem check (``ecosystem.check_denoisers``)."""
    readings_batch: Annotated[int, integer(1)]
    """samples of the readings of App. F.3 and eqs. (27)-(28) (``readings.measure``)."""


FULL = Scale(batch=96, steps=20, agg_steps=8, s_grid=(2, 8, 20), etas=(0.0, 0.3, 1.0, 3.0), window=8,
             proximity_batch=32, readings_batch=32)
QUICK = Scale(batch=16, steps=10, agg_steps=4, s_grid=(4, 10), etas=(0.0, 0.3), window=4, proximity_batch=8,
              readings_batch=8)


def arms(quick: bool = False, *, seed: int = 0) -> list[Arm]:
    """Every arm, in the order they are reported (a model alone runs with no weights)."""
    sc = paired.at_scale(quick, FULL, QUICK)
    base = SamplerConfig(num_inference_steps=sc.steps, agg_steps=sc.agg_steps)

    def arm(name: str, group: str, label: str, models: tuple[str, ...], method: str = "amdm", **sampler) -> Arm:
        sampler = {"weights": (), **sampler} if len(models) == 1 else sampler
        return Arm(name=name, group=group, label=label, method=method, models=models, sampler=base.replace(**sampler),
                   batch=sc.batch, seed=seed)

    pc = ("position", "colour")
    T, win = sc.steps, sc.window
    # evaluations per sample (unguided models): ULA (K = 1) N (T + (T - 1)) for N = 2 models, AMDM T_m + s_m
    # (model 2 stops when the window closes), s_m = T_m agg_steps / T
    T_m = round(2 * (2 * T - 1) / (1 + sc.agg_steps / T))
    fpc = ("flow_position", "flow_colour")
    return [
        arm("position", "singles", "position model alone", ("position",)),
        arm("colour", "singles", "colour model alone", ("colour",)),
        arm("amdm", "amdm", "AMDM, position first", pc),
        arm("amdm_swapped", "amdm", "AMDM, colour first", pc[::-1]),
        *(arm(f"amdm_s{s}", "s", f"AMDM, s = {s}", pc, agg_steps=s) for s in sc.s_grid if s != sc.agg_steps),
        *(arm(f"amdm_eta{e:g}", "eta", f"AMDM, eta = {e:g}", pc, eta=e) for e in sc.etas if e != 0.3),
        arm("amdm_lerp", "mix", "lerp", pc, mix="lerp"),
        # eq. (7) as printed: the shift's mean mu_i(z', t, y_i) at the aggregate (one more call per model and step)
        arm("amdm_mean_aggregate", "readings", "AMDM, mu at z' (eq. 7 as printed)", pc, shift_mean="aggregate"),
        *(arm(f"amdm_{stage}", "stage", f"{stage}: steps [{start}, {start + win}) of {T}", pc,
              agg_window=(start, start + win)) for stage, start in (("middle", (T - win) // 2), ("late", T - win))),
        arm("amdm_scratch", "partners", "position model trained from scratch (same ecosystem)",
            ("position_scratch", "colour")),
        arm("position_scratch", "partners", "position model trained from scratch, alone", ("position_scratch",)),
        arm("amdm_linear", "partners", "position model on the linear schedule (another ecosystem)",
            ("position_linear", "colour"), allow_schedule_mismatch=True),
        arm("composable", "peers", "Composable Diffusion (summed guidance)", pc, method="composable"),
        arm("superdiff_and", "peers", "SUPERDIFF AND", pc, method="superdiff_and"),
        arm("ula", "peers", "Du et al. annealed ULA, K = 1", pc, method="ula"),
        arm("fkc", "peers", "FKC product of experts, 2 particles (about ULA's evaluations)", pc, method="fkc"),
        arm("amdm_matched", "peers", f"AMDM with T = {T_m} (about ULA's evaluations)", pc, num_inference_steps=T_m,
            agg_steps=round(T_m * sc.agg_steps / T)),
        arm("digit", "n3", "digit model alone", ("digit",)),
        arm("amdm3", "n3", "AMDM of three (w1 = 0.5, w2 = 2/3)", ("position", "colour", "digit"), weights=(0.5, 2 / 3)),
        # App. G: the flow-matching fine-tunes of one flow base, stepped by diffusers' flow-matching Euler step
        arm("flow_position", "flow", "flow position model alone", fpc[:1]),
        arm("flow_colour", "flow", "flow colour model alone", fpc[1:]),
        arm("flow_amdm", "flow", "AMDM of the flow fine-tunes", fpc),
        arm("flow_amdm_v", "flow", "AMDM of the flow fine-tunes, mu = v (App. G as printed)", fpc,
            shift_mean="velocity"),
        arm("flow_vp", "flow", "AMDM of the VP position and the flow colour model (another ecosystem)",
            ("position", "flow_colour"), allow_schedule_mismatch=True),
    ]


def run_arm(arm: Arm, tgt: np.ndarray | None = None) -> dict:
    """Run ``arm``; returns its final images ``(B, 3, 16, 16)``, what the detectors read
    ``(B, 3)``, model evaluations per sample and the wall time."""
    import torch

    from amdm_geom.models.digits import zoo  # (3 s of imports: only when an arm runs)

    tgt = targets(arm.batch, arm.seed) if tgt is None else tgt
    # the peers take unguided models and guide as their authors do: Composable Diffusion's weights are its
    # guidance, SUPERDIFF AND steps along the guided field with one shared unconditional pass (N + 1 evaluations
    # per step above guidance 1), FKC's product of experts is of the unguided conditional models
    scale = arm.guidance_scale if arm.method in ("amdm", "ula") else 1.0
    guided = arm.guidance_scale > 1
    models = [zoo.load(m, guidance_scale=scale, clip_sample=arm.clip_sample) for m in arm.models]
    conds = [conditions(m, tgt) for m in arm.models]
    seeds = [1000 * arm.seed + k for k in range(arm.batch)]
    steps = arm.sampler.num_inference_steps
    start = time.perf_counter()
    with torch.no_grad():
        if arm.method == "amdm":
            out = AMDMSampler(models, conds, arm.sampler).sample(seeds)
            images, calls = out.z0, out.model_calls * (2 if arm.guidance_scale > 1 else 1)
        else:
            if arm.method == "composable":  # (above guidance 1 the authors' form: one shared unconditional pass)
                out = peers.composable(models, conds, seeds, num_inference_steps=steps, weights=arm.guidance_scale,
                                       **({"null_model": 0} if guided else {}))
            elif arm.method == "superdiff_and":
                out = peers.superdiff_and(models, conds, seeds, num_inference_steps=steps,
                                          guidance_scale=arm.guidance_scale)
            elif arm.method == "fkc":
                out = peers.fkc_product(models, conds, seeds, num_inference_steps=steps, particles=arm.particles)
            else:
                out = peers.du_ula(models, conds, seeds, num_inference_steps=steps, mcmc_steps=arm.ula_steps)
            images, calls = out.z0, out.model_calls_per_sample
    seconds = time.perf_counter() - start
    images = images.detach().to(torch.float32).clamp(-1, 1).numpy()
    return {"images": images, "detected": detect(images), "calls": int(calls), "seconds": seconds}

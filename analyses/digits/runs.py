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
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import model_validator

from amdm_geom.core.spec import Spec, SpecError, choice, integer, real
from amdm_geom.models.digits.specs import DIGITS_GUIDANCE, DIGITS_MODELS, MODEL_ATTRIBUTES
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["FULL", "GROUPS", "METHODS", "QUICK", "Arm", "Scale", "arms", "conditions", "run_arm", "targets"]

GROUPS = ("singles", "amdm", "s", "eta", "mix", "stage", "partners", "peers", "n3", "flow")
METHODS = ("amdm", "composable", "superdiff_and", "ula")


class Arm(Spec):
    """One arm of the benchmark: a method on shipped models, for ``batch`` samples."""

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
    batch: Annotated[int, integer(1)] = 128
    seed: Annotated[int, integer(0)] = 0

    @model_validator(mode="after")
    def _check_method(self):
        if self.method != "amdm" and len(self.models) < 2:
            raise SpecError("composes two or more models", self.models, loc=("models",))
        return self


def targets(batch: int, seed: int = 0) -> np.ndarray:
    """``(batch, 3)`` int64: sample k's (position, colour, digit), the k-th of a seeded shuffle of
    all 4 x 4 x 10 combinations, repeated in blocks of 16 so that every (position, colour)
    pair is asked about equally often in each block of 16 samples."""
    rng = np.random.default_rng([seed, 7])
    pc = np.array([(p, c) for p in range(4) for c in range(4)])
    out = []
    for block in range(-(-batch // 16)):
        order = rng.permutation(16)
        digits = rng.integers(0, 10, 16)
        out.append(np.column_stack([pc[order], digits]))
    return np.concatenate(out)[:batch].astype(np.int64)


def conditions(model: str, tgt: np.ndarray):
    """Model ``model``'s per-sample conditions ``(B, 3)``: the targets' values of its attributes, -1 elsewhere."""
    import torch

    keep = np.array([a in MODEL_ATTRIBUTES[model] for a in ("position", "colour", "digit")])
    return torch.from_numpy(np.where(keep[None, :], tgt, -1))


@dataclass(frozen=True)
class Scale:
    """The benchmark's sizes (full or quick)."""

    batch: int
    steps: int
    agg_steps: int
    s_grid: tuple[int, ...]
    etas: tuple[float, ...]
    window: int


FULL = Scale(128, 20, 8, (2, 8, 20), (0.0, 0.3, 1.0, 3.0), 8)
QUICK = Scale(16, 10, 4, (4, 10), (0.0, 0.3), 4)


def arms(quick: bool = False, *, seed: int = 0) -> list[Arm]:
    """Every arm, in the order they are reported."""
    sc = QUICK if quick else FULL
    base = SamplerConfig(num_inference_steps=sc.steps, agg_steps=sc.agg_steps)
    one = base.replace(weights=())
    pc = ("position", "colour")
    out = [dict(name="position", group="singles", models=("position",), sampler=one, label="position model alone"),
           dict(name="colour", group="singles", models=("colour",), sampler=one, label="colour model alone"),
           dict(name="amdm", group="amdm", models=pc, sampler=base, label="AMDM, position first"),
           dict(name="amdm_swapped", group="amdm", models=pc[::-1], sampler=base, label="AMDM, colour first")]
    out += [dict(name=f"amdm_s{s}", group="s", models=pc, sampler=base.replace(agg_steps=s), label=f"AMDM, s = {s}")
            for s in sc.s_grid if s != sc.agg_steps]
    out += [dict(name=f"amdm_eta{e:g}", group="eta", models=pc, sampler=base.replace(eta=e), label=f"AMDM, eta = {e:g}")
            for e in sc.etas if e != 0.3]
    out.append(dict(name="amdm_lerp", group="mix", models=pc, sampler=base.replace(mix="lerp"), label="lerp"))
    T, win = sc.steps, sc.window
    # evaluations per sample (unguided models): ULA (K = 1) N (T + (T - 1)) for N = 2 models, AMDM T_m + s_m
    # (model 2 stops when the window closes), s_m = T_m agg_steps / T
    T_m = round(2 * (2 * T - 1) / (1 + sc.agg_steps / T))
    for stage, start in (("middle", (T - win) // 2), ("late", T - win)):
        out.append(dict(name=f"amdm_{stage}", group="stage", models=pc,
                        sampler=base.replace(agg_window=(start, start + win)),
                        label=f"{stage}: steps [{start}, {start + win}) of {T}"))
    out += [dict(name="amdm_scratch", group="partners", models=("position_scratch", "colour"), sampler=base,
                 label="position model trained from scratch (same ecosystem)"),
            dict(name="position_scratch", group="partners", models=("position_scratch",), sampler=one,
                 label="position model trained from scratch, alone"),
            dict(name="amdm_linear", group="partners", models=("position_linear", "colour"),
                 sampler=base.replace(allow_schedule_mismatch=True),
                 label="position model on the linear schedule (another ecosystem)"),
            dict(name="composable", group="peers", method="composable", models=pc, sampler=base,
                 label="Composable Diffusion (summed guidance)"),
            dict(name="superdiff_and", group="peers", method="superdiff_and", models=pc, sampler=base,
                 label="SUPERDIFF AND"),
            dict(name="ula", group="peers", method="ula", models=pc, sampler=base,
                 label="Du et al. annealed ULA, K = 1"),
            dict(name="amdm_matched", group="peers", models=pc,
                 sampler=base.replace(num_inference_steps=T_m, agg_steps=round(T_m * sc.agg_steps / T)),
                 label=f"AMDM with T = {T_m} (about ULA's evaluations)"),
            dict(name="digit", group="n3", models=("digit",), sampler=one, label="digit model alone"),
            dict(name="amdm3", group="n3", models=("position", "colour", "digit"),
                 sampler=base.replace(weights=(0.5, 2 / 3)), label="AMDM of three (w1 = 0.5, w2 = 2/3)")]
    # App. G: the flow-matching fine-tunes of one flow base, stepped by diffusers' flow-matching Euler step
    fpc = ("flow_position", "flow_colour")
    out += [dict(name="flow_position", group="flow", models=fpc[:1], sampler=one, label="flow position model alone"),
            dict(name="flow_colour", group="flow", models=fpc[1:], sampler=one, label="flow colour model alone"),
            dict(name="flow_amdm", group="flow", models=fpc, sampler=base, label="AMDM of the flow fine-tunes"),
            dict(name="flow_amdm_v", group="flow", models=fpc, sampler=base.replace(shift_mean="velocity"),
                 label="AMDM of the flow fine-tunes, mu = v (App. G as printed)"),
            dict(name="flow_vp", group="flow", models=("position", "flow_colour"),
                 sampler=base.replace(allow_schedule_mismatch=True),
                 label="AMDM of the VP position and the flow colour model (another ecosystem)")]
    return [Arm(batch=sc.batch, seed=seed, **a) for a in out]


def run_arm(arm: Arm, tgt: np.ndarray | None = None) -> dict:
    """Run ``arm``; returns its final images ``(B, 3, 16, 16)``, what the detectors read
    ``(B, 3)``, model evaluations per sample and the wall time."""
    import torch

    from amdm_geom.models.digits import zoo
    from amdm_geom.models.digits.detectors import detect

    tgt = targets(arm.batch, arm.seed) if tgt is None else tgt
    # Composable Diffusion's weights are its guidance: its models run unguided, each weighted by the scale
    scale = 1.0 if arm.method == "composable" else arm.guidance_scale
    models = [zoo.load(m, guidance_scale=scale) for m in arm.models]
    conds = [conditions(m, tgt) for m in arm.models]
    seeds = [1000 * arm.seed + k for k in range(arm.batch)]
    steps = arm.sampler.num_inference_steps
    start = time.perf_counter()
    with torch.no_grad():
        if arm.method == "amdm":
            from amdm_geom.sampling import AMDMSampler

            out = AMDMSampler(models, conds, arm.sampler).sample(seeds)
            images, calls = out.z0, out.model_calls * (2 if arm.guidance_scale > 1 else 1)
        else:
            from amdm_geom import peers

            if arm.method == "composable":
                out = peers.composable(models, conds, seeds, num_inference_steps=steps, weights=arm.guidance_scale)
            elif arm.method == "superdiff_and":
                out = peers.superdiff_and(models, conds, seeds, num_inference_steps=steps)
            else:
                out = peers.du_ula(models, conds, seeds, num_inference_steps=steps, mcmc_steps=arm.ula_steps)
            images, calls = out.z0, out.model_calls_per_sample
    seconds = time.perf_counter() - start
    images = images.detach().to(torch.float32).clamp(-1, 1).numpy()
    return {"images": images, "detected": detect(images), "calls": int(calls), "seconds": seconds}

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
from amdm_geom.models.digits.specs import DIGITS_GUIDANCE, DIGITS_MODELS, MODEL_ATTRIBUTES
from amdm_geom.sampling import AMDMSampler
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["COMPARISONS", "FULL", "GROUPS", "METHODS", "ORDERS", "QUICK", "Arm", "Grid", "Scale", "arms", "cell_label",
           "conditions", "grid_arms", "grid_pairs", "run_arm", "targets"]

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


FULL = Scale(batch=128, steps=20, agg_steps=8, s_grid=(2, 8, 20), etas=(0.0, 0.3, 1.0, 3.0), window=8,
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


#: The role orders of the grid: which model is model 1 of Algorithm 1 (the position model first is the ``amdm`` arm).
ORDERS = {"position first": ("position", "colour"), "colour first": ("colour", "position")}


class Grid(Spec):
    """The settings over which the benchmark's headline comparisons are decided (``grid_arms``;
    ``amdm_geom.analyses.common.grid``): every T of ``steps`` with its aggregation steps s
    (``s_values``, one tuple per T, over the window up to s = T), every guidance scale of
    ``guidance`` (from 1, the conditional model, to 7.5), both role orders. The reference cell is
    the paper's own setting (App. F.2: T = 50, s = 20, w = 0.5, eta = 0.3; guidance 7.5, the
    issue's "paper's guidance", which App. F.2 does not print), position model first."""

    steps: Annotated[tuple[int, ...], sequence(integer(2), accepted="ints >= 2", min_len=1)] = (20, 50)
    """the values of T."""
    s_values: tuple[tuple[int, ...], ...] = ((2, 8, 20), (5, 20, 50))
    """per T of ``steps``, the aggregation steps s (1 <= s <= T)."""
    guidance: Annotated[tuple[float, ...], sequence(real(1.0), accepted="finite numbers >= 1", min_len=1)] = \
        (1.0, 3.0, 7.5)
    """the guidance scales of every model (1: conditional, unguided)."""
    orders: tuple[Literal[tuple(ORDERS)], ...] = tuple(ORDERS)
    """the role orders (``ORDERS``)."""
    eta: Annotated[float, real(0.0)] = 0.3
    """AMDM's shift (eq. 7), and ``eta_off`` the one it is compared with (0: no shift)."""
    eta_off: Annotated[float, real(0.0)] = 0.0
    weight: Annotated[float, real(0.0, 1.0)] = 0.5
    """w of eq. (6)."""
    reference_steps: Annotated[int, integer(2)] = 50
    reference_s: Annotated[int, integer(1)] = 20
    reference_guidance: Annotated[float, real(1.0)] = 7.5
    reference_order: Annotated[Literal[tuple(ORDERS)], choice(*ORDERS)] = "position first"

    @model_validator(mode="after")
    def _check_grid(self):
        if len(self.s_values) != len(self.steps):
            raise SpecError(f"needs one tuple per T of steps {self.steps}", self.s_values, loc=("s_values",))
        for T, ss in zip(self.steps, self.s_values):
            if not ss or any(not 1 <= s <= T for s in ss):
                raise SpecError(f"must be ints in [1, T] for T = {T}", ss, loc=("s_values",))
        if self.eta == self.eta_off:
            raise SpecError(f"must differ from eta = {self.eta:g}", self.eta_off, loc=("eta_off",))
        ref = (self.reference_steps, self.reference_s, self.reference_guidance, self.reference_order)
        if ref not in {(c["T"], c["s"], c["guidance"], c["order"]) for c in self.cells().values()}:
            raise SpecError("must be a cell of the grid", ref, loc=("reference_steps",))
        return self

    def cells(self) -> dict[str, dict]:
        """Every cell, ``{label: {"T", "guidance", "s", "order"}}``; the label is
        ``T50_g7.5_s20`` (position first) or ``T50_g7.5_s20_swapped``."""
        return {cell_label(T, g, s, o): {"T": T, "guidance": g, "s": s, "order": o}
                for T, ss in zip(self.steps, self.s_values) for g in self.guidance for s in ss for o in self.orders}

    @property
    def reference(self) -> str:
        """The reference cell's label."""
        return cell_label(self.reference_steps, self.reference_guidance, self.reference_s, self.reference_order)


def cell_label(T: int, guidance: float, s: int, order: str = "position first") -> str:
    """``"T50_g7.5_s20"`` (``"..._swapped"`` with the colour model first)."""
    return f"T{T}_g{guidance:g}_s{s}" + ("" if order == "position first" else "_swapped")


def grid_arms(grid: Grid, quick: bool = False, *, seed: int = 0) -> list[Arm]:
    """The arms of every cell of ``grid`` (``Scale``'s batch, ``quick`` or full), named
    ``<arm>@<setting>``: per (T, guidance) the two models alone and the peers (``position@T50_g7.5``);
    per cell (T, guidance, s, order) AMDM (``amdm@T50_g7.5_s20``, or ``amdm_swapped@T50_g7.5_s20``
    with the colour model first), lerp (``amdm_lerp``), the shift ``eta_off`` (``amdm_eta0``) and,
    where 2 s <= T, the middle and late windows of s steps (``amdm_middle``, ``amdm_late``), each
    ``_swapped`` in the other order (``amdm_lerp_swapped@T50_g7.5_s20``). Every arm at w =
    ``weight`` and, but the eta arm, eta = ``grid.eta``; the settings are the specs' fields
    (``paired.arm_dataset`` makes them coordinates), never read from the names."""
    batch = paired.at_scale(quick, FULL, QUICK).batch
    out = []

    def arm(name: str, group: str, label: str, models: tuple[str, ...], g: float, method: str = "amdm",
            **sampler) -> None:
        extra = {"weights": ()} if len(models) == 1 else {"weights": (grid.weight,), "eta": grid.eta}
        out.append(Arm(name=name, group=group, label=label, method=method, models=models, guidance_scale=g,
                       sampler=SamplerConfig(**{**extra, **sampler}), batch=batch, seed=seed))

    for T, ss in zip(grid.steps, grid.s_values):
        for g in grid.guidance:
            at = f"T{T}_g{g:g}"
            for m in ("position", "colour"):
                arm(f"{m}@{at}", "singles", f"{m} model alone, T = {T}, guidance {g:g}", (m,), g,
                    num_inference_steps=T)
            for method in ("composable", "superdiff_and", "ula"):
                arm(f"{method}@{at}", "peers", f"{method}, T = {T}, guidance {g:g}", ORDERS["position first"], g,
                    method=method, num_inference_steps=T)
            for s in ss:
                for o in grid.orders:
                    cell, tail = cell_label(T, g, s), "" if o == "position first" else "_swapped"
                    pc, said = ORDERS[o], f"{o}, T = {T}, guidance {g:g}, s = {s}"
                    common = {"num_inference_steps": T, "agg_steps": s}
                    arm(f"amdm{tail}@{cell}", "amdm", f"AMDM, {said}", pc, g, **common)
                    arm(f"amdm_lerp{tail}@{cell}", "mix", f"AMDM with lerp, {said}", pc, g, mix="lerp", **common)
                    arm(f"amdm_eta{grid.eta_off:g}{tail}@{cell}", "eta", f"AMDM, eta = {grid.eta_off:g}, {said}", pc,
                        g, **common, eta=grid.eta_off)
                    if 2 * s <= T:
                        for stage, start in (("middle", (T - s) // 2), ("late", T - s)):
                            arm(f"amdm_{stage}{tail}@{cell}", "stage", f"AMDM, {stage} window, {said}", pc, g,
                                **common, agg_window=(start, start + s))
    return out


#: The headline comparisons ``grid_pairs`` knows: AMDM against the arm of each (``role order``: position first
#: against colour first, over the cells without the order axis).
COMPARISONS = ("lerp", "eta", "middle", "late", "position", "colour", "composable", "superdiff_and", "ula",
               "role order")


def grid_pairs(grid: Grid, comparison: str) -> tuple[dict[str, tuple[str, str]], dict[str, dict]]:
    """For one headline comparison (``COMPARISONS``), per cell the arms ``(a, b)`` of ``grid_arms``
    compared there (a: AMDM in the cell) and each cell's settings (``grid_verdict``'s ``coords``):
    slerp against ``lerp``, eta against ``eta_off`` (``eta``), the first s steps against the
    ``middle`` or ``late`` window (cells with 2 s <= T), against a model alone or a peer (its arm
    at the cell's T and guidance), and position first against colour first (``role order``: cells
    ``T50_g7.5_s20``, no order axis)."""
    if comparison not in COMPARISONS:
        raise ValueError(f"comparison must be one of {', '.join(COMPARISONS)}; got {comparison!r}")
    pairs, coords = {}, {}
    for cell, c in grid.cells().items():
        T, g, s, o = c["T"], c["guidance"], c["s"], c["order"]
        at, tail = cell_label(T, g, s), "" if o == "position first" else "_swapped"
        if comparison == "role order":
            if o == "position first" and "colour first" in grid.orders:
                pairs[at], coords[at] = (f"amdm@{at}", f"amdm_swapped@{at}"), {"T": T, "guidance": g, "s": s}
            continue
        if comparison in ("middle", "late") and 2 * s > T:
            continue
        b = {"lerp": f"amdm_lerp{tail}@{at}", "eta": f"amdm_eta{grid.eta_off:g}{tail}@{at}",
             "middle": f"amdm_middle{tail}@{at}", "late": f"amdm_late{tail}@{at}"}.get(comparison,
                                                                                    f"{comparison}@T{T}_g{g:g}")
        pairs[cell], coords[cell] = (f"amdm{tail}@{at}", b), c
    return pairs, coords


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

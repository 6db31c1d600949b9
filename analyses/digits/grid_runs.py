"""The digits benchmark's grid of settings (issue: benchmark verdicts that hold across settings):
the arms of every cell (``grid_arms``) and, per headline comparison, the pair of arms compared in
each cell (``grid_pairs``), on either variant of the ecosystem (``ECOSYSTEMS``).

A cell is (T, guidance, s, role order); per (T, guidance) the two models alone and the peers run
once, per cell AMDM and its variants (lerp, the shift ``eta_off``, the middle and late windows of
s steps). The arms are ``runs.Arm`` specs as the benchmark's own (``runs.run_arm`` runs one), so
every comparison is paired by seed and target; the analysis ``digits_grid``
(``grid_benchmark``) runs them and decides each comparison over the grid
(``amdm_geom.analyses.common.grid``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import model_validator

from amdm_geom.analyses.common import paired
from amdm_geom.analyses.digits.runs import FULL, QUICK, Arm
from amdm_geom.core.spec import Spec, SpecError, choice, integer, real, sequence
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["COMPARISONS", "ECOSYSTEMS", "KINDS", "ORDERS", "Grid", "cell_label", "comparisons_of", "grid_arms",
           "grid_pairs"]

#: The ecosystem's two variants (``zoo.load``'s ``clip_sample``): the step's x0 unclipped (the variant that
#: takes guidance, as SD's schedulers) and clipped to [-1, 1] (as trained and shipped).
ECOSYSTEMS = {"unclipped": False, "clipped": True}
#: The kinds of arm a grid can run: the single models, the peers, AMDM and its variants.
KINDS = ("singles", "composable", "superdiff_and", "ula", "amdm", "lerp", "eta", "middle", "late")

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
    ecosystems: tuple[Literal[tuple(ECOSYSTEMS)], ...] = tuple(ECOSYSTEMS)
    """the ecosystem's variants the grid runs on (``ECOSYSTEMS``)."""
    reference_ecosystem: Annotated[Literal[tuple(ECOSYSTEMS)], choice(*ECOSYSTEMS)] = "unclipped"
    """the variant of the reference cell: the one that takes guidance as the paper's models do."""
    kinds: tuple[Literal[KINDS], ...] = KINDS
    """the kinds of arm run (``KINDS``; AMDM always): a smaller set decides fewer comparisons."""

    @model_validator(mode="after")
    def _check_grid(self):
        if len(self.s_values) != len(self.steps):
            raise SpecError(f"needs one tuple per T of steps {self.steps}", self.s_values, loc=("s_values",))
        for T, ss in zip(self.steps, self.s_values):
            if not ss or any(not 1 <= s <= T for s in ss):
                raise SpecError(f"must be ints in [1, T] for T = {T}", ss, loc=("s_values",))
        if self.eta == self.eta_off:
            raise SpecError(f"must differ from eta = {self.eta:g}", self.eta_off, loc=("eta_off",))
        if "amdm" not in self.kinds:
            raise SpecError("must include amdm", self.kinds, loc=("kinds",))
        if not self.ecosystems or self.reference_ecosystem not in self.ecosystems:
            raise SpecError(f"must include the reference ecosystem {self.reference_ecosystem}", self.ecosystems,
                            loc=("ecosystems",))
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


def grid_arms(grid: Grid, quick: bool = False, *, seed: int = 0, ecosystem: str | None = None,
              batch: int | None = None) -> list[Arm]:
    """The arms of every cell of ``grid`` on one variant of the ecosystem (``ECOSYSTEMS``; default
    the reference's), ``batch`` samples each (default ``Scale``'s batch, ``quick`` or full), named
    ``<arm>@<setting>``: per (T, guidance) the two models alone and the peers (``position@T50_g7.5``);
    per cell (T, guidance, s, order) AMDM (``amdm@T50_g7.5_s20``, or ``amdm_swapped@T50_g7.5_s20``
    with the colour model first), lerp (``amdm_lerp``), the shift ``eta_off`` (``amdm_eta0``) and,
    where 2 s <= T, the middle and late windows of s steps (``amdm_middle``, ``amdm_late``), each
    ``_swapped`` in the other order (``amdm_lerp_swapped@T50_g7.5_s20``); only the kinds of
    ``grid.kinds``. Every arm at w = ``weight`` and, but the eta arm, eta = ``grid.eta``; the
    settings are the specs' fields (``paired.arm_dataset`` makes them coordinates), never read
    from the names."""
    ecosystem = grid.reference_ecosystem if ecosystem is None else ecosystem
    if ecosystem not in grid.ecosystems:
        raise ValueError(f"ecosystem must be one of the grid's {', '.join(grid.ecosystems)}; got {ecosystem!r}")
    batch = paired.at_scale(quick, FULL, QUICK).batch if batch is None else batch
    clip, out = ECOSYSTEMS[ecosystem], []

    def arm(kind: str, name: str, group: str, label: str, models: tuple[str, ...], g: float, method: str = "amdm",
            **sampler) -> None:
        if kind not in grid.kinds:
            return
        extra = {"weights": ()} if len(models) == 1 else {"weights": (grid.weight,), "eta": grid.eta}
        out.append(Arm(name=name, group=group, label=f"{label} ({ecosystem})", method=method, models=models,
                       guidance_scale=g, sampler=SamplerConfig(**{**extra, **sampler}), batch=batch, seed=seed,
                       clip_sample=clip))

    for T, ss in zip(grid.steps, grid.s_values):
        for g in grid.guidance:
            at = f"T{T}_g{g:g}"
            for m in ("position", "colour"):
                arm("singles", f"{m}@{at}", "singles", f"{m} model alone, T = {T}, guidance {g:g}", (m,), g,
                    num_inference_steps=T)
            for method in ("composable", "superdiff_and", "ula"):
                arm(method, f"{method}@{at}", "peers", f"{method}, T = {T}, guidance {g:g}",
                    ORDERS["position first"], g, method=method, num_inference_steps=T)
            for s in ss:
                for o in grid.orders:
                    cell, tail = cell_label(T, g, s), "" if o == "position first" else "_swapped"
                    pc, said = ORDERS[o], f"{o}, T = {T}, guidance {g:g}, s = {s}"
                    common = {"num_inference_steps": T, "agg_steps": s}
                    arm("amdm", f"amdm{tail}@{cell}", "amdm", f"AMDM, {said}", pc, g, **common)
                    arm("lerp", f"amdm_lerp{tail}@{cell}", "mix", f"AMDM with lerp, {said}", pc, g, mix="lerp",
                        **common)
                    arm("eta", f"amdm_eta{grid.eta_off:g}{tail}@{cell}", "eta", f"AMDM, eta = {grid.eta_off:g}, "
                        f"{said}", pc, g, **common, eta=grid.eta_off)
                    if 2 * s <= T:
                        for stage, start in (("middle", (T - s) // 2), ("late", T - s)):
                            arm(stage, f"amdm_{stage}{tail}@{cell}", "stage", f"AMDM, {stage} window, {said}", pc,
                                g, **common, agg_window=(start, start + s))
    return out


#: The headline comparisons ``grid_pairs`` knows: AMDM against the arm of each (``role order``: position first
#: against colour first, over the cells without the order axis).
COMPARISONS = ("lerp", "eta", "middle", "late", "position", "colour", "composable", "superdiff_and", "ula",
               "role order")
#: The kind of arm (``KINDS``) each comparison needs beside AMDM.
_NEEDS = {"position": "singles", "colour": "singles", "role order": "amdm"}


def comparisons_of(grid: Grid) -> tuple[str, ...]:
    """The comparisons ``grid``'s kinds of arm can decide (``role order`` needs both orders)."""
    return tuple(c for c in COMPARISONS if _NEEDS.get(c, c) in grid.kinds
                 and (c != "role order" or len(grid.orders) == 2))


def grid_pairs(grid: Grid, comparison: str) -> tuple[dict[str, tuple[str, str]], dict[str, dict]]:
    """For one headline comparison (``COMPARISONS``, one of ``comparisons_of(grid)``), per cell
    the arms ``(a, b)`` of ``grid_arms`` compared there (a: AMDM in the cell) and each cell's
    settings (``grid_verdict``'s ``coords``): slerp against ``lerp``, eta against ``eta_off``
    (``eta``), the first s steps against the ``middle`` or ``late`` window (cells with 2 s <= T),
    against a model alone or a peer (its arm at the cell's T and guidance), and position first
    against colour first (``role order``: cells ``T50_g7.5_s20``, no order axis)."""
    if comparison not in COMPARISONS:
        raise ValueError(f"comparison must be one of {', '.join(COMPARISONS)}; got {comparison!r}")
    if comparison not in comparisons_of(grid):
        raise ValueError(f"comparison {comparison!r} needs arms this grid does not run (kinds: "
                         f"{', '.join(grid.kinds)}; orders: {', '.join(grid.orders)})")
    pairs, coords = {}, {}
    for cell, c in grid.cells().items():
        T, g, s, o = c["T"], c["guidance"], c["s"], c["order"]
        at, tail = cell_label(T, g, s), "" if o == "position first" else "_swapped"
        if comparison == "role order":
            if o == "position first":
                pairs[at], coords[at] = (f"amdm@{at}", f"amdm_swapped@{at}"), {"T": T, "guidance": g, "s": s}
            continue
        if comparison in ("middle", "late") and 2 * s > T:
            continue
        b = {"lerp": f"amdm_lerp{tail}@{at}", "eta": f"amdm_eta{grid.eta_off:g}{tail}@{at}",
             "middle": f"amdm_middle{tail}@{at}", "late": f"amdm_late{tail}@{at}"}.get(comparison,
                                                                                    f"{comparison}@T{T}_g{g:g}")
        pairs[cell], coords[cell] = (f"amdm{tail}@{at}", b), c
    return pairs, coords

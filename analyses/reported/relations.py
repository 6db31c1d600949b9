"""Relations among the paper's printed tables: rows that should agree across tables, values that
repeat where they should differ, and COCO-MIG's averages against their level columns.

Each function takes the tables (``tables.paper_tables``: ``{name: {"values", "bold",
"underline"}}``) and returns one ``Verdict`` of kind "reported numbers". The numbers are printed to
two decimals: one quantity printed twice must print the same digits (compared exactly, up to
float64 rounding: ``SAME``), and a relation that involves rounding (a mean of rounded values) is
allowed half a unit in the last place per rounded term (``HALF``).

The settings behind the rows (App. F.2): InteractDiffusion(+MIGC) and MIGC(+InteractDiffusion)
use T = 50, s = 20, w = 0.5, eta = 0.3 (Algorithm 1, eq. (6) for the Slerp and eq. (7) for the
shift); Table 3 uses T = 20, s = 10; Table 4 varies eta of eq. (7).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linprog

from amdm_geom.core.verdicts import Verdict

__all__ = ["HALF", "ISR", "MIOU", "SAME", "coco_avg_common_weights", "coco_avg_within_levels", "reported",
           "table10_vs_table2", "table3_repeats_main", "table4_default_row", "table4_eta0_clip", "table6_vs_table1",
           "table6_vs_table2"]

#: Two printed numbers that report one quantity agree to this (float64 parsing noise only).
SAME = 1e-9
#: Half a unit in the last printed place (two decimals).
HALF = 0.005
ID, MIGC, ID_MIGC, MIGC_ID = "InteractDiffusion", "MIGC", "InteractDiffusion(+MIGC)", "MIGC(+InteractDiffusion)"
ISR = tuple(f"isr_l{k}" for k in range(2, 7))
MIOU = tuple(f"miou_l{k}" for k in range(2, 7))
COCO = (*ISR, "isr_avg", *MIOU, "miou_avg", "clip_global", "clip_local")
#: The COCO-MIG tables (all on the same 800 layouts, App. F.1).
COCO_TABLES = ("table2", "table4", "table10")


def reported(**fields) -> Verdict:
    """A verdict of kind "reported numbers" in the "reported" family."""
    return Verdict(kind="reported numbers", family="reported", **fields)


def _v(tables, name: str) -> pd.DataFrame:
    return tables[name]["values"]


def _cells(pairs) -> str:
    return "; ".join(f"{where} {a:.2f} vs {b:.2f}" for where, a, b in pairs)


def table6_vs_table1(tables) -> Verdict:
    """Table 6's Default (Full) of the two AMDM rows against Table 1's (one quantity, printed twice)."""
    t1, t6 = _v(tables, "table1"), _v(tables, "table6")
    rows = (ID_MIGC, MIGC_ID)
    diff = {r: float(t6.loc[r, "default_full"] - t1.loc[r, "default_full"]) for r in rows}
    worst = max(abs(d) for d in diff.values())
    swapped = all(abs(t6.loc[a, "default_full"] - t1.loc[b, "default_full"]) <= SAME for a, b in (rows, rows[::-1]))
    status = "violated" if worst > SAME else "holds"
    note = (" Table 6's two cells are Table 1's two, swapped between the rows." if swapped and status == "violated"
            else "")
    t3 = float(_v(tables, "table3").iloc[0]["default_full"])
    cells = _cells((f"{r}: Table 6 / Table 1", t6.loc[r, "default_full"], t1.loc[r, "default_full"]) for r in rows)
    return reported(
        key="reported_table6_default_full_vs_table1", claim="Table 6's Default (Full) = Table 1's",
        where="Tables 1 and 6, Default (Full)", status=status,
        measured=f"max |T6 - T1| {worst:.2f}", bound="0 (same quantity)", value=worst, reference=0.0, n=len(rows),
        test="the same model's HOI Default (Full) printed twice must print the same digits",
        detail=(f"{cells}.{note} Table 3's first row (InteractDiffusion(+MIGC)) prints {t3:.2f}, as Table 1 does, "
                f"and the text's 'even surpasses the original InteractDiffusion' ({t1.loc[ID, 'default_full']:.2f}) "
                f"holds only with Table 1's cells; the printed numbers alone cannot say which table is wrong."),
        extra={"diff": diff, "swapped": bool(swapped)})


def table6_vs_table2(tables) -> Verdict:
    """Table 6's ISR and mIoU averages of the two AMDM rows against Table 2's Avg columns."""
    t2, t6 = _v(tables, "table2"), _v(tables, "table6")
    pairs = [(f"{r} {c}", float(t6.loc[r, c]), float(t2.loc[r, c])) for r in (ID_MIGC, MIGC_ID)
             for c in ("isr_avg", "miou_avg")]
    worst = max(abs(a - b) for _, a, b in pairs)
    return reported(
        key="reported_table6_avgs_vs_table2", claim="Table 6's ISR/mIoU Avg = Table 2's",
        where="Tables 2 and 6, COCO-MIG Avg", status="violated" if worst > SAME else "holds",
        measured=f"max |T6 - T2| {worst:.2f}", bound="0 (same quantity)", value=worst, reference=0.0, n=len(pairs),
        test="the same model's COCO-MIG averages printed twice must print the same digits",
        detail=f"Table 6 vs Table 2: {_cells(pairs)}.")


def table3_repeats_main(tables) -> Verdict:
    """Table 3's first row (T = 20, s = 10) against the T = 50, s = 20 main results (Tables 1-2)."""
    t3 = _v(tables, "table3").iloc[0]
    main = {"isr_avg": float(_v(tables, "table2").loc[ID_MIGC, "isr_avg"]),
            "default_full": float(_v(tables, "table1").loc[ID_MIGC, "default_full"]),
            "fid": float(_v(tables, "table1").loc[ID_MIGC, "fid"])}
    same = [c for c in main if abs(t3[c] - main[c]) <= SAME]
    status = "violated" if len(same) == len(main) else "holds" if not same else "inconclusive"
    why = {"violated": "every cell repeats: either this row is the T = 50, s = 20 run (and the caption's T = 20, "
                       "s = 10 does not apply to it) or its cells were copied; a chance match of all three "
                       "2-decimal cells is implausible",
           "inconclusive": "some cells repeat: a single 2-decimal coincidence is possible, so this decides nothing",
           "holds": "no cell repeats"}[status]
    return reported(
        key="reported_table3_repeats_main", claim="Table 3 (T=20, s=10) differs from Tables 1-2 (T=50, s=20)",
        where="Table 3 row t20->t10; Tables 1-2", status=status,
        measured=f"{len(same)} of {len(main)} cells repeat", bound="0 (different settings)", value=float(len(same)),
        reference=0.0, n=len(main), test="each cell compared with the main results' cell for the same metric",
        detail=(f"Table 3 '{t3.name}' vs InteractDiffusion(+MIGC) in Table 2 (ISR Avg) and Table 1 (Default (Full), "
                f"FID): {_cells((c, t3[c], main[c]) for c in main)}: {why}."),
        extra={"repeated": same})


def table4_default_row(tables) -> Verdict:
    """Table 4's eta = 0.3 row (the default eta, App. F.2) against Table 2's InteractDiffusion(+MIGC) row."""
    t4, t2 = _v(tables, "table4"), _v(tables, "table2")
    row = t4.loc[t4.index.astype(float) == 0.3].iloc[0]
    diff = (row[list(COCO)] - t2.loc[ID_MIGC, list(COCO)]).abs()
    worst = float(diff.max())
    return reported(
        key="reported_table4_default_row", claim="Table 4's eta=0.3 row = Table 2's InteractDiffusion(+MIGC)",
        where="Table 4 eta = 0.3; Table 2", status="violated" if worst > SAME else "holds",
        measured=f"max |diff| {worst:.2f} over {len(COCO)} columns", bound="0 (same setting)", value=worst,
        reference=0.0, n=len(COCO), test="eta = 0.3 is the default (App. F.2): the same run, printed twice",
        detail=("Columns that differ: " + ", ".join(f"{c} {row[c]:.2f} vs {t2.loc[ID_MIGC, c]:.2f}"
                                                     for c in COCO if diff[c] > SAME)
                if worst > SAME else f"All {len(COCO)} columns print the same digits."))


def table4_eta0_clip(tables) -> Verdict:
    """Table 4's eta = 0 row's CLIP against single InteractDiffusion's (Table 2): an aggregated model
    whose ISR and mIoU differ from InteractDiffusion's should not repeat its CLIP cells."""
    t4, t2 = _v(tables, "table4"), _v(tables, "table2")
    row = t4.loc[t4.index.astype(float) == 0.0].iloc[0]
    clip = ("clip_global", "clip_local")
    same = [c for c in clip if abs(row[c] - t2.loc[ID, c]) <= SAME]
    gap = {c: float(row[c] - t2.loc[ID, c]) for c in ("isr_avg", "miou_avg")}
    differs = any(abs(g) > SAME for g in gap.values())
    status = "violated" if differs and len(same) == len(clip) else "holds" if differs else "inconclusive"
    return reported(
        key="reported_table4_eta0_clip", claim="Table 4's eta=0 CLIP differs from InteractDiffusion's",
        where="Table 4 eta = 0; Table 2 InteractDiffusion", status=status,
        measured=f"{len(same)} of {len(clip)} CLIP cells repeat", bound="0 (a different model)",
        value=float(len(same)), reference=0.0, n=len(clip),
        test="CLIP cells compared where the rows' ISR/mIoU Avg show different images",
        detail=(f"{_cells((c, row[c], t2.loc[ID, c]) for c in clip)}, while ISR Avg and mIoU Avg differ by "
                f"{gap['isr_avg']:+.2f} and {gap['miou_avg']:+.2f}: aggregation at eta = 0 (Slerp, eq. (6), no shift) "
                f"changed the images, so both CLIP cells repeating to two decimals is implausible (a copied cell is "
                f"the likelier reading)." if differs else "The rows' ISR/mIoU do not differ: nothing to decide."))


def table10_vs_table2(tables) -> Verdict:
    """Table 10's InteractDiffusion row (the same SD1.4 model, the same benchmark) against Table 2's."""
    t10, t2 = _v(tables, "table10"), _v(tables, "table2")
    diff = (t10.loc[ID, list(COCO)] - t2.loc[ID, list(COCO)]).abs()
    worst = float(diff.max())
    mig = float((t10.loc[MIGC, list(COCO)] - t2.loc[MIGC, list(COCO)]).abs().max())
    return reported(
        key="reported_table10_vs_table2", claim="Table 10's InteractDiffusion row = Table 2's",
        where="Tables 2 and 10, InteractDiffusion", status="violated" if worst > SAME else "holds",
        measured=f"max |diff| {worst:.2f} over {len(COCO)} columns", bound="0 (same model)", value=worst,
        reference=0.0, n=len(COCO), test="one model on one benchmark, printed twice",
        detail=(f"Table 10's MIGC row differs from Table 2's by up to {mig:.2f} (MIGC on EDM sampling there, App. F.3: "
                f"a different model, so no relation is expected)."))


def _levels(tables, metric: str, names=COCO_TABLES):
    """``(labels, L (rows, 5), avg (rows,))`` over the COCO-MIG tables ``names`` for ``metric`` ("isr", "miou")."""
    levels = ISR if metric == "isr" else MIOU
    labels, L, avg = [], [], []
    for name in names:
        v = _v(tables, name)
        for r in v.index:
            labels.append(f"{name} {r}")
            L.append(v.loc[r, list(levels)].to_numpy(np.float64))
            avg.append(float(v.loc[r, f"{metric}_avg"]))
    return labels, np.array(L), np.array(avg)


def coco_avg_within_levels(tables) -> Verdict:
    """COCO-MIG's Avg, a mean over instances (App. F.1): a weighted mean of the level columns, so
    min(L2..L6) <= Avg <= max(L2..L6) up to rounding, per row."""
    margins, unweighted = [], []
    for metric in ("isr", "miou"):
        labels, L, avg = _levels(tables, metric)
        margin = np.minimum(avg - L.min(1), L.max(1) - avg) + 2 * HALF
        margins += [(f"{lab} {metric}", float(m)) for lab, m in zip(labels, margin)]
        unweighted += [(f"{lab} {metric}", float(d)) for lab, d in zip(labels, L.mean(1) - avg)]
    where, worst = min(margins, key=lambda p: p[1])
    big = max(unweighted, key=lambda p: abs(p[1]))
    return reported(
        key="reported_coco_avg_within_levels", claim="COCO-MIG Avg lies within its levels' range",
        where="Tables 2, 4, 10: ISR and mIoU", status="violated" if worst < 0 else "holds",
        measured=f"least margin {worst:.2f} ({where})", bound=">= 0", value=worst, reference=0.0, n=len(margins),
        test="min(L) - 0.01 <= Avg <= max(L) + 0.01 per row (both sides rounded to two decimals)",
        detail=(f"The unweighted mean of the level columns is not the Avg (it is a mean over instances); it differs "
                f"from it by up to {big[1]:+.2f} ({big[0]}), which decides nothing."))


def _chebyshev(L: np.ndarray, avg: np.ndarray) -> tuple[float, np.ndarray]:
    """The least worst-case residual max_r |L_r . w - avg_r| over weights w >= 0, sum w = 1 (an LP)."""
    rows, k = L.shape
    c = np.r_[np.zeros(k), 1.0]
    a_ub = np.r_[np.c_[L, -np.ones(rows)], np.c_[-L, -np.ones(rows)]]
    res = linprog(c, A_ub=a_ub, b_ub=np.r_[avg, -avg], A_eq=[np.r_[np.ones(k), 0.0]], b_eq=[1.0],
                  bounds=[(0, None)] * (k + 1), method="highs")
    if not res.success:
        raise ValueError(f"the weights' linear programme failed: {res.message}")
    return float(res.x[-1]), res.x[:k]


def coco_avg_common_weights(tables) -> Verdict:
    """A GRIM-style test of COCO-MIG's Avg: every row is scored on the same 800 layouts (App. F.1),
    so each Avg (a mean over the same instances) is the same weighted mean of L2..L6 for every row.
    Some weights w >= 0 (sum 1) must reproduce every printed Avg within rounding: 0.005 from the
    levels' rounding (sum w = 1) plus 0.005 from the Avg's own."""
    found, detail = {}, []
    for metric in ("isr", "miou"):
        labels, L, avg = _levels(tables, metric)
        found[metric] = _chebyshev(L, avg)
        ladder = np.arange(2, 7) / 20  # instances per level with equal images per level (800 / 5)
        off = [(lab, float(d)) for lab, d in zip(labels, L @ ladder - avg) if abs(d) > 2 * HALF]
        alone = ", ".join(f"{n} alone {_chebyshev(*_levels(tables, metric, (n,))[1:])[0]:.3f}" for n in COCO_TABLES)
        detail.append(f"{metric}: no weights do better than {found[metric][0]:.3f} ({alone}); the instance weights "
                      f"k/20 (equal images per level) fit {len(labels) - len(off)} of {len(labels)} rows to rounding "
                      f"and miss "
                      + ", ".join(f"{lab} by {d:+.3f}" for lab, d in off))
    worst_metric = max(found, key=lambda m: found[m][0])
    worst = found[worst_metric][0]
    return reported(
        key="reported_coco_avg_common_weights", claim="one weighting of L2..L6 gives every COCO-MIG Avg",
        where="Tables 2, 4, 10: ISR and mIoU Avg", status="violated" if worst > 2 * HALF else "holds",
        measured=f"least worst residual {worst:.3f} ({worst_metric})", bound="<= 0.01 (rounding)", value=worst,
        reference=2 * HALF, n=sum(len(_levels(tables, m)[2]) for m in found),
        test=("Chebyshev fit of Avg by a weighted mean of the levels, weights >= 0 summing to 1 (a linear programme); "
              "assumes every row is scored on the same instances (App. F.1's 800 layouts)"),
        detail="; ".join(detail) + ".",
        extra={f"weights_{m}": [float(w) for w in found[m][1]] for m in found})

"""The text's statements about its tables, and the tables' bold marks, checked on the printed numbers.

Each function takes the tables (``tables.paper_tables``) and returns one ``Verdict`` of kind
"reported numbers". Only directions are checked: the paper gives no sample sizes or intervals, so
its "significant" cannot be tested and no verdict says it is. Rows are compared cell by cell, a
cell better than another where it is larger (or smaller, for FID, time, ln MMD and Var:
``tables.LOWER_IS_BETTER``).
"""

from __future__ import annotations

import pandas as pd

from amdm_geom.analyses.reported.relations import COCO, ID, ID_MIGC, MIGC, MIGC_ID, SAME, reported
from amdm_geom.analyses.reported.tables import LOWER_IS_BETTER
from amdm_geom.core.verdicts import Verdict

__all__ = ["HOI", "bold_best", "bold_improves", "table3_stages", "table4_best", "text_attribute_gain",
           "text_clip_numbers", "text_interaction_surpass", "text_migc_interaction_gain", "text_migc_tradeoff"]

#: Table 1's HOI detection columns (interaction); FID and CLIP are its other columns.
HOI = ("default_full", "default_rare", "known_full", "known_rare")
#: Columns that label a row rather than score it (Table 3's stage bounds, Table 6's single-model time).
NOT_SCORES = frozenset({"start", "end", "time_single_s"})
_NO_SIGNIFICANCE = "'significant' is not checked: the paper prints no sample sizes or intervals."


def gain(col: str, a: float, b: float) -> float:
    """How much ``a`` is better than ``b`` in column ``col`` (negative: worse)."""
    return float(b - a) if col in LOWER_IS_BETTER else float(a - b)


def _scores(values: pd.DataFrame) -> list[str]:
    return [c for c in values.columns if c not in NOT_SCORES]


def _gains(values: pd.DataFrame, row: str, base: str, cols) -> dict[str, float]:
    return {c: gain(c, values.loc[row, c], values.loc[base, c]) for c in cols}


def _ranked(col: str, column: pd.Series) -> pd.Series:
    return column.sort_values(ascending=col in LOWER_IS_BETTER)


def bold_best(tables, name: str) -> Verdict:
    """Where bold marks each column's best (and underline the second; Tables 3, 4, 6, 7): every
    column's best cell is bold and no other is; likewise underline and the second best."""
    parts = tables[name]
    values, wrong, checked = parts["values"], [], 0
    for col in _scores(values):
        ranked = _ranked(col, values[col].dropna())
        for mark, rank in (("bold", 0), ("underline", 1)):
            if not parts[mark].to_numpy().any():
                continue
            target = ranked.iloc[rank]
            want = {r for r in ranked.index if abs(values.loc[r, col] - target) <= SAME}
            have = set(parts[mark].index[parts[mark][col]])
            checked += 1
            if want != have:
                wrong.append(f"{col}: {mark} on {sorted(have) or 'nothing'}, rank {rank + 1} is {sorted(want)} "
                             f"({target:.2f})")
    marks = "bold (best) and underline (second)" if parts["underline"].to_numpy().any() else "bold (best)"
    number = name.removeprefix("table")
    return reported(
        key=f"reported_bold_{name}", claim=f"Table {number}: {marks} match the column ranks",
        where=f"Table {number}", status="violated" if wrong else "holds",
        measured=f"{len(wrong)} of {checked} marked columns wrong", bound="0", value=float(len(wrong)), reference=0.0,
        n=checked, test="per column, the set of marked rows against the set holding the best (second) value",
        detail="; ".join(wrong) + "." if wrong else f"Every mark ({marks}) sits on its column's cell of that rank.")


def bold_improves(tables, name: str) -> Verdict:
    """Tables 1-2: bold marks the aggregated row X(+Y) of the experiment the table is about, each
    bold cell better than its base X's (the reading the text supports, Sec. 4.1: MIGC(+InteractDiffusion)
    on interaction in Table 1, InteractDiffusion(+MIGC) on attributes in Table 2); it is not the
    column's best, which the detail reports."""
    parts = tables[name]
    values, gains, not_best = parts["values"], {}, []
    for row in parts["bold"].index[parts["bold"].any(axis=1)]:
        base = row.split("(+")[0]
        cols = [c for c in _scores(values) if parts["bold"].loc[row, c]]
        gains.update({(row, c): g for c, g in _gains(values, row, base, cols).items()})
        not_best += [f"{c} (best {_ranked(c, values[c]).index[0]} {_ranked(c, values[c]).iloc[0]:.2f})" for c in cols
                     if abs(values.loc[row, c] - _ranked(c, values[c]).iloc[0]) > SAME]
    (worst_row, worst_col), worst = min(gains.items(), key=lambda kv: kv[1])
    number = name.removeprefix("table")
    return reported(
        key=f"reported_bold_{name}", claim=f"Table {number}'s bold row improves on its base everywhere",
        where=f"Table {number}", status="violated" if worst <= 0 else "holds",
        measured=f"least gain {worst:+.2f} ({worst_col})", bound="> 0", value=worst, reference=0.0, n=len(gains),
        test="each bold cell of X(+Y) against X's cell in its column",
        detail=(f"The paper does not say what bold means here; the text discusses each table's aggregated row "
                f"against its base. Read as 'best in column', {len(not_best)} of {len(gains)} bold cells fail: "
                + (", ".join(not_best) if not_best else "none") + "."))


def _direction(key: str, claim: str, where: str, gains: dict[str, float], rows: str, extra_detail: str = ""):
    col, worst = min(gains.items(), key=lambda kv: kv[1])
    return reported(
        key=key, claim=claim, where=where, status="violated" if worst <= 0 else "holds",
        measured=f"least gain {worst:+.2f} ({col})", bound="> 0 in every column", value=worst, reference=0.0,
        n=len(gains), test=f"{rows}, column by column (direction only)",
        detail=(", ".join(f"{c} {g:+.2f}" for c, g in gains.items()) + f". {_NO_SIGNIFICANCE}{extra_detail}"))


def text_attribute_gain(tables) -> Verdict:
    """Sec. 4.1: "all metrics have significantly improved in InteractDiffusion(+MIGC) in attribute
    control" (Table 2, rows 1-2)."""
    return _direction("reported_text_attribute_gain", "InteractDiffusion(+MIGC) improves every Table 2 metric",
                      "Sec. 4.1; Table 2 rows 1-2", _gains(tables["table2"]["values"], ID_MIGC, ID, COCO),
                      "InteractDiffusion(+MIGC) against InteractDiffusion")


def text_interaction_surpass(tables) -> Verdict:
    """Sec. 4.1: InteractDiffusion(+MIGC) "even surpasses the original InteractDiffusion model in
    terms of interaction" (Table 1, last two rows: the HOI columns)."""
    return _direction("reported_text_interaction_surpass", "InteractDiffusion(+MIGC) surpasses it on interaction",
                      "Sec. 4.1; Table 1 rows 3-4", _gains(tables["table1"]["values"], ID_MIGC, ID, HOI),
                      "InteractDiffusion(+MIGC) against InteractDiffusion on the HOI columns")


def text_migc_interaction_gain(tables) -> Verdict:
    """Sec. 4.1: MIGC(+InteractDiffusion) "achieves significant improvements across all metrics in
    interaction capability control" (Table 1, first two rows)."""
    values = tables["table1"]["values"]
    return _direction("reported_text_migc_interaction_gain", "MIGC(+InteractDiffusion) improves every Table 1 metric",
                      "Sec. 4.1; Table 1 rows 1-2", _gains(values, MIGC_ID, MIGC, _scores(values)),
                      "MIGC(+InteractDiffusion) against MIGC")


def text_migc_tradeoff(tables) -> Verdict:
    """Sec. 4.1: MIGC(+InteractDiffusion) incurs "only minor trade-offs in attribute control" (Table 2,
    last two rows). "Minor" has no threshold, so a loss decides nothing, unless it gives up all of
    MIGC's advantage over InteractDiffusion in a column (no reading of "minor" allows that)."""
    values = tables["table2"]["values"]
    loss = {c: -g for c, g in _gains(values, MIGC_ID, MIGC, COCO).items()}
    advantage = _gains(values, MIGC, ID, COCO)
    share = {c: loss[c] / advantage[c] for c in COCO if advantage[c] > 0}
    col, worst = max(share.items(), key=lambda kv: kv[1])
    status = "holds" if max(loss.values()) <= 0 else "violated" if worst >= 1 else "inconclusive"
    biggest = max(loss, key=loss.get)
    return reported(
        key="reported_text_migc_tradeoff", claim="MIGC(+InteractDiffusion)'s attribute trade-off is minor",
        where="Sec. 4.1; Table 2 rows 3-4", status=status,
        measured=f"largest loss {worst:.0%} of MIGC's lead ({col})", bound="< 100% ('minor' is undefined)",
        value=worst, reference=1.0, n=len(share),
        test="loss against MIGC over MIGC's lead on InteractDiffusion, per column; 'minor' has no threshold",
        detail=(f"MIGC(+InteractDiffusion) is below MIGC in {sum(v > 0 for v in loss.values())} of {len(COCO)} "
                f"columns, by up to {loss[biggest]:.2f} ({biggest}); ISR Avg {-loss['isr_avg']:+.2f}, mIoU Avg "
                f"{-loss['miou_avg']:+.2f}. Whether that is 'minor' the printed numbers cannot say."))


def table4_best(tables) -> Verdict:
    """Sec. 4.2: "when the optimization step is set to 0.3, the best performance is achieved across
    all metrics" (Table 4)."""
    values = tables["table4"]["values"]
    best = values.index[values.index.astype(float) == 0.3][0]
    others = values.drop(index=best)
    gains = {c: min(gain(c, values.loc[best, c], others.loc[r, c]) for r in others.index) for c in COCO}
    short = {c: g for c, g in gains.items() if g < -SAME}
    col, worst = min(gains.items(), key=lambda kv: kv[1])
    return reported(
        key="reported_table4_text_best", claim="eta = 0.3 is best in every Table 4 metric", where="Sec. 4.2; Table 4",
        status="violated" if short else "holds", measured=f"least lead {worst:+.2f} ({col})",
        bound=">= 0 in every column", value=worst, reference=0.0, n=len(gains),
        test="the eta = 0.3 row against the best other row, column by column (ties count as best)",
        detail=("Not best at: " + ", ".join(
            f"{c} ({values.loc[best, c]:.2f} vs {_ranked(c, others[c]).iloc[0]:.2f} at eta = "
            f"{_ranked(c, others[c]).index[0]})" for c in short) + "." if short else "Best or tied in every column."))


def table3_stages(tables) -> Verdict:
    """Sec. 4.2: "the best results are achieved when aggregation occurs during the initial stages ...
    especially the final ones ... a noticeable drop" (Table 3): per column, the earliest stage best
    and the latest worst."""
    values = tables["table3"]["values"].sort_values("start", ascending=False)
    first, last = values.index[0], values.index[-1]
    gains = {}
    for c in _scores(values):
        mid = values.index[1:-1]
        gains[c] = min([gain(c, values.loc[first, c], values.loc[r, c]) for r in values.index[1:]]
                       + [gain(c, values.loc[r, c], values.loc[last, c]) for r in mid])
    col, worst = min(gains.items(), key=lambda kv: kv[1])
    return reported(
        key="reported_table3_text_stages", claim="earliest aggregation best, latest worst (Table 3)",
        where="Sec. 4.2; Table 3", status="violated" if worst <= 0 else "holds",
        measured=f"least gap {worst:+.2f} ({col})", bound="> 0 in every column", value=worst, reference=0.0,
        n=len(gains), test=f"per column, row {first} against the later ones, and each against row {last}",
        detail=", ".join(f"{c} {g:+.2f}" for c, g in gains.items()) + ".")


def text_clip_numbers(tables, text, name: str) -> Verdict:
    """App. F.3: the text's "from a to b" (Tables 8, 9) against the table's InteractDiffusion and
    InteractDiffusion(+IP-Adapter) cells, and the gain it states."""
    values = tables[name]["values"]["clip"]
    cells = (float(values[ID]), float(values["InteractDiffusion(+IP-Adapter)"]))
    off = max(abs(t - c) for t, c in zip(text[name], cells))
    ip = float(values["IP-Adapter"])
    closed = (cells[1] - cells[0]) / (ip - cells[0])
    status = "violated" if off > SAME or cells[1] <= cells[0] else "holds"
    number = name.removeprefix("table")
    return reported(
        key=f"reported_text_{name}", claim=f"the text's CLIP numbers = Table {number}'s",
        where=f"App. F.3; Table {number}",
        status=status, measured=f"max |text - table| {off:.3f}", bound="0, and a gain", value=off, reference=0.0,
        n=2, test="the text's 'from a to b' against the table's two cells; b > a",
        detail=(f"Text {text[name][0]:.3f} -> {text[name][1]:.3f}; table {cells[0]:.3f} -> {cells[1]:.3f}, IP-Adapter "
                f"{ip:.3f}: the aggregate closes {closed:.0%} of the gap to IP-Adapter ('nearly reaching' is not "
                f"a threshold). {_NO_SIGNIFICANCE}"))

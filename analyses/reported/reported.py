"""An audit of the paper's reported numbers: its Tables 1-4 and 6-10 against each other and
against its text, as statcheck and the GRIM test recompute a paper's statistics from what it prints.

``compute`` reads the printed tables (``data/reference/table*.csv``, ``tables``) into one Dataset
(no run, no store); ``verdicts`` decides each relation (``relations`` for rows
that should agree across tables, values that repeat where they should differ and COCO-MIG's
averages; ``claims`` for the text's statements and the bold marks) from that Dataset alone;
``plot`` shows the two Default (Full) cells that Tables 1 and 6 swap and the status of every
relation; ``tables`` lists the verdicts' cells. The analysis takes no stores (``stores = "none"``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from amdm_geom.analyses.base import Analysis
from amdm_geom.analyses.reported import claims, relations
from amdm_geom.analyses.reported.tables import from_dataset, paper_tables, to_dataset
from amdm_geom.core.verdicts import Verdict

__all__ = ["CAPTIONS", "NAME", "Reported", "compute", "plot", "tables", "verdicts"]

NAME = "reported"
#: The figures' captions (fnmatch patterns over the figure names, ``amdm_geom.app.runner.output.caption_of``).
CAPTIONS = {
    "default_full_swap": (
        "Tables 1 and 6 print the HOI Default (Full) score of the two AMDM models (InteractDiffusion(+MIGC) and "
        "MIGC(+InteractDiffusion), T = 50, s = 20): the same quantity twice. Each model's two bars should be "
        "equal; the tables print 31.40 and 26.04 for each model, in opposite rows. Table 3's first row (also "
        "InteractDiffusion(+MIGC)) is drawn as a dot."),
    "relation_status": (
        "Every relation among the paper's printed numbers that the audit checks (one row each), coloured by its "
        "status: a relation that is violated is a place where the paper's own tables or text disagree."),
}
#: Okabe and Ito's colour-blind-safe colours (``amdm_geom.core.palette``'s set), the status also written on each bar.
_COLOURS = {"holds": "#009E73", "violated": "#D55E00", "inconclusive": "#BBBBBB", "outside domain": "#56B4E9",
            "vacuous": "#F0E442"}


def compute(stores=None, *, quick: bool = False, seed: int = 0, runs=None) -> xr.Dataset:
    """The paper's printed tables and the text's numbers, as one Dataset (``tables.to_dataset``);
    ``stores``, ``quick``, ``seed`` and ``runs`` change nothing (no run enters the audit)."""
    if stores:
        raise ValueError(f"the reported-numbers audit takes no stores; got {', '.join(map(str, stores))}")
    return to_dataset(paper_tables())


def verdicts(ds: xr.Dataset) -> list[Verdict]:
    """One verdict per relation (``relations``, then ``claims``), from ``compute``'s Dataset alone."""
    t, text = from_dataset(ds)
    return [
        relations.table6_vs_table1(t), relations.table6_vs_table2(t), relations.table3_repeats_main(t),
        relations.table4_default_row(t), relations.table4_eta0_clip(t), relations.table10_vs_table2(t),
        relations.coco_avg_within_levels(t), relations.coco_avg_common_weights(t),
        *(claims.bold_improves(t, name) for name in ("table1", "table2")),
        *(claims.bold_best(t, name) for name in ("table3", "table4", "table6", "table7")),
        claims.text_attribute_gain(t), claims.text_interaction_surpass(t), claims.text_migc_interaction_gain(t),
        claims.text_migc_tradeoff(t), claims.table4_best(t), claims.table3_stages(t),
        *(claims.text_clip_numbers(t, text, name) for name in ("table8", "table9")),
    ]


def plot(ds: xr.Dataset) -> dict:
    """``{"default_full_swap": ..., "relation_status": ...}``."""
    import matplotlib.pyplot as plt

    tabs, _ = from_dataset(ds)
    rows = (relations.ID_MIGC, relations.MIGC_ID)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    x = np.arange(len(rows))
    for i, (name, colour) in enumerate((("table1", "#0072B2"), ("table6", "#E69F00"))):
        vals = [float(tabs[name]["values"].loc[r, "default_full"]) for r in rows]
        bars = ax.bar(x + (i - 0.5) * 0.35, vals, 0.35, color=colour, label=f"Table {name.removeprefix('table')}")
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.plot([0], [float(tabs["table3"]["values"].iloc[0]["default_full"])], "ko", label="Table 3, first row")
    ax.set_xticks(x, rows)
    ax.set_ylabel("HOI Default (Full)")
    ax.set_title("One quantity printed twice: Tables 1 and 6 disagree")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()

    made = verdicts(ds)
    fig2, ax2 = plt.subplots(figsize=(7.2, 0.3 * len(made) + 1.2))
    for i, v in enumerate(made):
        ax2.barh(i, 1, color=_COLOURS[v.status])
        ax2.text(0.02, i, f"{v.key.removeprefix('reported_')}: {v.status}", va="center", fontsize=8, color="black")
    ax2.set_yticks([])
    ax2.set_xticks([])
    ax2.invert_yaxis()
    ax2.set_title("Reported numbers: status of each relation")
    fig2.tight_layout()
    return {"default_full_swap": fig, "relation_status": fig2}


def tables(ds: xr.Dataset) -> dict:
    """``{"relations": one row per verdict (key, status, value, measured, detail)}``."""
    rows = [{"key": v.key, "status": v.status, "value": v.value, "measured": v.measured, "where": v.where,
             "detail": v.detail} for v in verdicts(ds)]
    return {"relations": pd.DataFrame(rows)}


class Reported(Analysis):
    """The paper's printed numbers against each other and its text (``compute``, ``verdicts``,
    ``plot``, ``tables`` above); no store, no run."""

    name, family, captions, stores = NAME, "reported", CAPTIONS, "none"
    summary = "the paper's Tables 1-4 and 6-10 against each other and its text (statcheck/GRIM-style; no run)"
    compute, verdicts, plot, tables = map(staticmethod, (compute, verdicts, plot, tables))


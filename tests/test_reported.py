"""The audit of the paper's reported numbers (``amdm_geom.analyses.reported``): the transcriptions
of Tables 1-4, 6 and 8-10, and for each relation the case that decides its status, built by editing
the printed tables (a Table 6 in Table 1's order holds, the printed one is violated, ...). Expected
values come from the CSVs read with the csv module (tests/recompute_reported.py), not the loader."""

import copy
import itertools
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest

from amdm_geom.analyses.reported import claims, relations
from amdm_geom.analyses.reported.reported import Reported
from amdm_geom.analyses.reported.tables import TEXT, from_dataset, load, paper_tables, to_dataset
from amdm_geom.app.runner.families import FAMILY_IDS
from tests.recompute_reported import RECOMPUTE, num, read

ID, MIGC, ID_MIGC, MIGC_ID = relations.ID, relations.MIGC, relations.ID_MIGC, relations.MIGC_ID

# Row sums of the score cells, added up from the paper's text separately from the CSVs (a second reading).
ROW_SUMS = {
    "table1": {MIGC: 129.67, MIGC_ID: 147.55, ID: 154.07, ID_MIGC: 160.53},
    "table2": {ID: 450.44, ID_MIGC: 687.38, MIGC: 697.45, MIGC_ID: 634.72},
    "table3": {"t20->t10": 104.53, "t15->t5": 99.89, "t10->t0": 109.74},
    "table4": {"0": 666.81, "0.1": 666.39, "0.2": 668.47, "0.3": 687.38, "0.4": 674.50, "0.5": 663.62},
    "table6": {"Du et al. (2023)": 147.00, "Bradley et al. (2025)": 125.66, "Skreta et al. (2025a)": 122.94,
               "Skreta et al. (2025b)": 127.02, ID_MIGC: 144.86, MIGC_ID: 134.27},
    "table8": {ID: 0.533, "InteractDiffusion(+IP-Adapter)": 0.581, "IP-Adapter": 0.588},
    "table9": {ID: 0.545, "InteractDiffusion(+IP-Adapter)": 0.597, "IP-Adapter": 0.613},
    "table10": {ID: 450.44, ID_MIGC: 228.75, MIGC: 733.29},
}


@pytest.fixture(scope="module")
def printed():
    return paper_tables()


@pytest.fixture
def tabs(printed):
    return copy.deepcopy(printed)


def value(tabs, name, row, col):
    return float(tabs[name]["values"].loc[row, col])


def set_cell(tabs, name, row, col, x):
    tabs[name]["values"].loc[row, col] = x


# --------------------------------------------------------------------------------------------
# transcription


@pytest.mark.parametrize("name", sorted(ROW_SUMS))
def test_row_sums_match_a_second_reading_of_the_paper(name):
    got = {r: sum(v for c, v in cells.items() if c not in ("start", "end")) for r, cells in num(name).items()}
    assert got.keys() == ROW_SUMS[name].keys()
    for r, s in ROW_SUMS[name].items():
        assert got[r] == pytest.approx(s, abs=1e-9), (name, r)


def test_cells_and_marks_read_twice():
    assert read("table1")[MIGC_ID]["bold"].split(";") == ["default_full", "default_rare", "known_full",
                                                          "known_rare", "fid", "clip"]
    assert read("table4")["0"]["bold"] == "miou_l2" and read("table4")["0"]["miou_l2"] == "54.76"
    assert read("table6")[ID_MIGC]["underline"] == "default_full" and read("table6")[ID_MIGC]["default_full"] == "26.04"
    assert read("table6")[MIGC_ID]["bold"] == "default_full" and read("table6")[ID_MIGC]["time_single_s"] == "7.5"
    assert read("table3")["t15->t5"] == {"start": "15", "end": "5", "isr_avg": "46.23", "default_full": "26.21",
                                         "fid": "27.45", "bold": ""}
    assert read("table10")[ID_MIGC]["clip_local"] == "13.91" and read("table2")[MIGC]["miou_l6"] == "44.74"


@pytest.mark.parametrize("name", ["table1", "table2", "table3", "table4", "table6", "table8", "table9", "table10"])
def test_loader_agrees_with_the_csv_module(name, printed):
    cells, rows = num(name), read(name)
    frame = printed[name]
    assert list(frame["values"].index) == list(rows)
    for r, row in cells.items():
        for c in frame["values"].columns:
            got = frame["values"].loc[r, c]
            assert (math.isnan(got) and c not in row) or got == row[c], (name, r, c)
        for mark in ("bold", "underline"):
            assert set(frame[mark].columns[frame[mark].loc[r]]) == set(filter(None, rows[r].get(mark, "").split(";")))


def test_dataset_round_trip_and_bad_names(printed, tmp_path):
    back, text = from_dataset(to_dataset(printed))
    assert text == TEXT
    for name, parts in printed.items():
        for key in ("values", "bold", "underline"):
            assert np.array_equal(back[name][key].to_numpy(), parts[key].to_numpy(), equal_nan=True), (name, key)
    with pytest.raises(ValueError, match="table must be one of .*; got 'table5'"):
        load("table5")
    (tmp_path / "table1.csv").write_text("method,fid,bold\nA,1.0,clip\n")
    with pytest.raises(ValueError, match="bold mark names column 'clip', not one of fid"):
        load("table1", tmp_path)


# --------------------------------------------------------------------------------------------
# relations across tables


def test_table6_against_table1(tabs):
    v = relations.table6_vs_table1(tabs)
    t1, t6 = num("table1"), num("table6")
    assert v.status == "violated" and v.extra["swapped"] and v.value == pytest.approx(
        abs(t6[ID_MIGC]["default_full"] - t1[ID_MIGC]["default_full"]))
    for r in (ID_MIGC, MIGC_ID):  # Table 6 in Table 1's order
        set_cell(tabs, "table6", r, "default_full", t1[r]["default_full"])
    assert relations.table6_vs_table1(tabs).status == "holds"
    set_cell(tabs, "table6", MIGC_ID, "default_full", 20.0)  # one row off, not a swap
    off = relations.table6_vs_table1(tabs)
    assert off.status == "violated" and not off.extra["swapped"] and off.value == pytest.approx(26.04 - 20.0)


def test_table6_against_table2(tabs):
    assert relations.table6_vs_table2(tabs).status == "holds"
    set_cell(tabs, "table6", MIGC_ID, "miou_avg", num("table2")[MIGC_ID]["miou_avg"] + 0.01)
    v = relations.table6_vs_table2(tabs)
    assert v.status == "violated" and v.value == pytest.approx(0.01)


def test_table3_first_row_against_the_main_results(tabs):
    assert relations.table3_repeats_main(tabs).status == "violated"
    first = tabs["table3"]["values"].index[0]
    set_cell(tabs, "table3", first, "fid", 19.02)
    one_differs = relations.table3_repeats_main(tabs)
    assert one_differs.status == "inconclusive" and one_differs.value == 2
    set_cell(tabs, "table3", first, "isr_avg", 50.11)
    set_cell(tabs, "table3", first, "default_full", 28.80)
    assert relations.table3_repeats_main(tabs).status == "holds"


def test_table4_default_row(tabs):
    assert relations.table4_default_row(tabs).status == "holds"
    set_cell(tabs, "table4", "0.3", "clip_local", 28.95)
    v = relations.table4_default_row(tabs)
    assert v.status == "violated" and v.value == pytest.approx(0.01) and "clip_local 28.95 vs 28.96" in v.detail


def test_table4_eta0_clip(tabs):
    assert relations.table4_eta0_clip(tabs).status == "violated"
    changed = copy.deepcopy(tabs)
    set_cell(changed, "table4", "0", "clip_local", 27.61)
    assert relations.table4_eta0_clip(changed).status == "holds"
    for c in ("isr_avg", "miou_avg"):  # an eta = 0 row with InteractDiffusion's own averages decides nothing
        set_cell(tabs, "table4", "0", c, value(tabs, "table2", ID, c))
    assert relations.table4_eta0_clip(tabs).status == "inconclusive"


def test_table10_against_table2(tabs):
    assert relations.table10_vs_table2(tabs).status == "holds"
    set_cell(tabs, "table10", ID, "isr_l3", 35.26)
    v = relations.table10_vs_table2(tabs)
    assert v.status == "violated" and v.value == pytest.approx(0.36)


# --------------------------------------------------------------------------------------------
# COCO-MIG averages


def test_average_within_its_levels(tabs):
    v = relations.coco_avg_within_levels(tabs)
    assert v.status == "holds" and v.value == pytest.approx(RECOMPUTE[v.key](None, v.key))
    set_cell(tabs, "table2", MIGC, "isr_avg", value(tabs, "table2", MIGC, "isr_l2") + 0.02)
    bad = relations.coco_avg_within_levels(tabs)
    assert bad.status == "violated" and bad.value == pytest.approx(-0.01)


def test_one_weighting_for_every_average(tabs, rng):
    v = relations.coco_avg_common_weights(tabs)
    assert v.status == "violated" and v.value > 0.01
    metric = "isr" if "(isr)" in v.measured else "miou"
    # the LP's weights achieve its value, and no weights on the simplex do better (random and vertex draws)
    rows = [(tabs[n]["values"].loc[r, [f"{metric}_l{k}" for k in range(2, 7)]].to_numpy(float),
             value(tabs, n, r, f"{metric}_avg")) for n in relations.COCO_TABLES for r in tabs[n]["values"].index]
    L, avg = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    w = np.array(v.extra[f"weights_{metric}"])
    assert w.min() >= -1e-12 and w.sum() == pytest.approx(1) and np.abs(L @ w - avg).max() == pytest.approx(v.value)
    draws = np.vstack([rng.dirichlet(np.ones(5), 20000), np.eye(5)])
    assert np.abs(draws @ L.T - avg).max(axis=1).min() >= v.value - 1e-9
    # every Avg the same weighted mean (rounded to two decimals): holds
    ladder = np.arange(2, 7) / 20
    for n, m in itertools.product(relations.COCO_TABLES, ("isr", "miou")):
        frame = tabs[n]["values"]
        frame[f"{m}_avg"] = np.round(frame[[f"{m}_l{k}" for k in range(2, 7)]].to_numpy() @ ladder, 2)
    fit = relations.coco_avg_common_weights(tabs)
    assert fit.status == "holds" and fit.value <= 0.005 + 1e-9


# --------------------------------------------------------------------------------------------
# bold marks and the text's claims


def test_bold_in_tables_1_and_2_marks_the_improved_row(tabs):
    for name in ("table1", "table2"):
        v = claims.bold_improves(tabs, name)
        assert v.status == "holds" and v.value == pytest.approx(RECOMPUTE[v.key](None, v.key))
    t1 = num("table1")
    not_best = [c for c in t1[MIGC_ID] if t1[MIGC_ID][c] != (min if c == "fid" else max)(r[c] for r in t1.values())]
    assert f"{len(not_best)} of 6 bold cells fail" in claims.bold_improves(tabs, "table1").detail
    set_cell(tabs, "table1", MIGC_ID, "clip", 27.30)  # below MIGC's 27.36
    assert claims.bold_improves(tabs, "table1").status == "violated"


@pytest.mark.parametrize("name", ["table3", "table4", "table6", "table7"])
def test_bold_marks_the_best(tabs, name):
    assert claims.bold_best(tabs, name).status == "holds"
    marks = tabs[name]
    col = marks["values"].columns[0] if name != "table3" else "fid"
    have = marks["bold"][col].copy()
    marks["bold"][col] = ~have  # bold moved off the best cell of one column
    v = claims.bold_best(tabs, name)
    assert v.status == "violated" and v.value == 1


def test_underline_marks_the_second(tabs):
    u = tabs["table6"]["underline"]
    u.loc[[ID_MIGC, "Skreta et al. (2025b)"], "default_full"] = [False, True]  # 23.15 is third
    assert claims.bold_best(tabs, "table6").status == "violated"


def test_text_on_tables_1_and_2(tabs):
    assert claims.text_attribute_gain(tabs).status == "holds"
    assert claims.text_interaction_surpass(tabs).status == "holds"
    assert claims.text_migc_interaction_gain(tabs).status == "holds"
    # with Table 6's cell for InteractDiffusion(+MIGC), "even surpasses" would fail
    swapped = copy.deepcopy(tabs)
    set_cell(swapped, "table1", ID_MIGC, "default_full", num("table6")[ID_MIGC]["default_full"])
    v = claims.text_interaction_surpass(swapped)
    assert v.status == "violated" and v.value == pytest.approx(26.04 - 29.53)
    set_cell(tabs, "table2", ID_MIGC, "clip_local", 27.50)
    assert claims.text_attribute_gain(tabs).status == "violated"
    set_cell(tabs, "table1", MIGC_ID, "fid", 30.60)  # FID: lower is better
    assert claims.text_migc_interaction_gain(tabs).status == "violated"


def test_minor_tradeoff(tabs):
    v = claims.text_migc_tradeoff(tabs)
    assert v.status == "inconclusive" and v.value == pytest.approx(RECOMPUTE[v.key](None, v.key))
    even = copy.deepcopy(tabs)
    even["table2"]["values"].loc[MIGC_ID] = even["table2"]["values"].loc[MIGC]
    assert claims.text_migc_tradeoff(even).status == "holds"
    set_cell(tabs, "table2", MIGC_ID, "isr_avg", value(tabs, "table2", ID, "isr_avg"))  # all of MIGC's lead lost
    gone = claims.text_migc_tradeoff(tabs)
    assert gone.status == "violated" and gone.value == pytest.approx(1.0)


def test_table4_and_table3_text(tabs):
    v = claims.table4_best(tabs)
    assert v.status == "violated" and "miou_l2" in v.detail and v.value == pytest.approx(54.30 - 54.76)
    set_cell(tabs, "table4", "0", "miou_l2", 54.30)  # a tie counts as best
    assert claims.table4_best(tabs).status == "holds"
    assert claims.table3_stages(tabs).status == "holds"
    set_cell(tabs, "table3", "t15->t5", "fid", 50.0)  # a middle stage worse than the last
    assert claims.table3_stages(tabs).status == "violated"


@pytest.mark.parametrize("name", ["table8", "table9"])
def test_text_clip_numbers(tabs, name):
    assert claims.text_clip_numbers(tabs, TEXT, name).status == "holds"
    start, end = TEXT[name]
    v = claims.text_clip_numbers(tabs, {name: (start, end - 0.001)}, name)
    assert v.status == "violated" and v.value == pytest.approx(0.001)


# --------------------------------------------------------------------------------------------
# the analysis


def test_the_analysis_end_to_end():
    a = Reported()
    assert a.family == "reported" and a.family in FAMILY_IDS and a.stores == "none"
    ds = a.compute({})
    made = a.verdicts(ds)
    keys = [v.key for v in made]
    assert len(set(keys)) == len(keys) and set(keys) == set(RECOMPUTE)
    for v in made:
        assert v.kind == "reported numbers" and v.family == "reported" and v.key.startswith("reported_")
        assert math.isclose(v.value, RECOMPUTE[v.key](None, v.key), rel_tol=1e-5, abs_tol=1e-9), v.key
    figs = a.plot(ds)
    assert set(figs) == {"default_full_swap", "relation_status"}
    for f in figs.values():
        plt.close(f)
    assert len(a.tables(ds)["relations"]) == len(made)
    with pytest.raises(ValueError, match="takes no stores; got x"):
        a.compute({"x": None})

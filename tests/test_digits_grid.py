"""The digits benchmark over a grid (analysis ``digits_grid``): its sizes, its arms, its verdicts on
outcomes built to decide each way (the full grid's shape, without running its 372 arms), the
command's ``--grid`` and a quick run on the shipped models."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from amdm_geom.analyses.digits import grid_benchmark as gb  # noqa: E402
from amdm_geom.analyses.digits import grid_runs  # noqa: E402


def _fake_run(amdm_rate: dict, other_rate: float = 0.5):
    """A stand-in for running the arms: per-sample successes drawn at a known rate (AMDM position
    first at ``amdm_rate[clip]``, every other arm at ``other_rate``), detected values consistent."""

    def run(plan, tgt, workers, progress, desc):
        out = {}
        for k, arm in enumerate(plan):
            rng = np.random.default_rng(k)
            first = arm.name.startswith("amdm@")
            rate = amdm_rate[arm.clip_sample] if first else other_rate
            success = (rng.random(len(tgt)) < rate).astype(np.float64)
            detected = tgt.copy()
            detected[success == 0, 0] = (tgt[success == 0, 0] + 1) % 4
            out[arm.name] = {"detected": detected, "success": success, "success_triple": success,
                             "calls": np.int64(2 * arm.sampler.num_inference_steps), "seconds": 0.0}
        return out

    return run


def test_full_grid_verdicts_name_the_cells_that_go_each_way(monkeypatch, tmp_path):
    # AMDM (position first) always succeeds on the unclipped variant and never on the clipped one; every other
    # arm succeeds half the time: against any other arm, AMDM wins in every unclipped cell and loses in every
    # clipped one, so each comparison with a position-first AMDM is setting-dependent, split by the variant.
    monkeypatch.setattr(gb, "_run", _fake_run({False: 1.0, True: 0.0}))
    tree = gb.compute(grid=True, workers=1)
    g = gb.FULL_GRID
    assert tree.attrs["size"] == "grid" and tree.attrs["batch"] == 128
    assert sorted(tree.children) == ["clipped", "unclipped"]
    assert tree["unclipped"].sizes["arm"] == tree["clipped"].sizes["arm"] == 186
    rows = {v.key: v for v in gb.verdicts(tree)}
    assert set(rows) == {gb.CLAIMS[c][0] for c in ("better single", *grid_runs.COMPARISONS)}
    for key in ("digits_grid_vs_position", "digits_grid_vs_ula", "digits_grid_slerp_lerp", "digits_grid_eta"):
        v = rows[key]
        cells = v.extra["grid"]["cells"]
        assert v.status == "setting-dependent", key
        first = [c for c in cells if "_swapped" not in c["cell"]]
        assert {c["decision"] for c in first if c["ecosystem"] == "unclipped"} == {"holds"}
        assert {c["decision"] for c in first if c["ecosystem"] == "clipped"} == {"violated"}
        assert v.extra["grid"]["reference_cell"] == "T50_g7.5_s20@unclipped"
    # the cells: (T, s) x guidance x order x variant, the windows only where 2 s <= T
    assert len(rows["digits_grid_vs_position"].extra["grid"]["cells"]) == 6 * 3 * 2 * 2
    assert len(rows["digits_grid_stage_late"].extra["grid"]["cells"]) == 4 * 3 * 2 * 2
    assert len(rows["digits_grid_role_order"].extra["grid"]["cells"]) == 6 * 3 * 2
    assert rows["digits_grid_role_order"].kind == "finding" and rows["digits_grid_vs_position"].kind == "paper claim"
    # the better single model is, per cell, whichever single arm has the higher mean there
    better = rows["digits_grid_vs_better_single"].extra["grid"]["arms"]
    ds = tree["unclipped"].to_dataset()
    for cell, (a, b) in better.items():
        if cell.endswith("@unclipped"):
            other = b.replace("position@", "colour@") if b.startswith("position@") else b.replace("colour@",
                                                                                                 "position@")
            assert float(ds.success.sel(arm=b).mean()) >= float(ds.success.sel(arm=other).mean())
    figs = gb.plot(tree)
    assert set(figs) == {f"grid_{k.removeprefix('digits_grid_')}" for k in rows} | {"success_vs_guidance"}
    panels = [ax.get_title() for ax in figs["grid_vs_position"].axes if ax.get_title()]
    assert len(panels) == 2 * 2 * 2  # T x order x variant
    tables = gb.tables(tree)
    assert len(tables["grid_success"]) == 2 * 186 and set(tables["grid_cells"].comparison) == set(rows)
    for fig in figs.values():
        plt.close(fig)
    assert g.reference == "T50_g7.5_s20"


def test_the_subset_runs_what_validate_can_afford_and_says_so():
    arms = grid_runs.grid_arms(gb.SUBSET, batch=gb.BATCH["subset"])
    names = sorted(a.name for a in arms)
    # the reference cell: 2 singles, composable, superdiff_and; position first: AMDM, lerp, eta 0
    assert len(names) == 4 + 3 and not any(n.startswith(("ula", "amdm_middle", "amdm_late")) for n in names)
    assert all(not a.clip_sample and a.batch == 48 and a.models[0] == "position" for a in arms if len(a.models) == 2)
    assert grid_runs.comparisons_of(gb.SUBSET) == ("lerp", "eta", "position", "colour", "composable",
                                                     "superdiff_and")
    with pytest.raises(ValueError, match="needs arms this grid does not run"):
        grid_runs.grid_pairs(gb.SUBSET, "ula")
    clipped = grid_runs.grid_arms(gb.FULL_GRID, ecosystem="clipped")
    assert all(a.clip_sample for a in clipped)
    with pytest.raises(ValueError, match="ecosystem must be one of"):
        grid_runs.grid_arms(gb.SUBSET, ecosystem="clipped")


def test_a_bad_grid_or_size_is_refused_in_one_line():
    from amdm_geom.core.spec import SpecError

    for kwargs, said in (({"kinds": ("singles",)}, "must include amdm"),
                         ({"ecosystems": ("clipped",)}, "must include the reference ecosystem unclipped")):
        with pytest.raises(SpecError) as err:
            grid_runs.Grid(**kwargs)
        assert said in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="--grid and --quick"):
        gb.compute(quick=True, grid=True)


@pytest.mark.parametrize("args, said", [
    (["norm_angle", "--grid"], "analysis norm_angle has no full grid (--grid); the analyses with one: "),
    (["digits_grid", "--grid", "--quick"], "--grid and --quick ask for different sizes"),
])
def test_the_command_refuses_grid_where_there_is_none(tmp_path, capsys, args, said):
    from amdm_geom.app import cli

    assert cli.main(["analyze", *args, "--out", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and said in lines[0]
    assert "digits_grid" in lines[0] or "--quick" in lines[0]
    assert not (tmp_path / "out" / "digits_grid").exists()


def test_quick_grid_on_the_shipped_models_is_paired_and_counts_evaluations():
    tree = gb.compute(quick=True)
    ds = tree["unclipped"].to_dataset()
    g = gb.QUICK_GRID
    assert set(ds.arm.values) == {a.name for a in grid_runs.grid_arms(g, quick=True)}
    # success is what the detectors read against the targets (recomputed here from the stored readings)
    hit = (ds.detected.sel(attribute=["position", "colour"]) == ds.target.sel(attribute=["position", "colour"]))
    np.testing.assert_array_equal(hit.all("attribute").astype(float).values, ds.success.values)
    # evaluations: a guided model costs two per step; AMDM's second model stops when its window closes
    T, s = g.steps[0], g.s_values[0][0]
    assert int(ds.calls.sel(arm="position@T10_g1")) == T and int(ds.calls.sel(arm="position@T10_g3")) == 2 * T
    assert int(ds.calls.sel(arm="amdm@T10_g3_s4")) == 2 * (T + s)
    rows = gb.verdicts(tree)
    assert {v.key for v in rows} == {"digits_grid_vs_better_single", "digits_grid_vs_position",
                                     "digits_grid_vs_colour", "digits_grid_slerp_lerp", "digits_grid_role_order"}
    assert all("quick grid: 16 samples per arm" in v.detail for v in rows)

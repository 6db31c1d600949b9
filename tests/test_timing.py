"""Table 6's timing: the paper's times against Algorithm 1's evaluation count, solved here as a
linear system (an independent route), and the toolkit's own timing run's evaluation counts."""

import numpy as np
import pytest

from amdm_geom.analyses.ablations import timing


def test_what_the_papers_times_imply():
    # time = F + c * calls, with 50 calls (single model) and 50 + 20 (AMDM, s = 20 of T = 50)
    F, c = np.linalg.solve([[1.0, 50.0], [1.0, 70.0]], [7.5, 8.8])
    got = timing.implied(**timing.PAPER)
    assert got["time_ratio"] == pytest.approx(8.8 / 7.5)
    assert got["calls_ratio"] == pytest.approx(70 / 50)
    assert got["per_call_ratio"] == pytest.approx(c / (7.5 / 50), rel=1e-12)  # 0.433
    assert got["fixed_share"] == pytest.approx(F / 7.5, rel=1e-12)  # 0.567
    # an AMDM time of exactly 1.4 x the single model's implies equal per-call cost and no fixed cost
    even = timing.implied(time_amdm=10.5, time_single=7.5, T=50, s=20)
    assert even["per_call_ratio"] == pytest.approx(1.0) and even["fixed_share"] == pytest.approx(0.0, abs=1e-12)


def test_table6s_three_rows_read_two_ways():
    # Table 6: single model (InteractDiffusion) 7.5 s; InteractDiffusion(+MIGC) 8.8 s; MIGC(+InteractDiffusion) 9.4 s;
    # Algorithm 1 calls model 1 at T = 50 steps and model 2 at the first s = 20
    got = timing.readings(8.8, 7.5, 9.4, 50, 20)
    # no fixed cost: two rows, two unknowns (c_I, c_M); the third row is a prediction
    c_I, c_M = np.linalg.solve([[50.0, 0.0], [50.0, 20.0]], [7.5, 8.8])
    assert got["predicted_swapped"] == pytest.approx(50 * c_M + 20 * c_I)  # 6.25 s, not 9.4
    assert got["swapped_error"] == pytest.approx(9.4 - 6.25) and got["swapped_error"] > got["swapped_tolerance"]
    # one fixed cost per image: three rows, three unknowns (F, c_I, c_M)
    F, c_I, c_M = np.linalg.solve([[1.0, 50.0, 0.0], [1.0, 50.0, 20.0], [1.0, 20.0, 50.0]], [7.5, 8.8, 9.4])
    assert (got["fixed"], got["cost_1"], got["cost_2"]) == pytest.approx((F, c_I, c_M), rel=1e-12)
    assert F == pytest.approx(5.25) and got["fixed_share"] == pytest.approx(0.70)
    assert timing._status(got) == "inconclusive"
    # a swapped row the no-fixed-cost reading predicts holds; one that needs a negative cost is violated
    assert timing._status(timing.readings(8.8, 7.5, 6.3, 50, 20)) == "holds"
    assert timing._status(timing.readings(8.8, 7.5, 12.0, 50, 20)) == "violated"  # c_I < 0
    with pytest.raises(ValueError, match="differ; got T = 20, s = 20"):
        timing.readings(8.8, 7.5, 9.4, 20, 20)


def test_timing_run_counts_algorithm_1s_evaluations_and_the_verdict():
    ds = timing.compute(quick=True, repeats=1)
    T, s = ds.attrs["T"], ds.attrs["s"]
    assert list(ds.calls_single.values) == [T, T]  # model 1 at every step
    assert list(ds.calls_amdm.values) == [T + s, T + s]  # and model 2 at the first s
    assert (ds.time_single > 0).all() and (ds.time_amdm > 0).all()
    (row,) = timing.verdicts(ds)
    assert row.key == "table6_time_ratio" and row.kind == "paper claim"
    assert row.status == "inconclusive"  # fits only with a fixed cost per image the paper does not state
    assert row.value == pytest.approx(0.7)  # F = 5.25 s of 7.5 s (test_table6s_three_rows_read_two_ways)
    assert "6.25 s" in row.detail and "F = 5.25 s (70%" in row.detail
    assert row.extra["time_ratio_exact"] == pytest.approx(float(ds.time_amdm[0] / ds.time_single[0]))
    table = timing.tables(ds)["timing"]
    assert table.loc["tiny_unet", "calls_ratio"] == pytest.approx((T + s) / T)
    with pytest.raises(ValueError, match="takes no stores"):
        timing.compute({"x": "y"})

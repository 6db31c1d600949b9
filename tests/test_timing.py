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


def test_timing_run_counts_algorithm_1s_evaluations_and_the_verdict():
    ds = timing.compute(quick=True, repeats=1)
    T, s = ds.attrs["T"], ds.attrs["s"]
    assert list(ds.calls_single.values) == [T, T]  # model 1 at every step
    assert list(ds.calls_amdm.values) == [T + s, T + s]  # and model 2 at the first s
    assert (ds.time_single > 0).all() and (ds.time_amdm > 0).all()
    (row,) = timing.verdicts(ds)
    assert row.key == "table6_time_ratio" and row.kind == "paper claim"
    assert row.status == "holds"  # 0 < 0.43 <= 1: the times fit the evaluation count
    assert row.value == pytest.approx(timing.implied(**timing.PAPER)["per_call_ratio"])
    assert row.extra["time_ratio_exact"] == pytest.approx(float(ds.time_amdm[0] / ds.time_single[0]))
    table = timing.tables(ds)["timing"]
    assert table.loc["tiny_unet", "calls_ratio"] == pytest.approx((T + s) / T)
    with pytest.raises(ValueError, match="takes no stores"):
        timing.compute({"x": "y"})

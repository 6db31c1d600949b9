"""The closed-form analysis and the ``amdm-geom validate`` command: every verdict exists and its
number equals an independent recomputation."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from amdm_geom.analyses.checks import closed_forms
from amdm_geom.core.verdicts import STATUSES, Verdict, format_table


@pytest.fixture(scope="module")
def ds():
    return closed_forms.compute(seed=1)


@pytest.fixture(scope="module")
def rows(ds):
    return {v.key: v for v in closed_forms.verdicts(ds)}


def test_every_verdict_is_present_and_well_formed(rows):
    assert set(rows) == {"ddim_step", "prop31_norm_gap", "prop31_angle",
                         "prop31_delta_noise", "prop32_max_distance", "prop32_ddim", "appd3_phi_w_at_most_1",
                         "appd3_phi_w_half_pi", "appd3_phi_w_quadratic", "lemma_a1_ln_upper", "lemma_a1_ln_lower",
                         "lemma_a1_eq10", "lemma_a1_eq11", "lemma_a1_eq12", "lemma_a1_eq13",
                         "appe_lerp_is_score_combination", "appe_slerp_is_score_combination",
                         "prop31_eq23_sigma_printed"}
    for v in rows.values():
        assert v.status in STATUSES and v.claim and v.where and v.measured


def test_angle_verdict_number_from_the_closed_form_excess(ds, rows):
    # printed bound minus cos phi for norms 1 and rho: -2 rho cos phi (1 - rho)^2 / (2 rho (1 + rho^2))
    phi, rho = np.meshgrid(ds.phi.values, ds.ratio.values, indexing="ij")
    excess = -2 * rho * np.cos(phi) * (1 - rho) ** 2 / (2 * rho * (1 + rho**2))
    assert rows["prop31_angle"].value == pytest.approx(excess.max(), abs=1e-12)
    assert rows["prop31_angle"].status == "violated"
    # 0.200 is the grid's maximum (r = 0.5 or 2); the closed form approaches 1 as phi -> pi and r -> 0 or infinity
    assert excess.max() == pytest.approx(0.2, abs=1e-2)
    r = np.logspace(-8, 8, 33)
    far = -np.cos(np.pi) * (1 - r) ** 2 / (1 + r**2)
    assert far.max() == pytest.approx(1.0, abs=1e-7) and (far < 1).all()
    assert "sup 1" in rows["prop31_angle"].measured and rows["prop31_angle"].extra["supremum"] == 1.0


def test_delta_noise_verdict_number(rows):
    assert rows["prop31_delta_noise"].value == pytest.approx(stats.chi2.cdf(16384, 16384), rel=1e-12)
    assert rows["prop31_delta_noise"].status == "violated"


def test_ddim_and_ddim_shell_verdicts(ds, rows):
    # the DDIM step: an implementation check, its residual in units of 16 float32 eps x the scale of
    # the terms diffusers sums (recomputed from the saved per-step arrays)
    ddim = rows["ddim_step"]
    tol = 16 * np.finfo(np.float32).eps * ds.ddim_scale.values
    assert ddim.kind == "implementation check" and ddim.status == "holds"
    assert ddim.value == pytest.approx(np.nanmax(ds.ddim_abs_error.values / tol), rel=1e-12) and ddim.value <= 1
    assert ddim.n == 2 * (10 + 20 + 50)  # every step of every (steps, eta) pair
    assert float(ds.ddim_max_abs_error.max()) == pytest.approx(np.nanmax(ds.ddim_abs_error.values))
    # eq. (8) assumes sigma_t > 0: under DDIM it is outside its domain, not vacuous
    assert rows["prop32_ddim"].status == "outside domain" and rows["prop32_ddim"].kind == "paper claim"
    assert rows["prop31_norm_gap"].status == "holds" and rows["prop31_norm_gap"].value <= 1


def test_plots_return_figures(ds):
    import matplotlib.pyplot as plt

    figs = closed_forms.plot(ds)
    assert list(figs) == ["cos_bound_excess"]
    for f in figs.values():
        assert f.axes
        plt.close(f)


def test_verdict_status_is_checked_and_table_counts():
    with pytest.raises(ValueError, match="status must be one of"):
        Verdict(claim="c", where="w", status="ok", measured="m", bound="b")
    table = format_table([Verdict(claim="c", where="w", status="holds", measured="m", bound="b")])
    assert "HOLDS" in table
    assert "1 holds, 0 violated, 0 setting-dependent, 0 inconclusive, 0 outside domain, 0 vacuous" in table


def test_console_script_runs_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "amdm_geom.app.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("amdm-geom ")
    assert (Path(sys.executable).parent / "amdm-geom").exists()


def test_app_d3_phi_w_statements_against_their_closed_forms():
    """App. D.3, computed independently with math.sin: phi_w(pi/2) as printed, the Taylor
    coefficient (1-w)(1-(1-w)^2)/24 of phi^2 that the quotient settles to, and phi_w <= 1
    (sin is increasing on [0, pi/2]); all three verdicts hold."""
    from amdm_geom.analyses.checks import phi_w

    ds = phi_w.dataset()
    for w in (0.0, 0.3, 0.5, 0.9, 1.0):
        direct = math.sin((1 - w) * math.pi / 4) / math.sin(math.pi / 4)
        assert math.isclose(direct, math.sqrt(2) * math.sin((1 - w) * math.pi / 4), rel_tol=1e-15, abs_tol=1e-16)
        a = 1 - w
        coeff = a * (1 - a * a) / 24  # phi_w = a + a (1 - a^2) phi^2 / 24 + O(phi^4)
        got = float(ds["phi_w_quotient"].sel(d3_w=w, method="nearest").isel(d3_small_phi=-1))
        assert abs(got - coeff) <= 1e-4 * max(coeff, 1e-3), (w, got, coeff)  # (the O(phi^2) rest: ~3e-6 at 0.01)
    grid = [(p, w) for p in (1e-3, 0.5, 1.5, math.pi) for w in (0.0, 0.25, 0.75)]
    assert all(math.sin((1 - w) * p / 2) / math.sin(p / 2) <= 1 + 1e-15 for p, w in grid)
    assert [v.status for v in phi_w.verdicts(ds)] == ["holds", "holds", "holds"]


def test_app_d3_verdicts_can_fail():
    """A phi_w above 1, a printed value off by 1e-9, a quotient that keeps growing: each violated."""
    from amdm_geom.analyses.checks import phi_w

    ds = phi_w.dataset()
    bad = ds.copy(deep=True)
    bad["phi_w_grid"][3, 5] = 1.0 + 1e-9
    bad["phi_w_half_pi_error"][2] = 1e-9
    bad["phi_w_quotient"][-1] = bad["phi_w_quotient"][-2] * 2
    assert [v.status for v in phi_w.verdicts(bad)] == ["violated", "violated", "violated"]

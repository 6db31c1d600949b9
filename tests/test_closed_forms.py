"""The closed-form analysis and the ``amdm-geom validate`` command: every verdict exists and its
number equals an independent recomputation."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from amdm_geom.analyses import closed_forms
from amdm_geom.verdicts import STATUSES, Verdict, format_table


@pytest.fixture(scope="module")
def ds():
    return closed_forms.compute(seed=1)


@pytest.fixture(scope="module")
def rows(ds):
    return {v.key: v for v in closed_forms.verdicts(ds)}


def test_every_verdict_is_present_and_well_formed(rows):
    assert set(rows) == {"ddim_step", "prop31_norm_gap", "prop31_angle",
                         "prop31_delta_noise", "prop32_max_distance", "prop32_ddim"}
    for v in rows.values():
        assert v.status in STATUSES and v.claim and v.where and v.measured


def test_angle_verdict_number_from_the_closed_form_excess(ds, rows):
    # printed bound minus cos phi for norms 1 and rho: -2 rho cos phi (1 - rho)^2 / (2 rho (1 + rho^2))
    phi, rho = np.meshgrid(ds.phi.values, ds.ratio.values, indexing="ij")
    excess = -2 * rho * np.cos(phi) * (1 - rho) ** 2 / (2 * rho * (1 + rho**2))
    assert rows["prop31_angle"].value == pytest.approx(excess.max(), abs=1e-12)
    assert rows["prop31_angle"].status == "violated"


def test_delta_noise_verdict_number(rows):
    assert rows["prop31_delta_noise"].value == pytest.approx(stats.chi2.cdf(16384, 16384), rel=1e-12)
    assert rows["prop31_delta_noise"].status == "violated"


def test_ddim_and_ddim_shell_verdicts(ds, rows):
    assert rows["ddim_step"].status == "holds" and rows["ddim_step"].value <= 1e-6
    assert rows["prop32_ddim"].status == "vacuous"
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
    assert "HOLDS" in table and "1 holds, 0 violated, 0 inconclusive, 0 outside domain, 0 vacuous" in table


def test_console_script_runs_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "amdm_geom.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("amdm-geom ")
    assert (Path(sys.executable).parent / "amdm-geom").exists()

"""Prop. 3.2's labels decided by constructed cases (issue 24): the nearest and the far root of
eq. (7)'s line on a shell, computed here in closed form, and eq. (8) judged per run, with the
bound written out here (not taken from ``amdm_geom.core.bounds``)."""

import math

import numpy as np
import pytest
import xarray as xr

from amdm_geom.analyses.common.membership import bound_verdicts, prop32_verdicts, summarize
from amdm_geom.analyses.prop32.proof import _values, proof_verdicts
from amdm_geom.core import bounds

# ----------------------------------------------------------------------------------------------
# eqs. (7), (29)-(30): the roots of |z' - eta u_1 - c| = R


def closed_form_roots(zp, mu1, c, R):
    """Both roots of |z' - eta u - c| = R, u = (z' - mu_1)/|z' - mu_1|, by the quadratic formula on
    eta^2 - 2 eta <z' - c, u> + |z' - c|^2 - R^2 = 0 (NaN where the line misses)."""
    u = (zp - mu1) / np.linalg.norm(zp - mu1)
    b, q = float((zp - c) @ u), float((zp - c) @ (zp - c)) - R**2
    disc = b * b - q
    return (b - math.sqrt(disc), b + math.sqrt(disc)) if disc >= 0 else (math.nan, math.nan)


def proof_runs(cells):
    """A ``proof`` result per run from constructed cells ``[(z', z~, mu_1, mu_2, R)]`` (one step, one
    sample each), through the analysis' own per-cell function."""
    out = {}
    for i, (zp, zt, mu1, mu2, R) in enumerate(cells):
        v = _values(zp[None], zt[None], mu1[None], mu2[None], R, R)
        ds = xr.Dataset({k: (("step", "sample"), np.asarray(x, dtype=np.float64)[None]) for k, x in v.items()},
                        coords={"step": [0], "sample": [0]})
        ds["finite"] = (("step", "sample"), np.ones((1, 1), dtype=bool))
        ds.attrs.update({"eta": 0.3, "incomplete": ""})
        out[f"r{i}"] = ds
    return out


def test_shift_shell_roots_against_the_quadratic_formula():
    rng = np.random.default_rng(0)
    for _ in range(50):
        zp, mu1, c = rng.normal(size=(3, 6))
        R = float(rng.uniform(0.1, 4))
        u = (zp - mu1) / np.linalg.norm(zp - mu1)
        low, high = bounds.shift_shell_roots(float((zp - c) @ u), float(np.linalg.norm(zp - c)), R)
        np.testing.assert_allclose([low, high], closed_form_roots(zp, mu1, c, R), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="radius must be >= 0; got -1.0"):
        bounds.shift_shell_roots(1.0, 1.0, -1.0)


def test_inside_the_shell_a_positive_root_exists_but_the_nearest_is_negative():
    # z' = (3, 0), mu_1 = 0, R = 5 (z' inside model 1's shell): roots 3 -+ 5 = -2 and 8;
    # mu_2 = (0, 3): roots 3 -+ sqrt(25 - 9) = -1 and 7
    zp, mu1, mu2, R = np.array([3.0, 0.0]), np.zeros(2), np.array([0.0, 3.0]), 5.0
    own, partner = closed_form_roots(zp, mu1, mu1, R), closed_form_roots(zp, mu1, mu2, R)
    assert own == pytest.approx((-2.0, 8.0)) and partner == pytest.approx((-1.0, 7.0))
    rows = {v.key: v for v in proof_verdicts(proof_runs([(zp, zp - 0.3 * zp / 3, mu1, mu2, R)]))}
    ex, pa = rows["prop32_existence"], rows["prop32_partner_eta"]
    # the nearest roots (-2 and -1) decide: violated; the far roots (8 and 7) exist and are reported
    assert ex.status == "violated" and ex.value == 0.0 and ex.extra["far_root_positive"] == 1
    assert ex.extra["eta_own_median"] == pytest.approx(own[0])
    assert "far root |z' - mu_1| + sigma sqrt n is > 0 on 1/1 cells (1 with z' inside the shell)" in ex.detail
    assert "eta = 1.60 sigma sqrt n" in ex.detail  # the far root 8 over R = 5: through mu_1
    assert pa.status == "violated" and pa.value == 0.0 and pa.extra["far_root_positive"] == 1
    assert "A positive root (the far one) exists on 1 of the 1 cells whose nearest root is negative" in pa.detail
    assert f"{partner[0]:.3g} (median" in pa.detail


def test_outside_the_shell_the_nearest_root_is_positive():
    # z' = (7, 0), R = 5: roots 7 -+ 5 = 2 and 12; mu_2 = (1, 1): 6 -+ sqrt(25 - 1) (both > 0);
    # and a second run inside (z' = (4, 0): -1, 9) turns the pooled verdict to violated
    R, mu1 = 5.0, np.zeros(2)
    out_cell = (np.array([7.0, 0.0]), np.array([6.7, 0.0]), mu1, np.array([1.0, 1.0]), R)
    own = closed_form_roots(out_cell[0], mu1, mu1, R)
    partner = closed_form_roots(out_cell[0], mu1, out_cell[3], R)
    assert own[0] > 0 and partner[0] > 0 and partner == pytest.approx((6 - math.sqrt(24), 6 + math.sqrt(24)))
    rows = {v.key: v for v in proof_verdicts(proof_runs([out_cell]))}
    assert rows["prop32_existence"].status == "holds" and rows["prop32_existence"].value == 1.0
    assert rows["prop32_partner_eta"].status == "holds"
    in_cell = (np.array([4.0, 0.0]), np.array([3.7, 0.0]), mu1, np.array([1.0, 1.0]), R)
    assert closed_form_roots(in_cell[0], mu1, mu1, R) == pytest.approx((-1.0, 9.0))
    both = {v.key: v for v in proof_verdicts(proof_runs([out_cell, in_cell]))}
    assert both["prop32_existence"].status == "violated" and both["prop32_existence"].value == 0.5


# ----------------------------------------------------------------------------------------------
# eq. (8) per run

N, EPS = 16384, (0.05, 0.2, 0.5)


def eq8(eps, d_scaled):
    """Eq. (8) written out: 1 - 2 exp(-n e^2 / (1 + 2 e)), e = eps - d/(sigma sqrt n); NaN off its domain."""
    e = eps - d_scaled
    return 1 - 2 * math.exp(-N * e * e / (1 + 2 * e)) if e >= 0 else math.nan


def prop32_result(radius, d_scaled, w, eta):
    """A ``prop32`` result of two steps (the first is left out by ``summarize``) and the given
    samples: z~ at ``radius`` (relative to model 2's shell), d/(sigma sqrt n) = ``d_scaled``."""
    radius = np.tile(np.asarray(radius, dtype=np.float64), (2, 1))
    d = np.full_like(radius, d_scaled)
    eps = np.asarray(EPS)
    in_shell = np.abs(radius[..., None] - 1) <= eps
    bound = np.vectorize(eq8)(eps[None, None, :], d[..., None])
    ones = np.ones_like(radius)
    return xr.Dataset(
        {"radius": (("step", "sample"), radius), "radius_own": (("step", "sample"), ones),
         "d_scaled": (("step", "sample"), d), "in_shell": (("step", "sample", "eps"), in_shell),
         "in_shell_own": (("step", "sample", "eps"), np.ones_like(in_shell)),
         "bound": (("step", "sample", "eps"), bound), "finite": (("step", "sample"), ones.astype(bool))},
        coords={"step": [0, 1], "sample": np.arange(radius.shape[1]), "eps": eps},
        attrs={"w": w, "eta": eta, "level": 0.95, "n": N, "incomplete": ""})


def test_eq8_per_run_holds_where_informative_and_vacuous_where_not():
    # run "w08": d/(sigma sqrt n) = 0.01, every z~ on the shell: eq. (8) applies at every eps and
    # holds; run "w05": d/(sigma sqrt n) = 0.9 > every eps: eq. (8) says nothing (vacuous)
    summary = summarize({"w08": prop32_result([1.0, 1.01, 0.99], 0.01, 0.8, 0.3),
                         "w05": prop32_result([0.7, 0.75, 0.8], 0.9, 0.5, 0.3)})
    rows = {v.key: v for v in bound_verdicts(summary, per_run=True)}
    assert list(rows) == ["prop32_bound_runs_w08", "prop32_bound_runs_w05"]
    informative, empty = rows["prop32_bound_runs_w08"], rows["prop32_bound_runs_w05"]
    # independently: membership 1 at each eps against eq. (8)'s value there
    gaps = [1.0 - eq8(e, 0.01) for e in EPS]
    assert informative.status == "holds" and informative.value == pytest.approx(min(gaps), rel=1e-12)
    assert informative.measured == "3/3 cells non-vacuous" and "(w=0.8, eta=0.3)" in informative.claim
    assert empty.status == "vacuous" and math.isnan(empty.value) and empty.measured == "0/3 cells non-vacuous"
    # pooled, the informative run's cells would speak for both
    assert bound_verdicts(summary)[0].status == "holds" and bound_verdicts(summary)[0].key == "prop32_bound_runs"
    keys = [v.key for v in prop32_verdicts(summary, per_run=True)]
    assert keys[:3] == ["prop32_bound_runs_w08", "prop32_bound_runs_w05", "prop32_shell_claim"]
    # a run whose z~ misses the shell where eq. (8) applies is violated, on its own row only
    bad = summarize({"w08": prop32_result([1.0, 1.3, 1.3], 0.01, 0.8, 0.3),
                     "w05": prop32_result([0.7, 0.75, 0.8], 0.9, 0.5, 0.3)})
    status = {v.key: v.status for v in bound_verdicts(bad, per_run=True)}
    assert status == {"prop32_bound_runs_w08": "violated", "prop32_bound_runs_w05": "vacuous"}

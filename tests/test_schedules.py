"""amdm_geom.core.schedules against diffusers itself, the DDPM posterior written independently, and
a numerical solution of the moment ODEs (38)-(39)."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from scipy.integrate import solve_ivp

from amdm_geom.core import schedules


def _check_against_step(ref, coeffs, steps, eta, atol):
    # Each step on fresh unit-scale z, eps, xi in float64, so that the comparison is of the
    # coefficients rather than of float32 rounding inside x0 = (z - sqrt(1-abar) eps)/sqrt(abar).
    g = torch.Generator().manual_seed(steps)
    for k in range(steps):
        z, eps, xi = (torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
        want = ref.step(eps, int(coeffs["t"][k]), z, eta=eta, variance_noise=xi).prev_sample
        c = coeffs.isel(step=k)
        got = float(c.A) * z + float(c.B) * eps + float(c.sigma) * xi
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=atol, rtol=0)


@pytest.mark.parametrize("kind", ["scaled_linear", "cosine"])
@pytest.mark.parametrize("steps", [10, 20, 50])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_coefficients_reproduce_diffusers_step(kind, steps, eta):
    sched = schedules.make_scheduler(kind)
    coeffs = schedules.ddim_coefficients(sched, steps, eta)
    ref = DDIMScheduler.from_config(sched.config)
    ref.set_timesteps(steps)
    np.testing.assert_array_equal(coeffs["t"].values, ref.timesteps.numpy())
    _check_against_step(ref, coeffs, steps, eta, atol=1e-6)


@pytest.mark.parametrize("kind", ["scaled_linear", "linear", "cosine"])
@pytest.mark.parametrize("steps", [10, 20, 50])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_coefficients_equal_diffusers_step_in_float64(kind, steps, eta):
    # diffusers does its scalar arithmetic in float32 (its alphas_cumprod); with the same table
    # promoted to float64 its step must agree with our float64 coefficients to rounding. (Stock
    # float32 diffusers on the DDPM "linear" schedule, abar_T = 2.6e-4, differs by up to 2e-6
    # on unit-scale inputs: its own rounding of sqrt(1 - abar_prev - sigma^2).)
    sched = schedules.make_scheduler(kind)
    coeffs = schedules.ddim_coefficients(sched, steps, eta)
    ref = DDIMScheduler.from_config(sched.config)
    ref.set_timesteps(steps)
    ref.alphas_cumprod = ref.alphas_cumprod.to(torch.float64)
    ref.final_alpha_cumprod = ref.final_alpha_cumprod.to(torch.float64)
    _check_against_step(ref, coeffs, steps, eta, atol=1e-10)


def test_sd_timesteps_and_final_step():
    coeffs = schedules.ddim_coefficients(schedules.make_scheduler(), 50)
    assert coeffs["t"].values[0] == 981 and coeffs["t"].values[-1] == 1
    assert coeffs["t_prev"].values[-1] < 0
    # set_alpha_to_one=False: the last step goes to alphas_cumprod[0]
    abar0 = 1 - 0.00085
    assert coeffs["alpha_bar_prev"].values[-1] == pytest.approx(abar0, rel=1e-6)
    assert np.all(coeffs["sigma"].values == 0.0)  # eta = 0 is deterministic DDIM
    assert np.all(coeffs["B"].values < 0)


@pytest.mark.parametrize("steps", [10, 50])
def test_eta_one_is_the_ddpm_posterior(steps):
    # q(x_{t-1} | x_t, x0) on the strided timesteps: mean c1 x0 + c2 x_t with
    # c1 = sqrt(abar_prev) beta / (1 - abar), c2 = sqrt(alpha) (1 - abar_prev) / (1 - abar),
    # alpha = abar / abar_prev, beta = 1 - alpha; variance (1 - abar_prev) / (1 - abar) beta.
    c = schedules.ddim_coefficients(schedules.make_scheduler(), steps, eta=1.0)
    abar, abar_prev = c["alpha_bar"].values, c["alpha_bar_prev"].values
    alpha = abar / abar_prev
    beta = 1 - alpha
    c1 = np.sqrt(abar_prev) * beta / (1 - abar)
    c2 = np.sqrt(alpha) * (1 - abar_prev) / (1 - abar)
    # mean = A z + B eps with x0 = (z - sqrt(1 - abar) eps) / sqrt(abar)
    np.testing.assert_allclose(c["A"].values, c1 / np.sqrt(abar) + c2, rtol=1e-10)
    np.testing.assert_allclose(c["B"].values, -c1 * np.sqrt(1 - abar) / np.sqrt(abar), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(c["sigma"].values ** 2, (1 - abar_prev) / (1 - abar) * beta, rtol=1e-10)


def test_ddim_coefficients_accept_a_ddpm_scheduler_config():
    ddpm = DDPMScheduler(**{k: v for k, v in schedules.SD15_SCHEDULER_CONFIG.items() if k != "set_alpha_to_one"})
    c = schedules.ddim_coefficients(ddpm, 20)
    assert c.sizes["step"] == 20


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: schedules.make_scheduler(prediction_type="x0"), r"prediction_type must be one of .*; got 'x0'"),
        (lambda: schedules.VESchedule(schedules.make_scheduler(prediction_type="v_prediction").config),
         "a VE schedule steps an epsilon model without clipping"),
        (lambda: schedules.make_scheduler(rescale_betas_zero_snr=True), "rescale_betas_zero_snr"),
    ],
)
def test_unsupported_steps_are_refused(make, match):
    """v, x0 and clipping are accepted (tests/test_prediction_types.py); these are not."""
    with pytest.raises(ValueError, match=match):
        schedules.ddim_coefficients(make(), 10)


@pytest.mark.parametrize("steps,match", [(0, r"in \[1, 1000\]; got 0"), (1001, "got 1001"), (2.5, "must be an int")])
def test_bad_step_counts(steps, match):
    with pytest.raises(ValueError, match=match):
        schedules.ddim_coefficients(schedules.make_scheduler(), steps)


def test_bad_eta_and_kind():
    with pytest.raises(ValueError, match=r"eta must be a finite float >= 0; got -1"):
        schedules.ddim_coefficients(schedules.make_scheduler(), 10, eta=-1)
    with pytest.raises(ValueError, match="schedule kind must be one of"):
        schedules.make_scheduler("sigmoid")


# ------------------------------------------------------------------------------------ App. D.1


def beta_of_t(kind, t, n=1000):
    """beta(t) of the continuous limit, written from the discrete schedules' definitions."""
    if kind == "scaled_linear":
        return n * (math.sqrt(0.00085) + t * (math.sqrt(0.012) - math.sqrt(0.00085))) ** 2
    if kind == "linear":
        return n * (1e-4 + t * (0.02 - 1e-4))
    s = 0.008  # cosine: beta = -d/dt ln alpha_bar = pi/(1+s) tan((t+s)/(1+s) pi/2)
    return math.pi / (1 + s) * math.tan((t + s) / (1 + s) * math.pi / 2)


@pytest.mark.parametrize("kind", ["scaled_linear", "linear", "cosine"])
@pytest.mark.parametrize("m0,P0", [(1.0, 0.0), (0.3, 0.5), (-1.0, 2.0)])
def test_vp_moments_solve_the_moment_odes(kind, m0, P0):
    # eqs. (38)-(39): dm/dt = -beta m / 2, dP/dt = -beta P + beta, integrated numerically
    ts = np.linspace(0, 0.99, 23)
    sol = solve_ivp(
        lambda t, y: [-0.5 * beta_of_t(kind, t) * y[0], -beta_of_t(kind, t) * (y[1] - 1)],
        (0, 0.99), [m0, P0], t_eval=ts, rtol=1e-11, atol=1e-13,
    )
    m, P = schedules.vp_moments(ts, kind, m0=m0, P0=P0)
    np.testing.assert_allclose(m, sol.y[0], rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(P, sol.y[1], rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("kind,tol", [("scaled_linear", 0.02), ("linear", 0.15), ("cosine", 1e-5)])
def test_continuous_limit_tracks_the_discrete_alpha_bar(kind, tol):
    # ln abar_i = sum ln(1 - beta_j) and -int beta differ by sum beta_j^2 / 2 (the next term of
    # -ln(1 - beta)) plus an O(1/N) Riemann error; the cosine schedule telescopes exactly
    # (until its betas are clipped at 0.999 in the last steps).
    sched = schedules.make_scheduler(kind)
    disc = schedules.discrete_moments(sched)
    t = disc["t"].values
    keep = t <= 0.98
    log_disc = np.log(disc["alpha_bar"].values[keep])
    log_cont = -schedules.integrated_beta(t[keep], kind)
    betas = sched.betas.double().numpy()[keep]
    second_order = np.cumsum(betas**2) / 2
    assert np.max(np.abs(log_disc - log_cont)) <= tol + np.max(second_order)
    m, P = schedules.vp_moments(t[keep], kind, m0=1.0, P0=0.0)
    np.testing.assert_allclose(disc["m"].values[keep], np.sqrt(disc["alpha_bar"].values[keep]))
    assert np.max(np.abs(P - disc["P"].values[keep])) < 0.05


def test_vp_moments_extreme_case_and_scheduler_argument():
    m, P = schedules.vp_moments(0.0)
    assert (m, P) == (1.0, 0.0)
    m1, P1 = schedules.vp_moments(1.0, scheduler=schedules.make_scheduler())
    root_lo, root_hi = math.sqrt(0.00085), math.sqrt(0.012)
    integral = 1000 * (root_hi**3 - root_lo**3) / (3 * (root_hi - root_lo))
    assert m1 == pytest.approx(math.exp(-integral / 2), rel=1e-12)
    assert P1 == pytest.approx(1 - math.exp(-integral), rel=1e-12)
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]; got 1.5"):
        schedules.vp_moments(1.5)

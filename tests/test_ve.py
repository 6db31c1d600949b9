"""The variance-exploding reparametrization: a VE model run alone is the VP model's trajectory
divided by sqrt(abar_t), its step has A = 1 and B = sigma_prev - sigma_t, and the sampler treats
it as another ecosystem."""

import math

import numpy as np
import pytest
import torch

from amdm_geom.core.schedules import ddim_coefficients
from amdm_geom.models.base import same_schedule
from amdm_geom.models.gmm import fine_grained_family, from_description
from amdm_geom.models.ve import VEDenoiser
from amdm_geom.sampling import AMDMSampler, SamplerConfig


@pytest.fixture(scope="module")
def fam():
    return fine_grained_family((4, 8, 8), seed=6)


def test_ve_trajectory_is_the_vp_trajectory_rescaled(fam):
    vp = fam.model(dtype=torch.float64)
    ve = VEDenoiser(vp)
    cond = fam.condition(colour=1)
    cfg = SamplerConfig(num_inference_steps=20, weights=())
    _, c_vp = AMDMSampler([vp], [cond], cfg).run_with_cache([0, 1], names_filter="model0.z*")
    _, c_ve = AMDMSampler([ve], [cond], cfg).run_with_cache([0, 1], names_filter="model0.z*")
    # identical up to diffusers' float32 scalar arithmetic in the VP step (ours is float64)
    abar = c_vp.alpha_bar.values[:, None, None, None, None]
    z_ve, z_vp = c_ve.z.isel(model=0).values, c_vp.z.isel(model=0).values
    np.testing.assert_allclose(z_ve[0] * np.sqrt(abar[0]), z_vp[0], rtol=1e-12)
    np.testing.assert_allclose(z_ve * np.sqrt(abar), z_vp, rtol=2e-6, atol=2e-6)
    abar_prev = c_vp.alpha_bar_prev.values[:, None, None, None, None]
    np.testing.assert_allclose(c_ve.z_next.isel(model=0).values * np.sqrt(abar_prev),
                               c_vp.z_next.isel(model=0).values, rtol=2e-6, atol=2e-6)


def test_ve_coefficients(fam):
    ve = VEDenoiser(fam.model())
    c = ddim_coefficients(ve.scheduler, 10, 0.0)
    sig = lambda a: np.sqrt((1 - a) / a)  # noqa: E731
    np.testing.assert_array_equal(c.A.values, 1.0)
    np.testing.assert_allclose(c.B.values, sig(c.alpha_bar_prev.values) - sig(c.alpha_bar.values), rtol=1e-12)
    assert np.all(c.sigma.values == 0)
    with pytest.raises(ValueError, match="eta must be 0"):
        ddim_coefficients(ve.scheduler, 10, 1.0)
    # the step itself has these coefficients
    ve.scheduler.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x, eps = (torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=g) for _ in range(2))
    out = ve.scheduler.step(eps, int(c.t[3]), x).prev_sample
    # (rounding is relative to the terms, not to their sum, which can cancel to near 0)
    scale = float(abs(c.A[3])) * x.abs() + float(abs(c.B[3])) * eps.abs()
    assert torch.all((out - (float(c.A[3]) * x + float(c.B[3]) * eps)).abs() <= 1e-12 * scale)
    assert ve.scheduler.init_noise_sigma == pytest.approx(1 / math.sqrt(float(c.alpha_bar[0])))


def test_ve_is_another_ecosystem(fam):
    vp = fam.model()
    ve = VEDenoiser(fam.model())
    assert not same_schedule(vp.scheduler, ve.scheduler) and same_schedule(ve.scheduler, VEDenoiser(vp).scheduler)
    conds = [fam.condition(position=0), fam.condition(colour=1)]
    with pytest.raises(ValueError, match="noise schedule differs"):
        AMDMSampler([vp, ve], conds, SamplerConfig(num_inference_steps=8, agg_steps=3))
    with pytest.raises(ValueError, match="eta must be 0"):
        AMDMSampler([vp, ve], conds, SamplerConfig(num_inference_steps=8, agg_steps=3, ddim_eta=1.0,
                                                   allow_schedule_mismatch=True))
    out = AMDMSampler([vp, ve], conds, SamplerConfig(num_inference_steps=8, agg_steps=3,
                                                     allow_schedule_mismatch=True)).sample([0])
    assert torch.isfinite(out.z0).all()


def test_ve_description_round_trip(fam):
    ve = VEDenoiser(fam.model(name="x"))
    again = from_description(ve.describe())
    assert isinstance(again, VEDenoiser)
    z = torch.randn(1, 4, 8, 8)
    assert torch.equal(again(z, 300, fam.condition(position=2)), ve(z, 300, fam.condition(position=2)))

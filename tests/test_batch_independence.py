"""What a sample's trajectory owes to its batch mates (issue 10, item 6).

Stated in the README and tested here:

- the random draws (z_T of every model, and every DDPM noise xi) come from one generator per
  (model, sample), so they are bit for bit the same whatever the batch size or the sample's
  position in the batch;
- the arithmetic is not: batched matrix products and convolutions block their loops by batch
  size, so a trajectory differs between batch sizes by float rounding only. The tests bound it
  relative to the trajectory's largest entry: 1e-6 in float32, 1e-11 in float64;
- the same seeds in the same batch give the same arrays, bit for bit, run after run.
"""

import numpy as np
import pytest
import torch

from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.models.unet import condition_pair, tiny_unet_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig

NAMES = ["model*.z", "model*.z_next", "agg.z"]
#: the stated bound on |batch of 8 - batch of 2| / max |z| (README, "Seeds and batches")
REL = {torch.float32: 1e-6, torch.float64: 1e-11}


def gmm_sampler(dtype, ddim_eta):
    fam = fine_grained_family((4, 32, 32), seed=3)
    models = [fam.model(dtype=dtype), fam.model(perturb=0.05, dtype=dtype)]
    conds = [fam.condition(position=0), fam.condition(colour=1)]
    cfg = SamplerConfig(num_inference_steps=20, agg_steps=8, ddim_eta=ddim_eta, continue_after_window=True)
    return AMDMSampler(models, conds, cfg)


def unet_sampler(ddim_eta):
    m1, m2 = tiny_unet_family("perturbed", seed=0, sample_size=32, block_out_channels=(16, 32))
    y1, y2 = condition_pair(0, distance=0.1)
    cfg = SamplerConfig(num_inference_steps=10, agg_steps=4, ddim_eta=ddim_eta, continue_after_window=True)
    return AMDMSampler([m1, m2], [y1, y2], cfg)


def _runs(sampler):
    _, big = sampler.run_with_cache([5, 6, 7, 8, 9, 10, 11, 12], names_filter=NAMES)
    _, small = sampler.run_with_cache([8, 7], names_filter=NAMES)  # other batch size, other order
    return big.isel(sample=[3, 2]), small


CASES = [("gmm", torch.float32, 0.0), ("gmm", torch.float32, 1.0), ("gmm", torch.float64, 0.0),
         ("gmm", torch.float64, 1.0), ("unet", torch.float32, 0.0), ("unet", torch.float32, 1.0)]


@pytest.mark.parametrize(("family", "dtype", "ddim_eta"), CASES)
def test_draws_are_bit_for_bit_and_the_rest_is_rounding(family, dtype, ddim_eta):
    sampler = gmm_sampler(dtype, ddim_eta) if family == "gmm" else unet_sampler(ddim_eta)
    big, small = _runs(sampler)
    # z_T of every model: bit for bit
    assert np.array_equal(big.z.isel(step=0).values, small.z.isel(step=0).values)
    # everything else: float rounding, relative to the largest entry
    for var in ("z", "z_next", "agg_z"):
        a, b = big[var].values.astype(np.float64), small[var].values.astype(np.float64)
        assert np.array_equal(np.isnan(a), np.isnan(b))
        scale = np.nanmax(np.abs(a))
        diff = np.nanmax(np.abs(a - b)) / scale
        assert diff <= REL[dtype], f"{var}: relative difference {diff:.2e}"


@pytest.mark.parametrize("ddim_eta", [0.0, 1.0])
def test_same_seeds_same_batch_bit_for_bit(ddim_eta):
    sampler = gmm_sampler(torch.float32, ddim_eta)
    _, a = sampler.run_with_cache([1, 2, 3], names_filter=NAMES)
    _, b = sampler.run_with_cache([1, 2, 3], names_filter=NAMES)
    for var in ("z", "z_next", "agg_z"):
        np.testing.assert_array_equal(a[var].values, b[var].values)


def test_noise_draws_bit_for_bit():
    """Under DDPM the injected noise is sigma_t xi with xi from the sample's own generator: at
    step 0 both batches see the same z and the same xi, so the noise agrees to the rounding of
    z_next - mu (one subtraction), and xi = noise / sigma_t to a few ulps."""
    sampler = gmm_sampler(torch.float64, 1.0)
    _, big = sampler.run_with_cache([4, 5, 6, 7], names_filter="model*.noise")
    _, small = sampler.run_with_cache([6], names_filter="model*.noise")
    sigma = float(big.sigma.isel(step=5))
    xa = big.noise.isel(step=5, sample=[2]).values / sigma
    xb = small.noise.isel(step=5).values / sigma
    np.testing.assert_allclose(xa, xb, rtol=0, atol=1e-9)

"""The 2D composition benchmark of App. E (Table 7), in its parts; ``amdm_geom.analyses.toy.toy_mixture``
is the analysis that runs it and judges the paper's claim.

- ``targets``: the 2D mixtures (Du et al.'s ring, a Gaussian-mixture bar, two full-covariance
  mixtures) and the composition tasks ``p = p1 p2 / Z``, all built with the one Gaussian-mixture
  engine (``amdm_geom.models.mixture``), with numpy views of their densities and samples.
- ``experts``: the cosine VP schedule with T = 100, exact experts (eps of eq. (4) from the exact
  diffused score) and small MLP experts trained by denoising score matching.
- ``samplers``: AMDM (Algorithm 1 through ``amdm_geom.sampling.step.aggregate_step``),
  reverse diffusion with the summed score, the oracle; the per-block random streams.
- ``mcmc``: Du et al. (2023)'s annealed ULA, MALA and HMC.
- ``metrics``: LL, MMD, W2, covariance error, mode coverage.
- ``settings``: the benchmark's settings (``Benchmark``), its full and quick sizes (``ToyScale``)
  and its arms (``Arm``: one method, each AMDM setting its own), as specs.
- ``benchmark``: every arm on one task with each kind of expert and seed, as one Dataset over
  ``arm`` (``amdm_geom.analyses.common.paired``).
- ``figures``: samples, the AMDM trajectory, the norm law of 2D noise, the AMDM sweep.
"""

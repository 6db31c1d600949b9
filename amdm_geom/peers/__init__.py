"""The peers of AMDM: training-free composition of N diffusion models sharing one schedule, as
samplers for any denoiser (``amdm_geom.models.base.Denoiser``), on the same models and seeds as
AMDM's sampler, for a benchmark.

- ``composable``: Composable Diffusion's conjunction (Liu et al. 2022), DDIM;
- ``superdiff_and``: SUPERDIFF's AND (Skreta et al. 2024), kappa from the Itô density estimator, DDPM;
- ``du_ula``: Du et al. 2023's product of experts, summed-score DDPM with annealed ULA;
- ``fkc_product``: Feynman-Kac correctors' product of experts (Skreta et al. 2025), SMC with resampling.

Each is ``(models, conds, seeds, *, num_inference_steps, ...) -> PeerOutput(z0,
model_calls_per_sample, extra)``; every random draw comes from one generator per sample
(``amdm_geom.sampling.rng``). This layer sits between the sampler and the trace layer: it imports
the sampling layer, the models and the core, nothing above.
"""

from amdm_geom.peers.common import PeerOutput
from amdm_geom.peers.composable import composable
from amdm_geom.peers.du import DEFAULT_STEP_SCALE, du_ula
from amdm_geom.peers.fkc import fkc_product
from amdm_geom.peers.superdiff import solve_kappa, superdiff_and

__all__ = ["DEFAULT_STEP_SCALE", "PeerOutput", "composable", "du_ula", "fkc_product", "solve_kappa",
           "superdiff_and"]

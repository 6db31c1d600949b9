"""Exact velocity of Gaussian-mixture data under the rectified-flow interpolant (App. G).

Under the interpolant of SD3 and Flux (eq. 42's flow), with s in [0, 1] the flow's noise level,

    z_s = (1 - s) x0 + s eps,      v = dz_s/ds = eps - x0,

and data ``x0 | y ~ sum_k pi_k(y) N(m_k, S_k)``, every component stays Gaussian,

    p_s(z | y) = sum_k pi_k(y) N(z; (1 - s) m_k, V_k),   V_k = (1 - s)^2 S_k + s^2 I,

and the velocity a flow model learns, ``v(z, s) = E[eps - x0 | z_s = z]`` (the minimiser of the
flow-matching loss), is exact. Per component, ``(x0, eps, z_s)`` are jointly Gaussian with
``Cov(x0, z) = (1 - s) S_k`` and ``Cov(eps, z) = s I``, so with responsibilities
``r_k = p_s(k | z, y)``

    E[x0 | z]  = sum_k r_k (m_k + (1 - s) S_k V_k^-1 (z - (1 - s) m_k)),
    E[eps | z] = sum_k r_k s V_k^-1 (z - (1 - s) m_k),
    v(z, s)    = sum_k r_k ((s I - (1 - s) S_k) V_k^-1 (z - (1 - s) m_k) - m_k).

No term divides by s or by 1 - s: at s = 1 (diffusers' first step) ``V_k = I``, ``r_k = pi_k``
and ``v = z - E[x0]``; at s = 0, ``v = -z`` (the data are the latent). For s < 1 this is
Tweedie's ``v = -(z + s grad log p_s(z)) / (1 - s)``, which the tests check against autograd.

The density and the responsibilities come from the VP engine (``mixture.GaussianMixture``):
``z_s = c z_vp`` with ``c = sqrt((1 - s)^2 + s^2)`` and ``z_vp = sqrt(abar) x0 + sqrt(1 - abar)
eps`` at ``abar = (1 - s)^2 / c^2``, so ``log p_s(z) = log p_vp(z / c; abar) - n log c``.
Everything is float64 and returned in the denoiser's dtype.
"""

from __future__ import annotations

import math

import torch

from amdm_geom.core.flow_schedules import GRID_KEYS, is_flow_scheduler, make_flow_scheduler
from amdm_geom.models.base import check_latents
from amdm_geom.models.gmm import FineGrainedFamily, MixtureModel, chunk_rows, fine_grained_family, is_finite_real
from amdm_geom.models.guidance import guided, uses_guidance
from amdm_geom.models.mixture import GaussianMixture

__all__ = ["FlowGMMDenoiser", "flow_family_model", "flow_from_description", "flow_vp_map"]


def flow_vp_map(s: float) -> tuple[float, float]:
    """``(c, abar)`` with ``z_s = c z_vp``: ``c = sqrt((1 - s)^2 + s^2)``, ``abar = (1 - s)^2 / c^2``
    (the VP time with the same signal-to-noise ratio ``(1 - s)^2 / s^2``)."""
    c = math.sqrt((1.0 - s) ** 2 + s**2)
    return c, (1.0 - s) ** 2 / c**2


class FlowGMMDenoiser(MixtureModel):
    """The exact velocity of a Gaussian mixture, ``v = model(z_t, t, cond)`` (module docstring).

    ``t`` is the flow scheduler's timestep ``s * num_train_timesteps`` (a float, an int or a 0-d
    tensor); ``cond`` a weight vector over the components, ``(K,)`` or ``(B, K)`` (None: the
    mixture's own). With ``guidance_scale`` g > 1 the output is ``v_u + g (v_c - v_u)``
    (``amdm_geom.models.guidance``: no guidance at g <= 1), ``v_u`` under ``uncond_weights``
    (``gmm.MixtureModel``). Its ``condition_kind`` is ``"gmm-weights:K"``, as the VP
    ``GMMDenoiser``'s: the two take each other's conditions.
    """

    def __init__(self, mixture: GaussianMixture, scheduler=None, *, guidance_scale: float = 1.0,
                 uncond_weights: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", name: str = "gmm-flow", provenance: dict | None = None):
        scheduler = scheduler if scheduler is not None else make_flow_scheduler()
        if not is_flow_scheduler(scheduler):
            raise ValueError(f"scheduler must be a flow-matching scheduler (FlowMatchEulerDiscreteScheduler); "
                             f"got {type(scheduler).__name__}")
        super().__init__(mixture, scheduler, guidance_scale=guidance_scale, uncond_weights=uncond_weights,
                         dtype=dtype, device=device, name=name, provenance=provenance)
        self._terms: dict[float, tuple] = {}

    def sigma(self, t) -> float:
        """The flow's noise level ``s = t / num_train_timesteps`` in [0, 1] (float64 of ``t``)."""
        n_train = int(self.scheduler.config.num_train_timesteps)
        value = t.item() if isinstance(t, torch.Tensor) and t.numel() == 1 else t
        if isinstance(value, bool) or not is_finite_real(value) or not 0 <= value <= n_train:
            shown = tuple(t.shape) if isinstance(t, torch.Tensor) and t.numel() != 1 else value
            raise ValueError(f"t must be one timestep in [0, {n_train}] (s = t / {n_train} in [0, 1]); got {shown!r}")
        return float(value) / n_train

    # -- the velocity ----------------------------------------------------------------------------

    def __call__(self, z_t: torch.Tensor, t, cond) -> torch.Tensor:
        """``z_t (B, *latent_shape)`` at timestep ``t`` -> exact (guided) ``v``, same shape, in the
        model's dtype; float64 in chunks of at most ``gmm.CHUNK_BYTES`` of rows."""
        return self._rows(z_t, t, cond, self._velocity, guide=True)

    def predicted_x0(self, z_t: torch.Tensor, t, cond) -> torch.Tensor:
        """``E[x0 | z_s = z_t, y]`` (unguided), ``(B, *latent_shape)`` in float64; equal to
        ``z_t - s v`` (eq. 42's interpolant) up to rounding."""
        return self._rows(z_t, t, cond, self._x0, guide=False, dtype=torch.float64)

    def _rows(self, z_t, t, cond, fn, *, guide: bool, dtype=None) -> torch.Tensor:
        check_latents(self, z_t)
        s = self.sigma(t)
        flat = z_t.detach().reshape(z_t.shape[0], -1)
        weights = cond if cond is None else torch.as_tensor(cond, dtype=torch.float64)
        if weights is not None:
            weights = self.mixture.check_weights(weights)
        per_sample = weights is not None and weights.ndim == 2
        if per_sample and weights.shape[0] != flat.shape[0]:
            raise ValueError(f"per-sample condition weights must have one row per latent ({flat.shape[0]}); "
                             f"got {weights.shape[0]}")
        pieces, rows = [], chunk_rows(flat.shape[1])
        for i in range(0, flat.shape[0], rows):
            z = flat[i:i + rows].to(device="cpu", dtype=torch.float64)
            out = fn(z, weights[i:i + rows] if per_sample else weights, s)
            if guide and uses_guidance(self.guidance_scale):
                out = guided(fn(z, self.uncond_weights, s), out, self.guidance_scale)
            pieces.append(out.to(self.dtype if dtype is None else dtype))
        out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        return out.reshape(z_t.shape).to(device=self.device)

    def _posterior_terms(self, s: float):
        """Per component, ``E[x0 | z, k] = Ax_k z + bx_k`` and ``E[v | z, k] = Av_k z + bv_k``:
        ``(Ax, bx, Av, bv)``, the A's ``(K, n)`` (diagonal) or ``(K, n, n)`` (full), the b's
        ``(K, n)``; cached for the last few s."""
        if s not in self._terms:
            if len(self._terms) >= (1024 if self.mixture.is_full else 4):
                self._terms.pop(next(iter(self._terms)))
            m, u = self.mixture.means, 1.0 - s
            if self.mixture.is_full:
                S = self.mixture.covariances  # (K, n, n)
                eye = torch.eye(self.mixture.dim, dtype=torch.float64)
                V_inv = torch.linalg.inv(u * u * S + s * s * eye)
                Ax, Av = u * S @ V_inv, (s * eye - u * S) @ V_inv
                bx = m - u * (Ax @ m[..., None])[..., 0]
                bv = -u * (Av @ m[..., None])[..., 0] - m
            else:
                S = self.mixture.variances  # (K, n)
                V = u * u * S + s * s
                Ax, Av = u * S / V, (s - u * S) / V
                bx, bv = m - u * Ax * m, -u * Av * m - m
            self._terms[s] = (Ax, bx, Av, bv)
        return self._terms[s]

    def _responsibilities(self, z: torch.Tensor, weights, s: float) -> torch.Tensor:
        c, abar = flow_vp_map(s)
        return self.mixture.responsibilities(z / c, weights, abar)  # (B, K)

    def _affine(self, r: torch.Tensor, A: torch.Tensor, b: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``sum_k r_k (A_k z + b_k)`` for ``r (B, K)``, ``z (B, n)`` -> ``(B, n)``."""
        if A.ndim == 3:
            return torch.einsum("bk,kij,bj->bi", r, A, z) + r @ b
        return z * (r @ A) + r @ b

    def _velocity(self, z: torch.Tensor, weights, s: float) -> torch.Tensor:
        _, _, Av, bv = self._posterior_terms(s)
        return self._affine(self._responsibilities(z, weights, s), Av, bv, z)

    def _x0(self, z: torch.Tensor, weights, s: float) -> torch.Tensor:
        Ax, bx, _, _ = self._posterior_terms(s)
        return self._affine(self._responsibilities(z, weights, s), Ax, bx, z)

    # -- densities -------------------------------------------------------------------------------

    def log_prob(self, z_t: torch.Tensor, t, cond) -> torch.Tensor:
        """Exact ``log p_s(z_t | y)`` per sample, float64 ``(B,)``."""
        check_latents(self, z_t)
        c, abar = flow_vp_map(self.sigma(t))
        z = z_t.detach().reshape(z_t.shape[0], -1).to(device="cpu", dtype=torch.float64)
        return self.mixture.log_prob(z / c, cond, abar) - self.mixture.dim * math.log(c)

    def responsibilities(self, z_t: torch.Tensor, t, cond) -> torch.Tensor:
        """Posterior component probabilities ``p_s(k | z_t, y)``, float64 ``(B, K)``."""
        check_latents(self, z_t)
        z = z_t.detach().reshape(z_t.shape[0], -1).to(device="cpu", dtype=torch.float64)
        return self._responsibilities(z, cond, self.sigma(t))

    FAMILY = "gmm-flow"

    def schedule_description(self) -> dict:
        cfg = self.scheduler.config
        return {k: _plain(cfg.get(k)) for k in (*GRID_KEYS, "stochastic_sampling")}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


# --------------------------------------------------------------------------------------------
# the fine-grained family under the flow


def flow_family_model(family: FineGrainedFamily, *, shift: float = 1.0, stochastic: bool = False,
                      guidance_scale: float = 1.0, dtype: torch.dtype = torch.float32, name: str = "gmm-flow",
                      perturb: float = 0.0, perturb_seed: int | None = None, **scheduler_overrides) -> FlowGMMDenoiser:
    """A flow model of the fine-grained family (``gmm.fine_grained_family``): the same mixture
    (the same data) under the rectified-flow interpolant, with a ``FlowMatchEulerDiscreteScheduler``
    of time shift ``shift`` (``flow_schedules.make_flow_scheduler``). ``perturb > 0`` moves the
    means (``FineGrainedFamily.perturbed``): a "fine-tune" of the same flow ecosystem. Models of one
    family and one shift are one ecosystem by construction. The description holds what
    ``flow_from_description`` needs to rebuild the model."""
    if not (is_finite_real(perturb) and perturb >= 0):
        raise ValueError(f"perturb must be a finite number >= 0; got {perturb!r}")
    seed = family.seed + 1 if perturb_seed is None else perturb_seed
    mixture = family.perturbed(perturb, seed) if perturb else family.mixture
    provenance = {"family_params": dict(family.params), "flow_shift": float(shift), "flow_stochastic": bool(stochastic),
                  "scheduler_overrides": dict(scheduler_overrides), "perturb": float(perturb),
                  "perturb_seed": int(seed) if perturb else None}
    scheduler = make_flow_scheduler(shift, stochastic=stochastic, **scheduler_overrides)
    return FlowGMMDenoiser(mixture, scheduler, guidance_scale=guidance_scale, dtype=dtype, name=name,
                           provenance=provenance)


def flow_from_description(desc: dict, dtype: torch.dtype | None = None) -> FlowGMMDenoiser:
    """Rebuild a fine-grained-family flow denoiser from its ``describe()`` (as a trace store keeps
    it), so analyses can evaluate its exact density and velocity."""
    if desc.get("family") != "gmm-flow" or "family_params" not in desc:
        raise ValueError(f"not a fine-grained flow GMM description (family 'gmm-flow' with family_params); "
                         f"got keys {sorted(desc)}")
    params = dict(desc["family_params"])
    params["latent_shape"] = tuple(params["latent_shape"])
    dtype = dtype or getattr(torch, desc.get("dtype", "float32"))
    return flow_family_model(fine_grained_family(**params), shift=desc.get("flow_shift", 1.0),
                             stochastic=desc.get("flow_stochastic", False), guidance_scale=desc["guidance_scale"],
                             dtype=dtype, name=desc["name"], perturb=desc.get("perturb", 0.0),
                             perturb_seed=desc.get("perturb_seed"), **desc.get("scheduler_overrides", {}))

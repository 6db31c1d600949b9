"""Exact denoisers for Gaussian-mixture data under a VP schedule, in any dimension.

Data ``x_0 | y ~ sum_k pi_k(y) N(mu_k, diag(s_k^2))`` over K shared components; a condition
``y`` is a weight vector ``pi(y)`` over them. Under the forward process
``z_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) xi`` every component stays Gaussian,

    p_t(z | y) = sum_k pi_k(y) N(z; sqrt(abar_t) mu_k, diag(v_k)),  v_k = abar_t s_k^2 + 1 - abar_t,

so the score, and the epsilon of eq. (4), ``eps = -sqrt(1 - abar_t) grad log p_t(z | y)``, are
exact. The mixture itself (densities, scores, sampling; diagonal or full covariances) is the
one engine of ``amdm_geom.models.mixture``, re-exported here as ``GaussianMixture``; this
module makes denoisers of it (``GMMDenoiser``) and the fine-grained family. Models conditioned
on different weight vectors over the same components form one ecosystem by construction (same
data manifold, same SDE). Everything is computed in float64 and returned in the denoiser's
dtype.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import DDIMScheduler

from amdm_geom.core.schedules import make_scheduler
from amdm_geom.models.base import check_latents
from amdm_geom.models.guidance import guided, uses_guidance
from amdm_geom.models.mixture import GaussianMixture
from amdm_geom.models.ve import VEDenoiser

__all__ = ["FineGrainedFamily", "GMMDenoiser", "GaussianMixture", "MixtureModel", "fine_grained_family",
           "from_description", "is_finite_real"]


class MixtureModel:
    """What the exact models of a Gaussian mixture share, ``GMMDenoiser`` (VP, eq. 4) and the flow's
    ``FlowGMMDenoiser`` (App. G): the mixture, its scheduler, the guidance scale with the
    unconditional weights ``uncond_weights`` (default: uniform, also ``null_condition()``), the
    dtype, device and name. Its ``condition_kind`` is ``"gmm-weights:K"``: models of K components
    take each other's weights."""

    def __init__(self, mixture: GaussianMixture, scheduler, *, guidance_scale: float = 1.0,
                 uncond_weights: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", name: str = "gmm", provenance: dict | None = None):
        self.mixture = mixture
        self.scheduler = scheduler
        self.latent_shape = tuple(mixture.latent_shape)
        if not is_finite_real(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number; got {guidance_scale!r}")
        self.guidance_scale = float(guidance_scale)
        k = mixture.n_components
        self.uncond_weights = mixture.check_weights(
            torch.full((k,), 1.0 / k, dtype=torch.float64) if uncond_weights is None else uncond_weights)
        self.dtype = dtype
        self.device = torch.device(device)
        self.name = name
        self.provenance = dict(provenance or {})

    @property
    def condition_kind(self) -> str:
        return f"gmm-weights:{self.mixture.n_components}"

    def null_condition(self) -> torch.Tensor:
        """The unconditional weights ``(K,)`` (those guidance uses)."""
        return self.uncond_weights

    #: The ``family`` a description names (``describe``).
    FAMILY = "gmm"

    def schedule_description(self) -> dict:
        """The scheduler's settings that identify the model's SDE."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What identifies the model (stored with a run)."""
        return {
            "family": self.FAMILY,
            "name": self.name,
            "latent_shape": list(self.latent_shape),
            "n_components": self.mixture.n_components,
            "guidance_scale": self.guidance_scale,
            "dtype": str(self.dtype).replace("torch.", ""),
            "schedule": self.schedule_description(),
            **self.provenance,
        }


class GMMDenoiser(MixtureModel):
    """The exact epsilon of a Gaussian mixture, ``eps = model(z_t, t, cond)`` (eq. 4).

    ``cond`` is a weight vector over the mixture's components, ``(K,)`` or ``(B, K)``. With
    ``guidance_scale`` s > 1 the output is classifier-free-style, ``eps_u + s (eps_c - eps_u)``
    (``amdm_geom.models.guidance``, diffusers' rule: no guidance at s <= 1), where ``eps_u``
    uses ``uncond_weights`` (``MixtureModel``). The scheduler is SD's DDIM by default.
    """

    def __init__(self, mixture: GaussianMixture, scheduler: DDIMScheduler | None = None, *,
                 guidance_scale: float = 1.0, uncond_weights: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 name: str = "gmm", provenance: dict | None = None):
        super().__init__(mixture, scheduler if scheduler is not None else make_scheduler(),
                         guidance_scale=guidance_scale, uncond_weights=uncond_weights, dtype=dtype, device=device,
                         name=name, provenance=provenance)
        self._alphas_cumprod = self.scheduler.alphas_cumprod.to(torch.float64)

    def alpha_bar(self, t) -> float:
        """``abar_t`` of this model's schedule at integer timestep ``t``."""
        return float(self._alphas_cumprod[int(t)])

    def __call__(self, z_t: torch.Tensor, t, cond) -> torch.Tensor:
        """``z_t (B, *latent_shape)`` at timestep ``t`` -> exact (guided) ``eps``, same shape.

        Computed in float64 in chunks of rows of at most ``CHUNK_BYTES`` each (large float64
        temporaries cost a fresh mapping, and its page faults, per allocation), each chunk cast to
        the model's dtype as it is done."""
        check_latents(self, z_t)
        flat = z_t.detach().reshape(z_t.shape[0], -1)
        abar = self.alpha_bar(t)
        weights = cond if cond is None else torch.as_tensor(cond, dtype=torch.float64)
        per_sample = weights is not None and weights.ndim == 2
        rows = chunk_rows(flat.shape[1])
        pieces = []
        for i in range(0, flat.shape[0], rows):
            z = flat[i:i + rows].to(device="cpu", dtype=torch.float64)
            eps = self._eps(z, weights[i:i + rows] if per_sample else weights, abar)
            if uses_guidance(self.guidance_scale):
                eps = guided(self._eps(z, self.uncond_weights, abar), eps, self.guidance_scale)
            pieces.append(eps.to(self.dtype))
        out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        return out.reshape(z_t.shape).to(device=self.device)

    def _eps(self, z: torch.Tensor, weights, abar: float) -> torch.Tensor:
        return self.mixture.scaled_score(z, weights, abar, -math.sqrt(1.0 - abar))

    def log_prob(self, z_t: torch.Tensor, t, cond) -> torch.Tensor:
        """Exact ``log p_t(z_t | y)`` per sample, float64 ``(B,)``."""
        z = z_t.detach().reshape(z_t.shape[0], -1).to(device="cpu", dtype=torch.float64)
        return self.mixture.log_prob(z, cond, self.alpha_bar(t))

    def responsibilities(self, z_t: torch.Tensor, t, cond) -> torch.Tensor:
        """Posterior component probabilities ``p_t(k | z_t, y)``, float64 ``(B, K)``."""
        z = z_t.detach().reshape(z_t.shape[0], -1).to(device="cpu", dtype=torch.float64)
        return self.mixture.responsibilities(z, cond, self.alpha_bar(t))

    def schedule_description(self) -> dict:
        cfg = self.scheduler.config
        return {k: cfg.get(k) for k in ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps")}


# --------------------------------------------------------------------------------------------
# the default fine-grained family


@dataclass
class FineGrainedFamily:
    """Components indexed by two attributes, ``position`` x ``colour`` (and optionally a third,
    ``style``); component ``k = (p * n_colours + c) * n_styles + s`` has mean ``a_p + b_c (+ c_s)``.
    A condition favours one value of one attribute (or several); the intersection of y1 =
    position p and y2 = colour c, component ``(p, c)``, is the fine-grained target."""

    mixture: GaussianMixture
    n_positions: int
    n_colours: int
    strength: float
    seed: int
    params: dict = field(default_factory=dict)  # the arguments of fine_grained_family
    n_styles: int = 1

    def condition(self, position: int | None = None, colour: int | None = None,
                  strength: float | None = None, style: int | None = None) -> torch.Tensor:
        """Weights ``(K,)``: mass ``strength`` spread evenly over the components that match the
        given attribute value(s), the rest evenly over the others (uniform if none given)."""
        s = self.strength if strength is None else strength
        if not (is_finite_real(s) and 0 < s <= 1):
            raise ValueError(f"strength must be in (0, 1]; got {s!r}")
        match = torch.ones(self.mixture.n_components, dtype=torch.bool)
        labels = self.mixture.labels
        if style is not None and self.n_styles == 1:
            raise ValueError(f"this family has no style attribute (n_styles = 1); got style={style!r}")
        for name, value, size in (("position", position, self.n_positions), ("colour", colour, self.n_colours),
                                  ("style", style, self.n_styles)):
            if value is None:
                continue
            if not 0 <= int(value) < size:
                raise ValueError(f"{name} must be in [0, {size - 1}]; got {value!r}")
            match &= labels[name] == int(value)
        k, m = self.mixture.n_components, int(match.sum())
        if m == k:
            return torch.full((k,), 1.0 / k, dtype=torch.float64)
        return torch.where(match, s / m, (1 - s) / (k - m)).to(torch.float64)

    def target(self, position: int, colour: int, style: int | None = None) -> torch.Tensor:
        """Boolean ``(K,)`` mask of the fine-grained target component(s)."""
        labels = self.mixture.labels
        mask = (labels["position"] == position) & (labels["colour"] == colour)
        return mask & (labels["style"] == style) if style is not None else mask

    def model(self, schedule: str = "scaled_linear", *, guidance_scale: float = 1.0,
              dtype: torch.dtype = torch.float32, name: str = "gmm", perturb: float = 0.0,
              perturb_seed: int | None = None, **schedule_overrides) -> GMMDenoiser:
        """A denoiser of this family under the VP schedule ``schedule`` (see ``make_scheduler``).

        ``perturb > 0`` moves the means (``perturbed``): a "fine-tuned" model of the same
        ecosystem. Everything needed to rebuild the model (``from_description``) goes into its
        description.
        """
        if not (is_finite_real(perturb) and perturb >= 0):
            raise ValueError(f"perturb must be a finite number >= 0; got {perturb!r}")
        seed = self.seed + 1 if perturb_seed is None else perturb_seed
        mixture = self.perturbed(perturb, seed) if perturb else self.mixture
        provenance = {"family_params": dict(self.params), "schedule_kind": schedule,
                      "schedule_overrides": dict(schedule_overrides), "perturb": float(perturb),
                      "perturb_seed": int(seed) if perturb else None}
        return GMMDenoiser(mixture, make_scheduler(schedule, **schedule_overrides),
                           guidance_scale=guidance_scale, dtype=dtype, name=name, provenance=provenance)

    def perturbed(self, scale: float, seed: int) -> GaussianMixture:
        """The same components with means moved by ``scale`` times their typical separation in a
        random (seeded) direction: a "fine-tuned" model of the same ecosystem."""
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(self.mixture.means.shape, generator=g, dtype=torch.float64)
        sep = float(torch.cdist(self.mixture.means, self.mixture.means).mean())
        noise *= scale * sep / noise.norm(dim=1, keepdim=True)
        return GaussianMixture(self.mixture.means + noise, self.mixture.variances,
                               self.mixture.latent_shape, dict(self.mixture.labels))


def fine_grained_family(latent_shape: tuple[int, ...] = (4, 64, 64), *, n_positions: int = 4,
                        n_colours: int = 4, n_styles: int = 1, separation: float = 8.0, component_std: float = 0.6,
                        strength: float = 0.9, seed: int = 0) -> FineGrainedFamily:
    """The default fine-grained GMM family.

    Attribute features ``a_p`` (position), ``b_c`` (colour) and, with ``n_styles > 1``, ``c_s``
    (style, for three-model aggregation) are random directions of norm ``separation / sqrt(2)``,
    so components differing in one attribute are about ``separation`` apart and the data are not
    Gaussian; component ``(p, c, s)`` has mean ``a_p + b_c (+ c_s)`` and isotropic std
    ``component_std``. With the defaults at SD's latent size the attributes are decided in the
    middle of the reverse process (``abar_t separation^2`` of order 1-10), not at z_T.
    """
    if n_positions < 1 or n_colours < 1 or n_styles < 1:
        raise ValueError(f"n_positions, n_colours and n_styles must be >= 1; "
                         f"got {n_positions}, {n_colours}, {n_styles}")
    if not (is_finite_real(separation) and separation >= 0 and is_finite_real(component_std) and component_std > 0):
        raise ValueError(f"separation must be finite and >= 0 and component_std finite and > 0; "
                         f"got {separation}, {component_std}")
    if not (is_finite_real(strength) and 0 < strength <= 1):
        raise ValueError(f"strength must be in (0, 1]; got {strength!r}")
    if not (len(latent_shape) >= 1 and all(_is_index(d) and d >= 1 for d in latent_shape)):
        raise ValueError(f"latent_shape must be one or more ints >= 1; got {tuple(latent_shape)!r}")
    n = math.prod(latent_shape)
    g = torch.Generator().manual_seed(seed)
    n_feats = n_positions + n_colours + (n_styles if n_styles > 1 else 0)
    feats = torch.randn(n_feats, n, generator=g, dtype=torch.float64)
    feats *= (separation / math.sqrt(2)) / feats.norm(dim=1, keepdim=True)
    a, b = feats[:n_positions], feats[n_positions:n_positions + n_colours]
    # component k = (p * n_colours + c) * n_styles + s
    pos = torch.arange(n_positions).repeat_interleave(n_colours * n_styles)
    col = torch.arange(n_colours).repeat_interleave(n_styles).repeat(n_positions)
    sty = torch.arange(n_styles).repeat(n_positions * n_colours)
    means = a[pos] + b[col]
    labels = {"position": pos, "colour": col}
    if n_styles > 1:
        means = means + feats[n_positions + n_colours:][sty]
        labels["style"] = sty
    mixture = GaussianMixture(means, torch.full((1, n), component_std**2, dtype=torch.float64),
                              tuple(latent_shape), labels)
    params = {"latent_shape": list(latent_shape), "n_positions": n_positions, "n_colours": n_colours,
              "separation": separation, "component_std": component_std, "strength": strength, "seed": seed}
    if n_styles > 1:
        params["n_styles"] = n_styles
    return FineGrainedFamily(mixture, n_positions, n_colours, strength, seed, params, n_styles)


#: The largest float64 temporary a chunk of rows makes (``GMMDenoiser.__call__``).
CHUNK_BYTES = 4 << 20


def chunk_rows(numel: int) -> int:
    """Rows of ``numel`` float64 entries per chunk: at least 1, at most ``CHUNK_BYTES`` worth."""
    return max(1, CHUNK_BYTES // (8 * max(1, numel)))


def is_finite_real(value) -> bool:
    """A finite real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


def _is_index(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def from_description(desc: dict, dtype: torch.dtype | None = None) -> GMMDenoiser:
    """Rebuild a fine-grained-family GMM denoiser from its ``describe()`` (as stored in a trace
    store's config), so analyses can evaluate its exact density."""
    if desc.get("family") != "gmm" or "family_params" not in desc:
        raise ValueError(f"not a fine-grained GMM family description: {sorted(desc)}")
    params = dict(desc["family_params"])  # (the VE wrapper keeps its base's description)
    params["latent_shape"] = tuple(params["latent_shape"])
    fam = fine_grained_family(**params)
    dtype = dtype or getattr(torch, desc.get("dtype", "float32"))
    model = fam.model(desc["schedule_kind"], guidance_scale=desc["guidance_scale"], dtype=dtype, name=desc["name"],
                      perturb=desc.get("perturb", 0.0), perturb_seed=desc.get("perturb_seed"),
                      **desc.get("schedule_overrides", {}))
    if desc.get("parametrization") == "ve":
        return VEDenoiser(model, name=desc["name"])
    return model

"""Prop. 3.1's proof, the sentence before eq. (23): "since eps_1 and eps_2 are independent Gaussian
noises, we have sigma_t |eps_1 - eps_2| ~ sqrt(2n)".

For independent ``xi_1, xi_2 ~ N(0, I_n)``, ``|xi_1 - xi_2|^2 / 2 ~ chi2_n``, so
``|xi_1 - xi_2| / sqrt(2n) = chi_n / sqrt(n)`` concentrates at 1: ``|xi_1 - xi_2| ~ sqrt(2n)``, and the
printed sentence, with sigma_t on the left only, is off by the factor sigma_t. Eq. (23) itself
writes ``sigma_t sqrt(2n)`` and is not affected (its reading as a bound is
``prop31_delta_noise``'s subject).

``dataset`` computes, in float64 by hand from the scheduler's config, sigma_t of SD's DDIM schedule
(eq. 4 with DDIM eta: ``sigma_t = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)``)
and the median and central 99% interval of ``chi_n / sqrt(n)`` (scipy's exact chi law);
``verdicts`` says at how many steps the printed sentence holds: where sqrt(2n) lies in sigma_t times
that interval, i.e. ``1 / sigma_t`` in it.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
from scipy import stats

from amdm_geom.core import schedules
from amdm_geom.core.verdicts import Verdict, status_of

__all__ = ["LEVEL", "dataset", "ddim_sigma", "verdicts"]

#: the central interval of chi_n / sqrt(n) the printed "~" is read against
LEVEL = 0.99


def ddim_sigma(config, num_inference_steps: int, eta: float) -> tuple[np.ndarray, np.ndarray]:
    """``(t, sigma_t)`` per DDIM step, in float64 from a DDIM config's betas ("linear" or "scaled_linear"),
    "leading" timestep spacing with ``steps_offset``, ``set_alpha_to_one`` for the last step; ``eta`` the DDIM
    eta. Raises ValueError for any other schedule."""
    kind, spacing = config["beta_schedule"], config.get("timestep_spacing", "leading")
    if kind not in ("linear", "scaled_linear") or spacing != "leading" or config.get("trained_betas") is not None:
        raise ValueError(f"ddim_sigma needs beta_schedule linear or scaled_linear with leading spacing; got "
                         f"{kind!r}, {spacing!r}")
    if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta must be a finite float >= 0; got {eta!r}")
    n_train, b0, b1 = int(config["num_train_timesteps"]), float(config["beta_start"]), float(config["beta_end"])
    betas = np.linspace(b0, b1, n_train) if kind == "linear" else np.linspace(b0**0.5, b1**0.5, n_train) ** 2
    abar = np.cumprod(1.0 - betas)
    ratio = n_train // int(num_inference_steps)
    t = np.arange(num_inference_steps)[::-1] * ratio + int(config.get("steps_offset", 0))
    prev = t - ratio
    final = 1.0 if config.get("set_alpha_to_one", True) else abar[0]
    abar_t, abar_prev = abar[t], np.where(prev >= 0, abar[np.maximum(prev, 0)], final)
    return t, float(eta) * np.sqrt((1 - abar_prev) / (1 - abar_t)) * np.sqrt(1 - abar_t / abar_prev)


def dataset(n: int = 4 * 64 * 64, *, scheduler=None, num_inference_steps: int = 50, eta: float = 1.0) -> xr.Dataset:
    """sigma_t per step (``eq23_sigma`` over ``eq23_step``, with ``eq23_t``) of ``scheduler`` (default SD 1.x's,
    ``schedules.make_scheduler()``), and the median and central ``LEVEL`` interval of ``|xi_1 - xi_2| / sqrt(2n)``
    (``eq23_ratio_median``, ``eq23_ratio_lo``, ``eq23_ratio_hi``; 0-d), with ``eq23_n`` and ``eq23_eta``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1; got {n!r}")
    config = dict((scheduler or schedules.make_scheduler()).config)
    t, sigma = ddim_sigma(config, num_inference_steps, eta)
    tail = (1 - LEVEL) / 2
    lo, mid, hi = stats.chi.ppf([tail, 0.5, 1 - tail], n) / math.sqrt(n)
    return xr.Dataset(
        {"eq23_sigma": ("eq23_step", sigma), "eq23_t": ("eq23_step", t),
         "eq23_ratio_median": mid, "eq23_ratio_lo": lo, "eq23_ratio_hi": hi, "eq23_n": int(n), "eq23_eta": float(eta),
         "eq23_level": LEVEL},
        coords={"eq23_step": np.arange(len(t))})


def _factor(sigma: float) -> str:
    """``"2.20 times"``: 1 / sigma_t, how many times the printed sqrt(2n) is the typical sigma_t |xi_1 - xi_2|."""
    return f"{1 / sigma:.3g} times" if sigma > 0 else "infinitely many times (sigma_t = 0: a deterministic step)"


def verdicts(ds: xr.Dataset) -> list[Verdict]:
    """``prop31_eq23_sigma_printed``: the printed sentence holds at a step where 1/sigma_t lies in the interval."""
    sigma = ds["eq23_sigma"].values
    lo, hi, mid = (float(ds[k]) for k in ("eq23_ratio_lo", "eq23_ratio_hi", "eq23_ratio_median"))
    n, level, eta = int(ds["eq23_n"]), float(ds["eq23_level"]), float(ds["eq23_eta"])
    with np.errstate(divide="ignore"):
        inv = 1.0 / sigma  # the printed size sqrt(2n) over the typical sigma_t sqrt(2n)
    holds = (inv >= lo) & (inv <= hi)
    top, low = float(sigma.max()), float(sigma.min())
    return [Verdict(
        key="prop31_eq23_sigma_printed", claim="sigma_t |eps_1 - eps_2| ~ sqrt(2n)", family="prop31",
        where="Prop. 3.1 proof, before eq. (23)", status=status_of(not holds.all()),
        measured=f"sigma_t in [{low:.3g}, {top:.3g}]; holds at {int(holds.sum())}/{len(sigma)} steps",
        bound=f"sigma_t in [{1 / hi:.4f}, {1 / lo:.4f}]", value=top, reference=1.0, n=len(sigma),
        test=f"sqrt(2n) in sigma_t x the central {100 * level:g}% interval of |xi_1 - xi_2| (exact chi law)",
        detail=(f"|xi_1 - xi_2| / sqrt(2n) = chi_n / sqrt(n) has median {mid:.5f} and central {100 * level:g}% "
                f"interval [{lo:.4f}, {hi:.4f}] at n = {n}: |eps_1 - eps_2| ~ sqrt(2n), so sigma_t |eps_1 - eps_2| ~ "
                f"sigma_t sqrt(2n), and the printed sentence (no sigma_t on the right) is off by the factor sigma_t. "
                f"On SD's DDIM schedule ({len(sigma)} steps, DDIM eta = {eta:g}) sigma_t runs from {low:.4f} to "
                f"{top:.4f}, so the printed right-hand side is {_factor(top)} to {_factor(low)} the typical size of "
                f"the left; the sentence holds at {int(holds.sum())} of {len(sigma)} steps. The "
                "corrected reading is sigma_t |eps_1 - eps_2| ~ sigma_t sqrt(2n), which is what eq. (23) uses: eq. "
                "(23) carries sigma_t and is not affected (whether sigma_t sqrt(2n) bounds the noise term is "
                "prop31_delta_noise)."))]

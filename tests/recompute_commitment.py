"""Independent recomputations of the commitment analysis' verdict values, for tests/test_validate.py
(``RECOMPUTE`` / ``PREFIXES``: ``(run, key) -> float``), from what the run wrote to
``<report>/commitment/results.zarr``: the commitment states again by an explicit loop over each sample's stored
posterior path, and the speciation time from dense n x n covariances of the family rebuilt from its parameters
(the analysis uses a V x V Gram matrix and never forms them)."""

from __future__ import annotations

import json
import math

import numpy as np
import xarray as xr

from amdm_geom.models.gmm import fine_grained_family

__all__ = ["PREFIXES", "RECOMPUTE", "commitment_early_row", "commitment_speciation_row"]

THRESHOLD = 0.9  # the analysis' documented commitment threshold


def _results(run) -> xr.Dataset:
    return xr.open_zarr(run.report / "commitment" / "results.zarr", consolidated=False).load()


def _commit_states(path: np.ndarray) -> list[int]:
    """Per sample (columns of ``path (S, B)``): the state after the last one not above the threshold."""
    out = []
    for column in path.T:
        k = len(column)
        while k > 0 and column[k - 1] > THRESHOLD:
            k -= 1
        out.append(k if column[-1] > THRESHOLD else len(column))
    return out


def _dense_lambda(res: xr.Dataset, attribute: str) -> float:
    params = json.loads(res.attrs["family"])
    params["latent_shape"] = tuple(params["latent_shape"])
    mixture = fine_grained_family(**params).mixture
    means, var = mixture.means.numpy(), mixture.variances.numpy()
    labels = mixture.labels[attribute].numpy()
    mbar = means.mean(0)
    values = sorted(set(labels.tolist()))
    between = sum(np.outer(means[labels == v].mean(0) - mbar, means[labels == v].mean(0) - mbar)
                  for v in values) / len(values)
    cov = sum(np.diag(var[k]) + np.outer(means[k] - mbar, means[k] - mbar) for k in range(len(means))) / len(means)
    u = np.linalg.eigh(between)[1][:, -1]
    return float(u @ cov @ u)


def commitment_speciation_row(run, key):
    """t_S - the median commitment OU time of the unconditional model's samples."""
    attribute = key.removeprefix("commitment_speciation_")
    res = _results(run)
    t_s = 0.5 * math.log(_dense_lambda(res, attribute))
    abar = res.alpha_bar.values
    ks = _commit_states(res.path.sel(run="uncond", attribute=attribute).values)
    taus = [-0.5 * math.log(abar[k]) if k < len(abar) else 0.0 for k in ks]
    return t_s - float(np.median(taus))


def commitment_early_row(run, key):
    """The share of samples committed by state T // 2."""
    attribute, name = key.removeprefix("commitment_early_").split("_", 1)
    res = _results(run)
    ks = _commit_states(res.path.sel(run=name, attribute=attribute).values)
    half = (res.sizes["state"] - 1) // 2
    return sum(k <= half for k in ks) / len(ks)


RECOMPUTE: dict = {}
PREFIXES = {"commitment_speciation_": commitment_speciation_row, "commitment_early_": commitment_early_row}

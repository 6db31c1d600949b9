"""Independent recomputations of the commitment_trained analysis' verdict values, for tests/test_validate.py
(``RECOMPUTE`` / ``PREFIXES``: ``(run, key) -> float | None``), from what the run wrote to
``<report>/commitment_trained/results.zarr``: the commitment states again by an explicit walk back along each
sample's stored detector readings, and the speciation time from the dense 768 x 768 between-class and data
covariances of the training images rebuilt with ``make_dataset`` (the analysis uses a V x V Gram matrix and never
forms them)."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from amdm_geom.models.digits.data import make_dataset

__all__ = ["PREFIXES", "RECOMPUTE", "before_last_row", "order_row", "speciation_row"]

LATE = 0.8  # the analysis' documented "last steps": committed by state 0.8 T
#: the analysis' documented comparison runs: a model not conditioned on the attribute
SPECIATION_RUN = {"position": "digit", "colour": "digit", "digit": "position"}
ATTRIBUTES = ("position", "colour", "digit")


def _results(run) -> xr.Dataset:
    return xr.open_zarr(run.report / "commitment_trained" / "results.zarr", consolidated=False).load()


def _commit_states(res: xr.Dataset, name: str, attribute: str) -> list[int]:
    """Per sample: walking back from the output, the first state of the final run of readings equal to the last."""
    path = res.reading.sel(run=name).values[:, :, ATTRIBUTES.index(attribute)]  # (S, B)
    out = []
    for column in path.T:
        k = len(column) - 1
        while k > 0 and column[k - 1] == column[-1]:
            k -= 1
        out.append(k)
    return out


def order_row(run, key):
    """The share of untied samples whose attribute commits strictly before the digit class (None: all tied)."""
    attribute, name = key.removeprefix("commitment_trained_").split("_before_digit_")
    res = _results(run)
    a, d = _commit_states(res, name, attribute), _commit_states(res, name, "digit")
    untied = [x < y for x, y in zip(a, d) if x != y]
    return sum(untied) / len(untied) if untied else None


def before_last_row(run, key):
    """The share of samples committed by state 0.8 T."""
    attribute, name = key.removeprefix("commitment_trained_before_last_").split("_", 1)
    res = _results(run)
    last = round(LATE * (res.sizes["state"] - 1))
    ks = _commit_states(res, name, attribute)
    return sum(k <= last for k in ks) / len(ks)


def _dense_lambda(res: xr.Dataset, attribute: str) -> float:
    data = make_dataset(int(res.attrs["data_n"]), seed=int(res.attrs["data_seed"]))
    x = data.images.reshape(len(data.images), -1).astype(np.float64)
    labels = getattr(data, attribute)
    mean = x.mean(0)
    between = np.zeros((x.shape[1], x.shape[1]))
    for v in np.unique(labels):
        d = x[labels == v].mean(0) - mean
        between += (labels == v).mean() * np.outer(d, d)
    u = np.linalg.eigh(between)[1][:, -1]
    return float(u @ np.cov(x, rowvar=False, bias=True) @ u)


def speciation_row(run, key):
    """t_S = log(Lambda) / 2 minus the median OU time (-log(abar) / 2) of the compared run's commitment states."""
    attribute = key.removeprefix("commitment_trained_speciation_")
    res = _results(run)
    t_s = 0.5 * math.log(_dense_lambda(res, attribute))
    abar = res.alpha_bar.values
    taus = [-0.5 * math.log(abar[k]) for k in _commit_states(res, SPECIATION_RUN[attribute], attribute)]
    return t_s - float(np.median(taus))


RECOMPUTE: dict = {}
PREFIXES = {"commitment_trained_speciation_": speciation_row, "commitment_trained_before_last_": before_last_row,
            "commitment_trained_position_before_digit_": order_row,
            "commitment_trained_colour_before_digit_": order_row}

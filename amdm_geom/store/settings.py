"""A run's settings, read one way: typed, from the one spec a store keeps.

A store keeps one spec (``attrs["spec"]``, JSON; ``amdm_geom.sampling.plan``): the spec the run was
made from (a probe's, or an analysis run's), or ``{"sampler": ...}`` for a sampler run by code,
its ``sampler`` always Algorithm 1's settings as the run used them. ``attrs["built"]`` describes
what the spec built: each model, each condition, how the cross terms were evaluated.

- ``spec_of(ds, spec_type)``: the spec, as the class that made it (a probe's ``Spec``; the
  registry's ``spec_of`` finds that class from the store's ``probe`` or ``analysis`` attribute);
- ``sampler_config(ds)``: the typed ``SamplerConfig`` (``etas(ds)``: eta_i of eq. 7 per model);
- ``built_of(ds)``: the models', the conditions' and the cross terms' descriptions.

These read any spec's shape: only the sampler's place, ``spec["sampler"]`` (every ``RunSpec``
has it), is assumed. Stores written before stores kept one spec carry ``attrs["config"]`` (the
sampler's settings, the per-model etas, the models, the conditions and the cross terms) and,
when a probe made them, ``attrs["spec"]`` with the settings as given: they read through the same
functions, from ``config`` (the legacy path).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypeVar

import xarray as xr

from amdm_geom.core.spec import Spec
from amdm_geom.sampling.config import SamplerConfig
from amdm_geom.store.identity import StoreError
from amdm_geom.store.reading import require, source_of

__all__ = ["Built", "built_of", "etas", "sampler_config", "spec_of"]

S = TypeVar("S", bound=Spec)


@dataclass(frozen=True)
class Built:
    """What a run's spec built, as its store describes it (JSON-able data)."""

    models: tuple[dict, ...]
    """each model's ``describe()``: its name, family, dtype, ... (``from_description`` rebuilds a GMM's)."""
    conditions: tuple
    """each model's condition y_i: its values (a short vector), a digest, or a pipeline condition's description."""
    cross_terms: tuple[str | None, ...] | None
    """with ``record_cross_eps``: per model, ``"conditional"`` (at y_i) or ``"unconditional"`` (at the null
    conditions), ``None`` for model 0; ``None`` without cross terms."""


def _json_attr(ds: xr.Dataset, name: str) -> dict:
    try:
        data = json.loads(ds.attrs[name])
    except (TypeError, ValueError):
        raise StoreError(f"store {source_of(ds)} has a {name!r} attribute that is not JSON") from None
    if not isinstance(data, dict):
        raise StoreError(f"store {source_of(ds)} has a {name!r} attribute that is not a JSON object")
    return data


def _legacy(ds: xr.Dataset) -> dict | None:
    """A store written before stores kept one spec: its ``config`` attribute (else None)."""
    return _json_attr(ds, "config") if "config" in ds.attrs and "built" not in ds.attrs else None


def spec_of(ds: xr.Dataset, spec_type: type[S]) -> S:
    """The spec ``ds`` was made from, as ``spec_type`` (the ``Spec`` class of the probe, or of the
    analysis runs, that made it) validates it. One-line ``StoreError`` if the store keeps none, or
    keeps one that ``spec_type`` does not take (the message names the field)."""
    require(ds, attrs=("spec",), hints={"spec": "written before stores kept their spec"})
    try:
        return spec_type.model_validate_json(ds.attrs["spec"])
    except ValueError as exc:
        why = " ".join(str(exc).split())
        raise StoreError(f"store {source_of(ds)} keeps a spec that {spec_type.__name__} does not take: {why}") from None


def sampler_config(ds: xr.Dataset) -> SamplerConfig:
    """The typed ``SamplerConfig`` the run used (its spec's ``sampler``; a legacy store's
    ``config["sampler"]``), equal to the sampler's own ``config``."""
    legacy = _legacy(ds)
    if legacy is not None:
        data = legacy.get("sampler")
    else:
        require(ds, attrs=("spec",))
        data = _json_attr(ds, "spec").get("sampler")
    if not isinstance(data, dict):
        raise StoreError(f"store {source_of(ds)} keeps no sampler settings in its spec")
    return SamplerConfig.model_validate(data)


def etas(ds: xr.Dataset) -> list[float]:
    """eta_i of eq. (7) for each of the store's models (``SamplerConfig.etas``)."""
    return sampler_config(ds).etas(int(ds.sizes.get("model", 1)))


def built_of(ds: xr.Dataset) -> Built:
    """The models, conditions and cross terms of the run (``attrs["built"]``; a legacy store's
    ``config``). One-line ``StoreError`` if the store describes none."""
    data = _legacy(ds)
    if data is None:
        require(ds, attrs=("built",))
        data = _json_attr(ds, "built")
    cross = data.get("cross_terms")
    return Built(models=tuple(data.get("models") or ()), conditions=tuple(data.get("conditions") or ()),
                 cross_terms=tuple(cross) if cross is not None else None)

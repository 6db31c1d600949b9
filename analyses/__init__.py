"""Analyses: one module per question the paper raises. Each exposes ``compute(...)`` returning
an ``xarray.Dataset`` of results, ``verdicts(ds)`` returning ``amdm_geom.verdicts.Verdict``
rows, and ``plot(ds)`` returning matplotlib figures. Geometry and bounds come from
``amdm_geom``; no analysis re-implements them.

- ``closed_forms``: the DDIM step, each closed-form bound against its exact quantity, the SD
  schedule at t = T.
"""

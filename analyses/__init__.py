"""Analyses: one module per question the paper raises. Each exposes ``compute(...)`` returning
an ``xarray.Dataset`` of results, ``verdicts(ds)`` returning ``amdm_geom.verdicts.Verdict``
rows, and ``plot(ds)`` returning matplotlib figures. Geometry and bounds come from
``amdm_geom``; no analysis re-implements them.

- ``closed_forms``: the DDIM step and the closed forms of Prop. 3.1 and 3.2 on constructed pairs.
- ``trace_checks``: the sampler against diffusers, eq. (4) and eq. (7) on every recorded step.
- ``norm_angle``: Prop. 3.1 on recorded trajectories, Table 5, the float16 precision study.
- ``shell``: Lemma A.1 (Monte Carlo, chi law, bound) and Prop. 3.2 (shell and domain membership).
- ``gaussianity``: App. D.1, the schedule's moments (Figure 6) and normality along the process.
- ``toy_mixture``: App. E, Table 7, AMDM against product-of-experts samplers in 2D.
- ``output``: writing results atomically.
"""

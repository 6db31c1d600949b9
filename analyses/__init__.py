"""Analyses: one module per question the paper raises, all following one contract, registered
by name under the entry-point group ``amdm_geom.analyses`` (a user's package adds its own the
same way) and run by one runner, ``amdm_geom.app.runner.run_analysis``, for ``amdm-geom analyze``,
``amdm-geom validate`` and the notebooks alike.

The contract. An analysis module has:

- ``NAME: str``: its registered name, and the name of its result folder ``<out>/<NAME>/``;
- ``SUMMARY: str``: one line for ``amdm-geom analyze --help``;
- ``STORES: str``: ``"required"`` (needs at least one trace store), ``"optional"`` or
  ``"none"`` (takes none); the runner refuses the wrong kind in one line before any work;
- ``compute(stores, *, quick=False, seed=0, runs=None) -> xarray.Dataset | xarray.DataTree``:
  ``stores`` is a ``Mapping[str, Path | xarray.Dataset]`` (store name -> a trace store's path
  or the opened store; empty for ``STORES = "none"``); ``quick`` asks for smaller settings
  where the analysis has them; ``seed`` seeds its own random draws; ``runs`` is a folder under
  which an analysis that runs its own trace stores writes them (``runs / NAME``), ``None``
  where it runs none. Further keyword-only parameters with defaults are allowed; the runner
  passes only these. A DataTree is for results whose parts have different dims (one node per
  part, e.g. one per store);
- ``verdicts(result) -> list[amdm_geom.core.verdicts.Verdict]``: from ``compute``'s result alone;
- ``plot(result) -> dict[str, matplotlib.figure.Figure]``: file name (a path relative to the
  result folder, ``.png`` added if absent) -> figure;
- optionally ``tables(result) -> dict[str, pandas.DataFrame]``: file name (``.csv`` added if
  absent) -> table;
- optionally ``RUNS`` (a probe-like module: ``Spec``, ``run(spec, quiet=...)``) and
  ``planned(*, quick, seed, runs) -> dict[str, RUNS.Spec]``: the trace stores the analysis runs
  for itself when given none, as specs (each into its ``run.out`` under ``runs / NAME``).
  ``amdm-geom validate`` and ``amdm-geom analyze`` run them as tasks on ``amdm_geom.app.engine``
  (in parallel) and pass their stores to ``compute``, which measures them;
- optionally ``RESULT: str``: the file stem of a Dataset result (default ``"results"``), and
  ``saved(result) -> xarray.Dataset | xarray.DataTree``: what of the result is written (default:
  all of it).
- optionally ``CAPTIONS: dict[str, str]``: fnmatch patterns over the figure names (without
  ``.png``, e.g. ``"*/norm_gap"``) -> the caption the report shows under each figure (first
  match wins; ``amdm_geom.app.runner.output.caption_of``); colours of models and methods come from
  ``amdm_geom.core.palette``.

What the runner writes, atomically, into ``<out>/<NAME>/`` (a result folder, see
``amdm_geom.app.runner.output``): a Dataset result as ``<RESULT>.zarr``; a DataTree's nodes that
hold variables each as ``<node path>.zarr`` (node ``/moments`` -> ``moments.zarr``, node
``/gmm_pair/results`` -> ``gmm_pair/results.zarr``; the root's own variables as
``<RESULT>.zarr``); each figure as ``<name>.png`` (dpi 110); each table as ``<name>.csv``
(``float_format="%.6g"``; the index is written unless it is an unnamed RangeIndex); the verdicts
as ``verdicts.json``.

The analyses (geometry and bounds come from ``amdm_geom``; no analysis re-implements them):

- ``closed_forms``: the DDIM step and the closed forms of Prop. 3.1 and 3.2 on constructed pairs.
- ``trace_checks``: the sampler against diffusers, eq. (4) and eq. (7) on every recorded step.
- ``norm_angle``: Prop. 3.1 on recorded trajectories and Table 5 beside the paper's.
- ``precision``: Table 5 of one configuration recorded in several dtypes (float16 against float64).
- ``shell``: Lemma A.1 (Monte Carlo, chi law, bound) and Prop. 3.2 (shell and domain membership).
- ``gaussianity``: App. D.1, the schedule's moments (Figure 6) and normality along the process.
- ``toy_mixture``: App. E, Table 7, AMDM against product-of-experts samplers in 2D.
- ``ablations``: Tables 1-4, Figure 5 and Table 10 on the exact GMM family (runs its own stores).

Helpers they share (not analyses themselves): ``common`` (reading a store's slots: written or
not, finite samples; paired differences), ``table5`` (the paper's Table 5 layout for any store),
``membership`` (Prop. 3.2 on recorded runs, for ``shell``), ``norm_angle_figures`` and
``gaussianity_figures``, ``ablation_runs`` (the ablation runs as typed specs; ``ablations``
exposes them as ``RUNS``, which is how ``amdm-geom rerun`` finds them) and ``ablation_verdicts``,
and the ``toy`` package (the 2D benchmark's targets, experts, samplers, MCMC and metrics).
"""

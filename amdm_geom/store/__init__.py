"""The trace layer: one sampler run as one zarr group, opened as an ``xarray.Dataset``.

Modules, from the bottom: ``identity`` (what a store is: its error, its identifying attributes),
``integrity`` (checksums, the written layout), ``urls`` (stores at fsspec URLs: ``memory://``,
``s3://``, ...; what they lack), ``paths`` (the checks before writing; safe replacement), ``lock``
(one writer per local store), ``reading`` (``open_run`` and the checks analyses need),
``settings`` (a run's settings, typed: ``spec_of``, ``sampler_config``, ``built_of``) and
``recorder`` (``ZarrRecorder``). The layout itself (hook names, step coordinates, attributes) is
the sampling layer's ``RunPlan``.

Schema (README, "Store schema"; written down before the code, in the manner of ArviZ's InferenceData):

- dims: ``step``, ``model``, ``sample``, then the latent's own dims (``channel``, ``height``,
  ``width`` for image latents, ``dim`` for vectors, ``d0``, ``d1``, ... otherwise). Every dim
  has an integer coordinate.
- variables: one per hook quantity. ``z``, ``eps``, ``x0``, ``mu``, ``noise``, ``z_next``,
  ``mu_shift``, ``z_shift`` and any extra per-model quantity are ``(step, model, sample,
  *latent)``; ``agg_z`` (the aggregated z') is ``(step, sample, *latent)``. Stored in the run's
  dtype (the recorder never changes it silently; ``attrs["dtype"]`` says which). Slots a run
  never wrote (models that stopped after the aggregation window, steps outside it for
  ``agg_z``, steps after an interruption) read as NaN.
- step coordinates (model 0's schedule): ``t``, ``t_prev``, ``alpha_bar``, ``alpha_bar_prev``,
  ``A``, ``B``, ``sigma`` and boolean ``aggregated``; every model's own ``model_alpha_bar``,
  ``model_alpha_bar_prev``, ``model_A``, ``model_B``, ``model_sigma`` over ``(model, step)``
  (they differ only in cross-ecosystem runs); ``seed`` over ``sample``. A run with flow models
  (App. G) stores ``v`` (the velocity) where DDIM stores ``eps``, its ``A``, ``B``, ``sigma``
  from ``flow_schedules.flow_coefficients`` (mu = A z + B v), NaN ``alpha_bar``, and the flow's
  own ``flow_sigma``, ``flow_sigma_next``, ``dt`` (and ``model_*`` of each); ``t`` is then the
  float timestep s * 1000.
- attrs: ``spec`` (the one spec the run was made from, JSON, its ``sampler`` the settings the run
  used; ``settings`` reads it typed), ``built`` (the models' and conditions' descriptions, JSON;
  a store written before stores kept one spec has ``config`` in their place), ``seeds``,
  ``versions`` (JSON), ``created_at``, ``creation_library``, ``dtype``, ``hook_names``,
  ``step_kinds`` (per model ``"ddim"`` or ``"flow"``; ``reading.step_kinds``),
  ``steps_completed`` (the steps every sample has done: refreshed every few seconds while a run
  is in flight, exact at its end, also when it fails; a run in chunks of samples counts them
  during its last chunk) and ``complete`` (false until the last step of the last chunk is on
  disk).

Writes go into preallocated arrays, one chunk per (step, model) and block of samples (the whole
batch, or the sampler's chunk of samples), never a per-step append.
On a local, uncompressed store (``compressor="none"``, the default) the recorder writes each
chunk's bytes itself (the uncompressed zarr v3 chunk format, atomically: a temporary file, then a
rename) from a background thread, so recording overlaps with model evaluation; compressed stores
("zstd", "blosc") and URL stores go through zarr's own assignment, from the same thread.

Stores at fsspec URLs (``ZarrRecorder``, ``open_run``, ``is_trace_store``,
``check_output_path`` take one, with ``storage_options``): the same schema, checks and
``complete`` flag, but no writer lock and no atomic replacement (``urls``: ``overwrite``
deletes the old trace store when the new run begins). A ``file://`` URL is a local path.

Safety (nothing lost, nothing faked):

- A store proves its own integrity (``integrity``): every chunk ends with its CRC-32C (zarr's
  ``crc32c`` codec, checked on every read); the root attributes record the planned layout of
  every array and which (step, model) slots are on disk, so ``open_run`` finds a missing,
  truncated or shortened chunk or array before anything is read, and ``verify_run`` checks
  every checksum. A damaged store is a ``DamagedStoreError`` naming the store, the variable and
  the chunk; the runner turns every verdict that would read it into "inconclusive".

- A trace store is recognisable: ``is_trace_store`` checks that a folder's ``zarr.json`` is a
  zarr v3 group whose attributes carry this toolkit's metadata (``creation_library`` starting
  with ``amdm-geom``, ``spec`` (or ``config``), ``dtype``, ``hook_names``, ``complete``,
  ``steps_completed``). The recorder writes them when it creates the group, so even a store
  whose run was killed at once is recognisable.
- ``overwrite`` replaces only a trace store; a plain folder, a file, a link or a foreign zarr
  group is refused (``StoreError``, one line) before any work, and again when the run starts.
- Replacing is atomic: the new run is written into a hidden sibling
  ``.<name>.<hex>.partial`` and swapped into place only when it ends complete. A run that
  fails, is interrupted or is killed leaves the old store byte for byte as it was. A run into a
  new path writes in place, so an interrupted one leaves a readable store with
  ``complete = false`` and every finished step intact.
- One writer per store: see ``ZarrRecorder`` (an OS lock beside the store). Readers are never
  blocked.
- ``open_run`` refuses anything that is not a trace store in one line, and ``require``,
  ``steps_completed``, ``is_complete``, ``completed_steps`` and ``incomplete_note`` let
  analyses say what a store lacks instead of crashing on a ``KeyError``.
"""

from amdm_geom.store.identity import StoreError
from amdm_geom.store.integrity import CHECKSUM, DamagedStoreError, foreign_files
from amdm_geom.store.lock import StoreLock
from amdm_geom.store.paths import check_output_path, is_trace_store
from amdm_geom.store.reading import (
    completed_steps,
    incomplete_note,
    is_complete,
    open_run,
    require,
    step_input,
    step_kinds,
    steps_completed,
    verify_run,
)
from amdm_geom.store.recorder import COMPRESSORS, ZarrRecorder, compressor_codec
from amdm_geom.store.settings import Built, built_of, etas, sampler_config, spec_of
from amdm_geom.store.urls import UrlStore, is_url, locate

__all__ = ["CHECKSUM", "COMPRESSORS", "Built", "DamagedStoreError", "StoreError", "StoreLock", "UrlStore",
           "ZarrRecorder", "built_of", "check_output_path", "completed_steps", "compressor_codec", "etas",
           "foreign_files", "incomplete_note", "is_complete", "is_trace_store", "is_url", "locate", "open_run",
           "require", "sampler_config", "spec_of", "step_input", "step_kinds", "steps_completed", "verify_run"]

"""``ZarrRecorder``: a run into a zarr group (the schema of ``amdm_geom.store``), written from a
background thread into preallocated arrays, one atomic chunk per (step, model) and chunk of
samples (the whole batch, or the sampler's chunk of samples when it runs in chunks), at a local
path or an fsspec URL, uncompressed or with a zarr compressor."""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import torch
import zarr

from amdm_geom.sampling.config import COMPRESSORS
from amdm_geom.sampling.plan import RunPlan
from amdm_geom.sampling.recording import Recorder
from amdm_geom.store.identity import StoreError
from amdm_geom.store.integrity import CHECKSUM, append_checksum
from amdm_geom.store.lock import StoreLock
from amdm_geom.store.paths import check_output_path, clean_leftovers, remove_path, sibling, swap_into_place
from amdm_geom.store.urls import UrlStore, is_url, locate

#: zstd's level, and blosc's inner codec and level, for the named compressors, chosen by
#: tests/benchmarks/compression.py on float32 latents (zstd level 3 compressed no better than
#: level 1; blosc lz4 wrote fastest): see RunSettings' docstring.
ZSTD_LEVEL = 1
BLOSC_CNAME, BLOSC_LEVEL = "lz4", 5


def compressor_codec(compressor):
    """The zarr codec for ``compressor``: None for "none" (or None), ``ZstdCodec(level=ZSTD_LEVEL)``
    for "zstd", ``BloscCodec(cname=BLOSC_CNAME, clevel=BLOSC_LEVEL, shuffle="shuffle")`` for
    "blosc"; a zarr bytes-to-bytes codec object is used as given. One-line ``ValueError`` otherwise."""
    from zarr.abc.codec import BytesBytesCodec
    from zarr.codecs import BloscCodec, ZstdCodec

    if compressor is None or compressor == "none":
        return None
    if compressor == "zstd":
        return ZstdCodec(level=ZSTD_LEVEL)
    if compressor == "blosc":
        return BloscCodec(cname=BLOSC_CNAME, clevel=BLOSC_LEVEL, shuffle="shuffle")
    if isinstance(compressor, BytesBytesCodec):
        return compressor
    raise ValueError(f"compressor {compressor!r} is not known; accepted: {', '.join(map(repr, COMPRESSORS))} "
                     "or a zarr bytes-to-bytes codec such as zarr.codecs.ZstdCodec(level=3)")


class ZarrRecorder(Recorder):
    """Records a run into a zarr group at ``path`` (see the module docstring for the schema): a
    local path, or an fsspec URL (``memory://``, ``s3://``, ...; ``storage_options`` go to its
    file system; a ``file://`` URL is a local path). ``compressor`` is "none" (default: the raw
    chunk writer below), "zstd", "blosc" or a zarr bytes-to-bytes codec (``compressor_codec``); a
    compressed store is written by zarr's own assignment, still from the background thread.
    ``bytes_written`` counts the recorded (uncompressed) bytes.

    ``overwrite=False`` (default) refuses an existing path before any work; ``overwrite=True``
    replaces only an amdm-geom trace store (anything else is refused with ``StoreError``), and
    atomically: the new run goes into a hidden sibling ``.<name>.<hex>.partial`` that is swapped
    into place when the run ends complete; until then, and for ever if the run fails, is
    interrupted or is killed, the old store stays as it was. ``names_filter`` selects hook names
    (a glob, a list of names or globs, or a callable), as in TransformerLens' ``names_filter``;
    ``steps`` selects steps (the others stay unwritten, NaN). ``store_dtype`` stores in another
    dtype than the run's, and says so in the attrs; ``attrs`` adds JSON-able attributes of the
    caller's (e.g. which experiment the run belongs to).

    One writer per local store. The constructor takes an exclusive, non-blocking ``fcntl.flock`` on
    the hidden lock file ``<parent>/.<name>.lock`` and writes its PID into it, so a second
    writer of the same path (in this process or another) is refused at once with a
    ``StoreError`` naming the holder's PID. The lock is released by ``end()`` (the sampler calls
    it when the run ends, also when it fails), by ``close()`` (or leaving a ``with`` block), when
    the recorder is garbage-collected, at interpreter exit, and by the OS when the process dies.
    The lock file is deleted on release (open, lock, then check that the locked file is still
    the one at the path, else retry); one left by a killed process is harmless: the next writer
    locks it and rewrites the PID. That writer, holding the lock, also removes the ``.partial``
    and ``.trash`` siblings killed runs left. Readers (``open_run``) never take the lock.

    A URL store (``urls.UrlStore``) has no writer lock and no atomic replacement: with
    ``overwrite`` the old trace store is deleted when the run begins (after the same checks:
    only a trace store is ever deleted), so a replacement that fails leaves the new, incomplete
    store. Each chunk is one object written by zarr; ``complete`` is written last, as locally.
    """

    MARK_INTERVAL = 2.0  # seconds between refreshes of steps_completed while running
    #: Every chunk ends with its CRC-32C (``integrity``). Off only in a subclass of the recorder
    #: benchmark (tests/benchmarks/bench_recorder.py) that measures what the checksum costs.
    _checksums = True

    def __init__(self, path, *, names_filter=None, overwrite: bool = False,
                 store_dtype: torch.dtype | None = None, background: bool = True, steps=None, attrs=None,
                 compressor="none", storage_options: dict | None = None):
        super().__init__(names_filter, store_dtype, steps, attrs)
        self._codec = compressor_codec(compressor)
        where = locate(path, storage_options)
        self.path = str(path) if is_url(path) else Path(path)
        self.storage_options = storage_options
        self.overwrite = overwrite
        self.background = background
        self.bytes_written = 0
        self._url: UrlStore | None = where if isinstance(where, UrlStore) else None
        self._target: Path | None = where if self._url is None else None
        self._lock: StoreLock | None = None
        self._partial: Path | None = None
        self._group = None
        self._queue: queue.Queue | None = None
        self._begun = self._ended = self._closed = False
        self.check_path()
        if self._url is not None:
            return  # no lock for a URL store (the class docstring)
        try:
            self._target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot write trace store {self.path}: {exc.strerror or exc}") from None
        lock = StoreLock(self._target, self.path)
        lock.acquire()
        self._lock = lock
        try:
            clean_leftovers(self._target)
            self.check_path()  # again, now that no other writer can change the path
        except BaseException:
            self._release()
            raise

    def check_path(self) -> None:
        """``check_output_path(path, overwrite)``: one-line ``FileExistsError`` if something is
        at the path and ``overwrite`` is off, ``StoreError`` if ``overwrite`` is on and it is
        not a trace store (or the parent folder cannot be written)."""
        check_output_path(self._url if self._url is not None else self.path, self.overwrite)

    # -- the lock's lifetime ---------------------------------------------------------------------

    def __enter__(self) -> ZarrRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock. A run that began and did not end is ended as incomplete first (a
        replacement's partial copy is removed; the old store stays)."""
        self._closed = True
        if self._begun and not self._ended:
            self.end(False)
        else:
            self._release()

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def __del__(self) -> None:
        try:
            if not self.__dict__.get("_ended", True) and self.__dict__.get("_partial") is not None:
                remove_path(self._partial)
            lock = self.__dict__.get("_lock")
            if lock is not None:
                lock.release()
        except Exception:  # never raise from a finalizer  # pragma: no cover
            pass

    # -- laying out the run ----------------------------------------------------------------------

    def begin(self, plan: RunPlan) -> None:
        if self._closed and self.plan is None:
            raise StoreError(f"the recorder for {self.path} was closed; make a new one")
        try:
            super().begin(plan)
        except BaseException:
            if self.plan is plan:  # this run's layout failed: nothing of it is kept
                self._abort()
            raise

    def _abort(self) -> None:
        """End a run whose layout failed: stop the writer thread, remove a partial copy, unlock."""
        self._ended = True
        try:
            if self._queue is not None and self._thread.is_alive():
                self._queue.put(None)
                self._thread.join()
        finally:
            if self._partial is not None:
                remove_path(self._partial)
                self._partial = None
            self._release()

    def _open(self, plan: RunPlan) -> None:
        self._begun = True
        self.check_path()
        if self._url is not None:
            if self._url.problem() is None:  # a trace store, and overwrite is on: no swap possible
                self._url.remove()
            root = self._url.zarr_store(read_only=False)
        elif os.path.lexists(self._target):  # a trace store, and overwrite is on: replace it at the end
            self._partial = sibling(self._target, "partial")
            root = str(self._partial)
        else:
            root = str(self._target)
        attrs = self.initial_attrs(plan)  # identifying attrs from the group's creation on
        coords = plan.coords()
        self._sample_chunk = plan.sample_chunk
        chunking = {}
        for var, (dims, shape) in self._layout.items():
            lead = (1, 1) if "model" in dims else (1,)  # then (sample, *latent)
            chunking[var] = (*lead, self._sample_chunk, *shape[len(lead) + 1:])
        # the plan the run is laid out by, and which (step, model) slots are on disk (integrity.py)
        layout = {name: [list(values.shape), list(values.shape)] for name, (_, values) in coords.items()}
        layout.update({var: [list(shape), list(chunking[var])] for var, (_, shape) in self._layout.items()})
        if self._checksums:
            attrs["integrity"] = {"checksum": CHECKSUM, "layout": layout}
        self._written = {var: [[] for _ in range(shape[0])] for var, (_, shape) in self._layout.items()}
        attrs["written"] = self._written
        group = zarr.open_group(root, mode="w-", zarr_format=3, attributes=attrs)
        self._group = group
        crc = [zarr.codecs.Crc32cCodec()] if self._checksums else []
        every_chunk = {"write_empty_chunks": True}  # (a chunk equal to the fill value is written too: it was written)
        for name, (dims, values) in coords.items():
            arr = group.create_array(name, shape=values.shape, chunks=values.shape, dtype=values.dtype,
                                     compressors=crc, fill_value=0, dimension_names=dims, config=every_chunk)
            arr[...] = values
        coord_names = " ".join(n for n, (dims, _) in coords.items() if n not in dims)
        self._arrays = {}
        for var, (dims, shape) in self._layout.items():
            # "." chunk keys keep each variable's chunks as flat files in one folder (the default
            # "/" nests a folder per dimension, and creating those dominated the write time); every
            # chunk ends with its CRC-32C, checked by zarr on every read
            self._arrays[var] = group.create_array(
                var, shape=shape, chunks=chunking[var], dtype=self._np_dtype,
                compressors=crc if self._codec is None else [self._codec, *crc],
                fill_value=np.nan, dimension_names=dims, attributes={"coordinates": coord_names},
                chunk_key_encoding={"name": "default", "separator": "."}, config=every_chunk)
        self._made_dirs: set[Path] = set()
        self._steps_done, self._steps_marked_at = 0, time.monotonic()
        local = isinstance(group.store, zarr.storage.LocalStore) and self._codec is None
        self._direct_root = Path(group.store.root) if local else None
        self._error: BaseException | None = None
        if self.background:
            self._queue = queue.Queue(maxsize=64)
            self._thread = threading.Thread(target=self._drain, name="amdm-geom-recorder", daemon=True)
            self._thread.start()

    # -- writing ---------------------------------------------------------------------------------

    def record(self, name: str, step: int, value: torch.Tensor, offset: int = 0) -> None:
        if not self.wants(step):
            return
        if offset % self._sample_chunk:
            raise ValueError(f"samples are recorded in blocks of {self._sample_chunk} starting at multiples of it; "
                             f"got offset {offset}")
        var, index = self._index(name, step)
        self._submit(("chunk", var, index, offset, self._as_numpy(value)))

    def end_step(self, step: int) -> None:
        self._submit(("step", step))

    def end(self, complete: bool) -> None:
        """Flush every submitted write, then record ``steps_completed`` and ``complete``. A
        replacement is swapped into place if it is complete, else removed (the old store stays).
        The lock is released in any case."""
        if self._ended:
            return
        self._ended = True
        try:
            if self._queue is not None:
                self._queue.put(None)
                self._thread.join()
            ok = bool(complete and self._error is None)
            self._group.attrs.update({"steps_completed": self._steps_done, "written": self._written, "complete": ok})
            if self._partial is not None and ok:
                swap_into_place(self._partial, self._target)
                self._partial = None
        finally:
            if self._partial is not None:  # an incomplete replacement: the old store stays
                remove_path(self._partial)
                self._partial = None
            self._release()
        if self._error is not None:
            raise RuntimeError(f"writing the trace store {self.path} failed: {self._error}") from self._error

    def _submit(self, item) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing the trace store {self.path} failed: {self._error}") from self._error
        if self._queue is None:
            self._do(item)
        else:
            self._queue.put(item)

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._do(item)
                except BaseException as exc:  # reported to the sampler's thread on its next call
                    self._error = exc

    def _do(self, item) -> None:
        if item[0] == "step":
            # every chunk of this step is on disk; the count in the attrs is refreshed at most
            # every MARK_INTERVAL seconds while running (a killed run's count errs low) and
            # exactly at the end, also when the run fails
            self._steps_done = item[1] + 1
            if time.monotonic() - self._steps_marked_at >= self.MARK_INTERVAL:
                self._group.attrs.update({"steps_completed": self._steps_done, "written": self._written})
                self._steps_marked_at = time.monotonic()
            return
        _, var, index, offset, block = item
        arr = self._arrays[var]
        if self._direct_root is None:
            arr[(*index, slice(offset, offset + block.shape[0]))] = block
        else:
            if block.shape[0] < self._sample_chunk:  # the last, short chunk: a full chunk, NaN beyond the run
                full = np.full((self._sample_chunk, *block.shape[1:]), np.nan, dtype=block.dtype)
                full[:block.shape[0]] = block
                block = full
            coords = (*index, offset // self._sample_chunk, *([0] * (arr.ndim - len(index) - 1)))
            path = self._direct_root / var / arr.metadata.encode_chunk_key(coords)
            if path.parent not in self._made_dirs:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._made_dirs.add(path.parent)
            _write_atomic(path, np.ascontiguousarray(block).astype(block.dtype.newbyteorder("<"), copy=False),
                          self._checksums)
        models = self._written[var][index[0]]
        slot = index[1] if len(index) > 1 else 0
        if slot not in models:
            models.append(slot)
        self.bytes_written += block.nbytes


def _write_atomic(path: Path, block: np.ndarray, checksum: bool = True) -> None:
    """The bytes of one uncompressed little-endian C-order chunk followed by their CRC-32C (zarr's
    ``crc32c`` codec), via a temporary file and a rename; one ``writev`` of both where it can."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    parts = [memoryview(block).cast("B")]
    if checksum:
        parts.append(memoryview(append_checksum(block)))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            done, total = os.writev(fd, parts), sum(p.nbytes for p in parts)
            if done < total:  # (a short write: the rest, piece by piece)
                rest = memoryview(b"".join(parts))[done:]
                while rest:
                    rest = rest[os.write(fd, rest):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

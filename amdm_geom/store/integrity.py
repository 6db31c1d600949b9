"""A trace store proves its own integrity: chunk checksums, the recorded plan, and what is there.

Every array the recorder writes ends its codec chain with zarr's ``crc32c`` codec: each chunk's
bytes are followed by the CRC-32C of those bytes (4 bytes, little-endian), and zarr checks it on
every read ("Stored and computed checksum do not match"). A chunk that is simply missing reads as
the fill value (NaN) without an error, so completeness cannot rest on reading alone: the store's
root attributes carry

- ``integrity``: ``{"checksum": "crc32c", "layout": {array: [shape, chunk shape]}}``, written
  when the group is created (the plan the run was laid out by), and
- ``written``: ``{variable: [[models written at step 0], [models at step 1], ...]}`` (``[0]``
  or ``[]`` for a variable without a model dim), refreshed together with ``steps_completed``
  from the writer's thread, so it never names a chunk that is not on disk yet.

From these the expected files of a store follow exactly: for every step ``k <
steps_completed``, every model the map names and every chunk of samples, one chunk file.
``check_store`` compares that with what is there (present, the uncompressed size where there is
no compressor, and with ``checksums=True`` every chunk's CRC-32C), and every array's metadata
with the recorded layout. A damaged store raises ``DamagedStoreError``, one line naming the
store, the variable and the chunk. ``foreign_files`` lists what in a store's folder the writer
would not have written (the toolkit deletes only stores without any).

Stores written before checksums existed (no ``integrity`` attribute) still open, without that
guarantee; ``open_run`` says so once per store (``LEGACY_NOTE``).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np

from amdm_geom.store.identity import StoreError

__all__ = ["CHECKSUM", "DamagedStoreError", "LEGACY_NOTE", "append_checksum", "check_store", "damage_of",
           "expected_chunks", "foreign_files", "has_checksums"]

#: The checksum every chunk of a store (trace or result) carries.
CHECKSUM = "crc32c"
#: Said once per store written before checksums existed.
LEGACY_NOTE = "written before chunk checksums: opened without the integrity guarantee"


class DamagedStoreError(StoreError):
    """A store whose bytes are not what its writer wrote: a chunk missing, truncated or changed, or
    an array whose shape differs from the recorded plan. The message is one line naming the store,
    the variable and the chunk."""


def append_checksum(block: np.ndarray) -> bytes:
    """The 4 bytes zarr's ``crc32c`` codec appends to a chunk's bytes ``block`` (CRC-32C, little
    endian)."""
    import google_crc32c

    data = np.ascontiguousarray(block).reshape(-1).view(np.uint8)
    return int(google_crc32c.value(data)).to_bytes(4, "little")


def _crc_ok(data: bytes) -> bool:
    import google_crc32c

    return len(data) >= 4 and int(google_crc32c.value(data[:-4])).to_bytes(4, "little") == data[-4:]


# --------------------------------------------------------------------------------------------
# file access, local or through fsspec


class _Files:
    """Listing and reading the files under a store's root: a local folder or an fsspec ``UrlStore``."""

    def __init__(self, where):
        self.where = where
        self.local = isinstance(where, Path)

    def read(self, rel: str) -> bytes | None:
        try:
            if self.local:
                return (self.where / rel).read_bytes()
            return self.where.fs.cat_file(f"{self.where.root}/{rel}")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def size(self, rel: str) -> int | None:
        try:
            if self.local:
                st = os.stat(self.where / rel)
                return st.st_size if not os.path.isdir(self.where / rel) else None
            info = self.where.fs.info(f"{self.where.root}/{rel}")
            return int(info["size"]) if info.get("type") == "file" else None
        except (FileNotFoundError, NotADirectoryError):
            return None

    def walk(self) -> list[str]:
        """Every file under the root, relative, with "/" separators."""
        if self.local:
            out = []
            for dirpath, dirnames, filenames in os.walk(self.where):
                rel = Path(dirpath).relative_to(self.where)
                out += [(rel / f).as_posix() for f in filenames]
                out += [(rel / d).as_posix() + "/" for d in dirnames]
            return sorted(out)
        root = self.where.root
        found = self.where.fs.find(root, withdirs=True, detail=True)
        return sorted(p[len(root) + 1:] + ("/" if info.get("type") == "directory" else "")
                      for p, info in found.items() if len(p) > len(root))


# --------------------------------------------------------------------------------------------
# what a store should hold


def has_checksums(attrs: dict) -> bool:
    """Whether a store with these root attributes was written with chunk checksums."""
    info = attrs.get("integrity")
    return isinstance(info, dict) and info.get("checksum") == CHECKSUM


def _meta(files: _Files, name: str, shown: str) -> dict:
    text = files.read(f"{name}/zarr.json")
    if text is None:
        raise DamagedStoreError(f"damaged store {shown}: variable {name!r}: its zarr.json is missing")
    try:
        doc = json.loads(text)
    except ValueError:
        raise DamagedStoreError(f"damaged store {shown}: variable {name!r}: its zarr.json is not JSON") from None
    if not isinstance(doc, dict) or doc.get("node_type") != "array":
        raise DamagedStoreError(f"damaged store {shown}: variable {name!r}: its zarr.json is not a zarr array")
    return doc


def _key(doc: dict, coords) -> str:
    enc = doc.get("chunk_key_encoding") or {}
    sep = (enc.get("configuration") or {}).get("separator", "/")
    if enc.get("name") == "v2":
        return sep.join(map(str, coords)) if coords else "0"
    return sep.join(("c", *map(str, coords)))


def _uncompressed_size(doc: dict, chunk_shape) -> int | None:
    """The bytes of one chunk file (payload and checksum) when no codec changes the size."""
    codecs = doc.get("codecs") or []
    names = [c.get("name") for c in codecs if isinstance(c, dict)]
    if any(n not in ("bytes", CHECKSUM) for n in names):
        return None
    try:
        itemsize = np.dtype(doc.get("data_type", "float32")).itemsize
    except TypeError:
        return None
    return int(math.prod(chunk_shape)) * itemsize + (4 if CHECKSUM in names else 0)


def expected_chunks(attrs: dict, name: str, doc: dict, n_steps: int) -> list[str]:
    """The chunk files (relative to the store's root) the writer wrote for data variable ``name``
    at steps ``[0, n_steps)``, from the ``written`` map."""
    shape, chunks = doc["shape"], doc["chunk_grid"]["configuration"]["chunk_shape"]
    dims = doc.get("dimension_names") or []
    models = (attrs.get("written") or {}).get(name, [])
    grid = [math.ceil(s / c) for s, c in zip(shape, chunks)]
    lead = 2 if "model" in dims[:2] else 1
    rest = grid[lead:]
    out = []
    for k in range(min(n_steps, len(models))):
        for m in models[k]:
            head = (k, m) if lead == 2 else (k,)
            for tail in np.ndindex(*rest):
                out.append(f"{name}/{_key(doc, (*head, *tail))}")
    return out


def _coordinate_chunks(doc: dict, name: str) -> list[str]:
    shape, chunks = doc["shape"], doc["chunk_grid"]["configuration"]["chunk_shape"]
    grid = [math.ceil(s / c) if c else 0 for s, c in zip(shape, chunks)]
    return [f"{name}/{_key(doc, idx)}" for idx in np.ndindex(*grid)] if shape else [f"{name}/{_key(doc, ())}"]


def _steps_done(attrs: dict, shown: str) -> int:
    try:
        return max(int(attrs.get("steps_completed", 0)), 0)
    except (TypeError, ValueError):
        raise DamagedStoreError(f"damaged store {shown}: steps_completed is not a count: "
                                f"{attrs.get('steps_completed')!r}") from None


def check_store(where, attrs: dict, shown: str, *, checksums: bool = False) -> bool:
    """Check the store at ``where`` (a local ``Path`` or a ``UrlStore``) whose root attributes are
    ``attrs``: every array's metadata against the recorded layout, and every chunk the writer
    wrote at the completed steps present (and, uncompressed, of its exact size; with
    ``checksums``, its CRC-32C verified). Raises ``DamagedStoreError`` (one line). Returns False
    for a store written before checksums (only its step count is checked), True otherwise."""
    files = _Files(where)
    info = attrs.get("integrity")
    if not has_checksums(attrs):
        return False
    layout = info.get("layout")
    if not isinstance(layout, dict) or not layout:
        raise DamagedStoreError(f"damaged store {shown}: its recorded layout is missing")
    done = _steps_done(attrs, shown)
    data_vars = set((attrs.get("written") or {}).keys())
    for name, entry in layout.items():
        doc = _meta(files, name, shown)
        try:
            want_shape, want_chunks = list(entry[0]), list(entry[1])
        except (TypeError, IndexError):
            raise DamagedStoreError(f"damaged store {shown}: the recorded layout of {name!r} is not readable") from None
        got_chunks = ((doc.get("chunk_grid") or {}).get("configuration") or {}).get("chunk_shape")
        if list(doc.get("shape", [])) != want_shape or list(got_chunks or []) != want_chunks:
            raise DamagedStoreError(
                f"damaged store {shown}: variable {name!r} has shape {tuple(doc.get('shape', []))} and chunks "
                f"{tuple(got_chunks or [])}; the run's plan recorded {tuple(want_shape)} and {tuple(want_chunks)}")
        names = [c.get("name") for c in doc.get("codecs") or [] if isinstance(c, dict)]
        if not names or names[-1] != CHECKSUM:
            raise DamagedStoreError(f"damaged store {shown}: variable {name!r} lost its {CHECKSUM} checksum codec")
        if name in data_vars:
            steps = want_shape[0] if want_shape else 0
            if done > steps:
                raise DamagedStoreError(f"damaged store {shown}: {done} steps recorded as completed but variable "
                                        f"{name!r} holds {steps}")
            keys = expected_chunks(attrs, name, doc, done)
        else:
            keys = _coordinate_chunks(doc, name)
        size = _uncompressed_size(doc, want_chunks)
        for key in keys:
            chunk = key.split("/", 1)[1]
            if checksums:
                data = files.read(key)
                if data is None:
                    raise DamagedStoreError(f"damaged store {shown}: variable {name!r}, chunk {chunk}: missing")
                if size is not None and len(data) != size:
                    raise DamagedStoreError(f"damaged store {shown}: variable {name!r}, chunk {chunk}: "
                                            f"{len(data)} bytes, {size} written (truncated or changed)")
                if not _crc_ok(data):
                    raise DamagedStoreError(f"damaged store {shown}: variable {name!r}, chunk {chunk}: "
                                            "checksum mismatch (its bytes changed after writing)")
            else:
                got = files.size(key)
                if got is None:
                    raise DamagedStoreError(f"damaged store {shown}: variable {name!r}, chunk {chunk}: missing")
                if size is not None and got != size:
                    raise DamagedStoreError(f"damaged store {shown}: variable {name!r}, chunk {chunk}: "
                                            f"{got} bytes, {size} written (truncated or changed)")
    return True


def damage_of(where, attrs: dict, shown: str, *, checksums: bool = True) -> str | None:
    """``check_store``'s one line for a damaged store, None for an intact one."""
    try:
        check_store(where, attrs, shown, checksums=checksums)
    except DamagedStoreError as exc:
        return str(exc)
    return None


# --------------------------------------------------------------------------------------------
# what the writer would not have written


def foreign_files(where) -> list[str]:
    """The files (relative paths) in the store folder at ``where`` that its writer would not have
    written: anything but the group's and its arrays' ``zarr.json`` and chunk files inside each
    array's grid (a user's notes, a folder of figures, a store nested inside, a link)."""
    files = _Files(where)
    root = files.read("zarr.json")
    out = []
    arrays: dict[str, dict] = {}
    for rel in files.walk():
        if rel == "zarr.json":
            continue
        folder = rel.endswith("/")
        rel = rel.rstrip("/")
        parts = rel.split("/")
        name = parts[0]
        if name not in arrays:
            text = files.read(f"{name}/zarr.json") if len(parts) > 1 or folder else None
            try:
                doc = json.loads(text) if text is not None else None
            except ValueError:
                doc = None
            arrays[name] = doc if isinstance(doc, dict) and doc.get("node_type") == "array" else {}
        doc = arrays[name]
        if files.local and os.path.islink(where / rel):
            out.append(rel + "/" if folder else rel)
            continue
        if folder and len(parts) == 1 and doc:
            continue  # an array's own folder
        if not doc:
            if folder or len(parts) > 1 or not _leftover_metadata(rel):
                out.append(rel + "/" if folder else rel)
            continue
        inner = "/".join(parts[1:])
        if folder:
            if not _in_grid(doc, inner, prefix=True):
                out.append(rel + "/")
        elif not (inner == "zarr.json" or _in_grid(doc, inner) or _leftover_chunk(doc, inner)):
            out.append(rel)
    return out if root is not None else ["zarr.json", *out]


def _leftover_chunk(doc: dict, inner: str) -> bool:
    """A temporary file that a killed writer left next to one of the array's chunks or its
    ``zarr.json``: this toolkit's raw writer names it ``.<chunk name>.<32 hex>.partial``, zarr's
    local store ``<chunk name less its last suffix>.<32 hex>.partial`` (``Path.with_suffix``)."""
    head, _, base = inner.rpartition("/")
    m = re.fullmatch(r"(\.?)(.+)\.[0-9a-f]{32}\.partial", base)
    if m is None:
        return False
    key = f"{head}/{m.group(2)}" if head else m.group(2)
    if m.group(1):
        return _in_grid(doc, key) or (not head and m.group(2) == "zarr.json")
    # zarr's own: the suffix it dropped was a "."-separated last index, or nothing, or ".json"
    return _in_grid(doc, key) or _in_grid(doc, key + ".0") or (not head and m.group(2) == "zarr")


def _leftover_metadata(rel: str) -> bool:
    """The group's ``zarr.json`` as a killed writer left it half-written (zarr's temporary name)."""
    return re.fullmatch(r"zarr\.[0-9a-f]{32}\.partial", rel) is not None


def _in_grid(doc: dict, inner: str, prefix: bool = False) -> bool:
    """Whether ``inner`` (a path inside an array's folder) is one of that array's chunk keys (with
    ``prefix``: a folder on the way to one, for "/"-separated keys)."""
    try:
        shape, chunks = doc["shape"], doc["chunk_grid"]["configuration"]["chunk_shape"]
    except (KeyError, TypeError):
        return False
    grid = [math.ceil(s / c) if c else 0 for s, c in zip(shape, chunks)]
    enc = doc.get("chunk_key_encoding") or {}
    sep = (enc.get("configuration") or {}).get("separator", "/")
    parts = inner.split(sep)
    if enc.get("name", "default") == "default":
        if parts[0] != "c":
            return False
        parts = parts[1:]
    if prefix:
        if sep != "/" or len(parts) >= max(len(grid), 1):
            return False
    elif not shape:
        return parts in ([], ["0"])
    elif len(parts) != len(grid):
        return False
    try:
        idx = [int(p) for p in parts]
    except ValueError:
        return False
    return all(0 <= i < g for i, g in zip(idx, grid)) and all(str(i) == p for i, p in zip(idx, parts))


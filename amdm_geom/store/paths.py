"""What a trace store is, the checks before writing one, and replacing one atomically (hidden
siblings, the swap, and what killed runs leave behind)."""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import shutil
import sys
import uuid
from pathlib import Path

from amdm_geom.store.identity import StoreError, store_problem
from amdm_geom.store.integrity import foreign_files
from amdm_geom.store.urls import locate

__all__ = ["check_only_ours", "check_output_path", "clean_leftovers", "is_trace_store", "remove_path", "sibling",
           "swap_into_place"]

# --------------------------------------------------------------------------------------------
# what a trace store is, and the checks before writing one


def is_trace_store(path, storage_options: dict | None = None) -> bool:
    """Whether ``path`` (a local path or an fsspec URL, ``storage_options`` passed to its file
    system) is a folder whose ``zarr.json`` is a zarr v3 group carrying this toolkit's metadata
    (``creation_library`` starting with "amdm-geom", ``spec`` (``config`` in older stores), ``dtype``,
    ``hook_names``, ``complete``, ``steps_completed``: ``identity.doc_problem``). Never raises (an
    unusable URL is not a trace store)."""
    try:
        where = locate(path, storage_options)
    except ValueError:
        return False
    return (where.problem() if not isinstance(where, Path) else store_problem(where)) is None


def check_output_path(path, overwrite: bool = False, storage_options: dict | None = None) -> None:
    """Check that a trace store may be written at ``path``, without touching anything: the same
    checks ``ZarrRecorder`` makes before it takes its lock, for callers that validate every
    output path before any work. ``path`` may be an fsspec URL (``urls.locate``; its file system
    gets ``storage_options``): the same rules, except that whether a URL can be written is only
    found out when the run writes (a bad protocol or a missing fsspec package is a ``StoreError``
    here).

    - Nothing at ``path``: fine, provided its parent folder exists or can be created, and is
      writable (otherwise ``StoreError``).
    - A trace store: ``FileExistsError`` unless ``overwrite``.
    - Anything else (a plain folder, a file, a link, a foreign zarr group): ``FileExistsError``
      without ``overwrite``, ``StoreError`` with it (only trace stores are ever replaced).

    - A path inside a trace store or an analysis' result folder: ``StoreError`` (nothing is ever
      written inside a store but by its own writer).
    - With ``overwrite``, a trace store holding a file its writer did not write (a user's notes,
      a folder of figures, a store nested inside): ``StoreError`` naming that file, since
      replacing the store would delete it.

    Every message is one line naming the path and saying why."""
    where = locate(path, storage_options)
    if not isinstance(where, Path):
        where.check_output(overwrite)
        return
    target = where
    if target.name in ("", ".", ".."):
        raise StoreError(f"cannot write a trace store at {path}: name a folder for it, such as {path}/run.zarr")
    if os.path.islink(target):
        if overwrite:
            raise StoreError(f"refusing to overwrite {path}: it is a symbolic link (name the store's real path)")
        raise FileExistsError(f"{path} exists (a symbolic link); choose another --out")
    _check_not_inside(target, path)
    if os.path.lexists(target):
        why = store_problem(target)
        if why is None and not overwrite:
            raise FileExistsError(f"trace store {path} exists; pass overwrite=True (--overwrite) to replace it")
        if why is None:
            check_only_ours(target, path)
        if why is not None:
            if overwrite:
                raise StoreError(f"refusing to overwrite {path}: not an amdm-geom trace store ({why})")
            raise FileExistsError(f"{path} exists and is not an amdm-geom trace store ({why}); choose another --out")
    probe = target.parent
    while not os.path.lexists(probe):
        probe = probe.parent
    if not probe.is_dir():
        raise StoreError(f"cannot write trace store {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise StoreError(f"cannot write trace store {path}: {probe} is not writable")


def _check_not_inside(target: Path, shown) -> None:
    """``StoreError`` if an ancestor of ``target`` is a trace store or a result folder."""
    for parent in target.parents:
        if store_problem(parent) is None:
            raise StoreError(f"cannot write a trace store at {shown}: it is inside the trace store {parent} "
                             "(only a store's own writer writes in it); choose a path outside it")
        if (parent / ".amdm-geom-result").is_file():
            raise StoreError(f"cannot write a trace store at {shown}: it is inside the result folder {parent}; "
                             "choose a path outside it")


def check_only_ours(target: Path, shown) -> None:
    """``StoreError`` naming the first file in the trace store ``target`` that its writer did not
    write (``integrity.foreign_files``): such a store is never deleted or replaced."""
    foreign = foreign_files(target)
    if foreign:
        raise StoreError(f"refusing to replace or delete {shown}: {target / foreign[0]} was not written by "
                         f"amdm-geom; move it out of the store first")


# --------------------------------------------------------------------------------------------
# replacing a store atomically: hidden siblings, the swap, and what killed runs leave behind


def sibling(target: Path, kind: str) -> Path:
    """A new hidden sibling of ``target``: ``.<name>.<hex>.<kind>`` (``partial`` or ``trash``)."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex}.{kind}")


def _leftovers(target: Path) -> list[Path]:
    """The ``.partial`` and ``.trash`` siblings of ``target`` (exactly its own, never those of
    another store whose name starts the same)."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{32}}\.(partial|trash)")
    try:
        return sorted(p for p in target.parent.iterdir() if pattern.fullmatch(p.name))
    except OSError:
        return []


def remove_path(path: Path) -> None:
    """Remove a file, a link or a folder tree at ``path`` if it is there (errors ignored: what
    is left is cleaned by the next writer)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def clean_leftovers(target: Path) -> None:
    """Remove what killed writers left beside ``target``; call with its lock held. A writer
    killed between the two renames of a fallback swap leaves no store and the old one as
    ``.trash``: that old store is put back first."""
    leftovers = _leftovers(target)
    if not os.path.lexists(target):
        for trash in sorted((p for p in leftovers if p.name.endswith(".trash")),
                            key=lambda p: p.stat().st_mtime, reverse=True):
            if is_trace_store(trash):
                os.rename(trash, target)
                leftovers.remove(trash)
                break
    for path in leftovers:
        remove_path(path)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.lru_cache(maxsize=1)
def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``). False where
    the system or the file system cannot; then nothing happened."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_into_place(new: Path, target: Path) -> None:
    """Put the finished store ``new`` at ``target`` (an existing store) and remove the old one.
    Atomic where ``renameat2`` can exchange the two; elsewhere two renames (old aside to a
    ``.trash`` sibling, new into place) that a later writer repairs if killed between them. The
    old store is checked again first: if a file not of its writer appeared in it meanwhile,
    ``StoreError`` (the new run is dropped, the old store and that file stay)."""
    check_only_ours(target, target)
    if _exchange(new, target):
        remove_path(new)  # now the old store
        return
    trash = sibling(target, "trash")
    os.rename(target, trash)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(trash, target)
        raise
    remove_path(trash)

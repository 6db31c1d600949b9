"""``amdm-geom clean``: remove only what this toolkit can show it wrote.

A trace store counts if it holds nothing but its writer's files (``store.foreign_files``), a
result folder if every file in it is in its manifest, unchanged (``runner.output.foreign_in_result``),
the report's ``index.html`` and ``verdicts.json`` if the report folder's manifest lists them with
the same SHA-256, a sweep record if it carries the sweep's ``creation_library``. Everything is
planned before anything is removed: a foreign file inside any of them refuses the whole command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from amdm_geom.app.runner.output import REPORT_MARKER, foreign_in_result, is_result_folder, owned
from amdm_geom.app.sweep import LIBRARY, RECORD
from amdm_geom.store import StoreError, StoreLock, foreign_files, is_trace_store

__all__ = ["Foreign", "clean_folders"]


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class Foreign(ValueError):
    """A file inside something of the toolkit's that the toolkit did not write."""


def _ours(path: Path, top: bool) -> bool:
    """Whether ``path`` (not a link) is something this toolkit wrote, every file of it: a
    ``Foreign`` error naming the first file it cannot account for inside a store or result folder."""
    if path.is_dir():
        for kind, ours, foreign_in in (("trace store", is_trace_store, foreign_files),
                                       ("result folder", is_result_folder, foreign_in_result)):
            if ours(path):
                foreign = foreign_in(path)
                if foreign:
                    raise Foreign(f"refusing to clean: {path / foreign[0]} inside the {kind} {path} was not written "
                                  "by amdm-geom (or changed since); move it out first (nothing was removed)")
                return True
        return False
    if path.name in ("index.html", "verdicts.json"):
        return owned(path.parent, path.name)
    if path.name in (RECORD, REPORT_MARKER):
        library = LIBRARY if path.name == RECORD else "amdm-geom "
        try:
            return str(json.loads(path.read_text()).get("creation_library", "")).startswith(library)
        except (OSError, ValueError, AttributeError, UnicodeDecodeError):
            return False
    return False


def _plan(folder: Path, top: bool, doomed: list, kept: list) -> bool:
    """Add what to remove under ``folder`` to ``doomed`` and what stays to ``kept``; whether
    everything in it is doomed (so the emptied folder can go too)."""
    everything = True
    entries = sorted(folder.iterdir(), key=lambda p: (p.name == REPORT_MARKER, p.name))  # (the manifest last)
    for entry in entries:
        if entry.is_symlink():
            kept.append((entry, "a link"))
            everything = False
        elif _ours(entry, top):
            doomed.append(entry)
        elif entry.is_dir():
            before = len(doomed)
            if _plan(entry, False, doomed, kept) and len(doomed) > before:
                doomed.append(entry)  # (emptied: removed after its contents)
            else:
                everything = False
                if len(doomed) == before:
                    kept.append((entry, "not made by amdm-geom"))
        else:
            kept.append((entry, "not made by amdm-geom"))
            everything = False
    return everything


def clean_folders(folders, *, dry_run: bool = False) -> tuple[list[tuple[Path, int]], list[tuple[Path, str]]]:
    """Remove what this toolkit wrote under ``folders`` (never a folder given, never a link, never
    anything outside them): ``(removed [(path, bytes)], kept [(path, why)])``. Everything is
    checked before anything is removed: a one-line ValueError (nothing removed) for `/`, the home
    folder, a missing folder or a file, and for a file the toolkit did not write inside one of its
    stores or result folders. A plain folder is searched; one that held only what was removed is
    removed too. ``dry_run`` removes nothing and returns what would be removed."""
    home = Path.home().resolve()
    folders = [Path(f).expanduser() for f in folders]
    for folder in folders:
        real = folder.resolve()
        if real == Path(real.anchor) or real == home:
            raise ValueError(f"refusing to clean {folder}: it is {'the root folder' if real != home else 'your home'}; "
                             "name the folders of runs and reports to clean (default: data/runs data/report)")
        if not folder.exists() and not folder.is_symlink():
            raise FileNotFoundError(f"argument FOLDER: no folder {folder}")
        if not folder.is_dir():
            raise NotADirectoryError(f"argument FOLDER: {folder} is a file, not a folder")
        if folder.is_symlink():
            raise ValueError(f"argument FOLDER: {folder} is a link; name the folder it points to")
    doomed: list[Path] = []
    kept: list[tuple[Path, str]] = []
    for folder in folders:
        _plan(folder, True, doomed, kept)
    removed = []
    for path in doomed:
        if path.is_dir() and not path.is_symlink() and not _ours(path, False):  # an emptied plain folder
            if not dry_run:
                try:
                    path.rmdir()
                except OSError:  # (something of its was kept: a store being written)
                    continue
            continue
        size = _size(path)
        if dry_run:
            removed.append((path, size))
        else:
            _remove(path, removed, kept, size)
    return removed, kept


def _remove(path: Path, removed: list, kept: list, size: int) -> None:
    if path.is_file():
        path.unlink()
        removed.append((path, size))
        return
    lock = StoreLock(path, path)
    try:
        lock.acquire()
    except StoreError as exc:
        kept.append((path, str(exc)))
        return
    try:
        shutil.rmtree(path)
    finally:
        lock.release()
    removed.append((path, size))

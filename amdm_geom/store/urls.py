"""Trace stores at fsspec URLs (``memory://runs/a.zarr``, ``s3://bucket/a.zarr``, ...).

``locate(path_or_url, storage_options)`` says where a store lives: a local ``Path`` (a plain
path, a ``pathlib.Path``, or a ``file://`` URL, which is the same local file system and so gets
everything a local store has: the writer's lock, the atomic replacement, the fast chunk writer),
or a ``UrlStore`` for any other fsspec URL, written and read through zarr's ``FsspecStore``.

What a URL store does not have, because object stores cannot express it:

- no writer lock: two writers of one URL are not kept apart (choose distinct URLs);
- no atomic replacement: ``overwrite`` deletes the old trace store when the new run begins, so a
  replacement that fails leaves an incomplete new store (``complete`` false), not the old one;
- chunks are written by zarr's own assignment, each chunk as one object (an object store's
  ``put`` is atomic; on other file systems it is as atomic as the file system's write).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from amdm_geom.store.identity import StoreError, absolute, doc_problem
from amdm_geom.store.integrity import foreign_files

#: ``protocol://...`` or a chained ``a::b://...`` URL (fsspec's syntax).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(://|::)")
_ACCEPTED = ("accepted: a local path or an fsspec URL such as memory://runs/a.zarr, file:///data/a.zarr "
             "or s3://bucket/a.zarr (with that protocol's fsspec package installed)")


def is_url(target) -> bool:
    """Whether ``target`` is a URL string (``protocol://...``) rather than a local path."""
    return isinstance(target, str) and _URL.match(target) is not None


class UrlStore:
    """A trace store at an fsspec URL: its file system (``fs``), the store's path in it
    (``root``) and what checking, writing and reading it needs."""

    def __init__(self, url: str, storage_options: dict | None = None):
        import fsspec

        self.url = url[:-1] if url.endswith("/") and not url.endswith("://") else url
        self.storage_options = dict(storage_options or {})
        try:
            self.fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        except (ImportError, ValueError, TypeError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise StoreError(f"cannot use trace store URL {url!r}: {reason}; {_ACCEPTED}") from None
        self.root = str(root).rstrip("/")
        if self.root.strip("/") in ("", ".", ".."):
            example = f"{self.url}run.zarr" if self.url.endswith("://") else f"{self.url.rstrip('/')}/run.zarr"
            raise StoreError(f"cannot write a trace store at {url}: name a folder for it, such as {example}")

    def __str__(self) -> str:
        return self.url

    def problem(self) -> str | None:
        """Why the URL is not a trace store (a short phrase), or None if it is one."""
        try:
            if not self.fs.exists(self.root):
                return "nothing there"
            if self.fs.isfile(self.root):
                return "a file, not a folder"
            try:
                text = self.fs.cat_file(f"{self.root}/zarr.json")
            except (FileNotFoundError, IsADirectoryError):
                return "no zarr.json"
            return doc_problem(text)
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
        except Exception as exc:  # a remote file system's own errors (permissions, network)
            return f"cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())})"

    def check_output(self, overwrite: bool) -> None:
        """``check_output_path`` for a URL: nothing there is fine; a trace store needs
        ``overwrite``; anything else is refused (``FileExistsError`` without ``overwrite``,
        ``StoreError`` with it)."""
        why = self.problem()
        if why == "nothing there":
            return
        if why is not None and why.startswith("cannot be read"):
            raise StoreError(f"cannot write trace store {self.url}: it {why}")
        if why is None and not overwrite:
            raise FileExistsError(f"trace store {self.url} exists; pass overwrite=True (--overwrite) to replace it")
        if why is None:
            foreign = foreign_files(self)
            if foreign:
                raise StoreError(f"refusing to replace {self.url}: {self.url}/{foreign[0]} was not written by "
                                 "amdm-geom; move it out of the store first")
        if why is not None:
            if overwrite:
                raise StoreError(f"refusing to overwrite {self.url}: not an amdm-geom trace store ({why})")
            raise FileExistsError(f"{self.url} exists and is not an amdm-geom trace store ({why}); "
                                  "choose another --out")

    def remove(self) -> None:
        """Delete the store (only ever called on a trace store, with ``overwrite``)."""
        self.fs.rm(self.root, recursive=True)

    def zarr_store(self, read_only: bool):
        """zarr's ``FsspecStore`` on the URL (``storage_options`` passed on)."""
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(self.url, storage_options=self.storage_options or None, read_only=read_only)


def locate(target, storage_options: dict | None = None) -> Path | UrlStore:
    """Where ``target`` lives: an absolute local ``Path`` for a path or a ``file://`` URL (without
    ``::`` chaining), else a ``UrlStore``. One-line ``StoreError`` for an unknown protocol, a
    protocol whose fsspec package is missing, bad ``storage_options`` or a URL naming no folder;
    ``ValueError`` for ``storage_options`` given with a local path."""
    if isinstance(target, UrlStore):
        return target
    if is_url(target):
        if target.startswith("file://") and "::" not in target:
            from fsspec.implementations.local import LocalFileSystem

            if storage_options:
                raise ValueError(f"storage_options {storage_options!r} given for the local URL {target}; "
                                 "accepted: none for local paths and file:// URLs")
            return absolute(LocalFileSystem._strip_protocol(target))
        return UrlStore(target, storage_options)
    if not isinstance(target, (str, os.PathLike)) or not os.fspath(target):
        raise StoreError(f"cannot write or read a trace store at {target!r}; {_ACCEPTED}")
    if storage_options:
        raise ValueError(f"storage_options {storage_options!r} given for the local path {target}; "
                         "accepted: none for local paths and file:// URLs")
    return absolute(target)

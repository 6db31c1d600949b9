"""What a trace store is, at the bottom of the trace layer: its error, the attributes that make a
zarr group one of this toolkit's trace stores, and the checks of a local folder or of the text of
a ``zarr.json`` (README, "Store schema"). ``paths``, ``urls``, ``integrity``, ``lock`` and
``reading`` all build on these; this module imports none of them."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["LIBRARY", "REQUIRED_ATTRS", "SPEC_ATTRS", "StoreError", "absolute", "doc_problem", "store_problem"]


class StoreError(ValueError):
    """A path that cannot be written or read as a trace store as asked. The message is one line
    that names the path and says why."""


#: Attributes every trace store carries from the moment its group is created (and one of ``SPEC_ATTRS``).
REQUIRED_ATTRS = ("dtype", "hook_names", "complete", "steps_completed", "creation_library")
#: Where a store keeps its run's settings: ``spec`` (the one spec, with the sampler's settings inside), or
#: ``config`` in a store written before stores kept one spec (``amdm_geom.store.settings`` reads both).
SPEC_ATTRS = ("spec", "config")
#: What ``creation_library`` starts with in this toolkit's stores.
LIBRARY = "amdm-geom"


def doc_problem(text) -> str | None:
    """Why a ``zarr.json`` holding ``text`` (str or bytes) is not a trace store's, or None."""
    try:
        doc = json.loads(text)
    except ValueError:
        return "zarr.json is not readable JSON"
    if not isinstance(doc, dict) or doc.get("zarr_format") != 3:
        return "not a zarr v3 store"
    if doc.get("node_type") != "group":
        return "zarr.json is not a zarr group"
    attrs = doc.get("attributes")
    if not isinstance(attrs, dict):
        attrs = {}
    if not any(key in attrs for key in SPEC_ATTRS):
        return f"attribute {SPEC_ATTRS[0]!r} missing"
    for key in REQUIRED_ATTRS:
        if key not in attrs:
            return f"attribute {key!r} missing"
    library = attrs["creation_library"]
    if not isinstance(library, str) or not library.startswith(LIBRARY):
        return f"written by {library!r}, not {LIBRARY}"
    return None


def store_problem(path: Path) -> str | None:
    """Why the local ``path`` is not a trace store (a short phrase), or None if it is one."""
    try:
        if not os.path.lexists(path):
            return "nothing there"
        if not path.is_dir():
            return "a file, not a folder"
        meta = path / "zarr.json"
        if not meta.is_file():
            return "no zarr.json"
        try:
            text = meta.read_bytes()
        except OSError:
            return "zarr.json is not readable JSON"
        return doc_problem(text)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"


def absolute(path) -> Path:
    """``path`` made absolute, without resolving links."""
    return Path(os.path.abspath(os.fspath(path)))

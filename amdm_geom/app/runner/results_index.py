"""What the report folder holds, read back for the report: one ``AnalysisResults`` per result
folder (``amdm_geom.app.runner.output``) with the keys of its verdicts, its figures and their
captions, and the files behind its numbers (CSV tables, zarr results).

Captions come from the analysis' ``figures.json`` (written by the runner from the module's
``CAPTIONS``); a figure without one is captioned by its file name. Hidden (half-written) folders
and folders that are not result folders are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from amdm_geom.app.runner.output import CAPTIONS_FILE, is_result_folder

__all__ = ["AnalysisResults", "Figure", "index", "result_files"]


@dataclass(frozen=True)
class Figure:
    """One figure: its path relative to the report folder, its caption."""

    src: str
    caption: str


@dataclass
class AnalysisResults:
    """One analysis' result folder: its name, the verdict keys it wrote, figures and result files
    (paths relative to the report folder; a zarr result by its ``zarr.json``)."""

    name: str
    keys: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def files_for(self, key: str) -> list[str]:
        """The files behind verdict ``key``: where the key names one of the folder's per-store
        subfolders (``..._gmm_pair`` and ``norm_angle/gmm_pair/``), that subfolder's files and the
        folder's own; else all of them."""
        subs = {Path(f).parts[1] for f in self.files if len(Path(f).parts) > 2}
        named = [s for s in subs if key.endswith(f"_{s}")]
        if not named:
            return list(self.files)
        best = max(named, key=len)  # (gmm_ddpm_eta40 over gmm_ddpm)
        return [f for f in self.files if len(Path(f).parts) == 2 or Path(f).parts[1] == best]


def result_files(folder: Path, top: Path) -> list[str]:
    """The CSV tables and zarr results under ``folder`` (paths relative to ``top``; a zarr group
    by its ``zarr.json``, its inner groups not listed), sorted."""
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(top)
        if any(p.startswith(".") for p in rel.parts) or any(p.endswith(".zarr") for p in rel.parts[:-1]):
            continue
        if path.suffix == ".csv" and path.is_file():
            found.append(rel.as_posix())
        elif path.suffix == ".zarr" and (path / "zarr.json").is_file():
            found.append((rel / "zarr.json").as_posix())
    return found


def _figures(sub: Path, top: Path) -> list[Figure]:
    captions = {}
    if (sub / CAPTIONS_FILE).is_file():
        captions = json.loads((sub / CAPTIONS_FILE).read_text())
    out = []
    for img in sorted(sub.rglob("*.png")):
        rel = img.relative_to(sub)
        if any(p.startswith(".") or p.endswith(".zarr") for p in rel.parts[:-1]):
            continue
        out.append(Figure(img.relative_to(top).as_posix(), captions.get(rel.as_posix()) or
                          f"{sub.name}: {rel.with_suffix('').as_posix()}"))
    return out


def index(folder) -> dict[str, AnalysisResults]:
    """``{analysis: AnalysisResults}`` for every result folder directly under ``folder``."""
    folder = Path(folder)
    out = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not is_result_folder(sub):
            continue
        keys = []
        if (sub / "verdicts.json").is_file():
            keys = [r.get("key", "") for r in json.loads((sub / "verdicts.json").read_text())]
        out[sub.name] = AnalysisResults(sub.name, keys, _figures(sub, folder), result_files(sub, folder))
    return out

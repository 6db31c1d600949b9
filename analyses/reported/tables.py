"""The paper's printed tables (``data/reference/table*.csv``) as DataFrames, and as one Dataset.

Each CSV holds one table as printed: the first column labels the rows (a method, a stage, an
eta), the numeric columns are the printed cells, and ``bold`` / ``underline`` (where the table has
them) list the columns printed so in that row, ";"-separated. ``load`` gives the numbers indexed
by the row label and the marks as boolean frames of the same shape; ``to_dataset`` and
``from_dataset`` turn the lot into one xarray Dataset and back (each table its own ``<name>_row``
and ``<name>_column`` dims), which is what the analysis computes and writes.

Table 7 (``table7.csv``, read also by the App. E analysis) has no ``bold`` column: its header says
Du et al.'s row is bold there, so ``TABLE7_BOLD`` writes that mark down here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["LOWER_IS_BETTER", "MARKS", "REFERENCE", "TABLES", "TABLE7_BOLD", "TEXT", "from_dataset", "load",
           "paper_tables", "to_dataset"]

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "reference"
#: The tables the audit reads, by name (``<name>.csv`` in ``REFERENCE``).
TABLES = ("table1", "table2", "table3", "table4", "table6", "table7", "table8", "table9", "table10")
#: The typographic marks a CSV may carry, one column each.
MARKS = ("bold", "underline")
#: Columns where a lower value is better (FID, time, ln MMD, Var); every other column: higher is better.
LOWER_IS_BETTER = frozenset({"fid", "time_s", "time_single_s", "ln_mmd", "var"})
#: Table 7's bold cells as printed (its CSV has no ``bold`` column; its header says Du et al.'s row is bold).
TABLE7_BOLD = {"Du et al. (2023)": ("ln_mmd", "ll", "var")}
#: Numbers the paper's text states about its tables (App. F.3): Table 8 "from 0.533 to 0.581" and Table 9
#: "from 0.545 to 0.597" (InteractDiffusion to InteractDiffusion(+IP-Adapter)).
TEXT = {"table8": (0.533, 0.581), "table9": (0.545, 0.597)}


def _marks(raw: pd.DataFrame, numbers: pd.DataFrame, mark: str) -> pd.DataFrame:
    out = pd.DataFrame(False, index=numbers.index, columns=numbers.columns)
    if mark not in raw:
        return out
    for label, cell in zip(numbers.index, raw[mark].fillna("")):
        for col in filter(None, str(cell).split(";")):
            if col not in out.columns:
                raise ValueError(f"{mark} mark names column {col!r}, not one of {', '.join(out.columns)}")
            out.loc[label, col] = True
    return out


def load(name: str, folder: Path | None = None) -> dict[str, pd.DataFrame]:
    """``{"values": numbers, "bold": ..., "underline": ...}`` of table ``name`` (one of ``TABLES``):
    the numbers (float64) indexed by the row label (as a string), each mark a boolean frame of the
    same shape (all False where the table has none)."""
    if name not in TABLES:
        raise ValueError(f"table must be one of {', '.join(TABLES)}; got {name!r}")
    raw = pd.read_csv((folder or REFERENCE) / f"{name}.csv", comment="#", dtype=str, keep_default_na=False)
    raw = raw.set_index(raw.columns[0])
    numbers = raw.drop(columns=[m for m in MARKS if m in raw]).replace("", "nan").astype(np.float64)
    out = {"values": numbers, **{m: _marks(raw, numbers, m) for m in MARKS}}
    if name == "table7":
        for label, cols in TABLE7_BOLD.items():
            out["bold"].loc[label, list(cols)] = True
    return out


def paper_tables(folder: Path | None = None) -> dict[str, dict[str, pd.DataFrame]]:
    """Every table of ``TABLES`` (``load``), by name."""
    return {name: load(name, folder) for name in TABLES}


def to_dataset(tables: dict[str, dict[str, pd.DataFrame]]) -> xr.Dataset:
    """One Dataset: per table ``<name>`` (numbers, dims ``<name>_row``, ``<name>_column``),
    ``<name>_bold`` and ``<name>_underline`` (booleans); the text's numbers as ``text_<name>``
    (dim ``text_end``: from, to)."""
    ds = xr.Dataset()
    for name, parts in tables.items():
        dims = (f"{name}_row", f"{name}_column")
        coords = {dims[0]: parts["values"].index.to_numpy(str), dims[1]: parts["values"].columns.to_numpy(str)}
        ds[name] = xr.DataArray(parts["values"].to_numpy(np.float64), dims=dims, coords=coords)
        for m in MARKS:
            ds[f"{name}_{m}"] = xr.DataArray(parts[m].to_numpy(bool), dims=dims, coords=coords)
    for name, (start, end) in TEXT.items():
        ds[f"text_{name}"] = xr.DataArray(np.array([start, end], np.float64), dims="text_end",
                                          coords={"text_end": ["from", "to"]})
    ds.attrs["source"] = "the paper's Tables 1-4 and 6-10 as printed (data/reference), and its text's numbers"
    return ds


def from_dataset(ds: xr.Dataset) -> tuple[dict[str, dict[str, pd.DataFrame]], dict[str, tuple[float, float]]]:
    """``to_dataset``'s inverse: the tables (as ``paper_tables`` gives them) and the text's numbers."""
    tables = {}
    for name in TABLES:
        if name not in ds:
            continue
        rows, cols = (list(map(str, ds[name][d].values)) for d in ds[name].dims)
        tables[name] = {"values": pd.DataFrame(ds[name].values, index=rows, columns=cols),
                        **{m: pd.DataFrame(ds[f"{name}_{m}"].values.astype(bool), index=rows, columns=cols)
                           for m in MARKS}}
    text = {name: tuple(map(float, ds[f"text_{name}"].values)) for name in TEXT if f"text_{name}" in ds}
    return tables, text

"""Verdicts: what an analysis concludes about one claim of the paper, and the table of them.

A verdict is one of four statuses, never hard-coded: it is derived from numbers the analysis
computed in the same run.

- ``holds``: the bound or claim is met everywhere it was measured; ``slack`` says by how much.
- ``violated``: it fails somewhere; ``detail`` says where and by how much.
- ``inconclusive``: the data at hand cannot decide. A verdict that would hold but rests on
  partial data (an interrupted store, non-finite samples left out) is inconclusive, its detail
  starting "not decided:" (``qualify``; ``extra["undecided"]`` keeps the status it would have
  had).
- ``vacuous``: the bound says nothing there (a probability bound <= 0, an empty domain);
  ``detail`` says why.

Two helpers keep every analysis honest in one place:

- ``qualify`` adds what was left out (non-finite samples, steps an interrupted run never
  finished) to a verdict, and never lets such a verdict hold;
- ``at_least`` / ``at_most`` compare a measured value with a bound up to the numbers' rounding
  (``tolerance``), so a verdict does not flip on the last bit; ``margin_text`` reports
  value - bound with enough digits to see a knife edge.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from rich.console import Console, Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

__all__ = ["KINDS", "ROUNDING_ULPS", "STATUSES", "STATUS_STYLES", "Verdict", "at_least", "at_most", "format_table",
           "margin_text", "qualify", "to_json", "tolerance", "verdict_table"]

STATUSES = ("holds", "violated", "inconclusive", "outside domain", "vacuous")
#: What a verdict is about: one of the paper's claims, or a check of this toolkit itself.
KINDS = ("paper claim", "implementation check")


@dataclass(frozen=True)
class Verdict:
    """One row of the verdict table.

    ``value`` is the measured number the verdict rests on and ``reference`` the bound or paper
    value it is compared with (NaN where there is none); ``measured`` and ``bound`` are their
    human-readable forms with units or context. ``kind`` says whether it is one of the paper's
    claims or a check of the toolkit itself; ``interval`` is the value's confidence interval at
    ``level`` where the value is random (``None`` where it is not), ``n`` how many independent
    outcomes it rests on, and ``test`` the test or rule that decided it.
    """

    claim: str
    where: str
    status: str
    measured: str
    bound: str
    detail: str = ""
    value: float = math.nan
    reference: float = math.nan
    key: str = ""
    extra: dict = field(default_factory=dict)
    kind: str = "paper claim"
    interval: tuple[float, float] | None = None
    level: float | None = None
    n: int | None = None
    test: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}; got {self.status!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {self.kind!r}")


# --------------------------------------------------------------------------------------------
# partial data


def qualify(verdict: Verdict, *, nonfinite: int = 0, total: int = 0, incomplete: str | Iterable[str] = "") -> Verdict:
    """``verdict`` with what it left out said first in its detail, and never "holds" on it.

    ``nonfinite`` of ``total`` samples had a non-finite value (NaN or inf) in a slot the run
    wrote and were excluded from every statistic; ``incomplete`` is a store's
    ``incomplete_note`` ("incomplete store: k of T steps"; several notes for several stores, ""
    when complete). The status was decided on what remains: "violated" and "vacuous" stand, but
    a would-be "holds" becomes "inconclusive" with the detail starting "not decided:" (the claim
    may fail on what is missing). The counts go into ``extra`` (``nonfinite``, ``samples``,
    ``incomplete``, and ``undecided`` = the status it would have had).
    """
    notes = [incomplete] if isinstance(incomplete, str) else list(incomplete)
    notes = [n for n in notes if n]
    nonfinite, total = int(nonfinite), int(total)
    if nonfinite:
        notes.append(f"{nonfinite} of {total} samples non-finite (excluded)")
    if not notes:
        return verdict
    said = "; ".join(notes)
    extra = {**verdict.extra, "nonfinite": nonfinite, "samples": total, "incomplete": "; ".join(
        n for n in notes if n.startswith("incomplete"))}
    status = verdict.status
    if status == "holds":
        status, said = "inconclusive", f"not decided: {said}"
        extra["undecided"] = "holds"
    detail = f"{said}. {verdict.detail}" if verdict.detail else f"{said}."
    return replace(verdict, status=status, detail=detail, extra=extra)


# --------------------------------------------------------------------------------------------
# comparisons up to rounding

#: Two floats within this many units in the last place (float64, of the larger magnitude) of
#: each other count as equal: a bound and a measurement that agree to rounding decide nothing.
ROUNDING_ULPS = 8


def tolerance(value, bound, *, ulps: float = ROUNDING_ULPS, rtol: float = 0.0, atol: float = 0.0):
    """How far apart ``value`` and ``bound`` may be and still count as equal: ``ulps`` float64
    units in the last place of the larger magnitude, plus ``rtol`` times that magnitude, plus
    ``atol`` (a measurement's own resolution, e.g. a residual's rounding scale). Elementwise on
    floats, numpy arrays or xarray objects; NaN where either is NaN or infinite."""
    scale = np.maximum(abs(value), abs(bound))
    with np.errstate(invalid="ignore", over="ignore"):
        return ulps * np.spacing(scale) + rtol * scale + atol


def _plain(result):
    return bool(result) if isinstance(result, (bool, np.bool_)) else result


def at_least(value, bound, **tol):
    """``value >= bound`` up to rounding: true where ``value >= bound - tolerance(...)`` (so a
    tie to rounding meets a ">= bound" claim); false where either is NaN. ``tol``: the keywords
    of ``tolerance``."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _plain(value >= bound - tolerance(value, bound, **tol))


def at_most(value, bound, **tol):
    """``value <= bound`` up to rounding (see ``at_least``)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _plain(value <= bound + tolerance(value, bound, **tol))


def margin_text(value: float, bound: float, **tol) -> str:
    """``"margin 1.1e-16 (a tie to rounding)"``: value - bound with two significant digits, and
    whether it is within ``tolerance``."""
    value, bound = float(value), float(bound)
    if not (math.isfinite(value) and math.isfinite(bound)):
        return "margin undefined"
    m = value - bound
    tie = abs(m) <= float(tolerance(value, bound, **tol))
    return f"margin {m:.2g}" + (" (a tie to rounding)" if tie else "")


# --------------------------------------------------------------------------------------------
# output


#: How each status is shown on a terminal that has colours.
STATUS_STYLES = {"holds": "green", "violated": "bold red", "inconclusive": "dim", "vacuous": "yellow"}
_CAPS = (28, 20, 28, 20, 14)  # the columns fit 120 characters with their padding


def verdict_table(verdicts: list[Verdict]) -> Group:
    """The verdict table as a rich renderable: a header (claim, where, measured, bound or paper
    value, verdict), then each row with its detail wrapped beneath it, then the counts line
    ("N holds, N violated, N inconclusive, N vacuous")."""
    cols = ("claim", "where", "measured", "bound / paper", "verdict")
    rows = [(v.claim, v.where, v.measured, v.bound, v.status.upper()) for v in verdicts]
    widths = [min(max(len(c), *(len(r[i]) for r in rows)) if rows else len(c), cap)
              for i, (c, cap) in enumerate(zip(cols, _CAPS))]

    def line(cells, style=None, status=None) -> Table:
        grid = Table.grid(padding=(0, 2))
        for w in widths:
            grid.add_column(width=w, no_wrap=True, overflow="crop")
        cells = [_clip(c, w) for c, w in zip(cells, widths)]  # (ASCII, unlike rich's ellipsis)
        grid.add_row(*cells[:-1], Text(cells[-1], style=STATUS_STYLES.get(status, "")), style=style)
        return grid

    parts = [line(cols, style="bold"), line(["-" * w for w in widths])]
    for v, r in zip(verdicts, rows):
        parts.append(line(r, status=v.status))
        if v.detail:
            parts.append(Padding(Text(v.detail, style="dim"), (0, 0, 0, 4)))
    counts = {s: sum(v.status == s for v in verdicts) for s in STATUSES}
    parts += [Text(""), Text(", ".join(f"{n} {s}" for s, n in counts.items()))]
    return Group(*parts)


def format_table(verdicts: list[Verdict], width: int = 120, *, color: bool = False) -> str:
    """The verdict table (``verdict_table``) as text ``width`` characters wide; with ``color``,
    terminal colour codes mark each status."""
    console = Console(file=io.StringIO(), width=width, color_system="standard" if color else None,
                      force_terminal=color, highlight=False, emoji=False, markup=False)
    console.print(verdict_table(verdicts))
    return "\n".join(line.rstrip() for line in console.file.getvalue().rstrip("\n").split("\n"))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def to_json(verdicts: list[Verdict]) -> str:
    """The verdicts as a JSON list (NaN written as null)."""
    def clean(d):
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
    return json.dumps([clean(asdict(v)) for v in verdicts], indent=2)

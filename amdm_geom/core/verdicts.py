"""Verdicts: what an analysis concludes about one claim of the paper, and the table of them.

A verdict is one of six statuses, never hard-coded: it is derived from numbers the analysis
computed in the same run.

- ``holds``: the bound or claim is met everywhere it was measured; ``slack`` says by how much.
- ``violated``: it fails somewhere; ``detail`` says where and by how much.
- ``setting-dependent``: a claim decided over a grid of settings (``amdm_geom.core.stats.grid_decision``)
  is shown true in some cells and false in others, each with familywise control across the cells;
  ``detail`` names the cells that go each way. (Over a grid, "holds everywhere" is ``holds`` and
  "violated everywhere" is ``violated``, the grid named in ``measured``.)
- ``inconclusive``: the data at hand cannot decide. A verdict that would hold but rests on
  partial data (an interrupted store, non-finite samples left out) is inconclusive, its detail
  starting "not decided:" (``qualify``; ``extra["undecided"]`` keeps the status it would have
  had).
- ``outside domain``: an assumption of the statement fails here; ``detail`` names it.
- ``vacuous``: the statement applies and says nothing there (a probability bound <= 0);
  ``detail`` says why.

Each verdict is of a ``kind`` (``KINDS``), and the table shows each kind in its own section:

- ``paper claim``: one of the paper's statements (a bound, an equation, a proposition);
- ``reported numbers``: a relation among the paper's own printed numbers (rows that should agree
  across its tables, ratios and timings), checked as statcheck or the GRIM test check a paper's
  statistics: recomputed from what it prints, not from a run;
- ``finding``: what a run shows about a sampler, a library or this toolkit's own setup (a
  benchmark's sanity check, a library step's behaviour), which the paper does not claim;
- ``implementation check``: this toolkit against diffusers and its own equations.
  ``implementation_check`` builds one with a tolerance in units of the dtype's resolution times
  the values' scale, so it reads the same on every machine where the code is right.

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

__all__ = ["CHECK_ULPS", "KINDS", "KIND_HEADINGS", "ROUNDING_ULPS", "STATUSES", "STATUS_STYLES", "Verdict", "at_least",
           "at_most", "counts_line", "format_table", "implementation_check", "interval_text", "margin_text", "qualify",
           "ratio_text", "resolution", "status_of", "to_json", "tolerance", "verdict_note", "verdict_table"]

STATUSES = ("holds", "violated", "setting-dependent", "inconclusive", "outside domain", "vacuous")
#: What a verdict is about, in the order the report and the terminal show them: one of the paper's claims; a
#: relation among the paper's own printed numbers (a statcheck/GRIM-style audit of its tables); a finding about a
#: sampler, a library or this toolkit's own setup (not the paper's claim); or a check of this toolkit itself.
KINDS = ("paper claim", "reported numbers", "finding", "implementation check")


@dataclass(frozen=True)
class Verdict:
    """One row of the verdict table.

    ``value`` is the measured number the verdict rests on and ``reference`` the bound or paper
    value it is compared with (NaN where there is none); ``measured`` and ``bound`` are their
    human-readable forms with units or context. ``kind`` (one of ``KINDS``) says what it is
    about: one of the paper's claims, a relation among its reported numbers, a finding about a
    sampler, a library or this toolkit's setup, or a check of the toolkit itself; ``interval`` is
    the value's confidence interval at ``level`` where the value is random (``None`` where it is
    not), ``n`` how many independent outcomes it rests on, and ``test`` the test or rule that
    decided it. ``family`` is the claim family it belongs to (a paper claim's report section;
    other kinds have a section each): the analysis that made it fills it in from its own
    declaration (``amdm_geom.analyses.base.Analysis.family``) unless the verdict names one.
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
    family: str = ""

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


def status_of(violated, holds=True, otherwise: str = "vacuous") -> str:
    """The status of a claim checked cell by cell: "violated" where any cell fails it
    (``violated``), else "holds" where it was measured (``holds``: some cell where the claim
    applies), else ``otherwise`` ("vacuous": it applies nowhere, so it says nothing here; or
    "inconclusive"). ``violated`` and ``holds`` are truth values (Python, numpy or 0-d xarray
    bools: ``mask.any()``)."""
    if otherwise not in STATUSES:
        raise ValueError(f"otherwise must be one of {STATUSES}; got {otherwise!r}")
    return "violated" if bool(violated) else "holds" if bool(holds) else otherwise


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
# implementation checks: tolerances in units of the dtype's resolution

#: An implementation check allows a residual of this many machine epsilons of its dtype times
#: the scale of the values it compares (a few roundings of each term of a sum, with room).
CHECK_ULPS = 16


def resolution(*dtypes) -> float:
    """The machine epsilon of the coarsest of ``dtypes`` (numpy or torch dtypes, or names such
    as ``"float32"``): the relative rounding a value computed in it carries."""
    import torch  # only here: the core's records need no torch otherwise

    eps = 0.0
    for d in dtypes:
        if isinstance(d, str):
            d = getattr(torch, d.removeprefix("torch."))
        eps = max(eps, float(torch.finfo(d).eps) if isinstance(d, torch.dtype) else float(np.finfo(d).eps))
    return eps


def ratio_text(ratio: float) -> str:
    """A residual in units of its tolerance, coarse enough to read the same on every machine:
    "0", "< 0.1", "0.4", "12"."""
    if not math.isfinite(ratio):
        return "undefined"
    if ratio == 0:
        return "0"
    if ratio < 0.1:
        return "< 0.1"
    return f"{ratio:.1f}" if ratio < 10 else f"{ratio:.0f}"


def implementation_check(*, key: str, claim: str, where: str, ratio: float, dtype: str, detail: str = "",
                         ulps: float = CHECK_ULPS, n: int | None = None, test: str = "", extra=None) -> Verdict:
    """A check of this toolkit itself (``kind="implementation check"``) whose ``value`` is its
    largest residual in units of its tolerance, ``ulps`` machine epsilons of ``dtype`` times the
    values' scale (the caller computes the ratio per step or array): it holds where that ratio is
    <= 1, is violated above it, and is inconclusive where nothing was measured (NaN)."""
    ratio = float(ratio)
    status = "inconclusive" if not math.isfinite(ratio) else "holds" if ratio <= 1 else "violated"
    return Verdict(
        key=key, claim=claim, where=where, status=status, kind="implementation check",
        measured=f"residual {ratio_text(ratio)} x tol", bound=f"tol {ulps:g} eps {dtype}", value=ratio, reference=1.0,
        detail=detail, n=n, test=f"{test or 'max residual <= tol'}; tol = {ulps:g} x eps({dtype}) x the values' scale",
        extra=dict(extra or {}))


# --------------------------------------------------------------------------------------------
# output


#: How each status is shown on a terminal that has colours.
STATUS_STYLES = {"holds": "green", "violated": "bold red", "setting-dependent": "magenta", "inconclusive": "dim",
                 "outside domain": "cyan", "vacuous": "yellow"}
_COLS = ("claim", "where", "measured", "bound / paper", "verdict")
_CAPS = (28, 20, 28, 17, 17)  # the columns fit 120 characters with their padding ("SETTING-DEPENDENT": 17)
_CAPS_CI = (23, 13, 22, 15, 18, 17)  # with an interval column


def interval_text(v: Verdict) -> str:
    """``"[0.012, 0.15]"``: the verdict's interval (three significant digits), "" where none."""
    if v.interval is None:
        return ""
    lo, hi = v.interval
    return f"[{lo:.3g}, {hi:.3g}]"


def verdict_note(v: Verdict) -> str:
    """The detail line beneath a row: the interval's level, n and the test, then the detail."""
    said = []
    if v.interval is not None:
        said.append(f"{100 * v.level:g}% interval {interval_text(v)}" if v.level else f"interval {interval_text(v)}")
    if v.n is not None:
        said.append(f"n = {v.n}")
    if v.test:
        said.append(f"test: {v.test}")
    head = "; ".join(said)
    return f"{head}. {v.detail}" if head and v.detail else (f"{head}." if head else v.detail)


def counts_line(verdicts: list[Verdict]) -> str:
    """``"N holds, N violated, N setting-dependent, N inconclusive, N outside domain, N vacuous"``."""
    return ", ".join(f"{sum(v.status == s for v in verdicts)} {s}" for s in STATUSES)


def _section(verdicts: list[Verdict]) -> list:
    with_ci = any(v.interval is not None for v in verdicts)
    cols = _COLS[:4] + ("interval",) + _COLS[4:] if with_ci else _COLS
    caps = _CAPS_CI if with_ci else _CAPS
    rows = [(v.claim, v.where, v.measured, v.bound, *((interval_text(v),) if with_ci else ()), v.status.upper())
            for v in verdicts]
    widths = [min(max(len(c), *(len(r[i]) for r in rows)) if rows else len(c), cap)
              for i, (c, cap) in enumerate(zip(cols, caps))]

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
        note = verdict_note(v)
        if note:
            parts.append(Padding(Text(note, style="dim"), (0, 0, 0, 4)))
    return parts + [Text(""), Text(counts_line(verdicts))]


#: The heading of each kind's section in the terminal table, in the order of ``KINDS``.
KIND_HEADINGS = {
    "paper claim": "Paper claims",
    "reported numbers": "Reported numbers (relations among the paper's own printed numbers)",
    "finding": "Findings: about samplers, libraries and this toolkit's setup (not claims of the paper)",
    "implementation check": "Implementation checks (this toolkit against diffusers and its own equations)",
}


def verdict_table(verdicts: list[Verdict]) -> Group:
    """The verdict table as a rich renderable, one section per kind of verdict in the order of
    ``KINDS`` (kinds without rows left out; with no rows at all, an empty paper-claims table), each
    under its heading (``KIND_HEADINGS``) with a header (claim, where, measured, bound or paper
    value, an interval column where a row has one, verdict), each row with its interval's level, n,
    test and detail wrapped beneath it, and its own counts line "N holds, N violated, N
    setting-dependent, N inconclusive, N outside domain, N vacuous"."""
    parts = []
    for kind in KINDS:
        rows = [v for v in verdicts if v.kind == kind]
        if rows or (kind == KINDS[0] and not verdicts):
            parts += [Text("")] if parts else []
            parts += [Text(KIND_HEADINGS[kind], style="bold"), *_section(rows)]
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
    """The verdicts as a JSON list, every field included (``interval`` as a two-element list or
    null; NaN written as null)."""
    def num(x):
        return None if isinstance(x, float) and not math.isfinite(x) else x

    def clean(d):
        d = {k: num(v) for k, v in d.items()}
        if d["interval"] is not None:
            d["interval"] = [num(float(x)) for x in d["interval"]]
        return d
    return json.dumps([clean(asdict(v)) for v in verdicts], indent=2)

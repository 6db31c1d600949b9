"""Verdicts: what an analysis concludes about one claim of the paper, and the table of them.

A verdict is one of three statuses, never hard-coded: it is derived from numbers the analysis
computed in the same run.

- ``holds``: the bound or claim is met everywhere it was measured; ``slack`` says by how much.
- ``violated``: it fails somewhere; ``detail`` says where and by how much.
- ``vacuous``: the bound says nothing there (a probability bound <= 0, an empty domain);
  ``detail`` says why.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import asdict, dataclass, field

__all__ = ["STATUSES", "Verdict", "format_table", "to_json"]

STATUSES = ("holds", "violated", "vacuous")


@dataclass(frozen=True)
class Verdict:
    """One row of the verdict table.

    ``value`` is the measured number the verdict rests on and ``reference`` the bound or paper
    value it is compared with (NaN where there is none); ``measured`` and ``bound`` are their
    human-readable forms with units or context.
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

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}; got {self.status!r}")


def format_table(verdicts: list[Verdict], width: int = 110) -> str:
    """A plain-text table: claim, where, measured, bound or paper value, verdict; each row's
    detail wrapped beneath it."""
    cols = ("claim", "where", "measured", "bound / paper", "verdict")
    rows = [(v.claim, v.where, v.measured, v.bound, v.status.upper()) for v in verdicts]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    widths = [min(w, cap) for w, cap in zip(widths, (34, 24, 30, 26, 8))]

    def line(cells):
        return "  ".join(_clip(c, w).ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [line(cols), line(["-" * w for w in widths])]
    for v, r in zip(verdicts, rows):
        out.append(line(r))
        if v.detail:
            out.extend(textwrap.wrap(v.detail, width=width, initial_indent="    ",
                                     subsequent_indent="    "))
    counts = {s: sum(v.status == s for v in verdicts) for s in STATUSES}
    out.append("")
    out.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(out)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def to_json(verdicts: list[Verdict]) -> str:
    """The verdicts as a JSON list (NaN written as null)."""
    def clean(d):
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
    return json.dumps([clean(asdict(v)) for v in verdicts], indent=2)

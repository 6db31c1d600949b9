"""The claim families the report and the terminal summary are organised by: the paper's
statements as a reader looks for them (Prop. 3.1, Lemma A.1, Prop. 3.2, App. D.1, App. E, the
ablations, the trained ecosystem, App. G: ``FAMILIES``, in that order), then the toolkit's own
implementation checks (``CHECKS``).

Each analysis declares the family it judges (``amdm_geom.analyses.base.Analysis.family``; the
registry refuses an id not in ``FAMILY_IDS``), and the runner writes it into each of its verdicts
(``Verdict.family``) unless the verdict names one itself. A verdict's section is its family;
``family_of`` never fails: a verdict that names none (one made by hand, outside the runner) lands
in ``OTHER``, which the report shows last among the claims.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from amdm_geom.core.verdicts import STATUS_STYLES, STATUSES, Verdict

__all__ = ["CHECKS", "FAMILIES", "FAMILY_IDS", "OTHER", "Family", "family_of", "finding", "format_summary", "group",
           "status_counts"]


@dataclass(frozen=True)
class Family:
    """One section of the report: its anchor id, title, and the question it answers."""

    id: str
    title: str
    question: str


FAMILIES: tuple[Family, ...] = (
    Family("prop31", "Prop. 3.1: norms and angles", "Do two models of one ecosystem land at nearly equal norms and "
           "small angles (and is Table 5 resolved)?"),
    Family("lemma-a1", "Lemma A.1: the Gaussian shell", "Do Gaussian latents concentrate on the sqrt(n) shell?"),
    Family("prop32", "Prop. 3.2: the shifted latent", "Does the shifted latent sit in the other model's "
           "high-probability shell?"),
    Family("app-d1", "App. D.1: is the schedule Gaussian enough", "Are SD's marginals Gaussian enough for Lemma "
           "A.1 to apply?"),
    Family("app-e", "App. E: the 2D mixture (Table 7)", "Why does AMDM fail on a 2D mixture where MCMC composition "
           "works?"),
    Family("ablations", "Ablations on the exact GMM family", "Tables 1-4, 6 and 10 and Figure 5, measured where "
           "ground truth is exact."),
    Family("trained", "The trained digits ecosystem", "On networks that learned something, does AMDM beat the "
           "single models and the other training-free methods?"),
    Family("app-g", "App. G: rectified flow", "Does the geometry, and AMDM, carry over to rectified-flow models?"),
)
#: The implementation checks: the toolkit against diffusers and its own equations.
CHECKS = Family("checks", "Implementation checks", "Does the toolkit compute what it says (against diffusers and "
                "its own equations)?")
OTHER = Family("other", "Other claims", "Claims that name no family.")
#: The families an analysis may declare, in the report's order.
FAMILY_IDS = tuple(f.id for f in (*FAMILIES, CHECKS))
_BY_ID = {f.id: f for f in (*FAMILIES, CHECKS)}


def family_of(v: Verdict) -> Family:
    """The family verdict ``v`` names (``Verdict.family``), ``OTHER`` where it names none."""
    return _BY_ID.get(v.family, OTHER)


def group(rows: Iterable[Verdict]) -> list[tuple[Family, list[Verdict]]]:
    """The rows by family, in the report's order (``FAMILIES``, ``OTHER``, ``CHECKS``), rows in
    their given order; families without rows left out."""
    rows = list(rows)
    order = (*FAMILIES, OTHER, CHECKS)
    by_id = {f.id: [v for v in rows if family_of(v).id == f.id] for f in order}
    return [(f, by_id[f.id]) for f in order if by_id[f.id]]


def status_counts(rows: Iterable[Verdict]) -> dict[str, int]:
    """``{status: count}`` over every status of ``STATUSES`` (zeros included)."""
    rows = list(rows)
    return {s: sum(v.status == s for v in rows) for s in STATUSES}


def finding(rows: list[Verdict]) -> str:
    """The family's finding in one sentence, from its verdicts: how many hold, and the first
    violated claim (or the first inconclusive one) with its measured value."""
    counts = status_counts(rows)
    total = len(rows)
    first = next((v for v in rows if v.status == "violated"), None)
    if first is not None:
        return (f"{counts['holds']} of {total} hold; {counts['violated']} violated, first: "
                f"{first.claim} ({first.measured}).")
    open_ = next((v for v in rows if v.status == "inconclusive"), None)
    if open_ is not None:
        return (f"{counts['holds']} of {total} hold and none is violated; {counts['inconclusive']} inconclusive, "
                f"first: {open_.claim} ({open_.measured}).")
    if counts["holds"] == total:
        return f"All {total} hold."
    rest = ", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "holds")
    return f"{counts['holds']} of {total} hold and none is violated ({rest})."


def format_summary(rows: Iterable[Verdict], width: int = 120, *, color: bool = False) -> str:
    """The summary the terminal prints first: one line per family (its counts by status, in the
    statuses' colours with ``color``, and its finding, wrapped), as text ``width`` wide."""
    import io

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Summary by claim family", title_justify="left", show_lines=False, expand=True)
    table.add_column("family", ratio=3)
    for s in STATUSES:
        table.add_column(s, justify="right", style=STATUS_STYLES[s], no_wrap=True)
    table.add_column("finding", ratio=5)
    for fam, members in group(rows):
        counts = status_counts(members)
        table.add_row(Text(fam.title), *(str(counts[s]) for s in STATUSES), Text(finding(members)))
    console = Console(file=io.StringIO(), width=width, color_system="standard" if color else None,
                      force_terminal=color, highlight=False, emoji=False, markup=False)
    console.print(table)
    return "\n".join(line.rstrip() for line in console.file.getvalue().rstrip("\n").split("\n"))

"""The sections the report and the terminal summary are organised by, one kind of verdict
(``amdm_geom.core.verdicts.KINDS``) after another: the paper's claims by claim family, as a reader
looks for them (Prop. 3.1, Lemma A.1, Prop. 3.2, App. D.1, App. E, the ablations, the trained
ecosystem, App. G: ``FAMILIES``, in that order, then ``OTHER``), then one section for each other
kind (``KIND_SECTIONS``): the paper's reported numbers checked against each other
(``REPORTED``), findings about samplers, libraries and this toolkit's setup (``FINDINGS``), and the
toolkit's own implementation checks (``CHECKS``).

Each analysis declares the family it judges (``amdm_geom.analyses.base.Analysis.family``; the
registry refuses an id not in ``FAMILY_IDS``), and the runner writes it into each of its verdicts
(``Verdict.family``) unless the verdict names one itself. A paper claim's section is its family; a
verdict of another kind goes to its kind's section whatever its family (``section_of``), so an
analysis that makes a finding keeps its family. ``section_of`` never fails: a paper claim that names
no claim family (one made by hand, outside the runner) lands in ``OTHER``, shown last among the claims.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from amdm_geom.core.verdicts import KINDS, STATUS_STYLES, STATUSES, Verdict

__all__ = ["CHECKS", "FAMILIES", "FAMILY_IDS", "FINDINGS", "KIND_SECTIONS", "OTHER", "REPORTED", "Family", "family_of",
           "by_kind", "finding", "format_summary", "group", "kind_of", "section_of", "status_counts"]


@dataclass(frozen=True)
class Family:
    """One section of the report: its anchor id, title, the question it answers, and (for a kind's
    own section) a paragraph saying what its verdicts are."""

    id: str
    title: str
    question: str
    intro: str = ""


FAMILIES: tuple[Family, ...] = (
    Family("prop31", "Prop. 3.1: norms and angles", "Do two models of one ecosystem land at nearly equal norms and "
           "small angles (and is Table 5 resolved)?"),
    Family("lemma-a1", "Lemma A.1: the Gaussian shell", "Do Gaussian latents concentrate on the sqrt(n) shell?"),
    Family("prop32", "Prop. 3.2: the shifted latent", "Does the shifted latent sit in the other model's "
           "high-probability shell?"),
    Family("app-d1", "App. D.1: is the schedule Gaussian enough", "Are SD's marginals Gaussian enough for Lemma "
           "A.1 to apply?"),
    Family("app-e", "App. E: compositional methods and the 2D mixture (Table 7)", "Is AMDM a combination of "
           "scores, and why does it fail on a 2D mixture where MCMC composition works?"),
    Family("ablations", "Ablations on the exact GMM family", "Tables 1-4, 6 and 10 and Figure 5, measured where "
           "ground truth is exact."),
    Family("trained", "The trained digits ecosystem", "On networks that learned something, does AMDM beat the "
           "single models and the other training-free methods?"),
    Family("app-g", "App. G: rectified flow", "Does the geometry, and AMDM, carry over to rectified-flow models?"),
)
#: The implementation checks: the toolkit against diffusers and its own equations.
CHECKS = Family("checks", "Implementation checks", "Does the toolkit compute what it says (against diffusers and "
                "its own equations)?",
                "Checks of this toolkit itself (against diffusers and its own equations), not results about the "
                "paper. Each residual is measured in units of its tolerance: a few machine epsilons of the dtype "
                "times the scale of the values compared, so a check holds on every machine where the code is right.")
#: The paper's reported numbers: relations among its own printed values.
REPORTED = Family("reported", "Reported numbers: the paper's tables against each other", "Do the paper's own printed "
                  "numbers agree with one another where its text says they should?",
                  "Relations among the numbers the paper prints (rows that should agree across tables, ratios and "
                  "timings, ablation rows against the default rows), recomputed from the printed values as statcheck "
                  "or the GRIM test recompute a paper's statistics: no run of ours enters them.")
#: Findings: what the runs show about a sampler, a library or this toolkit's setup.
FINDINGS = Family("findings", "Findings: about samplers, libraries and this toolkit's setup", "What do the runs show "
                  "that the paper does not claim?",
                  "Results about a sampler, a library or this toolkit's own setup (a benchmark's sanity check, a "
                  "library step's behaviour, what a printed table can resolve): measured like the claims, but none "
                  "of them is a statement of the paper, so none counts for or against it.")
OTHER = Family("other", "Other claims", "Paper claims that name no claim family.")
#: The report's section of each kind other than "paper claim" (whose sections are the claim families).
KIND_SECTIONS = {"reported numbers": REPORTED, "finding": FINDINGS, "implementation check": CHECKS}
#: The families an analysis may declare, in the report's order (``REPORTED`` for an analysis of the paper's printed
#: numbers alone).
FAMILY_IDS = tuple(f.id for f in (*FAMILIES, REPORTED, CHECKS))
_BY_ID = {f.id: f for f in (*FAMILIES, REPORTED, CHECKS)}
_CLAIMS = {f.id: f for f in FAMILIES}
_ORDER = (*FAMILIES, OTHER, *(KIND_SECTIONS[k] for k in KINDS if k in KIND_SECTIONS))
_KIND = {**{f.id: "paper claim" for f in (*FAMILIES, OTHER)}, **{f.id: k for k, f in KIND_SECTIONS.items()}}


def family_of(v: Verdict) -> Family:
    """The family verdict ``v`` names (``Verdict.family``), ``OTHER`` where it names none."""
    return _BY_ID.get(v.family, OTHER)


def section_of(v: Verdict) -> Family:
    """The report's section of verdict ``v``: its kind's section (``KIND_SECTIONS``) for every kind
    but "paper claim"; for a paper claim, its claim family (``FAMILIES``), ``OTHER`` where it names
    none."""
    return KIND_SECTIONS.get(v.kind) or _CLAIMS.get(v.family, OTHER)


def kind_of(section: Family) -> str:
    """The kind of verdict (one of ``KINDS``) that section ``section`` holds."""
    return _KIND[section.id]


def group(rows: Iterable[Verdict]) -> list[tuple[Family, list[Verdict]]]:
    """The rows by section (``section_of``), in the report's order (``FAMILIES``, ``OTHER``, then
    the other kinds' sections in the order of ``KINDS``), rows in their given order; sections
    without rows left out."""
    rows = list(rows)
    by_id = {f.id: [v for v in rows if section_of(v).id == f.id] for f in _ORDER}
    return [(f, by_id[f.id]) for f in _ORDER if by_id[f.id]]


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
    mixed = next((v for v in rows if v.status == "setting-dependent"), None)
    if mixed is not None:
        return (f"{counts['holds']} of {total} hold and none is violated everywhere; {counts['setting-dependent']} "
                f"setting-dependent, first: {mixed.claim} ({mixed.measured}).")
    open_ = next((v for v in rows if v.status == "inconclusive"), None)
    if open_ is not None:
        return (f"{counts['holds']} of {total} hold and none is violated; {counts['inconclusive']} inconclusive, "
                f"first: {open_.claim} ({open_.measured}).")
    if counts["holds"] == total:
        return f"All {total} hold."
    rest = ", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "holds")
    return f"{counts['holds']} of {total} hold and none is violated ({rest})."


def by_kind(rows: Iterable[Verdict]) -> list[tuple[str, list[tuple[Family, list[Verdict]]]]]:
    """``group(rows)`` split by kind: ``[(kind, [(section, rows), ...]), ...]`` in the order of
    ``KINDS``, kinds without rows left out."""
    sections = group(rows)
    out = [(k, [(f, m) for f, m in sections if kind_of(f) == k]) for k in KINDS]
    return [(k, s) for k, s in out if s]


def format_summary(rows: Iterable[Verdict], width: int = 120, *, color: bool = False) -> str:
    """The summary the terminal prints first, one block per kind of verdict (``KINDS``): the
    paper's claims one line per claim family, then a line counting all of them; the reported
    numbers, the findings and the implementation checks one line each. A line has its counts by
    status (in the statuses' colours with ``color``) and its result in one sentence (``finding``,
    wrapped); the last line counts every verdict. Text ``width`` characters wide."""
    import io

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    rows = list(rows)
    table = Table(title="Summary by kind of verdict (the paper's claims by family)", title_justify="left",
                  show_lines=False, expand=True)
    table.add_column("section", ratio=3)
    for s in STATUSES:
        table.add_column(s, justify="right", style=STATUS_STYLES[s], no_wrap=True)
    table.add_column("result", ratio=5)

    def add(title, members, *, bold=False, end=False):
        counts = status_counts(members)
        table.add_row(Text(title, style="bold" if bold else ""), *(str(counts[s]) for s in STATUSES),
                      Text(finding(members)), end_section=end)

    for kind, sections in by_kind(rows):
        for i, (fam, members) in enumerate(sections):
            add(fam.title, members, end=kind != "paper claim" and i == len(sections) - 1)
        if kind == "paper claim":
            add("paper claims, all families", [v for _, m in sections for v in m], bold=True, end=True)
    add("all verdicts", rows, bold=True)
    console = Console(file=io.StringIO(), width=width, color_system="standard" if color else None,
                      force_terminal=color, highlight=False, emoji=False, markup=False)
    console.print(table)
    return "\n".join(line.rstrip() for line in console.file.getvalue().rstrip("\n").split("\n"))

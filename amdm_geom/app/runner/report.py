"""The validation report, ``data/report/index.html``: organised by kind of verdict, the paper's
claims as the paper is.

At the top the run's provenance (commit, versions, seeds, mode, time: ``provenance``), then the
summary, one kind of verdict after another (``amdm_geom.core.verdicts.KINDS``): one line per claim
family of the paper's claims (``families``: Prop. 3.1, Lemma A.1, Prop. 3.2, App. D.1, App. E, the
ablations, the trained ecosystem, App. G) and a line counting all of them, then one line each for
the paper's reported numbers, the findings (about samplers, libraries and this toolkit's setup) and
the implementation checks, each with its counts by status and its result in one sentence; a last
line counts every verdict. Then one section per line (``families.group``): its verdicts (status,
measured value with interval, bound or paper value, n, detail), each with a stable anchor
``#verdict-<key>`` and links to the CSV and zarr results of the analysis that computed it; the power
of its comparisons; and the figures that support it (an analysis' figures go to the section most of
its verdicts are in, ``FIGURE_FAMILY`` excepted), each with its caption, a click enlarging it to
full resolution.

The page is one folder with the analyses' result folders: no network request, no CDN; the small
script that enlarges a figure is inline, and without it a click opens the image itself. Rendered
from the jinja2 template ``templates/report.html.j2`` with every value HTML-escaped, written to a
temporary file and renamed, so a half-written report never looks complete.
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path

import jinja2

from amdm_geom.app.runner.families import finding, group, kind_of, section_of, status_counts
from amdm_geom.app.runner.output import write_owned
from amdm_geom.app.runner.provenance import provenance
from amdm_geom.app.runner.results_index import index
from amdm_geom.core.verdicts import STATUSES, Verdict, interval_text, verdict_note

__all__ = ["COLOURS", "FIGURE_FAMILY", "anchor", "render_report", "write_report"]

COLOURS = {"holds": "#1a7f37", "violated": "#cf222e", "setting-dependent": "#8250df", "inconclusive": "#6e7781",
           "outside domain": "#0969da", "vacuous": "#9a6700"}
#: Figures that belong to another family than most of their analysis' verdicts.
FIGURE_FAMILY = {"shell/lemma_a1.png": "lemma-a1"}


def _escape(value) -> str:
    """Every ``{{ value }}`` escaped as ``html.escape`` does (quotes included)."""
    return html.escape(str(value))


#: ``finalize`` escapes every value printed (the template itself is trusted HTML).
_ENV = jinja2.Environment(loader=jinja2.PackageLoader("amdm_geom.app.runner", "templates"), autoescape=False,
                          finalize=_escape, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def anchor(key: str) -> str:
    """The stable anchor id of verdict ``key``: ``verdict-<key>`` (characters other than letters,
    digits, ``-``, ``_`` and ``.`` become ``-``)."""
    return "verdict-" + "".join(c if c.isalnum() or c in "-_." else "-" for c in key)


def _power_rows(rows: list[Verdict]) -> list[dict]:
    """The power computation of every comparison that carries one (``extra["n_to_resolve"]``, see
    ``amdm_geom.core.stats``): n used, the paired sd, the n that resolves the stated difference with
    the stated power, and the power the n used has."""
    out = []
    for v in rows:
        e = v.extra or {}
        if "n_to_resolve" not in e:
            continue
        out.append({"claim": v.claim, "anchor": anchor(v.key or v.claim), "where": v.where, "status": v.status,
                    "n": "" if v.n is None else v.n, "sd": f"{e['paired_sd']:.3f}",
                    "needed": e["n_to_resolve"] or "unknown",
                    "power": "" if e.get("power_at_n") is None else f"{e['power_at_n']:.2f}",
                    "comparisons": e.get("comparisons", 1), "delta": f"{e['delta']:g}", "target": f"{e['power']:g}"})
    return out


def _figure_homes(results: dict, rows: list[Verdict]) -> dict[str, str]:
    """``{figure src: section id}``: each analysis' figures go to the section most of its verdicts
    are in (``FIGURE_FAMILY`` excepted); an analysis with no verdict among ``rows``, nowhere."""
    family = {v.key: section_of(v).id for v in rows if v.key}
    homes = {}
    for res in results.values():
        votes = Counter(family[k] for k in res.keys if k in family)
        if not votes:
            continue
        home = votes.most_common(1)[0][0]
        for fig in res.figures:
            homes[fig.src] = FIGURE_FAMILY.get(fig.src, home)
    return homes


def _sections(rows: list[Verdict], folder: Path) -> list[dict]:
    results = index(folder) if folder.is_dir() else {}
    owner = {k: res for res in results.values() for k in res.keys}
    homes = _figure_homes(results, rows)
    figures = {fig.src: fig for res in results.values() for fig in res.figures}
    sections = []
    for fam, members in group(rows):
        entries = []
        for v in members:
            res = owner.get(v.key)
            entries.append({"v": v, "anchor": anchor(v.key or v.claim), "interval": interval_text(v),
                            "note": verdict_note(v), "analysis": res.name if res else "",
                            "files": res.files_for(v.key) if res else []})
        sections.append({"id": fam.id, "title": fam.title, "question": fam.question, "rows": entries,
                         "counts": status_counts(members), "finding": finding(members), "kind": kind_of(fam),
                         "intro": fam.intro, "power": _power_rows(members),
                         "figures": [figures[src] for src, home in homes.items() if home == fam.id]})
    return sections


def render_report(rows: list[Verdict], folder, *, title: str = "amdm-geom validation report",
                  context: dict | None = None) -> str:
    """The page's HTML for the verdict rows and the result folders under ``folder``."""
    folder = Path(folder)
    keys = [v.key for v in rows if v.key]
    dup = sorted(k for k, n in Counter(keys).items() if n > 1)
    if dup:
        raise ValueError(f"verdict keys must be distinct (each is an anchor); repeated: {', '.join(dup)}")
    sections = _sections(rows, folder)
    totals = status_counts(rows)
    claims = [v for v in rows if v.kind == "paper claim"]
    claim_totals = {"counts": status_counts(claims), "finding": finding(claims)} if claims else None
    return _ENV.get_template("report.html.j2").render(
        title=title, info=provenance(**(context or {})), sections=sections, totals=totals, statuses=STATUSES,
        colours=COLOURS, claim_totals=claim_totals)


def write_report(rows: list[Verdict], folder, *, title: str = "amdm-geom validation report",
                 context: dict | None = None) -> Path:
    """Write ``folder/index.html`` from the verdict rows and the result folders under ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    page = render_report(rows, folder, title=title, context=context)
    return write_owned(folder, "index.html", page)

"""The validation report: ``data/report/index.html``, the paper's claims first (claim, where in
the paper, measured value, bound or paper value, interval, n, verdict; the level, test and
detail beneath), then App. G's rectified-flow claims, then the implementation checks in their own
table, then every analysis' figures, rendered from the jinja2 template ``templates/report.html.j2``
with every value HTML-escaped.

The page links the PNG figures the analyses wrote in their folders under the report folder,
and is written to a temporary file and renamed, so a half-written report never looks complete.
"""

from __future__ import annotations

import html
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import jinja2

from amdm_geom import __version__
from amdm_geom.verdicts import Verdict, counts_line, interval_text, verdict_note

__all__ = ["render_report", "write_report"]

COLOURS = {"holds": "#1a7f37", "violated": "#cf222e", "inconclusive": "#6e7781", "outside domain": "#0969da",
           "vacuous": "#9a6700"}


def _escape(value) -> str:
    """Every ``{{ value }}`` escaped as ``html.escape`` does (quotes included)."""
    return html.escape(str(value))


#: ``finalize`` escapes every value printed (the template itself is trusted HTML).
_ENV = jinja2.Environment(loader=jinja2.PackageLoader("amdm_geom.runner", "templates"), autoescape=False,
                          finalize=_escape, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def _figure_groups(folder: Path) -> list[dict]:
    """One group per analysis folder (hidden, half-written folders skipped) with its PNGs."""
    groups = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(sub.rglob("*.png"))
        if images:
            groups.append({"name": sub.name, "figures": [
                {"src": img.relative_to(folder).as_posix(), "caption": str(img.relative_to(sub).with_suffix(""))}
                for img in images]})
    return groups


def render_report(rows: list[Verdict], folder, *, title: str = "amdm-geom validation report",
                  context: dict | None = None) -> str:
    """The page's HTML for the verdict rows and the PNGs under ``folder``: the paper's claims,
    those on App. G's rectified-flow extension, then the implementation checks, each section with
    its counts line."""
    folder = Path(folder)
    claims = [v for v in rows if v.kind != "implementation check"]
    checks = [v for v in rows if v.kind == "implementation check"]
    flow = [v for v in claims if "App. G" in v.where]  # the rectified-flow extension, its own section
    claims = [v for v in claims if "App. G" not in v.where]
    info = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "amdm-geom": __version__, "python": platform.python_version(), **(context or {})}
    sections = [{"title": "Verdicts", "counts": counts_line(claims), "rows": claims, "checks": False,
                 "power": _power_rows(claims)}]
    if flow:
        sections.append({"title": "Rectified flow (App. G)", "counts": counts_line(flow), "rows": flow,
                         "checks": False, "power": _power_rows(flow)})
    if checks:
        sections.append({"title": "Implementation checks", "counts": counts_line(checks), "rows": checks,
                         "checks": True, "power": []})
    return _ENV.get_template("report.html.j2").render(
        title=title, info=info, sections=sections, interval=interval_text, note=verdict_note, colours=COLOURS,
        groups=_figure_groups(folder))


def _power_rows(rows: list[Verdict]) -> list[dict]:
    """The power computation of every comparison that carries one (``extra["n_to_resolve"]``, see
    ``amdm_geom.stats``): n used, the paired sd, the n that resolves the stated difference with
    the stated power, and the power the n used has."""
    out = []
    for v in rows:
        e = v.extra or {}
        if "n_to_resolve" not in e:
            continue
        out.append({"claim": v.claim, "where": v.where, "status": v.status, "n": "" if v.n is None else v.n,
                    "sd": f"{e['paired_sd']:.3f}", "needed": e["n_to_resolve"] or "unknown",
                    "power": "" if e.get("power_at_n") is None else f"{e['power_at_n']:.2f}",
                    "comparisons": e.get("comparisons", 1), "delta": f"{e['delta']:g}", "target": f"{e['power']:g}"})
    return out


def write_report(rows: list[Verdict], folder, *, title: str = "amdm-geom validation report",
                 context: dict | None = None) -> Path:
    """Write ``folder/index.html`` from the verdict rows and the PNGs under ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    page = render_report(rows, folder, title=title, context=context)
    tmp = folder / ".index.html.partial"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, folder / "index.html")
    return folder / "index.html"

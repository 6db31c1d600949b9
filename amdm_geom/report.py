"""The validation report: ``data/report/index.html``, one verdict table first (claim, where in
the paper, measured value, bound or paper value, verdict, detail), then every analysis' figures.

The page links the PNG figures the analyses wrote in their folders under the report folder,
and is written to a temporary file and renamed, so a half-written report never looks complete.
"""

from __future__ import annotations

import html
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .verdicts import STATUSES, Verdict

__all__ = ["write_report"]

_COLOURS = {"holds": "#1a7f37", "violated": "#cf222e", "inconclusive": "#6e7781", "vacuous": "#9a6700"}
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #1f2328; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
th, td { border-bottom: 1px solid #d0d7de; padding: 0.4em 0.5em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.detail { color: #57606a; font-size: 0.85em; }
span.status { font-weight: 600; text-transform: uppercase; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 560px; border: 1px solid #d0d7de; }
figcaption { font-size: 0.8em; color: #57606a; }
"""


def _row(v: Verdict) -> str:
    colour = _COLOURS[v.status]
    cells = [html.escape(v.claim), html.escape(v.where), html.escape(v.measured), html.escape(v.bound),
             f'<span class="status" style="color:{colour}">{v.status}</span>']
    return ("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>\n"
            f'<tr><td colspan="5" class="detail">{html.escape(v.detail)}</td></tr>\n')


def write_report(rows: list[Verdict], folder, *, title: str = "amdm-geom validation report",
                 context: dict | None = None) -> Path:
    """Write ``folder/index.html`` from the verdict rows and the PNGs under ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    counts = ", ".join(f"{sum(v.status == s for v in rows)} {s}" for s in STATUSES)
    info = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "amdm-geom": __version__, "python": platform.python_version(), **(context or {})}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             "<p>" + " &middot; ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in info.items()) + "</p>",
             f"<h2>Verdicts ({html.escape(counts)})</h2>",
             "<p>Each verdict is computed in this run: <b>holds</b> (with its slack), <b>violated</b> (where, by how "
             "much), <b>inconclusive</b> (the data cannot decide; why), <b>vacuous</b> (why). A violated bound is a "
             "finding, not a failure of the run.</p>",
             "<table><tr><th>claim</th><th>where</th><th>measured</th><th>bound / paper</th><th>verdict</th></tr>",
             *(_row(v) for v in rows), "</table>", "<h2>Figures</h2>"]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(sub.rglob("*.png"))
        if not images:
            continue
        parts.append(f"<h3>{html.escape(sub.name)}</h3>")
        for img in images:
            rel = img.relative_to(folder).as_posix()
            caption = html.escape(str(img.relative_to(sub).with_suffix("")))
            parts.append(f'<figure><a href="{rel}"><img src="{rel}" alt="{caption}"></a>'
                         f"<figcaption>{caption}</figcaption></figure>")
    parts.append("</body></html>\n")
    tmp = folder / ".index.html.partial"
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, folder / "index.html")
    return folder / "index.html"

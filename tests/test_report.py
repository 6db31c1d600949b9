"""The HTML report: the verdict table first, then the figures; escaped; written atomically."""

from amdm_geom.report import write_report
from amdm_geom.verdicts import Verdict


def test_report_lists_verdicts_then_figures(tmp_path):
    (tmp_path / "shell").mkdir()
    (tmp_path / "shell" / "lemma.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / ".shell.tmp").mkdir()  # a half-written folder is not listed
    (tmp_path / ".shell.tmp" / "x.png").write_bytes(b"")
    rows = [Verdict(claim="a < b & c", where="eq. (5)", status="violated", measured="m", bound="b", detail="<d>"),
            Verdict(claim="ok", where="eq. (9)", status="holds", measured="m", bound="b")]
    page = write_report(rows, tmp_path, context={"mode": "quick"}).read_text()
    assert "a &lt; b &amp; c" in page and "&lt;d&gt;" in page
    counts = "<h2>Verdicts (1 holds, 1 violated, 0 inconclusive, 0 outside domain, 0 vacuous)"
    assert page.index(counts) < page.index("<h2>Figures")
    assert 'src="shell/lemma.png"' in page and ".shell.tmp" not in page
    assert "mode: quick" in page
    assert not (tmp_path / ".index.html.partial").exists()


def test_the_terminal_table_never_cuts_a_status():
    from amdm_geom.verdicts import STATUSES, format_table

    rows = [Verdict(claim="c" * 80, where="w" * 60, status=s, measured="m" * 60, bound="b" * 60) for s in STATUSES]
    text = format_table(rows)
    assert all(line == line.rstrip() and len(line) <= 120 for line in text.splitlines())
    for s in STATUSES:
        assert f" {s.upper()}" in text

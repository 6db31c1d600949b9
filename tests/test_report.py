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


def test_report_puts_implementation_checks_in_their_own_section(tmp_path):
    rows = [Verdict(claim="AMDM beats", where="Table 1", status="inconclusive", measured="+0.05", bound="> 0",
                    interval=(-0.01, 0.11), level=0.95, n=48, test="paired bootstrap"),
            Verdict(claim="step = diffusers", where="eq. (4)", status="holds", measured="residual 0.1 x tol",
                    bound="tol", kind="implementation check", n=160),
            Verdict(claim="eq. (8) under DDIM", where="eq. (8)", status="outside domain", measured="m", bound="b")]
    page = write_report(rows, tmp_path).read_text()
    claims = "<h2>Verdicts (0 holds, 0 violated, 1 inconclusive, 1 outside domain, 0 vacuous)"
    checks = "<h2>Implementation checks (1 holds, 0 violated, 0 inconclusive, 0 outside domain, 0 vacuous)"
    assert page.index(claims) < page.index("AMDM beats") < page.index(checks) < page.index("step = diffusers")
    assert page.index("eq. (8) under DDIM") < page.index(checks) < page.index("<h2>Figures")
    assert "<td>[-0.01, 0.11]</td><td>48</td>" in page and "95% interval [-0.01, 0.11]; n = 48; test: paired" in page
    assert "<td>160</td>" in page


def test_terminal_table_sections_intervals_and_json(tmp_path):
    import json

    from amdm_geom.verdicts import format_table, to_json

    rows = [Verdict(claim="AMDM beats", where="Table 1", status="holds", measured="+0.12", bound="> 0",
                    interval=(0.0412, 0.2), level=0.9, n=480, test="paired bootstrap", value=0.12),
            Verdict(claim="step = diffusers", where="eq. (4)", status="violated", measured="residual 3.0 x tol",
                    bound="tol", kind="implementation check")]
    text = format_table(rows)
    head, sep, tail = text.partition("Implementation checks")
    assert sep and "AMDM beats" in head and "step = diffusers" in tail and "step = diffusers" not in head
    assert "[0.0412, 0.2]" in head and "90% interval [0.0412, 0.2]; n = 480; test: paired bootstrap" in head
    assert "1 holds, 0 violated, 0 inconclusive, 0 outside domain, 0 vacuous" in head
    assert "0 holds, 1 violated, 0 inconclusive, 0 outside domain, 0 vacuous" in tail
    assert all(len(line) <= 120 for line in text.splitlines())
    data = json.loads(to_json(rows))
    assert data[0]["interval"] == [0.0412, 0.2] and data[0]["level"] == 0.9 and data[0]["n"] == 480
    assert data[0]["kind"] == "paper claim" and data[1]["kind"] == "implementation check"
    assert data[1]["interval"] is None and data[1]["value"] is None  # NaN written as null


def test_report_prints_the_power_of_each_comparison(tmp_path):
    extra = {"n_to_resolve": 1219, "paired_sd": 0.566, "power_at_n": 0.3141, "comparisons": 2, "delta": 0.05,
             "power": 0.8}
    rows = [Verdict(claim="AMDM beats both", where="Table 1", status="holds", measured="m", bound="b", n=256,
                    interval=(0.02, 0.16), level=0.95, extra=extra),
            Verdict(claim="no power here", where="eq. (5)", status="holds", measured="m", bound="b")]
    page = write_report(rows, tmp_path).read_text()
    assert "<h3>Power of the comparisons</h3>" in page and page.index("Power of the") < page.index("<h2>Figures")
    row = page[page.index("<h3>Power of the"):]
    assert "<td>256</td><td>0.566</td><td>2</td><td>1219</td><td>0.31</td>" in row
    assert "no power here" not in row.split("</table>")[0]
    assert "Power of the comparisons" not in write_report(rows[1:], tmp_path).read_text()

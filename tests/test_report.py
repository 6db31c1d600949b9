"""The HTML report: a summary by claim family, then a section per family (the family each verdict
carries, as its analysis declares it) with its verdicts (each with its anchor and the files behind
it) and figures, the implementation checks last; escaped; written atomically.
(tests/test_report_browser.py renders a real one in Chromium.)"""

import json

from amdm_geom.app.report import write_report
from amdm_geom.app.runner.output import CAPTIONS_FILE, MARKER
from amdm_geom.core.verdicts import Verdict


def _result_folder(report, name, keys, files=()):
    """A result folder as the runner writes one: marker, verdicts.json with ``keys``, ``files``."""
    folder = report / name
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("")
    (folder / "verdicts.json").write_text(json.dumps([{"key": k} for k in keys]))
    for f in files:
        path = folder / f
        path.parent.mkdir(parents=True, exist_ok=True)
        if f.endswith(".zarr"):
            path.mkdir()
            (path / "zarr.json").write_text("{}")
        else:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" if f.endswith(".png") else b"x\n1\n")
    return folder


def test_report_is_organised_by_claim_family(tmp_path):
    shell = _result_folder(tmp_path, "shell", ["lemma", "shell_claim_run_gmm_ddpm", "bound"],
                           ["lemma_a1.png", "membership.png", "summary.csv", "gmm_ddpm/prop32.zarr",
                            "gmm_pair/prop32.zarr"])
    (shell / CAPTIONS_FILE).write_text(json.dumps({"membership.png": "z~ against <model 2>'s shell"}))
    (tmp_path / ".shell.tmp").mkdir()  # a half-written folder is not listed
    (tmp_path / ".shell.tmp" / "x.png").write_bytes(b"")
    # (the section is the verdict's family, whatever its where says: "Prop. 3.2 (text)" is put in App. G here)
    rows = [Verdict(claim="a < b & c", where="Prop. 3.1, eq. (5)", status="violated", measured="m", bound="b",
                    detail="<d>", key="gap", family="prop31"),
            Verdict(claim="step = diffusers", where="eq. (4)", status="holds", measured="r", bound="tol",
                    kind="implementation check", key="ddim", family="checks"),
            Verdict(claim="in the shell", where="Prop. 3.2 (text)", status="holds", measured="m", bound="b",
                    key="shell_claim_run_gmm_ddpm", family="prop32"),
            Verdict(claim="chi law", where="Lemma A.1, eq. (9)", status="holds", measured="m", bound="b", key="lemma",
                    family="lemma-a1"),
            Verdict(claim="eq. (8)", where="Prop. 3.2, eq. (8)", status="holds", measured="m", bound="b", key="bound",
                    family="prop32"),
            Verdict(claim="flow", where="Prop. 3.2 (text)", status="inconclusive", measured="m", bound="b", key="g",
                    family="app-g")]
    page = write_report(rows, tmp_path, context={"mode": "quick", "seed": 7}).read_text()
    assert "a &lt; b &amp; c" in page and "&lt;d&gt;" in page and "&lt;model 2&gt;" in page
    order = ["<h2>Summary", 'id="family-prop31"', 'id="family-lemma-a1"', 'id="family-prop32"', 'id="family-app-g"',
             'id="family-checks"']
    assert [page.index(x) for x in order] == sorted(page.index(x) for x in order)
    summary = page[page.index("<h2>Summary"):page.index('<section id="family-prop31"')]
    assert 'href="#family-prop32"' in summary and "All 2 hold." in summary
    assert '<td class="count" data-status="violated">1</td>' in summary.split('data-family="prop31"')[1]
    for key in ("gap", "ddim", "shell_claim_run_gmm_ddpm", "lemma", "g"):
        assert page.count(f'id="verdict-{key}"') == 1 and f'href="#verdict-{key}"' in page
    sections = page.split('<section id="family-')[1:]
    assert [(s[:s.index('"')], [k for k in ("gap", "ddim", "shell_claim_run_gmm_ddpm", "lemma", "bound", "g")
                                if f'id="verdict-{k}"' in s]) for s in sections] == [
        ("prop31", ["gap"]), ("lemma-a1", ["lemma"]), ("prop32", ["shell_claim_run_gmm_ddpm", "bound"]),
        ("app-g", ["g"]), ("checks", ["ddim"])]
    prop32 = page[page.index('id="family-prop32"'):page.index('id="family-app-g"')]
    # its analysis' files: the run's own subfolder and the folder's own, not another run's
    row = prop32[prop32.index('id="verdict-shell_claim_run_gmm_ddpm"'):]
    row = row[:row.index("</tbody>")]
    assert 'href="shell/gmm_ddpm/prop32.zarr/zarr.json"' in row and 'href="shell/summary.csv"' in row
    assert "gmm_pair" not in row and 'href="shell/gmm_pair/prop32.zarr/zarr.json"' in prop32  # (the other row: all)
    # figures go to the family most of their analysis' verdicts are in; Lemma A.1's own to Lemma A.1
    assert 'src="shell/membership.png"' in prop32 and "z~ against &lt;model 2&gt;&#x27;s shell" in prop32
    lemma = page[page.index('id="family-lemma-a1"'):page.index('id="family-prop32"')]
    assert 'src="shell/lemma_a1.png"' in lemma and 'href="shell/lemma_a1.png"' in lemma
    assert ".shell.tmp" not in page and "mode</dt><dd>quick" in page and "seed</dt><dd>7" in page
    assert "commit</dt><dd>" in page and "torch</dt><dd>" in page
    assert not (tmp_path / ".index.html.partial").exists()


def test_report_refuses_repeated_keys_and_places_claims_without_a_family(tmp_path):
    import pytest

    rows = [Verdict(claim="x", where="Sec. 9", status="holds", measured="m", bound="b", key="k"),
            Verdict(claim="y", where="Sec. 9", status="holds", measured="m", bound="b", key="k")]
    with pytest.raises(ValueError, match="verdict keys must be distinct .*repeated: k"):
        write_report(rows, tmp_path)
    page = write_report(rows[:1], tmp_path).read_text()
    assert 'id="family-other"' in page and 'id="verdict-k"' in page


def test_the_terminal_table_never_cuts_a_status():
    from amdm_geom.core.verdicts import STATUSES, format_table

    rows = [Verdict(claim="c" * 80, where="w" * 60, status=s, measured="m" * 60, bound="b" * 60) for s in STATUSES]
    text = format_table(rows)
    assert all(line == line.rstrip() and len(line) <= 120 for line in text.splitlines())
    for s in STATUSES:
        assert f" {s.upper()}" in text


def test_terminal_table_sections_intervals_and_json(tmp_path):
    import json

    from amdm_geom.core.verdicts import format_table, to_json

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
    assert "<h3>Power of the comparisons</h3>" in page
    row = page[page.index("<h3>Power of the"):]
    assert "<td>256</td><td>0.566</td><td>2</td><td>1219</td><td>0.31</td>" in row
    assert "no power here" not in row.split("</table>")[0]
    assert "Power of the comparisons" not in write_report(rows[1:], tmp_path).read_text()

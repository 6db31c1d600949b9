"""The HTML report: a summary by kind of verdict and claim family, then a section per claim family
(the family each paper claim carries, as its analysis declares it) with its verdicts (each with its
anchor and the files behind it) and figures, then one section each for the reported numbers, the
findings and the implementation checks; escaped; written atomically. The terminal's table and
summary, one section per kind. (tests/test_report_browser.py renders a real one in Chromium.)"""

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
    assert "1 holds, 0 violated, 0 setting-dependent, 0 inconclusive, 0 outside domain, 0 vacuous" in head
    assert "0 holds, 1 violated, 0 setting-dependent, 0 inconclusive, 0 outside domain, 0 vacuous" in tail
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


def _one_of_each_kind():
    """A verdict of each kind (``KINDS``), the finding and the reported numbers made by analyses of claim families."""
    return [Verdict(claim="checked step", where="eq. (4)", status="holds", measured="r", bound="tol",
                    kind="implementation check", key="chk", family="checks"),
            Verdict(claim="oracle best", where="App. E (benchmark check)", status="violated", measured="m", bound="b",
                    kind="finding", key="fnd", family="app-e"),
            Verdict(claim="norm gap", where="Prop. 3.1, eq. (5)", status="holds", measured="m", bound="b", key="clm",
                    family="prop31"),
            Verdict(claim="Table 1 = Table 6 row", where="Tables 1, 6", status="inconclusive", measured="m", bound="b",
                    kind="reported numbers", key="rep", family="ablations"),
            Verdict(claim="flow radius", where="App. G", status="vacuous", measured="m", bound="b", key="clm2",
                    family="app-g")]


def test_each_kind_has_its_own_report_section_in_order(tmp_path):
    """Issue 24: paper claims by family, then reported numbers, findings and implementation checks,
    each in its own section whatever the family its analysis gave it; the summary counts each kind."""
    rows = _one_of_each_kind()
    page = write_report(rows, tmp_path).read_text()
    sections = page.split('<section id="family-')[1:]
    found = [(s[:s.index('"')], s[s.index('data-kind="') + 11:].split('"')[0],
              [r.key for r in rows if f'id="verdict-{r.key}"' in s]) for s in sections]
    assert found == [("prop31", "paper claim", ["clm"]), ("app-g", "paper claim", ["clm2"]),
                     ("reported", "reported numbers", ["rep"]), ("findings", "finding", ["fnd"]),
                     ("checks", "implementation check", ["chk"])]
    assert "<h2>Findings: about samplers, libraries and this toolkit&#x27;s setup</h2>" in page
    summary = page[page.index("<h2>Summary"):page.index('<section id="family-')]
    total = summary[summary.index('data-kind-total="paper claim"'):]
    total = total[:total.index("</tr>")]
    # the two paper claims: 1 holds, 1 vacuous; nothing of the other kinds counted in
    assert [total.split(f'data-status="{s}">')[1].split("<")[0] for s in ("holds", "inconclusive", "violated",
                                                                          "vacuous")] == ["1", "0", "0", "1"]
    assert summary.index('data-family="app-g"') < summary.index('data-kind-total') < summary.index(
        'data-family="reported"') < summary.index('data-family="findings"') < summary.index('data-family="checks"')


def test_each_kind_has_its_own_terminal_section_and_count():
    from amdm_geom.app.runner.families import format_summary
    from amdm_geom.core.verdicts import KIND_HEADINGS, KINDS, format_table

    rows = _one_of_each_kind()
    text = format_table(rows)
    heads = [text.index(KIND_HEADINGS[k]) for k in KINDS]
    assert heads == sorted(heads) and heads[0] == 0
    parts = [text[a:b] for a, b in zip(heads, heads[1:] + [len(text)])]
    keys = {"paper claim": ["norm gap", "flow radius"], "reported numbers": ["Table 1 = Table 6 row"],
            "finding": ["oracle best"], "implementation check": ["checked step"]}
    for kind, part in zip(KINDS, parts):
        assert [c for cs in keys.values() for c in cs if c in part] == keys[kind], kind
    assert "1 holds, 0 violated, 0 setting-dependent, 0 inconclusive, 0 outside domain, 1 vacuous" in parts[0]
    assert "0 holds, 1 violated, 0 setting-dependent, 0 inconclusive, 0 outside domain, 0 vacuous" in parts[2]
    summary = format_summary(rows, width=300)  # (wide enough that no title wraps)
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:8]] for line in summary.splitlines()
             if line.startswith("│") and line.split("│")[2].strip()}
    assert lines["paper claims, all families"] == ["1", "0", "0", "0", "0", "1"]
    assert lines["Reported numbers: the paper's tables against each other"] == ["0", "0", "0", "1", "0", "0"]
    assert lines["Findings: about samplers, libraries and this toolkit's setup"] == ["0", "1", "0", "0", "0", "0"]
    assert lines["Implementation checks"] == ["1", "0", "0", "0", "0", "0"]
    assert lines["all verdicts"] == ["2", "1", "0", "1", "0", "1"]
    assert list(lines).index("App. G: rectified flow") < list(lines).index("paper claims, all families")


def test_an_unknown_kind_is_refused_in_one_line():
    import pytest

    from amdm_geom.core.verdicts import KINDS

    assert KINDS == ("paper claim", "reported numbers", "finding", "implementation check")
    with pytest.raises(ValueError) as err:
        Verdict(claim="c", where="w", status="holds", measured="m", bound="b", kind="findings")
    assert str(err.value) == f"kind must be one of {KINDS}; got 'findings'"
    assert "\n" not in str(err.value)

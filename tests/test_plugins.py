"""A user's package adds an analysis without editing this project: one class (a subclass of
``amdm_geom.analyses.base.Analysis``) in a module, and a ``<name>-0.1.dist-info`` folder whose
``entry_points.txt`` declares it (``name = module:Class``) in the group ``amdm_geom.analyses``,
put on the path (as ``pip install`` would leave it, without pip). It is listed by the registry and
by ``amdm-geom analyze --help``, runs through the same runner, reaches ``validate``'s plan (the
stores of the kinds it reads) and the report's section of the family it declares. Anything else
an entry point names is refused in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amdm_geom.app.report import write_report
from amdm_geom.app.runner import analysis_names, load_analyses, load_analysis, run_analysis
from amdm_geom.app.validate import ValidateCommand, plan, readers, tasks

PLUGIN = '''
"""A plugin analysis: the norms of n standard normal draws against sqrt(n) (Lemma A.1's centre)."""
import numpy as np
import pandas as pd
import xarray as xr

from amdm_geom.analyses.base import Analysis
from amdm_geom.core.verdicts import Verdict


class DemoNorms(Analysis):
    """mean |X| / sqrt(n) of standard normal draws, and the flow stores validate gives it."""

    name = "{name}"
    summary = "a plugin: mean |X| / sqrt(n) of standard normal draws"
    family = "lemma-a1"
    stores, reads = "optional", ("flow",)

    def compute(self, stores, *, quick=False, seed=0, runs=None):
        n = 64 if quick else 256
        x = np.random.default_rng(seed).standard_normal((200, n))
        return xr.Dataset({{"ratio": ("draw", np.linalg.norm(x, axis=1) / np.sqrt(n))}}, attrs={{"n": n}})

    def verdicts(self, result):
        mean = float(result.ratio.mean())
        return [Verdict(key="plugin_ratio", claim="|X| is near sqrt(n)", where="Lemma A.1",
                        status="holds" if abs(mean - 1) < 0.05 else "violated", measured=f"{{mean:.3f}}",
                        bound="1", value=mean, reference=1.0)]

    def plot(self, result):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.hist(result.ratio.values)
        return {{"ratio": fig}}

    def tables(self, result):
        return {{"ratio": pd.DataFrame({{"ratio": result.ratio.values}})}}
'''


def make_plugin(root: Path, module: str, name: str, *, text: str | None = None, target: str = ":DemoNorms") -> Path:
    """``root/<module>.py`` and ``root/<module>-0.1.dist-info/`` declaring analysis ``name`` as
    ``<module><target>`` (the class ``DemoNorms`` by default)."""
    (root / f"{module}.py").write_text(text if text is not None else PLUGIN.format(name=name))
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[amdm_geom.analyses]\n{name} = {module}{target}\n")
    return root


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    make_plugin(root, "amdm_geom_demo_plugin", "demo_norms")
    monkeypatch.syspath_prepend(str(root))
    yield root
    sys.modules.pop("amdm_geom_demo_plugin", None)


def test_the_plugin_is_listed_and_runs_through_the_runner(plugin, tmp_path):
    assert "demo_norms" in analysis_names()
    analysis = load_analysis("demo_norms")
    assert type(analysis).__name__ == "DemoNorms" and analysis.stores == "optional"
    assert analysis.tables is not None and analysis.result == "results"  # (defaults of the base class)
    rows = run_analysis("demo_norms", None, tmp_path / "report", quick=True, seed=2)
    folder = tmp_path / "report" / "demo_norms"
    written = json.loads((folder / "verdicts.json").read_text())
    assert [r["key"] for r in written] == ["plugin_ratio"] and written[0]["value"] == rows[0].value
    assert written[0]["family"] == rows[0].family == "lemma-a1"  # (filled in from the class by the runner)
    assert (folder / "ratio.png").is_file() and (folder / "ratio.csv").is_file() and (folder / "results.zarr").is_dir()
    # the plugin's own number, recomputed here without the toolkit
    x = np.random.default_rng(2).standard_normal((200, 64))
    assert rows[0].value == pytest.approx(float((np.linalg.norm(x, axis=1) / 8).mean()), rel=1e-12)


def test_the_plugin_reaches_validate_and_its_family_in_the_report(plugin, tmp_path):
    """One class and one entry point: validate plans it on the stores of the kind it reads (the
    flow stores, after their probes), and the report puts its verdict and figure in its family."""
    analyses = load_analyses()
    assert "demo_norms" in [a.name for a in analyses]
    cmd = ValidateCommand(quick=True, runs=tmp_path / "runs", report=tmp_path / "report")
    probes = plan(True, 0, cmd.runs)
    flow = [p.name for p in probes if "flow" in p.kinds]
    assert readers(probes, analyses)["demo_norms"] == {n: cmd.runs / f"{n}.zarr" for n in flow}
    assert flow == ["flow_pair", "flow_stochastic", "flow_vp", "flow_sd3", "flow_flux", "flow_dit"]
    (task,) = [t for t in tasks(cmd, probes) if t.key == "analysis demo_norms"]
    assert task.args[0] == "demo_norms" and list(task.args[1]) == flow
    assert set(task.after) == {f"probe {n}" for n in flow} and task.priority == 5
    # the report: its verdict in the Lemma A.1 section (where its class says), with its figure
    rows = run_analysis("demo_norms", None, cmd.report, quick=True)
    page = write_report(rows, cmd.report).read_text()
    section = page[page.index('<section id="family-lemma-a1"'):]
    section = section[:section.index("</section>")]
    assert 'id="verdict-plugin_ratio"' in section and 'src="demo_norms/ratio.png"' in section
    assert page.count("<section id=\"family-") == 1


def test_an_entry_point_naming_anything_but_an_analysis_class_is_refused_in_one_line(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    make_plugin(root, "amdm_geom_module_plugin", "as_module", target="")  # (the old contract: a module)
    make_plugin(root, "amdm_geom_plain_plugin", "plain", text="class Plain:\n    name = 'plain'\n", target=":Plain")
    make_plugin(root, "amdm_geom_half_plugin", "half", target=":Half", text=(
        "from amdm_geom.analyses.base import Analysis\n\n\nclass Half(Analysis):\n    name, summary, family = "
        "'half', 's', 'checks'\n\n    def compute(self, stores, **kw):\n        return None\n"))
    make_plugin(root, "amdm_geom_misnamed_plugin", "misnamed", text=PLUGIN.format(name="other"))
    make_plugin(root, "amdm_geom_nofamily_plugin", "nofamily", text=PLUGIN.format(name="nofamily").replace(
        '"lemma-a1"', '"Lemma A.1"'))
    monkeypatch.syspath_prepend(str(root))
    try:
        assert {"as_module", "plain", "half", "misnamed", "nofamily"} <= set(analysis_names())  # (imports nothing)
        said = {}
        for name in ("as_module", "plain", "half", "misnamed", "nofamily"):
            with pytest.raises(ValueError) as info:
                load_analysis(name)
            said[name] = str(info.value)
            assert "\n" not in said[name], said[name]
        assert said["as_module"] == ("analysis 'as_module': entry point amdm_geom_module_plugin must name a subclass "
                                     "of amdm_geom.analyses.base.Analysis ('package.module:Class'); it names a module")
        assert said["plain"].startswith("analysis 'plain': entry point amdm_geom_plain_plugin:Plain must name a "
                                        "subclass of amdm_geom.analyses.base.Analysis")
        assert "Half lacks verdicts, plot of the analysis contract" in said["half"]
        assert "registered under another name than its name 'other'" in said["misnamed"]
        assert "family must be one of prop31, lemma-a1," in said["nofamily"] and "got 'Lemma A.1'" in said["nofamily"]
    finally:
        for m in ("amdm_geom_module_plugin", "amdm_geom_plain_plugin", "amdm_geom_half_plugin",
                  "amdm_geom_misnamed_plugin", "amdm_geom_nofamily_plugin"):
            sys.modules.pop(m, None)


def test_the_plugin_shows_in_analyze_help(plugin):
    exe = Path(sys.executable).parent / "amdm-geom"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([str(exe), "analyze", "--help"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "demo_norms" in proc.stdout and "norm_angle" in proc.stdout

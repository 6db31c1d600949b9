"""The layer rules of the architecture, checked by import-linter against /.importlinter.

core (geometry, bounds, schedules, verdicts) <- models (denoisers, ecosystem) <- sampling <- trace
(store) <- probes | analyses <- runner, report <- CLI: nothing imports a layer above it, including
imports inside functions, and the sampling package does not import zarr. Inside each package the
modules are layered too, no package has an import cycle among its modules and subpackages
(import-linter's ``acyclic_siblings``), and no claim family of the analyses imports another.

probes/ and analyses/ install as amdm_geom.probes and amdm_geom.analyses through setuptools'
package-dir, which import-linter cannot follow from amdm_geom/; so the check runs on a copy of
the three folders laid out as installed. The broken cases edit such a copy and show that the
check fails, naming the import.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"
LAYOUT = {"amdm_geom": "amdm_geom", "probes": "amdm_geom/probes", "analyses": "amdm_geom/analyses"}


def installed_layout(dest: Path) -> Path:
    """Copy amdm_geom/, probes/ and analyses/ into ``dest`` as they are installed; returns ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for source, target in LAYOUT.items():
        shutil.copytree(ROOT / source, dest / target, ignore=ignore)
    return dest


def lint(root: Path) -> subprocess.CompletedProcess:
    """Run import-linter with the project's config on the package found in ``root``."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(CONFIG)!r}, no_cache=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)


def modules_in(root: Path) -> set[str]:
    """The module names of the ``.py`` files under ``root/amdm_geom``, as Python names them."""
    names = set()
    for path in (root / "amdm_geom").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_the_checker_sees_every_module(tmp_path):
    """probes and analyses are optional layers (a plain lint-imports from the checkout cannot see
    them), so make sure the graph import-linter builds here holds every module, theirs included."""
    root = installed_layout(tmp_path)
    code = ("import grimp; g = grimp.build_graph('amdm_geom', cache_dir=None); "
            "print('\\n'.join(sorted(g.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = modules_in(root)
    assert {"amdm_geom.probes.specs", "amdm_geom.analyses.prop32.shell"} <= expected
    assert set(done.stdout.split()) == expected


def test_the_layers_hold(tmp_path):
    done = lint(installed_layout(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert " kept, 0 broken" in done.stdout


LAZY = "\n\ndef _added_by_the_test():\n    {}\n"

BROKEN = {
    # the brief's own example: the core imports the CLI at module level
    "core imports the CLI": ("amdm_geom/core/geometry.py", "\nimport amdm_geom.app.cli  # noqa: E402\n",
                             "amdm_geom.core.geometry -> amdm_geom.app.cli"),
    # an import inside a function counts as well
    "lazy import upwards": ("amdm_geom/core/bounds.py", LAZY.format("from amdm_geom.store import open_run"),
                            "amdm_geom.core.bounds -> amdm_geom.store"),
    # the models layer points one way: denoisers never import the ecosystem check
    "denoisers import ecosystem": ("amdm_geom/models/pipelines.py",
                                   LAZY.format("from amdm_geom.models.ecosystem import compare"),
                                   "amdm_geom.models.pipelines -> amdm_geom.models.ecosystem"),
    # the sampler below the trace layer
    "sampler imports the store": ("amdm_geom/sampling/step.py", LAZY.format("import amdm_geom.store"),
                                  "amdm_geom.sampling.step -> amdm_geom.store"),
    # probes and analyses (seen through the installed layout) are independent of each other
    "probe imports an analysis": ("amdm_geom/probes/specs.py",
                                  LAZY.format("from amdm_geom.analyses.checks import closed_forms"),
                                  "amdm_geom.probes.specs -> amdm_geom.analyses.checks.closed_forms"),
    "analysis imports the CLI": ("amdm_geom/analyses/prop32/shell.py", LAZY.format("import amdm_geom.app.cli"),
                                 "amdm_geom.analyses.prop32.shell -> amdm_geom.app.cli"),
    # the sampler knows nothing of zarr, even lazily
    "sampler imports zarr": ("amdm_geom/sampling/rng.py", LAZY.format("import zarr"),
                             "amdm_geom.sampling is not allowed to import zarr"),
    # inside the sampling layer, the hook table knows no settings (the cycle issue 23 broke)
    "hooks import the config": ("amdm_geom/sampling/hooks.py",
                                LAZY.format("from amdm_geom.sampling.config import SamplerConfig"),
                                "amdm_geom.sampling.hooks -> amdm_geom.sampling.config"),
    # inside the trace layer, what a store is sits below the paths and URLs (the other cycle)
    "store identity imports the paths": ("amdm_geom/store/identity.py",
                                         LAZY.format("from amdm_geom.store.paths import is_trace_store"),
                                         "amdm_geom.store.identity -> amdm_geom.store.paths"),
    # a cycle inside a package that no layers contract orders: the acyclic_siblings contract
    "a cycle inside a family": ("amdm_geom/analyses/toy/experts.py",
                                LAZY.format("from amdm_geom.analyses.toy import benchmark"),
                                "No cycles are allowed in amdm_geom.analyses.toy"),
    # no claim family imports another (the independence contract)
    "a family imports another": ("amdm_geom/analyses/flow/shell.py",
                                 LAZY.format("from amdm_geom.analyses.prop31 import norm_angle"),
                                 "amdm_geom.analyses.flow is not allowed to import amdm_geom.analyses.prop31"),
    # what the families share sits below them
    "common imports a family": ("amdm_geom/analyses/common/membership.py",
                                LAZY.format("from amdm_geom.analyses.prop32 import proof"),
                                "amdm_geom.analyses.common.membership -> amdm_geom.analyses.prop32.proof"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_forbidden_import_breaks_the_check(tmp_path, case):
    path, added, expected = BROKEN[case]
    root = installed_layout(tmp_path)
    module = root / path
    module.write_text(module.read_text() + added)
    done = lint(root)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "BROKEN" in done.stdout and expected in done.stdout, done.stdout


def test_a_module_outside_every_layer_breaks_the_check(tmp_path):
    """Every module directly under amdm_geom must be placed in a layer (the contract is exhaustive)."""
    root = installed_layout(tmp_path)
    (root / "amdm_geom" / "unplaced.py").write_text('"""A module no layer names."""\n')
    done = lint(root)
    assert done.returncode != 0
    assert "amdm_geom.unplaced" in done.stdout + done.stderr


def test_no_generic_top_level_names_are_installed(tmp_path):
    """From a folder outside the checkout, ``analyses`` and ``probes`` do not import; the
    project's own names do."""
    code = ("import importlib.util as u, amdm_geom.analyses.prop32.shell, amdm_geom.probes.gmm_pair;"
            "print(u.find_spec('analyses') is None, u.find_spec('probes') is None)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]

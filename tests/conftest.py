"""Shared test settings: offline hub, quiet and deterministic hypothesis, small helpers."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "default",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261121)


@pytest.fixture(scope="session")
def quick_validate(tmp_path_factory):
    """``amdm-geom validate --quick`` run once for the session (its report, stores and verdicts):
    tests/test_validate.py recomputes its verdicts, tests/test_report_browser.py renders its report."""
    import json
    from types import SimpleNamespace

    from amdm_geom.app import cli

    tmp = tmp_path_factory.mktemp("validate")
    runs, report, out = tmp / "runs", tmp / "report", tmp / "verdicts.json"
    assert cli.main(["validate", "--quick", "--runs", str(runs), "--report", str(report), "--json", str(out),
                     "--keep-runs", "all"]) == 0
    rows = json.loads(out.read_text())
    return SimpleNamespace(rows={r["key"]: r for r in rows}, ordered=rows, runs=runs, report=report)

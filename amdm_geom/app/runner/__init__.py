"""The runner: finds analyses and probes by name (``registry``), runs an analysis and writes
its result folder (``analysis``, ``output``), and renders the HTML report (``report``)."""

from amdm_geom.app.runner.analysis import Outcome, analyze, run_analysis, write_outcome
from amdm_geom.app.runner.registry import (
    analysis_names,
    analysis_summaries,
    load_analyses,
    load_analysis,
    load_probe,
    probe_names,
)

__all__ = ["Outcome", "analysis_names", "analysis_summaries", "analyze", "load_analyses", "load_analysis",
           "load_probe", "probe_names", "run_analysis", "write_outcome"]

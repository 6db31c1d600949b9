"""The validation report, ``data/report/index.html``: see ``amdm_geom.app.runner.report``."""

from amdm_geom.app.runner.report import render_report, write_report

__all__ = ["render_report", "write_report"]

"""``amdm-geom validate --quick`` end to end: every verdict exists, is well formed and comes with
its analysis' results on disk."""

import json

from amdm_geom import cli
from amdm_geom.verdicts import STATUSES


def test_validate_quick_end_to_end(tmp_path, capsys):
    runs, report, out = tmp_path / "runs", tmp_path / "report", tmp_path / "verdicts.json"
    assert cli.main(["validate", "--quick", "--runs", str(runs), "--report", str(report), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())
    keys = {r["key"] for r in rows}
    for key in ("ddim_step", "prop31_norm_gap", "sd_gaussian_T", "sampler_one_model", "trace_eq4", "trace_eq7",
                "prop31_gap_run_gmm_pair", "prop31_delta_run_gmm_pair", "prop31_delta_run_gmm_ddpm", "lemma_a1_grid",
                "prop32_bound_runs", "prop32_shell_claim", "prop32_domain_runs", "table5_resolution",
                "sd_gaussian_T", "sd_converged_from", "forward_gaussian_coords", "forward_norm_concentration",
                "trajectory_gaussian_gmm_pair"):
        assert key in keys, key
    assert all(r["status"] in STATUSES for r in rows)
    assert json.loads((report / "verdicts.json").read_text()) == rows
    for folder in ("norm_angle/gmm_pair", "norm_angle/gmm_ddpm", "shell", "precision", "trace_checks", "gaussianity"):
        assert (report / folder / "verdicts.json").exists(), folder
    for word in ("HOLDS", "VIOLATED", "VACUOUS", "Lemma A.1", "Prop. 3.2"):
        assert word in printed

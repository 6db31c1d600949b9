"""Probes through the command line: they write complete stores, refuse to overwrite, and
report bad options in one line."""

import numpy as np
import pytest

from amdm_geom import cli
from amdm_geom.store import open_run, run_config

SMALL = ["--steps", "6", "--agg-steps", "3", "--batch", "2", "--no-progress"]


@pytest.mark.parametrize(
    "name,extra",
    [
        ("gmm_pair", ["--latent-shape", "4", "16", "16", "--perturb", "0.05"]),
        ("gmm_cross_ecosystem", ["--latent-shape", "64", "--schedule-b", "linear"]),
        ("unet_pair", ["--sample-size", "16", "--channels", "8", "16", "--variant", "adapter"]),
    ],
)
def test_probe_writes_a_complete_store(tmp_path, capsys, name, extra):
    out = tmp_path / f"{name}.zarr"
    assert cli.main(["probe", name, *SMALL, *extra, "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    ds = open_run(out)
    assert ds.attrs["complete"] is True and ds.sizes["step"] == 6 and ds.sizes["sample"] == 2
    assert run_config(ds)["sampler"]["agg_steps"] == 3
    assert list(ds.aggregated.values) == [True] * 3 + [False] * 3
    assert not np.isnan(ds.z.isel(model=0).values).any()


def test_cross_ecosystem_probe_records_two_schedules(tmp_path):
    out = tmp_path / "x.zarr"
    cli.main(["probe", "gmm_cross_ecosystem", *SMALL, "--latent-shape", "32", "--out", str(out)])
    ds = open_run(out)
    assert not np.allclose(ds.model_alpha_bar.isel(model=0), ds.model_alpha_bar.isel(model=1))


def test_probe_refuses_an_existing_store_and_bad_options(tmp_path, capsys):
    out = tmp_path / "g.zarr"
    args = ["probe", "gmm_pair", *SMALL, "--latent-shape", "8", "--out", str(out)]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "exists; pass overwrite=True (--overwrite)" in err and err.count("\n") == 1
    assert cli.main([*args, "--overwrite"]) == 0
    assert cli.main(["probe", "gmm_pair", *SMALL, "--w", "1.5", "--out", str(tmp_path / "h.zarr")]) == 2
    assert "weights must be in [0, 1]; got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "h.zarr").exists()  # refused before any work

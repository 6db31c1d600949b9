"""Probes through the command line: they write complete stores, refuse to overwrite, and
report bad options in one line."""

import numpy as np
import pytest
import torch

from amdm_geom import cli
from amdm_geom.denoisers.gmm import fine_grained_family
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
    assert "argument --w: must be a finite number in [0, 1]; got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "h.zarr").exists()  # refused before any work


# -- the shared option checks (probes/common.py) ------------------------------------------------


def test_option_types_accept_and_refuse():
    import argparse

    from amdm_geom.probes import common

    assert common.finite_float("-2.5") == -2.5 and common.nonneg_float("0") == 0.0
    assert common.unit_float("1") == 1.0 and common.positive_int("3") == 3 and common.nonneg_int("0") == 0
    assert common.seed_int(str(2**63 - 1)) == 2**63 - 1 and common.image_size("512") == 512
    assert common.device_name("cpu") == "cpu"
    for parse, text, message in [
        (common.finite_float, "nan", "must be a finite number; got nan"),
        (common.finite_float, "-inf", "must be a finite number; got -inf"),
        (common.nonneg_float, "-0.5", "must be a finite number >= 0; got -0.5"),
        (common.positive_float, "0", "must be a finite number > 0; got 0"),
        (common.unit_float, "1.01", "must be a finite number in [0, 1]; got 1.01"),
        (common.positive_int, "0", "must be an int >= 1; got 0"),
        (common.positive_int, "2.0", "must be an int >= 1; got 2.0"),
        (common.nonneg_int, "-1", "must be an int >= 0; got -1"),
        (common.seed_int, str(2**63), f"must be an int in [0, 2**63); got {2**63}"),
        (common.image_size, "-64", "must be a positive multiple of 8 (pixels); got -64"),
        (common.image_size, "100", "must be a positive multiple of 8 (pixels); got 100"),
        (common.device_name, "gpu", "must be cpu, cuda, cuda:N or mps; got gpu"),
        (common.device_name, "cpu:0", "must be cpu, cuda, cuda:N or mps; got cpu:0"),
        (common.finite_float, "", "must be a finite number; got ''"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError) as info:
            parse(text)
        assert str(info.value).startswith(message), (text, str(info.value))


def test_option_checks_import_nothing_heavy():
    import subprocess
    import sys

    code = "import sys, probes.common, probes.gmm_pair, probes.unet_pair, probes.sd_pair; " \
           "print(sorted({'torch', 'diffusers', 'zarr'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_probe_constants_match_the_library():
    from amdm_geom.denoisers.unet import FAMILY_VARIANTS
    from amdm_geom.schedules import make_scheduler
    from amdm_geom.probes import common, unet_pair

    assert tuple(unet_pair.VARIANTS) == tuple(FAMILY_VARIANTS)
    assert common.TRAIN_TIMESTEPS == make_scheduler().config.num_train_timesteps
    assert common.DTYPES == {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


def test_run_probe_checks_the_output_path_before_building(tmp_path):
    from amdm_geom.probes import common, gmm_pair

    import argparse

    parser = argparse.ArgumentParser()
    gmm_pair.add_arguments(parser)
    (tmp_path / "taken").mkdir()
    args = parser.parse_args(["--steps", "2", "--batch", "1", "--latent-shape", "8", "--out", str(tmp_path / "taken")])
    built = []
    with pytest.raises(FileExistsError, match="exists and is not an amdm-geom trace store"):
        common.run_probe(lambda: built.append(1), args, quiet=True)
    args = parser.parse_args(["--steps", "2", "--agg-steps", "3", "--out", str(tmp_path / "new.zarr")])
    with pytest.raises(common.OptionError, match=r"^argument --agg-steps: must be in \[0, --steps\] = \[0, 2\]; got 3$"):
        common.run_probe(lambda: built.append(1), args, quiet=True)
    assert not built and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.parametrize("make,match", [
    (lambda: fine_grained_family((8,), separation=float("nan")), "separation must be finite and >= 0"),
    (lambda: fine_grained_family((8,), component_std=float("inf")), "component_std finite and > 0"),
    (lambda: fine_grained_family((8,), strength=float("nan")), r"strength must be in \(0, 1\]; got nan"),
    (lambda: fine_grained_family((0, 8)), r"latent_shape must be one or more ints >= 1; got \(0, 8\)"),
    (lambda: fine_grained_family((-4, 8, 8)), r"latent_shape must be one or more ints >= 1"),
    (lambda: fine_grained_family((8,)).model(guidance_scale=float("nan")), "guidance_scale must be a finite number; got nan"),
    (lambda: fine_grained_family((8,)).model(perturb=float("nan")), "perturb must be a finite number >= 0; got nan"),
    (lambda: fine_grained_family((8,)).condition(position=0, strength=float("nan")), r"strength must be in \(0, 1\]"),
])
def test_the_gmm_family_refuses_what_its_options_refuse(make, match):
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert "\n" not in str(info.value)

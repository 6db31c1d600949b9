"""Probes through the command line and through their specs: they write complete stores, refuse
to overwrite, report bad options in one line, and follow the probe contract."""

import numpy as np
import pytest
import torch

from amdm_geom.app import cli
from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.store import open_run, sampler_config

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
    assert sampler_config(ds).agg_steps == 3
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
    assert "argument --w: must be in [0, 1]; got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "h.zarr").exists()  # refused before any work


# -- the probes' specs ------------------------------------------------------------------------


def test_probe_constants_match_the_library():
    from amdm_geom.core.schedules import SCHEDULE_KINDS, make_scheduler
    from amdm_geom.models.specs import TRAIN_TIMESTEPS, VP_SCHEDULES
    from amdm_geom.probes import DTYPE_NAMES

    assert TRAIN_TIMESTEPS == make_scheduler().config.num_train_timesteps
    assert set(VP_SCHEDULES) == set(SCHEDULE_KINDS)
    assert all(isinstance(getattr(torch, name), torch.dtype) for name in DTYPE_NAMES)


def test_every_probe_follows_the_probe_contract():
    from amdm_geom.app.runner.registry import load_probe, probe_names
    from amdm_geom.probes import ProbeSpec

    assert set(probe_names()) >= {"gmm_pair", "gmm_cross_ecosystem", "unet_pair", "sd"}
    for name in probe_names():
        module = load_probe(name)
        assert module.NAME == name and module.SUMMARY and "\n" not in module.SUMMARY
        assert issubclass(module.Spec, ProbeSpec) and callable(module.build) and callable(module.run)
        assert list(module.Spec.model_fields)[-2:] == ["sampler", "run"]


def test_run_probe_checks_the_output_path_before_building(tmp_path):
    from amdm_geom.core.spec import SpecError
    from amdm_geom.probes import gmm_pair, run_probe

    (tmp_path / "taken").mkdir()
    spec = gmm_pair.Spec(family={"latent_shape": (8,)}, sampler={"num_inference_steps": 2},
                         run={"batch": 1, "out": tmp_path / "taken"})
    built = []
    with pytest.raises(FileExistsError, match="exists and is not an amdm-geom trace store"):
        run_probe(spec, lambda: built.append(1), probe=gmm_pair.NAME, quiet=True)
    with pytest.raises(SpecError, match=r"^sampler\.agg_steps must be an int in \[0, 2\]; got 3$"):
        gmm_pair.Spec(sampler={"num_inference_steps": 2, "agg_steps": 3}, run={"out": tmp_path / "new.zarr"})
    assert not built and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_a_probe_runs_from_its_spec_alone(tmp_path):
    """The same run through the command line and through the spec in code: the same arrays."""
    from amdm_geom.probes import gmm_pair

    by_cli = tmp_path / "cli.zarr"
    assert cli.main(["probe", "gmm_pair", *SMALL, "--latent-shape", "8", "--ddim-eta", "1", "--seed", "3",
                     "--out", str(by_cli)]) == 0
    spec = gmm_pair.Spec(family={"latent_shape": (8,)}, sampler={"num_inference_steps": 6, "agg_steps": 3,
                                                                 "ddim_eta": 1.0},
                         run={"batch": 2, "seed": 3, "out": tmp_path / "code.zarr", "progress": False})
    by_code = gmm_pair.run(spec, quiet=True)
    a, b = open_run(by_cli), open_run(by_code)
    assert np.array_equal(a.z_next.values, b.z_next.values, equal_nan=True)
    assert a.attrs["probe"] == b.attrs["probe"] == "gmm_pair"


@pytest.mark.parametrize("make,match", [
    (lambda: fine_grained_family((8,), separation=float("nan")), "separation must be finite and >= 0"),
    (lambda: fine_grained_family((8,), component_std=float("inf")), "component_std finite and > 0"),
    (lambda: fine_grained_family((8,), strength=float("nan")), r"strength must be in \(0, 1\]; got nan"),
    (lambda: fine_grained_family((0, 8)), r"latent_shape must be one or more ints >= 1; got \(0, 8\)"),
    (lambda: fine_grained_family((-4, 8, 8)), r"latent_shape must be one or more ints >= 1"),
    (lambda: fine_grained_family((8,)).model(guidance_scale=float("nan")),
     "guidance_scale must be a finite number; got nan"),
    (lambda: fine_grained_family((8,)).model(perturb=float("nan")), "perturb must be a finite number >= 0; got nan"),
    (lambda: fine_grained_family((8,)).condition(position=0, strength=float("nan")), r"strength must be in \(0, 1\]"),
])
def test_the_gmm_family_refuses_what_its_options_refuse(make, match):
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert "\n" not in str(info.value)

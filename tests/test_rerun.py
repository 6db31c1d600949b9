"""``amdm-geom rerun STORE --out NEW`` repeats a store's run from the spec the store keeps: every
array of the new store equals the old one's, bit for bit (NaN where the run wrote nothing), for a
``gmm_pair`` store, a ``unet_pair`` store and an ablation run's store."""

import numpy as np
import pytest

from amdm_geom.analyses.ablations import ablations
from amdm_geom.analyses.ablations import runs as ablation_runs
from amdm_geom.app import cli
from amdm_geom.app.runner.registry import maker
from amdm_geom.probes import gmm_pair, unet_pair
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import ZarrRecorder, built_of, open_run, sampler_config, spec_of

PROBES = {
    "gmm_pair": ["--steps", "4", "--agg-steps", "2", "--batch", "2", "--seed", "5", "--latent-shape", "4", "8", "8",
                 "--ddim-eta", "1", "--perturb", "0.05", "--cross-eps", "--continue-after-window", "--no-progress"],
    "unet_pair": ["--steps", "3", "--agg-steps", "2", "--batch", "1", "--sample-size", "8", "--channels", "8", "16",
                  "--variant", "adapter", "--ddim-eta", "1", "--no-progress"],
}


def assert_same_arrays(a_path, b_path):
    a, b = open_run(a_path), open_run(b_path)
    assert set(a.variables) == set(b.variables)
    for name in a.variables:
        x, y = a[name].values, b[name].values
        same = np.array_equal(x, y, equal_nan=x.dtype.kind in "fc") and x.dtype == y.dtype
        assert same, name
    assert a.attrs["complete"] is True and b.attrs["complete"] is True
    assert sampler_config(a) == sampler_config(b) and built_of(a) == built_of(b)


def kept_spec(path):
    """The typed spec a store keeps, as the module that made it (found through the registry) reads it."""
    ds = open_run(path)
    return spec_of(ds, maker(ds).Spec)


@pytest.mark.parametrize("name", sorted(PROBES))
def test_rerun_repeats_a_probe_store_bit_for_bit(tmp_path, capsys, name):
    first, second = tmp_path / "first.zarr", tmp_path / "second.zarr"
    assert cli.main(["probe", name, *PROBES[name], "--out", str(first)]) == 0
    assert cli.main(["rerun", str(first), "--out", str(second), "--no-progress"]) == 0
    assert_same_arrays(first, second)
    spec, again = kept_spec(first), kept_spec(second)
    assert isinstance(spec, {"gmm_pair": gmm_pair.Spec, "unet_pair": unet_pair.Spec}[name])
    assert spec.run.out == first and again.run.out == second
    assert again.replace(run=again.run.replace(out=first)) == spec
    assert np.isfinite(open_run(first).z_next.isel(model=0).values).all()  # (something was compared)


def test_the_kept_spec_is_the_spec_given(tmp_path):
    first = tmp_path / "g.zarr"
    assert cli.main(["probe", "gmm_pair", *PROBES["gmm_pair"], "--out", str(first)]) == 0
    spec = kept_spec(first)
    assert spec.family.latent_shape == (4, 8, 8) and spec.perturb == 0.05 and spec.run.seed == 5
    assert spec.sampler == SamplerConfig(num_inference_steps=4, agg_steps=2, ddim_eta=1.0, record_cross_eps=True,
                                         continue_after_window=True)
    assert sampler_config(open_run(first)) == spec.config()


def test_rerun_repeats_an_ablation_run_bit_for_bit(tmp_path):
    stores = ablations.run_settings(tmp_path / "runs", quick=True, only={"cross_ve"})
    again = tmp_path / "again.zarr"
    assert cli.main(["rerun", str(stores["cross_ve"]), "--out", str(again), "--no-progress"]) == 0
    assert_same_arrays(stores["cross_ve"], again)
    spec = kept_spec(again)
    assert isinstance(spec, ablation_runs.Spec) and spec.name == "cross_ve" and spec.models[1].sde == "ve"
    assert open_run(again).attrs["recorded_steps"] == ablations.recorded_steps(spec.sampler)


def test_rerun_refuses_in_one_line(tmp_path, capsys):
    plain = tmp_path / "plain.zarr"  # a trace store written by code, without a spec
    from amdm_geom.models.gmm import fine_grained_family

    fam = fine_grained_family((8,))
    sampler = AMDMSampler([fam.model()], [fam.condition(position=0)], SamplerConfig(num_inference_steps=2, weights=()))
    with sampler.recording(ZarrRecorder(plain)):
        sampler.sample([0])
    first = tmp_path / "first.zarr"
    assert cli.main(["probe", "gmm_pair", *PROBES["gmm_pair"], "--out", str(first)]) == 0
    capsys.readouterr()
    for argv, expected in [
        (["rerun", str(plain), "--out", str(tmp_path / "x.zarr")], "keeps no spec"),
        (["rerun", str(first)], "exists; pass overwrite=True (--overwrite)"),
        (["rerun", str(tmp_path / "missing.zarr")], "argument STORE: must be an existing trace store"),
    ]:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("amdm-geom rerun: error: ") and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "x.zarr").exists()
    before = open_run(first).z_next.values
    assert cli.main(["rerun", str(first), "--overwrite", "--no-progress"]) == 0  # into itself
    assert np.array_equal(open_run(first).z_next.values, before, equal_nan=True)


def test_sampler_config_round_trips_through_the_store(tmp_path):
    """The typed settings a store gives back equal the ones the run was made with."""
    from amdm_geom.models.gmm import fine_grained_family
    from amdm_geom.sampling import AMDMSampler, SamplerConfig
    from amdm_geom.store import ZarrRecorder, open_run, sampler_config

    fam = fine_grained_family((4, 8, 8), seed=1)
    cfg = SamplerConfig(num_inference_steps=6, agg_steps=3, weights=(0.4,), eta=(0.1, 0.2), ddim_eta=1.0,
                        mix="lerp", shift_mean="aggregate", continue_after_window=True)
    sampler = AMDMSampler([fam.model(), fam.model()], [fam.condition(position=0), fam.condition(colour=1)], cfg)
    with sampler.recording(ZarrRecorder(tmp_path / "a.zarr")):
        sampler.sample([0])
    back = sampler_config(open_run(tmp_path / "a.zarr"))
    assert isinstance(back, SamplerConfig) and back == cfg and back.window == (0, 3)

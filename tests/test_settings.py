"""A run's settings come back one way: the store keeps one spec, with the sampler's settings (as
the run used them) inside it, and ``spec_of``, ``sampler_config``, ``etas`` and ``built_of`` read
it typed; a store written before stores kept one spec (``attrs["config"]``) reads through the
same functions."""

import json

import pytest
import zarr

from amdm_geom.app.runner.registry import maker
from amdm_geom.core.spec import Spec
from amdm_geom.models.gmm import fine_grained_family, from_description
from amdm_geom.probes import gmm_cross_ecosystem, gmm_pair
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import (
    Built,
    StoreError,
    ZarrRecorder,
    built_of,
    etas,
    is_trace_store,
    open_run,
    sampler_config,
    spec_of,
)

SHAPE = (2, 4, 4)


class Settings(Spec):
    """A spec of one field, the sampler's settings: the shape of a bare run's kept spec."""

    sampler: SamplerConfig = SamplerConfig()


@pytest.fixture(scope="module")
def fam():
    return fine_grained_family(SHAPE, seed=3)


def bare_run(fam, path, cfg: SamplerConfig) -> AMDMSampler:
    """A sampler run by code (no probe) into ``path``; the sampler."""
    sampler = AMDMSampler([fam.model(name="a"), fam.model(name="b")],
                          [fam.condition(position=0), fam.condition(colour=1)], cfg)
    with sampler.recording(ZarrRecorder(path)):
        sampler.sample([0, 1])
    return sampler


def test_a_bare_run_keeps_its_settings_once_and_gives_them_back_typed(fam, tmp_path):
    cfg = SamplerConfig(num_inference_steps=4, agg_steps=2, weights=(0.3,), eta=(0.1, 0.4), ddim_eta=1.0,
                        record_cross_eps=True)
    sampler = bare_run(fam, tmp_path / "a.zarr", cfg)
    ds = open_run(tmp_path / "a.zarr")
    assert "config" not in ds.attrs and set(json.loads(ds.attrs["spec"])) == {"sampler"}
    assert sampler_config(ds) == cfg == sampler.config and etas(ds) == [0.1, 0.4]
    built = built_of(ds)
    assert isinstance(built, Built) and built.cross_terms == (None, "conditional")
    assert [m["name"] for m in built.models] == ["a", "b"] and len(built.conditions) == 2
    assert from_description(built.models[1]).describe() == sampler.models[1].describe()
    assert spec_of(ds, Settings) == Settings(sampler=cfg)

    class Other(Spec):
        family: int

    with pytest.raises(StoreError) as info:
        spec_of(ds, Other)  # (a spec of another shape is refused, naming the field)
    text = str(info.value)
    assert text.startswith(f"store {tmp_path / 'a.zarr'} keeps a spec that Other does not take: ") and "family" in text
    assert "\n" not in text


def test_the_kept_spec_carries_the_settings_the_run_used(tmp_path):
    """gmm_cross_ecosystem fixes allow_schedule_mismatch (``Spec.config()``): the kept spec says so,
    so it runs the same run again, and ``sampler_config`` equals the sampler's own config."""
    spec = gmm_cross_ecosystem.Spec(family={"latent_shape": SHAPE}, sampler={"steps": 3, "agg_steps": 2},
                                    run={"batch": 1, "out": tmp_path / "x.zarr", "progress": False})
    assert not spec.sampler.allow_schedule_mismatch and spec.config().allow_schedule_mismatch
    ds = open_run(gmm_cross_ecosystem.run(spec, quiet=True))
    kept = spec_of(ds, maker(ds).Spec)
    assert maker(ds) is gmm_cross_ecosystem and isinstance(kept, gmm_cross_ecosystem.Spec)
    assert kept.sampler == spec.config() == sampler_config(ds) == gmm_cross_ecosystem.build(spec).config
    assert kept.replace(sampler=spec.sampler) == spec  # (nothing else changed)
    assert ds.attrs["spec"].count('"num_inference_steps"') == 1  # (the settings are kept once)


def legacy(path, sampler: AMDMSampler, spec: str | None = None) -> None:
    """Rewrite a store's attributes as the toolkit wrote them before stores kept one spec: the
    sampler's description as ``config``, no ``built``, and a probe's spec as given, if any."""
    group = zarr.open_group(path, mode="r+")
    attrs = dict(group.attrs)
    for key in ("built", "spec"):
        attrs.pop(key, None)
    attrs["config"] = json.dumps(sampler.describe(), sort_keys=True, default=str)
    if spec is not None:
        attrs["spec"] = spec
    group.attrs.clear()
    group.attrs.update(attrs)


def test_a_store_written_before_one_spec_reads_the_same(fam, tmp_path):
    cfg = SamplerConfig(num_inference_steps=4, agg_steps=2, eta=(0.2, 0.5), allow_schedule_mismatch=True)
    sampler = bare_run(fam, tmp_path / "old.zarr", cfg)
    new = open_run(tmp_path / "old.zarr")
    before = (sampler_config(new), etas(new), built_of(new))
    # as given by a probe, without the setting the run fixed: the legacy ``config`` wins
    legacy(tmp_path / "old.zarr", sampler, spec=json.dumps({"sampler": cfg.replace(allow_schedule_mismatch=False)
                                                           .model_dump(mode="json")}))
    old = open_run(tmp_path / "old.zarr")
    assert is_trace_store(tmp_path / "old.zarr") and "built" not in old.attrs and "config" in old.attrs
    assert (sampler_config(old), etas(old), built_of(old)) == before
    assert sampler_config(old).allow_schedule_mismatch and etas(old) == [0.2, 0.5]
    # a legacy store made by code keeps no spec at all
    legacy(tmp_path / "old.zarr", sampler)
    old = open_run(tmp_path / "old.zarr")
    assert sampler_config(old) == cfg and built_of(old) == before[2]
    with pytest.raises(StoreError) as info:
        spec_of(old, gmm_pair.Spec)
    assert str(info.value) == f"store {tmp_path / 'old.zarr'} lacks attribute 'spec' (written before stores kept " \
                              "their spec)"
    with pytest.raises(ValueError, match="keeps no spec to run again"):
        maker(old)


def test_a_store_without_settings_is_one_line(fam, tmp_path):
    bare_run(fam, tmp_path / "a.zarr", SamplerConfig(num_inference_steps=2, agg_steps=1))
    ds = open_run(tmp_path / "a.zarr")
    broken = ds.copy()
    broken.attrs = {k: v for k, v in ds.attrs.items() if k not in ("spec", "built")}
    for read, missing in ((sampler_config, "spec"), (built_of, "built"), (etas, "spec")):
        with pytest.raises(StoreError) as info:
            read(broken)
        assert str(info.value) == f"store {tmp_path / 'a.zarr'} lacks attribute '{missing}'"
    broken.attrs = {**ds.attrs, "spec": "{not json"}
    with pytest.raises(StoreError, match="has a 'spec' attribute that is not JSON"):
        sampler_config(broken)

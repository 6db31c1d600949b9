"""Sampling in chunks of samples (issue 13, point 2.4).

``AMDMSampler.sample(seeds, chunk_size=c)`` runs c samples at a time, each chunk its whole
trajectory, and records every chunk at its offset into one store. What a sample owes to its
batch mates is stated in README "Seeds and batches" (tests/test_batch_independence.py): its
random draws are bit for bit the same whatever the batch, the rest differs by float rounding
only, and the same seeds in the same batch give the same arrays bit for bit. So here:

- a chunked run equals, bit for bit, the unchunked runs of its chunks' seeds, joined;
- a chunked run equals the unchunked run of all seeds to the stated rounding (z_T bit for bit);
- a store is complete only after the last chunk, and counts a step done only once every chunk
  has done it.
"""

import numpy as np
import pytest
import torch
import zarr

from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, MemoryRecorder, SamplerConfig
from amdm_geom.store import ZarrRecorder, open_run

SHAPE = (2, 8, 8)
#: the stated bound on a sample's |difference| between batch sizes / the largest entry
REL = {torch.float32: 1e-6, torch.float64: 1e-11}
VARIABLES = ("z", "eps", "x0", "mu", "noise", "z_next", "mu_shift", "z_shift", "agg_z", "eps_cross", "eps_at_z1")


def sampler(dtype=torch.float32, **cfg):
    fam = fine_grained_family(SHAPE, separation=6.0, seed=5)
    models = [fam.model(dtype=dtype), fam.model(perturb=0.05, dtype=dtype)]
    conds = [fam.condition(position=0), fam.condition(colour=1)]
    config = SamplerConfig(**{"num_inference_steps": 8, "agg_steps": 3, "ddim_eta": 1.0, "record_cross_eps": True,
                              "continue_after_window": True, **cfg})
    return AMDMSampler(models, conds, config)


def run(s, seeds, tmp_path=None, name="run.zarr", **kw):
    """(output, in-memory dataset, store dataset or None)."""
    mem = MemoryRecorder()
    if tmp_path is None:
        with s.recording(mem):
            out = s.sample(seeds, **kw)
        return out, mem.dataset(), None
    with s.recording(mem), s.recording(ZarrRecorder(tmp_path / name)):
        out = s.sample(seeds, **kw)
    return out, mem.dataset(), open_run(tmp_path / name).load()


@pytest.mark.parametrize("chunk", [1, 2])
def test_chunked_run_is_its_chunks_run_alone_bit_for_bit(tmp_path, chunk):
    s = sampler()
    seeds = [4, 9, 1, 7]
    out, mem, store = run(s, seeds, tmp_path, chunk_size=chunk)
    alone = [run(s, seeds[j:j + chunk]) for j in range(0, 4, chunk)]
    assert torch.equal(out.z0, torch.cat([a[0].z0 for a in alone]))
    assert all(torch.equal(f, torch.cat([a[0].finals[i] for a in alone])) for i, f in enumerate(out.finals))
    assert out.model_calls == sum(a[0].model_calls for a in alone)
    for var in VARIABLES:
        want = np.concatenate([a[1][var].values for a in alone], axis=a_sample_axis(mem[var]))
        np.testing.assert_array_equal(mem[var].values, want, err_msg=var)
        np.testing.assert_array_equal(store[var].values, want, err_msg=var)
    assert store.attrs["complete"] and store.attrs["steps_completed"] == 8
    assert mem.attrs["complete"] and mem.attrs["steps_completed"] == 8
    assert list(store.seed.values) == seeds


def a_sample_axis(da) -> int:
    return da.dims.index("sample")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_equals_unchunked_to_rounding(tmp_path, dtype):
    s = sampler(dtype)
    seeds = [11, 3, 8, 5, 2, 6, 13]
    whole_out, whole, _ = run(s, seeds)
    out, mem, store = run(s, seeds, tmp_path, chunk_size=3)  # chunks of 3, 3, 1
    for var in VARIABLES:
        a = whole[var].values.astype(np.float64)
        for got in (mem[var].values, store[var].values):
            b = got.astype(np.float64)
            assert np.array_equal(np.isnan(a), np.isnan(b)), var
            diff = np.nanmax(np.abs(a - b)) / np.nanmax(np.abs(a))
            assert diff <= REL[dtype], f"{var}: {diff:.2e}"
    for got in (mem, store):  # the random draws: bit for bit
        np.testing.assert_array_equal(got.z.isel(step=0).values, whole.z.isel(step=0).values)
    scale = float(whole_out.z0.abs().max())
    assert float((out.z0 - whole_out.z0).abs().max()) <= REL[dtype] * scale
    # the store is laid out in chunks of 3 samples; the last, short one reads back without padding
    arr = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")["z"]
    assert arr.chunks[:3] == (1, 1, 3) and store.sizes["sample"] == 7


def test_unchunked_store_layout_is_unchanged(tmp_path):
    s = sampler()
    _, mem, store = run(s, [0, 1, 2], tmp_path, chunk_size=5)  # one chunk: as without chunk_size
    _, plain, _ = run(s, [0, 1, 2])
    assert zarr.open_group(str(tmp_path / "run.zarr"), mode="r")["z"].chunks == (1, 1, 3, *SHAPE)
    for var in VARIABLES:
        np.testing.assert_array_equal(store[var].values, plain[var].values)


class FailsAt:
    """A model that raises on its ``n``-th call (counting from 1)."""

    def __init__(self, model, n):
        self.model, self.n, self.calls = model, n, 0
        for k in ("scheduler", "latent_shape", "dtype", "device", "describe", "condition_kind", "null_condition"):
            setattr(self, k, getattr(model, k))

    def __call__(self, z, t, cond):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("boom")
        return self.model(z, t, cond)


@pytest.mark.parametrize(("fail_call", "done"), [(5, 0), (8 + 5, 4)])
def test_a_store_counts_a_step_done_only_once_every_chunk_did_it(tmp_path, fail_call, done):
    """Model 1 fails in chunk 1 at step 4 (no step is done for every sample) or in the last
    chunk at step 4 (steps 0..3 are)."""
    fam = fine_grained_family(SHAPE, seed=5)
    model = FailsAt(fam.model(), fail_call)
    s = AMDMSampler([model], [fam.condition(position=0)], SamplerConfig(num_inference_steps=8))
    mem = MemoryRecorder()
    with pytest.raises(RuntimeError, match="boom"):
        with s.recording(mem), s.recording(ZarrRecorder(tmp_path / "r.zarr")):
            s.sample([0, 1, 2, 3], chunk_size=2)
    store = open_run(tmp_path / "r.zarr")
    for attrs in (mem.dataset().attrs, store.attrs):
        assert attrs["complete"] is False and attrs["steps_completed"] == done


def test_hooks_see_each_chunk_at_its_offset():
    s = sampler()
    seen = []
    with s.hooks(lambda name, step, value: seen.append((step, s.chunk_offset, value.shape[0])), "model0.z"):
        s.sample([0, 1, 2, 3, 4], chunk_size=2)
    assert [(off, n) for step, off, n in seen if step == 0] == [(0, 2), (2, 2), (4, 1)]
    assert s.chunk_offset == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_chunk_sizes_are_one_line(bad):
    with pytest.raises(ValueError, match=r"^chunk_size must be an int >= 1 or None; got") as info:
        sampler().sample([0, 1], chunk_size=bad)
    assert "\n" not in str(info.value)

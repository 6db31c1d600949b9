"""The digits models under guidance (``analyses/digits/guidance.py``): the ecosystem's unclipped
variant against diffusers' own step, the exact intervals against scipy's binomial test, and the
cases that decide each status of the read-back verdict."""

import numpy as np
import pytest
import torch
import xarray as xr
from diffusers import DDIMScheduler
from scipy import stats

from amdm_geom.analyses.digits import guidance
from amdm_geom.models.digits import zoo


def test_the_unclipped_variant_is_diffusers_step_without_the_clip():
    clipped, unclipped = zoo.load("position", guidance_scale=7.5), zoo.load("position", guidance_scale=7.5,
                                                                             clip_sample=False)
    assert clipped.scheduler.config.clip_sample is True and unclipped.scheduler.config.clip_sample is False
    # one guided step from noise at the first timestep: the clipped x0 saturates, the unclipped one does not
    ref = DDIMScheduler.from_config(clipped.scheduler.config, clip_sample=False)
    ref.set_timesteps(50)
    t = ref.timesteps[5]
    z = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cond = torch.tensor([[0, -1, -1]])
    v = unclipped(z, t, cond)
    x0 = ref.step(v, t, z).pred_original_sample
    assert float(x0.abs().max()) > 1  # the guided x0 overshoots [-1, 1] ...
    for model, want in ((unclipped, x0), (clipped, x0.clamp(-1, 1))):  # ... and only the clipped step clamps it
        sched = DDIMScheduler.from_config(model.scheduler.config)
        sched.set_timesteps(50)
        torch.testing.assert_close(sched.step(model(z, t, cond), t, z).pred_original_sample, want, rtol=0, atol=0)


def test_flow_models_have_no_clip_and_bad_flags_are_refused():
    flow = zoo.load("flow_position", clip_sample=False)
    assert type(flow.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    with pytest.raises(ValueError, match=r"^clip_sample must be True or False; got 'no'$"):
        zoo.load("position", clip_sample="no")
    with pytest.raises(ValueError, match="takes no stores"):
        guidance.compute({"a": "b"})


@pytest.mark.parametrize("hits", [0, 1, 60, 127, 128])
def test_intervals_are_scipys_exact_binomial_intervals(hits):
    low, high = guidance._interval(np.array([hits]), 128, 0.95)
    ci = stats.binomtest(hits, 128).proportion_ci(0.95, method="exact")
    assert low[0] == pytest.approx(ci.low, abs=1e-12) and high[0] == pytest.approx(ci.high, abs=1e-12)


def curve(hits, n: int) -> xr.Dataset:
    """A read-back table over (clip, model, guidance) with the given hits."""
    models = ["position", "digit"]
    return xr.Dataset({"hits": (("curve_clip", "curve_model", "curve_guidance"), np.array(hits))},
                      coords={"curve_clip": [True, False], "curve_model": models, "curve_guidance": [1.0, 7.5],
                              "threshold": ("curve_model", [guidance.THRESHOLD[m] for m in models])},
                      attrs={"n": n, "steps": 50, "seed": 0})


def test_each_status_of_the_read_back_verdict():
    # 128 of 128 everywhere: every exact lower bound (0.9716) reaches 0.95: holds
    full = [[[128, 128], [128, 128]]] * 2
    rows = {v.key: v for v in guidance.verdicts(curve(full, 128))}
    assert rows["digits_guidance_readback_clipped"].status == "holds"
    assert rows["digits_guidance_readback_unclipped"].kind == "finding"
    # one cell at 0 of 128 (clipped, position, g = 7.5): its Bonferroni upper bound is far below 0.95: violated
    bad = [[[128, 0], [128, 128]], [[128, 128], [128, 128]]]
    rows = {v.key: v for v in guidance.verdicts(curve(bad, 128))}
    assert rows["digits_guidance_readback_clipped"].status == "violated"
    assert rows["digits_guidance_readback_clipped"].extra["cells_below"] == 1
    assert "position g=7.5 0/128" in rows["digits_guidance_readback_clipped"].detail
    # 16 of 16 everywhere: the lower bound 0.025^(1/16) = 0.794 cannot reach 0.95: inconclusive, not holds
    assert 0.025 ** (1 / 16) == pytest.approx(stats.beta.ppf(0.025, 16, 1))
    rows = {v.key: v for v in guidance.verdicts(curve([[[16, 16], [16, 16]]] * 2, 16))}
    assert {v.status for v in rows.values()} == {"inconclusive"}
    # the digit class at 112 of 128 (0.875) against its 0.85: lower bound 0.805, undecided either way
    mid = [[[128, 128], [112, 112]]] * 2
    assert stats.binomtest(112, 128).proportion_ci(0.95, method="exact").low < 0.85
    assert guidance.verdicts(curve(mid, 128))[0].status == "inconclusive"


def test_quick_curve_shows_the_clip_losing_the_attribute_under_guidance():
    ds = guidance.compute(quick=True)
    share = ds.hits / ds.attrs["n"]
    g = float(ds.curve_guidance.max())
    clipped = share.sel(curve_clip=True, curve_guidance=g, curve_model="position")
    unclipped = share.sel(curve_clip=False, curve_guidance=g, curve_model="position")
    assert float(unclipped) >= 0.9 and float(clipped) <= 0.2  # (measured 16/16 and 0/16 on 16 samples)
    assert float(share.sel(curve_guidance=1.0).min()) >= 0.9  # unguided, both variants read back
    import matplotlib.pyplot as plt

    figs = guidance.plot(ds)
    assert set(figs) == {"guidance_curve"}
    plt.close("all")

"""The ecosystem check for any two denoisers, condition kinds and the cross terms (issue 13,
points 2.2, 2.3 and 2.5).

- ``check_denoisers`` tells a model on another schedule apart and calls a same-schedule pair
  "same"; functional proximity compares eq. (4)'s epsilons whatever each model predicts
  (checked against the epsilon computed by hand from the models' outputs);
- the sampler's cross terms are model 1 and model i at y_i when the two take one kind of
  condition, else each at its null condition (labelled in the run), else refused in one line;
- a one-model run needs no weight.
"""

import math

import numpy as np
import pytest
import torch

from amdm_geom.core.schedules import make_scheduler
from amdm_geom.core.spec import SpecError
from amdm_geom.models.ecosystem import check_denoisers, format_report
from amdm_geom.models.unet import condition_pair, tiny_unet_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import ZarrRecorder, built_of, open_run

SHAPE = (2, 4, 4)
N = math.prod(SHAPE)


class VecDenoiser:
    """``2 tanh(W z + U y + b t / 1000)`` read as its scheduler's prediction type; the condition
    ``y (m,)`` is a vector of kind ``kind``, its null condition zeros (when ``null``)."""

    def __init__(self, seed=0, kind="vec", schedule="scaled_linear", prediction_type="epsilon", null=True, m=3,
                 data_space=None):
        self.scheduler = make_scheduler(schedule, prediction_type=prediction_type)
        self.latent_shape, self.dtype, self.device = SHAPE, torch.float32, torch.device("cpu")
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(N, N, generator=g) / N**0.5
        self.U = torch.randn(m, N, generator=g)
        self.b = torch.randn(N, generator=g)
        self.condition_kind, self.m, self.name = kind, m, f"vec-{seed}"
        if null:
            self.null_condition = lambda: torch.zeros(self.m)
        if data_space is not None:
            self.data_space = data_space

    def __call__(self, z, t, y):
        y = torch.as_tensor(y, dtype=torch.float32)
        return (2 * torch.tanh(z.flatten(1) @ self.W + y @ self.U + self.b * (int(t) / 1000))).reshape(z.shape)

    def describe(self):
        return {"family": "vec", "name": self.name}


# -------------------------------------------------------------------------------- check_denoisers


@pytest.fixture(scope="module")
def unets():
    kw = dict(seed=0, sample_size=16, block_out_channels=(16, 32), guidance_scale=1.0)
    base, independent = tiny_unet_family("independent", **kw)
    _, perturbed = tiny_unet_family("perturbed", **kw)
    return base, perturbed, independent


def test_other_schedule_is_another_ecosystem(unets):
    base, perturbed, independent = unets
    y1, y2 = condition_pair(0, seq_len=4)
    other = check_denoisers(base, independent, y1, y2, timesteps=(900, 500, 100))
    assert other.verdict == "different" and other.checks["sde"]["same"] is False
    assert {"beta_schedule", "beta_start", "beta_end", "alphas_cumprod"} <= set(other.checks["sde"]["differences"])
    assert other.checks["latent_shape"]["same"] is True and other.proximity_kind == "conditional"
    same = check_denoisers(base, perturbed, y1, timesteps=(900, 500, 100))
    assert same.verdict == "same" and all(v["same"] for v in same.checks.values())
    assert all(0 < v < 1 for v in same.proximity.values())  # a perturbed copy: close, not equal
    assert all(v > same.proximity[t] for t, v in other.proximity.items())  # independent weights: farther
    assert check_denoisers(base, base, y1, timesteps=(500,)).proximity == {500: 0.0}
    text = format_report(other)
    assert "verdict: DIFFERENT" in text and "sde" in text and "conditional, random z_t" in text


def test_proximity_compares_epsilons_whatever_the_models_predict():
    """A v-prediction model and its epsilon reading: the outputs differ, the epsilons are equal
    (to rounding); measured against the relative difference computed by hand."""
    eps_model = VecDenoiser(seed=1)
    v_model = VecDenoiser(seed=1, prediction_type="v_prediction")
    t, y = 600, torch.tensor([0.5, -1.0, 0.2])
    rep = check_denoisers(eps_model, v_model, y, timesteps=(t,), seed=3, batch=4)
    # by hand: the same z_t (seeded as documented), v -> eps = sqrt(abar) v + sqrt(1 - abar) z
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn((4, *SHAPE), generator=g, dtype=torch.float64)
    abar = float(eps_model.scheduler.alphas_cumprod[t])
    z = (abar**0.5 * x0 + (1 - abar) ** 0.5 * torch.randn(x0.shape, generator=g, dtype=torch.float64)).float()
    out = eps_model(z, t, y).double()  # both models compute the same function
    eps_b = abar**0.5 * out + (1 - abar) ** 0.5 * z.double()
    want = float(((out - eps_b).flatten(1).norm(dim=1) / out.flatten(1).norm(dim=1)).mean())
    assert want > 0.1
    assert rep.proximity[t] == pytest.approx(want, rel=1e-5)
    assert rep.checks["sde"]["differences"] == {"prediction_type": ["epsilon", "v_prediction"]}


def test_conditions_of_other_kinds_are_compared_unconditionally():
    a, b = VecDenoiser(seed=1, kind="colour"), VecDenoiser(seed=2, kind="position")
    y = torch.ones(3)
    rep = check_denoisers(a, b, y, y, timesteps=(500,))
    assert rep.proximity_kind == "unconditional"
    b.condition_kind = "colour"  # the same models, now of one kind, at the null condition (zeros) given
    at_null = check_denoisers(a, b, torch.zeros(3), timesteps=(500,))
    assert at_null.proximity_kind == "conditional" and at_null.proximity == rep.proximity
    assert check_denoisers(a, b, y, timesteps=(500,)).proximity != rep.proximity  # y itself is not what was used
    c = VecDenoiser(seed=3, kind="digit", null=False)
    none = check_denoisers(a, c, y, timesteps=(500,))
    assert none.proximity == {} and none.proximity_kind.startswith("not measured")
    assert none.verdict == "same"  # structure agrees; proximity is only measured


@pytest.mark.parametrize(("space_a", "space_b", "verdict"), [
    ("pixels 2x4x4 in [-1, 1]", "pixels 2x4x4 in [-1, 1]", "same"),
    ("pixels 2x4x4 in [-1, 1]", "latents of VAE sha256:00", "different"),
    ("pixels 2x4x4 in [-1, 1]", None, "unknown"),
])
def test_data_space(space_a, space_b, verdict):
    a, b = VecDenoiser(seed=1, data_space=space_a), VecDenoiser(seed=2, data_space=space_b)
    assert check_denoisers(a, b, torch.zeros(3), timesteps=(10,)).verdict == verdict


def test_bad_timesteps_are_one_line():
    with pytest.raises(ValueError, match=r"^timesteps must be ints in \[0, 999\]; got \[1000\]$"):
        check_denoisers(VecDenoiser(), VecDenoiser(seed=1), timesteps=(1000,))


# -------------------------------------------------------------------------------- the cross terms


def cross_run(a, b, ya, yb, tmp_path=None):
    cfg = SamplerConfig(num_inference_steps=5, agg_steps=2, record_cross_eps=True)
    s = AMDMSampler([a, b], [ya, yb], cfg)
    if tmp_path is None:
        return s, s.run_with_cache([0, 1])[1]
    with s.recording(ZarrRecorder(tmp_path / "r.zarr")):
        s.sample([0, 1])
    return s, open_run(tmp_path / "r.zarr").load()


def test_cross_terms_at_y_i_when_kinds_agree():
    a, b = VecDenoiser(seed=1), VecDenoiser(seed=2)
    ya, yb = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    s, ds = cross_run(a, b, ya, yb)
    assert s.describe()["cross_terms"] == [None, "conditional"]
    z1 = torch.from_numpy(ds.z.isel(step=1, model=0).values)
    t = int(ds.t[1])
    np.testing.assert_array_equal(ds.eps_cross.isel(step=1, model=1).values, a(z1, t, yb).numpy())
    np.testing.assert_array_equal(ds.eps_at_z1.isel(step=1, model=1).values, b(z1, t, yb).numpy())


def test_cross_terms_at_the_null_conditions_when_kinds_differ(tmp_path):
    a, b = VecDenoiser(seed=1, kind="colour"), VecDenoiser(seed=2, kind="position")
    ya, yb = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    _, ds = cross_run(a, b, ya, yb, tmp_path)
    assert built_of(ds).cross_terms == (None, "unconditional")
    null = torch.zeros(3)
    assert np.isnan(ds.eps_cross.isel(step=2, model=1).values).all()  # model 2 stopped after the window
    for k in (0, 1):
        z1, t = torch.from_numpy(ds.z.isel(step=k, model=0).values), int(ds.t[k])
        np.testing.assert_array_equal(ds.eps_cross.isel(step=k, model=1).values, a(z1, t, null).numpy())
        np.testing.assert_array_equal(ds.eps_at_z1.isel(step=k, model=1).values, b(z1, t, null).numpy())


def test_cross_terms_are_converted_to_epsilon():
    """v-prediction models: the cross terms are epsilons, eps = sqrt(abar) v + sqrt(1 - abar) z."""
    a, b = (VecDenoiser(seed=s, prediction_type="v_prediction") for s in (1, 2))
    yb = torch.tensor([0.0, 2.0, 0.0])
    _, ds = cross_run(a, b, torch.zeros(3), yb)
    z1, t = torch.from_numpy(ds.z.isel(step=1, model=0).values), int(ds.t[1])
    abar = float(ds.alpha_bar[1])
    want = abar**0.5 * a(z1, t, yb).double() + (1 - abar) ** 0.5 * z1.double()
    np.testing.assert_allclose(ds.eps_cross.isel(step=1, model=1).values, want.numpy(), rtol=0, atol=1e-6)


def test_cross_terms_without_a_null_condition_are_refused():
    a, b = VecDenoiser(seed=1, kind="colour"), VecDenoiser(seed=2, kind="position", null=False)
    with pytest.raises(ValueError, match=r"^model 0 and model 1 take different conditions \('colour' vs "
                                         r"'position'\) and model 1 has no null_condition\(\)") as info:
        cross_run(a, b, torch.zeros(3), torch.zeros(3))
    assert "\n" not in str(info.value)
    AMDMSampler([a, b], [torch.zeros(3)] * 2, SamplerConfig(num_inference_steps=5))  # fine without cross terms


# -------------------------------------------------------------------------------- weights


def test_one_model_needs_no_weight_and_two_keep_the_default():
    one = AMDMSampler([VecDenoiser()], [torch.zeros(3)], SamplerConfig(num_inference_steps=3))
    assert one.config.weights == () and one.describe()["sampler"]["weights"] == ()
    assert AMDMSampler([VecDenoiser()] * 2, [torch.zeros(3)] * 2, SamplerConfig(num_inference_steps=3)) \
        .config.weights == (0.5,)
    with pytest.raises(SpecError, match=r"^weights takes 0 weight\(s\) .* for 1 models; got 1: \(0.7,\)$"):
        AMDMSampler([VecDenoiser()], [torch.zeros(3)], SamplerConfig(num_inference_steps=3, weights=(0.7,)))
    with pytest.raises(SpecError, match=r"^weights takes 2 weight\(s\) .* for 3 models; got 1: \(0.5,\)$"):
        AMDMSampler([VecDenoiser()] * 3, [torch.zeros(3)] * 3, SamplerConfig(num_inference_steps=3))

"""Non-finite values in amdm_geom.core.geometry (issue 10, "NaN never becomes a number").

- A sample with a NaN or inf entry in any latent input gives NaN: a NaN measurement, an all-NaN
  latent. The other samples of the batch are unaffected: they equal both an independent numpy
  float64 computation and the function applied to the finite samples alone.
- Parameters that can only be a mistake (a NaN or infinite ``w`` or ``eta``) raise a one-line
  ValueError saying "non-finite".
- float16 and bfloat16 inputs: finite in-range results come back finite; a finite result beyond
  the dtype's range raises OverflowError instead of becoming inf.

Every expected value comes from numpy formulas written here, never from the function under test.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from amdm_geom.core import geometry as geo

seeds = st.integers(0, 2**32 - 1)


# ------------------------------------------------------------------------------------ references
# numpy float64, per row of (B, n) arrays


def np_norm(x):
    return np.linalg.norm(x, axis=1)


def np_angle(a, b):
    u = a / np_norm(a)[:, None]
    v = b / np_norm(b)[:, None]
    return 2.0 * np.arctan2(np_norm(u - v), np_norm(u + v))


def np_norm_gap(a, b):
    return np.abs(np_norm(a) - np_norm(b))


def np_slerp(a, b, w):
    phi = np_angle(a, b)[:, None]
    w = np.asarray(w, dtype=np.float64).reshape(-1, 1)
    return np.sin((1 - w) * phi) / np.sin(phi) * a + np.sin(w * phi) / np.sin(phi) * b


def np_lerp(a, b, w):
    w = np.asarray(w, dtype=np.float64).reshape(-1, 1)
    return (1 - w) * a + w * b


def np_orth(a, b, w):
    w = np.asarray(w, dtype=np.float64).reshape(-1, 1)
    return w * a + np.sqrt(1 - w * w) * b


def np_radial_shift(z, mu, eta):
    d = z - mu
    return z - np.asarray(eta).reshape(-1, 1) * d / np_norm(d)[:, None]


def np_fold(rule, zs, ws):
    acc = zs[0]
    for z, w in zip(zs[1:], ws):
        acc = rule(acc, z, w)
    return acc


# ------------------------------------------------------------------------------------ batches with holes


@st.composite
def holed_batches(draw, k):
    """k latents (B, n) float64 with a NaN entry in one sample and a +-inf entry in another.

    Returns (inputs, bad, rng): ``bad`` marks the two non-finite samples. With ``zero_partner``
    the other inputs of the NaN sample are zero, so a zero-norm check that ran on it would fire.
    """
    seed = draw(seeds)
    batch = draw(st.integers(3, 6))
    n = draw(st.sampled_from([2, 3, 16, 257]))
    rows = draw(st.permutations(range(batch)))
    nan_row, inf_row = rows[0], rows[1]
    nan_in, inf_in = draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))
    nan_col, inf_col = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
    inf_value = draw(st.sampled_from([math.inf, -math.inf]))
    zero_partner = draw(st.booleans())
    g = np.random.default_rng(seed)
    zs = [g.standard_normal((batch, n)) * g.uniform(0.5, 3.0, (batch, 1)) for _ in range(k)]
    if zero_partner:
        for i in range(k):
            if i != nan_in:
                zs[i][nan_row] = 0.0
    zs[nan_in][nan_row, nan_col] = math.nan
    zs[inf_in][inf_row, inf_col] = inf_value
    bad = np.zeros(batch, dtype=bool)
    bad[[nan_row, inf_row]] = True
    return zs, bad, g


KINDS = {
    # kind: (convert a float64 numpy array to the input type, rtol, atol for latent results)
    "torch64": (lambda x: torch.from_numpy(x.copy()), 1e-9, 1e-12),
    "numpy32": (lambda x: x.astype(np.float32), 4e-6, 1e-5),
}


def as_numpy(x):
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def upcast(x):
    """The exact float64 values of an input as the function under test sees them."""
    return as_numpy(x).astype(np.float64)


# ------------------------------------------------------------------------------------ measurements


MEASUREMENTS = {
    "norm": (1, lambda zs: geo.norm(zs[0]), lambda zs: np_norm(zs[0])),
    "angle": (2, lambda zs: geo.angle(*zs), lambda zs: np_angle(*zs)),
    "norm_gap": (2, lambda zs: geo.norm_gap(*zs), lambda zs: np_norm_gap(*zs)),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", MEASUREMENTS)
@given(data=st.data())
def test_measurement_is_nan_exactly_on_the_nonfinite_samples(name, kind, data):
    k, call, ref = MEASUREMENTS[name]
    zs, bad, _ = data.draw(holed_batches(k))
    convert = KINDS[kind][0]
    inputs = [convert(z) for z in zs]
    got = as_numpy(call(inputs))
    assert got.dtype == np.float64 and got.shape == bad.shape
    assert np.isnan(got[bad]).all()
    want = ref([upcast(z)[~bad] for z in inputs])
    np.testing.assert_allclose(got[~bad], want, rtol=1e-12, atol=1e-12)
    alone = as_numpy(call([x[~bad] for x in inputs]))
    np.testing.assert_array_equal(got[~bad], alone)


def test_norm_gap_of_a_nan_sample_is_nan_not_zero():
    # the reported bug: | |a| - |b| | came back 0.0 for a sample containing NaN
    a = torch.ones(2, 4, dtype=torch.float64)
    b = a.clone()
    a[0, 2] = math.nan
    gap = geo.norm_gap(a, b)
    assert math.isnan(gap[0].item()) and gap[1].item() == 0.0
    a[0] = math.nan
    b[0] = math.nan
    assert math.isnan(geo.norm_gap(a, b)[0].item())
    assert math.isnan(geo.norm_gap(np.full((1, 3), np.inf), np.full((1, 3), np.inf))[0])


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_norm_and_angle_of_a_single_nonfinite_entry(value):
    z = np.ones((2, 3, 4))
    z[1, 2, 3] = value
    assert np.isnan(geo.norm(z)[1]) and geo.norm(z)[0] == pytest.approx(math.sqrt(12))
    phi = geo.angle(z, np.ones((2, 3, 4)))
    assert np.isnan(phi[1]) and phi[0] == 0.0


@pytest.mark.parametrize("phi", [math.nan, math.inf, -math.inf])
def test_phi_w_of_a_nonfinite_angle_is_nan(phi):
    assert math.isnan(geo.phi_w(phi, 0.3))
    got = geo.phi_w(np.array([phi, 1.0]), 0.3)
    assert np.isnan(got[0]) and got[1] == pytest.approx(math.sin(0.35) / math.sin(0.5))
    got_t = geo.phi_w(torch.tensor([phi, 1.0], dtype=torch.float64), 0.3)
    assert math.isnan(got_t[0].item()) and got_t[1].item() == pytest.approx(got[1])


# ------------------------------------------------------------------------------------ transforms


def _w(g, batch):
    return g.uniform(0.0, 1.0, batch)


TRANSFORMS = {
    # name: (number of latents, parameters from the rng, call, numpy reference)
    "slerp": (2, _w, lambda zs, p: geo.slerp(zs[0], zs[1], p), lambda zs, p: np_slerp(*zs, p)),
    "lerp": (2, _w, lambda zs, p: geo.lerp(zs[0], zs[1], p), lambda zs, p: np_lerp(*zs, p)),
    "radial_shift": (
        2,
        lambda g, batch: g.uniform(0.0, 3.0, batch),
        lambda zs, p: geo.radial_shift(zs[0], zs[1], p),
        lambda zs, p: np_radial_shift(*zs, p),
    ),
    "slerp_chain": (
        3,
        lambda g, batch: [_w(g, batch), _w(g, batch)],
        lambda zs, p: geo.slerp_chain(zs, p),
        lambda zs, p: np_fold(np_slerp, zs, p),
    ),
    "lerp_chain": (
        3,
        lambda g, batch: [_w(g, batch), _w(g, batch)],
        lambda zs, p: geo.lerp_chain(zs, p),
        lambda zs, p: np_fold(np_lerp, zs, p),
    ),
    "orthogonal_mix": (
        3,
        lambda g, batch: [_w(g, batch), _w(g, batch)],
        lambda zs, p: geo.orthogonal_mix(zs, p),
        lambda zs, p: np_fold(np_orth, zs, p),
    ),
}


def _rows(p, keep):
    return [q[keep] for q in p] if isinstance(p, list) else p[keep]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", TRANSFORMS)
@given(data=st.data())
def test_transform_gives_all_nan_exactly_on_the_nonfinite_samples(name, kind, data):
    k, params, call, ref = TRANSFORMS[name]
    zs, bad, g = data.draw(holed_batches(k))
    convert, rtol, atol = KINDS[kind]
    inputs = [convert(z) for z in zs]
    p = params(g, len(bad))
    got = call(inputs, p)
    assert type(got) is type(inputs[0]) and got.dtype == inputs[0].dtype
    got = as_numpy(got).astype(np.float64)
    assert np.isnan(got[bad]).all()  # every entry, not just the one that was NaN or inf
    assert np.isfinite(got[~bad]).all()
    want = ref([upcast(z)[~bad] for z in inputs], _rows(p, ~bad))
    np.testing.assert_allclose(got[~bad], want, rtol=rtol, atol=atol)
    alone = as_numpy(call([x[~bad] for x in inputs], _rows(p, ~bad))).astype(np.float64)
    np.testing.assert_array_equal(got[~bad], alone)


@pytest.mark.parametrize(
    "call",
    [
        lambda a, b: geo.slerp(a, b, 0.0),  # w = 0 would return a exactly
        lambda a, b: geo.slerp(b, a, 1.0),  # w = 1 would return a exactly
        lambda a, b: geo.lerp(a, b, 0.0),
        lambda a, b: geo.lerp_chain([a, b], [0.0]),
        lambda a, b: geo.slerp_chain([a, b, a], [0.0, 0.0]),
        lambda a, b: geo.orthogonal_mix([a, b], [1.0]),  # all weight on model 1
        lambda a, b: geo.radial_shift(a, b, 0.0),  # eta = 0 would return a exactly
    ],
)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_nonfinite_input_with_zero_weight_still_gives_nan(call, value):
    # the non-finite input gets weight 0, but the sample is still undefined, not silently finite
    a = torch.randn(2, 3, 4, dtype=torch.float64)
    b = torch.randn(2, 3, 4, dtype=torch.float64)
    b[0, 1, 2] = value
    out = call(a, b)
    assert torch.isnan(out[0]).all()
    assert torch.isfinite(out[1]).all()


def test_slerp_of_a_nonfinite_sample_is_not_called_zero_norm():
    # the reported bug: a NaN or inf latent was refused as "zero-norm input"
    a = torch.randn(3, 8, dtype=torch.float64)
    b = torch.randn(3, 8, dtype=torch.float64)
    a[0, 3] = math.nan
    b[1] = math.inf
    out = geo.slerp(a, b, 0.4)
    assert torch.isnan(out[:2]).all()
    np.testing.assert_allclose(out[2:].numpy(), np_slerp(a[2:].numpy(), b[2:].numpy(), [0.4]), rtol=1e-12)
    # a genuinely zero finite sample still raises, and names that sample, not the NaN one
    a[2] = 0.0
    with pytest.raises(ValueError, match=r"^slerp: sample 2 has a zero-norm input") as info:
        geo.slerp(a, b, 0.4)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"^slerp_chain: sample 2 has a zero-norm input"):
        geo.slerp_chain([a, b], [0.4])


def test_radial_shift_of_a_nan_sample_is_nan():
    # the reported bug: NaN passed through silently (and eta = inf gave all-inf, see below)
    z = torch.randn(2, 5, dtype=torch.float16)
    mu = torch.randn(2, 5, dtype=torch.float16)
    mu[1, 0] = math.nan
    out = geo.radial_shift(z, mu, 0.3)
    assert out.dtype == torch.float16
    assert torch.isnan(out[1]).all() and torch.isfinite(out[0]).all()


# ------------------------------------------------------------------------------------ parameter errors


def _one_line_value_error(call, *fragments):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


@given(eta=st.sampled_from([math.inf, -math.inf, math.nan]), per_sample=st.booleans(),
       kind=st.sampled_from(["torch", "numpy"]))
def test_nonfinite_eta_raises(eta, per_sample, kind):
    z = torch.randn(3, 4, dtype=torch.float64)
    mu = torch.randn(3, 4, dtype=torch.float64)
    value = eta
    if per_sample:
        value = np.array([0.1, eta, 0.2]) if kind == "numpy" else torch.tensor([0.1, eta, 0.2])
    message = _one_line_value_error(
        lambda: geo.radial_shift(z, mu, value), "eta must be finite and >= 0", "non-finite", repr(eta)
    )
    assert ("(sample 1)" in message) == per_sample


def test_negative_eta_raises_without_calling_it_nonfinite():
    z = torch.randn(2, 4)
    message = _one_line_value_error(lambda: geo.radial_shift(z, z, -0.5), "eta must be finite and >= 0", "-0.5")
    assert "non-finite" not in message


WEIGHTED = {
    "slerp": lambda a, b, w: geo.slerp(a, b, w),
    "lerp": lambda a, b, w: geo.lerp(a, b, w),
    "slerp_chain": lambda a, b, w: geo.slerp_chain([a, b, a], [0.5, w]),
    "lerp_chain": lambda a, b, w: geo.lerp_chain([a, b], [w]),
    "orthogonal_mix": lambda a, b, w: geo.orthogonal_mix([a, b], [w]),
}


@pytest.mark.parametrize("name", WEIGHTED)
@given(w=st.sampled_from([math.nan, math.inf, -math.inf]), per_sample=st.booleans())
def test_nonfinite_weight_raises(name, w, per_sample):
    a = torch.randn(2, 4, dtype=torch.float64)
    b = torch.randn(2, 4, dtype=torch.float64)
    value = torch.tensor([0.5, w], dtype=torch.float64) if per_sample else w
    _one_line_value_error(lambda: WEIGHTED[name](a, b, value), "must be in [0, 1]", "non-finite", repr(w))


@given(w=st.one_of(st.floats(max_value=-1e-300, allow_infinity=False),
                   st.floats(min_value=1.0 + 1e-15, allow_infinity=False)))
def test_out_of_range_finite_weight_raises(w):
    a = torch.randn(2, 4, dtype=torch.float64)
    message = _one_line_value_error(lambda: geo.slerp(a, a, w), "w must be in [0, 1]", repr(w))
    assert "non-finite" not in message


def test_phi_w_nonfinite_weight_raises():
    _one_line_value_error(lambda: geo.phi_w(1.0, math.nan), "w must be in [0, 1]", "non-finite nan")
    _one_line_value_error(lambda: geo.phi_w(torch.tensor(1.0), torch.tensor(math.inf)), "non-finite inf")


def test_eta_inf_no_longer_returns_all_inf():
    z = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    _one_line_value_error(lambda: geo.radial_shift(z, torch.zeros_like(z), math.inf), "non-finite inf")


# ------------------------------------------------------------------------------------ float16, bfloat16


LOW = {
    # dtype: (largest finite value, entry scale, relative size of one rounding step)
    torch.float16: (65504.0, 6e4, 2.0**-10),
    torch.bfloat16: (3.3895313892515355e38, 3e38, 2.0**-7),
}
SUBNORMAL_STEP = {torch.float16: 2.0**-24, torch.bfloat16: 2.0**-133}


@pytest.mark.parametrize(
    "dtype,array", [(torch.float16, "torch"), (torch.float16, "numpy"), (torch.bfloat16, "torch")]
)
@given(seed=seeds, n=st.sampled_from([16, 64, 1024, 16384]), w=st.floats(0.0, 1.0))
def test_low_precision_slerp_near_the_top_of_the_range_is_finite(dtype, array, seed, n, w):
    # Entries of magnitude 0.83-1 x scale (6e4 for float16), b = a with at most 10% of the signs
    # flipped: equal norms, at most 14% of the energy flipped so cos(phi) >= 0.72, and every
    # entry of the true result is at most scale / cos(phi / 2) <= 1.08 scale, inside the dtype's
    # range (asserted below on the float64 reference). (numpy has no bfloat16.)
    top, scale, step = LOW[dtype]
    g = np.random.default_rng(seed)
    a = g.uniform(0.83, 1.0, (2, n)) * scale * g.choice([-1.0, 1.0], (2, n))
    flips = np.ones((2, n))
    for row in flips:
        row[g.choice(n, size=g.integers(1, max(2, n // 10 + 1)), replace=False)] = -1.0
    b = a * flips
    a_t, b_t = torch.from_numpy(a).to(dtype), torch.from_numpy(b).to(dtype)
    a64, b64 = a_t.to(torch.float64).numpy(), b_t.to(torch.float64).numpy()
    want = np_slerp(a64, b64, np.full(2, w))
    assert np.abs(want).max() < top  # the premise: the true result is in range
    got = geo.slerp(a_t, b_t, w) if array == "torch" else geo.slerp(a_t.numpy(), b_t.numpy(), w)
    assert got.dtype == (dtype if array == "torch" else np.float16)
    got64 = (got.to(torch.float64).numpy() if array == "torch" else got.astype(np.float64))
    assert np.isfinite(got64).all()
    # one rounding to the dtype: within one step (relative) of the float64 reference
    np.testing.assert_allclose(got64, want, rtol=step, atol=SUBNORMAL_STEP[dtype])


@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_norms_and_angles_near_the_top_do_not_overflow(dtype):
    top, scale, _ = LOW[dtype]
    z = torch.full((2, 4, 64, 64), scale, dtype=torch.float64)
    z[1, :, :, ::2] *= -1  # orthogonal to sample 0
    zl = z.to(dtype)
    want = float(zl[0].to(torch.float64).abs().max()) * 128.0  # sqrt(16384) equal entries
    np.testing.assert_allclose(geo.norm(zl).numpy(), [want, want], rtol=1e-15)
    assert geo.angle(zl, zl.flip(0))[0].item() == pytest.approx(math.pi / 2, abs=1e-15)
    assert geo.norm_gap(zl, zl.flip(0)).numpy() == pytest.approx([0.0, 0.0], abs=1e-6 * want)


def test_float16_slerp_whose_true_result_overflows_raises():
    a = torch.tensor([[65504.0, 65504.0], [1.0, 0.0]], dtype=torch.float16)
    b = torch.tensor([[65504.0, -65504.0], [0.0, 1.0]], dtype=torch.float16)
    # true result of sample 0: (65504 sqrt 2, 0) = (92636.6, 0), beyond float16
    for x, y, dtype in [(a, b, "torch.float16"), (a.numpy(), b.numpy(), "numpy.float16")]:
        with pytest.raises(OverflowError) as info:
            geo.slerp(x, y, 0.5)
        message = str(info.value)
        assert "\n" not in message
        for fragment in ["slerp", dtype, "65504", "92636.6", "sample 0"]:
            assert fragment in message, message


@pytest.mark.parametrize("array", ["torch", "numpy"])
@given(eta=st.floats(0.0, 2e5))
def test_float16_overflow_threshold_of_radial_shift(array, eta):
    # z = 0, mu = 1: the result is exactly eta, so it fits float16 iff eta rounds to a finite
    # float16, i.e. eta < 65520 (65504 plus half a step of 32)
    z = np.zeros((1, 1), dtype=np.float16)
    mu = np.ones((1, 1), dtype=np.float16)
    if array == "torch":
        z, mu = torch.from_numpy(z), torch.from_numpy(mu)
    if eta < 65520.0:
        got = float(geo.radial_shift(z, mu, eta)[0, 0])
        # rounded once, or twice via float32 (a torch cast may do that): either neighbour
        assert got in {float(np.float16(eta)), float(np.float16(np.float32(eta)))}
    else:
        with pytest.raises(OverflowError, match=r"^radial_shift: .*float16 \(65504\)"):
            geo.radial_shift(z, mu, eta)


@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_orthogonal_mix_overflow_raises(dtype):
    top, _, _ = LOW[dtype]
    x = torch.full((1, 8), top, dtype=dtype)
    with pytest.raises(OverflowError, match=r"^orthogonal_mix: sample 0 .*" + str(dtype)):
        geo.orthogonal_mix([x, x], [math.sqrt(0.5)])  # true result sqrt(2) x top


def test_float64_overflow_raises_instead_of_returning_inf():
    x = torch.full((2, 3), 1.5e308, dtype=torch.float64)
    x[1] = 1.0
    with pytest.raises(OverflowError, match=r"^orthogonal_mix: sample 0 has finite inputs .*float64"):
        geo.orthogonal_mix([x, x], [0.7])


# ------------------------------------------------------------------------------------ float64 extremes


@given(seed=seeds, log_scale=st.integers(-300, 300), w=st.floats(0.0, 1.0))
def test_finite_float64_extremes_give_finite_correct_results(seed, log_scale, w):
    # Entries of magnitude 10^log_scale: the plain sum of squares over- or underflows for
    # |log_scale| > 154, the rescaled evaluation does not. Expected values: the unit-scale
    # numpy results, scaled (angle is scale free).
    g = np.random.default_rng(seed)
    a1, b1 = g.standard_normal((2, 3, 64))
    c = 10.0**log_scale
    a, b = torch.from_numpy(a1 * c), torch.from_numpy(b1 * c)
    np.testing.assert_allclose(geo.norm(a).numpy() / c, np_norm(a.numpy() / c), rtol=1e-13)
    np.testing.assert_allclose(geo.angle(a, b).numpy(), np_angle(a1, b1), rtol=1e-12)
    np.testing.assert_allclose(geo.norm_gap(a, b).numpy() / c, np_norm_gap(a.numpy() / c, b.numpy() / c), rtol=1e-9)
    np.testing.assert_allclose(geo.slerp(a, b, w).numpy() / c, np_slerp(a.numpy() / c, b.numpy() / c, np.full(3, w)),
                               rtol=1e-9, atol=1e-9)
    eta = 0.5 * c
    np.testing.assert_allclose(
        geo.radial_shift(a, b, eta).numpy() / c, np_radial_shift(a.numpy() / c, b.numpy() / c, np.full(3, 0.5)),
        rtol=1e-9, atol=1e-12,
    )

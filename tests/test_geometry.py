"""Property tests of amdm_geom.core.geometry: slerp (eq. 6), chains (Algorithm 1), the earlier
version's orthogonal mix, the radial shift (eq. 7) and the measurements of Prop. 3.1.

Every expected value comes from an independent computation (numpy, a different formula, or a
basis in which the answer can be read off), never from the function under test."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from amdm_geom.core import geometry as geo
from tests.reference import ref_angle, ref_norm

seeds = st.integers(0, 2**32 - 1)
weights = st.floats(0.0, 1.0)
dims = st.sampled_from([2, 3, 7, 64, 1024, 16384])


def pair(seed, batch, n, dtype=torch.float64, equal_norms=False):
    g = np.random.default_rng(seed)
    a = g.standard_normal((batch, n)) * g.uniform(0.5, 3.0, (batch, 1))
    b = g.standard_normal((batch, n)) * g.uniform(0.5, 3.0, (batch, 1))
    if equal_norms:
        b *= np.linalg.norm(a, axis=1, keepdims=True) / np.linalg.norm(b, axis=1, keepdims=True)
    return torch.from_numpy(a).to(dtype), torch.from_numpy(b).to(dtype)


def ref_slerp(a, b, w):
    """Eq. (6) written out directly in numpy (acos-based angle; moderate angles only)."""
    a = a.numpy().reshape(len(a), -1)
    b = b.numpy().reshape(len(b), -1)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    phi = np.arccos(np.clip(cos, -1, 1))[:, None]
    w = np.asarray(w, dtype=np.float64).reshape(-1, 1)
    return np.sin((1 - w) * phi) / np.sin(phi) * a + np.sin(w * phi) / np.sin(phi) * b


# ------------------------------------------------------------------------------------ slerp


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@given(seed=seeds, n=dims)
def test_slerp_endpoints_are_exact(dtype, seed, n):
    a, b = pair(seed, 3, n, dtype)
    assert torch.equal(geo.slerp(a, b, 0.0), a)
    assert torch.equal(geo.slerp(a, b, 1.0), b)
    assert torch.equal(geo.slerp(a, b, torch.zeros(3)), a)


@given(seed=seeds, n=dims, w=weights)
def test_slerp_matches_eq6_written_out(seed, n, w):
    a, b = pair(seed, 4, n)
    got = geo.slerp(a, b, w).numpy()
    np.testing.assert_allclose(got, ref_slerp(a, b, np.full(4, w)), rtol=1e-9, atol=1e-9)


@given(seed=seeds, n=dims, w=weights)
def test_slerp_keeps_equal_norms(seed, n, w):
    a, b = pair(seed, 4, n, equal_norms=True)
    np.testing.assert_allclose(ref_norm(geo.slerp(a, b, w)), ref_norm(a), rtol=1e-12)


@given(seed=seeds, n=dims, w=weights)
def test_slerp_turns_by_w_phi_for_equal_norms(seed, n, w):
    a, b = pair(seed, 4, n, equal_norms=True)
    z = geo.slerp(a, b, w)
    phi = ref_angle(a, b)
    np.testing.assert_allclose(ref_angle(z, a), w * phi, atol=1e-10)
    np.testing.assert_allclose(ref_angle(z, b), (1 - w) * phi, atol=1e-10)


@given(seed=seeds, w=weights, r=st.floats(0.05, 20.0))
def test_slerp_with_unequal_norms_follows_the_plane_formula(seed, w, r):
    # Eq. (6) on raw vectors: in the plane of a (norm 1) and b (norm r) the result is
    # (ca + cb r cos phi, cb r sin phi), whose angle to a is not w phi unless r = 1.
    a, b = pair(seed, 1, 32)
    a = a / ref_norm(a)[0]
    b = b / ref_norm(b)[0] * r
    phi = ref_angle(a, b)[0]
    ca, cb = math.sin((1 - w) * phi) / math.sin(phi), math.sin(w * phi) / math.sin(phi)
    expected = math.atan2(cb * r * math.sin(phi), ca + cb * r * math.cos(phi))
    assert ref_angle(geo.slerp(a, b, w), a)[0] == pytest.approx(expected, abs=1e-10)


@given(seed=seeds, n=dims, w=weights)
def test_slerp_is_symmetric_under_swap(seed, n, w):
    a, b = pair(seed, 3, n)
    np.testing.assert_allclose(geo.slerp(a, b, w), geo.slerp(b, a, 1 - w), rtol=1e-12, atol=1e-12)


@given(seed=seeds, n=dims)
def test_slerp_sample_does_not_depend_on_batch_mates(seed, n):
    a, b = pair(seed, 5, n, torch.float32)
    w = torch.linspace(0.1, 0.9, 5)
    whole = geo.slerp(a, b, w)
    for i in range(5):
        alone = geo.slerp(a[i : i + 1], b[i : i + 1], w[i].item())
        assert torch.equal(whole[i : i + 1], alone)


@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 2e-3), (torch.float32, 3e-7), (torch.float64, 1e-12)])
@pytest.mark.parametrize("n", [2, 17, 1024, 16384])
def test_slerp_dtypes_and_dims(dtype, rtol, n):
    a, b = pair(n, 2, n, dtype)
    z = geo.slerp(a, b, 0.3)
    assert z.dtype == dtype and z.shape == a.shape
    assert torch.isfinite(z).all()  # a float16 sum of squares over 16384 entries would overflow
    ref = ref_slerp(a.to(torch.float64), b.to(torch.float64), np.full(2, 0.3))
    np.testing.assert_allclose(z.to(torch.float64).numpy(), ref, rtol=rtol * 4, atol=rtol * 8)


def test_slerp_accepts_image_latents_and_numpy():
    g = np.random.default_rng(1)
    a, b = g.standard_normal((2, 4, 8, 8)), g.standard_normal((2, 4, 8, 8))
    z = geo.slerp(a, b, 0.5)
    assert isinstance(z, np.ndarray) and z.shape == (2, 4, 8, 8)
    flat = ref_slerp(torch.from_numpy(a), torch.from_numpy(b), np.full(2, 0.5))
    np.testing.assert_allclose(z.reshape(2, -1), flat, rtol=1e-10)


@given(seed=seeds, w=weights, log_phi=st.floats(-12, -3))
def test_slerp_tiny_angles_fall_back_to_lerp(seed, w, log_phi):
    # Build b at an exact small angle phi from a; slerp must stay finite and approach lerp,
    # with |slerp - lerp| of order phi^2 |a| (the sinc ratios are 1 + O(phi^2)).
    g = np.random.default_rng(seed)
    a = g.standard_normal((1, 256))
    e = g.standard_normal((1, 256))
    e -= (e @ a.T) / (a @ a.T) * a
    e *= np.linalg.norm(a) / np.linalg.norm(e)
    phi = 10.0**log_phi
    b = math.cos(phi) * a + math.sin(phi) * e
    a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
    z = geo.slerp(a_t, b_t, w).numpy()
    lerp = (1 - w) * a + w * b
    assert np.isfinite(z).all()
    assert np.linalg.norm(z - lerp) <= phi**2 * np.linalg.norm(a) + 1e-13


def test_slerp_of_identical_inputs_is_the_input():
    a = torch.randn(3, 4, 4, 4, dtype=torch.float64)
    np.testing.assert_allclose(geo.slerp(a, a.clone(), 0.37), a, rtol=1e-15)


def test_slerp_refuses_antipodal_pairs_and_zero_vectors():
    a = torch.randn(2, 16, dtype=torch.float64)
    b = a.clone()
    b[1] = -2.0 * a[1]
    with pytest.raises(ValueError, match="sample 1 is antipodal"):
        geo.slerp(a, b, 0.5)
    z = a.clone()
    z[0] = 0.0
    with pytest.raises(ValueError, match="sample 0 has a zero-norm"):
        geo.slerp(z, a, 0.5)


@given(seed=seeds, n=st.sampled_from([2, 64, 4096]), k=st.integers(2, 5))
def test_slerp_chain_equals_nested_calls(seed, n, k):
    g = np.random.default_rng(seed)
    zs = [torch.from_numpy(g.standard_normal((3, n))) for _ in range(k)]
    ws = [float(w) for w in g.uniform(0, 1, k - 1)]
    nested = zs[0]
    for z, w in zip(zs[1:], ws):
        nested = geo.slerp(nested, z, w)
    assert torch.equal(geo.slerp_chain(zs, ws), nested)


# ------------------------------------------------------------------------------------ lerp


@given(seed=seeds, n=dims, w=weights)
def test_lerp_and_chain(seed, n, w):
    a, b = pair(seed, 3, n)
    np.testing.assert_allclose(geo.lerp(a, b, w), (1 - w) * a.numpy() + w * b.numpy(), rtol=1e-14)
    assert torch.equal(geo.lerp(a, b, 0.0), a) and torch.equal(geo.lerp(a, b, 1.0), b)
    c = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal((3, n)))
    expected = 0.25 * ((1 - w) * a.numpy() + w * b.numpy()) + 0.75 * c.numpy()
    np.testing.assert_allclose(geo.lerp_chain([a, b, c], [w, 0.75]), expected, rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------------------------ orthogonal mix


@pytest.mark.parametrize("ws", [[0.5], [0.5, 0.65], [0.3, 0.8, 0.6]])
def test_orthogonal_mix_weights_read_off_a_basis(ws):
    # With orthonormal basis vectors as inputs, the output's coordinates are the weights.
    n_models = len(ws) + 1
    zs = [torch.eye(n_models, dtype=torch.float64)[k][None] for k in range(n_models)]
    coeffs = geo.orthogonal_mix(zs, ws)[0].numpy()
    # model 1 gets w1 ... w_{N-1}; model k >= 2 gets sqrt(1 - w_{k-1}^2) w_k ... w_{N-1}
    expected = [np.prod(ws)] + [math.sqrt(1 - ws[k - 1] ** 2) * np.prod(ws[k:]) for k in range(1, n_models)]
    np.testing.assert_allclose(coeffs, expected, rtol=1e-14)
    assert np.sum(coeffs**2) == pytest.approx(1.0, abs=1e-14)
    if n_models >= 3:
        # the earlier version's printed Algorithm 2 gives the last model prod sqrt(1 - w_i^2)
        printed_last = np.prod([math.sqrt(1 - w**2) for w in ws])
        assert coeffs[-1] != pytest.approx(printed_last)


def test_orthogonal_mix_two_models_is_eq9_of_the_earlier_version():
    a, b = pair(3, 2, 10)
    np.testing.assert_allclose(
        geo.orthogonal_mix([a, b], [0.6]), 0.6 * a.numpy() + 0.8 * b.numpy(), rtol=1e-14
    )


# ------------------------------------------------------------------------------------ radial shift


@given(seed=seeds, n=dims, frac=st.floats(0.0, 0.999))
def test_radial_shift_moves_exactly_eta_along_the_ray(seed, n, frac):
    z, mu = pair(seed, 3, n)
    r = ref_norm(z - mu)
    eta = torch.from_numpy(frac * r)  # per sample, eta < |z - mu|
    out = geo.radial_shift(z, mu, eta).numpy().reshape(3, -1)
    d_old = (z - mu).numpy().reshape(3, -1)
    d_new = out - mu.numpy().reshape(3, -1)
    np.testing.assert_allclose(np.linalg.norm(d_new, axis=1), r - eta.numpy(), rtol=1e-11, atol=1e-11)
    # on the ray from mu through z: d_new = (1 - eta / r) d_old, a non-negative multiple
    np.testing.assert_allclose(d_new, (1 - eta.numpy() / r)[:, None] * d_old, rtol=1e-11, atol=1e-11)


def test_radial_shift_past_mu_and_at_mu():
    z = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    mu = torch.zeros_like(z)
    np.testing.assert_allclose(geo.radial_shift(z, mu, 7.0), [[-1.2, -1.6]], rtol=1e-15)
    same = torch.randn(2, 4, 8, 8, dtype=torch.float16)
    assert torch.equal(geo.radial_shift(same, same.clone(), 0.3), same)


def test_radial_shift_keeps_dtype():
    z, mu = pair(0, 2, 64, torch.float16)
    assert geo.radial_shift(z, mu, 0.3).dtype == torch.float16


# ------------------------------------------------------------------------------------ measurements


@given(seed=seeds, n=dims)
def test_angle_and_norm_gap_against_numpy(seed, n):
    a, b = pair(seed, 4, n, torch.float32)
    np.testing.assert_allclose(geo.angle(a, b), ref_angle(a, b), atol=1e-12)
    np.testing.assert_allclose(geo.norm_gap(a, b), np.abs(ref_norm(a) - ref_norm(b)), rtol=1e-9, atol=1e-12)
    assert geo.angle(a, b).dtype == torch.float64


@pytest.mark.parametrize("phi", [1e-9, 1e-6, 1e-4])
def test_angle_resolves_small_angles_that_acos_cannot(phi):
    a = torch.zeros(1, 3, dtype=torch.float64)
    a[0, 0] = 1.0
    b = torch.tensor([[math.cos(phi), math.sin(phi), 0.0]], dtype=torch.float64)
    assert geo.angle(a, b).item() == pytest.approx(phi, rel=1e-9)


def test_angle_is_nan_for_a_zero_sample():
    a = torch.zeros(1, 5)
    assert math.isnan(geo.angle(a, torch.ones(1, 5)).item())


@given(phi=st.floats(0.0, math.pi), w=weights)
def test_phi_w_is_the_sine_ratio_with_limit_one_minus_w(phi, w):
    got = geo.phi_w(phi, w)
    if phi > 1e-6:
        assert got == pytest.approx(math.sin((1 - w) * phi / 2) / math.sin(phi / 2), rel=1e-12, abs=1e-15)
    else:
        assert got == pytest.approx(1 - w, abs=1e-12)


def test_phi_w_kinds_and_domain():
    assert geo.phi_w(0.0, 0.3) == pytest.approx(0.7)
    t = geo.phi_w(torch.tensor([0.0, 1.0, 4.0]), 0.5)
    assert isinstance(t, torch.Tensor) and math.isnan(t[2].item())
    assert np.isnan(geo.phi_w(np.array([-0.1]), 0.5)[0])


@given(seed=seeds, n=dims, w=weights)
def test_chord_identity_of_eq33_for_equal_norms(seed, n, w):
    z1, z2 = pair(seed, 3, n, equal_norms=True)
    z = geo.slerp(z1, z2, w)
    chord = ref_norm(z - z2)
    np.testing.assert_allclose(chord, geo.phi_w(ref_angle(z1, z2), w) * ref_norm(z1 - z2), rtol=1e-9, atol=1e-11)


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda a, b: geo.slerp(a, b, 1.5), r"w must be in \[0, 1\]; got 1.5$"),
        (lambda a, b: geo.slerp(a, b, -0.1), r"w must be in \[0, 1\]; got -0.1$"),
        (lambda a, b: geo.slerp(a, b, torch.tensor([0.5, 1.5])), r"w must be in \[0, 1\]; got 1.5 \(sample 1\)"),
        (lambda a, b: geo.lerp(a, b, float("nan")), r"w must be in \[0, 1\]; got non-finite nan"),
        (lambda a, b: geo.slerp(a, b, torch.tensor([0.5, 0.5, 0.5])), r"w must be a float or have shape \(2,\)"),
        (lambda a, b: geo.slerp(a, b[:, :3], 0.5), r"same shape; got a=\(2, 4\), b=\(2, 3\)"),
        (lambda a, b: geo.radial_shift(a, b, -0.3), r"eta must be finite and >= 0; got -0.3$"),
        (lambda a, b: geo.radial_shift(a, b, math.inf), r"eta must be finite and >= 0; got non-finite inf"),
        (lambda a, b: geo.slerp_chain([a, b, a], [0.5]),
         r"needs len\(ws\) == len\(zs\) - 1 = 2 weights for 3 latents; got 1"),
        (lambda a, b: geo.orthogonal_mix([a, b], [0.5, 0.5]), r"got 2"),
        (lambda a, b: geo.slerp(a[0], b[0], 0.5), r"batch-first"),
        (lambda a, b: geo.phi_w(1.0, 2.0), r"w must be in \[0, 1\]; got 2.0"),
    ],
)
def test_one_line_errors(call, match):
    a, b = pair(0, 2, 4)
    with pytest.raises(ValueError, match=match) as info:
        call(a, b)
    assert "\n" not in str(info.value)


def test_integer_latents_are_refused():
    with pytest.raises(TypeError, match="floating dtype"):
        geo.norm(torch.ones(2, 3, dtype=torch.int64))


def test_per_sample_maximum_against_numpy():
    """``amax_abs`` (the one reduction behind finiteness, scales and zero norms) is numpy's
    max |x| per row: NaN wins over inf, inf over finite values, and an empty row gives 0."""
    from amdm_geom.core import latent64 as f64

    rows = np.array([[1.0, -3.0, 2.0], [np.nan, np.inf, 1.0], [-np.inf, 0.5, 0.0], [-0.0, 0.0, -0.0],
                     [5e-324, -1e-310, 0.0], [1e308, -1.7e308, 3.0]])
    got = f64.amax_abs(torch.from_numpy(rows)).numpy()
    np.testing.assert_array_equal(got, np.abs(rows).max(axis=1))
    assert f64.amax_abs(torch.zeros(3, 0, dtype=torch.float64)).tolist() == [0.0, 0.0, 0.0]
    assert f64.nonfinite(torch.from_numpy(rows)).tolist() == [False, True, True, False, False, False]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_latent_results_do_not_depend_on_the_batch_they_come_in(dtype):
    """Each sample's slerp, chain, shift and angle agree between a batch of 9 and chunks of 4 to
    the dtype's rounding (per-row reductions may block differently by batch size, so not always
    bit for bit), and a NaN sample stays confined to its own row: the sampler aggregates in
    chunks of rows."""
    g = torch.Generator().manual_seed(7)
    a, b, c = (torch.randn(9, 3, 5, 5, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))
    a[4, 0, 0, 0] = float("nan")
    w = torch.rand(9, generator=g, dtype=torch.float64)
    fns = [lambda i: geo.slerp(a[i], b[i], w[i]), lambda i: geo.slerp_chain([a[i], b[i], c[i]], [0.5, w[i]]),
           lambda i: geo.radial_shift(a[i], c[i], 0.3 * w[i]), lambda i: geo.angle(b[i], c[i])]
    for fn in fns:
        whole = fn(slice(None))
        chunks = torch.cat([fn(slice(j, j + 4)) for j in range(0, 9, 4)])
        assert whole.ndim == 1 or whole.isnan().flatten(1).all(1).tolist() == [i == 4 for i in range(9)]
        assert torch.equal(whole.isnan(), chunks.isnan())
        ulp = torch.finfo(whole.dtype).eps
        np.testing.assert_allclose(chunks.double().nan_to_num(), whole.double().nan_to_num(), rtol=4 * ulp, atol=0)

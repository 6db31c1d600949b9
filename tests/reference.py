"""Reference computations for the tests, written independently of amdm_geom."""

import numpy as np
import torch


def ref_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference angle, independent of amdm_geom: atan2 of the orthogonal and parallel parts
    of b relative to unit a, per sample, in float64 numpy."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    u = a / np.linalg.norm(a, axis=1, keepdims=True)
    v = b / np.linalg.norm(b, axis=1, keepdims=True)
    cos = np.sum(u * v, axis=1)
    sin = np.linalg.norm(v - cos[:, None] * u, axis=1)
    return np.arctan2(sin, cos)


def ref_norm(z) -> np.ndarray:
    z = z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)
    return np.linalg.norm(z.astype(np.float64).reshape(len(z), -1), axis=1)


def assert_same_datasets(a, b, rtol: float) -> None:
    """Two xarray Datasets alike: the same variables and coordinates, floats equal to ``rtol``
    relative (NaN where NaN; torch's vectorised kernels may round a batch's remainder differently),
    everything else exactly, and the same attrs."""
    assert set(a.variables) == set(b.variables)
    for name in a.variables:
        if a[name].dtype.kind == "f":
            np.testing.assert_allclose(a[name].values, b[name].values, rtol=rtol, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert a.attrs == b.attrs

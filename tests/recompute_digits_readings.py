"""Independent recomputations of the digits readings' verdict values (``analyses/digits/readings.py``),
from what ``digits_benchmark`` wrote under ``run.report / "digits_benchmark"``: functions ``(run, key)
-> float`` for tests/test_validate.py's ``RECOMPUTE`` map (``RECOMPUTE`` at the end).

- App. F.3: the relative L2 differences of the stored final samples, by numpy.
- Eqs. (27)-(28): the cosines by central finite differences of the Gaussian log density
  f(z) = -|z - mu(z)|^2 / 2 along two directions (the stored autograd gradient's and -(z - mu)),
  mu(z) from diffusers' own ``DDIMScheduler.step`` on the float64 networks: for the gradient g,
  D_u f = <g, u>, so D_{-r/|r|} f / D_{g/|g|} f is the cosine of g with -r when the stored
  direction is the gradient's (and differs from it otherwise). Under Algorithm 1's reading mu is
  fixed and |g| = |r| exactly, so the cosine is D_{-r/|r|} f / |r|.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import xarray as xr
from diffusers import DDIMScheduler

#: The finite-difference step along a unit direction (f is smooth; central differences err by O(H^2)).
H = 1e-4


def _open(run) -> xr.Dataset:
    return xr.open_zarr(run.report / "digits_benchmark" / "digits.zarr", consolidated=False).load()


def invariance_row(run, key):
    """The largest per-sample relative L2 difference of a re-expressed run's final samples from
    the v-prediction run's, over both re-expressions."""
    res = _open(run)
    names = [str(n) for n in res.readings_run.values]
    z0 = res.readings_z0.values.astype(np.float64)
    ref = z0[names.index("v_prediction")].reshape(z0.shape[1], -1)
    diffs = [np.linalg.norm(z0[j].reshape(len(ref), -1) - ref, axis=1) / np.linalg.norm(ref, axis=1)
             for j, n in enumerate(names) if n != "v_prediction"]
    return float(np.max(diffs))


def _nets_and_schedulers(res: xr.Dataset):
    from amdm_geom.analyses.digits.runs import conditions, targets
    from amdm_geom.models.digits import zoo

    batch, seed = res.sizes["readings_sample"], int(res.attrs["readings_seed"])
    tgt = targets(batch, seed)
    out = []
    for name in (str(m) for m in res.readings_model.values):
        net = copy.deepcopy(zoo.load_net(name)).double()
        sched = DDIMScheduler.from_config(zoo.load(name).scheduler.config)
        sched.set_timesteps(int(res.attrs["readings_steps"]))
        # the schedule's float32 values widened, so that the step's arithmetic is float64 throughout
        sched.alphas_cumprod = sched.alphas_cumprod.double()
        sched.final_alpha_cumprod = torch.as_tensor(sched.final_alpha_cumprod).double()
        out.append((net, sched, conditions(name, tgt)))
    return out


def _log_density(net, sched, cond, t: int):
    def f(z):
        out = net(z, torch.full((len(z),), t, dtype=torch.int64), cond)
        mu = sched.step(out, t, z, eta=0.0).prev_sample
        return -0.5 * ((z - mu) ** 2).flatten(1).sum(1), z - mu
    return f


def _derivative(f, z, u):
    return (f(z + H * u)[0] - f(z - H * u)[0]) / (2 * H)


def gradient_eq7_row(run, key):
    """The smallest cosine, over (model, step, sample), of the gradient of log N(z'; mu(z'), I) with
    -(z' - mu(z')) under eq. (7)'s reading, by finite differences along the stored gradient's
    direction and along -(z' - mu(z'))."""
    res = _open(run)
    cos = []
    with torch.no_grad():
        for i, (net, sched, cond) in enumerate(_nets_and_schedulers(res)):
            for j, t in enumerate(int(x) for x in res.readings_t.values):
                f = _log_density(net, sched, cond, t)
                z = torch.from_numpy(res.readings_z_agg.values[j].astype(np.float64))
                r = f(z)[1]
                g = torch.from_numpy(res.readings_grad_eq7.values[i, j].astype(np.float64))
                unit = lambda v: v / v.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)  # noqa: E731
                cos.append((_derivative(f, z, unit(-r)) / _derivative(f, z, unit(g))).numpy())
    return float(np.min(cos))


def gradient_alg1_row(run, key):
    """The smallest cosine of the gradient of log N(z'; mu(z_t^i), I) (mu fixed, Algorithm 1's
    reading) with -(z' - mu), by finite differences along -(z' - mu) over |z' - mu|."""
    res = _open(run)
    cos = []
    for i in range(res.sizes["readings_model"]):
        for j in range(res.sizes["readings_step"]):
            z = res.readings_z_agg.values[j].astype(np.float64).reshape(res.sizes["readings_sample"], -1)
            mu = res.readings_mu_alg1.values[i, j].astype(np.float64).reshape(z.shape)
            r = z - mu
            u = -r / np.linalg.norm(r, axis=1, keepdims=True)

            def f(x, mu=mu):
                return -0.5 * ((x - mu) ** 2).sum(1)
            cos.append((f(z + H * u) - f(z - H * u)) / (2 * H) / np.linalg.norm(r, axis=1))
    return float(np.min(cos))


RECOMPUTE = {"appf3_prediction_type_invariance": invariance_row, "eq28_gradient_eq7_reading": gradient_eq7_row,
             "eq28_gradient_alg1_reading": gradient_alg1_row}

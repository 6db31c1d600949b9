"""The commitment_trained analysis: the U-turn against the exact posterior (scipy), the x0-detector commitment
against a direct loop, the digits speciation against closed forms, the verdict rules each way, and a quick run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr
from diffusers import DDIMScheduler
from scipy import stats
from scipy.special import logsumexp

from amdm_geom.analyses.commitment import commitment_trained as ct
from amdm_geom.analyses.commitment import trained, uturn
from amdm_geom.core.stats import proportion_interval
from amdm_geom.models.gmm import fine_grained_family

# --------------------------------------------------------------------------------------------
# the U-turn on the exact GMM family


def _state_alpha_bar(scheduler, k: int, steps: int) -> float:
    """abar of state k from diffusers itself: the timestep DDIM step k starts from."""
    sched = DDIMScheduler.from_config(scheduler.config)
    sched.set_timesteps(steps)
    return float(sched.alphas_cumprod[int(sched.timesteps[k])])


def _posterior_of_original(z: np.ndarray, means: np.ndarray, s2: float, abar: float, pos: np.ndarray,
                           orig: np.ndarray) -> np.ndarray:
    """p(position = orig | z_t) under the uniform mixture, from scipy's Gaussian log densities."""
    v = abar * s2 + 1.0 - abar
    n = z.shape[1]
    logp = np.stack([stats.multivariate_normal.logpdf(z, mean=math.sqrt(abar) * m, cov=v * np.eye(n)) for m in means],
                    axis=1)
    post = np.exp(logp - logsumexp(logp, axis=1, keepdims=True))
    return np.where(pos[None, :] == orig[:, None], post, 0.0).sum(1)


def test_uturn_survival_is_the_exact_posterior():
    """Regenerated with eta_ddim = 1, a sample is a draw from p(x0 | z_t): the survival rate of its position must
    sit within its exact interval of the mean exact posterior of the original position at the z_t used; the
    posterior at another state's abar must not."""
    fam = fine_grained_family((16,), seed=0)
    model = fam.model(dtype=torch.float64)
    n, k, steps = 2000, 10, 50
    means, s2 = fam.mixture.means.numpy(), float(fam.mixture.variances[0, 0])
    pos = fam.mixture.labels["position"].numpy()
    rng = np.random.default_rng(1)
    x0 = torch.from_numpy(means[rng.integers(0, len(means), n)] + math.sqrt(s2) * rng.standard_normal((n, 16)))

    def read(x):  # the nearest component's position: the GMM's "detector"
        return pos[((x.numpy()[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)]

    seeds = [10_000 + b for b in range(n)]
    regen = uturn.uturn(model, fam.condition(), x0, k, seeds, steps=steps, ddim_eta=1.0)
    orig = read(x0)
    hits = int((read(regen) == orig).sum())
    lo, hi = proportion_interval(hits, n)
    abar = _state_alpha_bar(model.scheduler, k, steps)
    xi = np.stack([torch.randn(16, generator=torch.Generator().manual_seed(s)).double().numpy() for s in seeds])
    z = math.sqrt(abar) * x0.numpy() + math.sqrt(1.0 - abar) * xi  # the z_t the procedure says it used
    exact = _posterior_of_original(z, means, s2, abar, pos, orig).mean()
    assert 0.2 < exact < 0.8  # a state where the position is still open: the check has something to decide
    assert lo <= exact <= hi, (hits / n, (lo, hi), exact)
    for wrong in (k - 5, k + 5):  # the posterior at another state's abar is rejected by the same test
        other = _state_alpha_bar(model.scheduler, wrong, steps)
        p = _posterior_of_original(z, means, s2, other, pos, orig).mean()
        assert not lo <= p <= hi, (wrong, p, (lo, hi))


def test_uturn_repeats_per_seed():
    """The same seeds give the same U-turn, bit for bit; a different seed a different one."""
    fam = fine_grained_family((8,), seed=0)
    model = fam.model(dtype=torch.float64)
    x0 = fam.mixture.means[:3].clone()
    a = uturn.uturn(model, fam.condition(), x0, 30, [1, 2, 3], steps=50)
    b = uturn.uturn(model, fam.condition(), x0, 30, [1, 2, 3], steps=50)
    c = uturn.uturn(model, fam.condition(), x0, 30, [1, 2, 4], steps=50)
    assert torch.equal(a, b) and torch.equal(a[:2], c[:2]) and not torch.equal(a[2], c[2])


def test_uturn_bad_input():
    fam = fine_grained_family((8,), seed=0)
    model = fam.model(dtype=torch.float64)
    x0 = fam.mixture.means[:2].clone()
    for k in (-1, 50, 2.0, True):
        with pytest.raises(ValueError, match="k must be a state index in"):
            uturn.uturn(model, fam.condition(), x0, k, [1, 2], steps=50)
    with pytest.raises(ValueError, match="one seed per sample"):
        uturn.uturn(model, fam.condition(), x0, 5, [1], steps=50)
    with pytest.raises(ValueError, match="alpha_bar must be"):
        uturn.noised(x0, 0.0, [torch.Generator(), torch.Generator()])


# --------------------------------------------------------------------------------------------
# x0-detector commitment


def _loop_commit(path: list[int]) -> int:
    """The first state from which the reading stays equal to the last one, by walking back from the end."""
    k = len(path) - 1
    while k > 0 and path[k - 1] == path[-1]:
        k -= 1
    return k


def test_commitment_states_against_a_direct_loop():
    readings = np.array([  # (states 6, samples 4, attributes 2)
        [[0, 1], [2, -1], [3, 3], [1, 0]],
        [[1, 1], [2, 2], [3, 3], [1, 0]],
        [[0, 1], [2, 2], [3, 0], [1, 1]],
        [[1, 1], [2, 2], [3, 3], [1, 0]],
        [[1, 1], [2, 2], [3, 3], [1, 1]],
        [[1, 1], [2, 2], [3, 3], [0, 1]],
    ])
    got = trained.commitment_states(readings)
    want = np.array([[_loop_commit(list(readings[:, b, a])) for a in range(2)] for b in range(4)])
    np.testing.assert_array_equal(got, want)
    assert got.tolist() == [[3, 0], [0, 1], [0, 3], [5, 4]]  # by hand from the table above
    rng = np.random.default_rng(0)
    rand = rng.integers(-1, 3, (12, 40, 3))
    np.testing.assert_array_equal(
        trained.commitment_states(rand),
        [[_loop_commit(list(rand[:, b, a])) for a in range(3)] for b in range(40)])
    with pytest.raises(ValueError, match="readings must have shape"):
        trained.commitment_states(np.zeros((4, 2)))


def test_crossing():
    assert trained.crossing([10, 20, 30], [0.2, 0.4, 0.8]) == pytest.approx(20 + 10 * 0.1 / 0.4)
    assert math.isnan(trained.crossing([10, 20], [0.6, 0.9]))
    assert math.isnan(trained.crossing([10, 20], [0.1, 0.3]))


# --------------------------------------------------------------------------------------------
# speciation on data


def test_data_separation_two_classes_closed_form():
    """Classes +-m with within-class covariance exactly s^2 I (points c m +- s sqrt(n) e_j): between = |m|^2,
    Lambda = |m|^2 + s^2, u = +-m / |m|."""
    n, s = 6, 0.7
    m = np.array([1.5, -2.0, 0.5, 0.0, 1.0, 0.25])
    axes = np.concatenate([np.eye(n), -np.eye(n)]) * s * math.sqrt(n)
    x = np.concatenate([m + axes, -m + axes])
    labels = np.repeat([0, 1], 2 * n)
    got = trained.data_separation(x, labels)
    mm = float(m @ m)
    assert got.between == pytest.approx(mm, rel=1e-12)
    assert got.Lambda == pytest.approx(mm + s * s, rel=1e-12)
    assert got.within == pytest.approx(s * s, rel=1e-9)
    assert abs(float(got.u @ m)) / math.sqrt(mm) == pytest.approx(1.0, rel=1e-12)


def test_data_separation_against_dense_covariances():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 500)
    x = rng.standard_normal((500, 12)) + 2.0 * rng.standard_normal((4, 12))[labels]
    got = trained.data_separation(x.reshape(500, 3, 2, 2), labels)
    mean = x.mean(0)
    between = sum((labels == v).mean() * np.outer(x[labels == v].mean(0) - mean, x[labels == v].mean(0) - mean)
                  for v in range(4))
    lam, vec = np.linalg.eigh(between)
    u = vec[:, -1]
    assert got.between == pytest.approx(lam[-1], rel=1e-10)
    assert got.Lambda == pytest.approx(float(u @ np.cov(x.T, bias=True) @ u), rel=1e-10)
    with pytest.raises(ValueError, match="at least two classes"):
        trained.data_separation(x, np.zeros(500))


# --------------------------------------------------------------------------------------------
# the verdict rules on constructed results


def _constructed(position: np.ndarray, colour: np.ndarray, digit: np.ndarray, t_s: float = 1.0) -> xr.Dataset:
    """A result with one run ("digit") and the given commitment states, 51 states on the digits schedule."""
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
                          set_alpha_to_one=False)
    sched.set_timesteps(50)
    abar = np.append(sched.alphas_cumprod[sched.timesteps].double().numpy(), float(sched.final_alpha_cumprod))
    commit = np.stack([position, colour, digit])[None]
    B = commit.shape[-1]
    ds = xr.Dataset({"commit": (("run", "attribute", "sample"), commit),
                     "uturn_cross": (("model", "attribute"), np.full((1, 3), np.nan))},
                    coords={"run": ["digit"], "attribute": list(trained.ATTRIBUTES), "sample": np.arange(B),
                            "state": np.arange(51), "model": ["digit"], "ou_time": ("state", -0.5 * np.log(abar))})
    for v in ("t_S", "Lambda", "abar_S", "timestep_S", "index_S"):
        ds[v] = ("attribute", np.full(3, t_s if v == "t_S" else 1.0))
    ds.attrs.update({"steps": 50, "late": 0.8, "data_n": 10, "data_seed": 0,
                     "speciation_runs": '{"position": "digit", "colour": "digit", "digit": "digit"}'})
    return ds


def test_order_verdict_each_way():
    B = 40
    early, late = np.full(B, 5), np.full(B, 30)
    assert ct.order_verdict(_constructed(early, early, late), "position", "digit").status == "holds"
    v = ct.order_verdict(_constructed(late, early, early), "position", "digit")
    assert v.status == "violated" and v.value == 0.0 and v.n == B
    mixed = np.where(np.arange(B) % 2 == 0, 5, 30)
    v = ct.order_verdict(_constructed(mixed, early, np.full(B, 20)), "position", "digit")
    assert v.status == "inconclusive" and v.value == 0.5
    v = ct.order_verdict(_constructed(early, early, early), "colour", "digit")  # every sample tied
    assert v.status == "inconclusive" and v.n == 0
    # ties are dropped: 3 untied, all earlier, is too few to decide (exact interval [0.29, 1])
    few = np.where(np.arange(B) < 3, 5, 30)
    v = ct.order_verdict(_constructed(few, early, np.full(B, 30)), "position", "digit")
    assert v.status == "inconclusive" and v.n == 3 and v.interval[0] < 0.5


def test_late_verdict_each_way():
    B = 30
    assert ct.late_verdict(_constructed(np.full(B, 40), np.zeros(B, int), np.zeros(B, int)), "position",
                           "digit").status == "holds"  # state 40 = 0.8 T counts as committed
    v = ct.late_verdict(_constructed(np.full(B, 41), np.zeros(B, int), np.zeros(B, int)), "position", "digit")
    assert v.status == "violated" and v.value == 0.0
    half = np.where(np.arange(B) % 2 == 0, 10, 45)
    assert ct.late_verdict(_constructed(half, half, half), "colour", "digit").status == "inconclusive"


def test_speciation_finding_each_way():
    B = 200
    ks = np.arange(B) % 21 + 10  # states 10 .. 30, spread evenly
    ds = _constructed(ks, ks, ks)
    ou = ds.ou_time.values
    inside = _constructed(ks, ks, ks, t_s=float(ou[20]))
    assert ct.speciation_finding(inside, "position").status == "holds"
    far = _constructed(ks, ks, ks, t_s=float(ou[1]))
    v = ct.speciation_finding(far, "colour")
    assert v.status == "violated" and v.key == "commitment_trained_speciation_colour"
    assert ct.speciation_finding(_constructed(ks, ks, ks, t_s=-0.1), "digit").status == "outside domain"


# --------------------------------------------------------------------------------------------
# end to end


def test_x0_hook_is_the_v_prediction_x0():
    """The x0 the readings use is sqrt(abar) z - sqrt(1 - abar) v, unclipped, from the model's own output."""
    from amdm_geom.models.digits import zoo
    from amdm_geom.sampling import AMDMSampler

    model = zoo.load("colour", clip_sample=False)
    cond = trained.conditions("colour", trained.targets(2, 0))
    with torch.no_grad():
        _, ds = AMDMSampler([model], [cond], {"steps": 50, "weights": ()}).run_with_cache(
            [0, 1], names_filter=["model0.z", "model0.x0"])
        sched = DDIMScheduler.from_config(model.scheduler.config)
        sched.set_timesteps(50)
        for k in (0, 25, 49):
            z = torch.from_numpy(ds.z.isel(step=k, model=0).values)
            t = int(sched.timesteps[k])
            v = model(z, t, cond).double()
            abar = float(sched.alphas_cumprod[t])
            want = math.sqrt(abar) * z.double() - math.sqrt(1 - abar) * v
            np.testing.assert_allclose(ds.x0.isel(step=k, model=0).values, want.numpy(), atol=1e-5, rtol=1e-5)
    assert float(np.abs(ds.x0.isel(step=0, model=0).values).max()) > 1.0  # unclipped: early x0 leaves [-1, 1]


def test_quick_run_end_to_end():
    import matplotlib.pyplot as plt

    ds = ct.compute(quick=True)
    S, B = ds.sizes["state"], ds.sizes["sample"]
    assert S == 51 and B == ct.SETTINGS[True]["batch"]
    for r in ds.run.values:  # commit states again, by the direct loop on the stored readings
        for j, a in enumerate(ds.attribute.values):
            got = ds.commit.sel(run=r, attribute=a).values
            path = ds.reading.sel(run=r).values[:, :, j]
            assert got.tolist() == [_loop_commit(list(path[:, b])) for b in range(B)]
    for m in ds.model.values:  # survival recounted from the stored readings
        before = ds.reading.sel(run=m).isel(state=-1).values[: ds.sizes["usample"]]
        after = ds.uturn_reading.sel(model=m).values
        np.testing.assert_array_equal(ds.uturn_hits.sel(model=m).values, (after == before[None]).sum(1))
    vs = ct.verdicts(ds)
    keys = [v.key for v in vs]
    assert len(keys) == len(set(keys)) == 4 * 2 * 2 + 3
    assert all(k.startswith("commitment_trained_") for k in keys)
    assert {v.kind for v in vs} == {"paper claim", "finding"}
    tables = ct.tables(ds)
    assert set(tables) == {"commitment", "uturn", "speciation"} and len(tables["uturn"]) == 3 * 3 * ds.sizes["k"]
    figs = ct.plot(ds)
    assert set(figs) == {"commitment_trained"}
    for f in figs.values():
        plt.close(f)
    with pytest.raises(ValueError, match="takes no stores"):
        ct.compute({"x": None})
    with pytest.raises(ValueError, match="seed must be an int"):
        ct.compute(seed=-1)

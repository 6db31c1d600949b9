"""The digits ecosystem: the rendered data, the detectors on ground truth, the training path (a
few steps), the command line, and the shipped weights against their recorded hashes."""

import json

import numpy as np
import pytest
import torch

from amdm_geom.models.digits import data, detectors, zoo
from amdm_geom.models.digits.net import DigitsDenoiser, DigitsNet, as_condition, null_condition
from amdm_geom.models.digits.train import ECOSYSTEM, TrainSpec, file_sha256, scheduler_of, train, train_ecosystem


def test_rendering_places_the_tinted_digit_in_its_quadrant():
    ink, cls = data.digit_images("test")
    img = data.render(ink[:3], np.array([0, 1, 3]), np.array([2, 0, 3]))
    assert img.shape == (3, 3, 16, 16) and img.dtype == np.float32
    # independently: the quadrant holds -1 + 2 rgb ink, the rest is black
    for k, (pos, col) in enumerate([(0, 2), (1, 0), (3, 3)]):
        r, c = (pos // 2) * 8, (pos % 2) * 8
        for ch in range(3):
            np.testing.assert_allclose(img[k, ch, r:r + 8, c:c + 8], -1 + 2 * data.PALETTE[col, ch] * ink[k], atol=1e-6)
        mask = np.ones((16, 16), bool)
        mask[r:r + 8, c:c + 8] = False
        assert (img[k][:, mask] == -1).all()


def test_the_data_set_is_deterministic_and_its_hash_tells_seeds_apart():
    a, b, c = data.make_dataset(64, seed=3), data.make_dataset(64, seed=3), data.make_dataset(64, seed=4)
    assert a.sha256 == b.sha256 != c.sha256
    assert a.labels.shape == (64, 3) and set(np.unique(a.position)) <= {0, 1, 2, 3}
    train_ink, _ = data.digit_images("train")
    test_ink, _ = data.digit_images("test")
    assert len(train_ink) + len(test_ink) == 1797 and len(test_ink) == data.TEST_COUNT
    # the two splits share no digit image
    assert not ({x.tobytes() for x in train_ink} & {x.tobytes() for x in test_ink})
    with pytest.raises(ValueError, match="split must be 'train' or 'test'; got 'val'"):
        data.digit_images("val")


def test_detectors_read_rendered_ground_truth():
    ds = data.make_dataset(1000, seed=7, split="test")  # digits the classifier never saw
    got = detectors.detect(ds.images)
    acc = (got == ds.labels).mean(0)
    print(f"detector accuracy on rendered test digits: position {acc[0]:.4f}, colour {acc[1]:.4f}, "
          f"digit {acc[2]:.4f}")
    assert acc[0] >= 0.99 and acc[1] >= 0.99 and acc[2] >= 0.95
    blank = -np.ones((2, 3, 16, 16), np.float32)
    assert (detectors.detect(blank) == -1).all()
    with pytest.raises(ValueError, match=r"images must have shape \(N, 3, 16, 16\); got \(2, 16, 16\)"):
        detectors.detect(blank[:, 0])


def test_conditions_and_the_denoiser():
    assert as_condition(position=2).tolist() == [[2, -1, -1]]
    assert null_condition(2).tolist() == [[-1, -1, -1]] * 2
    with pytest.raises(ValueError, match=r"colour must be an int in \[0, 3\] or None; got 4"):
        as_condition(colour=4)
    torch.manual_seed(0)
    net = DigitsNet().eval()
    sched = scheduler_of(TrainSpec(name="x"))
    z = torch.randn(3, 3, 16, 16)
    plain = DigitsDenoiser(net, sched)
    cond = as_condition(position=1, colour=2)
    with torch.no_grad():
        direct_c = net(z, torch.full((3,), 500), cond.expand(3, -1))
        direct_u = net(z, torch.full((3,), 500), null_condition(3))
    assert torch.equal(plain(z, 500, cond), direct_c)
    guided = DigitsDenoiser(net, sched, guidance_scale=3.0)(z, 500, cond)
    torch.testing.assert_close(guided, direct_u + 3.0 * (direct_c - direct_u), rtol=1e-5, atol=1e-5)
    assert sched.config.prediction_type == "v_prediction" and sched.config.clip_sample


def test_training_a_few_steps_is_deterministic_and_records_its_provenance(tmp_path):
    spec = TrainSpec(name="tiny", steps=3, batch=4, warmup=1, data_size=32)
    a = train(spec, tmp_path / "a", progress=False, log_every=1)
    b = train(spec, tmp_path / "b", progress=False, log_every=1)
    assert a.read_bytes() == b.read_bytes()
    meta = json.loads((tmp_path / "a" / "tiny.json").read_text())
    assert meta["weights_sha256"] == file_sha256(a)
    assert meta["data_sha256"] == data.make_dataset(32, 0).sha256
    assert [k for k, _ in meta["loss_curve"]] == [1, 2, 3] and all(np.isfinite([v for _, v in meta["loss_curve"]]))
    # a fine-tune starts from the named model's weights and records its hash
    ft = TrainSpec(name="ft", init="tiny", attributes=("colour",), steps=2, batch=4, warmup=1, data_size=32)
    train(ft, tmp_path / "a", progress=False)
    assert json.loads((tmp_path / "a" / "ft.json").read_text())["init_sha256"] == meta["weights_sha256"]
    other = zoo.load("ft", folder=tmp_path / "a")
    assert other.attributes == ("colour",) and other.scheduler.config.prediction_type == "v_prediction"
    with pytest.raises(FileNotFoundError, match="train it first"):
        train(TrainSpec(name="z", init="missing", steps=1), tmp_path / "c", progress=False)


@pytest.mark.slow  # (an extra: 10 s of real training steps in two processes)
def test_the_ecosystem_plan_runs_dependencies_first(tmp_path):
    specs = (TrainSpec(name="ft", init="b0", steps=1, batch=2, data_size=8, warmup=0),
             TrainSpec(name="b0", steps=1, batch=2, data_size=8, warmup=0))
    logged = []
    done = train_ecosystem(tmp_path, specs=specs, workers=2, log=logged.append, progress=False)
    assert set(done) == {"b0", "ft"} and logged.index("  training b0 (1 steps, from scratch)") < \
        logged.index("  training ft (1 steps, from b0)")
    with pytest.raises(ValueError, match="unknown model"):
        train_ecosystem(tmp_path, specs=specs, only=("nope",))


@pytest.mark.parametrize("name", [s.name for s in ECOSYSTEM])
def test_the_shipped_weights_match_their_recorded_hashes(name):
    meta = zoo.metadata(name)
    zoo.verify(name)  # raises if the file's sha256 differs from the recorded one
    assert (zoo.WEIGHTS / f"{name}.safetensors").stat().st_size < 2 * 2**20
    spec = TrainSpec.model_validate(meta["spec"])
    assert spec == next(s for s in ECOSYSTEM if s.name == name)  # shipped = the config in the code
    assert meta["data_sha256"] == data.make_dataset(spec.data_size, spec.data_seed).sha256
    if spec.init != "scratch":
        assert meta["init_sha256"] == zoo.metadata(spec.init)["weights_sha256"]
    model = zoo.load(name)
    assert model.attributes == spec.attributes


def test_the_ecosystem_check_tells_the_other_schedule_model_apart():
    from amdm_geom.models.ecosystem import check_denoisers

    same = check_denoisers(zoo.load("position"), zoo.load("colour"), batch=4)
    other = check_denoisers(zoo.load("position"), zoo.load("position_linear"), batch=4)
    assert same.verdict == "same" and other.verdict == "different"
    assert other.checks["sde"]["same"] is False and same.checks["data_space"]["same"] is True
    # the two fine-tunes take different attributes: their proximity is measured unconditionally
    assert same.proximity_kind == "unconditional"
    assert all(np.isfinite(v) and v > 0 for v in same.proximity.values())


def test_the_specs_list_the_ecosystem_as_trained():
    from amdm_geom.models.digits.specs import DIGITS_MODELS, MODEL_ATTRIBUTES

    assert MODEL_ATTRIBUTES == {s.name: s.attributes for s in ECOSYSTEM}
    assert DIGITS_MODELS == zoo.names()

"""Every bad command-line input is refused before any work: one line on stderr,
``amdm-geom COMMAND: error: ...`` naming the option and the bad value, exit code 2, no
traceback, and no file or folder created (the outputs all point into the test's folder, which
is also the working directory)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amdm_geom.app import cli

SMALL = ["--steps", "2", "--batch", "1", "--no-progress"]
CUDA = torch.cuda.is_available()


def gmm(*extra):
    return lambda d: ["probe", "gmm_pair", *SMALL, "--latent-shape", "4", "8", "8", "--out", str(d / "run.zarr"),
                      *extra]


def cross(*extra):
    return lambda d: ["probe", "gmm_cross_ecosystem", *SMALL, "--latent-shape", "8", "--out", str(d / "run.zarr"),
                      *extra]


def unet(*extra):
    return lambda d: ["probe", "unet_pair", *SMALL, "--sample-size", "8", "--channels", "8", "16",
                      "--out", str(d / "run.zarr"), *extra]


def sd(*extra):  # --model-a.path exists (an empty folder): every check below comes before loading it
    return lambda d: ["probe", "sd", "--model-a.path", str(d / "model"), "--prompt", "x", *SMALL,
                      "--out", str(d / "run.zarr"), *extra]


def validate(*extra):
    return lambda d: ["validate", "--quick", "--runs", str(d / "runs"), "--report", str(d / "report"), *extra]


def ecosystem(*extra):
    return lambda d: ["ecosystem", str(d / "model"), str(d / "model"), *extra]


def no_cuda(case):
    """A case that needs a machine without CUDA (there, --device cuda is valid)."""
    return pytest.param(*case.values, id=case.id, marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA"))


def case(name, make, expected):
    return pytest.param(make, expected, id=name)


# (id, argv from the test folder, what the one error line must contain: the option and the bad value)
CASES = [
    # latent and image shapes
    ("latent-shape-zero", gmm("--latent-shape", "0", "8", "8"), ["--latent-shape", "0", "int >= 1"]),
    ("latent-shape-negative", gmm("--latent-shape", "-4", "8", "8"), ["--latent-shape", "-4"]),
    ("latent-shape-float", gmm("--latent-shape", "4", "8.5", "8"), ["--latent-shape", "8.5"]),
    ("unet-sample-size-zero", unet("--sample-size", "0"), ["--sample-size", "0"]),
    ("unet-channels-one", unet("--channels", "8"), ["--channels", "8", "two or more"]),
    ("unet-channels-odd", unet("--channels", "3", "6"), ["--channels", "3 6"]),
    ("unet-dtype", unet("--dtype", "float64"), ["--dtype", "float64"]),
    ("sd-height-negative", sd("--model-a.height", "-64"), ["--model-a.height", "-64", "multiple of 8"]),
    ("sd-height-zero", sd("--model-a.height", "0"), ["--model-a.height", "0"]),
    ("sd-width-not-multiple", sd("--model-a.width", "60"), ["--model-a.width", "60"]),
    # devices
    no_cuda(case("sd-device-cuda", sd("--model-a.device", "cuda"),
                 ["--model-a.device", "cuda", "CPU build", "available here: cpu"])),
    ("sd-device-tpu", sd("--model-a.device", "tpu"), ["--model-a.device", "tpu", "cpu, cuda, cuda:N or mps"]),
    ("sd-device-cuda-99", sd("--model-a.device", "cuda:99"), ["--model-a.device", "cuda:99"]),
    no_cuda(case("ecosystem-device-cuda", ecosystem("--device", "cuda"), ["--device", "cuda"])),
    ("ecosystem-device-tpu", ecosystem("--device", "tpu"), ["--device", "tpu"]),
    # float options: finite and in range
    ("gmm-separation-nan", gmm("--separation", "nan"), ["--separation", "nan", "finite"]),
    ("gmm-separation-negative", gmm("--separation", "-1"), ["--separation", "-1"]),
    ("gmm-guidance-nan", gmm("--guidance", "nan"), ["--guidance", "nan"]),
    ("gmm-guidance-inf", gmm("--guidance", "inf"), ["--guidance", "inf"]),
    ("gmm-perturb-nan", gmm("--perturb", "nan"), ["--perturb", "nan"]),
    ("gmm-perturb-negative", gmm("--perturb", "-0.1"), ["--perturb", "-0.1"]),
    ("gmm-component-std-zero", gmm("--component-std", "0"), ["--component-std", "0", "> 0"]),
    ("gmm-strength-zero", gmm("--strength", "0"), ["--strength", "0", "(0, 1]"]),
    ("gmm-strength-above-one", gmm("--strength", "1.5"), ["--strength", "1.5"]),
    ("gmm-w-nan", gmm("--w", "nan"), ["--w", "nan", "[0, 1]"]),
    ("gmm-w-above-one", gmm("--w", "1.5"), ["--w", "1.5"]),
    ("gmm-eta-inf", gmm("--eta", "inf"), ["--eta", "inf"]),
    ("gmm-eta-negative", gmm("--eta", "-0.3"), ["--eta", "-0.3"]),
    ("gmm-ddim-eta-nan", gmm("--ddim-eta", "nan"), ["--ddim-eta", "nan"]),
    ("gmm-ddim-eta-text", gmm("--ddim-eta", "one"), ["--ddim-eta", "one"]),
    ("unet-scale-nan", unet("--scale", "nan"), ["--scale", "nan"]),
    ("unet-guidance-minus-inf", unet("--guidance", "-inf"), ["--guidance", "-inf"]),
    ("gmm-eta-minus-exponent", gmm("--eta", "-1e-3"), ["--eta", "-1e-3"]),
    ("gmm-w-minus-nan", gmm("--w", "-nan"), ["--w", "-nan"]),
    ("unet-cond-distance-negative", unet("--cond-distance", "-1"), ["--cond-distance", "-1"]),
    ("sd-guidance-nan", sd("--model-a.guidance", "nan"), ["--model-a.guidance", "nan"]),
    ("sd-lora-scale-inf", sd("--model-a.lora-scale", "inf"), ["--model-a.lora-scale", "inf"]),
    ("sd-gligen-beta", sd("--model-a.gligen-beta", "2"), ["--model-a.gligen-beta", "2"]),
    ("sd-ip-adapter-scale-nan", sd("--model-a.ip-adapter-scale", "nan"), ["--model-a.ip-adapter-scale", "nan"]),
    ("sd-gligen-box-outside", sd("--gligen-boxes", "0.1", "0.1", "0.5", "1.5", "--gligen-phrases", "a"),
     ["--gligen-boxes", "1.5"]),
    ("sd-gligen-box-inverted", sd("--gligen-boxes", "0.5", "0.5", "0.1", "0.9", "--gligen-phrases", "a"),
     ["--gligen-boxes", "0.5 0.5 0.1 0.9"]),
    ("sd-gligen-phrases-count", sd("--gligen-boxes", "0.1", "0.1", "0.5", "0.5", "--gligen-phrases", "a", "b"),
     ["--gligen-phrases", "got 2"]),
    ("sd-prompt-b-without-model-b", sd("--prompt-b", "y"), ["--prompt-b", "--model-b.path"]),
    # integers and the sampler's window
    ("steps-zero", gmm("--steps", "0"), ["--steps", "0"]),
    ("steps-above-training", gmm("--steps", "2000"), ["--steps", "2000", "1000"]),
    ("batch-zero", gmm("--batch", "0"), ["--batch", "0"]),
    ("agg-steps-above-steps", gmm("--steps", "4", "--agg-steps", "30"), ["--agg-steps", "30", "[0, 4]"]),
    ("agg-window-reversed", gmm("--agg-window", "2", "1"), ["--agg-window", "2 1"]),
    ("agg-window-past-steps", gmm("--agg-window", "0", "9"), ["--agg-window", "0 9"]),
    ("agg-steps-and-window", gmm("--agg-steps", "1", "--agg-window", "0", "1"), ["--agg-window", "--agg-steps"]),
    ("w-count", gmm("--w", "0.5", "0.5"), ["--w", "0.5 0.5", "1 weight"]),
    ("eta-count", gmm("--eta", "0.1", "0.2", "0.3"), ["--eta", "0.1 0.2 0.3"]),
    ("position-out-of-range", gmm("--position", "4"), ["--position", "4", "[0, 4)"]),
    ("colour-out-of-range", gmm("--colours", "2", "--colour", "2"), ["--colour", "2"]),
    ("positions-zero", gmm("--positions", "0"), ["--positions", "0"]),
    ("family-seed-negative", gmm("--family-seed", "-1"), ["--family-seed", "-1"]),
    ("cross-schedule-b", cross("--schedule-b", "vp"), ["--schedule-b", "vp"]),
    ("unknown-option", gmm("--bogus"), ["--bogus"]),
    # seeds
    ("seed-negative", gmm("--seed", "-1"), ["--seed", "-1", "[0, 2**63)"]),
    ("seed-plus-batch", gmm("--seed", str(2**63 - 1), "--batch", "2"), ["--seed", str(2**63 - 1), "--batch 2"]),
    ("seed-text", gmm("--seed", "x"), ["--seed", "got x"]),
    ("unet-model-seed-negative", unet("--model-seed", "-5"), ["--model-seed", "-5"]),
    ("validate-seed-negative", validate("--seed", "-1"), ["--seed", "-1"]),
    ("validate-seed-too-large", validate("--seed", str(2**63 - 1)), ["--seed", str(2**63 - 1)]),
    # hooks
    ("names-match-nothing", gmm("--names", "nothing*"), ["--names", "'nothing*'", "model0.z", "agg.z"]),
    ("names-one-typo", gmm("--names", "model0.z", "model0.zz"), ["--names", "'model0.zz'"]),
    ("names-agg-without-window", gmm("--agg-steps", "0", "--names", "agg.z"), ["--names", "'agg.z'"]),
    # paths: checked before any work
    ("validate-json-missing-folder", validate("--json", "/nonexistent/dir/v.json"),
     ["--json", "/nonexistent/dir/v.json", "does not exist"]),
    ("validate-json-missing-local-folder", lambda d: validate("--json", str(d / "missing" / "v.json"))(d),
     ["--json", "missing/v.json"]),
    ("validate-json-is-folder", lambda d: validate("--json", str(d / "model"))(d), ["--json", "is a folder"]),
    ("validate-report-is-file", lambda d: ["validate", "--runs", str(d / "runs"), "--report", str(d / "file")],
     ["--report", "file", "not a folder"]),
    ("validate-runs-under-file", lambda d: ["validate", "--runs", str(d / "file" / "runs"),
                                            "--report", str(d / "report")], ["--runs", "file/runs"]),
    ("validate-runs-hold-a-foreign-folder", lambda d: ["validate", "--quick", "--runs", str(d / "taken"),
                                                       "--report", str(d / "report")],
     ["refusing to overwrite", "taken/gmm_pair.zarr", "not an amdm-geom trace store"]),
    ("probe-out-exists", gmm(), ["run.zarr", "exists", "--out"]),
    ("probe-out-under-file", lambda d: gmm("--out", str(d / "file" / "run.zarr"))(d),
     ["file/run.zarr", "not a folder"]),
    ("sd-model-missing", lambda d: ["probe", "sd", "--model-a.path", str(d / "missing"), "--prompt", "x", *SMALL,
                                    "--out", str(d / "run.zarr")], ["--model-a.path", "missing"]),
    ("sd-ip-adapter-image-alone", lambda d: sd("--ip-adapter-image", str(d / "model"))(d),
     ["--ip-adapter-image", "--model-a.ip-adapter"]),
    ("ecosystem-path-missing", lambda d: ["ecosystem", str(d / "missing"), str(d / "model")],
     ["PATH_A", "missing"]),
    ("ecosystem-json-missing-folder", ecosystem("--json", "/nonexistent/dir/e.json"), ["--json", "/nonexistent/dir"]),
    ("analyze-out-under-file", lambda d: ["analyze", "trace_checks", str(d / "a" / "x.zarr"),
                                          "--out", str(d / "file" / "report")], ["--out", "file/report"]),
    ("analyze-same-store-name", lambda d: ["analyze", "trace_checks", str(d / "a" / "x.zarr"), str(d / "b" / "x.zarr"),
                                           "--out", str(d / "report")], ["two stores are named x", "a/x.zarr"]),
    ("analyze-toy-mixture-store", lambda d: ["analyze", "toy_mixture", str(d / "a" / "x.zarr"),
                                             "--out", str(d / "report")], ["toy_mixture", "takes no stores"]),
    ("analyze-not-a-store", lambda d: ["analyze", "trace_checks", str(d / "model"), "--out", str(d / "report")],
     ["no trace store", "model"]),
    ("analyze-unknown", lambda d: ["analyze", "nope"], ["ANALYSIS", "nope"]),
    ("probe-unknown", lambda d: ["probe", "nope", "--out", str(d / "new.zarr")], ["NAME", "nope", "gmm_pair"]),
    # rerun: the store must be a trace store that keeps its spec
    ("rerun-missing-store", lambda d: ["rerun", str(d / "missing.zarr")], ["STORE", "missing.zarr"]),
    ("rerun-foreign-store", lambda d: ["rerun", str(d / "a" / "x.zarr"), "--out", str(d / "y.zarr")],
     ["a/x.zarr", "not an amdm-geom trace store"]),
    ("rerun-option-without-value", lambda d: ["rerun", str(d / "a" / "x.zarr"), "--out"], ["--out"]),
    # train: the ecosystem, its models and the workers
    ("train-unknown-ecosystem", lambda d: ["train", "cifar", "--out", str(d / "w")], ["ECOSYSTEM", "cifar"]),
    ("train-unknown-model", lambda d: ["train", "digits", "--only", "foo", "--out", str(d / "w")],
     ["--only", "position_scratch", "foo"]),
    ("train-no-workers", lambda d: ["train", "digits", "--workers", "0", "--out", str(d / "w")], ["--workers", "0"]),
    ("train-out-under-file", lambda d: ["train", "digits", "--out", str(d / "file" / "w")], ["--out", "file/w"]),
    # digits_pair: the models and the target
    ("digits-unknown-model", lambda d: ["probe", "digits_pair", "--models", "position", "nope",
                                        "--out", str(d / "new.zarr")], ["--models", "nope"]),
    ("digits-bad-digit", lambda d: ["probe", "digits_pair", "--digit", "10", "--out", str(d / "new.zarr")],
     ["--digit", "[0, 9]", "10"]),
]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """The test's folder as the working directory, with an (empty) model folder, a plain file,
    folders where stores would go, and two stub stores of one name."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "run.zarr").mkdir()
    (tmp_path / "taken" / "gmm_pair.zarr").mkdir(parents=True)  # a user's folder where validate writes a store
    (tmp_path / "taken" / "gmm_pair.zarr" / "notes.txt").write_text("keep me")
    for parent in ("a", "b"):
        (tmp_path / parent / "x.zarr").mkdir(parents=True)
        (tmp_path / parent / "x.zarr" / "zarr.json").write_text("{}")
    return tmp_path


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def check_one_line(err: str, command: str, expected: list[str]) -> str:
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    line = err.rstrip("\n")
    assert line.startswith(f"amdm-geom {command}: error: "), line
    for text in expected:
        assert text in line, (text, line)
    return line


@pytest.mark.parametrize("make,expected", [c if hasattr(c, "marks") else case(*c) for c in CASES])
def test_bad_input_is_one_line_before_any_work(folder, capsys, make, expected):
    argv = make(folder)
    before = listing(folder)
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    check_one_line(err, argv[0], expected)
    assert out == ""
    assert listing(folder) == before  # nothing created, not even a folder


@pytest.mark.parametrize("argv,expected", [
    (gmm("--latent-shape", "0", "8", "8"), ["--latent-shape", "0"]),
    # (the other two are extras: the same path through the installed script, 6-8 s each)
    pytest.param(validate("--json", "/nonexistent/dir/v.json"), ["--json", "/nonexistent/dir/v.json"],
                 marks=pytest.mark.slow),
    pytest.param(sd("--model-a.guidance", "nan"), ["--model-a.guidance", "nan"], marks=pytest.mark.slow),
], ids=["latent-shape", "validate-json", "sd-guidance"])
def test_the_installed_command_prints_one_line_and_no_traceback(folder, argv, expected):
    exe = Path(sys.executable).with_name("amdm-geom")
    if not exe.exists():
        pytest.skip(f"no {exe}")
    args = argv(folder)
    before = listing(folder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=folder, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    check_one_line(proc.stderr, args[0], expected)
    assert proc.stdout == ""
    assert listing(folder) == before


def test_help_still_works(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["probe", "gmm_pair", "--help"])
    assert info.value.code == 0
    assert "--latent-shape" in capsys.readouterr().out


def test_default_agg_steps_follow_a_smaller_steps(folder, capsys):
    """Without --agg-steps, s is 20 or T if smaller (the default is not an error)."""
    from amdm_geom.store import open_run, sampler_config

    out = folder / "small.zarr"
    assert cli.main(["probe", "gmm_pair", *SMALL, "--latent-shape", "8", "--out", str(out)]) == 0
    assert sampler_config(open_run(out)).agg_steps == 2

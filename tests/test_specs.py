"""The one config language: typed, frozen, self-validating specs (``amdm_geom.core.spec``) that check
every value in one place, refuse in one line naming the field, the value and what is accepted,
round-trip through JSON, and from which the command line is generated (not retyped)."""

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
import torch
from pydantic import Field

from amdm_geom.analyses.ablations import ablations
from amdm_geom.app import cli
from amdm_geom.core.spec import Spec, SpecError, choice, flag, integer, optional, real, seed, sequence
from amdm_geom.models.specs import GMMFamilySpec, GMMModelSpec, ImageSize, TinyUNetPairSpec, device
from amdm_geom.probes import gmm_cross_ecosystem, gmm_pair, unet_pair
from amdm_geom.sampling import SamplerConfig


class Example(Spec):
    """A spec with one field of each kind (for the tests)."""

    count: Annotated[int, integer(1)] = 1
    """an int >= 1."""
    share: Annotated[float, real(0.0, 1.0)] = 0.5
    """in [0, 1]."""
    positive: Annotated[float, real(0.0, low_open=True)] = 1.0
    """> 0."""
    first_seed: Annotated[int, seed()] = 0
    """a seed."""
    rule: Annotated[str, choice("a", "b")] = "a"
    """a or b."""
    on: Annotated[bool, flag] = False
    """a flag."""
    shape: Annotated[tuple[int, ...], sequence(integer(1), accepted="one or more ints >= 1", min_len=1)] = (4,)
    """a shape."""
    limit: Annotated[int | None, optional(integer(0))] = Field(None, alias="max")
    """an optional int >= 0, named max on the command line."""
    height: ImageSize = None
    """an image side: a positive multiple of 8, or None."""


def cli_error(**given) -> str:
    """The command line's line for text values ``given`` (as tyro passes them on)."""
    with pytest.raises(SpecError) as info:
        Example.model_validate(given, context={"cli": True})
    return str(cli.usage_error(info.value, Example))


@pytest.mark.parametrize("given,line", [
    ({"count": "0"}, "argument --count: must be an int >= 1; got 0"),
    ({"count": "2.0"}, "argument --count: must be an int >= 1; got 2.0"),
    ({"count": "x"}, "argument --count: must be an int >= 1; got x"),
    ({"share": "nan"}, "argument --share: must be a finite number in [0, 1]; got nan"),
    ({"share": "-inf"}, "argument --share: must be a finite number in [0, 1]; got -inf"),
    ({"share": "1.01"}, "argument --share: must be a finite number in [0, 1]; got 1.01"),
    ({"share": ""}, "argument --share: must be a finite number in [0, 1]; got ''"),
    ({"positive": "0"}, "argument --positive: must be a finite number > 0; got 0"),
    ({"first_seed": str(2**63)}, f"argument --first-seed: must be an int in [0, 2**63); got {2**63}"),
    ({"first_seed": "-1"}, "argument --first-seed: must be an int in [0, 2**63); got -1"),
    ({"rule": "c"}, "argument --rule: must be one of a, b; got c"),
    ({"shape": ("4", "8.5")}, "argument --shape: must be an int >= 1; got 8.5"),
    ({"shape": ()}, "argument --shape: must be one or more ints >= 1; got "),
    ({"max": "-1e-3"}, "argument --max: must be an int >= 0; got -1e-3"),
    ({"height": "100"}, "argument --height: must be a positive multiple of 8 (pixels); got 100"),
    ({"height": "-64"}, "argument --height: must be a positive multiple of 8 (pixels); got -64"),
    ({"bogus": "1"}, "argument --bogus: is not a setting of Example"),
])
def test_command_line_text_is_checked_by_the_spec(given, line):
    assert cli_error(**given) == line


def test_command_line_text_is_parsed_only_from_the_command_line():
    parsed = Example.model_validate({"count": "3", "share": "0.25", "shape": ("2", "3"), "max": "7"},
                                    context={"cli": True})
    assert (parsed.count, parsed.share, parsed.shape, parsed.limit) == (3, 0.25, (2, 3), 7)
    with pytest.raises(SpecError, match=r"^count must be an int >= 1; got '3'$"):
        Example(count="3")  # in code, text is not a number


@pytest.mark.parametrize("given,message", [
    ({"count": True}, "count must be an int >= 1; got True"),
    ({"count": 2.0}, "count must be an int >= 1; got 2.0"),
    ({"share": np.float64("nan")}, "share must be a finite number in [0, 1]; got nan"),
    ({"on": 1}, "on must be True or False; got 1"),
    ({"shape": 4}, "shape must be one or more ints >= 1; got 4"),
    ({"limit": -1}, "limit must be an int >= 0; got -1"),
])
def test_code_gets_the_same_checks_naming_the_field(given, message):
    with pytest.raises(SpecError) as info:
        Example(**given)
    assert str(info.value) == message and "\n" not in str(info.value)


def test_numpy_and_torch_values_become_python_values():
    spec = Example(count=np.int64(3), share=torch.tensor(0.25), on=np.bool_(True), shape=np.array([2, 3]),
                   first_seed=torch.tensor(7))
    assert spec == Example(count=3, share=0.25, on=True, shape=(2, 3), first_seed=7)
    assert type(spec.count) is int and type(spec.share) is float and type(spec.shape) is tuple


def test_specs_are_frozen_and_replace_checks_again():
    spec = Example()
    with pytest.raises(ValueError):
        spec.count = 2
    assert spec.replace(count=2).count == 2
    with pytest.raises(SpecError, match=r"^count must be an int >= 1; got 0$"):
        spec.replace(count=0)


def test_nested_errors_name_the_path_in_code_and_the_option_on_the_command_line():
    with pytest.raises(SpecError) as info:
        gmm_pair.Spec(family={"strength": 0.0})
    assert str(info.value) == "family.strength must be a finite number in (0, 1]; got 0.0"
    assert str(cli.usage_error(info.value, gmm_pair.Spec)) == \
        "argument --strength: must be a finite number in (0, 1]; got 0.0"
    with pytest.raises(SpecError) as info:
        gmm_pair.Spec(family={"seed": -1})
    assert str(cli.usage_error(info.value, gmm_pair.Spec)).startswith("argument --family-seed: ")


SPECS = [
    SamplerConfig(num_inference_steps=12, agg_window=(2, 6), weights=(0.6,), eta=(0.5, 0.25), mix="lerp"),
    GMMFamilySpec(latent_shape=(4, 8, 8), n_styles=3),
    GMMModelSpec(attribute="colour", value=2, sde="ve", perturb=0.1),
    TinyUNetPairSpec(variant="independent", sample_size=8, channels=(8, 16)),
    gmm_pair.Spec(family={"latent_shape": (8,)}, sampler={"num_inference_steps": 4}, run={"names": ("model*.z",)}),
    gmm_cross_ecosystem.Spec(schedule_b="linear"),
    unet_pair.Spec(family={"variant": "adapter"}),
    *ablations.settings(True)[:3],
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: type(s).__qualname__)
def test_every_spec_round_trips_through_json(spec):
    again = type(spec).model_validate_json(spec.model_dump_json())
    assert again == spec and again.model_dump() == spec.model_dump()


def test_sampler_config_keeps_its_defaults_and_window():
    config = SamplerConfig()
    assert (config.num_inference_steps, config.agg_steps, config.weights, config.eta) == (50, 20, (0.5,), 0.3)
    assert config.window == (0, 20) and SamplerConfig(agg_window=(3, 9)).window == (3, 9)
    assert SamplerConfig(num_inference_steps=4, weights=()).agg_steps == 4  # s = 20, or T if smaller
    assert SamplerConfig(steps=7) == SamplerConfig(num_inference_steps=7)  # (the command line's name works too)
    with pytest.raises(SpecError, match=r"^weights takes 2 weight\(s\) w_1\.\.w_\{N-1\} for 3 models; "
                                        r"got 1: \(0\.5,\)$"):
        SamplerConfig().check(3)


def test_model_specs_check_values_without_building():
    fam = GMMFamilySpec(latent_shape=(8,))
    with pytest.raises(SpecError, match=r"^value must be in \[0, 4\); got 4$"):
        GMMModelSpec(attribute="position", value=4).check(fam)
    with pytest.raises(SpecError, match=r"^channels takes two or more block widths; got \(8,\)$"):
        TinyUNetPairSpec(channels=(8,))
    with pytest.raises(SpecError, match=r"^model_seed must be an int in \[0, 2\*\*63 - 1000\); got "):
        TinyUNetPairSpec(model_seed=2**63 - 10)
    assert Example.model_validate({"height": "512"}, context={"cli": True}).height == 512 and device("cpu") == "cpu"
    with pytest.raises(SpecError, match=r"must be cpu, cuda, cuda:N or mps .*; got 'gpu'$"):
        device("gpu")


def test_a_model_spec_builds_what_the_family_builds():
    fam_spec = GMMFamilySpec(latent_shape=(8,), seed=3)
    fam = fam_spec.build()
    model, cond = GMMModelSpec(attribute="colour", value=1, guidance=2.0).build(fam)
    assert torch.equal(cond, fam.condition(colour=1)) and model.guidance_scale == 2.0
    assert torch.equal(fam.mixture.means, fam_spec.build().mixture.means)  # the same seed, the same family


@pytest.mark.parametrize("module", [gmm_pair, gmm_cross_ecosystem, unet_pair])
def test_the_command_line_is_generated_from_the_spec(module, capsys):
    """Every leaf field of the probe's spec is an option in its --help, under its alias if any."""
    with pytest.raises(SystemExit) as info:
        cli.main(["probe", module.NAME, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for field, option in cli.options(module.Spec).items():
        assert option in text, (field, option)
    for option in ("--steps", "--w ", "--cross-eps", "--insist", "--batch", "--no-progress", "--out"):
        assert option in text, option


def test_the_readme_example_parses_to_the_expected_spec():
    spec = cli.parse(gmm_pair.Spec, ["--steps", "50", "--agg-steps", "20", "--w", "0.5", "--eta", "0.3",
                                     "--ddim-eta", "1.0", "--batch", "8", "--seed", "0", "--cross-eps",
                                     "--out", "data/runs/gmm_ddpm.zarr"], prog="amdm-geom probe gmm_pair")
    assert spec == gmm_pair.Spec(sampler=SamplerConfig(ddim_eta=1.0, record_cross_eps=True),
                                 run={"batch": 8, "out": Path("data/runs/gmm_ddpm.zarr")})
    window = cli.parse(gmm_cross_ecosystem.Spec, ["--schedule-b", "cosine", "--agg-window", "10", "30"],
                       prog="amdm-geom probe gmm_cross_ecosystem")
    assert window.sampler.window == (10, 30) and window.config().allow_schedule_mismatch


def test_the_spec_layer_imports_nothing_heavy():
    code = "import sys, amdm_geom.core.spec; print(sorted({'torch', 'diffusers', 'zarr'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

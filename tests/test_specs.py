"""The one config language: typed, frozen, self-validating specs (``amdm_geom.core.spec``) that check
every value in one place, refuse in one line naming the field, the value and what is accepted,
round-trip through JSON, and from which the command line is generated (not retyped)."""

import re
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
from amdm_geom.core.spec import (
    PREFIXED,
    Spec,
    SpecError,
    choice,
    flag,
    integer,
    is_prefixed,
    optional,
    real,
    seed,
    sequence,
)
from amdm_geom.models.pipeline_specs import ImageSize, SD3PipelineSpec, SDPipelineSpec, device
from amdm_geom.models.specs import GMMFamilySpec, GMMModelSpec, TinyTransformerPairSpec, TinyUNetPairSpec
from amdm_geom.probes import (
    flow_pair,
    flow_transformer_pair,
    gmm_cross_ecosystem,
    gmm_pair,
    sd3_pair,
    sd_pair,
    unet_pair,
)
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


HERE = Path(__file__).parent  # (an existing folder, for the path fields)

SPECS = [
    SamplerConfig(num_inference_steps=12, agg_window=(2, 6), weights=(0.6,), eta=(0.5, 0.25), mix="lerp"),
    GMMFamilySpec(latent_shape=(4, 8, 8), n_styles=3),
    GMMModelSpec(attribute="colour", value=2, sde="ve", perturb=0.1),
    TinyUNetPairSpec(variant="independent", sample_size=8, channels=(8, 16)),
    gmm_pair.Spec(family={"latent_shape": (8,)}, sampler={"num_inference_steps": 4}, run={"names": ("model*.z",)}),
    gmm_cross_ecosystem.Spec(schedule_b="linear"),
    unet_pair.Spec(family={"variant": "adapter"}),
    flow_pair.Spec(partner="vp", shift=3.0, perturb=0.05),
    flow_transformer_pair.Spec(family={"kind": "dit", "sample_size": 6}),
    GMMModelSpec(attribute="position", sde="flow", shift=3.0),
    TinyTransformerPairSpec(kind="flux", guidance=2.0),
    SDPipelineSpec(path=HERE, lora=HERE, ip_adapter=HERE, gligen_beta=0.5),
    sd_pair.Spec(model_a={"path": HERE, "guidance": 3.0}, model_b={"path": HERE, "lora": HERE}, prompt="a cube",
                 gligen_boxes=(0.1, 0.1, 0.5, 0.5), gligen_phrases=("a cube",)),
    sd3_pair.Spec(model_a=SD3PipelineSpec(path=HERE, max_sequence_length=77), prompt="a cube"),
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


def expected_options(cls: type[Spec], prefix: str = "") -> set[str]:
    """The options a spec's fields make, worked out here from the fields alone: a leaf field is
    ``--name`` (its alias if any; ``--no-name`` too for a flag), a nested spec's fields appear
    without a prefix, and those of one marked ``PREFIXED`` under its field's name."""
    out = set()
    for name, field in cls.model_fields.items():
        option = prefix + (field.alias or name).replace("_", "-")
        inner = [t for t in (field.annotation, *getattr(field.annotation, "__args__", ())) if isinstance(t, type)
                 and issubclass(t, Spec)]
        if inner:
            out |= expected_options(inner[0], option + "." if is_prefixed(field) else prefix)
        else:
            out |= {"--" + option} | ({f"--{prefix}no-{option[len(prefix):]}"} if field.annotation is bool else set())
    return out


def help_options(args: list[str], capsys) -> set[str]:
    """The options ``amdm-geom ARGS --help`` lists (the first column of its option tables)."""
    with pytest.raises(SystemExit) as info:
        cli.main([*args, "--help"])
    assert info.value.code == 0
    found = set()
    for line in capsys.readouterr().out.splitlines():
        head = re.match(r"^(?:[│|] |  )(--?\w[\w.-]*(?:, --?\w[\w.-]*)*)", line)  # (boxed on a terminal, or plain)
        if head:
            found |= set(head.group(1).split(", "))
    return found - {"-h", "--help"}


def probe_names() -> list[str]:
    from amdm_geom.app.runner.registry import probe_names

    return probe_names()


@pytest.mark.parametrize("name", probe_names())
def test_every_probes_options_are_exactly_its_specs_fields(name, capsys):
    """Generated from the spec: nothing hand-added, nothing missing (each registered probe)."""
    from amdm_geom.app.runner.registry import load_probe

    spec = load_probe(name).Spec
    assert help_options(["probe", name], capsys) == expected_options(spec)


def test_the_option_check_fails_on_an_option_added_or_dropped(capsys, monkeypatch):
    """The comparison above can fail: a generator that adds an option the spec lacks, or drops
    a field, is seen."""
    import dataclasses

    from tyro.constructors import StructFieldSpec

    from amdm_geom.app import spec_options

    made = spec_options._struct

    def added(cls, default, **kwargs):
        struct = made(cls, default, **kwargs)
        if cls is gmm_pair.Spec:
            extra = StructFieldSpec(name="hand_added", type=str, default="x", helptext="not a field of the spec")
            struct = dataclasses.replace(struct, fields=(*struct.fields, extra))
        return struct

    def dropped(cls, default, **kwargs):
        struct = made(cls, default, **kwargs)
        return dataclasses.replace(struct, fields=tuple(f for f in struct.fields if f.name != "force_size"))

    expected = expected_options(gmm_pair.Spec)
    monkeypatch.setattr(spec_options, "_struct", added)
    assert help_options(["probe", "gmm_pair"], capsys) - expected == {"--hand-added"}
    monkeypatch.setattr(spec_options, "_struct", dropped)
    assert expected - help_options(["probe", "gmm_pair"], capsys) == {"--force-size", "--no-force-size"}


def test_two_models_of_one_kind_nest_under_their_names():
    """A PREFIXED spec's options carry its field's name; an optional one is None unless given."""
    folder = str(HERE)
    spec = cli.parse(sd3_pair.Spec, ["--model-a.path", folder, "--model-a.guidance", "4", "--prompt", "x"], prog="p")
    assert spec.model_b is None and spec.model_a == SD3PipelineSpec(path=HERE, guidance=4.0) and spec.n_models == 1
    both = cli.parse(sd3_pair.Spec, ["--model-a.path", folder, "--model-b.path", folder, "--model-b.guidance", "2",
                                     "--prompt", "x"], prog="p")
    assert both.model_b == SD3PipelineSpec(path=HERE, guidance=2.0) and both.model_a.guidance == 7.0
    assert cli.options(sd3_pair.Spec)["model_b.max_sequence_length"] == "--model-b.max-sequence-length"
    for args, line in [
        (["--model-a.path", folder, "--model-b.guidance", "2"], "argument --model-b.path: is required"),
        (["--model-a.path", folder, "--model-b.path", folder, "--model-b.max-sequence-length", "0"],
         "argument --model-b.max-sequence-length: must be an int in [1, 512]; got 0"),
        (["--model-a.path", folder, "--prompt-b", "y"], "argument --prompt-b: needs --model-b.path"),
        (["--prompt", "x"], "the following arguments are required: --model-a.path"),
    ]:
        with pytest.raises(cli.UsageError) as info:
            cli.parse(sd3_pair.Spec, [*args, "--prompt", "x"] if "--prompt" not in args else args, prog="p")
        assert str(info.value) == line
    assert [is_prefixed(f) for f in sd3_pair.Spec.model_fields.values()][:2] == [True, True] and repr(PREFIXED)


def test_a_probe_refuses_what_its_model_spec_refuses():
    """flow_transformer_pair takes its models' settings from the one spec: an odd sample size is
    refused there as in the spec, in one line."""
    with pytest.raises(SpecError) as info:
        flow_transformer_pair.Spec(family={"sample_size": 3})
    assert str(info.value) == "family.sample_size must be an even int >= 2 (2x2 patches); got 3"
    with pytest.raises(cli.UsageError) as info:
        cli.parse(flow_transformer_pair.Spec, ["--sample-size", "3"], prog="p")
    assert str(info.value) == "argument --sample-size: must be an even int >= 2 (2x2 patches); got 3"


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

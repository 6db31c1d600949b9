"""Every figure of the report has a caption (each analysis' ``CAPTIONS``, read by
``amdm_geom.app.runner.output.caption_of``), and every role of a figure has one colour
(``amdm_geom.core.palette``). Nothing here runs an analysis: the figure names are those a full run
writes, listed below."""

import re

import pytest

from amdm_geom.app.runner.output import caption_of
from amdm_geom.app.runner.registry import analysis_names, load_analysis
from amdm_geom.core import palette

#: The figure names (as ``plot()`` returns them) each analysis writes in a full or quick run;
#: ``<store>`` stands for a store's name.
KNOWN_FIGURES = {
    "ablations": ["figure5", "success_by_run", "table4_eta"],
    "closed_forms": ["cos_bound_excess"],
    "commitment": ["commitment"],
    "commitment_trained": ["commitment_trained"],
    "digits_benchmark": ["by_target", "grid_bottom_right_blue", "grid_top_left_red", "proximity", "success"],
    "digits_grid": ["grid_eta", "grid_role_order", "grid_slerp_lerp", "grid_vs_better_single", "grid_vs_composable",
                    "grid_vs_position", "success_vs_guidance"],
    "flow_benchmark": ["success"],
    "flow_geometry": ["flow_pair/g1", "flow_pair/mu_v", "sd3_pair/g1", "shell"],
    "gaussianity": ["figure6_moments", "forward_gaussianity", "trajectory_gmm_pair", "trajectory_unet_pair"],
    "guidance_curve": ["guidance_curve"],
    "mechanism": ["mechanism"],
    "norm_angle": ["gmm_pair/angle_delta", "gmm_pair/delta_parts", "gmm_pair/norm_gap", "sd_pair/norm_gap"],
    "precision": ["precision_phi"],
    "reported": ["default_full_swap", "relation_status"],
    "shell": ["lemma_a1", "membership", "radius_gmm_ddpm", "radius_gmm_pair_eta1"],
    "timing": [],
    "toy_mixture": ["amdm_sweep", "mmd_floor", "norm_law", "samples_exact", "samples_mlp", "trajectory"],
    "trace_checks": [],
}


def captions(name: str) -> dict:
    """The analysis' ``captions``."""
    return load_analysis(name).captions


def test_every_registered_analysis_is_listed():
    assert sorted(KNOWN_FIGURES) == analysis_names()


@pytest.mark.parametrize("name", sorted(KNOWN_FIGURES))
def test_captions_are_sentences(name):
    found = captions(name)
    assert isinstance(found, dict)
    for pattern, text in found.items():
        assert isinstance(pattern, str) and pattern, f"{name}: empty pattern"
        assert isinstance(text, str) and len(text.strip()) >= 40, f"{name}: caption of {pattern!r} is too short"


@pytest.mark.parametrize("name", sorted(KNOWN_FIGURES))
def test_every_known_figure_has_a_caption(name):
    found = captions(name)
    missing = [fig for fig in KNOWN_FIGURES[name] if not caption_of(fig, found)]
    assert not missing, f"{name}: no caption for {', '.join(missing)}"
    assert all(caption_of(f"{fig}.png", found) for fig in KNOWN_FIGURES[name])


def test_every_pattern_is_used():
    """A pattern that matches no known figure is a caption nobody reads (or a figure missing above)."""
    for name in KNOWN_FIGURES:
        for pattern in captions(name):
            assert any(caption_of(fig, {pattern: "x"}) for fig in KNOWN_FIGURES[name]), f"{name}: {pattern!r}"


def test_roles_have_distinct_colours():
    hexes = [palette.colour(role) for role in palette.COLOURS]
    assert all(re.fullmatch(r"#[0-9a-fA-F]{6}", h) for h in hexes), hexes
    assert len({h.lower() for h in hexes}) == len(hexes), "two roles share a colour"
    for role in ("model 1", "model 2", "model 3", "AMDM", "AMDM swapped", "composable", "superdiff_and", "ula",
                 "mcmc", "product of experts", "slerp", "lerp", "orthogonal_mix", "bound", "exact", "reference"):
        assert role in palette.COLOURS
    neutrals = {h.lower() for h in palette.NEUTRALS}
    assert all(re.fullmatch(r"#[0-9a-fA-F]{6}", h) for h in neutrals)
    assert not neutrals & {h.lower() for h in hexes}, "a neutral grey is also a role's colour"


def test_an_unknown_role_is_one_line():
    with pytest.raises(ValueError, match="unknown colour role 'model 4'") as err:
        palette.colour("model 4")
    message = str(err.value)
    assert "\n" not in message
    assert "'model 1'" in message and "'AMDM'" in message

"""One colour per role, the same in every figure: a model, a method, a mixing rule, a bound, so
that "AMDM" is the same orange and "model 2" the same vermillion wherever they are drawn.

The colours are Okabe and Ito's colour-blind-safe set (blue, vermillion, bluish green, orange,
reddish purple, sky blue, black) completed by Paul Tol's "muted" set (indigo, wine, green,
teal, olive, purple, sand, rose) and one grey: distinguishable under the common colour-vision
deficiencies. Pure data: this module imports nothing from ``amdm_geom`` (the core layer).

Roles:

- ``"model 1"``, ``"model 2"``, ``"model 3"``: the models AMDM aggregates, in the order of
  Algorithm 1 (the position model, the colour model, the third: digit or style), each alone;
- ``"AMDM"``: Algorithm 1 with model 1 first; ``"AMDM swapped"``: with the roles swapped;
- the peers: ``"composable"`` (Liu et al. 2022), ``"superdiff_and"`` (Skreta et al. 2024),
  ``"ula"`` (Du et al. 2023's annealed ULA), ``"mcmc"`` (Du et al.'s other samplers, MALA and
  HMC, in the 2D benchmark) and ``"product of experts"`` (the summed score eps1 + eps2);
- the mixing rules of Figure 5: ``"slerp"`` (eq. 6), ``"lerp"``, ``"orthogonal_mix"`` (the
  earlier version's);
- ``"bound"``: a paper's bound (drawn dashed), ``"exact"``: an exact quantity or exact samples
  of the target, ``"reference"``: a reference to read a measurement against (the paper's
  printed numbers, an oracle).

``NEUTRALS`` are the two greys of bars that show no role (alternating by group).
"""

from __future__ import annotations

__all__ = ["COLOURS", "NEUTRALS", "colour"]

#: ``{role: "#rrggbb"}``.
COLOURS: dict[str, str] = {
    "model 1": "#0072B2",  # Okabe-Ito blue
    "model 2": "#D55E00",  # Okabe-Ito vermillion
    "model 3": "#009E73",  # Okabe-Ito bluish green
    "AMDM": "#E69F00",  # Okabe-Ito orange
    "AMDM swapped": "#CC79A7",  # Okabe-Ito reddish purple
    "composable": "#56B4E9",  # Okabe-Ito sky blue
    "superdiff_and": "#882255",  # Tol wine
    "ula": "#117733",  # Tol green
    "mcmc": "#44AA99",  # Tol teal
    "product of experts": "#999933",  # Tol olive
    "slerp": "#AA4499",  # Tol purple
    "lerp": "#DDCC77",  # Tol sand
    "orthogonal_mix": "#CC6677",  # Tol rose
    "bound": "#000000",  # black (dashed)
    "exact": "#332288",  # Tol indigo
    "reference": "#777777",  # grey
}

#: Bars that show no role: the two greys, alternating by group.
NEUTRALS: tuple[str, str] = ("#BBBBBB", "#DDDDDD")


def colour(role: str) -> str:
    """The ``"#rrggbb"`` colour of ``role`` (a key of ``COLOURS``); a one-line ValueError naming
    the known roles for any other."""
    try:
        return COLOURS[role]
    except KeyError:
        raise ValueError(f"unknown colour role {role!r}; the roles are {', '.join(map(repr, COLOURS))}") from None

"""The hook points the sampler emits (README, "Store schema"), owned by the sampling layer.

One canonical name per quantity, ``<site>.<quantity>``: sites ``model0`` .. ``model{N-1}`` and
``agg``. Per step k (timestep t -> t_prev): ``model{i}.z`` (z_t entering the step), ``.eps``
(the step's epsilon of eq. 4: the guided model output for an epsilon model without clipping,
else ``schedules.step_epsilon`` of it), the opt-in ``.out`` (the raw output, in the model's
``prediction_type``, with ``record_output``), ``.x0`` (the predicted clean latent, clipped as
the step clips it), ``.mu`` (the reverse-step mean of eq. 4), ``.noise`` (sigma_t xi),
``.z_next`` (mu + noise), ``.mu_shift`` (the mean the radial shift of eq. 7 used), ``.z_shift``
(z' after model i's shift) and the aggregate ``agg.z`` (z' of eq. 6). A flow model (App. G)
emits ``.v`` (its velocity, eq. 42) where a DDIM model emits ``.eps``, and ``.mu`` is its step's
deterministic location (``steppers``); its cross terms are ``v_cross``/``v_at_z1``. A names filter (a glob,
a list of globs, or a callable) selects hooks, as TransformerLens' ``names_filter`` does. Which of
them a run with given settings emits is ``config.planned_hook_names`` (this table knows no settings).
"""

from __future__ import annotations

import fnmatch

__all__ = ["AGG_QUANTITIES", "CROSS_EPS", "FLOW_QUANTITIES", "MODEL_QUANTITIES", "OUTPUT", "hook_names", "latent_dims",
           "matches", "parse_hook_name"]

#: Per-model quantities the sampler emits as ``model{i}.<quantity>`` (the table above).
MODEL_QUANTITIES = ("z", "eps", "x0", "mu", "noise", "z_next", "mu_shift", "z_shift")
#: A flow model's quantities: the velocity in place of the step's epsilon.
FLOW_QUANTITIES = tuple("v" if q == "eps" else q for q in MODEL_QUANTITIES)
#: Quantities of the aggregate, emitted as ``agg.<quantity>`` and stored as ``agg_<quantity>``.
AGG_QUANTITIES = ("z",)



def latent_dims(latent_shape: tuple[int, ...]) -> tuple[str, ...]:
    """Dim names of a per-sample latent shape."""
    if len(latent_shape) == 3:
        return ("channel", "height", "width")
    if len(latent_shape) == 1:
        return ("dim",)
    return tuple(f"d{i}" for i in range(len(latent_shape)))


def hook_names(n_models: int, extra: tuple[str, ...] = (), kinds: tuple[str, ...] | None = None) -> list[str]:
    """Every hook name a run of ``n_models`` can emit, per-model quantities then the aggregate;
    ``kinds[i]`` is model i's step kind (``"ddim"`` or ``"flow"``, default all DDIM)."""
    kinds = tuple(kinds) if kinds is not None else ("ddim",) * n_models
    names = []
    for i in range(n_models):
        own = FLOW_QUANTITIES if kinds[i] == "flow" else MODEL_QUANTITIES
        cross = {"eps_cross": ("v" if kinds[0] == "flow" else "eps") + "_cross",
                 "eps_at_z1": ("v" if kinds[i] == "flow" else "eps") + "_at_z1"}
        names += [f"model{i}.{q}" for q in (*own, *(cross.get(e, e) for e in extra))]
    return names + [f"agg.{q}" for q in AGG_QUANTITIES]


def parse_hook_name(name: str) -> tuple[str, int | None]:
    """``"model1.mu" -> ("mu", 1)``; ``"agg.z" -> ("agg_z", None)``."""
    site, _, quantity = name.partition(".")
    if not quantity:
        raise ValueError(f"hook names look like 'model0.z' or 'agg.z'; got {name!r}")
    if site == "agg":
        return f"agg_{quantity}", None
    if site.startswith("model") and site[5:].isdigit():
        return quantity, int(site[5:])
    raise ValueError(f"hook names look like 'model0.z' or 'agg.z'; got {name!r}")


#: Opt-in per-model quantities for the delta decomposition (recorded for models 2..N): at model 1's z_t,
#: eps_theta1 and eps_thetai at y_i, or each at its null condition when the two take different conditions
CROSS_EPS = ("eps_cross", "eps_at_z1")
#: The opt-in raw model output (``record_output``)
OUTPUT = ("out",)


def matches(names_filter, name: str) -> bool:
    if names_filter is None:
        return True
    if callable(names_filter):
        return bool(names_filter(name))
    if isinstance(names_filter, str):
        return fnmatch.fnmatchcase(name, names_filter)
    return any(fnmatch.fnmatchcase(name, p) for p in names_filter)

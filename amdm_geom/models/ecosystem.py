"""Are two models one diffusion ecosystem? (Section 3.1, App. F.3)

AMDM aggregates latents, so the models must share the latent space and the SDE that moves
through it: the same VAE (by config and by weights), the same noise schedule (betas, prediction
type, timestep spacing and offset), the same latent shape. ``check`` compares these and measures
functional proximity, ``|eps_A(z, t, y) - eps_B(z, t, y)| / |eps_A(z, t, y)|`` over t on random
z_t (each model encoding the same prompt with its own text encoder), and gives a verdict:
``same`` (every structural check agrees), ``different`` (one disagrees) or ``unknown`` (a check
cannot be made, e.g. a pipeline without a VAE).

``check_denoisers`` does the same for any two denoisers (``amdm_geom.models.base``): the SDE
(``same_schedule``), the data space (latent shape, and the ``data_space`` attributes when both
models declare one), and functional proximity at z_t drawn from model A's forward process,
conditional when the two take one kind of condition, else at their null conditions (labelled).
Outputs in any ``prediction_type`` are compared as epsilon (``schedules.predicted_epsilon``).

The fingerprint of a pipeline (``fingerprint``, ``SCHEDULER_KEYS``) is computed in
``amdm_geom.models.fingerprint`` and re-exported here; this module imports the denoisers,
never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from amdm_geom.core.flow_schedules import GRID_KEYS
from amdm_geom.core.schedules import predicted_epsilon
from amdm_geom.models.base import cross_terms, same_schedule, schedule_kind
from amdm_geom.models.fingerprint import SCHEDULER_KEYS, fingerprint
from amdm_geom.models.guidance import uses_guidance
from amdm_geom.models.pipeline_specs import SDPipelineSpec
from amdm_geom.models.pipelines import PipelineDenoiser

__all__ = ["DEFAULT_TIMESTEPS", "SCHEDULER_KEYS", "EcosystemReport", "check", "check_denoisers", "compare",
           "fingerprint", "format_report"]

#: The timesteps functional proximity is measured at.
DEFAULT_TIMESTEPS = (999, 800, 600, 400, 200, 50)
_LABELS = {"latent_shape": "latent shape", "sde": "SDE", "vae": "VAE", "data_space": "data space"}


def compare(fa: dict, fb: dict) -> dict:
    """Structural checks between two fingerprints: name -> {"same": True | False | None, ...}."""
    checks = {"latent_shape": {"same": fa["latent_shape"] == fb["latent_shape"],
                               "a": fa["latent_shape"], "b": fb["latent_shape"]}}
    sched_diff = {k: (fa["scheduler"][k], fb["scheduler"][k]) for k in SCHEDULER_KEYS
                  if fa["scheduler"][k] != fb["scheduler"][k]}
    checks["sde"] = {"same": not sched_diff and fa["alphas_cumprod_sha"] == fb["alphas_cumprod_sha"],
                     "differences": {k: list(v) for k, v in sched_diff.items()}}
    if fa["vae_config"] is None or fb["vae_config"] is None:
        checks["vae"] = {"same": None, "why": "a pipeline has no VAE"}
    else:
        cfg_diff = sorted(k for k in set(fa["vae_config"]) | set(fb["vae_config"])
                          if fa["vae_config"].get(k) != fb["vae_config"].get(k))
        checks["vae"] = {"same": not cfg_diff and fa["vae_hash"] == fb["vae_hash"], "config_differences": cfg_diff,
                         "weights_same": fa["vae_hash"] == fb["vae_hash"]}
    return checks


@dataclass
class EcosystemReport:
    """The verdict, each structural check, and functional proximity per timestep."""

    verdict: str
    checks: dict
    proximity: dict = field(default_factory=dict)  # timestep -> relative eps difference
    names: tuple[str, str] = ("A", "B")
    #: "conditional" (each model at its condition), "unconditional" (each at its null condition) or
    #: "not measured" (the latent shapes differ, or no condition both models can be evaluated at)
    proximity_kind: str = "conditional"

    def summary(self) -> str:
        bad = [k for k, v in self.checks.items() if v["same"] is False]
        unknown = [k for k, v in self.checks.items() if v["same"] is None]
        if self.verdict == "same":
            agree = [_LABELS.get(k, k) for k in self.checks]
            return "same ecosystem: " + (", ".join(agree[:-1]) + " and " if len(agree) > 1 else "") + agree[-1] + \
                " agree"
        if self.verdict == "different":
            return "different ecosystems: " + ", ".join(bad) + " differ"
        return "unknown: cannot compare " + ", ".join(unknown)


def _as_denoiser(x, device, dtype):
    if isinstance(x, PipelineDenoiser):
        return x
    return SDPipelineSpec(path=x, device=device, guidance=1.0, name=str(x)).build(dtype)


def check(a, b, *, prompt: str = "a photograph", timesteps=(999, 800, 600, 400, 200, 50), batch: int = 2,
          seed: int = 0, device: str = "cpu", dtype: str = "float32") -> EcosystemReport:
    """Compare two pipelines (folders, checkpoint files, or ``PipelineDenoiser``s)."""
    da, db = _as_denoiser(a, device, dtype), _as_denoiser(b, device, dtype)
    checks = compare(da.ecosystem(), db.ecosystem())
    if any(v["same"] is False for v in checks.values()):
        verdict = "different"
    elif any(v["same"] is None for v in checks.values()):
        verdict = "unknown"
    else:
        verdict = "same"
    proximity = {}
    if checks["latent_shape"]["same"]:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn((batch, *da.latent_shape), generator=g)
        ya = _conditional(da).condition(prompt)
        yb = _conditional(db).condition(prompt)
        for t in timesteps:
            proximity[int(t)] = _relative_difference(_conditional(da), _conditional(db), z, t, ya, yb)
    names = (getattr(da, "name", "A"), getattr(db, "name", "B"))
    kind = "conditional" if checks["latent_shape"]["same"] else "not measured (the latent shapes differ)"
    return EcosystemReport(verdict, checks, proximity, names, kind)


def _epsilon(model, z: torch.Tensor, t: int, cond) -> torch.Tensor:
    """The model's epsilon at ``z (B, *latent_shape)``, whatever it predicts, as float64 ``(B, n)``;
    a flow model's velocity v (App. G: eq. 47's functional proximity compares velocities), called
    at the float timestep ``t``."""
    z = z.to(model.device, model.dtype)
    if schedule_kind(model.scheduler) == "flow":
        return model(z, torch.tensor(float(t)), cond).double().cpu().flatten(1)
    return predicted_epsilon(model.scheduler, model(z, int(t), cond), t, z)[1].double().cpu().flatten(1)


def _relative_difference(a, b, z: torch.Tensor, t: int, cond_a, cond_b) -> float:
    """``|eps_A - eps_B| / |eps_A|`` at ``z``, averaged over the batch."""
    ea, eb = _epsilon(a, z, t, cond_a), _epsilon(b, z, t, cond_b)
    return float(((ea - eb).norm(dim=1) / ea.norm(dim=1)).mean())


def _sde_check(a, b) -> dict:
    ca, cb = dict(a.scheduler.config), dict(b.scheduler.config)
    kinds = (schedule_kind(a.scheduler), schedule_kind(b.scheduler))
    if "flow" in kinds:  # a flow's SDE is its interpolant and time grid (App. G), it has no alphas_cumprod
        diff = {k: [_plain(ca.get(k)), _plain(cb.get(k))] for k in GRID_KEYS if ca.get(k) != cb.get(k)}
        if kinds[0] != kinds[1]:
            diff["kind"] = list(kinds)
        return {"same": same_schedule(a.scheduler, b.scheduler), "differences": diff}
    keys = (*SCHEDULER_KEYS, "set_alpha_to_one", "parametrization")
    diff = {k: [_plain(ca.get(k)), _plain(cb.get(k))] for k in keys if ca.get(k) != cb.get(k)}
    if a.scheduler.alphas_cumprod.shape != b.scheduler.alphas_cumprod.shape or \
            not torch.equal(a.scheduler.alphas_cumprod, b.scheduler.alphas_cumprod):
        diff["alphas_cumprod"] = ["A's", "B's"]
    return {"same": same_schedule(a.scheduler, b.scheduler), "differences": diff}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _data_space_checks(a, b) -> dict:
    shape_a, shape_b = list(a.latent_shape), list(b.latent_shape)
    checks = {"latent_shape": {"same": shape_a == shape_b, "a": shape_a, "b": shape_b}}
    da, db = getattr(a, "data_space", None), getattr(b, "data_space", None)
    if da is not None or db is not None:
        same = None if da is None or db is None else str(da) == str(db)
        checks["data_space"] = {"same": same, "a": da, "b": db}
    return checks


def _proximity_conditions(a, b, cond_a, cond_b) -> tuple[str, object, object]:
    """(kind, y_A, y_B): the given conditions when the models take one kind of condition and
    ``cond_a`` is given, else both models' null conditions, else ("not measured ...", None, None)."""
    try:
        mode = cross_terms(a, b, ("A", "B"))
    except ValueError as exc:
        return f"not measured ({exc})", None, None
    if mode == "conditional" and cond_a is not None:
        return mode, cond_a, cond_a if cond_b is None else cond_b
    if callable(getattr(a, "null_condition", None)) and callable(getattr(b, "null_condition", None)):
        return "unconditional", a.null_condition(), b.null_condition()
    return "not measured (no condition given, and the models have no null_condition())", None, None


def check_denoisers(a, b, cond_a=None, cond_b=None, *, timesteps=DEFAULT_TIMESTEPS, seed: int = 0, batch: int = 2,
                    x0: torch.Tensor | None = None) -> EcosystemReport:
    """Section 3.1's ecosystem check for any two denoisers: the same SDE (``same_schedule``), the
    same data space (latent shape, and ``data_space`` when both declare one; ``None``: only one
    does) and functional proximity ``|eps_A - eps_B| / |eps_A|`` per timestep (eq. 4's epsilon,
    converted from each model's prediction type; the models as given, guided if they guide).

    The latents are drawn from model A's forward process, ``z_t = sqrt(abar_t) x0 + sqrt(1 -
    abar_t) xi`` (``x0 / sqrt(abar_t)`` coordinates for a VE model; for flow models the interpolant
    ``(1 - s) x0 + s xi`` at ``s = t / num_train_timesteps``, and proximity compares velocities), with ``x0 (batch,
    *latent_shape)`` given (e.g. data) or standard normal (unit-variance data), seeded by
    ``seed``. Both models see ``cond_a`` / ``cond_b`` (default ``cond_a``) when their
    ``condition_kind`` agree and ``cond_a`` is given, else their null conditions; the report's
    ``proximity_kind`` says which. Verdict: "different" if a check fails, "unknown" if one cannot
    be made, else "same"."""
    n_train = min(int(m.scheduler.config["num_train_timesteps"]) for m in (a, b))
    bad = [t for t in timesteps if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < n_train]
    if bad or not timesteps:
        raise ValueError(f"timesteps must be ints in [0, {n_train - 1}]; got {list(timesteps)}")
    checks = {**_data_space_checks(a, b), "sde": _sde_check(a, b)}
    states = [v["same"] for v in checks.values()]
    verdict = "different" if False in states else "unknown" if None in states else "same"
    kind, ya, yb = _proximity_conditions(a, b, cond_a, cond_b)
    proximity = {}
    if not checks["latent_shape"]["same"]:
        kind = "not measured (the latent shapes differ)"
    elif len({schedule_kind(m.scheduler) == "flow" for m in (a, b)}) > 1:
        kind = "not measured (a flow model's velocity and a diffusion model's epsilon are not comparable)"
    elif ya is not None or yb is not None:
        g = torch.Generator().manual_seed(int(seed))
        shape = (int(batch), *a.latent_shape)
        x0 = torch.randn(shape, generator=g, dtype=torch.float64) if x0 is None else x0.to("cpu", torch.float64)
        if tuple(x0.shape[1:]) != tuple(a.latent_shape):
            raise ValueError(f"x0 must have shape (B, {', '.join(map(str, a.latent_shape))}); got {tuple(x0.shape)}")
        flow = schedule_kind(a.scheduler) == "flow"
        for t in timesteps:
            xi = torch.randn(x0.shape, generator=g, dtype=torch.float64)
            if flow:  # the interpolant z_s = (1 - s) x0 + s xi at s = t / num_train_timesteps
                s_t = int(t) / float(a.scheduler.config["num_train_timesteps"])
                z = (1 - s_t) * x0 + s_t * xi
            else:
                abar = float(a.scheduler.alphas_cumprod[int(t)])
                z = abar**0.5 * x0 + (1 - abar) ** 0.5 * xi
                if a.scheduler.config.get("parametrization") == "ve":
                    z = z / abar**0.5
            proximity[int(t)] = _relative_difference(a, b, z, int(t), ya, yb)
    names = (getattr(a, "name", "A"), getattr(b, "name", "B"))
    return EcosystemReport(verdict, checks, proximity, names, kind)


def _conditional(d):
    """The same pipeline, unguided (functional proximity compares conditional epsilons)."""
    if not uses_guidance(d.guidance_scale):
        return d
    key = "_amdm_unguided"
    if getattr(d, key, None) is None:
        setattr(d, key, PipelineDenoiser(d.pipe, d.spec.replace(guidance=1.0)))
    return getattr(d, key)


def format_report(rep: EcosystemReport) -> str:
    lines = [f"A: {rep.names[0]}", f"B: {rep.names[1]}", f"verdict: {rep.verdict.upper()} ({rep.summary()})", ""]
    for name, c in rep.checks.items():
        state = {True: "same", False: "DIFFERENT", None: "unknown"}[c["same"]]
        extra = {k: v for k, v in c.items() if k != "same" and v not in ([], {}, None)}
        lines.append(f"  {name:13s} {state:9s} {extra if extra else ''}".rstrip())
    if rep.proximity:
        lines.append("")
        lines.append(f"  functional proximity |eps_A - eps_B| / |eps_A| (v for flow models; {rep.proximity_kind}, "
                     "random z_t):")
        for t, v in rep.proximity.items():
            lines.append(f"    t = {t:4d}: {v:.4g}")
        lines.append(f"    median: {float(np.median(list(rep.proximity.values()))):.4g}")
    elif rep.proximity_kind.startswith("not measured"):
        lines.append(f"  functional proximity: {rep.proximity_kind}")
    return "\n".join(lines)


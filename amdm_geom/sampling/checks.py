"""What ``AMDMSampler`` checks before any work, each failure one line: the models' shapes and
dtypes, the settings that depend on them, the kinds of their steps (DDIM or flow), and that
they share an ecosystem (Section 3.1) unless ``insist``."""

from __future__ import annotations

from collections.abc import Sequence

from amdm_geom.models.base import cross_terms, same_schedule, schedule_kind
from amdm_geom.models.ecosystem import compare
from amdm_geom.sampling.config import SamplerConfig

__all__ = ["check_inputs", "check_models"]

_KIND_WORDS = {"vp": "a VP diffusion model", "ve": "a VE diffusion model", "flow": "a rectified-flow model"}


def check_inputs(models: Sequence, conds: Sequence, *, method: str = "AMDMSampler", min_models: int = 1) -> None:
    """What every sampler of several models needs (AMDM's and the peers'): enough models, one
    condition each, one latent shape and one dtype."""
    n = len(models)
    if n < min_models:
        raise ValueError(f"{method} needs at least {min_models} model{'s' if min_models > 1 else ''}; got {n}")
    if len(conds) != n:
        raise ValueError(f"need one condition per model: {n} models, got {len(conds)} conditions")
    shapes = [tuple(m.latent_shape) for m in models]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"models must share one latent shape; got {shapes}")
    dtypes = [m.dtype for m in models]
    if any(d != dtypes[0] for d in dtypes):
        raise ValueError(f"models must share one dtype; got {[str(d) for d in dtypes]}")


def check_models(models: Sequence, conds: Sequence, cfg: SamplerConfig) -> dict[int, str]:
    """Check a run of ``models`` with ``conds`` under ``cfg``; returns how each partner's cross
    terms are evaluated (``{}`` without ``record_cross_eps``)."""
    check_inputs(models, conds)
    n = len(models)
    cfg.check(n)
    for i, m in enumerate(models):
        n_train = m.scheduler.config.get("num_train_timesteps")
        if n_train is not None and cfg.num_inference_steps > int(n_train):
            raise ValueError(f"num_inference_steps must be <= {n_train}, model {i}'s number of training "
                             f"timesteps; got {cfg.num_inference_steps}")
    _check_kinds([schedule_kind(m.scheduler) for m in models], cfg)
    # the cross terms: at y_i for both models, or each at its null condition (one line if neither)
    cross = {i: cross_terms(models[0], m, ("model 0", f"model {i}"))
             for i, m in enumerate(models[1:], start=1)} if cfg.record_cross_eps else {}
    if not cfg.allow_schedule_mismatch:
        _check_ecosystem(models)
    return cross


def _check_kinds(kinds: list[str], cfg: SamplerConfig) -> None:
    """The settings that only one kind of step can take."""
    flows = [i for i, k in enumerate(kinds) if k == "flow"]
    if cfg.shift_mean == "velocity" and len(flows) < len(kinds):
        i = next(i for i, k in enumerate(kinds) if k != "flow")
        raise ValueError(f"shift_mean='velocity' (App. G's mu = v) needs flow models; model {i} is "
                         f"{_KIND_WORDS[kinds[i]]}, whose step defines no velocity: use 'step' or 'aggregate'")
    if cfg.flow_stochastic is not None and not flows:
        raise ValueError(f"flow_stochastic={cfg.flow_stochastic} applies to flow models; none of these "
                         f"{len(kinds)} models is one (use ddim_eta for DDIM's noise)")
    if cfg.ddim_eta > 0 and len(flows) == len(kinds):
        raise ValueError(f"ddim_eta={cfg.ddim_eta} applies to DDIM steps; these are flow models, which sample "
                         "with noise under flow_stochastic=True")


def _check_ecosystem(models: Sequence) -> None:
    first = models[0]
    for i, m in enumerate(models[1:], start=1):
        ka, kb = schedule_kind(first.scheduler), schedule_kind(m.scheduler)
        if ka != kb:
            raise ValueError(f"model {i}'s noise schedule differs from model 0's: it is {_KIND_WORDS[kb]} and model 0 "
                             f"{_KIND_WORDS[ka]} (another ecosystem); pass --insist (allow_schedule_mismatch=True) to "
                             "aggregate them anyway")
        if not same_schedule(first.scheduler, m.scheduler):
            raise ValueError(f"model {i}'s noise schedule differs from model 0's (a different SDE, another "
                             "ecosystem); pass --insist (allow_schedule_mismatch=True) to aggregate them anyway")
    if all(hasattr(m, "ecosystem") for m in models):  # pipelines: VAE and latent space too
        ref = first.ecosystem()
        for i, m in enumerate(models[1:], start=1):
            bad = [k for k, v in compare(ref, m.ecosystem()).items() if v["same"] is False]
            if bad:
                raise ValueError(f"model {i} is in a different ecosystem from model 0 ({', '.join(bad)} differ); "
                                 "pass --insist (allow_schedule_mismatch=True) to aggregate them anyway")

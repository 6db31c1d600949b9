"""Are two pipelines one diffusion ecosystem? (Section 3.1, App. F.3)

AMDM aggregates latents, so the models must share the latent space and the SDE that moves
through it: the same VAE (by config and by weights), the same noise schedule (betas, prediction
type, timestep spacing and offset), the same latent shape. ``check`` compares these and measures
functional proximity, ``|eps_A(z, t, y) - eps_B(z, t, y)| / |eps_A(z, t, y)|`` over t on random
z_t (each model encoding the same prompt with its own text encoder), and gives a verdict:
``same`` (every structural check agrees), ``different`` (one disagrees) or ``unknown`` (a check
cannot be made, e.g. a pipeline without a VAE).

The fingerprint of a pipeline (``fingerprint``, ``SCHEDULER_KEYS``) is computed in
``amdm_geom.denoisers.fingerprint`` and re-exported here; this module imports the denoisers,
never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .denoisers.fingerprint import SCHEDULER_KEYS, fingerprint
from .denoisers.guidance import uses_guidance
from .denoisers.pipelines import PipelineDenoiser, load_pipeline

__all__ = ["SCHEDULER_KEYS", "EcosystemReport", "check", "compare", "fingerprint", "format_report"]


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

    def summary(self) -> str:
        bad = [k for k, v in self.checks.items() if v["same"] is False]
        unknown = [k for k, v in self.checks.items() if v["same"] is None]
        if self.verdict == "same":
            return "same ecosystem: latent shape, SDE and VAE agree"
        if self.verdict == "different":
            return "different ecosystems: " + ", ".join(bad) + " differ"
        return "unknown: cannot compare " + ", ".join(unknown)


def _as_denoiser(x, device, dtype):
    if isinstance(x, PipelineDenoiser):
        return x
    return PipelineDenoiser(load_pipeline(x, device=device, dtype=dtype), guidance_scale=1.0, name=str(x))


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
            ea = _conditional(da)(z.to(da.device, da.dtype), t, ya).double().flatten(1)
            eb = _conditional(db)(z.to(db.device, db.dtype), t, yb).double().to(ea.device).flatten(1)
            proximity[int(t)] = float(((ea - eb).norm(dim=1) / ea.norm(dim=1)).mean())
    names = (getattr(da, "name", "A"), getattr(db, "name", "B"))
    return EcosystemReport(verdict, checks, proximity, names)


def _conditional(d):
    """The same pipeline, unguided (functional proximity compares conditional epsilons)."""
    if not uses_guidance(d.guidance_scale):
        return d
    key = "_amdm_unguided"
    if getattr(d, key, None) is None:
        setattr(d, key, PipelineDenoiser(d.pipe, guidance_scale=1.0, height=d.image_size[0], width=d.image_size[1],
                                         name=d.name))
    return getattr(d, key)


def format_report(rep: EcosystemReport) -> str:
    lines = [f"A: {rep.names[0]}", f"B: {rep.names[1]}", f"verdict: {rep.verdict.upper()} ({rep.summary()})", ""]
    for name, c in rep.checks.items():
        state = {True: "same", False: "DIFFERENT", None: "unknown"}[c["same"]]
        extra = {k: v for k, v in c.items() if k != "same" and v not in ([], {}, None)}
        lines.append(f"  {name:13s} {state:9s} {extra if extra else ''}".rstrip())
    if rep.proximity:
        lines.append("")
        lines.append("  functional proximity |eps_A - eps_B| / |eps_A| (same prompt, random z_t):")
        for t, v in rep.proximity.items():
            lines.append(f"    t = {t:4d}: {v:.4g}")
        lines.append(f"    median: {float(np.median(list(rep.proximity.values()))):.4g}")
    elif not rep.checks["latent_shape"]["same"]:
        lines.append("  functional proximity: not measured (the latent shapes differ)")
    return "\n".join(lines)


"""The shipped digits ecosystem: ``weights/NAME.safetensors`` (EMA weights, float32, about 1 MB
each) and ``weights/NAME.json`` (the training spec with its objective, v-prediction or flow,
the network and scheduler configs, the training data's hash, the loss curve, the weights'
sha256, training time). Written by
``amdm-geom train digits`` (``train.train_ecosystem``); read here. Nothing is downloaded and
nothing is retrained to load them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from amdm_geom.models.digits.net import DigitsDenoiser, DigitsNet
from amdm_geom.models.digits.train import ECOSYSTEM, TrainSpec, file_sha256, scheduler_of

__all__ = ["WEIGHTS", "load", "load_net", "metadata", "names", "scheduler_from", "verify"]

#: Where the shipped weights live (package data).
WEIGHTS = Path(__file__).resolve().parent / "weights"


def names() -> tuple[str, ...]:
    """The models of the ecosystem, in training order."""
    return tuple(s.name for s in ECOSYSTEM)


def _paths(name: str, folder=None) -> tuple[Path, Path]:
    folder = Path(folder) if folder is not None else WEIGHTS
    if folder == WEIGHTS and name not in names():
        raise ValueError(f"unknown digits model {name!r}; the ecosystem has {', '.join(names())}")
    w, m = folder / f"{name}.safetensors", folder / f"{name}.json"
    if not (w.is_file() and m.is_file()):
        raise FileNotFoundError(f"digits model {name!r} has no weights in {folder} (need {w.name} and {m.name}); "
                                "train it with `amdm-geom train digits`")
    return w, m


def metadata(name: str, folder=None) -> dict:
    """The model's recorded metadata (its JSON file)."""
    return json.loads(_paths(name, folder)[1].read_text())


def verify(name: str, folder=None) -> None:
    """Refuse (one line) weights whose sha256 differs from the one recorded at training."""
    w, _ = _paths(name, folder)
    want, got = metadata(name, folder)["weights_sha256"], file_sha256(w)
    if want != got:
        raise ValueError(f"digits model {name!r}: {w} has sha256 {got[:12]}..., its metadata records {want[:12]}...")


@lru_cache(maxsize=16)
def _net(name: str, folder: str | None) -> DigitsNet:
    from safetensors.torch import load_file

    w, _ = _paths(name, folder)
    verify(name, folder)
    meta = metadata(name, folder)
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["net_config"].items()}
    net = DigitsNet(cfg)
    net.load_state_dict(load_file(str(w)))
    return net.eval().requires_grad_(False)


def load_net(name: str, folder=None) -> DigitsNet:
    """The trained network (checked against its recorded hash; cached: do not modify it)."""
    return _net(name, None if folder is None else str(folder))


def scheduler_from(meta: dict):
    """The scheduler a model was trained with, from its metadata: a ``FlowMatchEulerDiscreteScheduler``
    for objective 'flow', else a ``DDIMScheduler`` (v-prediction, x0 clipped to [-1, 1]); rebuilt
    from the spec where no config was recorded."""
    spec = TrainSpec.model_validate(meta["spec"])
    if "scheduler_config" not in meta:
        return scheduler_of(spec)
    cls = FlowMatchEulerDiscreteScheduler if spec.objective == "flow" else DDIMScheduler
    return cls.from_config(meta["scheduler_config"])


def load(name: str, *, guidance_scale: float = 1.0, folder=None, clip_sample: bool = True) -> DigitsDenoiser:
    """Model ``name`` as a denoiser, with its own scheduler (``scheduler_from``): it returns v
    under v-prediction, the flow velocity eps - x0 under the flow objective.

    ``clip_sample``: the ecosystem's two variants. ``True`` (as trained and shipped) clips the
    step's predicted x0 to [-1, 1]; ``False`` leaves it unclipped, as SD's schedulers do. Above
    guidance 1 the clipped x0 saturates (most digits turn yellow) and the attributes are lost,
    while the unclipped variant keeps them up to guidance 7.5 (the digits benchmark's guidance
    curve, ``analyses/digits/guidance``). A flow model has no clipping: the flag changes nothing."""
    if not isinstance(clip_sample, bool):
        raise ValueError(f"clip_sample must be True or False; got {clip_sample!r}")
    meta = metadata(name, folder)
    spec = TrainSpec.model_validate(meta["spec"])
    sched = scheduler_from(meta)
    if isinstance(sched, DDIMScheduler) and not clip_sample:
        sched = DDIMScheduler.from_config(sched.config, clip_sample=False)
    return DigitsDenoiser(load_net(name, folder), sched, guidance_scale=guidance_scale,
                          attributes=tuple(spec.attributes), name=name)

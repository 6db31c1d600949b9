"""Training the digits ecosystem: one ``TrainSpec`` per model, a deterministic CPU loop, and
the ecosystem's plan (``ECOSYSTEM``) run in worker processes.

Two objectives (``TrainSpec.objective``), for a training image x0 (rendered by
``data.make_dataset``) and eps ~ N(0, I):

- ``v_prediction`` (Salimans & Ho 2022), t uniform in {0, ..., 999}, the net given t:

    z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,   v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0;

- ``flow`` (rectified flow, App. G's interpolant as SD3 and Flux train it), s uniform in [0, 1),
  the net given the float timestep 1000 s (what ``FlowMatchEulerDiscreteScheduler`` passes):

    z_s = (1 - s) x0 + s eps,   v = dz_s/ds = eps - x0   (the velocity of eq. 42);

and in both ``loss = |net(z, timestep, c) - v|^2`` (mean),

with c the image's attributes restricted to the spec's ``attributes`` (the rest null, -1) and
the whole condition dropped to null with probability ``p_uncond`` (for classifier-free
guidance). AdamW with a linear warm-up and cosine decay; the weights kept are an exponential
moving average. Every random draw comes from generators seeded by the spec, and a worker runs
one torch thread, so the same spec gives the same weights on one machine.

The ecosystem: a ``base`` trained unconditionally from scratch; fine-tunes of the base, each
conditioned on one attribute (``position``, ``colour``, ``digit``); and two controls conditioned
on position: ``position_scratch``, trained from another initialisation on the same schedule and
data (the same ecosystem by Section 3.1's definition), and ``position_linear``, on DDPM's linear
schedule (another SDE: a different ecosystem). A rectified-flow ecosystem on the same data:
``flow_base`` (unconditional, from scratch) and its fine-tunes ``flow_position`` and
``flow_colour``, sampled with the Euler flow scheduler (``amdm_geom.core.flow_schedules``).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import model_validator

from amdm_geom.core.flow_schedules import make_flow_scheduler
from amdm_geom.core.schedules import SCHEDULE_KINDS, make_scheduler
from amdm_geom.core.spec import Spec, SpecError, choice, integer, real
from amdm_geom.core.spec import seed as seed_value
from amdm_geom.models.digits.data import ATTRIBUTES, make_dataset
from amdm_geom.models.digits.net import NET_CONFIG, DigitsNet

__all__ = ["ECOSYSTEM", "OBJECTIVES", "TrainSpec", "noised_batch", "scheduler_of", "train"]

SCHEDULES = tuple(SCHEDULE_KINDS)
#: What a model learns to predict: the VP velocity under ``schedule``, or the rectified flow's.
OBJECTIVES = ("v_prediction", "flow")
#: The flow models' time shift (1: the plain linear grid of noise levels; SD3 uses 3 at 1024 px).
FLOW_SHIFT = 1.0


class TrainSpec(Spec):
    """How one model of the ecosystem is trained."""

    name: str
    """the model's name (its files are NAME.safetensors and NAME.json)."""
    attributes: tuple[Literal[ATTRIBUTES], ...] = ()
    """the attributes it is conditioned on (the others always null)."""
    init: str = "scratch"
    """'scratch' (seeded initialisation) or the name of the model whose weights it starts from."""
    objective: Annotated[Literal[OBJECTIVES], choice(*OBJECTIVES)] = "v_prediction"
    """'v_prediction' (the VP velocity under ``schedule``) or 'flow' (the rectified flow's velocity eps - x0)."""
    schedule: Annotated[Literal[SCHEDULES], choice(*SCHEDULES)] = "scaled_linear"
    """its noise schedule (its SDE) under v-prediction; a flow model's interpolant is fixed (keep the default)."""
    steps: Annotated[int, integer(1)] = 3000
    batch: Annotated[int, integer(1)] = 64
    lr: Annotated[float, real(0.0, 1.0, low_open=True)] = 1e-3
    warmup: Annotated[int, integer(0)] = 100
    ema: Annotated[float, real(0.0, 1.0)] = 0.999
    p_uncond: Annotated[float, real(0.0, 1.0)] = 0.1
    seed: Annotated[int, seed_value()] = 0
    """seeds the initialisation (from scratch), the batches, t and eps."""
    data_seed: Annotated[int, seed_value()] = 0
    data_size: Annotated[int, integer(1)] = 16384

    @model_validator(mode="after")
    def _check_init(self):
        if self.init == self.name:
            raise SpecError("must name another model or 'scratch'", self.init, loc=("init",))
        if self.objective == "flow" and self.schedule != "scaled_linear":
            raise SpecError("must be 'scaled_linear' (unused) for objective 'flow': the flow's interpolant is fixed",
                            self.schedule, loc=("schedule",))
        return self


def scheduler_of(spec: TrainSpec):
    """The model's scheduler. v-prediction: a ``DDIMScheduler`` with SD 1.x settings, the spec's
    betas, x0 clipped to [-1, 1]; flow: a deterministic ``FlowMatchEulerDiscreteScheduler`` with
    shift ``FLOW_SHIFT`` (no clipping: diffusers' flow step has none)."""
    if spec.objective == "flow":
        return make_flow_scheduler(shift=FLOW_SHIFT)
    return make_scheduler(spec.schedule, prediction_type="v_prediction", clip_sample=True, clip_sample_range=1.0)


def noised_batch(spec: TrainSpec, x0: torch.Tensor, gen: torch.Generator, abar: torch.Tensor | None = None):
    """One training example per image ``x0 (B, 3, 16, 16)``: ``(z (B, 3, 16, 16), timestep (B,),
    target (B, 3, 16, 16))``, drawing the noise level then eps from ``gen``.

    v-prediction (``abar``: the schedule's alphas_cumprod, float32): t ~ U{0..999} (int64),
    z = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, target sqrt(abar_t) eps - sqrt(1 - abar_t) x0.

    flow: s ~ U[0, 1), z = (1 - s) x0 + s eps, target eps - x0 (App. G, eq. 42's velocity), and
    the timestep the float32 1000 s, as the scheduler passes it at sampling. s is uniform rather
    than SD3's logit-normal: at shift 1 the Euler grid is uniform in s, so every step the sampler
    takes is trained equally, and at 16x16 the ends (small s: fine detail; s near 1: the
    quadrant and colour are decided) matter as much as the middle; the v-prediction models draw t
    uniformly too."""
    batch = x0.shape[0]
    if spec.objective == "flow":
        s = torch.rand(batch, generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        sb = s[:, None, None, None]
        return (1 - sb) * x0 + sb * eps, s * 1000.0, eps - x0
    if abar is None:
        raise ValueError("the v_prediction objective needs abar (the schedule's alphas_cumprod); got None")
    t = torch.randint(0, len(abar), (batch,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    a = abar[t].sqrt()[:, None, None, None]
    sd = (1 - abar[t]).sqrt()[:, None, None, None]
    return a * x0 + sd * eps, t, a * eps - sd * x0


#: The shipped ecosystem, in an order where every model comes after the one it starts from (and the
#: two workers finish together: the controls start while the base trains).
ECOSYSTEM: tuple[TrainSpec, ...] = (
    TrainSpec(name="base", steps=2500, seed=0),
    TrainSpec(name="position_scratch", attributes=("position",), steps=2500, seed=11),
    TrainSpec(name="position_linear", attributes=("position",), schedule="linear", steps=2500, seed=12),
    TrainSpec(name="position", attributes=("position",), init="base", steps=600, lr=5e-4, seed=1),
    TrainSpec(name="colour", attributes=("colour",), init="base", steps=600, lr=5e-4, seed=2),
    TrainSpec(name="digit", attributes=("digit",), init="base", steps=3000, lr=5e-4, seed=3),
    TrainSpec(name="flow_base", objective="flow", steps=2500, seed=20),
    TrainSpec(name="flow_position", objective="flow", attributes=("position",), init="flow_base", steps=600,
              lr=5e-4, seed=21),
    TrainSpec(name="flow_colour", objective="flow", attributes=("colour",), init="flow_base", steps=600, lr=5e-4,
              seed=22),
)


def _lr(spec: TrainSpec, k: int) -> float:
    if k < spec.warmup:
        return spec.lr * (k + 1) / spec.warmup
    frac = (k - spec.warmup) / max(1, spec.steps - spec.warmup)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def file_sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train(spec: TrainSpec, out, *, init_dir=None, progress: bool = True, log_every: int = 50,
          on_log=None) -> Path:
    """Train ``spec`` and write ``out/NAME.safetensors`` (the EMA weights) and ``out/NAME.json``
    (the spec, the data's hash, the loss curve, hashes, time, versions); ``init_dir``: where the
    model it starts from lies (default ``out``); ``on_log(steps_done)`` is called every
    ``log_every`` steps. Returns the weights' path."""
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    torch.manual_seed(spec.seed)  # diffusers' layers initialise from the global generator
    net = DigitsNet(NET_CONFIG)
    if spec.init != "scratch":
        src = Path(init_dir or out) / f"{spec.init}.safetensors"
        if not src.is_file():
            raise FileNotFoundError(f"{spec.name} starts from {spec.init}, but {src} does not exist; train it first")
        net.load_state_dict(load_file(src))
    params = [p for p in net.parameters()]
    ema = [p.detach().clone() for p in params]
    data = make_dataset(spec.data_size, spec.data_seed)
    images = torch.from_numpy(data.images)
    labels = torch.from_numpy(data.labels)
    keep = torch.tensor([a in spec.attributes for a in ATTRIBUTES])
    sched = scheduler_of(spec)
    if spec.init != "scratch":
        _check_same_objective(spec, Path(init_dir or out) / f"{spec.init}.json")
    abar = None if spec.objective == "flow" else sched.alphas_cumprod.to(torch.float32)
    gen = torch.Generator().manual_seed(spec.seed + 1)
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    net.train()
    curve, window = [], []
    for k in tqdm(range(spec.steps), desc=f"train {spec.name}", disable=not progress, mininterval=2.0):
        idx = torch.randint(0, len(images), (spec.batch,), generator=gen)
        x0 = images[idx]
        cond = torch.where(keep, labels[idx], -1)
        drop = torch.rand(spec.batch, generator=gen) < spec.p_uncond
        cond = torch.where(drop[:, None], -1, cond)
        z, t, target = noised_batch(spec, x0, gen, abar)
        loss = torch.mean((net(z, t, cond) - target) ** 2)
        for group in opt.param_groups:
            group["lr"] = _lr(spec, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay = min(spec.ema, (1 + k) / (10 + k))
        with torch.no_grad():  # ema <- decay ema + (1 - decay) params
            for e, p in zip(ema, params):
                e.lerp_(p, 1 - decay)
        window.append(loss.item())
        if len(window) == log_every or k == spec.steps - 1:
            curve.append([k + 1, float(np.mean(window))])
            window = []
            if on_log is not None:
                on_log(k + 1)
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    path = out / f"{spec.name}.safetensors"
    tmp = out / f".{spec.name}.safetensors.partial"
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(tmp))
    tmp.replace(path)
    meta = {"spec": json.loads(spec.model_dump_json()), "net_config": {k: list(v) if isinstance(v, tuple) else v
                                                                     for k, v in NET_CONFIG.items()},
            "scheduler_config": dict(sched.config), "data_sha256": data.sha256,
            "weights_sha256": file_sha256(path), "loss_curve": curve, "train_seconds": time.perf_counter() - t0,
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if spec.objective != "v_prediction":  # the v-prediction models' JSON stays as shipped
        meta = {"objective": spec.objective, "scheduler_class": type(sched).__name__, **meta}
    if spec.init != "scratch":
        meta["init_sha256"] = file_sha256(Path(init_dir or out) / f"{spec.init}.safetensors")
    (out / f"{spec.name}.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return path


def _check_same_objective(spec: TrainSpec, init_meta: Path) -> None:
    """Refuse to fine-tune across objectives (a v-prediction net is no starting point of a flow one)."""
    if init_meta.is_file():
        got = json.loads(init_meta.read_text())["spec"].get("objective", "v_prediction")
        if got != spec.objective:
            raise ValueError(f"{spec.name} (objective {spec.objective!r}) cannot start from {spec.init}, trained with "
                             f"objective {got!r}; accepted: a model of the same objective")


def _worker(spec_json: str, out: str, init_dir: str | None, queue=None) -> tuple[str, float]:
    torch.set_num_threads(1)
    spec = TrainSpec.model_validate_json(spec_json)
    t0 = time.perf_counter()
    report = None if queue is None else (lambda k: queue.put((spec.name, k)))
    train(spec, out, init_dir=init_dir, progress=False, on_log=report)
    return spec.name, time.perf_counter() - t0


def train_ecosystem(out, *, only=None, workers: int = 2, init_dir=None, specs=ECOSYSTEM, log=print,
                    progress: bool = True) -> dict:
    """Train every spec of ``specs`` (or those named in ``only``) into ``out``, at most
    ``workers`` at once in worker processes of one torch thread each, every model after the one
    it starts from (found in ``out``, else ``init_dir``), with one progress bar over all their
    steps. Returns ``{name: seconds}``."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from tqdm import tqdm

    by_name = {s.name: s for s in specs}
    unknown = sorted(set(only or ()) - set(by_name))
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; the ecosystem has {', '.join(by_name)}")
    todo = [s for s in specs if only is None or s.name in only]
    out = Path(out)
    pending, done, futures, seen = [s.name for s in todo], {}, {}, {}
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool, \
            tqdm(total=sum(s.steps for s in todo), desc="train digits", unit="step", disable=not progress) as bar:
        queue = manager.Queue()
        while pending or futures:
            for name in list(pending):
                s = by_name[name]
                if len(futures) >= workers or s.init in pending or s.init in futures.values():
                    continue  # no free worker, or its starting point is still to be trained
                src = out if (s.init == "scratch" or (out / f"{s.init}.safetensors").is_file()) else init_dir
                futures[pool.submit(_worker, s.model_dump_json(), str(out), None if src is None else str(src),
                                    queue)] = name
                pending.remove(name)
                bar.write(f"  training {name} ({s.steps} steps, from {s.init})") if progress else log(
                    f"  training {name} ({s.steps} steps, from {s.init})")
            finished, _ = wait(list(futures), timeout=1.0, return_when=FIRST_COMPLETED)
            while not queue.empty():
                name, k = queue.get()
                bar.update(k - seen.get(name, 0))
                seen[name] = k
            for f in finished:
                name, seconds = f.result()
                del futures[f]
                done[name] = seconds
                bar.write(f"  trained {name} in {seconds:.0f} s") if progress else log(
                    f"  trained {name} in {seconds:.0f} s")
    return done

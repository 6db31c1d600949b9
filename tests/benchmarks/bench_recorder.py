"""Recorder and sampler benchmark: ratios measured in one run (not part of the test suite).

    .venv/bin/python tests/benchmarks/bench_recorder.py        # or: make bench

1. recorder write throughput / raw ``write`` + ``fsync`` throughput of the same bytes;
1b. recorder write throughput with chunk checksums (CRC-32C, the default) / without them;
2. sampler wall time with full recording / without a recorder, on SD-shaped latents
   (4x64x64, batch 4, a tiny UNet with classifier-free guidance);
3. AMDM wall time / single-model wall time, beside the ratio of model evaluations.

Targets (issue 3, on a 2-core machine): ratio 1 >= 0.5; ratio 2 <= 1.10; ratio 3 within 10%
of the evaluation ratio; (issue 22) ratio 1b >= 0.90, the median over paired rounds (each
round writes the run once with checksums and once without, back to back, in alternating order).
Each timing is the best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from amdm_geom.models.unet import condition_pair, tiny_unet_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import ZarrRecorder


class Timed:
    """A model proxy that adds up the seconds spent in its evaluations (``seconds``)."""

    def __init__(self, model):
        self.model, self.seconds = model, 0.0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, z_t, t, cond):
        t0 = time.perf_counter()
        try:
            return self.model(z_t, t, cond)
        finally:
            self.seconds += time.perf_counter() - t0


def raw_write(path: Path, blocks: list[np.ndarray]) -> float:
    """Seconds to write the blocks' bytes to one file with write + fsync."""
    t0 = time.perf_counter()
    with open(path, "wb") as fh:
        for b in blocks:
            fh.write(memoryview(b).cast("B"))
        fh.flush()
        os.fsync(fh.fileno())
    return time.perf_counter() - t0


class UncheckedRecorder(ZarrRecorder):
    """The recorder without chunk checksums: only to measure what they cost."""

    _checksums = False


def recorder_write(path: Path, sampler: AMDMSampler, seeds, blocks_per_step, cls=ZarrRecorder) -> tuple[float, int]:
    """Seconds for a ZarrRecorder to take a whole run's emits and have them on disk."""
    recorder = cls(path, overwrite=True)
    recorder.begin(sampler.plan(seeds))
    t0 = time.perf_counter()
    for k, blocks in enumerate(blocks_per_step):
        for name, value in blocks:
            recorder.record(name, k, value)
        recorder.end_step(k)
    recorder.end(True)
    return time.perf_counter() - t0, recorder.bytes_written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--agg-steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--sample-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="amdm-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    m1, m2 = (Timed(m) for m in tiny_unet_family("perturbed", seed=0, sample_size=args.sample_size))
    y1, y2 = condition_pair(0, dim=m1.cross_attention_dim)
    seeds = list(range(args.batch))
    cfg = SamplerConfig(num_inference_steps=args.steps, agg_steps=args.agg_steps)
    amdm = AMDMSampler([m1, m2], [y1, y2], cfg)
    single = AMDMSampler([m1], [y1], SamplerConfig(num_inference_steps=args.steps, weights=()))
    print(f"SD-shaped latents {tuple(m1.latent_shape)}, batch {args.batch}, tiny UNet "
          f"{m1.describe()['n_parameters']:,} parameters, CFG {m1.guidance_scale}, T={args.steps}, "
          f"s={args.agg_steps}, torch threads {torch.get_num_threads()}", flush=True)
    amdm.sample(seeds[:1])  # warm up allocators and kernels

    # 1. recorder throughput against raw write + fsync of the same bytes
    emitted: dict[int, list] = {}
    with amdm.hooks(lambda name, step, value: emitted.setdefault(step, []).append((name, value.clone()))):
        amdm.sample(seeds)
    blocks_per_step = [emitted[k] for k in sorted(emitted)]
    timed = {ZarrRecorder: [], UncheckedRecorder: []}
    for i in range(max(args.repeats, 10)):  # interleaved, each first in turn, so drift falls on both alike
        for cls in (list(timed) if i % 2 == 0 else list(timed)[::-1]):
            timed[cls].append(recorder_write(scratch / f"rec_{cls.__name__}.zarr", amdm, seeds, blocks_per_step, cls))
    rec_time, nbytes = min(timed[ZarrRecorder])
    bare_time, _ = min(timed[UncheckedRecorder])
    # the checksums' cost: the median over rounds of each round's pair (the two ran back to back)
    paired = sorted(b[0] / c[0] for c, b in zip(timed[ZarrRecorder], timed[UncheckedRecorder]))
    r1b = statistics.median(paired)
    import google_crc32c  # the checksums' own cost, alone: CRC-32C of every chunk the run writes

    t0 = time.perf_counter()
    for blocks in blocks_per_step:
        for _, v in blocks:
            google_crc32c.value(v.numpy())
    crc_time = time.perf_counter() - t0
    flat = [v.numpy() for blocks in blocks_per_step for _, v in blocks]
    raw_time = min(raw_write(scratch / "raw.bin", flat) for _ in range(args.repeats))
    rec_tp, raw_tp = nbytes / rec_time, sum(b.nbytes for b in flat) / raw_time

    # 2. and 3.: runs interleaved (plain, recorded, single model) and the best of each kept, so
    # that drift in the machine's speed (shared CPUs) falls on all three alike
    def run_recorded():
        with amdm.recording(ZarrRecorder(scratch / "run.zarr", overwrite=True)):
            amdm.sample(seeds)

    timers = {"plain": [], "recorded": [], "single": []}
    in_model = {"plain": [], "single": []}
    for _ in range(args.repeats):
        for key, fn in (("plain", lambda: amdm.sample(seeds)), ("recorded", run_recorded),
                        ("single", lambda: single.sample(seeds))):
            m1.seconds = m2.seconds = 0.0
            t0 = time.perf_counter()
            fn()
            timers[key].append(time.perf_counter() - t0)
            if key in in_model:
                in_model[key].append(m1.seconds + m2.seconds)
    t_plain, t_rec, t_single = (min(timers[k]) for k in ("plain", "recorded", "single"))
    calls_amdm, calls_single = args.steps + args.agg_steps, args.steps
    outside = {k: min(t - m for t, m in zip(timers[k], in_model[k])) / calls for k, calls in
               (("plain", calls_amdm), ("single", calls_single))}

    r1, r2, r3, r_eval = rec_tp / raw_tp, t_rec / t_plain, t_plain / t_single, calls_amdm / calls_single
    rows = [
        ("recorder / raw write+fsync throughput", f"{r1:.2f}x", ">= 0.5x", r1 >= 0.5,
         f"{rec_tp / 1e6:.0f} MB/s vs {raw_tp / 1e6:.0f} MB/s, {nbytes / 1e6:.0f} MB"),
        ("recorder with checksums / without", f"{r1b:.3f}x", ">= 0.90x", r1b >= 0.90,
         f"best {rec_tp / 1e6:.0f} MB/s vs {nbytes / bare_time / 1e6:.0f} MB/s; median of {len(paired)} paired rounds; "
         f"the CRC-32C alone: {1e3 * crc_time:.1f} ms = {crc_time / rec_time:.1%} of the recorder's time"),
        ("sampler with full recording / without", f"{r2:.3f}", "<= 1.10", r2 <= 1.10,
         f"{t_rec:.1f} s vs {t_plain:.1f} s"),
        ("AMDM / single-model wall time", f"{r3:.3f}", f"within 10% of {r_eval:.2f}", abs(r3 / r_eval - 1) <= 0.10,
         f"{t_plain:.1f} s vs {t_single:.1f} s; model evaluations {calls_amdm} / {calls_single} = {r_eval:.2f}"),
    ]
    note = (f"time outside model calls, per call: AMDM {1e3 * outside['plain']:.1f} ms, single model "
            f"{1e3 * outside['single']:.1f} ms (model calls themselves: "
            f"{1e3 * min(in_model['single']) / calls_single:.0f} ms each)")
    print()
    for name, value, target, ok, detail in rows:
        print(f"{name:40s} {value:>8s}  target {target:22s} {'met' if ok else 'MISSED'}   ({detail})")
    print(note)
    if args.dir is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

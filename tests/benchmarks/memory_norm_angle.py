"""Peak memory of the Prop. 3.1 analysis on two stores that differ only in their number of samples
(issue 15, point 3; not part of the test suite).

    .venv/bin/python tests/benchmarks/memory_norm_angle.py [--shape 4,32,32] [--batch 8] [--factor 8]

Makes two stores in one run (the exact GMM pair at ``--shape``, float32, ``--steps`` steps, the
delta-bound terms recorded), of ``batch`` and ``factor * batch`` samples, both recorded in chunks of
``--chunk`` samples; then, each in a fresh subprocess (one torch thread), runs on each store:

- ``streamed``: ``norm_angle.compute`` reading ``--chunk`` samples at a time (the analysis'
  results: every per-(step, sample) quantity of Prop. 3.1);
- ``whole``: the same, reading all samples of a step at once (what it did before streaming);
- ``analyze``: ``run_analysis("norm_angle", ...)`` as ``amdm-geom analyze norm_angle`` runs it,
  with the default reads (``common.CHUNK_BYTES``), Table 5, the figures and the written results.

It prints, per mode and store, the peak RSS of the subprocess (``ru_maxrss``), its RSS after the
imports (so the analysis' own growth shows), the peak of Python-tracked allocations during the
analysis (``tracemalloc``: numpy's arrays included), the ratio large / small of each (target: peak
RSS ratio <= 1.3) and the seconds per GB of latents read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time, tracemalloc
import torch
torch.set_num_threads(1)
from amdm_geom.analyses.prop31 import norm_angle
from amdm_geom.app.runner import run_analysis
from amdm_geom.store import open_run

def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

mode, path, chunk, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ds = open_run(path)
read = sum(ds[v].isel(model=[0, 1]).nbytes for v in ("z_next", "z", "eps", "noise"))
read += sum(ds[v].isel(model=1).nbytes for v in ("eps_cross", "eps_at_z1"))
ds.close()
before = rss_mib()
tracemalloc.start()
t0 = time.perf_counter()
if mode == "analyze":
    run_analysis("norm_angle", {"run": path}, out)
else:
    norm_angle.compute({"run": path}, chunk=chunk)
seconds = time.perf_counter() - t0
traced = tracemalloc.get_traced_memory()[1] / 2**20
tracemalloc.stop()
print(json.dumps({"rss_before": before, "rss_peak": rss_mib(), "traced_peak": traced, "seconds": seconds,
                  "read_gb": read / 1e9}))
"""


def make_store(path: Path, shape: tuple[int, ...], batch: int, steps: int, chunk: int) -> Path:
    """The exact GMM pair (model 2 perturbed) at ``shape``, ``batch`` samples, float32, recorded in
    chunks of ``chunk`` samples."""
    from amdm_geom.models.gmm import fine_grained_family
    from amdm_geom.sampling import AMDMSampler, SamplerConfig
    from amdm_geom.store import ZarrRecorder

    fam = fine_grained_family(shape, separation=6.0, seed=3)
    models = [fam.model(name="a"), fam.model(name="b", perturb=0.05)]
    conds = [fam.condition(position=0), fam.condition(colour=1)]
    sampler = AMDMSampler(models, conds, SamplerConfig(num_inference_steps=steps, agg_steps=min(8, steps - 1),
                                                       record_cross_eps=True, continue_after_window=True))
    with sampler.recording(ZarrRecorder(path)):
        sampler.sample(list(range(batch)), chunk_size=chunk)
    return path


def measure(mode: str, path: Path, chunk: int, batch: int, out: Path) -> dict:
    """One mode on one store, in a fresh subprocess: its JSON line."""
    # ``whole`` reads all ``batch`` samples at once: compute(chunk=batch)
    arg = chunk if mode == "streamed" else batch
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(arg), str(out)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="4,32,32", help="latent shape (default 4,32,32)")
    parser.add_argument("--batch", type=int, default=8, help="samples in the small store (default 8)")
    parser.add_argument("--factor", type=int, default=8, help="the large store has factor x batch samples")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps (default 20)")
    parser.add_argument("--chunk", type=int, default=8, help="samples per store chunk and per read (default 8)")
    parser.add_argument("--modes", default="streamed,whole,analyze", help="which modes to run")
    args = parser.parse_args()
    shape = tuple(int(x) for x in args.shape.split(","))
    sizes = (args.batch, args.factor * args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        stores = {}
        for b in sizes:
            stores[b] = make_store(Path(tmp) / f"b{b}.zarr", shape, b, args.steps, args.chunk)
            print(f"store of {b} samples: {stores[b]}", flush=True)
        print(f"\nlatents {shape}, float32, {args.steps} steps, chunks of {args.chunk} samples; MiB")
        print(f"{'mode':9} {'samples':>7} {'rss peak':>9} {'rss before':>10} {'traced peak':>11} {'s/GB read':>9}")
        for mode in args.modes.split(","):
            got = {b: measure(mode, stores[b], args.chunk, b, Path(tmp) / f"out_{mode}_{b}") for b in sizes}
            for b, r in got.items():
                print(f"{mode:9} {b:7d} {r['rss_peak']:9.1f} {r['rss_before']:10.1f} {r['traced_peak']:11.1f} "
                      f"{r['seconds'] / r['read_gb']:9.1f}")
            small, large = got[sizes[0]], got[sizes[1]]
            grow = [r["rss_peak"] - r["rss_before"] for r in (small, large)]
            print(f"{mode:9} ratio {sizes[1]}/{sizes[0]}: peak RSS {large['rss_peak'] / small['rss_peak']:.3f} "
                  f"(target <= 1.3), RSS growth during the analysis {grow[0]:.1f} -> {grow[1]:.1f} MiB, "
                  f"traced peak {large['traced_peak'] / small['traced_peak']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

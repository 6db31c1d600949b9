"""Store compression benchmark: compression ratio and write speed of each compressor on the
float32 latents of a real run (not part of the test suite).

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/compression.py [--shape 4 32 32] [--steps 20]

The gmm_pair probe (two exact GMM models) runs once at ``--shape`` with every hook quantity
recorded onto a tape; the tape is then replayed into a ``ZarrRecorder`` per compressor (the same
calls the sampler makes, background thread included, so the time is the recorder's alone):
none (the raw chunk writer), zstd levels 1 and 3, blosc lz4 and blosc zstd (byte shuffle, level
5). ratio = recorded bytes / bytes of the chunk files on disk; MB/s = recorded MB / seconds from
``begin`` to the end of ``end`` (best of ``--repeats``). Every store is read back and compared with
the run's values bit for bit.

Measured here (2 shared cores, shape 4x32x32, 20 steps, batch 4, 22.3 MB recorded, 64 KB
chunks; two runs, the second on a busier machine):

    compressor     ratio     MB/s (run 1)   MB/s (run 2)
    none           1.000       55             23
    zstd-1         1.225       18             11
    zstd-3         1.225       20             16
    blosc-lz4      1.201       29             16
    blosc-zstd     1.254       20             17

The ratios are stable; the speeds vary with the machine's load, but the raw writer is always
the fastest (1.4x to 3x). Float32 latents are noise-like: their low mantissa bits do not
compress, so no codec saves more than ~20% while every one writes slower; the
default compressor stays "none" (``RunSettings``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from zarr.codecs import BloscCodec, ZstdCodec

from amdm_geom.probes import gmm_pair
from amdm_geom.sampling.recording import Recorder
from amdm_geom.store import ZarrRecorder, open_run

COMPRESSORS = {
    "none": "none",
    "zstd-1": ZstdCodec(level=1),
    "zstd-3": ZstdCodec(level=3),
    "blosc-lz4": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    "blosc-zstd": BloscCodec(cname="zstd", clevel=5, shuffle="shuffle"),
}


class Tape(Recorder):
    """Keeps every call the sampler makes on a recorder, to replay them into others."""

    def _open(self, plan) -> None:
        self.calls = []

    def record(self, name, step, value, offset=0) -> None:
        self.calls.append(("record", name, step, value.detach().clone(), offset))

    def end_step(self, step) -> None:
        self.calls.append(("end_step", step))

    def end(self, complete) -> None:
        pass

    def _set_attr(self, key, value) -> None:
        pass


def replay(tape: Tape, path: Path, compressor) -> tuple[float, int]:
    """Seconds to write the tape into a new store at ``path``, and the bytes recorded."""
    rec = ZarrRecorder(path, compressor=compressor, overwrite=path.exists())
    start = time.perf_counter()
    rec.begin(tape.plan)
    for call in tape.calls:
        if call[0] == "record":
            rec.record(*call[1:])
        else:
            rec.end_step(call[1])
    rec.end(True)
    return time.perf_counter() - start, rec.bytes_written


def chunk_bytes(path: Path) -> int:
    """Bytes of the data variables' chunk files (every file but the zarr.json metadata)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "zarr.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[4, 32, 32])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spec = gmm_pair.Spec(family={"latent_shape": tuple(args.shape)}, sampler={"steps": args.steps},
                         run={"batch": args.batch, "progress": False})
    sampler = gmm_pair.build(spec)
    tape = Tape()
    with sampler.recording(tape):
        sampler.sample(spec.run.seeds)
    folder = Path(tempfile.mkdtemp(prefix="amdm-compression-", dir=os.environ.get("BENCH_DIR")))
    try:
        rows, reference = [], None
        for name, compressor in COMPRESSORS.items():
            path = folder / f"{name}.zarr"
            times = []
            for _ in range(args.repeats):
                seconds, recorded = replay(tape, path, compressor)
                times.append(seconds)
            ds = open_run(path).load()
            if reference is None:
                reference = ds
            for var in reference.data_vars:  # every compressor gives back the same bits
                assert np.array_equal(ds[var].values.view(np.uint8), reference[var].values.view(np.uint8)), var
            rows.append((name, recorded / chunk_bytes(path), recorded / 1e6 / min(times)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"gmm_pair, latent {tuple(args.shape)}, {args.steps} steps, batch {args.batch}, "
          f"{recorded / 1e6:.1f} MB recorded (float32), best of {args.repeats}")
    print(f"{'compressor':<12} {'ratio':>7} {'MB/s':>8}")
    for name, ratio, speed in rows:
        print(f"{name:<12} {ratio:>7.3f} {speed:>8.0f}")


if __name__ == "__main__":
    main()

"""Export cost: :func:`vaebias.data.export_dataset` (contiguous datasets allocated at creation,
``pwrite`` per chunk, a checksum per chunk, fsync, the whole file read back and checked before
the rename) against the writer it replaced (h5py chunked datasets, one slice assignment per
chunk and a ``rows_done`` attribute, no digest, no read-back), on the same images in the same
run. Also the check a rerun makes of a finished file.

Target, written before the first run: the export at <= 1.5x the old writer's time; the rerun's
check at <= 0.5x the old writer's time.

The dataset is an in-memory full grid of N random uint8 images (64x64, one channel), so the
time is the file work, not rendering. Best of ``--repeats`` each, alternating.

    .venv/bin/python benchmarks/export.py [--images 65536] [--repeats 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from vaebias.data import export_dataset, from_arrays


def old_writer(data, path: Path, chunk: int = 4096) -> None:
    """The version-1 writer's file work: chunked datasets, per-chunk slice writes, rows_done."""
    n = len(data)
    c, h, w = data.observation_shape
    with h5py.File(path, "w") as f:
        f.create_dataset("images", shape=(n, c, h, w), dtype=np.uint8, chunks=(min(n, 64), c, h, w))
        f.create_dataset("factors", shape=(n, data.num_factors), dtype=np.int16)
        f.attrs["rows_done"] = 0
        for start in range(0, n, chunk):
            idx = np.arange(start, min(n, start + chunk))
            factors = data.factors_of(idx)
            x = data.images(factors).numpy()
            f["images"][start: start + len(idx)] = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
            f["factors"][start: start + len(idx)] = factors.astype(np.int16)
            f.attrs["rows_done"] = start + len(idx)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=65536, help="a square number (a side x side grid)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", default=None, help="where the files go (default: the system's temp folder)")
    args = p.parse_args()
    side = int(round(args.images ** 0.5))
    n = side * side
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 1, 64, 64), dtype=np.uint8)
    factors = np.stack(np.unravel_index(np.arange(n), (side, side)), axis=1)
    data = from_arrays(images, factors, name="bench")
    times = {"old": [], "export": [], "rerun_check": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for r in range(args.repeats):
            a, b = Path(tmp) / f"old{r}.h5", Path(tmp) / f"new{r}.h5"
            t0 = time.perf_counter()
            old_writer(data, a)
            times["old"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            export_dataset(data, b, kind="copy", progress=False)
            times["export"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            export_dataset(data, b, kind="copy", progress=False)  # finished: checked, not rewritten
            times["rerun_check"].append(time.perf_counter() - t0)
            a.unlink()
            b.unlink()
    best = {k: min(v) for k, v in times.items()}
    mb = images.nbytes / 2**20
    print(json.dumps({"images": n, "MiB": round(mb), "best_s": {k: round(v, 3) for k, v in best.items()},
                      "all_s": {k: [round(x, 3) for x in v] for k, v in times.items()}}))
    print(f"export / old writer: {best['export'] / best['old']:.2f}x (target <= 1.5x)")
    print(f"rerun check / old writer: {best['rerun_check'] / best['old']:.2f}x (target <= 0.5x)")


if __name__ == "__main__":
    main()

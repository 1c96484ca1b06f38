"""Speed of the procedural dSprites renderer (vaebias.data.dsprites.DSpritesRenderer).

Prints images/s for uniformly random batches of several sizes and, unless
``--skip-full``, the time to render the whole 737,280-image grid and its mean pixel
value (the real file's is 0.042494).

    python benchmarks/render_dsprites.py --batch-sizes 64 1024 4096 --device cpu
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vaebias.data.dsprites import MEAN_PIXEL, DSpritesRenderer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_batches(r: DSpritesRenderer, sizes, seconds: float, device: torch.device, seed: int):
    rng = np.random.default_rng(seed)
    for bs in sizes:
        f = r.sample_factors(bs, rng)
        r.images(f, device=device)  # warm-up (tables, allocator)
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            f = r.sample_factors(bs, rng)
            r.images(f, device=device)
            n += bs
        _sync(device)
        dt = time.perf_counter() - t0
        print(f"batch {bs:6d}: {n / dt:12,.0f} images/s  ({n} images in {dt:.2f} s)", flush=True)


def bench_full_grid(r: DSpritesRenderer, block: int, device: torch.device):
    t0 = time.perf_counter()
    total = 0
    n = len(r)
    for a in range(0, n, block):
        idx = np.arange(a, min(n, a + block))
        # float32 sums of 0/1 pixels are exact below 2**24 on-pixels per block
        total += int(r.images(index=idx, device=device).sum().item())
    mean = total / (n * 64 * 64)
    dt = time.perf_counter() - t0
    print(
        f"full grid: {n} images in {dt:.1f} s ({n / dt:,.0f} images/s); mean pixel {mean:.6f} "
        f"(real {MEAN_PIXEL}, relative difference {mean / MEAN_PIXEL - 1:+.4%})",
        flush=True,
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024, 4096])
    p.add_argument("--seconds", type=float, default=2.0, help="time per batch size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunk-size", type=int, default=2048, help="renderer chunk size")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--full-block", type=int, default=8192, help="images per request in the full-grid pass")
    p.add_argument("--skip-full", action="store_true", help="skip the full-grid pass")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    r = DSpritesRenderer(chunk_size=a.chunk_size)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, chunk {a.chunk_size}")
    bench_batches(r, a.batch_sizes, a.seconds, device, a.seed)
    if not a.skip_full:
        bench_full_grid(r, a.full_block, device)


if __name__ == "__main__":
    main()

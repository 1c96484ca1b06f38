"""Speed of the procedural Shapes3D renderer (vaebias.data.shapes3d.Shapes3DRenderer).

Prints, in one run on the same machine:

1. the one-off cost of building the shading tables of all 480 geometries;
2. images/s of the renderer for uniformly random batches of several sizes;
3. the baseline: images/s of a straightforward renderer that ray-traces every image
   on its own (same scene, same rays per pixel, no cached tables);
4. the dSprites renderer's images/s on the same batch size, for scale;

and, on the last line, the ratio of (2) at the largest batch size to (3).

    python benchmarks/render_shapes3d.py --batch-sizes 64 1024 4096 --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vaebias.data.dsprites import DSpritesRenderer
from vaebias.data.shapes3d import Shapes3DRenderer, hue_to_rgb, trace_geometries


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_batches(r, sizes, seconds: float, device: torch.device, seed: int, label: str) -> dict:
    rng = np.random.default_rng(seed)
    rates = {}
    for bs in sizes:
        r.images(r.sample_factors(bs, rng), device=device)  # warm-up
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            r.images(r.sample_factors(bs, rng), device=device)
            n += bs
        _sync(device)
        dt = time.perf_counter() - t0
        rates[bs] = n / dt
        print(f"{label} batch {bs:6d}: {rates[bs]:12,.0f} images/s  ({n} images in {dt:.2f} s)", flush=True)
    return rates


def uncached_render(r: Shapes3DRenderer, factors: np.ndarray) -> torch.Tensor:
    """The baseline: ray-trace each image's geometry on its own, then colour it."""
    table = hue_to_rgb(torch.arange(10, dtype=torch.float64) / 10)
    out = []
    for f in factors:
        geom = np.array([f[3] * 60 + f[4] * 15 + f[5]])
        w, c, _ = trace_geometries(r.params, geom, r.supersample)
        x = (c[0] + table[torch.as_tensor(f[:3])].T @ w[0]).clamp(0, 1)
        out.append(x.view(3, 64, 64).to(torch.float32))
    return torch.stack(out)


def bench_uncached(r: Shapes3DRenderer, seconds: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    uncached_render(r, r.sample_factors(1, rng))  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        uncached_render(r, r.sample_factors(4, rng))
        n += 4
    rate = n / (time.perf_counter() - t0)
    print(f"baseline (per-image ray-cast, no cache): {rate:10,.1f} images/s ({n} images)", flush=True)
    return rate


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024, 4096])
    p.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    p.add_argument("--device", default="cpu")
    p.add_argument("--supersample", type=int, default=2, help="renderer rays per pixel along each axis")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    r = Shapes3DRenderer(supersample=a.supersample)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"supersample {a.supersample}")
    t0 = time.perf_counter()
    r.prepare()
    r.images(np.zeros((1, 6), np.int64), device=device)
    print(f"tables for all 480 geometries: {time.perf_counter() - t0:.2f} s (once per process)", flush=True)
    rates = bench_batches(r, a.batch_sizes, a.seconds, device, a.seed, "shapes3d")
    base = bench_uncached(r, a.seconds, a.seed + 1)
    bench_batches(DSpritesRenderer(), [max(a.batch_sizes)], a.seconds, device, a.seed + 2, "dsprites")
    bs = max(a.batch_sizes)
    print(f"speed-up of the cached renderer (batch {bs}) over the per-image ray-cast: {rates[bs] / base:,.0f}x")


if __name__ == "__main__":
    main()

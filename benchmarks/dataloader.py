"""DataLoader throughput: ``torch.utils.data.DataLoader(data, batch_size, shuffle=True)``
on a vaebias dataset (batched through ``GroundTruthData.__getitems__``, one
``images`` call per batch) against the training loop's own sampler
(:class:`vaebias.data.samplers.UniformSampler`), measured in the same run, same thread
count, same batch size, alternating, best of three each. Target: the DataLoader at >= 0.5x the sampler's images/s.

The last line of each dataset is the ratio DataLoader / sampler.

    .venv/bin/python benchmarks/dataloader.py [--datasets dsprites shapes3d blobs] [--batches 50]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from vaebias.data import load_dataset
from vaebias.data.samplers import UniformSampler


def _sampler_rate(data, batch_size: int, batches: int) -> float:
    sampler, rng = UniformSampler(data), np.random.default_rng(0)
    sampler.sample(batch_size, rng, "cpu")  # warm-up
    t0 = time.perf_counter()
    for _ in range(batches):
        sampler.sample(batch_size, rng, "cpu")
    return batches * batch_size / (time.perf_counter() - t0)


def _loader_rate(data, batch_size: int, batches: int) -> float:
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))

    def batches_forever():  # a small dataset (blobs: 1,024 points) ends its epoch early
        while True:
            yield from loader

    it = batches_forever()
    next(it)  # warm-up
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - t0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["dsprites", "shapes3d", "blobs"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    print(f"torch threads {torch.get_num_threads()}, batch {args.batch_size}, {args.batches} batches")  # noqa: T201
    for name in args.datasets:
        data = load_dataset(name)
        # alternating, best of --repeats each: the first calls of a renderer fill its caches
        s = d = 0.0
        for _ in range(args.repeats):
            s = max(s, _sampler_rate(data, args.batch_size, args.batches))
            d = max(d, _loader_rate(data, args.batch_size, args.batches))
        print(f"{name}: sampler {s:,.0f} images/s, DataLoader {d:,.0f} images/s, ratio {d / s:.2f}")  # noqa: T201


if __name__ == "__main__":
    main()

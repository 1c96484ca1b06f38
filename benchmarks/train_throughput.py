"""Training throughput of vaebias's fast step against a plain PyTorch fp32 loop of the
same model, measured in the same run (issue: scale).

The model is the dSprites conv beta-VAE (the standard encoder/decoder, batch 64).

- Baseline: a plain loop written here - ``data.sample_factors`` + ``data.images``,
  ``model.loss``, ``backward``, ``torch.optim.Adam`` with its defaults - in float32,
  contiguous layout.
- vaebias: the real training loop, :func:`vaebias.training.loop.fit` with
  ``TrainConfig.fast()`` (bf16 autocast of the forward passes, channels-last, fused
  Adam, and on a CPU the batch split into one shard per torch thread, each shard's
  forward and backward on its own thread: ``data_parallel``), including its sampler,
  logging and checkpoint.

Sections (images/s over ``--steps`` steps after ``--warmup`` steps):

1. one run with ``--threads`` torch threads (default: every core), baseline vs vaebias;
2. CPU only: how vaebias trains several runs on this CPU - ``--packed`` runs side by
   side, each a process with one thread - against the baseline's one-run throughput
   (runs one after another, each with every core);
3. with ``--curve-steps N``: the loss curve of the fast step against fp32, same seed,
   N steps each, on ``--curve-device`` (cpu, or cuda: there fp32 convolutions may run as
   TF32, PyTorch's default) (windowed means, largest relative difference), next to the difference
   between two fp32 seeds as the scale of run-to-run variation;
4. when CUDA is present: the baseline and the fast step on the GPU, images/s and the
   fraction of the device's bf16 peak (``--peak-tflops``, or a table of known devices),
   from a FLOP count of one step (``torch.utils.flop_counter``).

The last line is the ratio of section 1 on a CPU machine (section 4 on a GPU machine).

    .venv/bin/python benchmarks/train_throughput.py [--steps 100] [--curve-steps 2000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time

import numpy as np
import torch

from vaebias._internal.config import FAST_STEP, TrainConfig
from vaebias.data import load_dataset
from vaebias.models import build_model
from vaebias.training import fit

#: dense bf16 tensor-core peaks, TFLOP/s (vendor data sheets; SXM parts)
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0,
                    "RTX 4090": 165.0, "RTX 3090": 71.0}


def _model(data, seed=0):
    torch.manual_seed(seed)
    return build_model("beta_vae", data.observation_shape, data.num_factors, {}, dataset="dsprites")


def plain_loop(steps: int, warmup: int, batch: int, device: str, seed: int = 0) -> float:
    """The baseline: images/s of a plain fp32 training loop of the same model."""
    data = load_dataset("dsprites")
    model = _model(data, seed).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(seed)
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        f = data.sample_factors(batch, rng)
        x = data.images(f, device=device)
        loss = model.loss({"images": x, "factors": torch.as_tensor(f, device=device)})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def vaebias_fit(steps: int, warmup: int, batch: int, device: str, seed: int = 0, barrier=None,
                losses: list | None = None, **train_kw) -> float:
    """images/s of vaebias's training loop (``fit``) over the steps after ``warmup``."""
    data = load_dataset("dsprites")
    model = _model(data, seed)
    kw = {**FAST_STEP, **train_kw}
    cfg = TrainConfig(steps=warmup + steps, batch_size=batch, seed=seed, device=device,
                      checkpoint_every=10 ** 9, log_every=10 ** 9, **kw)
    mark = {}

    def cb(step, terms):
        if losses is not None:
            losses.append(terms["loss"])
        if step == warmup:
            if barrier is not None:
                barrier.wait()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            mark["t0"] = time.perf_counter()
        if step == warmup + steps:  # before the final checkpoint is written
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            mark["t1"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        fit(model, data, tmp, cfg, {"benchmark": True}, progress=False, callback=cb)
    return steps * batch / (mark["t1"] - mark["t0"])


_BARRIER = None


def _init_worker(barrier):
    global _BARRIER
    _BARRIER = barrier
    torch.set_num_threads(1)


def _packed_worker(args):
    steps, warmup, batch, seed = args
    return vaebias_fit(steps, warmup, batch, "cpu", seed=seed, barrier=_BARRIER)


def packed(n: int, steps: int, warmup: int, batch: int) -> float:
    """Aggregate images/s of ``n`` fast-step runs side by side, one thread each (their
    timed windows start together, at a barrier after the warm-up)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n)
    with ctx.Pool(n, initializer=_init_worker, initargs=(barrier,)) as pool:
        rates = pool.map(_packed_worker, [(steps, warmup, batch, s) for s in range(n)])
    return float(sum(rates))


def step_flops(device: str, batch: int) -> float:
    """FLOPs of one training step (forward + backward) of the model at ``batch``."""
    from torch.utils.flop_counter import FlopCounterMode

    data = load_dataset("dsprites")
    model = _model(data).to(device)
    x = data.images(data.sample_factors(batch, np.random.default_rng(0)), device=device)
    with FlopCounterMode(display=False) as counter:
        model.loss({"images": x})["loss"].backward()
    return float(counter.get_total_flops())


def _spread(values) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in values) + "]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--packed", type=int, default=os.cpu_count(), help="runs side by side in section 2")
    p.add_argument("--curve-steps", type=int, default=0, help="section 3's steps per precision (0: skip)")
    p.add_argument("--curve-device", choices=("cpu", "cuda"), default="cpu",
                   help="where section 3 runs (cuda: also with --skip-cpu)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak")
    p.add_argument("--repeats", type=int, default=3, help="interleaved measurements in section 1 (median)")
    p.add_argument("--skip-cpu", action="store_true", help="skip sections 1-3 (on a GPU machine)")
    args = p.parse_args()
    b, s, w = args.batch_size, args.steps, args.warmup
    print(f"# dSprites conv beta-VAE, batch {b}, {s} timed steps after {w}; torch {torch.__version__}, "
          f"{os.cpu_count()} cores, CPU capability {torch.backends.cpu.get_cpu_capability()}")

    torch.set_num_threads(args.threads)
    ratio_line = "ratio: not measured (CPU skipped, no CUDA)"
    if not args.skip_cpu:
        fp32 = {"precision": "fp32", "channels_last": False, "fused_adam": False, "data_parallel": 1}
        runs = {"plain": [], "fp32 fit": [], "unsharded": [], "fast": []}
        for _ in range(args.repeats):  # interleaved, so that drifting load hits all alike
            runs["plain"].append(plain_loop(s, w, b, "cpu"))
            runs["fast"].append(vaebias_fit(s, w, b, "cpu"))
            runs["fp32 fit"].append(vaebias_fit(s, w, b, "cpu", **fp32))
            runs["unsharded"].append(vaebias_fit(s, w, b, "cpu", data_parallel=1))
        med = {k: float(np.median(v)) for k, v in runs.items()}
        base, fast = med["plain"], med["fast"]
        print(f"## 1. one run, {args.threads} threads (median of {args.repeats} interleaved measurements)")
        print(f"plain fp32 loop:                      {base:8.0f} images/s  {_spread(runs['plain'])}")
        print(f"vaebias fit, fp32 settings:           {med['fp32 fit']:8.0f} images/s ({med['fp32 fit'] / base:.2f}x: "
              f"the loop's own overhead)")
        print(f"vaebias fit, fast step, unsharded:    {med['unsharded']:8.0f} images/s "
              f"({med['unsharded'] / base:.2f}x)")
        print(f"vaebias fit, fast step:               {fast:8.0f} images/s ({fast / base:.2f}x)  "
              f"{_spread(runs['fast'])}", flush=True)
        ratio_line = f"ratio (vaebias fast step / plain fp32 loop, one run, images/s): {fast / base:.2f}x"
    if args.packed > 1 and not args.skip_cpu:
        agg = packed(args.packed, s, w, b)
        print(f"## 2. {args.packed} runs side by side, one thread each (another way to use the cores for "
              f"several runs)")
        print(f"vaebias fast step, aggregate: {agg:8.0f} images/s ({agg / base:.2f}x the plain loop's one run)")

    if args.curve_steps and (not args.skip_cpu or args.curve_device == "cuda"):
        torch.set_num_threads(args.threads)
        fp32 = {"precision": "fp32", "channels_last": False, "fused_adam": False, "data_parallel": 1}
        curves = {}
        for name, seed, kw in (("fp32", 0, fp32), ("fast", 0, {}), ("fp32 seed 1", 1, fp32)):
            losses = []
            vaebias_fit(args.curve_steps, 1, b, args.curve_device, seed=seed, losses=losses, **kw)
            curves[name] = np.asarray(losses)
        n = min(map(len, curves.values()))
        windows = np.array_split(np.arange(n), 10)
        mean = {k: np.array([v[i].mean() for i in windows]) for k, v in curves.items()}
        rel = np.abs(mean["fast"] - mean["fp32"]) / mean["fp32"]
        seed_rel = np.abs(mean["fp32 seed 1"] - mean["fp32"]) / mean["fp32"]
        print(f"## 3. loss curve on {args.curve_device}, {n} steps: mean loss per tenth (fp32 seed 0 / fast step seed 0 / fp32 seed 1)")
        print(" | ".join(f"{x:.1f}/{y:.1f}/{z:.1f}" for x, y, z in zip(mean["fp32"], mean["fast"],
                                                                    mean["fp32 seed 1"])))
        print(f"largest relative difference of the windowed means: fast vs fp32 (same seed) {rel.max():.4f}, "
              f"last half {rel[5:].max():.4f}; fp32 seed 1 vs seed 0 {seed_rel.max():.4f}, "
              f"last half {seed_rel[5:].max():.4f}")

    if torch.cuda.is_available():
        dev = "cuda"
        name = torch.cuda.get_device_name()
        peak = args.peak_tflops or next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
        gbase = plain_loop(s, w, b, dev)
        gfast = vaebias_fit(s, w, b, dev)
        flops = step_flops(dev, b) / b  # per image
        print(f"## 4. GPU {name}")
        print(f"plain fp32 loop: {gbase:.0f} images/s; vaebias fast step: {gfast:.0f} images/s "
              f"({gfast / gbase:.2f}x); {flops / 1e9:.3f} GFLOP per image per step")
        if peak:
            print(f"fraction of the bf16 peak ({peak:.0f} TFLOP/s): {gfast * flops / (peak * 1e12):.4f}")
        ratio_line = f"ratio (vaebias fast step / plain fp32 loop on {name}): {gfast / gbase:.2f}x"
    print(ratio_line)


if __name__ == "__main__":
    main()

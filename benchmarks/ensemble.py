"""Ensembles: M runs of the dSprites conv beta-VAE (batch 64) trained as one batched
ensemble (:func:`vaebias.training.ensemble.train_ensemble`) against the same M runs one after
another with the solo training loop, measured in the same run (issue: scale).

Both sides use the same training settings (``--fast``: bf16 autocast and fused Adam;
default fp32) and the same thread count; images/s count every member's images over
``--steps`` steps after ``--warmup`` (the clock stops at the last step's callback, before
the runs' final checkpoints are written). On a CPU a third line times the way vaebias
packs runs there: one single-thread process per core, each training its share of the
runs one after another. When CUDA is present the ensemble is also timed at larger
sizes (``--gpu-sizes``), with the fraction of the device's bf16 peak.

The last line is the ratio: ensemble of M / M runs one after another.

    .venv/bin/python benchmarks/ensemble.py [--members 8] [--steps 20] [--fast]
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import torch

from vaebias.data import load_dataset
from vaebias.training import train, train_ensemble

_spec = importlib.util.spec_from_file_location("train_throughput", Path(__file__).with_name("train_throughput.py"))
tt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tt)


def _cfg(seed, steps, device, fast):
    speed = {"precision": "bf16", "fused_adam": True} if fast else {}
    return {"model": "beta_vae", "dataset": {"name": "dsprites"},
            "train": {"steps": steps, "batch_size": 64, "seed": seed, "device": device,
                      "checkpoint_every": 10 ** 9, "log_every": 10 ** 9, **speed}}


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def sequential(seeds, steps, warmup, device, fast) -> float:
    """images/s of the runs trained one after another (timed windows after each warm-up)."""
    data = load_dataset("dsprites")
    timed = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for s in seeds:
            mark = {}

            def cb(step, terms, mark=mark):
                if step in (warmup, warmup + steps):
                    _sync(device)
                    mark[step] = time.perf_counter()

            train(_cfg(s, warmup + steps, device, fast), f"{tmp}/r{s}", data=data, progress=False, callback=cb)
            timed += mark[warmup + steps] - mark[warmup]
    return len(seeds) * steps * 64 / timed


def ensemble(seeds, steps, warmup, device, fast) -> float:
    data = load_dataset("dsprites")
    mark = {}

    def cb(step, terms):
        if step in (warmup, warmup + steps):
            _sync(device)
            mark[step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        train_ensemble([_cfg(s, warmup + steps, device, fast) for s in seeds], [f"{tmp}/r{s}" for s in seeds],
                       data=data, progress=False, callback=cb)
    return len(seeds) * steps * 64 / (mark[warmup + steps] - mark[warmup])


def _proc(args):
    seeds, steps, warmup, fast = args
    torch.set_num_threads(1)
    return sequential(seeds, steps, warmup, "cpu", fast)


def packed_processes(seeds, steps, warmup, fast, procs) -> float:
    """Aggregate images/s: ``procs`` single-thread processes, each with its share of the runs."""
    shares = [seeds[i::procs] for i in range(procs)]
    with mp.get_context("spawn").Pool(procs) as pool:
        rates = pool.map(_proc, [(sh, steps, warmup, fast) for sh in shares])
    return float(sum(rates))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--fast", action="store_true", help="bf16 autocast and fused Adam on both sides")
    p.add_argument("--gpu-sizes", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--big-batch", action="store_true",
                   help="GPU: also time one run at batch 64*m per ensemble size (the ceiling of batching)")
    p.add_argument("--skip-cpu", action="store_true", help="only the GPU section (on a GPU machine)")
    args = p.parse_args()
    seeds = list(range(args.members))
    torch.set_num_threads(args.threads)
    print(f"# dSprites conv beta-VAE, batch 64, {args.members} runs, {args.steps} timed steps after "
          f"{args.warmup}; {'fast' if args.fast else 'fp32'} settings; torch {torch.__version__}")
    ratio = "ratio: not measured (CPU skipped, no CUDA)"
    if not args.skip_cpu:
        seq = sequential(seeds, args.steps, args.warmup, "cpu", args.fast)
        ens = ensemble(seeds, args.steps, args.warmup, "cpu", args.fast)
        print(f"## CPU, {args.threads} threads")
        print(f"{args.members} runs one after another: {seq:8.0f} images/s")
        print(f"ensemble of {args.members}:             {ens:8.0f} images/s ({ens / seq:.2f}x)")
        procs = os.cpu_count()
        if procs > 1:
            pk = packed_processes(seeds, args.steps, args.warmup, args.fast, procs)
            print(f"{procs} single-thread processes:  {pk:8.0f} images/s ({pk / seq:.2f}x)")
        ratio = f"ratio (ensemble of {args.members} / {args.members} runs one after another, CPU): {ens / seq:.2f}x"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peak = args.peak_tflops or next((v for k, v in tt.BF16_PEAK_TFLOPS.items() if k in name), None)
        flops = tt.step_flops("cuda", 64) / 64
        gseq = sequential(seeds, args.steps, args.warmup, "cuda", args.fast)
        print(f"## GPU {name}: {args.members} runs one after another {gseq:.0f} images/s")
        for m in args.gpu_sizes:
            try:
                r = ensemble(list(range(m)), args.steps, args.warmup, "cuda", args.fast)
            except torch.cuda.OutOfMemoryError as err:
                print(f"ensemble of {m}: out of GPU memory ({str(err).splitlines()[0]})", flush=True)
                torch.cuda.empty_cache()
                continue
            frac = f", {r * flops / (peak * 1e12):.4f} of the bf16 peak" if peak else ""
            mem = torch.cuda.max_memory_allocated() / 2 ** 30
            torch.cuda.reset_peak_memory_stats()
            line = f"ensemble of {m}: {r:.0f} images/s{frac}, peak memory {mem:.1f} GiB"
            if args.big_batch:  # the ceiling of batching: one run with all m members' images per step
                try:
                    kw = {} if args.fast else {"precision": "fp32", "channels_last": False, "fused_adam": False}
                    bb = tt.vaebias_fit(args.steps, args.warmup, 64 * m, "cuda", data_parallel=1, **kw)
                    line += f"; one run at batch {64 * m}: {bb:.0f} images/s"
                except torch.cuda.OutOfMemoryError:
                    line += f"; one run at batch {64 * m}: out of GPU memory"
                    torch.cuda.empty_cache()
            print(line, flush=True)
            if m == args.members:
                ratio = f"ratio (ensemble of {m} / {m} runs one after another, {name}): {r / gseq:.2f}x"
    print(ratio)


if __name__ == "__main__":
    main()

"""Wall time of one sweep of tiny runs: the local launcher (the baseline) against Ray.

Both sweeps run the same grid (default: AE and β-VAE x 8 seeds = 16 runs on the toy
dataset, 100 steps of batch 8, MIG on 300 points) into fresh temporary folders, through
:func:`vaebias.experiments.sweep.sweep`. The local launcher runs them one after the other in this
process with ``--threads`` torch threads (default 1), or in ``--workers N`` processes.
The Ray launcher starts a local cluster (``--num-cpus``, default all cores; or joins
``--address``) and runs one task per run with 1 CPU each; its time includes starting
the cluster, as a user sees it. The last line is the ratio against the baseline
measured in the same run.

Why one thread by default: on a 2-core machine shared with another job, the in-process
baseline at torch's default (one thread per core) ran 35.8 s per run against 1.8 s for
Ray's one-thread tasks (2026-11-29) -- an oversubscription artefact, not a launcher
difference (README: run with OMP_NUM_THREADS=1 on shared machines).

    python benchmarks/sweep.py [--steps 100] [--seeds 8] [--workers 1] [--address HOST:PORT]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
import time

import torch

from vaebias.experiments.launchers import _cores
from vaebias.experiments.sweep import sweep


def grid(steps: int, seeds: int) -> dict:
    return {
        "models": ["ae", "beta_vae"],
        "datasets": [{"name": "toy", "num_positions": 8}],
        "seeds": list(range(seeds)),
        "train": {"steps": steps, "batch_size": 8, "device": "cpu", "checkpoint_every": 50, "log_every": 25},
        "evaluate": {"metrics": ["mig"], "num_points": 300},
        "resources": {"num_cpus": 1, "num_gpus": 0},
    }


def timed(label: str, g: dict, quiet: bool, **kw) -> float:
    out = tempfile.mkdtemp(prefix="vaebias_bench_sweep_")
    try:
        sink = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
            res = sweep(g, out, progress=False, **kw)
        dt = time.perf_counter() - t0
        if res["failed"] or res["finished"] != res["total"]:
            sys.exit(f"{label}: {len(res['failed'])} runs failed, {res['finished']} of {res['total']} "
                     f"finished:\n{sink.getvalue()}")
        print(f"{label}: {dt:.1f} s for {res['total']} runs ({dt / res['total']:.2f} s per run)", flush=True)
        return dt
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100, help="training steps per run")
    p.add_argument("--seeds", type=int, default=8, help="seeds per model (2 models)")
    p.add_argument("--workers", type=int, default=1, help="processes of the local launcher (the baseline)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the in-process baseline (--workers 1)")
    p.add_argument("--address", default=None, help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("--verbose", action="store_true", help="show the sweeps' per-run lines")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    g = grid(args.steps, args.seeds)
    n = 2 * args.seeds
    cores = _cores()
    print(f"{n} runs (ae, beta_vae x {args.seeds} seeds; toy 8x8, {args.steps} steps of batch 8, MIG on 300 points); "
          f"{cores} cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}", flush=True)
    local_label = (f"local launcher (this process, {torch.get_num_threads()} torch threads)" if args.workers == 1
                   else f"local launcher ({args.workers} processes, {max(1, cores // args.workers)} threads each)")
    t_local = timed(local_label, g, not args.verbose, launcher="local", workers=args.workers)

    address = args.address
    t0 = time.perf_counter()
    if address is None:  # started here so that --num-cpus applies; the sweep then uses it
        import ray

        ray.init(address="local", num_cpus=args.num_cpus or cores, include_dashboard=False,
                 logging_level="WARNING")
    t_start = time.perf_counter() - t0
    try:
        t_ray = timed(f"ray launcher ({'cluster at ' + address if address else 'local cluster'}, 1 CPU per run)",
                      g, not args.verbose, launcher="ray", address=address)
    finally:
        if address is None:
            ray.shutdown()
    if address is None:
        print(f"ray cluster start: {t_start:.1f} s (counted in the ray time)", flush=True)
    t_ray += t_start
    print(f"ray launcher total: {t_ray:.1f} s", flush=True)
    print(f"ratio (local launcher time / ray time): {t_local / t_ray:.2f}x", flush=True)


if __name__ == "__main__":
    main()

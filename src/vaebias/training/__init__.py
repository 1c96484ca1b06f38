"""The one training loop for every model: seeds, checkpoints, resume, progress, logging,
device and precision live here and nowhere else.

- :mod:`~vaebias.training.loop`: :func:`fit` (an in-memory model) and :func:`train` (a run
  directory that resumes exactly after Ctrl-C or kill -9);
- :mod:`~vaebias.training.sharded`: the CPU step sharded over threads, chosen by the loop;
- :mod:`~vaebias.training.ensemble`: same-shape runs trained as one batched (vmapped) ensemble.
"""

from vaebias._internal.config import FAST_STEP, TrainConfig
from vaebias.training.ensemble import can_ensemble, train_ensemble
from vaebias.training.loop import (
    RunConfig,
    build_run,
    check_run_fits,
    data_parallel_shards,
    fit,
    load_run,
    resolve_device,
    train,
)
from vaebias.training.rundir import is_finished, open_run_dir

__all__ = ["FAST_STEP", "RunConfig", "TrainConfig", "build_run", "can_ensemble", "check_run_fits", "data_parallel_shards", "fit", "is_finished",
           "load_run", "open_run_dir", "resolve_device", "train", "train_ensemble"]

"""The one training loop of vaebias: seeds, device, progress, CSV log, atomic
checkpoints and resume live here and nowhere else.

A run directory holds ``config.yaml``, ``checkpoint.pt`` (written atomically),
``train_log.csv`` and ``versions.json`` (``metrics.json`` is added by evaluation).
An interrupted run resumes from its last checkpoint and ends with exactly the weights
of an uninterrupted run of the same seed (on the same device): the checkpoint holds
the model, every optimiser, the step, and the states of the numpy data stream and of
torch's RNG.

Ensembles: everything a run owns -- its model, optimisers, data stream
(``np.random.Generator(seed)``) and RNG state -- is created per run in
:func:`fit`, so that several seeds can later share one batched step without sharing
state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vaebias._internal.config import TrainConfig, check, from_dict, to_dict
from vaebias._internal.errors import ConfigError, RunError
from vaebias._internal.io import atomic_torch_save, ensure_writable_dir, load_checkpoint
from vaebias._internal.lock import folder_lock
from vaebias._internal.log import get_logger
from vaebias.data import load_dataset
from vaebias.data.samplers import UniformSampler
from vaebias.models import build_model, defaults_key, describe_hyperparameters, get_model_class
from vaebias.training.rundir import CHECKPOINT, LOG, log_row, open_run_dir, read_log, read_record, write_log
from vaebias.training.sharded import sharded_backward

__all__ = [
    "RunConfig",
    "build_run",
    "check_run_fits",
    "data_parallel_shards",
    "fit",
    "train",
    "load_run",
    "resolve_device",
]

log = get_logger()



def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; anything else as torch.device.

    Raises:
        ConfigError: CUDA requested but not available.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device = {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device = {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device = {device!r}: CUDA is not available on this machine; use 'cpu' or 'auto'")
    return dev


@dataclasses.dataclass
class RunConfig:
    """One training run: which model, on which data, how trained.

    Attributes:
        model: registered model name (``vaebias.models.available()``).
        dataset: keyword arguments of :func:`vaebias.data.load_dataset`, e.g.
            ``{"name": "dsprites"}`` or ``{"name": "path/to/dsprites_modified.h5"}``.
        model_params: overrides of the model's Config (per-dataset defaults apply first).
        train: the training loop's settings.
    """

    model: str
    dataset: dict = dataclasses.field(default_factory=lambda: {"name": "dsprites"})
    model_params: dict = dataclasses.field(default_factory=dict)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self):

        get_model_class(self.model)  # raises ConfigError for an unknown name
        check("name" in self.dataset, "dataset", self.dataset, "a mapping with a 'name' key")


def fit(
    model: torch.nn.Module,
    data,
    run_dir: str | os.PathLike,
    train_config: TrainConfig,
    record: dict,
    *,
    progress: bool = True,
    description: str | None = None,
    callback: Callable[[int, dict], None] | None = None,
    record_classes: dict | None = None,
    announce: Callable[[], None] | None = None,
) -> dict:
    """Train ``model`` on ``data`` in ``run_dir``, resuming from its checkpoint if any.
    Seeds torch's global random generator (``torch.manual_seed(train_config.seed)``, and
    restores its state on resume), as PyTorch training code usually does.

    Args:
        model: a :class:`vaebias.models.base.Model` (or any module with
            ``configure_optimizers`` and ``training_step``). It is moved to the device.
        data: a :class:`~vaebias.data.base.GroundTruthData`; each step draws a batch
            from ``model.batch_sampler(data)`` (default: ``batch_size`` factor rows
            uniform over the grid, images rendered/loaded on the device) with the run's
            own generator ``np.random.default_rng(seed)``.
        run_dir: the run directory (created).
        train_config: steps, batch size, optimiser, seed, device, checkpoint cadence.
        record: the full configuration written to ``config.yaml``. Resuming in a
            directory whose ``config.yaml`` differs is a :class:`RunError`.
        progress: show a tqdm bar.
        callback: called as ``callback(step, terms)`` after every step (tests use it
            to interrupt a run).
        record_classes: config dataclasses of ``record``'s sections besides ``"train"``
            (see :func:`open_run_dir`).
        announce: called once the run directory is open and its checkpoint read, before the
            first step (``train`` logs the hyperparameters there, so that a refused run logs
            nothing).

    Returns:
        dict with ``"step"``, ``"resumed_from"`` and the last logged loss terms.

    Raises:
        RunError: the directory is unwritable, belongs to a different config, or another
            process is training in it (one writer per run directory; see
            :func:`vaebias._internal.lock.folder_lock`).
    """
    cfg = train_config
    device = resolve_device(cfg.device)
    _check_batch_memory(cfg.batch_size, getattr(data, "observation_shape", None))
    model.to(device)
    layout = _apply_speed_settings(model, cfg, device)  # refuses bad settings before anything is written
    with folder_lock(ensure_writable_dir(run_dir), "run directory"):  # one writer per run directory
        run_dir = open_run_dir(run_dir, record, record_classes)
        return _fit_locked(model, data, run_dir, cfg, device, layout, progress=progress,
                           description=description, callback=callback, announce=announce)


def _fit_locked(model, data, run_dir: Path, cfg: TrainConfig, device, layout, *, progress: bool,
                description: str | None, callback, announce) -> dict:
    """:func:`fit` once the run directory is open and locked."""

    torch.manual_seed(cfg.seed)  # re-seeded so the model's RNG state is the run's own
    rng = np.random.default_rng(cfg.seed)
    optimizers = model.configure_optimizers(cfg)

    step, fields, rows, log_acc = _resume(run_dir, model, optimizers, rng, device)
    resumed_from = step if (run_dir / CHECKPOINT).exists() else None
    if announce is not None:  # after the checkpoint is read: a damaged one is the only line
        announce()

    def save(at_step: int) -> None:
        _save_checkpoint(run_dir, at_step, cfg.steps, model, optimizers, rng, device,
                         {"sums": dict(acc), "n": n_acc}, fields, rows)

    if step >= cfg.steps:
        return {"step": step, "resumed_from": resumed_from, "last": rows[-1] if rows else {}}

    sampler = model.batch_sampler(data) if hasattr(model, "batch_sampler") else UniformSampler(data)
    model.train()
    threads = torch.get_num_threads()
    step_options = {}
    if getattr(model, "data_parallel", 1) > 1:
        torch.set_num_threads(1)  # one torch thread per shard
        shards = model.data_parallel
        step_options["backward"] = lambda m, b: sharded_backward(m, b, shards)
    acc: dict[str, float] = dict(log_acc["sums"])
    n_acc = int(log_acc["n"])
    t_start = time.perf_counter()
    t_last, step_last = t_start, step
    bar = tqdm(
        total=cfg.steps, initial=step, disable=not progress, desc=description or run_dir.name,
        dynamic_ncols=True, leave=False,
    )
    interrupt = contextlib.ExitStack()
    flag = interrupt.enter_context(interrupt_at_step_boundary())
    try:
        while step < cfg.steps:
            batch = sampler.sample(cfg.batch_size, rng, device)
            if layout is not None:
                batch = {k: v.contiguous(memory_format=layout) if torch.is_tensor(v) and v.dim() == 4 else v
                         for k, v in batch.items()}
            terms = model.training_step(batch, optimizers, **step_options)
            step += 1
            for k, v in terms.items():
                acc[k] = acc.get(k, 0.0) + v
            n_acc += 1
            if callback is not None:
                callback(step, terms)
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                row = log_row(step, acc, n_acc, (step - step_last) * cfg.batch_size, now - t_last,
                              now - t_start)
                if not fields:
                    fields = list(row)
                rows.append(row)
                bar.set_postfix(loss=row.get("loss"))
                acc, n_acc, t_last, step_last = {}, 0, now, step
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or flag["hit"]:
                save(step)
            bar.update(1)
            if flag["hit"]:  # Ctrl-C during this step: it is finished and saved
                raise KeyboardInterrupt
    finally:  # an interrupt inside a step keeps the last checkpoint: a step boundary
        interrupt.close()
        bar.close()
        torch.set_num_threads(threads)
    return {"step": step, "resumed_from": resumed_from, "last": rows[-1] if rows else {}}


@contextlib.contextmanager
def interrupt_at_step_boundary():
    """While active, a Ctrl-C (SIGINT) or a SIGTERM (``kill``, the end of a pool worker's
    driver) does not stop a training loop inside a step: it
    sets ``flag["hit"]``, the loop finishes the step, saves a checkpoint at that step
    boundary and raises KeyboardInterrupt, so that a resumed run continues exactly as
    an uninterrupted one (same batches, same noise, same weights). A second Ctrl-C
    interrupts at once (the loop then keeps its last periodic checkpoint). The previous
    handlers are restored on exit; outside the main thread (where Python does not
    deliver signals) it does nothing.

    Yields:
        the dict ``{"hit": bool}``.
    """
    flag = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["hit"]:
            raise KeyboardInterrupt
        flag["hit"] = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)


def _check_batch_memory(batch_size: int, observation_shape) -> None:
    """Refuse a batch whose float32 images alone would take more than a quarter of this
    machine's memory (it would fail only after the run folder is written, or swap).

    Raises:
        ConfigError: naming the batch size, the estimate and the limit.
    """
    if not observation_shape or not hasattr(os, "sysconf"):
        return
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return
    need = batch_size * int(np.prod(observation_shape)) * 4
    if need > memory / 4:
        raise ConfigError(f"batch_size = {batch_size}: its images alone take {need / 2**30:.1f} GiB as float32; "
                          f"expected at most a quarter of this machine's {memory / 2**30:.0f} GiB")


def _apply_speed_settings(model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
    """Apply ``cfg``'s precision, layout and compile settings to ``model`` (in place).

    Returns the memory format the batches' images must take (``torch.channels_last``)
    or None.

    Raises:
        ConfigError: ``precision="bf16"`` on a CUDA device without bfloat16 support.
    """
    if cfg.precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"precision = 'bf16': {torch.cuda.get_device_name(device)} has no "
                              f"bfloat16 support; use precision 'fp32'")
        model.autocast_dtype = torch.bfloat16
    else:
        model.autocast_dtype = None
    layout = None
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
        layout = torch.channels_last
    if cfg.compile:
        for child in model.children():
            child.compile()  # in place: state_dict keys unchanged
    model.data_parallel = data_parallel_shards(model, cfg, device)
    return layout


def data_parallel_shards(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> int:
    """Shards per step for ``cfg.data_parallel`` (see :class:`~vaebias._internal.config.TrainConfig`):
    0 (auto) -> the process's torch threads on a CPU for a batch-separable model, capped
    at ``batch_size // 8``; otherwise 1. An explicit N > 1 is capped at the batch size.

    Raises:
        ConfigError: N > 1 on a CUDA device or for a model that is not batch-separable.
    """
    k = cfg.data_parallel
    separable = getattr(model, "batch_separable", False)
    if k == 0:
        if device.type != "cpu" or not separable:
            return 1
        return max(1, min(torch.get_num_threads(), cfg.batch_size // 8))
    if k > 1:
        if device.type != "cpu":
            raise ConfigError(f"data_parallel = {k}: sharding a step over threads is for CPU training; "
                              f"use 1 or 0 (auto) on {device}")
        if not separable:
            raise ConfigError(f"data_parallel = {k}: model {getattr(model, 'name', type(model).__name__)!r} is "
                              f"not batch-separable (only the AE, beta-VAE and Slow-VAE are); use 1 or 0 (auto)")
    return min(k, cfg.batch_size)


def train(config: RunConfig | dict, run_dir: str | os.PathLike, data=None, *, progress: bool = True,
          callback=None):
    """Train one registered model as described by ``config`` into ``run_dir``.

    Builds the model with :func:`vaebias.models.build_model` (latent size = number of
    ground-truth factors, per-dataset defaults) and runs :func:`fit`. A finished run
    is not redone; an interrupted one resumes. Seeds torch's global random generator (``torch.manual_seed``), as PyTorch training code usually does.

    Args:
        config: a :class:`RunConfig` or its dict form.
        run_dir: the run directory.
        data: the dataset (default: ``load_dataset(**config.dataset)``).

    Returns:
        the trained model (on the training device, in eval mode).
    """

    if not isinstance(config, RunConfig):
        config = from_dict(RunConfig, config)
    if data is None:
        data = load_dataset(**config.dataset)
    model, record = build_run(config, data)
    fit(model, data, run_dir, config.train, record, progress=progress,
        announce=lambda: log_hyperparameters(config, model, data),
        description=f"{config.model} seed {config.train.seed}", callback=callback)
    return model.eval()


def log_hyperparameters(config: RunConfig, model, data) -> None:
    """Log the hyperparameters a run uses with their sources, and warn when the model has
    defaults for other datasets but none for this one (:func:`vaebias.models.describe_hyperparameters`)."""
    used, warning = describe_hyperparameters(config.model, model.config, config.model_params, defaults_key(data))
    log.info(f"{config.model} on {data.name!r}: {used}")
    if warning:
        log.warning(warning)


def build_run(config: RunConfig, data) -> tuple[torch.nn.Module, dict]:
    """The seeded, initialised model of a run and the record its ``config.yaml`` holds.

    The model is built under ``torch.manual_seed(config.train.seed)`` with
    :func:`vaebias.models.build_model` (latent size = number of ground-truth factors,
    the dataset's defaults); the record is the config's plain form with the model's
    full hyperparameters and the dataset's ``describe()``.
    """

    torch.manual_seed(config.train.seed)  # seeded initialisation
    try:
        model = build_model(config.model, data.observation_shape, data.num_factors,
                            config.model_params, dataset=defaults_key(data), dataset_size=len(data))
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"model {config.model!r} cannot train on dataset {data.name!r} "
                          f"{tuple(data.observation_shape)}: {e}") from None
    record = to_dict(config)
    record["model_params"] = to_dict(model.config)
    info = data.describe()
    spelled = config.dataset.get("path") or config.dataset.get("name")
    if isinstance(spelled, str) and not Path(spelled).is_absolute() and Path(spelled).suffix:
        # a file named relative to the run (a results folder's own datasets): recorded as named, so that
        # the record does not change when the folder moves
        info.update({k: spelled for k in ("source", "path") if k in info})
    record["dataset_info"] = info
    return model, record


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """Load a trained run: returns (model in eval mode, record dict from config.yaml).

    Raises:
        RunError: no config.yaml or checkpoint.pt in ``run_dir``.
    """

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists() or not (run_dir / CHECKPOINT).exists():
        raise RunError(f"{str(run_dir)!r} is not a trained run (expected config.yaml and {CHECKPOINT})")
    record = read_record(run_dir / "config.yaml")
    info = record.get("dataset_info")
    where = str(run_dir / "config.yaml")
    if not isinstance(info, dict) or "model" not in record:
        raise RunError(f"{where!r} does not describe a training run of vaebias.training.loop.train "
                       f"(it needs 'model' and 'dataset_info')")
    shape, sizes = info.get("observation_shape"), info.get("factor_sizes")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)
            and isinstance(sizes, list) and sizes and all(isinstance(v, int) and v > 0 for v in sizes)):
        raise RunError(f"{where}: dataset_info has observation_shape {shape!r} and factor_sizes {sizes!r}; "
                       f"expected 3 positive integers and a list of positive integers (the file is damaged)")
    if not isinstance(record.get("model_params", {}), dict):
        raise RunError(f"{where}: model_params is {record['model_params']!r}; expected a mapping")
    model = build_model(record["model"], tuple(shape), len(sizes), record.get("model_params") or {})
    state = load_checkpoint(run_dir / CHECKPOINT, map_location=resolve_device(device))
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise RunError(f"{run_dir / CHECKPOINT}: does not fit the model its config.yaml describes "
                       f"({str(e).splitlines()[0][:200]}); the run folder is damaged: delete it to retrain") from None
    model.to(resolve_device(device))
    return model.eval(), record


def check_run_fits(run_dir: str | os.PathLike, data) -> None:
    """Refuse ``data`` for a trained run whose model takes images of another shape (before
    any work, not as a matrix error inside torch).

    Raises:
        ConfigError: naming the run, both shapes and what was expected.
    """
    record = read_record(Path(run_dir) / "config.yaml")
    shape = (record.get("dataset_info") or {}).get("observation_shape")
    if isinstance(shape, list) and tuple(shape) != tuple(data.observation_shape):
        raise ConfigError(f"run {str(run_dir)!r} was trained on images of shape {tuple(shape)}; dataset "
                          f"{data.name!r} has {tuple(data.observation_shape)}; expected the same shape")


def _resume(run_dir: Path, model, optimizers: dict, rng, device):
    """Restore a run's checkpoint into ``model``, ``optimizers``, ``rng`` and torch's
    generators: (step, log fields, log rows up to the step, partial sums of the current
    log row); step 0 and empty logs without a checkpoint."""
    fields, rows = read_log(run_dir / LOG)
    ckpt_path = run_dir / CHECKPOINT
    if not ckpt_path.exists():
        return 0, fields, [], {"sums": {}, "n": 0}
    state = load_checkpoint(ckpt_path, map_location=device)
    try:
        model.load_state_dict(state["model"])
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"].cpu())
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        step = int(state["step"])
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise RunError(f"{ckpt_path}: does not fit this run ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                       f"the run folder is damaged: delete it to retrain") from None
    return step, fields, [r for r in rows if int(r["step"]) <= step], state.get("log_acc") or {"sums": {}, "n": 0}


def _save_checkpoint(run_dir: Path, at_step: int, total_steps: int, model, optimizers: dict, rng, device,
                     log_acc: dict, fields: list, rows: list) -> None:
    """Write the checkpoint (atomically) and the log of a run at ``at_step``."""
    atomic_torch_save(
        {
            "step": at_step,
            "total_steps": total_steps,
            "model": model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "log_acc": log_acc,  # the current log row's partial sums
        },
        run_dir / CHECKPOINT,
    )
    if rows:
        write_log(run_dir / LOG, fields, rows)

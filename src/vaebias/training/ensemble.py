"""Several seeds (or hyperparameter-free copies) of one model trained as one batched ensemble.

Small conv nets leave a GPU mostly idle at batch 64; M runs of the same model can
share each step instead. :func:`train_ensemble` stacks the M members' parameters
(``torch.func.stack_module_state``) and runs their loss under ``torch.func.vmap``
(for convolutions PyTorch batches this as one grouped convolution), with one Adam
over the stacked tensors. Everything a run owns stays its own:

- initialisation: each member is built under its own seed, exactly as
  :func:`vaebias.training.loop.train` builds it;
- data: each member draws its batches from ``np.random.default_rng(seed)`` with the
  model's sampler, as the solo run does (where the sampler has ``sample_many``, all
  members' factors are drawn from their own generators and rendered in one call: the
  same images, one set of kernel launches per step);
- noise: each member's reparameterisation noise comes from its own
  ``torch.Generator`` seeded like the solo run's global generator, fed to
  :func:`vaebias.models.base.reparameterize` through
  :data:`vaebias.models.base.NOISE_FEED` - the same draws, in the same order;
- Adam: elementwise, so each member's slice of the stacked state evolves as its
  solo optimiser's would;
- results: each member writes its own run directory, in the format of a solo run
  (``config.yaml`` identical to the solo run's, ``checkpoint.pt``, ``train_log.csv``).
  A member's checkpoint resumes alone with :func:`vaebias.training.loop.train` and vice
  versa; a finished member is never retrained.

So a member computes the same function, on the same data and noise, as its seed
trained alone; the trajectories differ only by floating-point rounding (batched and
single kernels sum in different orders), which ``tests/test_ensemble.py`` bounds.

Only models with ``ensemble_ok`` (default training step and optimiser, no torch
randomness besides :func:`~vaebias.models.base.reparameterize`) can be ensembled:
the AE, beta-VAE, beta-TC-VAE, DIP-VAE and Slow-VAE. Which way of running several
runs wins depends on the device; ``benchmarks/ensemble.py`` measures it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vaebias._internal.config import from_dict, to_dict
from vaebias._internal.errors import ConfigError
from vaebias._internal.io import atomic_torch_save, ensure_writable_dir, load_checkpoint
from vaebias._internal.lock import folder_lock
from vaebias.data import load_dataset
from vaebias.models import get_model_class
from vaebias.models.base import NOISE_FEED
from vaebias.training.loop import (
    RunConfig,
    build_run,
    interrupt_at_step_boundary,
    load_run,
    log_hyperparameters,
    resolve_device,
    train,
)
from vaebias.training.rundir import CHECKPOINT, LOG, is_finished, log_row, open_run_dir, read_log, write_log

__all__ = ["can_ensemble", "train_ensemble"]


def can_ensemble(model: str) -> bool:
    """Whether runs of the registered model ``model`` can train as a batched ensemble."""

    return bool(getattr(get_model_class(model), "ensemble_ok", False))


class _RecordShapes:
    """Noise feed of the shape probe: zeros, remembering each draw's shape and dtype."""

    def __init__(self):
        self.shapes = []

    def draw(self, like):
        self.shapes.append((tuple(like.shape), like.dtype))
        return torch.zeros_like(like)


class _Replay:
    """Noise feed of a vmapped step: hands out the pre-drawn (batched) noise in order."""

    def __init__(self, noise):
        self.noise = list(noise)
        self.i = 0

    def draw(self, like):
        if self.i >= len(self.noise):
            raise RuntimeError("the model drew more noise in this step than in the shape probe")
        out = self.noise[self.i]
        self.i += 1
        return out


def _prefixed(state: dict) -> dict:
    """Parameter names of a model as seen from its :class:`_LossOf` wrapper."""
    return {f"model.{k}": v for k, v in state.items()}


class _LossOf(torch.nn.Module):
    """``forward(batch) = model.loss(batch)`` under the model's autocast, for functional_call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        with self.model.autocast():
            return self.model.loss(batch)


def _check_compatible(configs: Sequence[RunConfig]) -> None:
    first = configs[0]
    ref = to_dict(first)
    for c in configs[1:]:
        d = to_dict(c)
        d["train"]["seed"] = ref["train"]["seed"]
        if d != ref:
            diff = sorted(k for k in ref if ref[k] != d[k]) or ["train"]
            raise ConfigError(
                f"ensemble members must differ only in train.seed; run with seed "
                f"{c.train.seed} differs from seed {first.train.seed} in {diff}"
            )
    seeds = [c.train.seed for c in configs]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"ensemble members need distinct seeds; got {seeds}")
    if not can_ensemble(first.model):
        raise ConfigError(
            f"model {first.model!r} cannot train as a batched ensemble (its own training step, "
            f"optimisers or randomness); train its runs one by one"
        )


def train_ensemble(configs: Sequence[RunConfig | dict], run_dirs: Sequence[str | os.PathLike], data=None,
                   *, progress: bool = True, callback: Callable[[int, list[dict]], None] | None = None):
    """Train M runs of one model, differing only in their seed, as one batched ensemble.

    Each member ends with the run directory its solo :func:`vaebias.training.loop.train`
    would write (see the module docstring for what is shared and what is not).
    Finished members are loaded, not retrained; members whose checkpoints stand at
    different steps (e.g. one was continued alone) are trained one by one.

    Args:
        configs: M >= 1 run configs (or their dict forms) of the same model, dataset,
            hyperparameters and training settings, with distinct ``train.seed``.
        run_dirs: M run directories.
        data: the dataset (default: ``load_dataset(**configs[0].dataset)``).
        progress: show one tqdm bar for the ensemble.
        callback: called as ``callback(step, terms)`` after every step, ``terms`` a list
            of M dicts of floats (tests use it to interrupt a run).

    Returns:
        the M trained models (on the training device, in eval mode).

    Raises:
        ConfigError: members that differ in more than the seed, repeated seeds, a model
            without ``ensemble_ok``, mismatched lengths.
        RunError: a run directory that is unwritable or holds another configuration.
    """

    configs = [c if isinstance(c, RunConfig) else from_dict(RunConfig, c) for c in configs]
    run_dirs = [Path(r) for r in run_dirs]
    if not configs or len(configs) != len(run_dirs):
        raise ConfigError(f"train_ensemble needs as many run directories as configs (>= 1); got "
                          f"{len(configs)} configs and {len(run_dirs)} directories")
    _check_compatible(configs)
    if data is None:
        data = load_dataset(**configs[0].dataset)
    cfg = configs[0].train
    device = resolve_device(cfg.device)

    todo = [i for i, rd in enumerate(run_dirs) if not is_finished(rd)]
    models = [None] * len(configs)
    for i in set(range(len(configs))) - set(todo):
        models[i] = load_run(run_dirs[i], device)[0]
    if not todo:
        return models

    with contextlib.ExitStack() as locks:  # one writer per run directory
        for i in sorted(todo, key=lambda i: str(run_dirs[i])):
            locks.enter_context(folder_lock(ensure_writable_dir(run_dirs[i]), "run directory"))
        return _train_members(configs, run_dirs, todo, models, data, device, progress, callback)


def _train_members(configs, run_dirs, todo, models, data, device, progress, callback):
    """:func:`train_ensemble` once the unfinished members' run directories are locked."""
    cfg = configs[0].train
    members = _start_members(configs, run_dirs, todo, data, device)
    base = members[0]["model"]
    if cfg.precision == "bf16":
        base.autocast_dtype = torch.bfloat16
    solo_opts = [m["model"].configure_optimizers(cfg)["main"] for m in members]

    _resume_members(members, solo_opts, run_dirs, device)
    steps = {m["step"] for m in members}
    if len(steps) > 1:  # members at different steps cannot share a step: train them alone
        for m in members:
            models[m["i"]] = train(configs[m["i"]], run_dirs[m["i"]], data=data, progress=progress)
        return models
    step = steps.pop()

    params, buffers, names, opt = _stacked_adam(members, solo_opts, step)
    batched = _vmapped_loss(base)
    samplers = [m["model"].batch_sampler(data) for m in members]
    draw_batches = _batch_drawer(samplers, members, cfg.batch_size, device)
    # the noise each member draws per step: shapes from one probe on member 0's model
    shapes = _noise_shapes(base, samplers[0], cfg.batch_size, device)
    log = _LogRows(members, step)

    def save(at_step: int) -> None:
        _save_members(members, run_dirs, params, buffers, names, opt, solo_opts, at_step, cfg.steps, device,
                      log.acc, log.n)

    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, dynamic_ncols=True, leave=False,
               desc=f"{configs[0].model} ensemble of {len(members)}")
    interrupt = contextlib.ExitStack()
    flag = interrupt.enter_context(interrupt_at_step_boundary())
    try:
        while step < cfg.steps:
            batch = draw_batches()
            noise = [torch.stack([torch.randn(shape, generator=m["gen"], dtype=dtype, device=device)
                                  for m in members]) for shape, dtype in shapes]
            terms = batched(params, buffers, batch, noise)
            opt.zero_grad(set_to_none=True)
            terms["loss"].sum().backward()
            opt.step()
            step += 1
            values = {k: v.detach().cpu().tolist() for k, v in terms.items()}
            per_member = [{k: values[k][j] for k in values} for j in range(len(members))]
            log.add(per_member)
            if callback is not None:
                callback(step, per_member)
            if step % cfg.log_every == 0 or step == cfg.steps:
                log.emit(members, step, cfg.batch_size)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or flag["hit"]:
                save(step)
            bar.update(1)
            if flag["hit"]:  # Ctrl-C during this step: it is finished and saved
                raise KeyboardInterrupt
    finally:  # an interrupt inside a step keeps the last checkpoint: a step boundary
        interrupt.close()
        bar.close()
    for m in members:
        models[m["i"]] = load_run(run_dirs[m["i"]], device)[0]
    return models


def _vmapped_loss(base):
    """The members' losses in one call: ``base``'s loss (on a meta-device copy, so that no
    weights are duplicated) vmapped over stacked parameters, buffers, batches and noise."""
    shell = _LossOf(copy.deepcopy(base).to("meta"))
    shell.model.autocast_dtype = base.autocast_dtype

    def member_loss(p, b, batch, noise):
        token = NOISE_FEED.set(_Replay(noise))
        try:
            return torch.func.functional_call(shell, (_prefixed(p), _prefixed(b)), (batch,))
        finally:
            NOISE_FEED.reset(token)

    return torch.func.vmap(member_loss, randomness="error")


def _batch_drawer(samplers, members, batch_size: int, device):
    """A function returning one stacked batch per step, each member's from its own stream."""
    def draw_batches():
        if hasattr(samplers[0], "sample_many"):  # one renderer call for all members
            return samplers[0].sample_many(batch_size, [m["rng"] for m in members], device)
        out = [s.sample(batch_size, m["rng"], device) for s, m in zip(samplers, members)]
        return {k: torch.stack([o[k] for o in out]) for k in out[0]}

    return draw_batches


class _LogRows:
    """Each member's loss sums since its last log row, turned into rows every ``log_every``
    steps. All members are at the same step, so their partial rows cover the same steps."""

    def __init__(self, members, step: int):
        self.acc = [dict((m.get("log_acc") or {}).get("sums", {})) for m in members]
        self.n = int((members[0].get("log_acc") or {}).get("n", 0))
        self.t_start = self.t_last = time.perf_counter()
        self.step_last = step

    def add(self, per_member: list[dict]) -> None:
        for a, t in zip(self.acc, per_member):
            for k, v in t.items():
                a[k] = a.get(k, 0.0) + v
        self.n += 1

    def emit(self, members, step: int, batch_size: int) -> None:
        now = time.perf_counter()
        for m, a in zip(members, self.acc):
            row = log_row(step, a, self.n, (step - self.step_last) * batch_size, now - self.t_last,
                          now - self.t_start)
            if not m["fields"]:
                m["fields"] = list(row)
            m["rows"].append(row)
        self.acc = [{} for _ in members]
        self.n, self.t_last, self.step_last = 0, now, step


def _start_members(configs, run_dirs, todo, data, device) -> list[dict]:
    """The unfinished members: seeded init, own run dir, own data stream and noise generator."""
    members = []
    for i in todo:
        model, record = build_run(configs[i], data)
        open_run_dir(run_dirs[i], record)
        log_hyperparameters(configs[i], model, data)
        seed = configs[i].train.seed
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)  # the solo run's torch.manual_seed(seed) before its first step
        members.append({"i": i, "model": model.to(device), "rng": np.random.default_rng(seed), "gen": gen,
                        "step": 0, "rows": []})
    return members


def _resume_members(members, solo_opts, run_dirs, device) -> None:
    """Load each member's checkpoint (model, Adam, data stream, noise, log) where it has one."""
    for m, opt in zip(members, solo_opts):
        path = run_dirs[m["i"]] / CHECKPOINT
        fields, rows = read_log(run_dirs[m["i"]] / LOG)
        m["fields"] = fields
        if path.exists():
            state = load_checkpoint(path, map_location=device)
            m["model"].load_state_dict(state["model"])
            opt.load_state_dict(state["optimizers"]["main"])
            m["rng"].bit_generator.state = state["numpy_rng"]
            key = "cuda_rng" if device.type == "cuda" else "torch_rng"
            m["gen"].set_state(state[key].to("cpu"))
            m["step"] = int(state["step"])
            m["rows"] = [r for r in rows if int(r["step"]) <= m["step"]]
            m["log_acc"] = state.get("log_acc") or {"sums": {}, "n": 0}


def _stacked_adam(members, solo_opts, step: int):
    """The members' parameters and buffers stacked along a new first dim, and one Adam over
    them holding the members' stacked Adam states (when resuming)."""
    params, buffers = torch.func.stack_module_state([m["model"] for m in members])
    params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    names = list(params)
    opt = torch.optim.Adam(list(params.values()), **{k: v for k, v in solo_opts[0].defaults.items()
                                                      if k in ("lr", "betas", "eps", "fused")})
    if step > 0:
        stacked = {}
        for j in range(len(names)):
            sts = [o.state_dict()["state"].get(j) for o in solo_opts]
            if all(s is not None for s in sts):
                stacked[j] = {"step": sts[0]["step"].clone(),
                              "exp_avg": torch.stack([s["exp_avg"] for s in sts]),
                              "exp_avg_sq": torch.stack([s["exp_avg_sq"] for s in sts])}
        sd = opt.state_dict()
        sd["state"] = stacked
        opt.load_state_dict(sd)
    return params, buffers, names, opt


def _noise_shapes(base, sampler, batch_size: int, device) -> list:
    """(shape, dtype) of each Gaussian draw of one step, from one probe on a throw-away batch."""
    probe = _RecordShapes()
    token = NOISE_FEED.set(probe)
    try:
        with torch.no_grad():  # only the shapes of the draws matter
            base.loss(sampler.sample(batch_size, np.random.default_rng(0), device))
    finally:
        NOISE_FEED.reset(token)
    return probe.shapes


def _save_members(members, run_dirs, params, buffers, names, opt, solo_opts, at_step: int, total_steps: int,
                  device, acc, n_acc: int) -> None:
    """Each member's checkpoint as its solo run would write it, and its log."""
    sd = opt.state_dict()
    for k, m in enumerate(members):
        member_state = {n: params[n][k].detach().clone() for n in names}
        member_state.update({n: buffers[n][k].clone() for n in buffers})
        ostate = {j: {"step": st["step"].clone(), "exp_avg": st["exp_avg"][k].clone(),
                      "exp_avg_sq": st["exp_avg_sq"][k].clone()} for j, st in sd["state"].items()}
        osd = solo_opts[k].state_dict()
        osd["state"] = ostate
        gen_state = m["gen"].get_state()
        atomic_torch_save({
            "step": at_step, "total_steps": total_steps, "model": member_state,
            "optimizers": {"main": osd}, "numpy_rng": m["rng"].bit_generator.state,
            "torch_rng": gen_state if device.type != "cuda" else torch.get_rng_state(),
            "cuda_rng": gen_state if device.type == "cuda" else None,
            "ensemble": {"members": len(members), "index": k},
            "log_acc": {"sums": dict(acc[k]), "n": n_acc},  # the current log row's partial sums
        }, run_dirs[m["i"]] / CHECKPOINT)
        if m["rows"]:
            write_log(run_dirs[m["i"]] / LOG, m["fields"], m["rows"])

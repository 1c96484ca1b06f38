"""Data parallelism inside one training step, on CPU threads (``TrainConfig.data_parallel``).

Small conv nets at batch 64 use a multi-core CPU poorly: each layer's work is split
over the cores op by op, with a synchronisation after each. Splitting the *batch*
instead -- k shards, each run forward and backward by its own thread with one torch
thread, as data-parallel training does across devices -- keeps every core busy for the
whole step (``benchmarks/train_throughput.py`` measures it).

The sharded step is the unsharded one up to float rounding when the model is
``batch_separable``: its loss terms are means over the batch's rows (so the batch's
gradient is the row-count-weighted sum of the shards' gradients), and its only
randomness is :func:`~vaebias.models.base.reparameterize` on a whole number of stacked
copies of the batch's rows (one copy for most models; two for Slow-VAE's
(x_{t-1}; x_t)). The noise is drawn once per draw for the whole batch, from the same
generator and in the same order as the unsharded step would draw it, and each shard
takes its rows of every copy (:class:`SharedNoise`); so a run's RNG state, data stream and checkpoints are those of
the unsharded run, and a run may resume with a different shard count.

Threads help because torch releases the GIL inside its kernels and the autograd engine
runs a CPU graph's backward on the thread that asks for it.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from vaebias.models.base import NOISE_FEED

__all__ = ["SharedNoise", "sharded_backward", "split_batch"]

_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(k: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        if k not in _POOLS:
            _POOLS[k] = ThreadPoolExecutor(k, thread_name_prefix="vaebias-shard")
        return _POOLS[k]


def split_batch(batch: dict, k: int) -> tuple[list[dict], list[int]]:
    """Split a batch dict into ``k`` shards along the first dimension.

    Every tensor whose first dimension is the batch size (that of ``batch["images"]``)
    is split with :func:`torch.tensor_split` (sizes differ by at most one); other values
    are shared by all shards.

    Returns:
        (shards, rows): the shard dicts and their row counts.

    Raises:
        ValueError: ``k`` is not in 1 .. batch size.
    """
    n = int(batch["images"].shape[0])
    if not 1 <= k <= n:
        raise ValueError(f"data_parallel = {k}: expected 1 .. {n} shards for a batch of {n} rows")
    parts: list[dict] = [{} for _ in range(k)]
    for key, value in batch.items():
        if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == n:
            for part, piece in zip(parts, torch.tensor_split(value, k)):
                part[key] = piece
        else:
            for part in parts:
                part[key] = value
    rows = [int(p["images"].shape[0]) for p in parts]
    return parts, rows


class SharedNoise:
    """The N(0, I) draws of one sharded step, made for the whole batch.

    Draw ``j`` is created once, by the first shard that asks for it, as the unsharded
    step would draw it (``torch.randn_like`` on torch's global generator, or the outer
    :data:`~vaebias.models.base.NOISE_FEED` when one was active); each shard gets its
    rows. Draws are created in order 0, 1, ... whatever the threads' timing, because a
    shard asks for draw ``j + 1`` only after its own draw ``j``.
    """

    def __init__(self, rows: list[int], outer=None):
        self.starts = [sum(rows[:i]) for i in range(len(rows))]
        self.rows = rows
        self.total = sum(rows)
        self.outer = outer
        self.draws: list[torch.Tensor] = []
        self.lock = threading.Lock()

    def feed(self, shard: int) -> _ShardFeed:
        """The :data:`~vaebias.models.base.NOISE_FEED` object of shard ``shard``."""
        return _ShardFeed(self, shard)

    def _get(self, j: int, like: torch.Tensor, copies: int) -> torch.Tensor:
        with self.lock:
            if j == len(self.draws):
                full = like.new_empty((copies * self.total, *like.shape[1:]))
                self.draws.append(torch.randn_like(full) if self.outer is None else self.outer.draw(full))
            return self.draws[j]


class _ShardFeed:
    def __init__(self, shared: SharedNoise, shard: int):
        self.shared, self.shard, self.j = shared, shard, 0

    def draw(self, like: torch.Tensor) -> torch.Tensor:
        rows = self.shared.rows[self.shard]
        if like.dim() == 0 or like.shape[0] % rows:
            raise RuntimeError(
                f"a sharded step drew noise shaped {tuple(like.shape)} in a shard of {rows} rows: the model "
                f"is not batch_separable (noise rows = a whole number of copies of the batch's rows); "
                f"use data_parallel = 1")
        copies = like.shape[0] // rows  # e.g. 2 for Slow-VAE's stacked (x_{t-1}; x_t)
        full = self.shared._get(self.j, like, copies)
        self.j += 1
        start, total = self.shared.starts[self.shard], self.shared.total
        if copies == 1:
            return full[start:start + rows]
        return torch.cat([full[c * total + start:c * total + start + rows] for c in range(copies)])


def sharded_backward(model, batch: dict, k: int) -> dict[str, torch.Tensor]:
    """Forward and backward of ``model.loss(batch)`` as ``k`` shards on ``k`` threads.

    Each shard runs ``model.loss`` under ``model.autocast()`` and takes the gradients of
    its loss weighted by its share of the rows; the parameters' ``.grad`` are then set to
    the sums (None where no shard reached a parameter). The caller runs the optimiser
    step. Torch should run one thread per shard (the training loop sets
    ``torch.set_num_threads(1)`` for the run).

    Args:
        model: a batch-separable :class:`~vaebias.models.base.Model`.
        batch: the step's batch dict (``"images"`` float32 (n, C, H, W), ...).
        k: shards, 1 .. n.

    Returns:
        the loss terms of the whole batch: each the row-weighted sum of the shards'
        (detached float32 scalars).
    """
    parts, rows = split_batch(batch, k)
    total = sum(rows)
    noise = SharedNoise(rows, NOISE_FEED.get())
    params = [p for p in model.parameters() if p.requires_grad]

    def work(i: int):
        token = NOISE_FEED.set(noise.feed(i))
        try:
            with model.autocast():
                terms = model.loss(parts[i])
            w = rows[i] / total
            grads = torch.autograd.grad(terms["loss"] * w, params, allow_unused=True)
            return grads, {name: v.detach().float() * w for name, v in terms.items()}
        finally:
            NOISE_FEED.reset(token)

    results = list(_pool(k).map(work, range(k)))
    for j, p in enumerate(params):
        gs = [g[j] for g, _ in results if g[j] is not None]
        p.grad = _sum(gs) if gs else None
    out = {}
    for _, terms in results:
        for name, v in terms.items():
            out[name] = out[name] + v if name in out else v
    return out


def _sum(tensors: list[torch.Tensor]) -> torch.Tensor:
    if len(tensors) == 1:
        return tensors[0]
    acc = tensors[0].clone()  # keeps the parameter's memory format
    for t in tensors[1:]:
        acc += t
    return acc

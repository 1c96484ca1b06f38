"""Validated dataclass configs, serialised to YAML next to every result.

``from_dict(Cls, mapping)`` builds a config dataclass from plain data and rejects an
unknown key (naming the allowed ones) or a value of the wrong type; range checks live
in each dataclass's ``__post_init__`` and raise :class:`~vaebias._internal.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from vaebias._internal.errors import ConfigError

__all__ = ["FAST_STEP", "TrainConfig", "check", "from_dict", "to_dict", "with_defaults"]

T = TypeVar("T")


def check(condition: bool, key: str, value: Any, expected: str) -> None:
    """Raise ConfigError ``"<key> = <value>: expected <expected>"`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"{key} = {value!r}: expected {expected}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key} = {value!r}: unexpected value")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key} = {value!r}: expected one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} = {value!r}: expected a list")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} = {value!r}: expected a mapping")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} = {value!r}: expected a mapping of {tp.__name__} fields")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key} = {value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} = {value!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} = {value!r}: expected a string")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``.

    Raises:
        ConfigError: an unknown key (the message lists the allowed keys), a value of
            the wrong type, or a value rejected by ``cls.__post_init__``.
    """
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key '{prefix}{unknown[0]}' for {cls.__name__}; "
            f"allowed keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Plain-data (YAML/JSON friendly) form of a config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


#: values of :attr:`TrainConfig.precision`
PRECISIONS = ("fp32", "bf16")

#: the fast training step's settings (:meth:`TrainConfig.fast`, ``vaebias train --fast``)
FAST_STEP = {"precision": "bf16", "channels_last": True, "fused_adam": True, "data_parallel": 0}


@dataclasses.dataclass
class TrainConfig:
    """Settings of the one training loop (disentanglement_lib's defaults, as in the paper, Sec. 5.1).

    Attributes:
        steps: optimisation steps (> 0); the paper trains 300,000.
        batch_size: images (or pairs) per step (> 0); 64.
        lr: Adam learning rate; 1e-4.
        adam_betas: Adam (beta1, beta2); (0.9, 0.999).
        adam_eps: Adam epsilon; 1e-8.
        seed: seeds model initialisation, the data stream and the sampling noise.
        device: "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".
        checkpoint_every: steps between atomic checkpoints (> 0).
        log_every: steps between rows of ``train_log.csv`` (> 0).
        precision: "fp32" (default) or "bf16": the models' forward passes under
            ``torch.autocast`` with bfloat16 (losses are computed in float32; the
            parameters and optimiser states stay float32). Needs a device with bf16
            support (CPUs with AVX512-BF16 or AMX run it natively; CUDA: compute
            capability >= 8.0). See ``benchmarks/train_throughput.py`` for speed and for
            the loss curve against fp32.
        channels_last: convolution weights and images in channels-last memory layout.
        fused_adam: Adam's fused single-kernel step (same update rule, float rounding differs).
        compile: ``torch.compile`` the model's submodules in place (``nn.Module.compile``).
        data_parallel: shards per batch, run side by side on CPU threads with one torch
            thread each, their gradients summed before one optimiser step
            (:mod:`vaebias.training.sharded`). The step is the unsharded one up to float
            rounding -- same data, same noise -- for models whose loss is a batch mean
            (``Model.batch_separable``: the AE, beta-VAE and Slow-VAE). 1 (default): off; 0: auto --
            the process's torch threads on a CPU for such models, capped so that each
            shard holds at least 8 rows, and off otherwise; N > 1: exactly N (CPU and a
            batch-separable model only).
    """

    #: fields that must be finite numbers > 0 (the CLI's flags check them while parsing)
    POSITIVE: ClassVar[tuple[str, ...]] = ("steps", "batch_size", "lr", "adam_eps", "checkpoint_every", "log_every")

    steps: int = 300_000
    batch_size: int = 64
    lr: float = 1e-4
    adam_betas: tuple[float, ...] = (0.9, 0.999)
    adam_eps: float = 1e-8
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 1000
    log_every: int = 100
    precision: str = "fp32"
    channels_last: bool = False
    fused_adam: bool = False
    compile: bool = False
    data_parallel: int = 1

    @classmethod
    def fast(cls, **kw) -> TrainConfig:
        """The fast training step (:data:`FAST_STEP`: bf16 autocast, channels-last layout,
        fused Adam, automatic CPU data parallelism; ``vaebias train --fast``); keyword
        arguments override any field."""
        return cls(**{**FAST_STEP, **kw})

    def __post_init__(self):
        check(self.steps > 0, "steps", self.steps, "an integer > 0")
        check(self.batch_size > 0, "batch_size", self.batch_size, "an integer > 0")
        check(math.isfinite(self.lr) and 0 < self.lr <= 1, "lr", self.lr, "a finite number in (0, 1]")
        check(isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0, "seed", self.seed,
              "an integer >= 0")
        check(math.isfinite(self.adam_eps) and self.adam_eps > 0, "adam_eps", self.adam_eps, "a finite number > 0")
        check(
            len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
            "adam_betas", self.adam_betas, "two numbers in [0, 1)",
        )
        self.adam_betas = tuple(self.adam_betas)
        check(self.checkpoint_every > 0, "checkpoint_every", self.checkpoint_every, "an integer > 0")
        check(self.log_every > 0, "log_every", self.log_every, "an integer > 0")
        check(self.precision in PRECISIONS, "precision", self.precision,
              " or ".join(repr(p) for p in PRECISIONS))
        check(isinstance(self.data_parallel, int) and self.data_parallel >= 0, "data_parallel",
              self.data_parallel, "an integer >= 0 (0: auto, 1: off)")
        for name in ("channels_last", "fused_adam", "compile"):
            check(isinstance(getattr(self, name), bool), name, getattr(self, name), "true or false")
        check(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "device", self.device, "'auto', 'cpu', 'cuda' or 'cuda:N'",
        )


def with_defaults(record: dict, key: str, cls) -> dict | None:
    """``record`` with ``record[key]`` read as the dataclass ``cls`` and written back, so
    that fields added to ``cls`` since the record was saved take their defaults (how
    files written by older versions are compared with new configurations).

    Returns:
        the filled copy, or None when ``record[key]`` no longer validates as ``cls``.
    """
    out = dict(record)
    if isinstance(out.get(key), dict):
        try:
            out[key] = to_dict(from_dict(cls, out[key]))
        except ConfigError:
            return None
    return out

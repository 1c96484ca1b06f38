"""The model zoo. ``available()`` lists the registered names; ``build_model`` is what
the training loop, the CLI and the experiments use to make a model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vaebias._internal.config import from_dict
from vaebias._internal.errors import ConfigError

__all__ = ["register", "available", "get_model_class", "build_model", "model_config", "defaults_key", "model_label",
           "table_order", "primary_hyperparameters", "table1_models"]

_REGISTRY: dict[str, type] = {}


def register(name: str):
    """Class decorator adding a :class:`~vaebias.models.base.Model` under ``name``."""

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available() -> list[str]:
    """Sorted names of the registered models."""
    return sorted(_REGISTRY)


def get_model_class(name: str):
    """The model class registered as ``name``.

    Raises:
        ConfigError: an unknown name (the message lists the available ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; available models: {', '.join(available())}") from None


def model_config(name: str, params: Mapping[str, Any] | None = None, dataset: str | None = None,
                 dataset_size: int | None = None):
    """The validated Config of model ``name``: class defaults, then the per-dataset
    defaults for ``dataset``, then ``params`` (unknown keys are an error). A Config field
    ``dataset_size`` left unset is filled with ``dataset_size`` (the true N, e.g. for
    β-TC-VAE's minibatch-weighted sampling)."""
    import dataclasses

    cls = get_model_class(name)
    values = dict(cls.DEFAULTS.get(dataset or "", {}))
    values.update(params or {})
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    if "dataset_size" in fields and values.get("dataset_size") is None and dataset_size is not None:
        values["dataset_size"] = int(dataset_size)
    return from_dict(cls.Config, values, prefix=f"{name}.")


def defaults_key(data) -> str:
    """Which per-dataset model defaults apply: the base dataset's name for variants
    (a modified dSprites uses dSprites' hyperparameters)."""
    name = data.name
    for suffix in ("_modified", "_noise"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def build_model(name: str, observation_shape, num_factors: int, params=None, dataset: str | None = None,
                dataset_size: int | None = None):
    """Instantiate model ``name`` for images of ``observation_shape`` (C, H, W) with a
    latent size of ``num_factors`` (as in the paper).

    Args:
        params: hyperparameter overrides (the model's Config fields).
        dataset: dataset name selecting the model's per-dataset defaults.
        dataset_size: number of images of the training dataset (filled into a
            ``dataset_size`` Config field when the model has one).
    """
    cls = get_model_class(name)
    return cls(observation_shape, num_factors, model_config(name, params, dataset, dataset_size))



def model_label(name: str) -> str:
    """The table label of model ``name`` (e.g. "β-VAE"); an unregistered name as it is."""
    cls = _REGISTRY.get(name)
    return (cls.label or cls.name) if cls is not None else name


def table_order(names) -> list[str]:
    """``names`` in table order: registered models by ``table_row`` (Table 1's order
    first), then any other names alphabetically."""
    def key(n):
        cls = _REGISTRY.get(n)
        return (0, cls.table_row, n) if cls is not None else (1, 0, n)

    return sorted(names, key=key)


def primary_hyperparameters() -> dict[str, str]:
    """``{model name: its primary hyperparameter}`` of the registered models that have one."""
    return {n: c.primary_hyperparameter for n, c in sorted(_REGISTRY.items()) if c.primary_hyperparameter}


def table1_models() -> tuple[str, ...]:
    """The registered models that are rows of the paper's Table 1, in its order."""
    return tuple(table_order(n for n, c in _REGISTRY.items() if c.in_table1))

def _import_model_files() -> None:
    """Import every module of this package so that its models register themselves."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("base", "networks"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_model_files()

"""The model zoo. ``available()`` lists the registered names; ``build_model`` is what
the training loop, the CLI and the experiments use to make a model."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

from vaebias._internal.config import from_dict
from vaebias._internal.errors import ConfigError
from vaebias._internal.log import get_logger
from vaebias.models.base import Model

__all__ = ["register", "available", "get_model_class", "build_model", "model_config", "defaults_key", "model_label",
           "table_order", "primary_hyperparameters", "table1_models", "describe_hyperparameters"]

log = get_logger()

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
    """The model class registered as ``name``, or the class at the import path
    ``"package.module:Class"`` (imported on first use, then registered under that path, so
    that run directories naming it load in any process that can import the module).

    Raises:
        ConfigError: an unknown name (the message lists the available ones), a module that
            cannot be imported, a missing attribute, or a class that is not a
            :class:`~vaebias.models.base.Model`.
    """
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is not None:
        return cls
    if isinstance(name, str) and ":" in name:
        return _import_model(name)
    raise ConfigError(f"unknown model {name!r}; available models: {', '.join(available())}, "
                      f"or the import path package.module:Class of a Model subclass")


def _import_model(path: str):
    module_name, _, attr = path.partition(":")
    if not (module_name and attr and all(p.isidentifier() for p in module_name.split(".")) and attr.isidentifier()):
        raise ConfigError(f"model {path!r}: expected a registered name ({', '.join(available())}) or an import "
                          f"path package.module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"model {path!r}: cannot import module {module_name!r} ({e}); expected a module on "
                          f"the Python path (run from the folder that holds it, or install it)") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise ConfigError(f"model {path!r}: module {module_name!r} has no attribute {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ConfigError(f"model {path!r}: {attr} is a {type(cls).__name__}, not a subclass of "
                          f"vaebias.models.base.Model; expected a model class")
    if not dataclasses.is_dataclass(cls.Config):
        raise ConfigError(f"model {path!r}: {attr}.Config is not a dataclass; expected a dataclass of the "
                          f"model's hyperparameters")
    if not cls.name:
        cls.name = path
    _REGISTRY[path] = cls
    return cls


def model_config(name: str, params: Mapping[str, Any] | None = None, dataset: str | None = None,
                 dataset_size: int | None = None):
    """The validated Config of model ``name``: class defaults, then the per-dataset
    defaults for ``dataset``, then ``params`` (unknown keys are an error). A Config field
    ``dataset_size`` left unset is filled with ``dataset_size`` (the true N, e.g. for
    β-TC-VAE's minibatch-weighted sampling)."""
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



def describe_hyperparameters(name: str, config, params: Mapping[str, Any] | None = None,
                             dataset: str | None = None) -> tuple[str, str | None]:
    """What a run of model ``name`` uses and where each value came from.

    Args:
        config: the model's built Config (``model.config``).
        params: the hyperparameters given explicitly.
        dataset: the defaults key of the dataset (:func:`defaults_key`).

    Returns:
        (one line ``"beta=8 (dsprites default), width=1 (class default)"``, a warning or
        None): the warning says when the model has per-dataset defaults for other datasets
        but none for this one, so that class defaults (for example β = 1) apply.
    """
    cls = get_model_class(name)
    given = dict(params or {})
    per_dataset = cls.DEFAULTS.get(dataset or "", {})
    parts = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        source = ("given" if f.name in given else f"{dataset} default" if f.name in per_dataset
                  else "class default")
        parts.append(f"{f.name}={value:g} ({source})" if isinstance(value, float) else f"{f.name}={value} ({source})")
    warning = None
    tuned = sorted(k for k in cls.DEFAULTS if k)
    untuned = [f.name for f in dataclasses.fields(config)
               if f.name not in given and any(f.name in cls.DEFAULTS[k] for k in tuned)]
    if tuned and dataset not in cls.DEFAULTS and untuned:
        warning = (f"{name} has no defaults for dataset {dataset!r} (it has them for {', '.join(tuned)}): "
                   f"the class defaults apply: {', '.join(f'{k}={getattr(config, k)}' for k in untuned)}; set "
                   f"them explicitly (model_params, --param) if they do not suit this data")
    return ", ".join(parts) or "no hyperparameters", warning


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

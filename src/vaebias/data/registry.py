"""The dataset registry: name -> a :class:`~vaebias.data.base.GroundTruthData` class or a
loader function, used by :func:`vaebias.data.load_dataset`.

A leaf module of the data layer. A dataset registers itself where it is defined::

    from vaebias.data.registry import register

    @register("my_data")
    class MyData(GroundTruthData):   # options: the constructor's keyword arguments
        ...

or, for a dataset with a real file and a procedural fallback, a loader
``fn(path=None, data_dir=None, **options) -> GroundTruthData``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from vaebias._internal.errors import ConfigError

__all__ = ["PATH_KEYS", "available", "get_loader", "located_spec", "options_of", "register", "takes_files"]

_REGISTRY: dict[str, Callable] = {}
_FILE_ARGS = ("path", "data_dir")


def register(name: str):
    """Decorator adding a dataset class or loader function under ``name``.

    Raises:
        ValueError: ``name`` is empty or registered twice.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string; got {name!r}")

    def deco(obj):
        if name in _REGISTRY and _REGISTRY[name] is not obj:
            raise ValueError(f"dataset name {name!r} registered twice")
        _REGISTRY[name] = obj
        return obj

    return deco


def available() -> list[str]:
    """Sorted names of the registered datasets."""
    return sorted(_REGISTRY)


def get_loader(name: str) -> Callable:
    """The class or loader function registered as ``name``.

    Raises:
        ConfigError: an unknown name (the message lists the available ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; available datasets: {', '.join(available())}") from None


def options_of(loader: Callable) -> list[str]:
    """The dataset options (keyword arguments besides ``path``/``data_dir``) of a loader."""
    params = inspect.signature(loader).parameters
    return [p for p in params if p not in ("self", *_FILE_ARGS)]


def takes_files(loader: Callable) -> bool:
    """Whether the loader reads a real file (takes ``path`` and ``data_dir``)."""
    params = inspect.signature(loader).parameters
    return all(a in params for a in _FILE_ARGS)


#: keys of a dataset spec that hold paths (besides ``name`` when it is not a registered dataset)
PATH_KEYS = ("path", "data_dir", "manipulation")


def located_spec(spec: dict, base, *, if_exists: bool = False) -> dict:
    """``spec`` (a dataset spec: ``load_dataset``'s or ``load_variant``'s keyword arguments)
    with its relative paths -- ``name`` when it names a file, ``path``, ``data_dir``,
    ``manipulation`` -- taken relative to the folder ``base``.

    Args:
        spec: the spec (not changed).
        base: the folder relative paths refer to.
        if_exists: change only paths that exist under ``base`` (the others stay relative to
            the working directory).
    """
    out = dict(spec)
    for key in ("name", *PATH_KEYS):
        value = out.get(key)
        if not isinstance(value, str) or (key == "name" and value in _REGISTRY) or Path(value).is_absolute():
            continue
        there = Path(base) / value
        if not if_exists or there.exists():
            out[key] = str(there)
    return out

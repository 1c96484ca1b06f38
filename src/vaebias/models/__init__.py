"""The model zoo. ``available()`` lists the registered names; ``build_model`` is what
the training loop, the CLI and the experiments use to make a model."""

from __future__ import annotations

from typing import Any, Mapping

from vaebias.config import from_dict
from vaebias.errors import ConfigError

__all__ = ["register", "available", "get_model_class", "build_model", "model_config"]

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


def model_config(name: str, params: Mapping[str, Any] | None = None, dataset: str | None = None):
    """The validated Config of model ``name``: class defaults, then the per-dataset
    defaults for ``dataset``, then ``params`` (unknown keys are an error)."""
    cls = get_model_class(name)
    values = dict(cls.DEFAULTS.get(dataset or "", {}))
    values.update(params or {})
    return from_dict(cls.Config, values, prefix=f"{name}.")


def build_model(name: str, observation_shape, num_factors: int, params=None, dataset: str | None = None):
    """Instantiate model ``name`` for images of ``observation_shape`` (C, H, W) with a
    latent size of ``num_factors`` (as in the paper)."""
    cls = get_model_class(name)
    return cls(observation_shape, num_factors, model_config(name, params, dataset))


# Import the model files so that they register themselves.
from vaebias.models import ae as _ae  # noqa: E402,F401
from vaebias.models import beta_vae as _beta_vae  # noqa: E402,F401

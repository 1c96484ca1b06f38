"""Exceptions of vaebias. The CLI turns each into one message and a non-zero exit."""

__all__ = ["VaebiasError", "ConfigError", "DataError", "RunError"]


class VaebiasError(Exception):
    """Base class of the errors the CLI reports as one clear message."""


class ConfigError(VaebiasError, ValueError):
    """An unknown key, a wrong type or an out-of-range value in a configuration."""


class RunError(VaebiasError, RuntimeError):
    """A run directory that cannot be used (different config, unwritable folder, ...)."""


class DataError(VaebiasError, ValueError):
    """A missing, corrupt or mis-shaped data file, or bad factor input."""

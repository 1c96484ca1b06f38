"""vaebias: disentanglement models, metrics and the local-variance manipulation of
Zietlow, Rolinek & Martius, "Demystifying Inductive Biases for (beta-)VAE Based
Architectures" (ICML 2021).

The package is laid out by data flow, each layer importing only from those before it:
``data`` -> ``models`` -> ``metrics`` -> ``training`` -> ``manipulation`` ->
``experiments`` -> ``report`` -> ``paper`` -> ``cli`` (``_internal`` holds the errors,
configs, files and logging they share). The errors every layer raises are here.
"""

from vaebias._internal.errors import ConfigError, DataError, RunError, VaebiasError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "RunError", "VaebiasError", "__version__"]

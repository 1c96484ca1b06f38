"""vaebias: disentanglement models, metrics and the local-variance manipulation of
Zietlow, Rolinek & Martius, "Demystifying Inductive Biases for (beta-)VAE Based
Architectures" (ICML 2021)."""

__version__ = "0.1.0"

"""What every model of vaebias provides, and the shared loss pieces.

A model is an ``nn.Module`` with

- ``encode(x) -> codes``: the representation used by the metrics (float32 (n, d));
  for VAEs the encoder mean;
- ``loss(batch) -> dict`` of named scalar tensors, including ``"loss"``;
- ``training_step(batch, optimizers) -> dict`` of floats: one optimisation step. The
  default minimises ``loss(batch)["loss"]`` with the single optimiser ``"main"``; a model
  with extra optimisers (e.g. FactorVAE's discriminator) overrides this and
  ``configure_optimizers`` -- the small hook through which the one training loop
  (:mod:`vaebias.training.loop`) serves every model.

``batch`` is a dict with ``"images"`` float32 (n, C, H, W) in [0, 1] and ``"factors"``
int64 (n, K) (factors are for manipulation and diagnostics only; unsupervised models
must not read them).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vaebias.data.samplers import UniformSampler
from vaebias.models.networks import ConvDecoder, ConvEncoder, image_size_of

__all__ = ["Model", "GaussianVAE", "adam_options", "bernoulli_reconstruction", "gaussian_kl",
           "reparameterize"]


def adam_options(train_config) -> dict:
    """Extra ``torch.optim.Adam`` keywords of the training config: ``{"fused": True}``
    with ``fused_adam`` (one kernel per step; the same update up to float rounding)."""
    return {"fused": True} if getattr(train_config, "fused_adam", False) else {}


def bernoulli_reconstruction(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sigmoid cross-entropy with logits summed over pixels, averaged over the batch.

    Args:
        logits: float (n, C, H, W) decoder outputs.
        x: float (n, C, H, W) targets in [0, 1].

    Returns:
        scalar tensor, nats per image (disentanglement_lib's ``bernoulli_loss``).
    """
    per_image = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    return per_image.mean()


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per latent dimension, averaged over the batch.

    Args:
        mean, logvar: float (n, d).

    Returns:
        float (d,): closed form 0.5 * (mean^2 + exp(logvar) - logvar - 1), batch mean.
        Sum it for the total KL in nats.
    """
    return (0.5 * (mean.pow(2) + logvar.exp() - logvar - 1)).mean(0)


#: Where :func:`reparameterize` takes its N(0, I) noise from when set: an object with a
#: method ``draw(like) -> tensor shaped like ``like```` (see :mod:`vaebias.training.ensemble`, which
#: feeds every member of a batched ensemble the noise its own seed would have drawn).
NOISE_FEED: contextvars.ContextVar = contextvars.ContextVar("vaebias_noise_feed", default=None)


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mean + exp(logvar / 2) * N(0, I) noise (torch's global RNG, or the active
    :data:`NOISE_FEED`)."""
    feed = NOISE_FEED.get()
    noise = torch.randn_like(mean) if feed is None else feed.draw(mean)
    return mean + noise * torch.exp(0.5 * logvar)


class Model(nn.Module):
    """Base class of vaebias models (see module docstring).

    Subclasses define a nested ``Config`` dataclass of their hyperparameters and
    ``DEFAULTS``: per dataset name, overrides of the config with their source.
    """

    #: registry name, set by :func:`vaebias.models.register`
    name: ClassVar[str] = ""
    #: row name in tables and figures (the paper's Table 1 name, e.g. "β-VAE"); default: ``name``
    label: ClassVar[str] = ""
    #: the hyperparameter the paper's Fig. 5 line search scales (None: the model has none)
    primary_hyperparameter: ClassVar[str | None] = None
    #: position among the rows of tables (the paper's Table 1 order first)
    table_row: ClassVar[int] = 100
    #: a row of the paper's Table 1
    in_table1: ClassVar[bool] = False
    #: "single" images or "pairs" (Slow-VAE, PCL, weakly supervised GAN)
    input_kind: ClassVar[str] = "single"
    #: True when the model has a posterior variance (active units apply)
    stochastic: ClassVar[bool] = False
    #: True when several seeds can train as one batched ensemble (:mod:`vaebias.training.ensemble`):
    #: the default ``training_step`` and optimiser, and no torch randomness other than
    #: :func:`reparameterize`
    ensemble_ok: ClassVar[bool] = False
    #: True when the loss terms are means over the batch's rows and the only randomness
    #: is :func:`reparameterize` with one noise row per batch row: the batch can then be
    #: split into shards computed side by side (``TrainConfig.data_parallel``,
    #: :mod:`vaebias.training.sharded`) with the same step
    batch_separable: ClassVar[bool] = False

    @dataclasses.dataclass
    class Config:
        pass

    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {}

    #: dtype of the mixed-precision forward passes, set by the training loop from
    #: ``TrainConfig.precision`` (None: full float32)
    autocast_dtype: torch.dtype | None = None
    #: shards per step of the default ``training_step`` (set by the training loop from
    #: ``TrainConfig.data_parallel``; 1: unsharded); the loop passes the sharded backward
    data_parallel: int = 1

    def __init__(self, observation_shape: tuple[int, int, int], num_factors: int, config=None):
        super().__init__()
        self.observation_shape = tuple(observation_shape)
        self.num_factors = int(num_factors)
        self.config = config if config is not None else self.Config()

    # -- representation -----------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance) of q(z|x), each float (n, d); VAEs only."""
        raise NotImplementedError(f"{type(self).__name__} has no posterior variance")

    # -- optimisation -------------------------------------------------------
    def autocast(self):
        """Context for the forward passes of a training step: ``torch.autocast`` with
        :attr:`autocast_dtype` on the parameters' device, or a null context. Backward
        passes and optimiser steps run outside it (PyTorch's recommended use)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        device_type = next(self.parameters()).device.type
        return torch.autocast(device_type=device_type, dtype=self.autocast_dtype)

    def batch_sampler(self, data):
        """What one training step sees (see :mod:`vaebias.data.samplers`); default:
        single images with factors uniform over the grid."""

        return UniformSampler(data)

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def configure_optimizers(self, train_config) -> dict[str, torch.optim.Optimizer]:
        """Adam over all parameters with the training config's lr/betas/eps."""
        return {
            "main": torch.optim.Adam(
                self.parameters(), lr=train_config.lr,
                betas=tuple(train_config.adam_betas), eps=train_config.adam_eps,
                **adam_options(train_config),
            )
        }

    def training_step(self, batch: dict, optimizers: dict, backward=None) -> dict[str, float]:
        """One optimisation step; returns the loss terms as floats.

        ``backward(model, batch) -> terms`` computes the loss terms and sets the
        gradients. The training loop passes the sharded one
        (:func:`vaebias.training.sharded.sharded_backward`) when
        ``TrainConfig.data_parallel`` > 1; by default the model's ``loss`` under
        :meth:`autocast` and ``.backward()``.
        """
        opt = optimizers["main"]
        if backward is not None:
            terms = backward(self, batch)
        else:
            with self.autocast():
                terms = self.loss(batch)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
        opt.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    @classmethod
    def default_config(cls, dataset: str | None = None):
        """The model's Config with the per-dataset defaults of ``DEFAULTS`` applied."""
        values = dict(cls.DEFAULTS.get(dataset or "", {}))
        return cls.Config(**values)



class GaussianVAE(Model):
    """The shared body of the VAE family: the standard conv encoder with (mean,
    log-variance) heads of a diagonal Gaussian q(z|x), and the standard conv decoder
    giving Bernoulli logits; latent size = number of ground-truth factors. Subclasses
    write only their objective (``loss``)."""

    stochastic = True

    def __init__(self, observation_shape, num_factors, config=None):
        super().__init__(observation_shape, num_factors, config)
        c = self.observation_shape[0]
        size = image_size_of(self.observation_shape)
        width = getattr(self.config, "width", 1.0)
        self.encoder = ConvEncoder(c, num_factors, num_heads=2, width=width, image_size=size)
        self.decoder = ConvDecoder(num_factors, c, width=width, image_size=size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean float32 (n, d) of images float32 (n, C, 64, 64)."""
        return self.encoder(x)[0]

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance) of q(z|x), each float32 (n, d)."""
        mean, logvar = self.encoder(x)
        return mean, logvar.exp()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits float32 (n, C, 64, 64) of codes (n, d)."""
        return self.decoder(z)

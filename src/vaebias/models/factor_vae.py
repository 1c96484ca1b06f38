"""FactorVAE (Kim & Mnih 2018, "Disentangling by Factorising").

Objective of the VAE (encoder and decoder), per batch (nats per image):

    loss = E_q[-log p(x|z)] + KL(q(z|x) || N(0, I)) + γ · TC(z)

    TC(z) ≈ mean over the batch of  logit_0(D(z)) − logit_1(D(z))

where D is a discriminator telling samples of the aggregate posterior q(z)
(class 0, "real joint") from samples of the product of its marginals Π_j q(z_j)
(class 1). With a softmax over the two logits, logit_0 − logit_1 = log D_0/D_1,
the density-ratio estimate of log q(z) − log Π_j q(z_j), whose expectation under
q(z) is the total correlation.

Objective of the discriminator (cross-entropy, halves of the batch weighted equally):

    loss_D = ½ · CE(D(z), class 0) + ½ · CE(D(permute_dims(z)), class 1)

with ``z`` detached from the encoder, and ``permute_dims`` shuffling every latent
dimension independently across the batch, which turns samples of q(z) into
samples of Π_j q(z_j).

One training step (:meth:`FactorVAE.training_step`) does, on one batch and one
reparameterised sample z:

1. the VAE step: the discriminator's parameters are frozen (``requires_grad``
   off) while D(z) is computed, so the γ·TC gradient reaches the encoder through z
   but nothing accumulates in D's ``.grad`` (cleared beforehand); only the
   encoder/decoder optimiser ("main") steps;
2. the discriminator step: D is evaluated on ``z.detach()`` and on
   ``permute_dims(z.detach())`` (so no gradient reaches the encoder); D's gradients
   are reset first and only the discriminator optimiser steps.

Both steps see the discriminator and the codes of the same forward pass, which is
what disentanglement_lib's simultaneous update computes. As in disentanglement_lib
(``shuffle_codes`` on the same ``z_sampled``), the permuted codes come from the
*same* batch as the VAE term; Kim & Mnih's Algorithm 2 draws a second batch for the
permutation. Sharing the batch halves the cost and is the field's reference
implementation (disentanglement_lib's ``FactorVAE``).

Architecture (``conv_encoder``, ``deconv_decoder`` and ``fc_discriminator`` of
``disentanglement_lib.methods.shared.architectures``, after Kim & Mnih App. A): the
standard conv encoder/decoder, latent size = number of factors; discriminator = 6 dense
layers of 1000 units with leaky ReLU (slope 0.2), then a linear layer to 2 logits.
Optimisers: the VAE uses the training config's Adam (lr 1e-4, (0.9, 0.999), eps 1e-8
in disentanglement_lib); the discriminator its own Adam with lr 1e-4, betas (0.5, 0.9),
eps 1e-8 (disentanglement_lib ``unsupervised_study_v1/model_configs/shared.gin``).

Defaults: γ = 35 on dSprites, γ = 7 on Shapes3D (the paper's primary values as
far as known, *unverified*: its main text does not list them and its supplement was not
available). Other datasets use γ = 35. disentanglement_lib's study sweeps γ over
{10, 20, 30, 40, 50, 100} (``unsupervised_study_v1/sweep.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from vaebias._internal.config import check
from vaebias.models import register
from vaebias.models.base import (
    GaussianVAE,
    adam_options,
    bernoulli_reconstruction,
    gaussian_kl,
    reparameterize,
)

__all__ = ["FactorVAE", "Discriminator", "permute_dims"]

#: class index of samples of the joint q(z) and of the product of marginals
REAL_JOINT, PRODUCT_OF_MARGINALS = 0, 1


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Shuffle each latent dimension independently across the batch.

    Args:
        z: float (n, d) samples of q(z).

    Returns:
        a new float (n, d) tensor whose column j is a random permutation of z[:, j]
        (one permutation per column, from torch's global RNG); ``z`` is not modified.
    """
    n, d = z.shape
    order = torch.argsort(torch.rand(n, d, device=z.device), dim=0)
    return torch.gather(z, 0, order)


class Discriminator(nn.Module):
    """Codes float (n, d) -> 2 logits float (n, 2): [real joint, product of marginals]."""

    def __init__(self, latent_dim: int, hidden: int = 1000, num_layers: int = 6,
                 negative_slope: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(negative_slope)]
            width = hidden
        layers.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


@contextlib.contextmanager
def _frozen(module: nn.Module):
    """Turn off ``requires_grad`` of ``module``'s parameters inside the block (the
    graph built there never accumulates into their ``.grad``), then restore it."""
    params = list(module.parameters())
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


@register("factor_vae")
class FactorVAE(GaussianVAE):
    """FactorVAE with latent size = number of ground-truth factors."""
    label = "FactorVAE"
    primary_hyperparameter = "gamma"
    table_row = 2
    in_table1 = True

    @dataclasses.dataclass
    class Config:
        """gamma: weight of the total-correlation term (>= 0; 0 is the plain VAE).
        discriminator_lr, discriminator_betas: the discriminator's Adam."""

        gamma: float = 35.0
        discriminator_lr: float = 1e-4
        # a list, not a tuple: configs are written to YAML with yaml.safe_dump
        discriminator_betas: list[float] = dataclasses.field(default_factory=lambda: [0.5, 0.9])
        #: channel/unit multiplier of the conv encoder and decoder (1: the standard
        #: disentanglement_lib network; smaller is cheaper, e.g. the laptop profile's 0.5)
        width: float = 1.0

        def __post_init__(self):
            check(self.width > 0, "width", self.width, "a number > 0")
            check(self.gamma >= 0, "gamma", self.gamma, "a number >= 0")
            check(self.discriminator_lr > 0, "discriminator_lr", self.discriminator_lr, "a number > 0")
            check(
                len(self.discriminator_betas) == 2 and all(0 <= b < 1 for b in self.discriminator_betas),
                "discriminator_betas", self.discriminator_betas, "two numbers in [0, 1)",
            )
            self.discriminator_betas = [float(b) for b in self.discriminator_betas]

    DEFAULTS = {"dsprites": {"gamma": 35.0}, "shapes3d": {"gamma": 7.0}}

    def __init__(self, observation_shape, num_factors, config=None):
        super().__init__(observation_shape, num_factors, config)
        self.discriminator = Discriminator(num_factors)

    # -- representation -----------------------------------------------------

    # -- the two objectives -------------------------------------------------
    def total_correlation(self, z: torch.Tensor) -> torch.Tensor:
        """Discriminator estimate of TC: batch mean of logit_0 − logit_1 of D(z)."""
        logits = self.discriminator(z)
        return (logits[:, REAL_JOINT] - logits[:, PRODUCT_OF_MARGINALS]).mean()

    def discriminator_loss(self, z: torch.Tensor, z_permuted: torch.Tensor) -> torch.Tensor:
        """½ CE(D(z), real joint) + ½ CE(D(z_permuted), product of marginals).
        Callers pass detached codes: this loss must train the discriminator only."""
        n_real, n_perm = z.shape[0], z_permuted.shape[0]
        real = F.cross_entropy(self.discriminator(z),
                               torch.full((n_real,), REAL_JOINT, device=z.device))
        perm = F.cross_entropy(self.discriminator(z_permuted),
                               torch.full((n_perm,), PRODUCT_OF_MARGINALS, device=z.device))
        return 0.5 * (real + perm)

    def _vae_terms(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The VAE objective (D frozen) and the sample z it used."""
        mean, logvar = self.encoder(x)
        z = reparameterize(mean, logvar)
        recon = bernoulli_reconstruction(self.decode(z), x)
        kl = gaussian_kl(mean, logvar).sum()
        with _frozen(self.discriminator):
            tc = self.total_correlation(z)
        loss = recon + kl + self.config.gamma * tc
        return {"loss": loss, "recon": recon, "kl": kl, "tc": tc}, z

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        """The VAE objective and, for monitoring, the discriminator's loss on the same
        codes (nothing is stepped here; :meth:`training_step` does the two updates)."""
        terms, z = self._vae_terms(batch["images"])
        z = z.detach()
        terms["discriminator_loss"] = self.discriminator_loss(z, permute_dims(z))
        return terms

    # -- optimisation -------------------------------------------------------
    def vae_parameters(self) -> list[nn.Parameter]:
        """Encoder and decoder parameters (what the "main" optimiser trains)."""
        return list(self.encoder.parameters()) + list(self.decoder.parameters())

    def configure_optimizers(self, train_config) -> dict[str, torch.optim.Optimizer]:
        """"main": Adam over encoder + decoder with the training config's settings;
        "discriminator": Adam over the discriminator (Config's lr and betas, eps 1e-8)."""
        return {
            "main": torch.optim.Adam(
                self.vae_parameters(), lr=train_config.lr,
                betas=tuple(train_config.adam_betas), eps=train_config.adam_eps,
                **adam_options(train_config),
            ),
            "discriminator": torch.optim.Adam(
                self.discriminator.parameters(), lr=self.config.discriminator_lr,
                betas=tuple(self.config.discriminator_betas), eps=1e-8,
                **adam_options(train_config),
            ),
        }

    def training_step(self, batch: dict, optimizers: dict) -> dict[str, float]:
        vae_opt, disc_opt = optimizers["main"], optimizers["discriminator"]

        # (a) VAE step: D frozen, so only encoder/decoder receive gradients (D's
        # gradients from the previous step are cleared too: D has none here).
        with self.autocast():
            terms, z = self._vae_terms(batch["images"])
        vae_opt.zero_grad(set_to_none=True)
        disc_opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        vae_opt.step()

        # (b) discriminator step on detached codes: the encoder/decoder get nothing.
        z = z.detach()
        with self.autocast():
            disc_loss = self.discriminator_loss(z, permute_dims(z))
        disc_opt.zero_grad(set_to_none=True)
        disc_loss.backward()
        disc_opt.step()

        out = {k: float(v.detach()) for k, v in terms.items()}
        out["discriminator_loss"] = float(disc_loss.detach())
        return out

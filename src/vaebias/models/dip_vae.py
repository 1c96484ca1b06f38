"""DIP-VAE-I and DIP-VAE-II (Kumar, Sattigeri & Balakrishnan 2018, "Variational
Inference of Disentangled Latent Concepts from Unlabeled Observations").

Objective, per batch of M images (nats per image):

    loss = E_q[-log p(x|z)] + KL(q(z|x) || N(0, I)) + λ_od · Σ_{i≠j} C_ij² + λ_d · Σ_i (C_ii − 1)²

pushing a covariance matrix C of the codes towards the identity:

- DIP-VAE-I (Kumar et al. Eq. 6):  C = Cov[μ(x)], the covariance over the batch
  of the encoder means;
- DIP-VAE-II (Kumar et al. Eq. 7): C = E[Σ(x)] + Cov[μ(x)], the covariance of
  the aggregate posterior q(z) (Σ(x) = diag(σ²(x)) the encoder covariance).

Cov is the batch (population, 1/M) covariance E[μ μᵀ] − E[μ] E[μ]ᵀ, as in
disentanglement_lib's ``compute_covariance_z_mean``. λ_d = lambda_d_factor · λ_od.

Defaults (every dataset). disentanglement_lib (``unsupervised_study_v1/sweep.py``)
fixes lambda_d_factor = 10 for DIP-VAE-I and 1 for DIP-VAE-II, and sweeps λ_od over
{1, 2, 5, 10, 20, 50} for both, without a single default. Our choice: λ_od = 10
for both (I: λ_d = 100, the setting commonly cited from Kumar et al.'s dSprites
experiments, *unverified*; II: λ_d = 10), the middle of that grid. The paper
reproduced here does not train DIP-VAEs; change ``lambda_od`` per run as needed.

Architecture and reconstruction: the standard conv encoder/decoder, latent size =
number of factors (as in the paper, Sec. 5.1), Bernoulli decoder, one reparameterised
sample (disentanglement_lib's ``DIPVAE``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from vaebias._internal.config import check
from vaebias.models import register
from vaebias.models.base import GaussianVAE, bernoulli_reconstruction, gaussian_kl, reparameterize

__all__ = ["DIPVAEI", "DIPVAEII", "covariance", "dip_covariance", "dip_regularizer"]


def covariance(mean: torch.Tensor) -> torch.Tensor:
    """Batch covariance (1/M) float (d, d) of encoder means float (M, d)."""
    centred = mean - mean.mean(dim=0, keepdim=True)
    return centred.T @ centred / mean.shape[0]


def dip_covariance(mean: torch.Tensor, logvar: torch.Tensor, dip_type: str) -> torch.Tensor:
    """The matrix DIP-VAE regularises: Cov[μ] ("i") or E[diag σ²] + Cov[μ] ("ii")."""
    cov = covariance(mean)
    if dip_type == "i":
        return cov
    if dip_type == "ii":
        return cov + torch.diag(logvar.exp().mean(dim=0))
    raise ValueError(f"dip_type = {dip_type!r}: expected 'i' or 'ii'")


def dip_regularizer(cov: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    """λ_od · Σ_{i≠j} C_ij² + λ_d · Σ_i (C_ii − 1)² (scalar)."""
    diag = torch.diagonal(cov)
    off_diag = cov - torch.diag(diag)
    return lambda_od * off_diag.pow(2).sum() + lambda_d * (diag - 1).pow(2).sum()


class _DIPVAE(GaussianVAE):
    """Shared body of the two variants; ``dip_type`` selects the covariance."""

    ensemble_ok = True

    stochastic = True
    dip_type: ClassVar[str] = ""

    def regularizer(self, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """The DIP term of this variant on a batch's posterior parameters."""
        cfg = self.config
        cov = dip_covariance(mean, logvar, self.dip_type)
        return dip_regularizer(cov, cfg.lambda_od, cfg.lambda_d_factor * cfg.lambda_od)

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        x = batch["images"]
        mean, logvar = self.encoder(x)
        z = reparameterize(mean, logvar)
        recon = bernoulli_reconstruction(self.decode(z), x)
        kl = gaussian_kl(mean, logvar).sum()
        dip = self.regularizer(mean, logvar)
        loss = recon + kl + dip
        return {"loss": loss, "recon": recon, "kl": kl, "dip": dip}


def _check_lambdas(cfg) -> None:
    check(cfg.lambda_od >= 0, "lambda_od", cfg.lambda_od, "a number >= 0")
    check(cfg.lambda_d_factor >= 0, "lambda_d_factor", cfg.lambda_d_factor, "a number >= 0")


@register("dip_vae_i")
class DIPVAEI(_DIPVAE):
    """DIP-VAE-I: regularises Cov[μ(x)]."""
    label = "DIP-VAE-I"
    primary_hyperparameter = "lambda_od"
    table_row = 7
    in_table1 = False

    dip_type = "i"

    @dataclasses.dataclass
    class Config:
        """lambda_od: weight of the off-diagonal entries (>= 0); lambda_d_factor:
        λ_d / λ_od (>= 0; 10 for DIP-VAE-I in disentanglement_lib)."""

        lambda_od: float = 10.0
        lambda_d_factor: float = 10.0

        def __post_init__(self):
            _check_lambdas(self)


@register("dip_vae_ii")
class DIPVAEII(_DIPVAE):
    """DIP-VAE-II: regularises E[Σ(x)] + Cov[μ(x)]."""
    label = "DIP-VAE-II"
    primary_hyperparameter = "lambda_od"
    table_row = 8
    in_table1 = False

    dip_type = "ii"

    @dataclasses.dataclass
    class Config:
        """lambda_od: weight of the off-diagonal entries (>= 0); lambda_d_factor:
        λ_d / λ_od (>= 0; 1 for DIP-VAE-II in disentanglement_lib)."""

        lambda_od: float = 10.0
        lambda_d_factor: float = 1.0

        def __post_init__(self):
            _check_lambdas(self)

"""β-TC-VAE (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs").

Objective, per batch of M images (nats per image), in disentanglement_lib's form
(Chen et al. Eq. 4 with α = γ = 1, so ELBO − (β − 1)·TC):

    loss = E_q[-log p(x|z)] + KL(q(z|x) || N(0, I)) + (β − 1) · TC

    TC = mean_j [ log q(z_j) − log Π_l q(z_jl) ],   z_j ~ q(z | x_j) (one sample each)

The aggregate posterior q(z) = (1/N) Σ_n q(z | x_n) over the N training images is
estimated by minibatch-weighted sampling (MWS, Chen et al. Sec. 4.1): with the batch
x_1..x_M and log q(z_jl | x_i) the Gaussian log-density of latent l of sample j
under the posterior of image i,

    log q(z_j)          ≈ logsumexp_i [ Σ_l log q(z_jl | x_i) ] − log(N·M)
    log Π_l q(z_jl)     ≈ Σ_l ( logsumexp_i [ log q(z_jl | x_i) ] − log(N·M) )

N is the true number of training images: Config field ``dataset_size``, filled by
:func:`vaebias.models.build_model` from the training data (never a constant; a
model built without it is a :class:`~vaebias._internal.errors.ConfigError`). Under MWS, N
enters TC only through the constant (d − 1)·log(N·M) (d = latent size): it leaves
the gradients unchanged but sets the value of TC and of the logged loss.
disentanglement_lib's ``total_correlation`` drops that constant. The training log has
both: ``tc`` without the constant (disentanglement_lib's value; the logged ``loss`` uses
it) and ``tc_mws`` with it (Chen et al.'s estimate, :func:`total_correlation`). They differ
by :func:`mws_constant`, ≈ 54 nats on dSprites at batch 64; the gradients, and so the
weights, are the same either way. MWS is biased: e.g. when all posteriors in the batch
coincide (true TC = 0) ``tc_mws`` is (d − 1)·log N, so a logged TC well above 0 early in
training is expected.

Architecture and reconstruction: the standard conv encoder/decoder, latent size =
number of factors (as in the paper, Sec. 5.1), Bernoulli decoder, one reparameterised
sample (disentanglement_lib's ``BetaTCVAE``).

Defaults: β = 6 on dSprites, β = 32 on Shapes3D (the paper's primary values as
far as known, *unverified*: its main text does not list them and its supplement was not
available). Other datasets use β = 6. disentanglement_lib's study sweeps β over
{1, 2, 4, 6, 8, 10} (``unsupervised_study_v1/sweep.py``). β = 1 is the plain VAE.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from vaebias._internal.config import check
from vaebias._internal.errors import ConfigError
from vaebias.models import register
from vaebias.models.base import GaussianVAE, bernoulli_reconstruction, gaussian_kl, reparameterize

__all__ = ["BetaTCVAE", "gaussian_log_density", "mws_constant", "mws_log_densities", "total_correlation"]

_LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, exp(logvar)) elementwise (broadcasting), per dimension."""
    return -0.5 * (_LOG_2PI + logvar + (z - mean).pow(2) * torch.exp(-logvar))


def mws_log_densities(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                      dataset_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Minibatch-weighted-sampling estimates of log q(z_j) and log Π_l q(z_jl).

    Args:
        z: float (M, d) samples, z[j] ~ q(z | x_j).
        mean, logvar: float (M, d) posterior parameters of the same batch.
        dataset_size: N, the number of training images (> 0).

    Returns:
        (log_qz, log_prod_marginals), each float (M,).
    """
    m = z.shape[0]
    log_nm = math.log(dataset_size) + math.log(m)
    # pair[j, i, l] = log q(z_jl | x_i)
    pair = gaussian_log_density(z[:, None, :], mean[None, :, :], logvar[None, :, :])
    log_qz = torch.logsumexp(pair.sum(dim=2), dim=1) - log_nm
    log_prod_marginals = (torch.logsumexp(pair, dim=1) - log_nm).sum(dim=1)
    return log_qz, log_prod_marginals


def mws_constant(latent_size: int, dataset_size: int, batch_size: int) -> float:
    """(d − 1)·log(N·M): what MWS's TC estimate holds beyond disentanglement_lib's
    ``total_correlation`` (which leaves out the log(N·M) normalisers). Nats."""
    return (latent_size - 1) * (math.log(dataset_size) + math.log(batch_size))


def total_correlation(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                      dataset_size: int) -> torch.Tensor:
    """MWS estimate of TC = E_q(z)[log q(z) − log Π_l q(z_l)] on a batch (scalar)."""
    log_qz, log_prod_marginals = mws_log_densities(z, mean, logvar, dataset_size)
    return (log_qz - log_prod_marginals).mean()


@register("beta_tc_vae")
class BetaTCVAE(GaussianVAE):
    """β-TC-VAE with latent size = number of ground-truth factors."""
    label = "β-TC-VAE"
    primary_hyperparameter = "beta"
    table_row = 3
    in_table1 = True

    ensemble_ok = True

    @dataclasses.dataclass
    class Config:
        """beta: weight of the TC term is beta − 1 (> 0; 1 is the VAE).
        dataset_size: N of the minibatch-weighted sampling, the number of training
        images (> 0); filled from the data by ``build_model``."""

        beta: float = 6.0
        dataset_size: int | None = None
        #: channel/unit multiplier of the conv encoder and decoder (1: the standard
        #: disentanglement_lib network; smaller is cheaper, e.g. the laptop profile's 0.5)
        width: float = 1.0

        def __post_init__(self):
            check(self.width > 0, "width", self.width, "a number > 0")
            check(self.beta > 0, "beta", self.beta, "a number > 0")
            check(self.dataset_size is None or self.dataset_size > 0, "dataset_size",
                  self.dataset_size, "an integer > 0 (the number of training images)")

    DEFAULTS = {"dsprites": {"beta": 6.0}, "shapes3d": {"beta": 32.0}}

    def __init__(self, observation_shape, num_factors, config=None):
        super().__init__(observation_shape, num_factors, config)
        if self.config.dataset_size is None:
            raise ConfigError(
                "beta_tc_vae.dataset_size = None: expected the number of training images "
                "(build_model fills it from the data; pass dataset_size=len(data))"
            )

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        x = batch["images"]
        mean, logvar = self.encoder(x)
        z = reparameterize(mean, logvar)
        recon = bernoulli_reconstruction(self.decode(z), x)
        kl = gaussian_kl(mean, logvar).sum()
        tc_mws = total_correlation(z, mean, logvar, self.config.dataset_size)
        # the logged TC and loss without MWS's constant (d - 1)·log(N·M), as disentanglement_lib logs them;
        # a constant moves no gradient, so the weights are those of the objective with it
        tc = tc_mws - mws_constant(z.shape[1], self.config.dataset_size, z.shape[0])
        loss = recon + kl + (self.config.beta - 1.0) * tc
        return {"loss": loss, "recon": recon, "kl": kl, "tc": tc, "tc_mws": tc_mws}

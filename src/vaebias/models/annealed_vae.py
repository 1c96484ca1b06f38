"""AnnealedVAE (Burgess et al. 2018, "Understanding disentangling in β-VAE").

Objective, per batch (nats per image), at training step t (t = 0 for the first step):

    loss = E_q[-log p(x|z)] + γ · | KL(q(z|x) || N(0, I)) − C(t) |

    C(t) = min(C_max, C_max · t / iteration_threshold)

the KL capacity C growing linearly from 0 to C_max over ``iteration_threshold``
steps, then held (Burgess et al. Eq. 8; disentanglement_lib's ``AnnealedVAE`` and
``anneal``, which read the global step before it is incremented). KL is the closed
form summed over latent dimensions and averaged over the batch; one
reparameterised sample; Bernoulli decoder; standard conv encoder/decoder with
latent size = number of factors (as in the paper, Sec. 5.1).

The step t is a registered buffer ``step`` (int64, part of ``state_dict()``),
incremented once per :meth:`AnnealedVAE.training_step`, so a run resumed from a
checkpoint continues the schedule exactly. :meth:`AnnealedVAE.loss` reads it and
does not change it.

Defaults (every dataset): γ = 1000, C_max = 25 nats, iteration_threshold = 100,000.
γ and the threshold are disentanglement_lib's fixed values
(``unsupervised_study_v1/sweep.py``: ``annealed_vae.gamma = 1000``,
``annealed_vae.iteration_threshold = 100000``); C_max = 25 is one value of its sweep
{5, 10, 25, 50, 75, 100} and Burgess et al.'s dSprites setting (C from 0 to 25 nats
over 100,000 iterations, γ = 1000; their App. A). The paper reproduced here does not
train an AnnealedVAE; these defaults are a documented choice.
"""

from __future__ import annotations

import dataclasses

import torch

from vaebias._internal.config import check
from vaebias.models import register
from vaebias.models.base import GaussianVAE, bernoulli_reconstruction, gaussian_kl, reparameterize

__all__ = ["AnnealedVAE", "capacity"]


def capacity(step: int | torch.Tensor, c_max: float, iteration_threshold: int) -> float:
    """C(step) = min(C_max, C_max · step / iteration_threshold) in nats."""
    return min(float(c_max), float(c_max) * float(step) / float(iteration_threshold))


@register("annealed_vae")
class AnnealedVAE(GaussianVAE):
    """AnnealedVAE with latent size = number of ground-truth factors."""
    label = "AnnealedVAE"
    primary_hyperparameter = "c_max"
    table_row = 9
    in_table1 = False

    @dataclasses.dataclass
    class Config:
        """gamma: weight of |KL − C| (>= 0); c_max: final capacity in nats (>= 0);
        iteration_threshold: steps for C to reach c_max (> 0)."""

        gamma: float = 1000.0
        c_max: float = 25.0
        iteration_threshold: int = 100_000

        def __post_init__(self):
            check(self.gamma >= 0, "gamma", self.gamma, "a number >= 0")
            check(self.c_max >= 0, "c_max", self.c_max, "a number >= 0")
            check(self.iteration_threshold > 0, "iteration_threshold", self.iteration_threshold,
                  "an integer > 0")

    def __init__(self, observation_shape, num_factors, config=None):
        super().__init__(observation_shape, num_factors, config)
        #: training steps done so far (checkpointed with the weights)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def capacity(self) -> float:
        """C at the current step (nats)."""
        return capacity(int(self.step), self.config.c_max, self.config.iteration_threshold)

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        x = batch["images"]
        mean, logvar = self.encoder(x)
        z = reparameterize(mean, logvar)
        recon = bernoulli_reconstruction(self.decode(z), x)
        kl = gaussian_kl(mean, logvar).sum()
        c = self.capacity()
        loss = recon + self.config.gamma * (kl - c).abs()
        return {"loss": loss, "recon": recon, "kl": kl, "capacity": torch.tensor(c, device=kl.device)}

    def training_step(self, batch: dict, optimizers: dict, backward=None) -> dict[str, float]:
        out = super().training_step(batch, optimizers, backward)
        self.step += 1
        return out

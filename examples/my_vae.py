"""A VAE written outside vaebias: the example of the docs page "Your own data and models".

Train it in your own loop, score it with ``vaebias.metrics.evaluate``, and audit the recipe with
``vaebias audit model --model examples.my_vae:MyVAE ...`` (run from the checkout's root).
"""

import dataclasses

import torch
from torch import nn

from vaebias.models.base import Model


class MyVAE(Model):
    """A fully connected VAE: Gaussian posterior, Bernoulli decoder, β-weighted KL."""
    stochastic = True  # it has a posterior variance, so active units apply

    @dataclasses.dataclass
    class Config:
        beta: float = 4.0
        hidden: int = 256

    def __init__(self, observation_shape, num_factors, config=None):
        super().__init__(observation_shape, num_factors, config)
        d, h = int(torch.Size(observation_shape).numel()), self.config.hidden
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 2 * num_factors))
        self.dec = nn.Sequential(nn.Linear(num_factors, h), nn.ReLU(), nn.Linear(h, d),
                                 nn.Unflatten(1, tuple(observation_shape)))

    def posterior(self, x):  # (mean, variance), each (n, d)
        mean, logvar = self.enc(x).chunk(2, dim=1)
        return mean, logvar.exp()
    def encode(self, x):  # what the metrics score: the posterior mean
        return self.posterior(x)[0]
    def decode(self, z):  # Bernoulli logits (n, C, H, W)
        return self.dec(z)
    def loss(self, batch):
        x = batch["images"]
        mean, var = self.posterior(x)
        z = mean + var.sqrt() * torch.randn_like(mean)
        recon = nn.functional.binary_cross_entropy_with_logits(self.decode(z), x, reduction="sum") / len(x)
        kl = 0.5 * (mean.pow(2) + var - var.log() - 1).sum(1).mean()
        return {"loss": recon + self.config.beta * kl, "recon": recon, "kl": kl}

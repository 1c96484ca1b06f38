"""Regular autoencoder (Hinton & Salakhutdinov 2006): the paper's Table 1 baseline.

The standard conv encoder with one deterministic head and the standard decoder,
trained on the Bernoulli reconstruction loss alone (no KL). Its representation is
the code itself. Source: the paper's "regular autoencoder" baseline (Sec. 5.1 and
Table 1): the VAEs' networks, no KL, a deterministic code.
"""

from __future__ import annotations

import dataclasses

import torch

from vaebias._internal.config import check
from vaebias.models import register
from vaebias.models.base import Model, bernoulli_reconstruction
from vaebias.models.networks import ConvDecoder, ConvEncoder, image_size_of


@register("ae")
class AE(Model):
    """Deterministic autoencoder; latent size = number of ground-truth factors."""
    label = "AE"
    primary_hyperparameter = None
    table_row = 0
    in_table1 = True

    ensemble_ok = True
    batch_separable = True

    @dataclasses.dataclass
    class Config:
        """width: channel/unit multiplier of the conv encoder and decoder (> 0; 1 is the
        standard disentanglement_lib network, smaller is cheaper)."""

        width: float = 1.0

        def __post_init__(self):
            check(self.width > 0, "width", self.width, "a number > 0")

    def __init__(self, observation_shape, num_factors, config=None):
        super().__init__(observation_shape, num_factors, config)
        c = self.observation_shape[0]
        size = image_size_of(self.observation_shape)
        self.encoder = ConvEncoder(c, num_factors, num_heads=1, width=self.config.width, image_size=size)
        self.decoder = ConvDecoder(num_factors, c, width=self.config.width, image_size=size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes float32 (n, num_factors) of images float32 (n, C, 64, 64)."""
        return self.encoder(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Logits float32 (n, C, 64, 64) of codes (n, num_factors)."""
        return self.decoder(z)

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        x = batch["images"]
        recon = bernoulli_reconstruction(self.decode(self.encode(x)), x)
        return {"loss": recon, "recon": recon}

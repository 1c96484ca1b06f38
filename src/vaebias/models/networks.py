"""The standard convolutional encoder and decoder of disentanglement_lib (``conv_encoder``
and ``deconv_decoder`` of ``disentanglement_lib.methods.shared.architectures``).

Encoder (64x64 input): conv 32 k4 s2, conv 32 k4 s2, conv 64 k2 s2, conv 64 k2 s2
(ReLU; 64 -> 32 -> 16 -> 8 -> 4 px), dense 256 (ReLU), then linear heads.
Decoder: dense 256, dense 1024 -> (64, 4, 4), transposed conv 64, 32, 32 (k4 s2,
ReLU), transposed conv to C channels (k4 s2), returning logits (64x64).

Other square image sizes that are multiples of 16 (e.g. the 32x32 demo dataset) keep
every layer; only the feature map between the convolutions and the dense layers
changes size ((size/16)^2 pixels: 2x2 at 32x32). The paper's datasets are 64x64.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvEncoder", "ConvDecoder", "image_size_of"]


def image_size_of(observation_shape) -> int:
    """The side of square images (C, S, S) with S a multiple of 16 (>= 16).

    Raises:
        ValueError: non-square images or a side that is not a positive multiple of 16.
    """
    _, h, w = (int(v) for v in observation_shape)
    if h != w or h < 16 or h % 16:
        raise ValueError(f"observation_shape = {tuple(observation_shape)}: the standard networks take square "
                         f"images whose side is a multiple of 16 (e.g. (1, 64, 64) or (1, 32, 32))")
    return h


class ConvEncoder(nn.Module):
    """Images float32 (n, C, S, S) -> ``num_heads`` tensors float32 (n, latent_dim);
    S = ``image_size`` (64, the standard; any multiple of 16).

    With ``num_heads=2`` the heads are (mean, log-variance) of a diagonal Gaussian;
    with 1 a deterministic code. ``width`` scales every channel/unit count (1.0 is the
    standard network).
    """

    def __init__(self, in_channels: int, latent_dim: int, num_heads: int = 2, width: float = 1.0,
                 image_size: int = 64):
        super().__init__()
        cells = (image_size_of((in_channels, image_size, image_size)) // 16) ** 2
        c32, c64, h = max(1, round(32 * width)), max(1, round(64 * width)), max(1, round(256 * width))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(c32, c32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(c32, c64, 2, 2), nn.ReLU(),
            nn.Conv2d(c64, c64, 2, 2), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c64 * cells, h), nn.ReLU(),
        )
        self.heads = nn.Linear(h, latent_dim * num_heads)
        self.num_heads = num_heads
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.heads(self.features(x)).float()  # float32 even under autocast: losses need it
        return tuple(out.split(self.latent_dim, dim=1))


class ConvDecoder(nn.Module):
    """Codes float32 (n, latent_dim) -> logits float32 (n, C, S, S); S = ``image_size``
    (64, the standard; any multiple of 16)."""

    def __init__(self, latent_dim: int, out_channels: int, width: float = 1.0, image_size: int = 64):
        super().__init__()
        side = image_size_of((out_channels, image_size, image_size)) // 16
        c32, c64, h = max(1, round(32 * width)), max(1, round(64 * width)), max(1, round(256 * width))
        self.net = nn.Sequential(
            nn.Linear(latent_dim, h), nn.ReLU(),
            nn.Linear(h, c64 * side * side), nn.ReLU(),
            nn.Unflatten(1, (c64, side, side)),
            nn.ConvTranspose2d(c64, c64, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c64, c32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c32, c32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c32, out_channels, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).float()  # float32 logits even under autocast

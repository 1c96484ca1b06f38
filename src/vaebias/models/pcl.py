"""Permutation-contrastive learning, PCL (Hyvärinen & Morioka 2017, "Nonlinear ICA of
temporally dependent stationary sources").

Input: pairs ``(x_{t-1}, x_t)`` from :class:`~vaebias.data.pairs.LaplaceTransitionSampler`
(``batch["images"]`` is ``x_{t-1}``, ``batch["images2"]`` is ``x_t``), as for Slow-VAE
(the paper does not describe PCL's data; its Sec. 2 notes that PCL assumes temporal
dependencies). A deterministic feature extractor ``h`` (the standard conv encoder with
one head, latent size = number of factors; no decoder) feeds the regression function

    r(h_t, h_{t-1}) = −Σ_i |a_i·h_{t,i} + b_i·h_{t-1,i} + c_i| + Σ_i h_{t,i}² + d

with learnable per-dimension ``a, b, c`` and a scalar ``d``, initialised to
``a = 1, b = −1, c = 0, d = 0`` (so that ``r = −Σ|h_t − h_{t-1}| + Σ h_t²`` at the start).
Logistic regression tells real pairs (label 1) from pairs whose first element was
shuffled within the batch (label 0):

    loss = ½ mean_j softplus(−r(h_t^j, h_{t-1}^j)) + ½ mean_j softplus(r(h_t^j, h_{t-1}^{π(j)}))

i.e. binary cross-entropy with logits averaged over the n real and n shuffled pairs.
``π`` is drawn from torch's (CPU) RNG, so a resumed run draws the same permutations.

Checked against the authors' PyTorch PCL (Hyvärinen & Morioka's code, ``pcl/pcl.py``
and ``pcl/train.py``, the AR(1) model); differences:

- they multiply ``Σ h_t²`` by a learnable scalar clamped at >= 0 (init 1); here the
  weight is fixed at 1. Without their batch normalisation of ``h`` this
  loses nothing: rescaling ``h -> s·h`` with ``a, b, c -> a/s, b/s, c`` leaves the
  absolute-value term unchanged and multiplies the quadratic term by ``s²``, so the
  encoder's scale plays the role of that weight (for a weight > 0);
- they batch-normalise ``h``; the standard encoder here has no normalisation;
- their ``c`` keeps PyTorch's default uniform bias init (their comment says 0); here
  ``c = 0``, as their comment says;
- their negatives replace ``x_{t-1}`` by an independent random sample of the data; here
  by another pair's ``x_{t-1}``, i.e. ``h_{t-1}`` shuffled within the batch. ``π`` is a random
  n-cycle, so no real pair is ever labelled as a negative (a plain permutation
  would relabel about one real pair per batch).

Defaults: ``rate_data = 1`` (the pair sampler, as for Slow-VAE: slow_disentanglement's
``--rate-data 1``); PCL itself has no further hyperparameter (the optimiser and batch
come from the training config, disentanglement_lib's Adam 1e-4, batch 64).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from vaebias._internal.config import check
from vaebias.data.pairs import LaplaceTransitionSampler
from vaebias.models import register
from vaebias.models.base import Model
from vaebias.models.networks import ConvEncoder, image_size_of

__all__ = ["PCL", "random_cycle"]


def random_cycle(n: int, device=None) -> torch.Tensor:
    """A uniformly random cyclic permutation of ``range(n)`` (n >= 2): int64 (n,) with
    no fixed point, drawn with ``torch.randperm`` on the CPU generator."""
    if n < 2:
        raise ValueError(f"n = {n}: a permutation without fixed points needs n >= 2")
    order = torch.randperm(n)
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(-1)  # order[k] -> order[k + 1]
    return perm.to(device)


@register("pcl")
class PCL(Model):
    """PCL with a deterministic code of size = number of ground-truth factors."""
    label = "PCL"
    primary_hyperparameter = None
    table_row = 5
    in_table1 = True

    input_kind = "pairs"
    stochastic = False

    @dataclasses.dataclass
    class Config:
        """rate_data: rate of the pair sampler (> 0; step scale log(size)/rate)."""

        rate_data: float = 1.0
        #: channel/unit multiplier of the conv encoder and decoder (1: the standard
        #: disentanglement_lib network; smaller is cheaper, e.g. the laptop profile's 0.5)
        width: float = 1.0

        def __post_init__(self):
            check(self.width > 0, "width", self.width, "a number > 0")
            check(self.rate_data > 0, "rate_data", self.rate_data, "a number > 0")

    DEFAULTS = {"dsprites": {"rate_data": 1.0}, "shapes3d": {"rate_data": 1.0}}

    def __init__(self, observation_shape, num_factors, config=None):
        super().__init__(observation_shape, num_factors, config)
        c = self.observation_shape[0]
        d = self.num_factors
        self.encoder = ConvEncoder(c, d, num_heads=1, width=self.config.width,
                                   image_size=image_size_of(self.observation_shape))
        self.a = nn.Parameter(torch.ones(d))
        self.b = nn.Parameter(-torch.ones(d))
        self.c = nn.Parameter(torch.zeros(d))
        self.d = nn.Parameter(torch.zeros(()))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code h(x) float32 (n, d) of images float32 (n, C, 64, 64)."""
        return self.encoder(x)[0]

    def score(self, h_t: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
        """Logit r(h_t, h_{t-1}) float (n,) of codes (n, d) each (module docstring)."""
        return (-(self.a * h_t + self.b * h_prev + self.c).abs().sum(1)
                + h_t.pow(2).sum(1) + self.d)

    def batch_sampler(self, data):

        return LaplaceTransitionSampler(data, rate=self.config.rate_data)

    def loss(self, batch: dict, perm: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Logistic loss of real vs. shuffled pairs.

        Args:
            batch: ``"images"`` = x_{t-1}, ``"images2"`` = x_t, float32 (n, C, H, W), n >= 2.
            perm: int64 (n,): the negatives pair ``h_t[j]`` with ``h_{t-1}[perm[j]]``;
                default :func:`random_cycle`.
        """
        n = batch["images"].shape[0]
        h = self.encode(torch.cat([batch["images"], batch["images2"]]))
        h_prev, h_t = h[:n], h[n:]
        if perm is None:
            perm = random_cycle(n, h.device)
        logits = torch.cat([self.score(h_t, h_prev), self.score(h_t, h_prev[perm])])
        labels = torch.cat([torch.ones(n, device=h.device), torch.zeros(n, device=h.device)])
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        accuracy = ((logits > 0).float() == labels).float().mean()
        return {"loss": loss, "accuracy": accuracy}

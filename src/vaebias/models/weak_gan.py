"""The weakly supervised GAN of Shu et al. (ICLR 2020), match pairing.

Shu, Chen, Kumar, Ermon, Poole, "Weakly Supervised Disentanglement with Guarantees"
(ICLR 2020); their TensorFlow code is ``google-research/weak_disentangle``. The studied
paper (Zietlow et al. 2021, Sec. 5.1) trains it "in the full sharing setting", i.e.
share pairing on every factor individually (see :mod:`vaebias.data.match_pairs` for
the mapping of the names); its training settings are listed under "Optimisers" below.

Data: pairs ``(x1, x2)`` with a label ``y`` = the index of the factor the pair shares
(``pairing = "share"``, default) or changes (``pairing = "change"``).

Three networks, latent size d = number of ground-truth factors:

- generator ``G(z)``, ``z ~ N(0, I_d)``, image = sigmoid(deconv net). Generated pairs
  follow the data's pairing: ``z1, z2`` are independent except that they share
  coordinate ``y`` (share) or differ *only* in coordinate ``y`` (change). The fake
  pairs reuse the labels ``y`` of the real batch (Shu et al. draw them afresh from the
  same uniform distribution; reusing them is equal in distribution and keeps a
  restricted label set consistent between real and fake pairs).
- discriminator ``D(x1, x2, y)``: one conv feature extractor ``φ`` applied to both
  images, ``h = ψ([φ(x1), φ(x2)])``, and a projection head (Miyato & Koyama 2018)

      D(x1, x2, y) = w · h + e_y · h

  with an unconditional linear term ``w`` and a learned, weight-normalised embedding
  ``e_y`` of the label (norm ≈ 1, see :class:`ProjectionDiscriminator`).
- encoder ``E(x) = (μ, σ)``, trained **only on generated images** to recover their
  latents by the Gaussian negative log-likelihood

      L_E = E_z[ Σ_k ( (z_k − μ_k)² / (2σ_k²) + log σ_k + ½ log 2π ) ],  σ = softplus(·) + 1e-8.

  Its gradient does not reach the generator (the fakes are detached, as in Shu et
  al.'s code). It sees both images of each generated pair (Shu et al.: the first
  only), twice the data for one more encoder pass. The representation for the
  metrics is ``μ`` on real images.

GAN loss: the non-saturating loss in its sigmoid cross-entropy form, as in Shu et
al.'s code (``sigmoid_cross_entropy_with_logits``):

    L_D = ½ E[softplus(−D(real))] + ½ E[softplus(D(fake))]
    L_G = E[softplus(−D(fake))]

One training step = one D step on detached fakes, then one step of G and E on
``L_G + L_E`` with D frozen (parameters without gradient, and in eval mode so that
not even its spectral-norm power-iteration buffers move).

Architecture (Shu et al.'s ``networks.py`` and ``configs/gan.gin``; it mirrors the
standard nets of :mod:`vaebias.models.networks` but with 4x4 stride-2 kernels
throughout, leaky ReLU (slope 0.2) and 128-unit dense layers):

- shared feature extractor of D and E: conv 32, 32, 64, 64 (k4 s2 p1; 64 -> 4 px),
  each times ``width``; then dense 128·width;
- E: extractor (width ``enc_width`` = 1), then dense 2d (mean and pre-softplus scale);
  spectral norm on every layer (``Encoder.spectral_norm = True``);
- D: extractor (width ``disc_width`` = 2, ``share_dense = True``), neck of two dense
  128·width layers on the concatenated pair features, unconditional head without bias
  (``uncond_bias = False``); spectral norm on extractor, neck and unconditional head,
  weight normalisation (no scale, epsilon 1e-3) on the label embedding;
- G: dense 128, dense 1024 -> (64, 4, 4), deconv 64, 32, 32 (k4 s2, leaky ReLU),
  deconv to C channels, sigmoid; batch norm after every hidden activation
  (``Generator.batch_norm = True``).

Optimisers (``configure_optimizers``): Adam lr 1e-3, betas (0.5, 0.999), eps 1e-8 for
D and for G+E (``train.dec_lr = 1e-3``, ``enc_lr_mul = 1`` in Shu et al.'s ``gan.gin``).
Shu et al. keep separate Adams for G and E with these same settings; Adam acts per
parameter, so one Adam over the disjoint G and E parameters is the same update. These
live in the model Config, so the training config's ``lr``/``adam_betas`` (the VAE
settings) do not apply to this model. Batch 64 and 500,000 steps (``train.batch_size``,
``train.iterations`` in ``gan.gin``) are training-config values.

Defaults are the same on dSprites and Shapes3D (Shu et al. use one config for all
datasets, only the latent size changes); pairing "share" is the studied paper's
"full sharing". Initialisation: PyTorch's defaults (Shu et al. use Keras' Glorot).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from vaebias._internal.config import check
from vaebias.data.match_pairs import MatchPairSampler
from vaebias.models import register
from vaebias.models.base import Model, adam_options

__all__ = ["WeakGAN", "ProjectionDiscriminator", "Generator", "feature_extractor", "gaussian_nll"]

_SLOPE = 0.2  # leaky ReLU slope of Shu et al.'s tensorsketch


def _ch(base: int, width: float) -> int:
    return max(1, round(base * width))


def _sn(module: nn.Module) -> nn.Module:
    """Spectral norm on every Conv2d / Linear inside ``module`` (in place)."""
    for name, child in list(module.named_children()):
        if parametrize.is_parametrized(child):
            continue
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            setattr(module, name, spectral_norm(child))
        else:
            _sn(child)
    return module


def feature_extractor(in_channels: int, width: float) -> nn.Sequential:
    """Images float (n, C, 64, 64) -> features float (n, 128·width): four k4 s2 convs
    (32, 32, 64, 64 channels times ``width``), then dense 128·width, leaky ReLU."""
    c32, c64, h = _ch(32, width), _ch(64, width), _ch(128, width)
    return nn.Sequential(
        nn.Conv2d(in_channels, c32, 4, 2, 1), nn.LeakyReLU(_SLOPE),
        nn.Conv2d(c32, c32, 4, 2, 1), nn.LeakyReLU(_SLOPE),
        nn.Conv2d(c32, c64, 4, 2, 1), nn.LeakyReLU(_SLOPE),
        nn.Conv2d(c64, c64, 4, 2, 1), nn.LeakyReLU(_SLOPE),
        nn.Flatten(),
        nn.Linear(c64 * 16, h), nn.LeakyReLU(_SLOPE),
    )


class ProjectionDiscriminator(nn.Module):
    """``D(x1, x2, y) = w · h + e_y · h`` with ``h = neck([body(x1), body(x2)])``.

    The label embedding is weight-normalised without a scale, as in Shu et al.'s
    ``gan.gin`` (``add_wn(head_cond)``, ``scale = False``, ``epsilon = 1e-3``):
    ``e_y = v_y / sqrt(|v_y|² + 1e-3)``, so every label's embedding has norm just
    under 1 and the conditional term cannot outgrow the spectrally normalised rest.

    Args:
        body: image -> features float (n, f) (applied to both images, shared weights).
        neck: features of the pair float (n, 2f) -> ``h`` float (n, feature_dim).
        feature_dim: size of ``h``.
        num_labels: number of pairing labels (= number of factors).
    """

    #: epsilon of the embedding's weight normalisation (Shu et al.'s gan.gin)
    EMBEDDING_EPS = 1e-3

    def __init__(self, body: nn.Module, neck: nn.Module, feature_dim: int, num_labels: int):
        super().__init__()
        self.body = body
        self.neck = neck
        self.unconditional = nn.Linear(feature_dim, 1, bias=False)
        self.embedding = nn.Embedding(num_labels, feature_dim)
        nn.init.normal_(self.embedding.weight, std=feature_dim ** -0.5)

    def label_embedding(self, y: torch.Tensor) -> torch.Tensor:
        """``e_y`` float (n, feature_dim) of labels int64 (n,)."""
        v = self.embedding(y)
        return v * torch.rsqrt(v.pow(2).sum(1, keepdim=True) + self.EMBEDDING_EPS)

    def pair_features(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """``h`` float (n, feature_dim) of image pairs (n, C, H, W) each."""
        f1, f2 = self.body(torch.cat([x1, x2])).chunk(2)
        return self.neck(torch.cat([f1, f2], dim=1))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Logits float (n,) of pairs with labels int64 (n,)."""
        h = self.pair_features(x1, x2)
        return self.unconditional(h).squeeze(1) + (self.label_embedding(y) * h).sum(1)


class Generator(nn.Module):
    """Latents float (n, d) -> images float (n, C, 64, 64) in (0, 1)."""

    def __init__(self, latent_dim: int, out_channels: int, width: float = 1.0, batch_norm: bool = True):
        super().__init__()
        c32, c64, h = _ch(32, width), _ch(64, width), _ch(128, width)

        def act(relu: nn.Module, n: int, dims: int) -> list[nn.Module]:
            if not batch_norm:
                return [relu]
            return [relu, nn.BatchNorm1d(n) if dims == 1 else nn.BatchNorm2d(n)]

        self.net = nn.Sequential(
            nn.Linear(latent_dim, h), *act(nn.ReLU(), h, 1),
            nn.Linear(h, c64 * 16), *act(nn.ReLU(), c64 * 16, 1),
            nn.Unflatten(1, (c64, 4, 4)),
            nn.ConvTranspose2d(c64, c64, 4, 2, 1), *act(nn.LeakyReLU(_SLOPE), c64, 2),
            nn.ConvTranspose2d(c64, c32, 4, 2, 1), *act(nn.LeakyReLU(_SLOPE), c32, 2),
            nn.ConvTranspose2d(c32, c32, 4, 2, 1), *act(nn.LeakyReLU(_SLOPE), c32, 2),
            nn.ConvTranspose2d(c32, out_channels, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))


def gaussian_nll(z: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """−log N(z; mean, diag(scale²)) summed over dimensions, averaged over the batch."""
    per_dim = 0.5 * ((z - mean) / scale).pow(2) + torch.log(scale) + 0.5 * math.log(2 * math.pi)
    return per_dim.sum(1).mean()


@contextlib.contextmanager
def _frozen(module: nn.Module):
    """``module`` in eval mode with parameters excluded from autograd, restored after."""
    was_training = module.training
    flags = [p.requires_grad for p in module.parameters()]
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
        module.train(was_training)


@register("weak_gan")
class WeakGAN(Model):
    """Paired GAN with projection discriminator and a latent-recovering encoder."""
    label = "Weak. sup. GAN"
    primary_hyperparameter = None
    table_row = 6
    in_table1 = True

    input_kind = "pairs"
    stochastic = False

    @dataclasses.dataclass
    class Config:
        """pairing: "share" (the studied paper's "full sharing") or "change" (Shu et
        al.'s default), applied to data pairs and generated latent pairs alike.
        lr, adam_betas, adam_eps: Adam of D and of G+E (Shu et al.: 1e-3, (0.5, 0.999), 1e-8).
        disc_width, enc_width, gen_width: channel/unit multipliers (Shu et al.: 2, 1, 1).
        gen_batch_norm: batch norm after the generator's hidden activations (Shu et al.: on).
        """

        pairing: Literal["share", "change"] = "share"
        lr: float = 1e-3
        adam_betas: list[float] = dataclasses.field(default_factory=lambda: [0.5, 0.999])
        adam_eps: float = 1e-8
        disc_width: float = 2.0
        enc_width: float = 1.0
        gen_width: float = 1.0
        gen_batch_norm: bool = True

        def __post_init__(self):
            check(self.pairing in ("share", "change"), "pairing", self.pairing, "'share' or 'change'")
            check(self.lr > 0, "lr", self.lr, "a number > 0")
            check(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
                  "adam_betas", self.adam_betas, "two numbers in [0, 1)")
            self.adam_betas = [float(b) for b in self.adam_betas]
            check(self.adam_eps > 0, "adam_eps", self.adam_eps, "a number > 0")
            for key in ("disc_width", "enc_width", "gen_width"):
                check(getattr(self, key) > 0, key, getattr(self, key), "a number > 0")

    # Shu et al.'s configs/gan.gin, the same for every dataset; "share" per the studied
    # paper (Sec. 5.1, "full sharing").
    DEFAULTS = {
        name: {"pairing": "share", "lr": 1e-3, "adam_betas": [0.5, 0.999], "adam_eps": 1e-8,
               "disc_width": 2.0, "enc_width": 1.0, "gen_width": 1.0, "gen_batch_norm": True}
        for name in ("dsprites", "shapes3d")
    }

    def __init__(self, observation_shape, num_factors, config=None):
        super().__init__(observation_shape, num_factors, config)
        c, h, w = self.observation_shape
        if (h, w) != (64, 64):
            raise ValueError(f"observation_shape = {self.observation_shape}: weak_gan expects 64x64 images")
        cfg = self.config
        d = self.num_factors
        self.generator = Generator(d, c, cfg.gen_width, cfg.gen_batch_norm)
        self.encoder = _sn(nn.Sequential(
            feature_extractor(c, cfg.enc_width), nn.Linear(_ch(128, cfg.enc_width), 2 * d),
        ))
        f = _ch(128, cfg.disc_width)
        neck = nn.Sequential(nn.Linear(2 * f, f), nn.LeakyReLU(_SLOPE), nn.Linear(f, f), nn.LeakyReLU(_SLOPE))
        self.discriminator = ProjectionDiscriminator(
            _sn(feature_extractor(c, cfg.disc_width)), _sn(neck), f, num_labels=d,
        )
        self.discriminator.unconditional = spectral_norm(self.discriminator.unconditional)

    # -- data ---------------------------------------------------------------
    def batch_sampler(self, data):
        """Match pairs with this model's pairing (:class:`MatchPairSampler`)."""

        return MatchPairSampler(data, mode=self.config.pairing)

    def sample_latent_pairs(self, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent pairs for labels int64 (n,), with torch's RNG on the label's device.

        Returns:
            (z1, z2) float32 (n, d): N(0, I) each; share pairing: z2 equals z1 in
            coordinate ``label`` and is independent elsewhere; change pairing: z2
            equals z1 except in coordinate ``label``, drawn afresh.
        """
        n, d = label.shape[0], self.num_factors
        z1 = torch.randn(n, d, device=label.device)
        fresh = torch.randn(n, d, device=label.device)
        picked = F.one_hot(label, d).bool()
        if self.config.pairing == "share":
            return z1, torch.where(picked, z1, fresh)
        return z1, torch.where(picked, fresh, z1)

    # -- networks -----------------------------------------------------------
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Images float32 (n, C, 64, 64) in (0, 1) of latents (n, d)."""
        return self.generator(z)

    def _encoder_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.encoder(x).chunk(2, dim=1)
        return mean, F.softplus(raw) + 1e-8

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder mean float32 (n, d) of images (n, C, 64, 64).

        Runs the encoder in eval mode so that encoding never moves its spectral-norm
        power-iteration state (evaluation leaves a training run untouched).
        """
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            return self._encoder_heads(x)[0]
        finally:
            self.encoder.train(was_training)

    # -- objective ----------------------------------------------------------
    def _discriminator_loss(self, batch: dict) -> torch.Tensor:
        x1, x2, y = batch["images"], batch["images2"], batch["label"]
        with torch.no_grad():
            z1, z2 = self.sample_latent_pairs(y)
            fake1, fake2 = self.generate(torch.cat([z1, z2])).chunk(2)
        logits = self.discriminator(torch.cat([x1, fake1]), torch.cat([x2, fake2]), torch.cat([y, y]))
        real, fake = logits.chunk(2)
        return 0.5 * F.softplus(-real).mean() + 0.5 * F.softplus(fake).mean()

    def _generator_encoder_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        y = batch["label"]
        z1, z2 = self.sample_latent_pairs(y)
        z = torch.cat([z1, z2])
        fakes = self.generate(z)
        fake1, fake2 = fakes.chunk(2)
        with _frozen(self.discriminator):
            gen = F.softplus(-self.discriminator(fake1, fake2, y)).mean()
        mean, scale = self._encoder_heads(fakes.detach())
        enc = gaussian_nll(z, mean, scale)
        return {"gen": gen, "enc": enc, "enc_mse": (mean - z).pow(2).mean().detach()}

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        """All terms on one batch without an optimisation step (diagnostics):
        ``"dis"`` L_D, ``"gen"`` L_G, ``"enc"`` L_E, ``"enc_mse"`` mean squared error
        of the encoder mean on generated images, ``"loss"`` = L_D + L_G + L_E."""
        dis = self._discriminator_loss(batch)
        terms = self._generator_encoder_loss(batch)
        terms["dis"] = dis
        terms["loss"] = dis + terms["gen"] + terms["enc"]
        return terms

    def configure_optimizers(self, train_config) -> dict[str, torch.optim.Optimizer]:
        """``"dis"``: Adam over D; ``"gen_enc"``: Adam over G and E. Both use the
        model Config's lr/betas/eps (Shu et al.), not ``train_config``'s."""
        cfg = self.config
        kw = {"lr": cfg.lr, "betas": tuple(cfg.adam_betas), "eps": cfg.adam_eps,
              **adam_options(train_config)}
        gen_enc = list(self.generator.parameters()) + list(self.encoder.parameters())
        return {
            "dis": torch.optim.Adam(self.discriminator.parameters(), **kw),
            "gen_enc": torch.optim.Adam(gen_enc, **kw),
        }

    def discriminator_step(self, batch: dict, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """One Adam step of D on L_D (fakes generated without autograd): ``{"dis": L_D}``.

        G and E parameters are untouched; the generator's batch-norm running
        statistics (buffers, used only in eval mode) do move, as G runs in training
        mode to make the fakes D must judge."""
        with self.autocast():
            dis = self._discriminator_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        dis.backward()
        optimizer.step()
        return {"dis": float(dis.detach())}

    def generator_encoder_step(self, batch: dict, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """One Adam step of G and E on L_G + L_E with D frozen: ``{"gen", "enc", "enc_mse"}``."""
        with self.autocast():
            terms = self._generator_encoder_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        (terms["gen"] + terms["enc"]).backward()
        optimizer.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    def training_step(self, batch: dict, optimizers: dict) -> dict[str, float]:
        """One D step, then one G+E step (Shu et al.'s alternation); returns the terms
        and ``"loss"`` = L_D + L_G + L_E (for the progress display only)."""
        out = self.discriminator_step(batch, optimizers["dis"])
        out.update(self.generator_encoder_step(batch, optimizers["gen_enc"]))
        return {"loss": out["dis"] + out["gen"] + out["enc"], **out}

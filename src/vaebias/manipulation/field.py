"""The paper's dataset manipulation (Zietlow et al. 2021, Sec. 4.3-4.5, Fig. 3).

1. Over R β-VAE restarts, the lowest-MIG model is the *entangled* reference and the
   highest-MIG model the *disentangled* one (Sec. 4.4; :func:`select_references`).
2. A network m_ψ maps the ground-truth factors w to an image-sized map with
   ‖m_ψ(w)‖∞ ≤ 1 (tanh output); the altered image is x' = x + ε·m_ψ(w) (Sec. 4.5).
   Both encoders are frozen and fed the *original* x; z ~ q(z|x) is sampled; both
   decoders, initialised from the references, keep minimising their reconstruction
   loss of x'; ψ minimises L_ent − L_dis (:class:`Manipulator`).
3. The whole dataset is altered and exported, with the uniform-noise control of the
   same size (Sec. 5.2; :func:`export_variants`).

Choices the paper leaves open are config values (:class:`ManipulationConfig`), each
default with its reason.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vaebias._internal.config import TrainConfig, check, from_dict, to_dict
from vaebias._internal.errors import RunError
from vaebias._internal.io import load_checkpoint, read_yaml
from vaebias.data.base import GroundTruthData
from vaebias.data.variants import NOISE_DISTRIBUTIONS
from vaebias.models.base import reparameterize
from vaebias.models.networks import ConvDecoder
from vaebias.training import fit, load_run, resolve_device
from vaebias.training.rundir import CHECKPOINT

__all__ = ["HEALTH_LIMITS", "ManipulationConfig", "ManipulationField", "Manipulator", "field_health", "load_field", "train_manipulation"]


#: thresholds of :func:`field_health`'s warnings: m_ψ's standard deviation over factor
#: values (mean over pixels) below which the field counts as not depending on w
HEALTH_LIMITS = {"std_over_w": 0.05, "abs_mean_m": 0.9}


@dataclasses.dataclass
class ManipulationConfig:
    """Settings of the manipulation (paper Sec. 4.5).

    Attributes:
        epsilon: ε > 0, the max-norm size of the change; 0.1 for dSprites and 0.175
            for Shapes3D (paper Sec. 5.2).
        clip: clip x' to [0, 1] in the produced datasets. Default True: the VAEs are
            trained with a Bernoulli likelihood whose targets must be probabilities, and
            the altered images stay valid images; |x' − x| ≤ ε holds either way. The
            paper does not say. (uint8 exports clip whatever this says.)
        clip_in_objective: compute L_ent and L_dis on the clipped x' (True, default)
            or on the unclipped x + ε·m_ψ(w) (False). With clipping the gradient to m_ψ
            vanishes wherever x + ε·m_ψ leaves [0, 1], e.g. on every black background
            pixel where m_ψ < 0. Measured on the blobs dataset (2,500 steps, L2 loss):
            clipped, m_ψ ended as one w-independent ±1 texture (std of m_ψ over w,
            mean over pixels: 0.004) and L_ent − L_dis stayed at +0.2; unclipped, m_ψ
            depends on w (0.39) and L_ent − L_dis turned negative.
        loss: reconstruction loss of the two decoders on x': "bernoulli" (default; the
            loss every VAE of the study is trained with, so "cheaper to decode" is
            measured in the objective the retrained models optimise) or "l2" (the
            squared error written in the paper's Fig. 3).
        field_width: channel multiplier of m_ψ, a "decoder-like network" (Fig. 3):
            the standard conv decoder at this width (1.0 = standard) fed the factors.
            Smaller widths make exporting the full dataset cheaper.
        decoder_lr: learning rate of the two decoders (None: the training lr).
        noise_seed: seed of the noise control dataset.
        noise: the control's distribution: ``"uniform"`` (default; the paper's
            U[−ε, ε], Sec. 5.2) or ``"sign"`` (±ε, the power of a saturated m_ψ; see
            :class:`~vaebias.data.variants.Noisy`). A learned m_ψ is often near ±1, so the
            uniform control has about a third of its mean square; the sign control
            separates the structure of m_ψ from its size.
    """

    epsilon: float = 0.1
    clip: bool = True
    clip_in_objective: bool = True
    loss: Literal["bernoulli", "l2"] = "bernoulli"
    field_width: float = 1.0
    decoder_lr: float | None = None
    noise_seed: int = 0
    noise: Literal["uniform", "sign"] = "uniform"

    def __post_init__(self):
        check(isinstance(self.epsilon, (int, float)) and not isinstance(self.epsilon, bool)
              and 0 < self.epsilon <= 1, "epsilon", self.epsilon, "a number in (0, 1] (images lie in [0, 1])")
        check(self.loss in ("bernoulli", "l2"), "loss", self.loss, "'bernoulli' or 'l2'")
        check(self.noise in NOISE_DISTRIBUTIONS, "noise", self.noise, " or ".join(map(repr, NOISE_DISTRIBUTIONS)))
        # the Bernoulli loss is unbounded below for targets outside [0, 1]
        check(self.clip_in_objective or self.loss == "l2", "clip_in_objective", self.clip_in_objective,
              "true with loss 'bernoulli' (an unclipped objective needs loss 'l2')")
        check(self.epsilon >= 1 / 255, "epsilon", self.epsilon, "at least 1/255 (exports are uint8)")
        check(self.field_width > 0, "field_width", self.field_width, "a number > 0")
        check(self.decoder_lr is None or self.decoder_lr > 0, "decoder_lr", self.decoder_lr,
              "a number > 0 or null")


class ManipulationField(nn.Module):
    """m_ψ: factors int64 (n, K) -> map float32 (n, C, H, W) in [−1, 1].

    Input encoding: every factor as its class index scaled to [−1, 1], plus a one-hot
    code for each categorical factor (e.g. dSprites shape). Network: the standard conv
    decoder (``width`` multiplier) followed by tanh, so ‖m‖∞ ≤ 1 by construction.
    """

    def __init__(self, factor_sizes, categorical_factors, out_channels: int, width: float = 1.0,
                 image_size: int = 64):
        super().__init__()
        self.factor_sizes = tuple(int(s) for s in factor_sizes)
        self.categorical = tuple(int(i) for i in categorical_factors)
        in_dim = len(self.factor_sizes) + sum(self.factor_sizes[i] for i in self.categorical)
        self.register_buffer("_scale", torch.tensor([max(s - 1, 1) for s in self.factor_sizes],
                                                    dtype=torch.float32))
        self.net = ConvDecoder(in_dim, out_channels, width=width, image_size=image_size)

    def encode_factors(self, factors: torch.Tensor) -> torch.Tensor:
        f = factors.long()
        parts = [2.0 * f.float() / self._scale - 1.0]
        for i in self.categorical:
            parts.append(F.one_hot(f[:, i], self.factor_sizes[i]).float())
        return torch.cat(parts, dim=1)

    def forward(self, factors: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(self.encode_factors(factors)))


def _recon(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "bernoulli":
        per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    else:
        per = (torch.sigmoid(logits) - target).pow(2)
    return per.flatten(1).sum(1).mean()


class Manipulator(nn.Module):
    """The trainable system of the paper's Fig. 3 (see module docstring).

    Args:
        entangled, disentangled: trained β-VAE models (``encoder``/``decoder``); they
            are copied, their encoders frozen.
        factor_sizes, categorical_factors: of the dataset.
        config: a :class:`ManipulationConfig`.
    """

    def __init__(self, entangled, disentangled, factor_sizes, categorical_factors,
                 config: ManipulationConfig):
        super().__init__()
        import copy

        self.config = config
        self.ent = copy.deepcopy(entangled)
        self.dis = copy.deepcopy(disentangled)
        for ref in (self.ent, self.dis):
            for p in ref.encoder.parameters():
                p.requires_grad_(False)
        out_channels, size = entangled.observation_shape[0], entangled.observation_shape[1]
        self.field = ManipulationField(factor_sizes, categorical_factors, out_channels,
                                       width=config.field_width, image_size=size)

    def train(self, mode: bool = True):
        super().train(mode)
        self.ent.encoder.eval()
        self.dis.encoder.eval()
        return self

    def _decoder_params(self):
        return list(self.ent.decoder.parameters()) + list(self.dis.decoder.parameters())

    def configure_optimizers(self, train_config: TrainConfig):
        betas, eps = tuple(train_config.adam_betas), train_config.adam_eps
        dec_lr = self.config.decoder_lr or train_config.lr
        return {
            "field": torch.optim.Adam(self.field.parameters(), lr=train_config.lr, betas=betas, eps=eps),
            "decoders": torch.optim.Adam(self._decoder_params(), lr=dec_lr, betas=betas, eps=eps),
        }

    def altered(self, x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        """x' = x + ε·m_ψ(w) as the objective sees it: clipped to [0, 1] when both
        ``clip`` and ``clip_in_objective`` are set."""
        out = x + self.config.epsilon * self.field(factors)
        return out.clamp(0.0, 1.0) if self.config.clip and self.config.clip_in_objective else out

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        x, w = batch["images"], batch["factors"]
        x_alt = self.altered(x, w)
        with torch.no_grad():  # frozen encoders, fed the original images
            z_ent = reparameterize(*self.ent.encoder(x))
            z_dis = reparameterize(*self.dis.encoder(x))
        l_ent = _recon(self.ent.decoder(z_ent), x_alt, self.config.loss)
        l_dis = _recon(self.dis.decoder(z_dis), x_alt, self.config.loss)
        return {"loss": l_ent - l_dis, "l_ent": l_ent, "l_dis": l_dis}

    def training_step(self, batch: dict, optimizers: dict) -> dict[str, float]:
        terms = self.losses(batch)
        dec_params = self._decoder_params()
        field_params = list(self.field.parameters())
        # decoders: each minimises its own reconstruction loss of x'
        g_dec = torch.autograd.grad(terms["l_ent"] + terms["l_dis"], dec_params, retain_graph=True)
        # m_ψ: minimises L_ent − L_dis through its effect on x'
        g_field = torch.autograd.grad(terms["loss"], field_params)
        for p, g in zip(dec_params, g_dec):
            p.grad = g
        for p, g in zip(field_params, g_field):
            p.grad = g
        optimizers["decoders"].step()
        optimizers["field"].step()
        out = {k: float(v.detach()) for k, v in terms.items()}
        return out


def train_manipulation(
    data: GroundTruthData,
    entangled_dir: str | os.PathLike,
    disentangled_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: ManipulationConfig,
    train_config: TrainConfig,
    *,
    progress: bool = True,
) -> Manipulator:
    """Fit m_ψ (and the two decoders) in ``out_dir`` with the one training loop
    (checkpointed, resumable). Returns the trained :class:`Manipulator` in eval mode.
    Seeds torch's global random generator (``torch.manual_seed``), as PyTorch training code usually does."""
    device = resolve_device(train_config.device)
    ent, _ = load_run(entangled_dir, device)
    dis, _ = load_run(disentangled_dir, device)
    torch.manual_seed(train_config.seed)
    manip = Manipulator(ent, dis, data.factor_sizes, data.categorical_factors, config)
    record = {
        "stage": "manipulation",
        "dataset_info": data.describe(),
        # the references by paths relative to m_psi's folder: the record holds when a results folder moves
        "entangled": os.path.relpath(Path(entangled_dir).resolve(), Path(out_dir).resolve()),
        "disentangled": os.path.relpath(Path(disentangled_dir).resolve(), Path(out_dir).resolve()),
        "manipulation": to_dict(config),
        "train": to_dict(train_config),
    }
    fit(manip, data, out_dir, train_config, record, progress=progress, description="manipulation m_psi",
        record_classes={"manipulation": ManipulationConfig})
    return manip.eval()


def load_field(manipulation_dir: str | os.PathLike, device="cpu") -> tuple[ManipulationField, ManipulationConfig]:
    """The trained m_ψ of a manipulation run and its config.

    Raises:
        RunError: the folder holds no finished manipulation run.
    """
    d = Path(manipulation_dir)
    if not (d / CHECKPOINT).exists() or not (d / "config.yaml").exists():
        raise RunError(f"{str(d)!r} holds no manipulation run (expected config.yaml and {CHECKPOINT})")
    record = read_yaml(d / "config.yaml")
    if record.get("stage") != "manipulation":
        raise RunError(f"{str(d)!r} is not a manipulation run")
    cfg = from_dict(ManipulationConfig, record["manipulation"])
    info = record["dataset_info"]
    categorical = info.get("categorical_factors", [])
    field = ManipulationField(info["factor_sizes"], categorical, info["observation_shape"][0],
                              width=cfg.field_width, image_size=info["observation_shape"][1])
    state = load_checkpoint(d / CHECKPOINT, map_location=resolve_device(device))
    prefix = "field."
    field.load_state_dict({k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)})
    return field.to(resolve_device(device)).eval(), cfg


def field_health(data: GroundTruthData, manipulation_dir, *, points: int = 2000, seed: int = 0,
                 device="cpu") -> dict:
    """How well a trained m_ψ did its job (paper Sec. 4.5; the checks the paper leaves to
    the reader).

    - ``std_over_w``: the standard deviation of m_ψ(w) over ``points`` uniform factor
      values, per pixel, averaged over pixels. Near 0: m_ψ is one fixed texture, the same
      for every image, which cannot hide the factors' local structure (seen with the
      clipped objective on blobs and on the quick Shapes3D run).
    - ``saturated_share``: share of values with |m| > 0.99 (tanh saturated: the change is
      ±ε there). ``mean_abs_m``: mean |m|.
    - ``gap_start``, ``gap_end``: L_dis − L_ent (what ψ maximises) in the first logged
      row and averaged over the last fifth of ``train_log.csv``; the gap *opens* when it
      grows (``gap_opened``: gap_end > gap_start; None with fewer than two logged rows).
    - ``mean_m``: the mean of m_ψ over points and pixels (about ±1 with a small std: the
      field collapsed to a constant that only darkens or brightens the images).
    - ``warnings``: one line per failed check (a field that does not depend on w, a gap
      that never opens), each naming what to try.

    Returns:
        the dict above (floats, a bool and a list of strings).

    Raises:
        RunError: no finished manipulation run in ``manipulation_dir``.
    """
    d = Path(manipulation_dir)
    field, _ = load_field(d, device)
    f = data.sample_factors(points, np.random.default_rng(seed))
    with torch.no_grad():
        m = torch.cat([field(torch.as_tensor(f[i:i + 500], device=field._scale.device)).float().cpu()
                       for i in range(0, points, 500)])
    out = {"points": int(points), "std_over_w": float(m.std(0).mean()),
           "saturated_share": float((m.abs() > 0.99).float().mean()), "mean_abs_m": float(m.abs().mean())}
    rows = []
    log = d / "train_log.csv"
    if log.exists():
        with open(log, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("l_ent") and r.get("l_dis")]
    if len(rows) >= 2:  # one logged row says nothing about a trend
        gaps = [float(r["l_dis"]) - float(r["l_ent"]) for r in rows]
        tail = gaps[-max(1, len(gaps) // 5):]
        out.update(gap_start=gaps[0], gap_end=float(np.mean(tail)), gap_opened=bool(np.mean(tail) > gaps[0]))
    else:
        out.update(gap_start=None, gap_end=None, gap_opened=None)
    warnings = []
    mean_m = float(m.mean())
    out["mean_m"] = mean_m
    try_this = ("try: references that disentangle (more reference steps: m_psi can only undo a disentangled "
                "reference), the l2 objective on unclipped images (loss l2, clip_in_objective false), the rotated "
                "entangled reference (entangled_reference: rotated), or more manipulation steps")
    if abs(mean_m) > HEALTH_LIMITS["abs_mean_m"]:
        warnings.append(f"m_psi collapsed to about {mean_m:+.2f} everywhere (mean over w and pixels): the "
                        f"modified data mostly {'darkens' if mean_m < 0 else 'brightens'} every image, not the "
                        f"paper's manipulation; {try_this}")
    elif out["std_over_w"] < HEALTH_LIMITS["std_over_w"]:
        warnings.append(f"m_psi hardly depends on the factors (std over w {out['std_over_w']:.3f} < "
                        f"{HEALTH_LIMITS['std_over_w']}): the modified data is one fixed texture added to every "
                        f"image, not the paper's manipulation; {try_this}")
    if out["gap_opened"] is False:
        warnings.append(f"the gap L_dis - L_ent never opened ({out['gap_start']:.3g} at the start, "
                        f"{out['gap_end']:.3g} at the end): m_psi did not make the entangled decoder's job "
                        f"easier; {try_this}, or references whose MIG differs more")
    out["warnings"] = warnings
    return out



"""Latent traversals of a trained run: what each latent dimension does to the image.

For one reference image x0 (drawn from the run's dataset with ``seed``), the code
z0 = encode(x0) is decoded with one latent at a time replaced by ``num_values`` evenly
spaced values between that latent's 2nd and 98th percentile over ``num_points`` encoded
images (the data's own range, which works for VAEs and plain autoencoders alike). Row j
of the grid varies latent j; column k uses the k-th value.

Decoders: the VAE family and the AE decode Bernoulli logits (shown through a sigmoid);
the weakly supervised GAN's generator gives images directly. PCL has no decoder and
cannot be traversed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vaebias._internal.errors import RunError
from vaebias._internal.io import atomic_path
from vaebias.data.registry import located_spec
from vaebias.manipulation.export import load_dataset_spec
from vaebias.report.figures import new_figure, save_figure
from vaebias.training import check_run_fits, is_finished, load_run

__all__ = ["decoder_of", "traversal_grid", "write_traversal"]


def decoder_of(model):
    """``z (n, d) -> images float32 (n, C, H, W) in [0, 1]`` of a trained model.

    Raises:
        RunError: the model has neither ``decode`` nor ``generate`` (PCL).
    """
    if hasattr(model, "decode"):
        return lambda z: torch.sigmoid(model.decode(z))
    if hasattr(model, "generate"):
        return model.generate
    raise RunError(f"model {getattr(model, 'name', type(model).__name__)!r} has no decoder or generator "
                   f"(it is encoder-only), so its latents cannot be traversed")


@torch.no_grad()
def traversal_grid(model, data, *, num_values: int = 9, seed: int = 0, num_points: int = 1000,
                   device="cpu") -> dict:
    """The traversal images of ``model`` around one image of ``data``.

    Args:
        model: a trained model (eval mode) with ``encode`` and a decoder (see :func:`decoder_of`).
        data: the dataset it was trained on (a :class:`~vaebias.data.base.GroundTruthData`).
        num_values: values per latent (>= 2).
        seed: draws the reference image (first row of ``data.sample_factors(1, rng)``)
            and the ``num_points`` images that set each latent's range.
        num_points: images whose codes give the 2nd-98th percentile range (>= 2).
        device: where to run the model.

    Returns:
        dict: ``"images"`` float32 numpy (d, num_values, C, H, W) in [0, 1];
        ``"values"`` float64 (d, num_values); ``"code"`` float64 (d,) (z0);
        ``"reference"`` float32 (C, H, W) (x0); ``"factors"`` int64 (K,) of x0.

    Raises:
        ValueError: num_values or num_points < 2.
        RunError: a model without a decoder.
    """
    if num_values < 2 or num_points < 2:
        raise ValueError(f"num_values and num_points must be >= 2; got {num_values}, {num_points}")
    decode = decoder_of(model)
    rng = np.random.default_rng(seed)
    f0 = data.sample_factors(1, rng)
    x0 = data.images(f0, device=device)
    z0 = model.encode(x0)[0]
    codes = model.encode(data.images(data.sample_factors(num_points, rng), device=device)).double().cpu().numpy()
    lo, hi = np.percentile(codes, [2, 98], axis=0)
    values = np.linspace(lo, hi, num_values, axis=1)  # (d, num_values)
    d = z0.shape[0]
    z = z0.repeat(d, num_values, 1)  # (d, num_values, d)
    idx = torch.arange(d)
    z[idx, :, idx] = torch.as_tensor(values, dtype=z.dtype, device=z.device)
    images = decode(z.reshape(d * num_values, d)).float().clamp(0, 1)
    return {"images": images.reshape(d, num_values, *images.shape[1:]).cpu().numpy(), "values": values,
            "code": z0.double().cpu().numpy(), "reference": x0[0].float().cpu().numpy(),
            "factors": f0[0]}


def _tile(images: np.ndarray) -> np.ndarray:
    """(rows, cols, C, H, W) -> one uint8 picture (rows*H + gaps, cols*W + gaps, 3)."""
    rows, cols, c, h, w = images.shape
    gap = 2
    canvas = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), dtype=np.float32)
    for i in range(rows):
        for j in range(cols):
            img = images[i, j].transpose(1, 2, 0)
            canvas[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = (
                np.repeat(img, 3, axis=2) if c == 1 else img)
    return (canvas * 255).round().astype(np.uint8)


def write_traversal(run_dir: str | os.PathLike, out_png: str | os.PathLike, *, gif: str | os.PathLike | None = None,
                    num_values: int = 9, seed: int = 0, device: str = "cpu", data=None) -> dict:
    """Write the traversal grid of a trained run as a PNG (and optionally an animated GIF).

    The PNG has one row per latent (labelled with the latent and, for VAEs, its mean
    posterior variance, so collapsed latents are recognisable) and one column per value.
    The GIF steps through the values (there and back), all latents side by side.

    Args:
        run_dir: a finished training run.
        out_png: the PNG to write (atomically); gif: optional GIF path.
        num_values, seed, device: see :func:`traversal_grid`.
        data: the dataset (default: the run's training dataset).

    Returns:
        dict with ``"png"`` (and ``"gif"``) paths and the grid's ``"values"``.

    Raises:
        RunError: not a finished run, or a model without a decoder.
    """
    from PIL import Image

    if not is_finished(run_dir):
        raise RunError(f"{str(run_dir)!r} is not a finished training run; train it first")
    model, record = load_run(run_dir, device)
    decoder_of(model)  # fail before loading data
    if data is None:
        data = load_dataset_spec(located_spec(record["dataset"], run_dir, if_exists=True))
    check_run_fits(run_dir, data)
    grid = traversal_grid(model, data, num_values=num_values, seed=seed, device=device)
    images, values = grid["images"], grid["values"]
    labels = [f"z{j}" for j in range(images.shape[0])]
    if getattr(model, "stochastic", False):
        with torch.no_grad():
            x = data.images(data.sample_factors(256, np.random.default_rng(seed)), device=device)
            var = model.posterior(x)[1].mean(0).cpu().numpy()
        labels = [f"{lab}\nE[σ²]={v:.2f}" for lab, v in zip(labels, var)]
    d = images.shape[0]
    fig, axes = new_figure(d, num_values + 1, figsize=(1.1 * (num_values + 1), 1.15 * d + 0.5), squeeze=False)
    for i in range(d):
        for j in range(num_values + 1):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            img = grid["reference"] if j == 0 else images[i, j - 1]
            show = img.transpose(1, 2, 0)
            ax.imshow(show[:, :, 0] if show.shape[2] == 1 else show, cmap="gray", vmin=0, vmax=1)
            if j == 0:
                ax.set_ylabel(labels[i], fontsize=7, rotation=0, ha="right", va="center")
                if i == 0:
                    ax.set_title("x0", fontsize=8)
            else:
                ax.set_xlabel(f"{values[i, j - 1]:.2f}", fontsize=6)
    fig.suptitle(f"{record['model']} ({Path(run_dir).name}): latent traversals around x0 "
                 f"(2nd-98th percentile of each latent)", fontsize=8)

    out_png = save_figure(fig, out_png, dpi=110)
    result = {"png": str(out_png), "values": values.tolist()}
    if gif is not None:
        order = list(range(num_values)) + list(range(num_values - 2, 0, -1))  # there and back
        frames = [Image.fromarray(_tile(images[:, k:k + 1].transpose(1, 0, 2, 3, 4))) for k in order]
        gif = Path(gif)
        with atomic_path(gif) as tmp:
            frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=150, loop=0)
        result["gif"] = str(gif)
    return result

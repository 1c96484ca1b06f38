"""The demonstration dataset: a Gaussian blob on a small canvas (issue "the whole
effect in minutes").

``Blobs``: one Gaussian blob, peak 1, on a black ``canvas`` x ``canvas`` image
(default 32x32). Factors:

- ``posX`` (column) and ``posY`` (row) of the centre, ``num_positions`` classes each.
  posX spreads evenly over ``[margin, canvas - 1 - margin]`` px; posY over the same
  range shrunk about the canvas centre by ``y_extent`` (default 0.7);
- ``scale``: the blob's standard deviation, ``num_scales`` classes evenly over
  ``[sigma, sigma_max]`` px (default 4 classes, 3-6 px; ``num_scales=1`` leaves the
  factor out, a blob of ``sigma`` px).

Pixel value: exp(-(col - x)^2 / (2 sigma^2) - (row - y)^2 / (2 (aspect sigma)^2)),
float32 in [0, 1], rounded to the nearest multiple of 1/255 unless ``quantize=False``.

Why rounded: the modified and noise variants of the pipeline are stored as uint8 (like
Shapes3D and binary dSprites, whose originals already lie on that grid). Unrounded
blobs would differ from their variants by the rounding as well as by the change being
studied, and rounding alone matters here: the faint tails (< 1/510) become exact zeros.
Measured (β-VAE, β = 4, 1,500 steps, 8 seeds): MIG 0.62 ± 0.26 on unrounded blobs,
0.37 ± 0.20 on the same blobs rounded -- the size of the effect the demo looks for.

Why posY spans less than posX: with equal ranges and a round blob, a step of posX and
a step of posY change the image equally, every rotation of the (posX, posY) plane is
locally the same, and a β-VAE has no axes to prefer (measured: MIG 0.4 ± 0.3). With
``y_extent`` 0.7 the two factors' local variances differ -- the property of dSprites
and Shapes3D the paper shows VAEs rely on -- and a β-VAE aligns with them within about
1,500 steps on a CPU: the small stage on which vaebias shows the paper's mechanism in
minutes (``vaebias reproduce --dataset blobs --profile demo``).

Why three factors (default): with posX and posY alone, a plain autoencoder's 2-D code
is aligned with them by chance more often than not (demo, 5 seeds: AE MIG 0.36 ± 0.22
against the β-VAE's 0.61), so "AE low, β-VAE high" was not visible. With the scale
factor the AE's 3-D code lands at 0.22 ± 0.08 and the β-VAE at 0.67 ± 0.18 (demo
profile, lr 1e-3, 5 seeds).

Why σ >= 3 px: the uniform-noise control must leave the blob visible. With σ = 2 px,
±0.1 noise on all 1,024 pixels swamps the small blob (two factors, β = 8, 3 seeds: MIG
0.78 original, 0.39 noise; three factors with σ 2-5 px: the β-VAE's noise column 0.31
against 0.63 original, lost mostly on the scale factor). With σ 3-6 px the noise column
stays near the original's (0.54 against 0.67) while the learned manipulation lowers it
(0.24).
"""

from __future__ import annotations

import numpy as np
import torch

from vaebias.data.base import DataError, GroundTruthData
from vaebias.data.registry import register

__all__ = ["Blobs"]


@register("blobs")
class Blobs(GroundTruthData):
    """Images float32 (n, 1, canvas, canvas) in [0, 1]; factors (posX, posY[, scale]).

    Args:
        num_positions: classes of posX and of posY (>= 2).
        canvas: image side in px, a multiple of 16 (the standard networks' input).
        sigma: the blob's standard deviation in px (the smallest when ``num_scales`` > 1).
        sigma_max: the largest standard deviation when ``num_scales`` > 1.
        num_scales: classes of the ``scale`` factor; 1 leaves the factor out.
        margin: distance in px from the border of the outermost posX centres.
        aspect: sigma_y / sigma_x of the blob (1: round).
        y_extent: posY's range as a fraction of posX's, in (0, 1].
        quantize: round pixel values to the nearest multiple of 1/255 (default; see the
            module docstring).

    Raises:
        DataError: a value out of range (named).
    """

    name = "blobs"
    epsilon = 0.1
    display_name = "blobs"

    def __init__(self, num_positions: int = 16, canvas: int = 32, sigma: float = 3.0,
                 sigma_max: float = 6.0, num_scales: int = 4, margin: float = 5.0, aspect: float = 1.0,
                 y_extent: float = 0.7, quantize: bool = True):
        if canvas < 16 or canvas % 16:
            raise DataError(f"canvas = {canvas}: expected a multiple of 16 (the networks' input sizes)")
        if not 0 <= margin < (canvas - 1) / 2:
            raise DataError(f"margin = {margin}: expected 0 <= margin < {(canvas - 1) / 2}")
        if not 2 <= num_positions <= canvas:
            raise DataError(f"num_positions = {num_positions}: expected 2 .. {canvas}")
        if not sigma > 0:
            raise DataError(f"sigma = {sigma}: expected a number > 0")
        if not aspect > 0:
            raise DataError(f"aspect = {aspect}: expected a number > 0 (sigma_y / sigma_x)")
        if not 0 < y_extent <= 1:
            raise DataError(f"y_extent = {y_extent}: expected 0 < y_extent <= 1 (the posY range relative to posX's)")
        if num_scales < 1:
            raise DataError(f"num_scales = {num_scales}: expected an integer >= 1")
        if num_scales > 1 and not sigma_max > sigma:
            raise DataError(f"sigma_max = {sigma_max}: expected a number > sigma = {sigma}")
        self.aspect = float(aspect)
        self.quantize = bool(quantize)
        self.canvas = int(canvas)
        self.observation_shape = (1, self.canvas, self.canvas)
        self.centres = np.linspace(margin, canvas - 1 - margin, num_positions)
        mid = (canvas - 1) / 2
        self.centres_y = mid + float(y_extent) * (self.centres - mid)
        self.sigmas = np.linspace(sigma, sigma_max, num_scales) if num_scales > 1 else np.array([float(sigma)])
        if num_scales > 1:
            self.factor_names = ("posX", "posY", "scale")
            self.factor_sizes = (num_positions, num_positions, num_scales)
        else:
            self.factor_names = ("posX", "posY")
            self.factor_sizes = (num_positions, num_positions)

    def _images_at(self, factors, device):
        f = torch.as_tensor(factors, device=device)
        centres = torch.as_tensor(self.centres, dtype=torch.float32, device=device)
        sig = torch.as_tensor(self.sigmas, dtype=torch.float32, device=device)
        centres_y = torch.as_tensor(self.centres_y, dtype=torch.float32, device=device)
        x, y = centres[f[:, 0]], centres_y[f[:, 1]]
        s = sig[f[:, 2]] if f.shape[1] > 2 else sig[0].expand_as(x)
        grid = torch.arange(self.canvas, dtype=torch.float32, device=device)
        gx = torch.exp(-(grid[None, :] - x[:, None]) ** 2 / (2 * s[:, None] ** 2))  # (n, W)
        gy = torch.exp(-(grid[None, :] - y[:, None]) ** 2 / (2 * (self.aspect * s[:, None]) ** 2))  # (n, H)
        img = (gy[:, :, None] * gx[:, None, :]).unsqueeze(1)
        return img.mul_(255.0).round_().div_(255.0) if self.quantize else img

    def describe(self) -> dict:
        d = super().describe()
        d.update(canvas=self.canvas, centres_px=[round(float(c), 4) for c in self.centres],
                 sigmas_px=[round(float(s), 4) for s in self.sigmas], quantize=self.quantize)
        return d

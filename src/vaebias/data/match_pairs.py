"""Match pairing: the weak supervision of Shu et al. (ICLR 2020).

Shu et al., "Weakly Supervised Disentanglement with Guarantees", study three kinds of
weak supervision: *restricted labelling* (some factors observed), *rank pairing*
(which image of a pair has the larger value of a factor) and *match pairing*
(pairs of images whose factors agree on a known set ``S``). Match pairing comes in two
variants:

- **share pairing on S**: ``x1`` and ``x2`` share the values of the factors in ``S``;
  every other factor is drawn independently for the two images. Their theory: share
  pairing on ``S`` guarantees *consistency* of ``S``.
- **change pairing on S**: the factors in ``S`` change between ``x1`` and ``x2``, all
  others stay equal. Guarantee: *restrictiveness* of ``S``.

Applying a variant to every factor individually, ``S`` drawn uniformly from the
single factors ``{0}, ..., {K-1}`` for each pair, guarantees full disentanglement.
Their code spells this ``factors = "s=0,1,2,3,4"`` (share) or ``"c=0,1,2,3,4"``
(change) for dSprites; the change form is the default of their released config.

The studied paper (Zietlow et al. 2021, Sec. 5.1) trains "the weakly supervised GAN
from (Shu et al., 2019) in the full sharing setting": the share variant over all
factors individually, ``"s=0,...,K-1"``. That is this sampler's default mode
``"share"``; ``"change"`` gives Shu et al.'s default.

One difference from Shu et al.'s code, on purpose: in change mode their code
*resamples* the changed factor, so for a discrete factor of size ``m`` it stays equal
with probability ``1/m``. Here the changed factor is drawn from the ``m - 1`` other
values, so a change pair differs in exactly its labelled factor (the generator's
continuous latents differ almost surely too). Share mode follows their code: the
unshared factors are independent draws and may coincide by chance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vaebias.data.arrays import require_full_grid
from vaebias.data.base import GroundTruthData, as_rng

__all__ = ["MatchPairSampler", "PAIRING_MODES"]

#: the match-pairing variants
PAIRING_MODES = ("share", "change")


class MatchPairSampler:
    """Pairs of images that share (or change) one factor, with that factor's index.

    Args:
        data: the ground-truth dataset.
        mode: ``"share"`` (default; the studied paper's "full sharing") or
            ``"change"`` (Shu et al.'s default), see the module docstring.
        factor_indices: the factors a pair may be labelled with, each drawn with equal
            probability (default: every factor; in change mode every factor with at
            least two values). A subset is Shu et al.'s partial supervision, e.g.
            ``"s=0,1"``.

    Raises:
        ValueError: an unknown mode, an empty or out-of-range ``factor_indices``, or
            (change mode) a labelled factor with a single value, which cannot change.
    """

    def __init__(self, data: GroundTruthData, mode: str = "share",
                 factor_indices: Sequence[int] | None = None):
        if mode not in PAIRING_MODES:
            raise ValueError(f"mode = {mode!r}: expected one of {', '.join(map(repr, PAIRING_MODES))}")
        require_full_grid(data, "match pairs")
        sizes = np.asarray(data.factor_sizes, dtype=np.int64)
        if factor_indices is None:
            idx = np.arange(len(sizes)) if mode == "share" else np.flatnonzero(sizes > 1)
        else:
            idx = np.asarray(list(factor_indices), dtype=np.int64)
        if idx.size == 0:
            raise ValueError(f"no factor can be labelled in {mode} mode (factor sizes {tuple(sizes)})")
        if idx.min() < 0 or idx.max() >= len(sizes) or len(set(idx.tolist())) != idx.size:
            raise ValueError(
                f"factor_indices = {idx.tolist()}: expected distinct indices in 0 .. {len(sizes) - 1}"
            )
        if mode == "change" and (sizes[idx] < 2).any():
            bad = int(idx[sizes[idx] < 2][0])
            raise ValueError(f"factor {bad} has a single value and cannot change between a pair")
        self.data = data
        self.mode = mode
        self.factor_indices = idx
        self._sizes = sizes

    def sample_factors(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Factor rows of ``n`` pairs: (factors1 int64 (n, K), factors2 int64 (n, K),
        label int64 (n,) the shared or changed factor's index)."""
        rng = as_rng(rng)
        f1 = self.data.sample_factors(n, rng)
        label = self.factor_indices[rng.integers(0, self.factor_indices.size, size=n)]
        rows = np.arange(n)
        if self.mode == "share":
            f2 = self.data.sample_factors(n, rng)
            f2[rows, label] = f1[rows, label]
        else:
            size = self._sizes[label]
            f2 = f1.copy()
            # a uniform draw among the size - 1 values other than the current one
            f2[rows, label] = (f1[rows, label] + rng.integers(1, size)) % size
        return f1, f2, label.astype(np.int64)

    def sample(self, n: int, rng: np.random.Generator, device) -> dict:
        """``n`` pairs as tensors on ``device``.

        Returns:
            dict with ``"images"``, ``"images2"`` float32 (n, C, H, W); ``"factors"``,
            ``"factors2"`` int64 (n, K); ``"label"`` int64 (n,), the shared (share
            mode) or changed (change mode) factor's index.
        """
        f1, f2, label = self.sample_factors(n, rng)
        images = self.data.images(np.concatenate([f1, f2]), device=device)
        return {
            "images": images[:n],
            "images2": images[n:],
            "factors": torch.as_tensor(f1, device=device),
            "factors2": torch.as_tensor(f2, device=device),
            "label": torch.as_tensor(label, device=device),
        }

    def __repr__(self) -> str:
        return (f"MatchPairSampler({self.data!r}, mode={self.mode!r}, "
                f"factor_indices={self.factor_indices.tolist()})")

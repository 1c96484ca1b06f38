"""Active latent units of a VAE (the paper, Zietlow et al. 2021, Sec. 5.3).

A latent unit ``i`` is *active* when its posterior variance, averaged over the
data, stays clearly below the prior's unit variance: ``E_x[sigma_i^2(x)] < 0.8``.
An inactive unit has collapsed to the prior and carries no information. A run is
*over-pruned* when fewer units are active than there are ground-truth factors.
"""

from __future__ import annotations

import math

import numpy as np

from vaebias.metrics._checks import to_numpy

__all__ = ["active_units"]


def active_units(variances, threshold: float = 0.8, num_factors: int | None = None) -> dict:
    """Count the active units from the encoder's posterior variances.

    Args:
        variances: real array (N, d) (numpy or torch) of posterior variances
            ``sigma^2(x)`` (not log-variances, not standard deviations) of the d
            latent units for N inputs; finite and >= 0, N >= 1.
        threshold: a unit is active when its mean variance over the N inputs is
            strictly below this value (0.8 in the paper, Sec. 5.3); finite, > 0.
        num_factors: number of ground-truth factors (optional, integer >= 0). When
            given, ``"over_pruned"`` is added.

    Returns:
        dict with ``"active_units"`` (int, 0..d), ``"mean_variance"`` (list of d
        floats, ``E_x[sigma_i^2(x)]``), ``"active"`` (list of d bools),
        ``"threshold"`` (float) and, when ``num_factors`` is given,
        ``"num_factors"`` (int) and ``"over_pruned"`` (bool: active units < num_factors).

    Raises:
        ValueError: variances not 2-D, empty, non-real, non-finite or negative; a
            bad threshold or num_factors.
    """
    v = to_numpy(variances)
    if v.ndim != 2:
        raise ValueError(f"variances must be a 2-D array (N, d); got shape {v.shape}")
    if v.shape[0] == 0:
        raise ValueError(f"variances must have at least one row (N >= 1); got shape {v.shape}")
    if v.dtype.kind not in "biuf":
        raise ValueError(f"variances must hold real numbers; got dtype {v.dtype}")
    v = v.astype(np.float64, copy=False)
    if not np.all(np.isfinite(v)):
        bad = np.argwhere(~np.isfinite(v))[0]
        raise ValueError(
            f"variances must be finite; got {v[bad[0], bad[1]]} at row {bad[0]}, column {bad[1]} "
            f"(shape {v.shape})"
        )
    if v.size and v.min() < 0:
        bad = np.argwhere(v < 0)[0]
        raise ValueError(
            f"variances must be >= 0 (pass sigma^2, not log-variances); got {v[bad[0], bad[1]]} "
            f"at row {bad[0]}, column {bad[1]} (shape {v.shape})"
        )
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
            or not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold must be a finite number > 0; got {threshold!r}")
    mean_var = v.mean(axis=0)
    active = mean_var < threshold
    out = {
        "active_units": int(active.sum()),
        "mean_variance": [float(x) for x in mean_var],
        "active": [bool(a) for a in active],
        "threshold": float(threshold),
    }
    if num_factors is not None:
        if isinstance(num_factors, bool) or not isinstance(num_factors, (int, np.integer)) \
                or num_factors < 0:
            raise ValueError(f"num_factors must be an integer >= 0 or None; got {num_factors!r}")
        out["num_factors"] = int(num_factors)
        out["over_pruned"] = bool(out["active_units"] < num_factors)
    return out

"""Input checks and small helpers shared by the metric modules (private to vaebias.metrics)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def check_split(train_codes, train_factors, test_codes, test_factors, *, min_latents: int = 1):
    """Validate a train/test pair of (codes, factors) arrays.

    Returns:
        (z_train, w_train, z_test, w_test): codes as real arrays (floating dtype
        kept, ints/bools -> float64), factors as int64.

    Raises:
        ValueError: any array malformed (see ``check_codes`` / ``check_labels``);
            codes and factors of a split with different N; train and test codes
            with different widths d, or factors with different K; d <
            ``min_latents``; K = 0. The message names the offending shapes.
    """
    z_tr = check_codes(train_codes, "train_codes")
    w_tr = check_labels(train_factors, "train_factors")
    z_te = check_codes(test_codes, "test_codes")
    w_te = check_labels(test_factors, "test_factors")
    for split, z, w in (("train", z_tr, w_tr), ("test", z_te, w_te)):
        if z.shape[0] != w.shape[0]:
            raise ValueError(
                f"{split}_codes and {split}_factors must have the same number of rows N; got "
                f"{split}_codes {z.shape} and {split}_factors {w.shape}"
            )
    if z_tr.shape[1] != z_te.shape[1]:
        raise ValueError(
            f"train_codes and test_codes must have the same number of latent dimensions d; got "
            f"train_codes {z_tr.shape} and test_codes {z_te.shape}"
        )
    if w_tr.shape[1] != w_te.shape[1]:
        raise ValueError(
            f"train_factors and test_factors must have the same number of factors K; got "
            f"train_factors {w_tr.shape} and test_factors {w_te.shape}"
        )
    if w_tr.shape[1] < 1:
        raise ValueError(f"factors must have at least one column; got train_factors {w_tr.shape}")
    if z_tr.shape[1] < min_latents:
        raise ValueError(
            f"codes must have at least {min_latents} latent dimension(s); got train_codes "
            f"{z_tr.shape}"
        )
    return z_tr, w_tr, z_te, w_te

def varying_factor_mask(w_train: np.ndarray, metric: str) -> np.ndarray:
    """Boolean mask (K,) of factors with at least two classes in the train sample.

    Raises:
        ValueError: no factor varies (the metric is undefined).
    """
    varying = np.array([np.unique(w_train[:, k]).size >= 2 for k in range(w_train.shape[1])])
    if not varying.any():
        raise ValueError(
            f"every factor has a single class in the train sample (all {w_train.shape[1]} "
            f"factors constant); {metric} is undefined"
        )
    return varying

def check_n_jobs(n_jobs) -> int:
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 \
            or n_jobs < -1:
        raise ValueError(f"n_jobs must be an integer >= 1 or -1 (all cores); got {n_jobs!r}")
    return int(n_jobs)

def ctx_random_state(ctx) -> int:
    """Classifier seed of the registry adapters: ``ctx.seed`` when it is an int, else 0."""
    seed = getattr(ctx, "seed", None)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        return int(seed)
    return 0

def check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)

def as_generator(random_state) -> np.random.Generator:
    """An int seed or None -> ``np.random.default_rng(seed)``; a Generator is used as is."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or (
        isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool)
    ):
        return np.random.default_rng(random_state)
    raise ValueError(
        f"random_state must be an int seed, None or a numpy Generator; got {random_state!r}"
    )

def varying_factor_indices(data) -> np.ndarray:
    """Indices (int64) of the factors of ``data`` with more than one class."""
    sizes = np.asarray(getattr(data, "factor_sizes", ()), dtype=np.int64)
    varying = np.flatnonzero(sizes > 1)
    if varying.size == 0:
        raise ValueError(
            f"the dataset needs at least one factor with more than one class; "
            f"factor_sizes = {tuple(int(s) for s in sizes)}"
        )
    return varying

def split_output(out):
    """``represent``'s output -> (codes, variances or None)."""
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError(
                "represent must return codes (n, d) or a tuple (mean, variance); "
                f"got a {type(out).__name__} of length {len(out)}"
            )
        return out[0], out[1]
    return out, None

def check_output(out, n: int, with_variance: bool = False):
    """Validate one output of ``represent`` for ``n`` images.

    Returns float64 codes (n, d) (the mean of a (mean, variance) tuple) and, with
    ``with_variance``, float64 variances (n, d) or None.
    """
    mean, var = split_output(out)
    c = check_codes(mean, "represent's codes").astype(np.float64, copy=False)
    if c.shape[0] != n:
        raise ValueError(
            f"represent must return codes of shape (n, d) for n={n} images; got shape {c.shape}"
        )
    if not with_variance:
        return c
    if var is not None:
        var = to_numpy(var).astype(np.float64)
        if var.shape != c.shape:
            raise ValueError(
                f"represent's variance must have the shape of its mean {c.shape}; got {var.shape}"
            )
    return c, var

def encode_rows(data, represent: Callable, factors: np.ndarray, *, device,
                 encode_batch: int) -> np.ndarray:
    """Encode the images of factor rows int (n, K), ``encode_batch`` images per call:
    float64 codes (n, d) (the mean when ``represent`` returns (mean, variance))."""

    codes = []
    with torch.no_grad():
        for start in range(0, factors.shape[0], encode_batch):
            f = factors[start:start + encode_batch]
            c = check_output(represent(data.images(f, device=device)), f.shape[0])
            if codes and c.shape[1] != codes[0].shape[1]:
                raise ValueError(
                    f"represent returned codes of different widths: {codes[0].shape[1]} and "
                    f"{c.shape[1]}"
                )
            codes.append(c)
    return np.concatenate(codes, axis=0)

def draw_factor_index(rng: np.random.Generator, varying: np.ndarray, n: int):
    """``n`` factors drawn uniformly from ``varying`` (one ``rng.integers`` call):
    (positions in ``varying`` (n,), factor indices ``varying[positions]`` (n,))."""
    pos = rng.integers(0, varying.size, size=n)
    return pos, varying[pos]

def evaluation_pool(ctx):
    """The pool of an evaluation: the shared sample and the test sample, (codes, factors)."""
    return (np.concatenate([ctx.codes, ctx.test_codes]).astype(np.float64, copy=False),
            np.concatenate([ctx.factors, ctx.test_factors]))

def to_numpy(x):
    """numpy view of an array-like or a torch tensor (detached, on the CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)

def check_codes(codes, name: str = "codes") -> np.ndarray:
    """Validate a real 2-D (N, d) code array; keep a floating dtype, ints/bools -> float64."""
    arr = to_numpy(codes)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, d); got shape {arr.shape}")
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float64)
    elif arr.dtype.kind != "f":
        raise ValueError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row (N >= 1); got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} must be finite; got {arr[bad[0], bad[1]]} at row {bad[0]}, column {bad[1]} "
            f"(shape {arr.shape})"
        )
    return arr

def check_labels(labels, name: str) -> np.ndarray:
    """Validate a 2-D (N, K) array of non-negative integer class indices -> int64."""
    arr = to_numpy(labels)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, K) of class indices; got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row (N >= 1); got shape {arr.shape}")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        integral = finite & (arr == np.round(np.where(finite, arr, 0)))
        if not np.all(integral):
            bad = np.argwhere(~integral)[0]
            raise ValueError(
                f"{name} must hold integer class indices; got {arr[bad[0], bad[1]]} at row {bad[0]}, "
                f"column {bad[1]} (dtype {arr.dtype}, shape {arr.shape})"
            )
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class indices; got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        bad = np.argwhere(arr < 0)[0]
        raise ValueError(
            f"{name} must be non-negative class indices; got {arr[bad[0], bad[1]]} at row {bad[0]}, "
            f"column {bad[1]} (shape {arr.shape})"
        )
    return arr

def check_num_bins(num_bins) -> int:
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"num_bins must be an integer >= 1; got {num_bins!r}")
    return int(num_bins)

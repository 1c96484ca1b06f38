"""Sampling-level evaluation of a representation on a ground-truth dataset.

This is the disentanglement_lib protocol (``evaluation/metrics/utils.py``,
``generate_batch_factor_code``; the representation of ``postprocessing/methods.py``,
``mean_representation``):
draw factor rows uniformly with replacement from the full grid, render their
images, encode them (for a VAE: the encoder mean) and score the codes against the
factors with the array-level metrics of :mod:`vaebias.metrics`.

Metrics are looked up by name in the registry of ``vaebias.metrics`` (see
:func:`vaebias.metrics.register`); each entry is a function ``fn(ctx) -> dict``
receiving an :class:`EvalContext`, which exposes the shared sample
(``ctx.codes``, ``ctx.factors``, ``ctx.variances``, drawn once and lazily), a
shared test sample for train/test metrics (``ctx.test_codes``,
``ctx.test_factors``: ``num_test`` points drawn lazily with ``ctx.rng(1)``) and,
for metrics that need their own draws (train/test splits, fixed-factor batches),
``ctx.data``, ``ctx.represent_factors`` and ``ctx.rng(offset)``.
"""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Callable, Iterable

import numpy as np
import torch

import vaebias
from vaebias.metrics._checks import check_num_bins, to_numpy
from vaebias.metrics.active_units import active_units
from vaebias.metrics.dci import BACKENDS as DCI_BACKENDS
from vaebias.metrics.mig import mig
from vaebias.metrics.registry import METRICS, register

__all__ = ["EvalConfig", "EvalContext", "evaluate"]


#: The fast mode's settings of :func:`evaluate` (``vaebias evaluate --fast``): DCI's
#: histogram backend (D and C within 0.01 of the reference's on ``tests/metrics/test_gbt.py``'s
#: fixtures) and pool sampling for the FactorVAE and BetaVAE scores, at the reference's
#: vote counts: their batches come from the already encoded shared and test samples
#: (:mod:`vaebias.metrics.pool`) instead of ~2.9 million freshly encoded images. On
#: ``tests/test_metrics_pool.py``'s fixtures the pool accuracies' mean over 3 seeds lies
#: within 0.03 of fresh sampling's (largest measured gap 0.014; fresh sampling's own
#: seeds spread by ~0.006).
FAST_MODE = {"dci_backend": "hist", "score_sampling": "pool"}

#: values of :func:`evaluate`'s ``score_sampling``
SCORE_SAMPLING = ("fresh", "pool")


def _bf16_represent(represent: Callable) -> Callable:
    """``represent`` run under bfloat16 autocast on channels-last images, outputs cast back to
    float32 (a tuple ``(mean, variance)`` stays a tuple)."""

    def fast(images):
        with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16):
            out = represent(images.contiguous(memory_format=torch.channels_last))
        if isinstance(out, (tuple, list)):
            return tuple(o.float() if torch.is_tensor(o) else o for o in out)
        return out.float() if torch.is_tensor(out) else out

    return fast


def _is_positive_int(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, np.integer)) and x >= 1


class EvalContext:
    """Everything a registered metric needs; the shared sample is computed once on demand.

    The settings of :func:`evaluate` are attributes too: ``num_points``, ``seed``,
    ``batch_size``, ``device``, ``num_bins``, ``active_threshold``, ``num_test``,
    ``dci_backend``, ``score_num_train``, ``score_num_eval`` and ``score_sampling``.

    Attributes:
        data: the :class:`vaebias.data.base.GroundTruthData` dataset.
        represent: the callable images -> codes (or (mean, variance)).
    """

    def __init__(self, data, represent, *, num_points, seed, batch_size, device, num_bins,
                 active_threshold, num_test=5_000, dci_backend="sklearn", score_num_train=10_000,
                 score_num_eval=5_000, score_sampling="fresh"):
        self.data = data
        self.represent = represent
        self.num_points = num_points
        self.seed = seed
        self.batch_size = batch_size
        self.device = device
        self.num_bins = num_bins
        self.active_threshold = active_threshold
        self.num_test = num_test
        self.dci_backend = dci_backend
        self.score_num_train = score_num_train
        self.score_num_eval = score_num_eval
        self.score_sampling = score_sampling
        self._sample = None
        self._test_sample = None

    # ------------------------------------------------------------- sampling
    def rng(self, offset: int = 0) -> np.random.Generator:
        """A fresh generator for ``seed`` (offset 0 reproduces the shared sample's draw).

        Metrics drawing extra samples should use a distinct non-zero ``offset``.
        """
        if offset == 0:
            return np.random.default_rng(self.seed)
        return np.random.default_rng([self.seed, offset] if self.seed is not None else None)

    def represent_factors(self, factors: np.ndarray):
        """Encode the images of factor rows int (n, K) in batches.

        Returns:
            (codes, variances): codes float (n, d) numpy (float dtype of ``represent``'s
            output, float64 for non-float outputs); variances float (n, d) numpy or
            ``None`` when ``represent`` returns codes only.

        Raises:
            ValueError: ``represent`` returned something that is not (n, d), or a
                variance array whose shape differs from the codes'.
        """
        codes, variances = [], []
        n = factors.shape[0]
        with torch.no_grad():
            for start in range(0, n, self.batch_size):
                f = factors[start:start + self.batch_size]
                images = self.data.images(f, device=self.device)
                out = self.represent(images)
                var = None
                if isinstance(out, (tuple, list)):
                    if len(out) != 2:
                        raise ValueError(
                            "represent must return codes (n, d) or a tuple (mean, variance); "
                            f"got a {type(out).__name__} of length {len(out)}"
                        )
                    out, var = out
                c = to_numpy(out)
                if c.ndim != 2 or c.shape[0] != f.shape[0]:
                    raise ValueError(
                        f"represent must return codes of shape (n, d) for n={f.shape[0]} images; "
                        f"got shape {c.shape}"
                    )
                if c.dtype.kind != "f":
                    c = c.astype(np.float64)
                codes.append(c)
                if var is not None:
                    v = to_numpy(var)
                    if v.shape != c.shape:
                        raise ValueError(
                            f"represent's variance must have the shape of its mean {c.shape}; "
                            f"got {v.shape}"
                        )
                    variances.append(v.astype(np.float64, copy=False))
        if variances and len(variances) != len(codes):
            raise ValueError("represent returned variances for some batches but not for others")
        dims = {c.shape[1] for c in codes}
        if len(dims) > 1:
            raise ValueError(f"represent returned codes of different widths across batches: {sorted(dims)}")
        codes_arr = np.concatenate(codes, axis=0)
        var_arr = np.concatenate(variances, axis=0) if variances else None
        return codes_arr, var_arr

    def _draw(self):
        if self._sample is None:
            factors = self.data.sample_factors(self.num_points, self.rng(0))
            codes, variances = self.represent_factors(factors)
            self._sample = (factors, codes, variances)
        return self._sample

    @property
    def factors(self) -> np.ndarray:
        """Shared sample's factor rows, int64 (num_points, K)."""
        return self._draw()[0]

    @property
    def codes(self) -> np.ndarray:
        """Shared sample's codes (num_points, d)."""
        return self._draw()[1]

    @property
    def variances(self) -> np.ndarray | None:
        """Shared sample's posterior variances (num_points, d), or None."""
        return self._draw()[2]

    def _draw_test(self):
        if self._test_sample is None:
            factors = self.data.sample_factors(self.num_test, self.rng(1))
            codes, _ = self.represent_factors(factors)
            self._test_sample = (factors, codes)
        return self._test_sample

    @property
    def test_factors(self) -> np.ndarray:
        """Test sample's factor rows, int64 (num_test, K), drawn with ``rng(1)``."""
        return self._draw_test()[0]

    @property
    def test_codes(self) -> np.ndarray:
        """Test sample's codes (num_test, d) (for SAP, DCI, explicitness)."""
        return self._draw_test()[1]

    @property
    def num_varying_factors(self) -> int:
        """Number of factors with more than one class (a one-class factor, such as the colour of disentanglement_lib's dSprites, does not count)."""
        return int(sum(1 for s in self.data.factor_sizes if s > 1))


def _versions() -> dict:

    out = {"python": platform.python_version(), "numpy": np.__version__,
           "torch": torch.__version__, "vaebias": vaebias.__version__}
    try:
        import sklearn

        out["scikit-learn"] = sklearn.__version__
    except ImportError:  # pragma: no cover - sklearn is a dependency
        pass
    return out


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """How :func:`evaluate` samples a dataset and scores a representation; the defaults
    are disentanglement_lib's.

    Attributes:
        num_points: number of sampled points, >= 1 (10,000 in disentanglement_lib).
        seed: seed of ``np.random.default_rng``.
        batch_size: images rendered and encoded per call, >= 1.
        num_bins: bins per latent for MIG (20).
        active_threshold: variance threshold of active units (0.8, the paper Sec. 5.3).
        num_test: points of the test sample, >= 1 (5,000 in disentanglement_lib), drawn
            lazily with ``np.random.default_rng([seed, 1])`` for the train/test metrics
            ``"sap"``, ``"dci"`` and ``"modularity_explicitness"`` (their train sample
            is the shared ``num_points`` sample).
        dci_backend: classifier backend of ``"dci"`` (a key of
            ``vaebias.metrics.dci.BACKENDS``; ``"sklearn"`` = parity mode).
        score_num_train, score_num_eval: votes (FactorVAE) or points (BetaVAE) that train
            and evaluate the two scores' classifiers (disentanglement_lib: 10,000 and
            5,000); each costs 64 (FactorVAE) or 128 (BetaVAE) encoded images with
            ``score_sampling="fresh"``.
        score_sampling: ``"fresh"`` (the reference: every vote renders and encodes new
            images, drawn with ``rng(2)`` / ``rng(3)``) or ``"pool"`` (the votes' batches
            are drawn from the shared and test samples' codes, see
            :mod:`vaebias.metrics.pool`; no extra encoding; needs every value of every
            varying factor at least 64 times in the ``num_points + num_test`` pool).
        encode_precision: ``"fp32"`` (default: ``represent`` as given) or ``"bf16"``
            (``represent`` under bfloat16 autocast on channels-last images, outputs cast
            to float32; ~1.8x faster encoding on this CPU). bf16 keeps codes within ~0.4%
            of their magnitude, but MIG bins each code over its range: where a code's
            spread is small against its offset, MIG moves (0.047 -> 0.025 measured on a
            barely trained model), so the fast mode does not use it.

    Raises:
        ValueError: a value out of range or an unknown name (the message names the field).
    """

    num_points: int = 10_000
    seed: int | None = 0
    batch_size: int = 1000
    num_bins: int = 20
    active_threshold: float = 0.8
    num_test: int = 5_000
    dci_backend: str = "sklearn"
    score_num_train: int = 10_000
    score_num_eval: int = 5_000
    score_sampling: str = "fresh"
    encode_precision: str = "fp32"

    def __post_init__(self):
        for key in ("num_points", "batch_size", "num_test", "score_num_train", "score_num_eval"):
            val = getattr(self, key)
            if not _is_positive_int(val):
                raise ValueError(f"{key} must be an integer >= 1; got {val!r}")
            object.__setattr__(self, key, int(val))
        object.__setattr__(self, "num_bins", check_num_bins(self.num_bins))
        if self.score_sampling not in SCORE_SAMPLING:
            raise ValueError(f"score_sampling must be one of {SCORE_SAMPLING}; got {self.score_sampling!r}")
        if self.encode_precision not in ("fp32", "bf16"):
            raise ValueError(f"encode_precision must be 'fp32' or 'bf16'; got {self.encode_precision!r}")
        if self.dci_backend not in DCI_BACKENDS:
            raise ValueError(f"unknown dci_backend {self.dci_backend!r}; available: {sorted(DCI_BACKENDS)}")


#: metrics whose fresh sampling intervenes on one factor and needs the full grid
GRID_METRICS = ("beta_vae_score", "factor_vae_score")


def evaluate(
    data,
    represent: Callable,
    metrics: Iterable[str] | str = ("mig",),
    config: EvalConfig | None = None,
    *,
    device=None,
    **options,
) -> dict:
    """Score a representation on a ground-truth dataset, the disentanglement_lib way.

    Draws ``num_points`` factor rows uniformly with replacement with
    ``data.sample_factors(num_points, np.random.default_rng(seed))`` (one call),
    renders ``data.images(f, device=device)`` in batches of ``batch_size``, encodes
    each batch with ``represent`` under ``torch.no_grad()`` and computes every
    requested metric on the resulting codes. The same seed gives the same factors
    and hence (for a deterministic ``represent``) the same numbers.

    Args:
        data: a :class:`vaebias.data.base.GroundTruthData`.
        represent: callable ``images -> codes`` taking a float32 tensor (n, C, H, W)
            on ``device`` and returning codes (n, d) as a numpy array or torch tensor
            (for a VAE: the encoder mean). It may instead return a tuple
            ``(mean, variance)`` of two (n, d) arrays, variance being the posterior
            variance sigma^2(x); the metrics use the mean and ``"active_units"``
            uses the variance.
        metrics: names from :func:`vaebias.metrics.available` (a single name is fine), or
            ``"all"``: every registered metric that applies (``"active_units"`` only when
            ``represent`` returns variances; on a labelled sample, not the full grid, the
            BetaVAE and FactorVAE scores only with ``score_sampling="pool"``).
            ``"mig"``: :func:`vaebias.metrics.mig` with ``num_bins``.
            ``"active_units"``: :func:`vaebias.metrics.active_units` with
            ``active_threshold`` and ``num_factors`` = number of factors with more
            than one class; needs ``represent`` to return ``(mean, variance)``.
            ``"sap"``, ``"dci"``, ``"modularity_explicitness"``: :func:`vaebias.metrics.sap`,
            :func:`vaebias.metrics.dci` (with ``dci_backend``) and
            :func:`vaebias.metrics.modularity_explicitness` (with ``num_bins``), trained
            on the shared sample and tested on the ``num_test`` sample; their
            classifiers' ``random_state`` is ``seed`` (0 when ``seed`` is None).
        config: the sampling and metric options (:class:`EvalConfig`; default: its
            defaults, those of disentanglement_lib).
        device: torch device for the images (default CPU).
        options: :class:`EvalConfig` fields overriding ``config``'s, e.g. ``num_points=1000``.

    Returns:
        dict ``{name: result dict of that metric, ..., "settings": {...}}``;
        ``settings`` records metrics, num_points, seed, batch_size, num_bins,
        active_threshold, num_test, dci_backend, score_num_train, score_num_eval,
        score_sampling, encode_precision, device, num_latents, the dataset's
        ``describe()`` (if available) and library versions (sklearn's MI changed
        between versions).

    Raises:
        ValueError: an unknown metric name (the message lists the available ones),
            bad num_points/batch_size/num_test, an unknown dci_backend, a malformed
            output of ``represent``, or ``"active_units"`` requested while ``represent`` returns no variances.
    """
    every = isinstance(metrics, str) and metrics == "all"
    names = tuple(METRICS) if every else (metrics,) if isinstance(metrics, str) else tuple(metrics)
    names = tuple(dict.fromkeys(names))  # de-duplicate, keep order
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ValueError(
            f"unknown metric(s) {unknown}; available: {sorted(METRICS)}"
        )
    if not names:
        raise ValueError(f"metrics must name at least one metric; available: {sorted(METRICS)}")
    fields = {f.name for f in dataclasses.fields(EvalConfig)}
    bad = sorted(set(options) - fields)
    if bad:
        raise ValueError(f"unknown evaluation option(s) {bad}; valid: {sorted(fields)}")
    cfg = dataclasses.replace(config or EvalConfig(), **options)
    if not callable(represent):
        raise ValueError(f"represent must be callable; got {type(represent).__name__}")  # noqa: TRY004
    if cfg.encode_precision == "bf16":
        represent = _bf16_represent(represent)

    ctx = EvalContext(
        data, represent, num_points=cfg.num_points, seed=cfg.seed, batch_size=cfg.batch_size,
        device=device, num_bins=cfg.num_bins, active_threshold=cfg.active_threshold,
        num_test=cfg.num_test, dci_backend=cfg.dci_backend, score_num_train=cfg.score_num_train,
        score_num_eval=cfg.score_num_eval, score_sampling=cfg.score_sampling,
    )
    if every:  # "all": what applies to this representation and dataset
        if ctx.variances is None:
            names = tuple(n for n in names if n != "active_units")
        if not getattr(data, "is_full_grid", True) and cfg.score_sampling != "pool":
            names = tuple(n for n in names if n not in GRID_METRICS)
    results = {name: METRICS[name](ctx) for name in names}
    settings = {
        "metrics": list(names),
        "num_points": cfg.num_points,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "num_bins": cfg.num_bins,
        "active_threshold": float(cfg.active_threshold),
        "num_test": cfg.num_test,
        "dci_backend": cfg.dci_backend,
        "score_num_train": cfg.score_num_train,
        "score_num_eval": cfg.score_num_eval,
        "score_sampling": cfg.score_sampling,
        "encode_precision": cfg.encode_precision,
        "device": str(device) if device is not None else "cpu",
        "num_latents": int(ctx.codes.shape[1]) if ctx._sample is not None else None,
        "versions": _versions(),
    }
    if hasattr(data, "describe"):
        settings["dataset"] = data.describe()
    results["settings"] = settings
    return results


# ------------------------------------------------ adapters used by the registry
@register("mig")
def _mig_metric(ctx: EvalContext) -> dict:
    return mig(ctx.codes, ctx.factors, num_bins=ctx.num_bins)


@register("active_units")
def _active_units_metric(ctx: EvalContext) -> dict:
    if ctx.variances is None:
        raise ValueError(
            "metric 'active_units' needs posterior variances: represent must return a tuple "
            "(mean, variance) of (n, d) arrays"
        )
    return active_units(ctx.variances, threshold=ctx.active_threshold,
                        num_factors=ctx.num_varying_factors)

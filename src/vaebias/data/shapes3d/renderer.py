"""The procedural Shapes3D renderer: any factor combination rendered on demand on the CPU
or GPU from cached geometries (hues only recolour)."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import torch

from vaebias.data.base import DataError, as_factor_array
from vaebias.data.shapes3d.factors import (
    IMAGE_SIZE,
    NUM_GEOMETRIES,
    NUM_PIXELS,
    Shapes3DData,
    hue_to_rgb,
)
from vaebias.data.shapes3d.raytracer import SceneParams, trace_geometries


class _GeometryCache:
    """Per-geometry hue-independent shading tables, filled lazily (CPU, float32)."""

    def __init__(self, params: SceneParams, supersample: int):
        self.params = params
        self.supersample = supersample
        self.weights = torch.zeros(NUM_GEOMETRIES, 3, NUM_PIXELS, dtype=torch.float32)
        self.const = torch.zeros(NUM_GEOMETRIES, 3, NUM_PIXELS, dtype=torch.float32)
        self.regions = torch.zeros(NUM_GEOMETRIES, NUM_PIXELS, dtype=torch.int8)
        self.done = np.zeros(NUM_GEOMETRIES, dtype=bool)
        self.lock = threading.Lock()
        self.device_copies: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def ensure(self, geom: np.ndarray, chunk: int = 8) -> None:
        with self.lock:
            missing = np.unique(geom[~self.done[geom]])
            if not missing.size:
                return
            shapes = (missing // 15) % 4
            for sh in np.unique(shapes):
                ids = missing[shapes == sh]
                for a in range(0, len(ids), chunk):
                    part = ids[a:a + chunk]
                    w, c, r = trace_geometries(self.params, part, self.supersample)
                    idx = torch.from_numpy(part)
                    self.weights[idx] = w.to(torch.float32)
                    self.const[idx] = c.to(torch.float32)
                    self.regions[idx] = r
            self.done[missing] = True

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device.type == "cpu":
            return self.weights, self.const
        key = str(device)
        if key not in self.device_copies:
            self.ensure(np.arange(NUM_GEOMETRIES))
            self.device_copies[key] = (self.weights.to(device), self.const.to(device))
        return self.device_copies[key]


_CACHES: dict[tuple, _GeometryCache] = {}
_CACHES_LOCK = threading.Lock()


def _cache_for(params: SceneParams, supersample: int) -> _GeometryCache:
    key = (params, supersample)
    with _CACHES_LOCK:
        if key not in _CACHES:
            _CACHES[key] = _GeometryCache(params, supersample)
        return _CACHES[key]


class Shapes3DRenderer(Shapes3DData):
    """Shapes3D rendered procedurally, on demand, on any torch device.

    No file and no download: a vectorised ray tracer (torch, float64, CPU) computes,
    for each of the 480 combinations of (scale, shape, orientation), per-pixel shading
    tables that do not depend on the hues (antialiased with ``supersample**2`` rays per
    pixel): the intensity of the floor, wall and object at the pixel (times their
    coverage) and a constant term (sky colour times its coverage, plus the object's
    highlight). An image is then a gather and a 3 x 3 colour mix:
    ``clip(const + sum_l weights_l * hsv_to_rgb(hue_l, 1, 1), 0, 1)``, quantised to
    multiples of 1/255 like the real uint8 images (``quantize=True``). The tables
    are built lazily on first use of a geometry (all 480 on first use of a non-CPU
    device), shared by renderers with equal parameters in the process, and take
    480 x (6 x 4096 float32 + 4096 int8 region labels) = 49 MB; nothing else is stored.

    The scene (:class:`SceneParams`): sky, floor, a back wall and two side walls
    (one corner is in view depending on the azimuth), the object standing on the
    floor at the origin, the camera orbiting it at azimuth = orientation, one spot
    light with diffuse shading, a highlight and a cast shadow, a headlight and
    ambient light. It approximates the real images (made in DeepMind's unreleased
    MuJoCo scene); the per-region errors against real images are in
    ``docs/shapes3d.md``. Deterministic: the same factors give the same images on
    every call and instance; on other devices the result equals the CPU one up to
    float rounding of the final mix (a 1/255 step at most).

    Args:
        params: the scene (default: the calibrated :class:`SceneParams`).
        supersample: rays per pixel along each axis (default 2, i.e. 4 per pixel; the
            calibration used 2).
        chunk_size: images mixed per step (bounds temporary memory to about
            ``chunk_size * 100 kB``; small chunks stay in the CPU cache).
        quantize: round to multiples of 1/255 (default True).

    Attributes: ``name = "shapes3d"``, ``factor_names = FACTOR_NAMES``,
    ``factor_sizes = (10, 10, 10, 8, 4, 15)``, ``observation_shape = (3, 64, 64)``,
    ``categorical_factors = (4,)`` (shape); ``len(self) == 480000``.
    """


    def __init__(self, params: SceneParams | None = None, supersample: int = 2, chunk_size: int = 64,
                 quantize: bool = True):
        if params is None:
            params = SceneParams()
        if not isinstance(params, SceneParams):
            raise TypeError(f"params must be a SceneParams, got {type(params).__name__}")
        if int(supersample) < 1:
            raise ValueError(f"supersample must be >= 1, got {supersample}")
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.params = params
        self.supersample = int(supersample)
        self.chunk_size = int(chunk_size)
        self.quantize = bool(quantize)
        self._cache = _cache_for(params, self.supersample)
        self._hues: dict[str, torch.Tensor] = {}

    def __getstate__(self):  # the shared tables (and their lock) stay in the process
        state = dict(self.__dict__)
        state["_cache"] = None
        state["_hues"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._cache = _cache_for(self.params, self.supersample)

    @staticmethod
    def geometry_of(factors: np.ndarray) -> np.ndarray:
        """Geometry id ``scale * 60 + shape * 15 + orientation`` of class rows int (n, 6) -> int64 (n,)."""
        f = np.asarray(factors, dtype=np.int64)
        return f[:, 3] * 60 + f[:, 4] * 15 + f[:, 5]

    def prepare(self, factors=None) -> None:
        """Build the shading tables now: for the geometries of ``factors`` (int (n, 6)), or all 480."""
        if factors is None:
            geom = np.arange(NUM_GEOMETRIES)
        else:
            geom = self.geometry_of(as_factor_array(factors, self.factor_sizes))
        self._cache.ensure(geom)

    def regions(self, factors=None, *, index=None) -> np.ndarray:
        """Region label of each pixel: int8 (n, 64, 64) with values indexing ``REGION_NAMES``.

        0 sky, 1 floor, 2 wall, 3 object, 4 shadow (floor or wall in the object's cast
        shadow); the label of most of the pixel's samples. Depends on scale, shape
        and orientation only. Takes ``factors`` int (n, 6) or ``index`` int (n,), like
        :meth:`images`.
        """
        if (factors is None) == (index is None):
            raise DataError("pass exactly one of factors= or index=")
        f = self.factors_of(index) if index is not None else as_factor_array(factors, self.factor_sizes)
        geom = self.geometry_of(f)
        self._cache.ensure(geom)
        return self._cache.regions[torch.from_numpy(geom)].view(-1, IMAGE_SIZE, IMAGE_SIZE).numpy()

    def _hue_table(self, device: torch.device) -> torch.Tensor:
        key = str(device)
        if key not in self._hues:
            hues = torch.arange(10, dtype=torch.float64) / 10.0
            self._hues[key] = hue_to_rgb(hues).to(torch.float32).to(device)  # (10, 3)
        return self._hues[key]

    @torch.no_grad()
    def _images_at(self, factors: np.ndarray, device: torch.device) -> torch.Tensor:
        """Render validated class indices int64 (n, 6) -> float32 (n, 3, 64, 64) on ``device``."""
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        n = int(factors.shape[0])
        out = torch.empty((n, 3, NUM_PIXELS), dtype=torch.float32, device=device)
        if n == 0:
            return out.view(0, 3, IMAGE_SIZE, IMAGE_SIZE)
        geom_np = self.geometry_of(factors)
        self._cache.ensure(geom_np)
        weights, const = self._cache.on(device)
        table = self._hue_table(device)
        geom = torch.from_numpy(geom_np).to(device)
        hues = torch.from_numpy(np.ascontiguousarray(factors[:, :3])).to(device)
        for a in range(0, n, self.chunk_size):
            b = min(n, a + self.chunk_size)
            g = geom[a:b]
            cols = table[hues[a:b]]  # (m, 3 labels, 3 rgb)
            o = out[a:b]
            torch.baddbmm(const.index_select(0, g), cols.transpose(1, 2), weights.index_select(0, g), out=o)
            o.clamp_(0.0, 1.0)  # finish each chunk while it is in cache
            if self.quantize:
                o.mul_(255.0).round_().div_(255.0)
        return out.view(n, 3, IMAGE_SIZE, IMAGE_SIZE)

    def describe(self) -> dict:
        d = super().describe()
        d["source"] = "procedural renderer (vaebias.data.shapes3d.Shapes3DRenderer)"
        d["supersample"] = self.supersample
        d["scene"] = dataclasses.asdict(self.params)
        return d


# ---------------------------------------------------------------------------

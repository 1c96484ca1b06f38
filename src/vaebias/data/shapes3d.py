"""Shapes3D (Burgess & Kim 2018): a loader for the real file and a procedural renderer.

The dataset is the full factorial grid of six factors (class indices), row-major
with the last factor (``orientation``) varying fastest, exactly as in the real file
``3dshapes.h5``; our flat index therefore equals the real file's row index.
Source of every number below: the real file (``labels``, ``images``) and real images
from it and from the official GIF of DeepMind's ``3d-shapes`` repository (on which the
renderer's scene was calibrated; see ``docs/shapes3d.md``).

=========== ====== ============================================================
factor      size   value of class ``k`` (what the real ``labels`` hold)
=========== ====== ============================================================
floor_hue   10     ``k / 10`` (hue in [0, 1); colour ``hsv_to_rgb(hue, 1, 1)``)
wall_hue    10     ``k / 10``
object_hue  10     ``k / 10``
scale       8      ``linspace(0.75, 1.25, 8)[k]`` (relative object size)
shape       4      ``k``: 0 cube, 1 cylinder, 2 sphere, 3 capsule (categorical)
orientation 15     ``linspace(-30, 30, 15)[k]`` degrees: the camera's azimuth
=========== ====== ============================================================

Flat index = factors @ (48000, 4800, 480, 60, 15, 1). Images are float32
(n, 3, 64, 64) RGB in [0, 1] (the real file stores uint8 (N, 64, 64, 3); we return
``stored / 255`` channels-first).

Entry points: :class:`Shapes3DFile` (the real file), :class:`Shapes3DRenderer`
(no file needed), :func:`find_shapes3d_file`, :func:`load_shapes3d`.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import threading

import numpy as np
import torch

from vaebias.data.base import DataError, GroundTruthData, as_factor_array, find_data_file
from vaebias.data.registry import register

__all__ = [
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "H5_NAME",
    "NUM_IMAGES",
    "REGION_NAMES",
    "SHAPE_NAMES",
    "SKY_RGB",
    "SceneParams",
    "Shapes3DFile",
    "Shapes3DRenderer",
    "classes_of_values",
    "factor_values",
    "find_shapes3d_file",
    "hue_to_rgb",
    "load_shapes3d",
    "values_of",
]

FACTOR_NAMES: tuple[str, ...] = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES: tuple[int, ...] = (10, 10, 10, 8, 4, 15)
SHAPE_NAMES: tuple[str, ...] = ("cube", "cylinder", "sphere", "capsule")
#: file name of the official release
H5_NAME = "3dshapes.h5"
NUM_IMAGES = 480_000
#: environment variable searched by :func:`find_shapes3d_file`

#: constant sky colour of the real images, RGB in [0, 1] (measured: (153, 226, 249) / 255)
SKY_RGB: tuple[float, float, float] = (153 / 255, 226 / 255, 249 / 255)

_IMG = 64
_NPIX = _IMG * _IMG
_N_GEOM = 8 * 4 * 15  # (scale, shape, orientation) combinations; hues only recolour
#: tolerance when mapping label values to classes (the real values are exact float64)
LABEL_TOL = 1e-4


def factor_values() -> tuple[np.ndarray, ...]:
    """The real per-factor value arrays, in factor order (the real ``labels``).

    Returns:
        tuple of 6 float64 arrays of lengths ``FACTOR_SIZES``: the three hues
        ``arange(10) / 10``, scale ``linspace(0.75, 1.25, 8)``, shape ``[0, 1, 2, 3]``
        (categorical), orientation ``linspace(-30, 30, 15)`` degrees.
        ``factor_values()[k][c]`` is the value of class ``c`` of factor ``k``, i.e.
        what column ``k`` of the real ``labels`` holds.
    """
    hue = np.arange(10, dtype=np.float64) / 10.0
    return (
        hue,
        hue.copy(),
        hue.copy(),
        np.linspace(0.75, 1.25, 8),
        np.arange(4, dtype=np.float64),
        np.linspace(-30.0, 30.0, 15),
    )


def values_of(factors) -> np.ndarray:
    """Map class indices int (n, 6) to real factor values float64 (n, 6).

    Raises:
        DataError: bad shape or an index out of range (see ``as_factor_array``).
    """
    f = as_factor_array(factors, FACTOR_SIZES)
    vals = factor_values()
    return np.stack([vals[k][f[:, k]] for k in range(6)], axis=1)


def classes_of_values(values, tol: float = LABEL_TOL, grids=None) -> np.ndarray:
    """Map factor values float (n, 6) (the real ``labels``) to class indices int64 (n, 6).

    Each value must lie within ``tol`` of one of its factor's grid values.

    Args:
        values: float (n, 6) (or (6,)) factor values.
        tol: absolute tolerance.
        grids: the 6 increasing value arrays (default :func:`factor_values`).

    Raises:
        DataError: wrong shape, a non-finite value, or a value off the grid (the
            message names the row, the factor, the value and the allowed values).
    """
    grids = factor_values() if grids is None else tuple(np.asarray(g, np.float64) for g in grids)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[1] != len(grids):
        raise DataError(f"factor values must have shape (n, {len(grids)}), got {tuple(v.shape)}")
    out = np.empty(v.shape, dtype=np.int64)
    for k, grid in enumerate(grids):
        col = v[:, k]
        # nearest grid value: grid is increasing
        hi = np.clip(np.searchsorted(grid, col), 1, len(grid) - 1) if len(grid) > 1 else np.zeros(len(col), int)
        lo = np.maximum(hi - 1, 0)
        idx = np.where(np.abs(col - grid[lo]) <= np.abs(col - grid[hi]), lo, hi).astype(np.int64)
        bad = ~(np.abs(col - grid[idx]) <= tol)  # also catches NaN
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(
                f"row {row}: {FACTOR_NAMES[k]} value {float(col[row])!r} is not on the grid; expected one of "
                f"{np.array2string(grid, precision=4, separator=', ', max_line_width=200)} (tolerance {tol})"
            )
        out[:, k] = idx
    return out


def hue_to_rgb(hue: torch.Tensor) -> torch.Tensor:
    """``hsv_to_rgb(hue, 1, 1)`` for a float tensor of hues (...,) in [0, 1] -> (..., 3) in [0, 1]."""
    off = torch.tensor([0.0, 4.0, 2.0], dtype=hue.dtype, device=hue.device)
    k = torch.remainder(hue.unsqueeze(-1) * 6.0 + off, 6.0)
    return ((k - 3.0).abs() - 1.0).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------
# The procedural scene
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SceneParams:
    """Camera, room, objects and lights of the procedural Shapes3D scene.

    World frame: y up, the floor is the plane y = 0, the object stands on the floor
    centred on the y axis (its lowest point at the origin). Lengths are in arbitrary
    world units (the camera's orbit radius is 1). The defaults were calibrated on the
    real reference images (``scripts/shapes3d_fidelity.py``; ``docs/shapes3d.md``).

    Camera: orbits the y axis at horizontal distance ``cam_distance`` and height
    ``cam_height``; azimuth ``phi`` = the orientation value (degrees): the camera sits
    at ``(R sin phi, h, R cos phi)`` looking at the axis, pitched down by
    ``cam_pitch_deg``; pinhole with focal length ``focal_px`` pixels on the 64 x 64
    image (pixel (i, j) samples direction ``fwd + (j + .5 - 32)/f right + (32 - i - .5)/f up``).
    With these conventions orientation -30 deg shows the right-hand corner of the
    room right of the centre, +30 deg the left-hand corner left of it (as in the
    first frames of the official GIF, assumed to sweep orientation from class 0).

    Room: back wall z = -``back_wall``, side walls x = +-``side_wall``, all from the
    floor up to ``wall_height``; no ceiling (the sky is a constant colour ``SKY_RGB``).

    Objects at scale ``s`` (the scale value 0.75 .. 1.25): cube of half side
    ``cube_half * s`` (axis aligned with the room); cylinder of radius
    ``cylinder_radius * s`` and height ``cylinder_height * s``; sphere of radius
    ``sphere_radius * s``; capsule (vertical) of radius ``capsule_radius * s`` whose
    straight part is ``capsule_length * s`` long.

    Light (one light, fixed in the room): a spot light at ``light_pos`` aimed at
    ``light_target``; it shades ``diffuse * spot * max(0, n . l)`` with
    ``spot = cos(angle to its axis) ** spot_exponent`` and casts the object's
    shadow on floor and walls; a Blinn-Phong highlight ``specular * spot *
    (n . h) ** shininess`` (added white) on the object; plus ``ambient`` and a
    headlight ``headlight * max(0, n . v)`` (v: towards the camera); the object's
    material adds ``object_emission``. A surface of hue h has colour
    ``clip(hsv_to_rgb(h, 1, 1) * intensity + highlight, 0, 1)``. The light is high
    above the object, slightly to the left (elevation about 77 deg seen from the
    object), so its rays are nearly parallel (a near-directional light: the cast
    shadows of the real images fit it best); its cone falloff gives the real floor's
    brightness gradient (over-exposed to the front left, darker towards the back
    right), which a purely directional light cannot produce.

    Calibration (``docs/shapes3d.md``): camera, room and object sizes on the region
    boundaries of the official GIF frames with known factors, the light position on
    the cast shadows, then everything by coordinate and gradient descent on the mean
    absolute error against 50 real images (factors found by brute-force matching)
    and the GIF frames.
    """

    cam_distance: float = 1.0
    cam_height: float = 0.316
    cam_pitch_deg: float = 0.0625
    focal_px: float = 65.0
    back_wall: float = 1.36
    side_wall: float = 1.4
    wall_height: float = 0.8545
    cube_half: float = 0.1485
    cylinder_radius: float = 0.1485
    cylinder_height: float = 0.3
    sphere_radius: float = 0.1805
    capsule_radius: float = 0.1398
    capsule_length: float = 0.2785
    light_pos: tuple[float, float, float] = (-1.56, 6.71, -0.45)
    light_target: tuple[float, float, float] = (-1.8329, 0.0, -0.8035)
    spot_exponent: float = 18.56
    ambient: float = 0.1064
    headlight: float = 0.836
    diffuse: float = 1.634
    specular: float = 0.5146
    shininess: float = 4.0
    object_emission: float = 0.0859
    spot_cutoff_deg: float = 27.0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in ("light_pos", "light_target"):
                v = tuple(float(x) for x in v)
                if len(v) != 3:
                    raise ValueError(f"SceneParams.{f.name} must have 3 coordinates, got {v}")
            else:
                v = float(v)
            if not np.all(np.isfinite(v)):
                raise ValueError(f"SceneParams.{f.name} must be finite, got {v}")
            object.__setattr__(self, f.name, v)


_SKY, _FLOOR, _WALL, _OBJECT, _SHADOW = 0, 1, 2, 3, 4
#: region labels of :meth:`Shapes3DRenderer.regions` (shadow: floor or wall in the object's shadow)
REGION_NAMES: tuple[str, ...] = ("sky", "floor", "wall", "object", "shadow")


def _nz(x: torch.Tensor) -> torch.Tensor:
    """x with exact zeros (and tiny values) replaced by a tiny value of the same sign."""
    tiny = torch.full_like(x, 1e-12)
    return torch.where(x.abs() < 1e-12, torch.where(x < 0, -tiny, tiny), x)


def _hit_object(o, d, shape: int, s, p: SceneParams):
    """First intersection of rays with the object of one shape.

    Args:
        o, d: float64 (M, 3) ray origins and (not necessarily unit) directions.
        shape: 0 cube, 1 cylinder, 2 sphere, 3 capsule.
        s: float64 (M,) the object's scale per ray.

    Returns:
        (t, n): ray parameter float64 (M,) (``inf`` where missed; hits need t > 1e-9)
        and the outward unit normal float64 (M, 3) at the hit.
    """
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = d.unbind(-1)
    t = torch.full_like(ox, math.inf)
    n = torch.zeros_like(o)

    def take(tc, nc, ok):
        nonlocal t, n
        better = ok & (tc > 1e-9) & (tc < t)
        t = torch.where(better, tc, t)
        n = torch.where(better[:, None], nc, n)

    def sphere(cy, rad):
        ocy = oy - cy
        a = dx * dx + dy * dy + dz * dz
        b = ox * dx + ocy * dy + oz * dz
        c = ox * ox + ocy * ocy + oz * oz - rad * rad
        disc = b * b - a * c
        tc = (-b - disc.clamp_min(0).sqrt()) / a
        nc = torch.stack([ox + tc * dx, oy + tc * dy - cy, oz + tc * dz], -1) / rad[:, None]
        take(tc, nc, disc >= 0)

    def side(rad, y0, y1):
        a = _nz(dx * dx + dz * dz)
        b = ox * dx + oz * dz
        c = ox * ox + oz * oz - rad * rad
        disc = b * b - a * c
        tc = (-b - disc.clamp_min(0).sqrt()) / a
        py = oy + tc * dy
        nc = torch.stack([ox + tc * dx, torch.zeros_like(tc), oz + tc * dz], -1) / rad[:, None]
        take(tc, nc, (disc >= 0) & (py >= y0) & (py <= y1))

    def top(rad, y):
        tc = (y - oy) / _nz(dy)
        px, pz = ox + tc * dx, oz + tc * dz
        nc = torch.zeros_like(o)
        nc[:, 1] = 1.0
        take(tc, nc, (dy < 0) & (px * px + pz * pz <= rad * rad))

    if shape == 0:
        h = p.cube_half * s
        lo = torch.stack([-h, torch.zeros_like(h), -h], -1)
        hi = torch.stack([h, 2.0 * h, h], -1)
        inv = 1.0 / _nz(d)
        t1, t2 = (lo - o) * inv, (hi - o) * inv
        tnear, axis = torch.minimum(t1, t2).max(-1)
        tfar = torch.maximum(t1, t2).min(-1).values
        nc = torch.zeros_like(o)
        nc.scatter_(1, axis[:, None], -torch.sign(d.gather(1, axis[:, None])))
        take(tnear, nc, tfar >= tnear)
    elif shape == 1:
        rad, hh = p.cylinder_radius * s, p.cylinder_height * s
        side(rad, torch.zeros_like(hh), hh)
        top(rad, hh)
    elif shape == 2:
        rad = p.sphere_radius * s
        sphere(rad, rad)
    else:
        rad = p.capsule_radius * s
        y1 = rad + p.capsule_length * s
        side(rad, rad, y1)
        sphere(rad, rad)
        sphere(y1, rad)
    return t, n


def _geometry_values(geom: np.ndarray):
    """Flat geometry ids (scale * 60 + shape * 15 + orientation) -> (scale, shape, phi rad)."""
    vals = factor_values()
    scale = vals[3][geom // 60]
    shape = (geom // 15) % 4
    phi = np.radians(vals[5][geom % 15])
    return scale, shape, phi


def _trace_hits(p: SceneParams, geom: np.ndarray, supersample: int) -> _Hits:
    """Cast the camera rays (and the shadow rays) of some geometries of one shape.

    Args:
        p: the scene (its geometry, camera and ``light_pos`` are used).
        geom: int (G,) geometry ids, all of the same shape.
        supersample: samples per pixel along each axis.

    Returns:
        the per-sample hits (:class:`_Hits`), rays ordered (G, row, sub-row, col, sub-col).
    """
    dt = torch.float64
    scale, shape_ids, phi = _geometry_values(np.asarray(geom, dtype=np.int64))
    if len(set(shape_ids.tolist())) != 1:  # pragma: no cover - internal contract
        raise ValueError("_trace_hits needs geometries of one shape")
    shape = int(shape_ids[0])
    G, ss = len(geom), int(supersample)
    phi_t = torch.as_tensor(phi, dtype=dt)
    sp, cp = torch.sin(phi_t), torch.cos(phi_t)
    zero = torch.zeros_like(sp)
    cam = torch.stack([p.cam_distance * sp, torch.full_like(sp, p.cam_height), p.cam_distance * cp], -1)
    fh = torch.stack([-sp, zero, -cp], -1)
    right = torch.stack([cp, zero, -sp], -1)
    yax = torch.tensor([0.0, 1.0, 0.0], dtype=dt).expand(G, 3)
    pitch = math.radians(p.cam_pitch_deg)
    fwd = math.cos(pitch) * fh - math.sin(pitch) * yax
    up = math.sin(pitch) * fh + math.cos(pitch) * yax
    sub = (torch.arange(ss, dtype=dt) + 0.5) / ss
    pos = (torch.arange(_IMG, dtype=dt)[:, None] + sub[None, :]).reshape(-1)  # (64 * ss,)
    u = (pos - _IMG / 2) / p.focal_px
    v = (_IMG / 2 - pos) / p.focal_px
    # rays ordered (G, row, sub_row, col, sub_col)
    d = (fwd[:, None, None, :] + v[None, :, None, None] * up[:, None, None, :]
         + u[None, None, :, None] * right[:, None, None, :]).reshape(-1, 3)
    m = _IMG * ss
    o = cam[:, None, :].expand(G, m * m, 3).reshape(-1, 3)
    s = torch.as_tensor(scale, dtype=dt)[:, None].expand(G, m * m).reshape(-1)

    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = d.unbind(-1)
    t = torch.full_like(ox, math.inf)
    lab = torch.full(ox.shape, _SKY, dtype=torch.int64)
    nrm = torch.zeros_like(o)

    def take(tc, ok, label, normal):
        nonlocal t, lab, nrm
        better = ok & (tc > 0) & (tc < t)
        t = torch.where(better, tc, t)
        lab = torch.where(better, label, lab)
        nrm = torch.where(better[:, None], torch.tensor(normal, dtype=dt), nrm)

    tf = -oy / _nz(dy)
    take(tf, dy < 0, _FLOOR, (0.0, 1.0, 0.0))
    tb = (-p.back_wall - oz) / _nz(dz)
    py, px = oy + tb * dy, ox + tb * dx
    take(tb, (dz < 0) & (py >= 0) & (py <= p.wall_height) & (px.abs() <= p.side_wall), _WALL, (0.0, 0.0, 1.0))
    for sgn in (1.0, -1.0):
        tw = (sgn * p.side_wall - ox) / _nz(dx)
        py, pz = oy + tw * dy, oz + tw * dz
        ok = (sgn * dx > 0) & (py >= 0) & (py <= p.wall_height) & (pz >= -p.back_wall)
        take(tw, ok, _WALL, (-sgn, 0.0, 0.0))
    to, no = _hit_object(o, d, shape, s, p)
    hit_obj = to < t
    t = torch.where(hit_obj, to, t)
    lab = torch.where(hit_obj, _OBJECT, lab)
    nrm = torch.where(hit_obj[:, None], no, nrm)

    # ---- shadow rays (from floor and wall points towards the light)
    sky = lab == _SKY
    pt = o + torch.where(sky, 0.0, t)[:, None] * d
    lpos = torch.tensor(p.light_pos, dtype=dt)
    vis = torch.ones_like(t)
    need = (lab == _FLOOR) | (lab == _WALL)
    if bool(need.any()):
        tol = lpos - pt[need]
        dist = tol.norm(dim=-1)
        ts, _ = _hit_object(pt[need] + 1e-7 * nrm[need], tol / dist[:, None], shape, s[need], p)
        vis[need] = (ts >= dist).to(dt)
    return _Hits(lab=lab, point=pt, normal=nrm, view=d / d.norm(dim=-1, keepdim=True), lit=vis,
                 count=G, supersample=ss)


@dataclasses.dataclass
class _Hits:
    """What the camera rays hit (per sample, flattened (G * 64ss * 64ss, ...), float64)."""

    lab: torch.Tensor  # int64 label _SKY .. _OBJECT
    point: torch.Tensor  # (M, 3) hit point
    normal: torch.Tensor  # (M, 3) unit normal (0 for sky)
    view: torch.Tensor  # (M, 3) unit ray direction
    lit: torch.Tensor  # (M,) 1 where the light reaches the point (0: in the object's shadow)
    count: int
    supersample: int


def _shade_hits(p, h: _Hits):
    """Light the hits of :func:`_trace_hits` and pool them per pixel.

    ``p`` is a :class:`SceneParams` (or any object with its lighting attributes, which
    may be tensors: the fitting script differentiates through this function).

    Returns:
        (weights, const, regions) as documented in :func:`_trace_geometries`.
    """
    dt = torch.float64
    lab, pt, nrm, dn, vis = h.lab, h.point, h.normal, h.view, h.lit
    G, ss = h.count, h.supersample
    lpos = torch.as_tensor(p.light_pos, dtype=dt)
    laxis = torch.as_tensor(p.light_target, dtype=dt) - lpos
    laxis = laxis / laxis.norm()
    tol = lpos - pt
    ldir = tol / tol.norm(dim=-1, keepdim=True)
    cos_axis = -(ldir * laxis).sum(-1)
    spot = cos_axis.clamp_min(0.0) ** p.spot_exponent
    spot = torch.where(cos_axis >= math.cos(math.radians(float(p.spot_cutoff_deg))), spot, 0.0)
    ndl = (nrm * ldir).sum(-1).clamp_min(0.0)
    head = (-(nrm * dn).sum(-1)).clamp_min(0.0)
    inten = p.ambient + p.headlight * head + p.diffuse * spot * ndl * vis
    inten = inten + torch.where(lab == _OBJECT, p.object_emission, 0.0)
    half = ldir - dn
    half = half / half.norm(dim=-1, keepdim=True)
    ndh = (nrm * half).sum(-1).clamp_min(1e-12)
    spec = torch.where((lab == _OBJECT) & (ndl > 0), p.specular * spot * ndh ** p.shininess, 0.0)

    def pool(x):  # (G * m * m,) -> (G, 4096) mean over each pixel's samples
        return x.view(G, _IMG, ss, _IMG, ss).mean(dim=(2, 4)).reshape(G, _NPIX)

    weights = torch.stack([pool(torch.where(lab == k, inten, 0.0)) for k in (_FLOOR, _WALL, _OBJECT)], 1)
    sky_cov = pool((lab == _SKY).to(dt))
    const = sky_cov[:, None, :] * torch.tensor(SKY_RGB, dtype=dt)[None, :, None] + pool(spec)[:, None, :]
    shadow = ((lab == _FLOOR) | (lab == _WALL)) & (vis == 0)
    region = torch.where(shadow, _SHADOW, lab)
    counts = torch.stack([pool((region == k).to(dt)) for k in range(len(REGION_NAMES))], 1)
    return weights, const, counts.argmax(1).to(torch.int8)


@torch.no_grad()
def _trace_geometries(p: SceneParams, geom: np.ndarray, supersample: int):
    """Ray-trace the hue-independent part of the scene for some geometries.

    Args:
        p: the scene.
        geom: int (G,) geometry ids (``scale * 60 + shape * 15 + orientation``), all of
            the *same shape*.
        supersample: samples per pixel along each axis (``supersample**2`` rays).

    Returns:
        (weights, const, regions): float64 (G, 3, 4096), (G, 3, 4096) and int8
        (G, 4096). ``weights[:, l]`` is the mean over the pixel's samples of
        ``intensity * [label == l]`` for the floor, wall and object labels l = 0, 1, 2;
        ``const`` (RGB) is the sky colour times its coverage plus the specular
        highlight. The pixel's colour is
        ``clip(const + sum_l weights[:, l] * hsv_to_rgb(hue_l), 0, 1)``. ``regions``
        is the label (``REGION_NAMES``) of most of the pixel's samples.
    """
    return _shade_hits(p, _trace_hits(p, geom, supersample))


class _GeometryCache:
    """Per-geometry hue-independent shading tables, filled lazily (CPU, float32)."""

    def __init__(self, params: SceneParams, supersample: int):
        self.params = params
        self.supersample = supersample
        self.weights = torch.zeros(_N_GEOM, 3, _NPIX, dtype=torch.float32)
        self.const = torch.zeros(_N_GEOM, 3, _NPIX, dtype=torch.float32)
        self.regions = torch.zeros(_N_GEOM, _NPIX, dtype=torch.int8)
        self.done = np.zeros(_N_GEOM, dtype=bool)
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
                    w, c, r = _trace_geometries(self.params, part, self.supersample)
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
            self.ensure(np.arange(_N_GEOM))
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


class Shapes3DRenderer(GroundTruthData):
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

    name = "shapes3d"
    epsilon = 0.175
    display_name = "Shapes3D"
    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    observation_shape = (3, _IMG, _IMG)
    categorical_factors = (4,)

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
            geom = np.arange(_N_GEOM)
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
        return self._cache.regions[torch.from_numpy(geom)].view(-1, _IMG, _IMG).numpy()

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
        out = torch.empty((n, 3, _NPIX), dtype=torch.float32, device=device)
        if n == 0:
            return out.view(0, 3, _IMG, _IMG)
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
        return out.view(n, 3, _IMG, _IMG)

    def describe(self) -> dict:
        d = super().describe()
        d["source"] = "procedural renderer (vaebias.data.shapes3d.Shapes3DRenderer)"
        d["supersample"] = self.supersample
        d["scene"] = dataclasses.asdict(self.params)
        return d


# ---------------------------------------------------------------------------
# The real file
# ---------------------------------------------------------------------------
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_READ_BLOCK = 4096  # images per block when reading the whole file
_RUN_GAP = 32  # indices closer than this are read as one contiguous slab


class Shapes3DFile(GroundTruthData):
    """The real ``3dshapes.h5`` (HDF5), validated; images read lazily or held in memory.

    Args:
        path: the HDF5 file with datasets ``images`` uint8 (480000, 64, 64, 3) and
            ``labels`` float (480000, 6) holding the factor *values* of each row
            (hues k/10, scale linspace(0.75, 1.25, 8), shape 0..3, orientation
            linspace(-30, 30, 15) degrees).
        in_memory: read all images into memory as uint8 (480000 x 12288 bytes, about
            5.9 GB) instead of reading them from the file on each request (default).
        check_labels: ``"all"`` (default; vectorised, well under a second) maps every
            row's values to classes and checks that row ``i`` holds the factors of
            flat index ``i``; ``"sample"`` checks 4096 evenly spread rows plus the
            first and last; ``"none"`` trusts the file.

    Lazy reads sort and de-duplicate the requested indices and read runs of nearby
    rows as one contiguous slab (chunk-friendly), then restore the request order.
    The file handle is opened on first use in each process (the object pickles
    without it, so it can be used by DataLoader workers).

    Raises:
        DataError: a missing or unreadable file, a file that is not HDF5, a
            truncated or corrupt file (also when a lazy read fails later), a missing
            key, a wrong dtype or shape, label values off the factor grid, or rows
            not in the grid order (shuffled, duplicated or truncated). The message
            names the file, the key and what was expected.
    """

    name = "shapes3d"
    epsilon = 0.175
    display_name = "Shapes3D"
    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    observation_shape = (3, _IMG, _IMG)
    categorical_factors = (4,)
    #: the value grid of each factor (a subclass may shrink it, e.g. for tiny test files)
    grid_values: tuple[np.ndarray, ...] = factor_values()

    def __init__(self, path, *, in_memory: bool = False, check_labels: str = "all"):
        if check_labels not in ("all", "sample", "none"):
            raise ValueError(f"check_labels must be 'all', 'sample' or 'none', got {check_labels!r}")
        self.path = pathlib.Path(path)
        self.in_memory = bool(in_memory)
        self._h5 = None
        self._images_np: np.ndarray | None = None
        if not self.path.exists():
            raise DataError(f"{self.path}: file not found; expected the Shapes3D file {H5_NAME}")
        if not self.path.is_file():
            raise DataError(f"{self.path}: not a regular file; expected the Shapes3D file {H5_NAME}")
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(8)
        except OSError as e:
            raise DataError(f"{self.path}: cannot read file ({e})") from e
        if head != _HDF5_MAGIC:
            raise DataError(
                f"{self.path}: not an HDF5 file (first bytes {head!r}); expected the Shapes3D file {H5_NAME}"
            )
        import h5py

        try:
            with h5py.File(self.path, "r") as h5:
                self._check_keys(h5)
                labels = self._read_labels(h5)
                self._check_grid(labels, check_labels)
                if self.in_memory:
                    self._images_np = self._read_all(h5["images"])
        except DataError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
            raise self._err(f"corrupt or truncated HDF5 file ({type(e).__name__}: {e})") from e

    # ------------------------------------------------------------ validation
    def _err(self, msg: str) -> DataError:
        return DataError(f"{self.path}: {msg}")

    def _check_keys(self, h5) -> None:
        import h5py

        for key in ("images", "labels"):
            if key not in h5 or not isinstance(h5[key], h5py.Dataset):
                raise self._err(
                    f"missing key {key!r}; expected datasets 'images' uint8 (480000, 64, 64, 3) and "
                    f"'labels' float64 (480000, 6) (found keys {sorted(h5.keys())})"
                )
        img, lab = h5["images"], h5["labels"]
        if img.dtype != np.uint8:
            raise self._err(f"'images' has dtype {img.dtype}; expected uint8")
        n = len(self)
        if img.shape != (n, _IMG, _IMG, 3):
            raise self._err(f"'images' has shape {img.shape}; expected ({n}, 64, 64, 3)")
        if lab.dtype.kind != "f":
            raise self._err(f"'labels' has dtype {lab.dtype}; expected float64 factor values")
        if lab.shape != (n, 6):
            raise self._err(f"'labels' has shape {lab.shape}; expected ({n}, 6)")

    def _read_labels(self, h5) -> np.ndarray:
        return np.asarray(h5["labels"][()], dtype=np.float64)

    def _check_grid(self, labels: np.ndarray, mode: str) -> None:
        if mode == "none":
            return
        if mode == "sample":
            n = len(self)
            rows = np.unique(np.concatenate([np.linspace(0, n - 1, 4096).astype(np.int64), [0, n - 1]]))
        else:
            rows = np.arange(len(self), dtype=np.int64)
        try:
            classes = classes_of_values(labels[rows], grids=self.grid_values)
        except DataError as e:
            # re-number the row within the file
            msg = str(e)
            if msg.startswith("row ") and mode == "sample":
                r = int(msg.split(":")[0][4:])
                msg = f"row {int(rows[r])}" + msg[msg.index(":"):]
            raise self._err(f"'labels' {msg}") from None
        flat = classes @ self.factor_bases
        bad = flat != rows
        if bad.any():
            i = int(np.argmax(bad))
            r = int(rows[i])
            raise self._err(
                f"'labels' are not in the grid order: row {r} holds the factors "
                f"{classes[i].tolist()} (flat index {int(flat[i])}); expected "
                f"{self.factors_of([r])[0].tolist()} (row-major over {', '.join(FACTOR_NAMES)}, "
                "orientation fastest; shuffled or corrupt file?)"
            )

    def _read_all(self, ds) -> np.ndarray:
        from tqdm.auto import tqdm

        n = len(self)
        out = np.empty((n, _IMG, _IMG, 3), dtype=np.uint8)
        for a in tqdm(range(0, n, _READ_BLOCK), desc=f"reading {self.path.name}", unit="block",
                      disable=None):
            b = min(n, a + _READ_BLOCK)
            ds.read_direct(out, np.s_[a:b], np.s_[a:b])
        return out

    # ---------------------------------------------------------------- access
    def _file(self):
        if self._h5 is None:
            import h5py

            try:
                self._h5 = h5py.File(self.path, "r")
            except OSError as e:
                raise self._err(f"cannot open HDF5 file ({e})") from e
        return self._h5

    def _read(self, idx: np.ndarray) -> np.ndarray:
        """uint8 (n, 64, 64, 3) images of flat indices int64 (n,), any order."""
        if self._images_np is not None:
            return self._images_np[idx]
        if idx.size == 0:
            return np.empty((0, _IMG, _IMG, 3), dtype=np.uint8)
        uniq, inverse = np.unique(idx, return_inverse=True)
        ds = self._file()["images"]
        out = np.empty((len(uniq), _IMG, _IMG, 3), dtype=np.uint8)
        breaks = np.nonzero(np.diff(uniq) > _RUN_GAP)[0] + 1
        try:
            pos = 0
            for run in np.split(uniq, breaks):
                lo, hi = int(run[0]), int(run[-1]) + 1
                if len(run) == hi - lo:
                    ds.read_direct(out, np.s_[lo:hi], np.s_[pos:pos + len(run)])
                else:
                    out[pos:pos + len(run)] = ds[lo:hi][run - lo]
                pos += len(run)
        except (OSError, ValueError, RuntimeError) as e:
            raise self._err(f"cannot read 'images' (corrupt or truncated file? {type(e).__name__}: {e})") from e
        return out[inverse.reshape(-1)]

    def _images_at(self, factors: np.ndarray, device: torch.device) -> torch.Tensor:
        """Read validated class indices int64 (n, 6) -> float32 (n, 3, 64, 64) in [0, 1] on ``device``."""
        idx = factors @ self.factor_bases
        raw = torch.from_numpy(np.ascontiguousarray(self._read(idx))).to(device)
        return raw.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()

    def close(self) -> None:
        """Close the HDF5 handle (reopened on the next lazy read)."""
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    def __del__(self):
        try:
            self.close()
        except (OSError, RuntimeError, ValueError, AttributeError):  # pragma: no cover - interpreter shutdown
            self._h5 = None

    @property
    def nbytes(self) -> int:
        """Bytes of images held in memory (0 when reading lazily)."""
        return 0 if self._images_np is None else int(self._images_np.nbytes)

    def describe(self) -> dict:
        d = super().describe()
        d["source"] = str(self.path)
        d["in_memory"] = self.in_memory
        return d


# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------
_CANDIDATES = (H5_NAME, "shapes3d.h5")


def find_shapes3d_file(data_dir=None) -> pathlib.Path | None:
    """Locate the real Shapes3D file.

    Looks in ``data_dir`` if given, else in ``$VAEBIAS_DATA_DIR`` if set, for
    ``3dshapes.h5`` then ``shapes3d.h5``.

    Returns:
        the path of the first existing file, or None (also when no directory is
        given/set or it does not exist). The file is not validated here.
    """
    return find_data_file(_CANDIDATES, data_dir)


@register("shapes3d")
def load_shapes3d(path=None, data_dir=None, *, in_memory: bool = False) -> GroundTruthData:
    """Shapes3D from ``path``, else from a found file, else the procedural renderer.

    Args:
        path: explicit ``3dshapes.h5`` (errors if invalid; never falls back).
        data_dir: directory searched by :func:`find_shapes3d_file` (default
            ``$VAEBIAS_DATA_DIR``).
        in_memory: for the real file, hold all images in memory (about 5.9 GB).

    Returns:
        :class:`Shapes3DFile` or :class:`Shapes3DRenderer` (``describe()["source"]``
        says which).

    Raises:
        DataError: ``path`` given (or a file found) but missing or invalid.
    """
    if path is not None:
        return Shapes3DFile(path, in_memory=in_memory)
    found = find_shapes3d_file(data_dir)
    if found is not None:
        return Shapes3DFile(found, in_memory=in_memory)
    return Shapes3DRenderer()

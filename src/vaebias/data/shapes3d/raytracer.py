"""The ray tracer of the procedural Shapes3D renderer: scene parameters calibrated on real
images, ray-object hits and shading, traced once per (scale, shape, orientation)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from vaebias.data.shapes3d.factors import IMAGE_SIZE, NUM_PIXELS, SKY_RGB, factor_values


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
    pos = (torch.arange(IMAGE_SIZE, dtype=dt)[:, None] + sub[None, :]).reshape(-1)  # (64 * ss,)
    u = (pos - IMAGE_SIZE / 2) / p.focal_px
    v = (IMAGE_SIZE / 2 - pos) / p.focal_px
    # rays ordered (G, row, sub_row, col, sub_col)
    d = (fwd[:, None, None, :] + v[None, :, None, None] * up[:, None, None, :]
         + u[None, None, :, None] * right[:, None, None, :]).reshape(-1, 3)
    m = IMAGE_SIZE * ss
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
        (weights, const, regions) as documented in :func:`trace_geometries`.
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
        return x.view(G, IMAGE_SIZE, ss, IMAGE_SIZE, ss).mean(dim=(2, 4)).reshape(G, NUM_PIXELS)

    weights = torch.stack([pool(torch.where(lab == k, inten, 0.0)) for k in (_FLOOR, _WALL, _OBJECT)], 1)
    sky_cov = pool((lab == _SKY).to(dt))
    const = sky_cov[:, None, :] * torch.tensor(SKY_RGB, dtype=dt)[None, :, None] + pool(spec)[:, None, :]
    shadow = ((lab == _FLOOR) | (lab == _WALL)) & (vis == 0)
    region = torch.where(shadow, _SHADOW, lab)
    counts = torch.stack([pool((region == k).to(dt)) for k in range(len(REGION_NAMES))], 1)
    return weights, const, counts.argmax(1).to(torch.int8)


@torch.no_grad()
def trace_geometries(p: SceneParams, geom: np.ndarray, supersample: int):
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



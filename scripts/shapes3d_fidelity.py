"""How close is the procedural Shapes3D renderer to the real images?

For each real reference image (``--reference``, an npz of real Shapes3D images, not
shipped with vaebias: sets ``floor_hue0`` and ``random``, optionally the dithered
``gif_frames``) the script finds the factor classes whose rendering is nearest:

1. hues: each region's hue (floor: the bottom rows; wall: the image's left and right
   edges at wall height; object: a small window at the image centre, which every
   object covers) is the class k/10 whose colour ``hsv_to_rgb(k/10, 1, 1)`` has the
   smallest angle to the region's pixels (brightness-invariant);
2. geometry: with these hues, all 480 (scale, shape, orientation) combinations are
   rendered and the one with the least mean absolute error (MAE) is kept;
3. hues again: each hue in turn is replaced by the best of its 10 classes given the
   rest (twice), then step 2 is repeated.

It writes to ``--out``:

- ``shapes3d_fidelity.png``: per image, real | render | |real - render| (the
  difference scaled by ``--diff-gain``, default 2), 2x enlarged;
- ``shapes3d_fidelity.md`` / ``.csv``: mean absolute error (in [0, 1] units, mean over
  pixels and RGB channels) per region and set; regions come from the renderer's
  region map of the matched factors (``Shapes3DRenderer.regions``): sky, walls,
  floor (lit floor and cast shadow), shadow alone, object, and the whole image;
- ``shapes3d_fidelity_images.csv``: per image the matched factor classes and MAEs.

    python scripts/shapes3d_fidelity.py --out results/shapes3d_fidelity
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys
import time

import numpy as np
import torch

from vaebias.data.shapes3d import REGION_NAMES, Shapes3DRenderer, hue_to_rgb

_DEFAULT_REF = pathlib.Path("/work/shared/reference/shapes3d/shapes3d_reference_images.npz")
_REGIONS = {  # table column -> region labels (REGION_NAMES indices)
    "sky": (0,),
    "walls": (2,),
    "floor": (1, 4),
    "shadow": (4,),
    "object": (3,),
}


def _find_reference(path: str | None) -> pathlib.Path:
    if path:
        return pathlib.Path(path)
    here = pathlib.Path(__file__).resolve().parents[1]
    for cand in (here / ".." / "shared" / "reference" / "shapes3d" / "shapes3d_reference_images.npz", _DEFAULT_REF):
        if cand.exists():
            return cand
    sys.exit("reference images not found; pass --reference PATH")


def _hue_colours() -> np.ndarray:
    return hue_to_rgb(torch.arange(10, dtype=torch.float64) / 10).numpy()  # (10, 3)


def _best_hue(pixels: np.ndarray, colours: np.ndarray) -> int:
    """Class whose colour has the smallest mean angle to the (bright enough) pixels (m, 3)."""
    px = pixels[pixels.max(1) > 0.15]
    if len(px) == 0:
        px = pixels
    pn = px / np.maximum(np.linalg.norm(px, axis=1, keepdims=True), 1e-9)
    cn = colours / np.linalg.norm(colours, axis=1, keepdims=True)
    return int(np.argmax((pn @ cn.T).mean(0)))


def initial_hues(img: np.ndarray, colours: np.ndarray) -> list[int]:
    """Hue classes (floor, wall, object) from fixed windows of a real image float (64, 64, 3)."""
    floor = img[60:64].reshape(-1, 3)
    wall = np.concatenate([img[22:31, 0:5], img[22:31, 59:64]]).reshape(-1, 3)
    obj = img[44:51, 29:35].reshape(-1, 3)
    return [_best_hue(floor, colours), _best_hue(wall, colours), _best_hue(obj, colours)]


def _mae(r: Shapes3DRenderer, factors: np.ndarray, img_t: torch.Tensor) -> np.ndarray:
    x = r.images(factors)
    return (x - img_t).abs().mean(dim=(1, 2, 3)).numpy()


def match(r: Shapes3DRenderer, img: np.ndarray, hues: list[int] | None = None) -> tuple[np.ndarray, float]:
    """Nearest factor classes int64 (6,) to a real image float (64, 64, 3) and their MAE."""
    colours = _hue_colours()
    img_t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()[None]
    geo = np.stack(np.meshgrid(np.arange(8), np.arange(4), np.arange(15), indexing="ij"), -1).reshape(-1, 3)
    h = list(initial_hues(img, colours) if hues is None else hues)

    def best_geometry(h):
        f = np.concatenate([np.tile(np.array(h)[None], (len(geo), 1)), geo], 1)
        err = _mae(r, f, img_t)
        return f[int(np.argmin(err))], float(err.min())

    f, err = best_geometry(h)
    for _ in range(2):
        for k in range(3):
            cand = np.tile(f[None], (10, 1))
            cand[:, k] = np.arange(10)
            f = cand[int(np.argmin(_mae(r, cand, img_t)))]
    f, err = best_geometry(list(f[:3]))
    return f.astype(np.int64), err


def region_errors(r: Shapes3DRenderer, factors: np.ndarray, imgs: np.ndarray) -> tuple[np.ndarray, dict]:
    """Renders (n, 64, 64, 3) and per-image per-region MAE (NaN where a region is absent)."""
    x = r.images(factors).permute(0, 2, 3, 1).numpy()
    err = np.abs(x - imgs).mean(-1)  # (n, 64, 64)
    reg = r.regions(factors)
    out = {}
    for name, labels in _REGIONS.items():
        m = np.isin(reg, labels)
        s = (err * m).sum((1, 2))
        c = m.sum((1, 2))
        out[name] = np.where(c > 0, s / np.maximum(c, 1), np.nan)
        out[name + "_px"] = c
    out["image"] = err.mean((1, 2))
    return x, out


def _figure(path: pathlib.Path, real: np.ndarray, rend: np.ndarray, gain: float, per_row: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(real)
    trip = np.concatenate([real, np.ones((n, 64, 2, 3)), rend, np.ones((n, 64, 2, 3)),
                           np.clip(np.abs(real - rend) * gain, 0, 1)], axis=2)  # (n, 64, 196, 3)
    rows = -(-n // per_row)
    tile_w = trip.shape[2] + 8
    canvas = np.ones((rows * 68, per_row * tile_w, 3))
    for i in range(n):
        a, b = divmod(i, per_row)
        canvas[a * 68:a * 68 + 64, b * tile_w:b * tile_w + trip.shape[2]] = trip[i]
    canvas = canvas.repeat(2, 0).repeat(2, 1)
    plt.imsave(path, np.clip(canvas, 0, 1))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--reference", default=None,
                   help="npz of real Shapes3D images, each key a uint8 (n, 64, 64, 3) set: floor_hue0 "
                        "(25 images of DeepMind's 3dshapes.h5 with floor hue 0), random (25 random "
                        "images of it), gif_frames (53 palette-dithered frames of the official GIF); "
                        "default: ../shared/reference/shapes3d/shapes3d_reference_images.npz beside "
                        "the checkout, then " + str(_DEFAULT_REF))
    p.add_argument("--sets", nargs="+", default=["floor_hue0", "random"],
                   help="reference sets to match (also: gif_frames, palette-dithered)")
    p.add_argument("--supersample", type=int, default=2)
    p.add_argument("--diff-gain", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ref = np.load(_find_reference(a.reference))
    r = Shapes3DRenderer(supersample=a.supersample)
    t0 = time.perf_counter()
    r.prepare()
    print(f"renderer tables built in {time.perf_counter() - t0:.1f} s", flush=True)

    all_real, all_rend, rows, summary = [], [], [], {}
    for set_name in a.sets:
        imgs = ref[set_name].astype(np.float64) / 255.0
        found = np.stack([match(r, img)[0] for img in imgs])
        rend, errs = region_errors(r, found, imgs)
        all_real.append(imgs)
        all_rend.append(rend)
        summary[set_name] = errs
        for i in range(len(imgs)):
            rows.append({"set": set_name, "index": i,
                         **{n: int(v) for n, v in zip(r.factor_names, found[i])},
                         **{f"mae_{k}": round(float(errs[k][i]), 5) for k in ("image", *_REGIONS)}})
        extra = ""
        if set_name == "floor_hue0":
            extra = f", floor_hue matched as class 0 in {int((found[:, 0] == 0).sum())}/{len(found)}"
        print(f"{set_name}: {len(imgs)} images, whole-image MAE {np.mean(errs['image']):.4f}{extra}", flush=True)

    real = np.concatenate(all_real)
    rend = np.concatenate(all_rend)
    _figure(out / "shapes3d_fidelity.png", real, rend, a.diff_gain)
    cols = ["sky", "walls", "floor", "shadow", "object", "image"]

    def agg(errs, k):
        return float(np.nanmean(errs[k]))

    sets = list(summary)
    if len(sets) > 1:
        summary["all"] = {k: np.concatenate([summary[s][k] for s in sets]) for k in summary[sets[0]]}
    lines = [
        "| set | images | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    with open(out / "shapes3d_fidelity.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["set", "images", *cols])
        for s, errs in summary.items():
            vals = [agg(errs, k) for k in cols]
            n = len(errs["image"])
            w.writerow([s, n, *[f"{v:.4f}" for v in vals]])
            lines.append(f"| {s} | {n} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    table = "\n".join(lines)
    (out / "shapes3d_fidelity.md").write_text(
        "Mean absolute error (RGB in [0, 1]) between real Shapes3D images and the renderer at the "
        "nearest factors, per region of the rendered region map.\n\n" + table + "\n"
    )
    with open(out / "shapes3d_fidelity_images.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(table)
    print(f"regions: {', '.join(REGION_NAMES)}; figure {out / 'shapes3d_fidelity.png'}")


if __name__ == "__main__":
    main()

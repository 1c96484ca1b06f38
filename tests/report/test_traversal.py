"""Latent traversals (vaebias.report.traversal, `vaebias traverse`)."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import tiny_train
from vaebias._internal.errors import RunError
from vaebias.report.traversal import traversal_grid, write_traversal
from vaebias.training import load_run, train


def _run(tmp_path, toy, model="beta_vae"):
    cfg = {"model": model, "dataset": {"name": "toy", "num_positions": 8}, "train": tiny_train(steps=6)}
    train(cfg, tmp_path / model, data=toy, progress=False)
    return tmp_path / model


def test_grid_cells_are_the_decoded_modified_codes(tmp_path, toy):
    model, _ = load_run(_run(tmp_path, toy), "cpu")
    g = traversal_grid(model, toy, num_values=5, seed=3, num_points=200)
    d = toy.num_factors
    assert g["images"].shape == (d, 5, 1, 64, 64) and g["values"].shape == (d, 5)
    # independently: the reference image, its code, each latent's 2nd/98th percentile
    rng = np.random.default_rng(3)
    f0 = toy.sample_factors(1, rng)
    with torch.no_grad():
        z0 = model.encode(toy.images(f0))[0]
        codes = model.encode(toy.images(toy.sample_factors(200, rng))).double().numpy()
    assert np.array_equal(g["factors"], f0[0]) and np.allclose(g["code"], z0.double().numpy())
    lo, hi = np.percentile(codes, [2, 98], axis=0)
    assert np.allclose(g["values"][:, 0], lo) and np.allclose(g["values"][:, -1], hi)
    j, k = 1, 3
    z = z0.clone()
    z[j] = float(g["values"][j, k])
    with torch.no_grad():
        want = torch.sigmoid(model.decode(z[None]))[0].numpy()
    assert np.allclose(g["images"][j, k], want, atol=1e-6)
    assert g["images"].min() >= 0 and g["images"].max() <= 1


def test_png_and_gif_are_written(tmp_path, toy):
    rd = _run(tmp_path, toy)
    res = write_traversal(rd, tmp_path / "t.png", gif=tmp_path / "t.gif", num_values=4, data=toy)
    with Image.open(res["png"]) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100
    with Image.open(res["gif"]) as im:
        assert im.format == "GIF"
        assert im.size == (toy.num_factors * 66 - 2, 64)  # latents side by side, 2 px gaps
        total = 0
        for i in range(im.n_frames):  # Pillow merges identical neighbours, adding their durations
            im.seek(i)
            total += im.info["duration"]
        assert total == (4 + 2) * 150  # there (4 values) and back (2), 150 ms each


def test_encoder_only_model_and_bad_input(tmp_path, toy, capsys):
    from vaebias.cli.main import main

    rd = _run(tmp_path, toy, "pcl")
    with pytest.raises(RunError, match="'pcl' has no decoder or generator"):
        write_traversal(rd, tmp_path / "p.png", data=toy)
    assert not (tmp_path / "p.png").exists()
    assert main(["traverse", str(rd), "--out", str(tmp_path / "p.png")]) == 2
    assert "no decoder or generator" in capsys.readouterr().err
    assert main(["traverse", str(tmp_path / "nope"), "--out", str(tmp_path / "p.png")]) == 2
    assert not (tmp_path / "p.png").exists()

"""Fig. 1 (local vs global PCA): the orientation measure by hand, the patch cloud's
local and global frames, and the experiment's PCA and linear-VAE rows (Theorem 1 says
the linear VAE aligns like PCA: with the global frame, ``angle`` degrees from the
local one). The nonlinear VAE's row is a measurement, not asserted."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from vaebias.fig1 import axis_distance, fig1_experiment, figure_fig1, orientation, patch_cloud


def _unit(deg, length=1.0):
    return [length * math.cos(math.radians(deg)), length * math.sin(math.radians(deg))]


def test_orientation_by_hand():
    assert orientation([[1, 0], [0, 1]]) == pytest.approx(0.0, abs=1e-9)
    assert orientation([_unit(10), _unit(100), _unit(-80)]) == pytest.approx(10.0)
    assert orientation([_unit(75), _unit(-15)]) == pytest.approx(75.0)
    # weighted by squared length: a near-zero column (a collapsed latent) does not count
    assert orientation([_unit(20), _unit(60, 1e-3)]) == pytest.approx(20.0, abs=1e-3)
    assert axis_distance(5, 85) == pytest.approx(10) and axis_distance(0, 45) == pytest.approx(45)
    assert axis_distance(30, 29.5) == pytest.approx(0.5)


@pytest.mark.parametrize("layout", ["lattice", "line"])
def test_patch_cloud_frames(layout):
    x, patch = patch_cloud(20_000, 0, layout=layout, angle=30.0)
    assert x.shape == (20_000, 2) and np.allclose(x.mean(0), 0)
    assert len(np.unique(patch)) == (15 if layout == "lattice" else 7)
    evecs = np.linalg.eigh(np.cov(x.T))[1]
    assert axis_distance(orientation(evecs.T), 30.0) < 1.0  # global: the layout's rotation
    one = x[patch == 0]
    assert axis_distance(orientation(np.linalg.eigh(np.cov(one.T))[1].T), 0.0) < 2.0  # local: Cartesian
    with pytest.raises(ValueError, match="layout = 'ring'"):
        patch_cloud(10, layout="ring")


def test_fig1_experiment_rows_and_figure(tmp_path):
    res = fig1_experiment((0,), num_points=4000, steps=200)
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"PCA", "linear VAE", "nonlinear VAE"}
    assert rows["PCA"]["to_global"] == pytest.approx(0.0, abs=1e-9)
    assert rows["PCA"]["to_local"] == pytest.approx(30.0, abs=1.5)
    assert rows["linear VAE"]["to_global"] < 2.0  # Theorem 1: aligned like PCA
    assert 0 <= rows["nonlinear VAE"]["to_local"] <= 45
    png = figure_fig1(res, tmp_path / "fig1.png")
    with Image.open(png) as im:
        assert im.size[0] > 3 * im.size[1]  # four panels side by side


def test_cli_fig1(tmp_path, capsys):
    from vaebias.cli import main

    assert main(["fig1", "--out", str(tmp_path / "f.png"), "--seeds", "0", "--steps", "50", "--layout", "line"]) == 0
    out = capsys.readouterr().out
    assert "| PCA | - | 29.8° | 29.7° | 0.0° |" in out
    saved = json.loads((tmp_path / "f.json").read_text())
    assert {r["method"] for r in saved["rows"]} == {"PCA", "linear VAE", "nonlinear VAE"}
    assert (tmp_path / "f.png").stat().st_size > 10_000

"""Theorem 1 (linear VAEs perform PCA), checked numerically (vaebias.paper.theorem1)."""

import math

import numpy as np
import pytest

from vaebias.paper.theorem1 import (
    PASS_TOLERANCE,
    principal_data,
    sample_principal_directions,
    signed_permutation_distance,
    subspace_alignment,
    theorem1_check,
    theorem1_experiment,
)


def test_signed_permutation_distance_by_hand():
    assert signed_permutation_distance(np.eye(3)) == 0.0
    p = np.array([[0, -1, 0], [0, 0, 1], [1, 0, 0]], dtype=float)  # a signed permutation
    assert signed_permutation_distance(p) == pytest.approx(0.0, abs=1e-12)
    c = 1 / math.sqrt(2)
    rot45 = np.array([[c, -c], [c, c]])
    # nearest: the identity (or any signed permutation): ||R - I||^2 = 2 (1-c)^2 + 2 c^2 = 4 - 2 sqrt(2)
    assert signed_permutation_distance(rot45) == pytest.approx(math.sqrt(4 - 2 * math.sqrt(2)), abs=1e-12)
    # columns of u equal to two of three directions, in another order and sign
    d = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    assert subspace_alignment(np.c_[-d[:, 2], d[:, 0]], d) == pytest.approx(0.0, abs=1e-12)


def test_theorem1_check_on_constructed_decoders():
    d = sample_principal_directions(principal_data(500, (9.0, 4.0, 1.0), seed=3)[0])
    aligned = d[:, [1, 0, 2]] * np.array([2.0, -3.0, 0.5])  # U = directions, V = a signed permutation
    res = theorem1_check(aligned, d)
    assert res["v_distance"] == pytest.approx(0, abs=1e-9) and res["u_distance"] == pytest.approx(0, abs=1e-9)
    assert res["singular_values"] == pytest.approx([3.0, 2.0, 0.5])
    c, s = math.cos(0.3), math.sin(0.3)
    rotated = aligned @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])  # a latent rotation: V is not a permutation
    assert theorem1_check(rotated, d)["v_distance"] > 0.1


def test_linear_vae_passes_theorem1_and_linear_ae_does_not():
    rows = theorem1_experiment(seeds=(0, 1), variances=(9.0, 4.0, 1.0), noise_var=0.1)
    vae = [r for r in rows if r["model"] == "linear VAE"]
    ae = [r for r in rows if r["model"] == "linear AE"]
    assert all(r["passes"] for r in vae) and not any(r["passes"] for r in ae)
    assert all(r["v_distance"] < 1e-3 and r["u_distance"] < 1e-3 for r in vae)
    assert all(r["v_distance"] > 0.2 for r in ae)  # its latent axes stay rotated
    # independently: the optimum's scales are those of probabilistic PCA with beta = 1,
    # sigma_i^2 = lambda_i - noise_var for the sample covariance's eigenvalues lambda_i
    for r in vae:
        x, _ = principal_data(2000, (9.0, 4.0, 1.0), r["seed"])
        lam = np.sort(np.linalg.eigvalsh(x.T @ x / x.shape[0]))[::-1]
        assert np.array(r["singular_values"]) ** 2 + 0.1 == pytest.approx(lam, rel=1e-5)
    assert PASS_TOLERANCE == 0.05


def test_principal_data_validation():
    with pytest.raises(ValueError, match="positive variances"):
        principal_data(10, (1.0, -1.0))
    x, d = principal_data(4000, (4.0, 1.0), seed=1)
    assert x.shape == (4000, 2) and np.allclose(d.T @ d, np.eye(2))
    assert np.allclose(x.mean(0), 0)


def test_cli_theorem1(capsys):
    from vaebias.cli.main import main

    assert main(["theorem1", "--seeds", "0", "--num-points", "500"]) == 0
    out = capsys.readouterr().out
    assert "| 0 | linear VAE |" in out and out.count("| yes |") == 1 and out.count("| no |") == 1
    with pytest.raises(SystemExit) as exc:  # argparse: a non-positive variance
        main(["theorem1", "--variances", "1", "-2"])
    assert exc.value.code == 2
    assert "-2" in capsys.readouterr().err


def test_cli_theorem1_writes_a_table_the_report_embeds(tmp_path, capsys):
    from vaebias.cli.main import main

    assert main(["theorem1", "--seeds", "0", "--num-points", "500", "--out", str(tmp_path / "theorem1.md")]) == 0
    printed = capsys.readouterr().out
    text = (tmp_path / "theorem1.md").read_text()
    row = next(line for line in printed.splitlines() if line.startswith("| 0 | linear VAE |"))
    assert row in text and "Settings: {'seeds': [0]" in text and "Versions: python" in text
    assert main(["theorem1", "--out", str(tmp_path / "t.txt")]) == 2  # refused before the fit
    assert "expected a .md path" in capsys.readouterr().err and not (tmp_path / "t.txt").exists()
    from vaebias.report.html import write_html_report

    page = write_html_report(tmp_path).read_text()
    assert "theorem1.md" in page and "linear VAE" in page

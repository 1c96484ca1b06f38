"""End to end: `vaebias reproduce` on the toy dataset with a tiny profile, its rerun,
and the CLI's handling of bad input."""

import json
import os

import numpy as np
import pytest
import yaml

from vaebias.cli.main import main
from vaebias.data import load_dataset
from vaebias.manipulation import load_variant

TINY = {
    "name": "tiny", "reduced": True, "reference_restarts": 2, "reference_steps": 12,
    "manipulation_steps": 8, "train_steps": 10, "seeds": [0, 1], "models": ["ae", "beta_vae"],
    "eval_points": 300, "batch_size": 8, "field_width": 0.25, "checkpoint_every": 5,
}


ALL_SEVEN = ["ae", "beta_vae", "factor_vae", "beta_tc_vae", "slow_vae", "pcl", "weak_gan"]


@pytest.fixture
def tiny_seven(tmp_path):
    p = tmp_path / "tiny7.yaml"
    p.write_text(yaml.safe_dump(dict(TINY, models=ALL_SEVEN, train_steps=6)))
    return p


@pytest.fixture
def tiny_profile(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY))
    return p


def _mtimes(root):
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_reproduce_writes_everything_and_resumes(tmp_path, tiny_seven, capsys):
    """All seven Table 1 models through every stage."""
    tiny_profile = tiny_seven
    out = tmp_path / "res"
    rc = main(["reproduce", "--dataset", "toy", "--profile", str(tiny_profile), "--out", str(out),
               "--device", "cpu", "--no-progress"])
    assert rc == 0
    cap = capsys.readouterr()  # the table on stdout, the log on stderr
    assert "REDUCED protocol" in cap.err and cap.err.count("wall time") == 1
    assert "| model |" in cap.out and "REDUCED protocol" not in cap.out and "wall time" not in cap.out
    for name in ("table.md", "table.csv", "table.json", "fig4_toy.png", "profile.yaml",
                 "manipulation/selection.json", "datasets/toy_modified_eps0.1.h5",
                 "datasets/toy_noise_eps0.1_seed0.h5"):
        assert (out / name).exists(), name
    table = json.loads((out / "table.json").read_text())
    assert table["reduced_protocol"] is True
    cells = {(s["model"], s["variant"]): s for s in table["summary"]}
    assert set(cells) == {(m, v) for m in ALL_SEVEN for v in ("original", "modified", "noise")}
    assert all(s["n"] == 2 for s in cells.values())
    # mean and std are those of the per-seed metrics.json files
    migs = [json.loads((out / "runs" / "noise" / f"ae_seed{s}" / "metrics.json").read_text())["mig"]["mig"]
            for s in (0, 1)]
    assert cells[("ae", "noise")]["mig_mean"] == pytest.approx(np.mean(migs))
    assert cells[("ae", "noise")]["mig_std"] == pytest.approx(np.std(migs, ddof=1))
    md = (out / "table.md").read_text()
    assert "Reduced protocol" in md and "| β-VAE |" in md and "| AE |" in md
    assert "| Weak. sup. GAN |" in md and "| PCL |" in md and "| Slow-VAE |" in md
    # modified data: factors intact, change bounded by epsilon
    base = load_dataset("toy")
    idx = np.arange(len(base))
    mod = load_dataset(str(out / "datasets/toy_modified_eps0.1.h5"))
    assert np.array_equal(mod.stored_factors(), base.factors_of(idx))
    assert float((mod.images(index=idx) - base.images(index=idx)).abs().max()) <= 0.1 + 1e-6

    # rerun: nothing is redone
    before = _mtimes(out / "runs")
    rc = main(["reproduce", "--dataset", "toy", "--profile", str(tiny_profile), "--out", str(out),
               "--device", "cpu", "--no-progress"])
    assert rc == 0
    after = _mtimes(out / "runs")
    assert before == after

    # a different profile in the same folder is refused
    other = dict(TINY, models=ALL_SEVEN, train_steps=11)
    p2 = tmp_path / "other.yaml"
    p2.write_text(yaml.safe_dump(other))
    rc = main(["reproduce", "--dataset", "toy", "--profile", str(p2), "--out", str(out), "--no-progress"])
    assert rc == 2 and "different profile" in capsys.readouterr().err


def test_reproduce_resumes_after_interruption(tmp_path, tiny_profile, monkeypatch):
    """Kill the pipeline in the middle of the table's runs; the rerun finishes the rest
    and gives the same numbers as an uninterrupted pipeline."""
    import vaebias.training.loop as training

    out = tmp_path / "res"
    real_fit = training.fit
    count = {"n": 0}

    def flaky_fit(*a, **kw):
        count["n"] += 1
        if count["n"] == 6:  # 2 references + manipulation + 2 runs done, then die
            def die(step, terms):
                if step == 7:
                    raise KeyboardInterrupt
            kw["callback"] = die
        return real_fit(*a, **kw)

    monkeypatch.setattr(training, "fit", flaky_fit)
    args = ["reproduce", "--dataset", "toy", "--profile", str(tiny_profile), "--device", "cpu", "--no-progress"]
    assert main(args + ["--out", str(out)]) == 130
    monkeypatch.setattr(training, "fit", real_fit)
    assert main(args + ["--out", str(out)]) == 0
    assert main(args + ["--out", str(tmp_path / "clean")]) == 0
    a = json.loads((out / "table.json").read_text())["summary"]
    b = json.loads((tmp_path / "clean" / "table.json").read_text())["summary"]
    assert a == b


@pytest.mark.parametrize("argv,match", [
    (["train", "--model", "nope", "--out", "{tmp}/r", "--steps", "2"], "unknown model 'nope'"),
    (["train", "--model", "ae", "--dataset", "mnist", "--out", "{tmp}/r", "--steps", "2"], "unknown dataset 'mnist'"),
    (["train", "--model", "ae", "--dataset", "{tmp}/missing.npz", "--out", "{tmp}/r", "--steps", "2"], "no such file"),
    (["train", "--model", "beta_vae", "--param", "beta=-2", "--dataset", "toy", "--out", "{tmp}/r", "--steps", "2"], "beta = -2"),
    (["train", "--model", "ae", "--dataset", "toy", "--out", "{tmp}/blocker/r", "--steps", "2"], "not writable"),
    (["reproduce", "--profile", "nope", "--out", "{tmp}/r"], "unknown profile 'nope'"),
    (["evaluate", "{tmp}"], "not a finished training run"),
    (["report", "{tmp}"], "not a results folder"),
])
def test_cli_bad_input_one_message_nonzero_exit(tmp_path, capsys, argv, match):
    (tmp_path / "blocker").write_text("a file, not a folder")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert match in err and err.startswith("vaebias: error:") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv,message", [
    (["train", "--model", "ae", "--out", "x", "--steps", "0"], "must be a finite number > 0"),
    (["train", "--model", "ae", "--out", "x", "--steps", "-3"], "must be a finite number > 0"),
    (["manipulate", "--entangled", "a", "--disentangled", "b", "--out", "x", "--epsilon", "0"],
     "0: expected epsilon in (0, 1]"),
    (["manipulate", "--entangled", "a", "--disentangled", "b", "--out", "x", "--epsilon", "-0.1"],
     "-0.1: expected epsilon in (0, 1]"),
    (["train", "--model", "ae", "--out", "x", "--lr", "inf"], "must be a finite number > 0"),
    (["fig1", "--out", "x", "--noise-var", "nan"], "must be a finite number > 0"),
])
def test_cli_rejects_nonpositive_numbers(tmp_path, capsys, argv, message):
    os.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_profiles_validate_and_builtins_load(tmp_path):
    from vaebias._internal.errors import ConfigError
    from vaebias.paper.reproduce import TABLE1_MODELS, load_profile, profiles

    assert {"quick", "standard", "paper"} <= set(profiles())
    paper = load_profile("paper")
    assert paper.reduced is False and paper.train_steps == 300_000 and len(paper.seeds) == 10
    assert tuple(paper.models) == TABLE1_MODELS
    assert paper.steps_of("weak_gan") == 500_000 and paper.steps_of("pcl") == 300_000
    # Fig. 5's line search: the four VAEs with a primary hyperparameter, x 1/4 ... 4, 10 restarts
    assert paper.robustness_plan() == {"models": ["beta_vae", "factor_vae", "beta_tc_vae", "slow_vae"],
                                       "scales": [0.25, 0.5, 1.0, 2.0, 4.0], "seeds": list(range(10)),
                                       "variants": ["original", "modified"]}
    assert load_profile("quick").robustness is None
    quick = load_profile("quick")
    assert quick.reduced is True and tuple(quick.models) == TABLE1_MODELS
    standard = load_profile("standard")  # sized from benchmarks/mig_vs_steps.py (README)
    assert standard.reduced is True and tuple(standard.models) == TABLE1_MODELS
    assert quick.train_steps < standard.train_steps == 40_000 < paper.train_steps
    assert len(standard.seeds) == 3 and standard.reference_restarts >= 2
    for bad, match in [({"model_steps": {"nope": 5}}, "model_steps.nope"),
                       ({"model_steps": {"ae": 0}}, "model_steps.ae"),
                       ({"reference_restarts": 1}, "reference_restarts = 1"),
                       ({"models": ["ae", "nope"]}, "unknown model 'nope'"),
                       ({"bogus": 1}, "unknown key 'bogus'")]:
        p = tmp_path / "p.yaml"
        p.write_text(yaml.safe_dump(dict(TINY, **bad)))
        with pytest.raises(ConfigError, match=match):
            load_profile(p)


def test_fig4_difference_panel_shows_rgb_changes_around_mid_grey():
    import numpy as np

    from vaebias.report.tables import difference_panel

    eps = 0.1
    d = np.zeros((3, 2, 2), dtype=np.float32)
    d[0, 0, 0], d[1, 0, 1], d[2, 1, 1] = eps, -eps, 0.05
    show, kw = difference_panel(d, eps)
    assert show.shape == (2, 2, 3) and kw == {}
    assert show[0, 0, 0] == 1.0 and show[0, 1, 1] == 0.0  # +eps -> 1, -eps -> 0 (not clipped to black)
    assert show[1, 1, 2] == np.float32(0.75) and show[1, 0, 0] == 0.5  # half of eps; no change = mid-grey
    gray, kw = difference_panel(d[:1], eps)
    assert gray.shape == (2, 2) and kw["vmin"] == -eps and kw["vmax"] == eps


def test_reproduce_without_export_computes_the_variants_on_the_fly(tmp_path, tiny_profile, capsys):
    """Profile ``export: false``: no dataset files; the table's modified and noise runs read
    x + eps*m(w) and the noise control from m_psi, equal to the exported files up to their
    1/255 rounding; the drops with their statistics are in every table file."""
    from vaebias.manipulation.export import export_variants
    from vaebias.report.statistics import difference

    out = tmp_path / "res"
    rc = main(["reproduce", "--dataset", "toy", "--profile", str(tiny_profile), "--out", str(out),
               "--device", "cpu", "--no-progress", "--profile-option", "export=false",
               "--profile-option", "workers=2"])
    assert rc == 0
    assert "computed on the fly" in capsys.readouterr().err
    assert not (out / "datasets").exists()
    assert (out / "fig4_toy.png").exists()
    cfg = yaml.safe_load((out / "runs" / "modified" / "ae_seed0" / "config.yaml").read_text())
    assert cfg["dataset"] == {"name": "toy", "variant": "modified", "manipulation": "../../../manipulation"}
    assert cfg["dataset_info"]["name"] == "toy_modified"
    # the on-the-fly images are the export's before its rounding to 1/255
    files = export_variants(load_dataset("toy"), out / "manipulation", tmp_path / "files", device="cpu",
                            progress=False)
    idx = np.arange(len(load_dataset("toy")))
    for kind in ("modified", "noise"):
        live = load_variant("toy", variant=kind, manipulation=str(out / "manipulation")).images(index=idx)
        stored = load_dataset(str(files[kind])).images(index=idx)
        assert float((live - stored).abs().max()) <= 1 / 255 + 1e-6, kind
        assert float((live - load_dataset("toy").images(index=idx)).abs().max()) <= 0.1 + 1e-6
    # drops: recomputed from the runs' metrics.json files
    table = json.loads((out / "table.json").read_text())

    def migs(variant, model):
        return [json.loads((out / "runs" / variant / f"{model}_seed{s}" / "metrics.json").read_text())["mig"]["mig"]
                for s in (0, 1)]

    drops = {(d["model"], d["variant"]): d for d in table["drops"]}
    assert set(drops) == {(m, v) for m in ("ae", "beta_vae") for v in ("modified", "noise")}
    want = difference(migs("original", "beta_vae"), migs("modified", "beta_vae"))
    got = drops[("beta_vae", "modified")]
    assert got["diff_vs_original"] == pytest.approx(np.mean(migs("modified", "beta_vae"))
                                                    - np.mean(migs("original", "beta_vae")))
    assert (got["ci_low"], got["ci_high"], got["p_value"]) == pytest.approx(
        (want["ci_low"], want["ci_high"], want["p_value"]))
    cells = {(s["model"], s["variant"]): s for s in table["summary"]}
    assert cells[("ae", "original")]["p_value"] is None
    assert cells[("beta_vae", "modified")]["p_value"] == pytest.approx(want["p_value"])
    csv_text = (out / "table.csv").read_text()
    assert csv_text.splitlines()[0].endswith("diff_vs_original,ci_low,ci_high,p_value")
    assert "mod. − orig." in (out / "table.md").read_text()
    # bad values of the new profile fields are refused before anything is written
    for bad in ("export=maybe", "workers=0"):
        rc = main(["reproduce", "--dataset", "toy", "--profile", str(tiny_profile), "--out", str(tmp_path / "bad"),
                   "--device", "cpu", "--no-progress", "--profile-option", bad])
        assert rc == 2, bad
        assert not (tmp_path / "bad").exists()


def test_manipulation_health_is_reported_and_flags_a_constant_field(tmp_path, tiny_profile, capsys):
    """health.json, manipulation.md (every restart's MIG, the two picked) and the m_psi and
    per-seed figures; a field whose last layer is zeroed to a constant bias b gives
    m = tanh(b) everywhere: std over w 0, mean |m| tanh(b), nothing saturated, a warning."""
    import shutil

    import torch

    from vaebias.manipulation.field import field_health

    out = tmp_path / "res"
    assert main(["reproduce", "--dataset", "toy", "--profile", str(tiny_profile), "--out", str(out),
                 "--device", "cpu", "--no-progress", "--profile-option", "export=false"]) == 0
    health = json.loads((out / "manipulation" / "health.json").read_text())
    assert set(health) >= {"std_over_w", "saturated_share", "mean_abs_m", "gap_start", "gap_end", "gap_opened",
                           "warnings"}
    sel = json.loads((out / "manipulation" / "selection.json").read_text())
    md = (out / "manipulation.md").read_text()
    for run, score in sel["scores"].items():
        assert f"| {os.path.basename(run)} | {score:.3f} |" in md
    assert "| entangled |" in md and "| disentangled |" in md
    for png in ("mpsi_health_toy.png", "seeds_toy.png", "loss_curves_toy.png", "fig4_toy.png",
                "traversal_entangled_reference.png", "traversal_disentangled_reference.png"):
        assert (out / png).stat().st_size > 1000, png
    # per-factor MIG gaps: the mean over seeds of each run's metrics.json gaps
    gaps = [json.loads((out / "runs" / "original" / f"beta_vae_seed{s}" / "metrics.json").read_text())["mig"]["gaps"]
            for s in (0, 1)]
    row = "| β-VAE | orig. | " + " | ".join(f"{(a + b) / 2:.2f}" for a, b in zip(*gaps)) + " |"
    assert row in (out / "factor_gaps.md").read_text()
    # the HTML page says when table runs are missing
    from vaebias.report.html import write_html_report

    (out / "runs" / "noise" / "ae_seed1" / "metrics.json").unlink()
    page = write_html_report(out).read_text()
    assert "1 of the profile's 12 table runs are missing" in page and "runs/noise/ae_seed1" in page

    bad = tmp_path / "constant_field"
    shutil.copytree(out / "manipulation", bad)
    state = torch.load(bad / "checkpoint.pt", weights_only=False)
    weights = [k for k in state["model"] if k.startswith("field.net.") and k.endswith(".weight")]
    last = max(weights, key=lambda k: [int(t) for t in k.split(".") if t.isdigit()])  # the output layer
    state["model"][last].zero_()
    state["model"][last[:-len("weight")] + "bias"].fill_(0.3)
    torch.save(state, bad / "checkpoint.pt")
    h = field_health(load_dataset("toy"), bad, points=300)
    assert h["std_over_w"] == pytest.approx(0.0, abs=1e-6)
    assert h["mean_abs_m"] == pytest.approx(float(np.tanh(0.3)), rel=1e-5)
    assert h["saturated_share"] == 0.0
    assert any("hardly depends on the factors" in w and "try:" in w for w in h["warnings"])
    state["model"][last[:-len("weight")] + "bias"].fill_(-3.0)   # m = tanh(-3) = -0.995 everywhere
    torch.save(state, bad / "checkpoint.pt")
    h = field_health(load_dataset("toy"), bad, points=300)
    assert h["mean_m"] == pytest.approx(float(np.tanh(-3.0)), rel=1e-5)
    assert any("collapsed to about -1.00 everywhere" in w and "darkens" in w and "try:" in w for w in h["warnings"])


def test_a_results_folder_reruns_however_spelled_and_after_moving(tmp_path, tiny_profile, monkeypatch):
    """Everything a results folder records about its own parts is relative: the rerun with
    --out spelled relatively, absolutely, from the parent folder, or after moving or copying
    the folder retrains nothing and writes the same table."""
    import shutil

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = ["reproduce", "--dataset", "toy", "--profile", str(tiny_profile), "--device", "cpu", "--no-progress"]
    assert main(args + ["--out", "res"]) == 0
    table = json.loads((work / "res" / "table.json").read_text())["summary"]

    def checkpoints(root):
        return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("checkpoint.pt")}

    before = checkpoints(work / "res")
    assert len(before) == 2 + 1 + 2 * 2 * 3  # references, m_psi, table runs
    for folder, spelled, cwd in [(work / "res", str(work / "res"), work),       # absolute
                                 (work / "res", "work/res", tmp_path),          # from the parent
                                 (tmp_path / "moved" / "res2", "moved/res2", tmp_path),  # moved
                                 (tmp_path / "copy", str(tmp_path / "copy"), work)]:     # copied
        if folder.name == "res2":
            shutil.move(str(work / "res"), str(folder))
        if folder.name == "copy":
            shutil.copytree(tmp_path / "moved" / "res2", folder)
        monkeypatch.chdir(cwd)
        assert main(args + ["--out", spelled]) == 0, spelled
        assert checkpoints(folder) == before or folder.name == "copy", spelled  # nothing retrained
        if folder.name == "copy":  # copies have new mtimes: compare the trained weights' files instead
            assert sorted(checkpoints(folder)) == sorted(before)
        assert json.loads((folder / "table.json").read_text())["summary"] == table, spelled

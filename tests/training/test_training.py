import csv
import os
import sys

import pytest
import torch

from tests.conftest import tiny_train
from vaebias._internal.errors import ConfigError, RunError
from vaebias.data import load_dataset
from vaebias.training import RunConfig, is_finished, load_run, train
from vaebias.training.rundir import open_run_dir


def _cfg(model="beta_vae", **train_kw):
    return {"model": model, "dataset": {"name": "toy", "num_positions": 8},
            "model_params": {"beta": 4.0} if model == "beta_vae" else {},
            "train": tiny_train(**train_kw)}


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class _Crash(Exception):
    pass


@pytest.mark.parametrize("model", ["ae", "beta_vae"])
def test_resume_equals_uninterrupted(tmp_path, toy, model):
    full = train(_cfg(model), tmp_path / "full", data=toy, progress=False)

    def crash(step, terms):
        if step == 8:  # after the checkpoint at step 5, before the one at 10
            raise _Crash

    with pytest.raises(_Crash):
        train(_cfg(model), tmp_path / "cut", data=toy, progress=False, callback=crash)
    assert not is_finished(tmp_path / "cut")
    resumed = train(_cfg(model), tmp_path / "cut", data=toy, progress=False)
    assert is_finished(tmp_path / "cut")
    assert _same_weights(full, resumed)
    # the log holds each logged step exactly once, in order
    with open(tmp_path / "cut" / "train_log.csv") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh)]
    assert steps == [2, 4, 6, 8, 10, 12]


FAMILIES = ["ae", "beta_vae", "factor_vae", "beta_tc_vae", "slow_vae", "pcl", "weak_gan"]


def _family_cfg(model):
    params = {"beta_vae": {"beta": 4.0}, "weak_gan": {"disc_width": 0.25, "enc_width": 0.25,
                                                      "gen_width": 0.25}}.get(model, {})
    return {"model": model, "dataset": {"name": "toy", "num_positions": 8}, "model_params": params,
            "train": tiny_train(steps=9, checkpoint_every=4, log_every=3)}


def _losses(run_dir):
    """train_log.csv without its timing columns."""
    with open(run_dir / "train_log.csv") as fh:
        return [{k: v for k, v in r.items() if k not in ("images_per_s", "elapsed_s")} for r in csv.DictReader(fh)]


@pytest.mark.parametrize("where", ["data", "step"])
@pytest.mark.parametrize("model", FAMILIES)
def test_ctrl_c_inside_a_step_resumes_bit_identical(tmp_path, model, where, monkeypatch):
    """A real SIGINT during step 6 -- while its batch is drawn, or inside the model's
    training step (forward, backward, optimiser) -- lets step 6 finish, checkpoints
    there and raises KeyboardInterrupt; the resumed run ends with the uninterrupted run's
    weights bit for bit and the same loss log."""
    import os
    import signal

    from vaebias.data.match_pairs import MatchPairSampler
    from vaebias.data.pairs import LaplaceTransitionSampler
    from vaebias.data.samplers import UniformSampler
    from vaebias.models import get_model_class

    data = load_dataset("toy", num_positions=8)
    full = train(_family_cfg(model), tmp_path / "full", data=data, progress=False)
    calls = {"n": 0}

    def poke():
        calls["n"] += 1
        if calls["n"] == 6:  # the 6th step (a fresh run: call n is step n)
            os.kill(os.getpid(), signal.SIGINT)

    if where == "data":
        for cls in (UniformSampler, LaplaceTransitionSampler, MatchPairSampler):
            original = cls.sample

            def sample(self, *a, _original=original, **kw):
                poke()
                return _original(self, *a, **kw)

            monkeypatch.setattr(cls, "sample", sample)
    else:
        cls = get_model_class(model)
        original_step = cls.training_step

        def training_step(self, batch, optimizers):
            poke()
            return original_step(self, batch, optimizers)

        monkeypatch.setattr(cls, "training_step", training_step)
    with pytest.raises(KeyboardInterrupt):
        train(_family_cfg(model), tmp_path / "cut", data=data, progress=False)
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["step"] == 6
    monkeypatch.undo()
    resumed = train(_family_cfg(model), tmp_path / "cut", data=data, progress=False)
    assert _same_weights(full, resumed)
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "full")


def test_an_interrupt_raised_inside_a_step_keeps_the_last_checkpoint(tmp_path, toy):
    """A KeyboardInterrupt raised at once (a second Ctrl-C, or one outside the main
    thread) is not a step boundary: the run keeps its last periodic checkpoint and
    resumes from there to the same weights."""
    full = train(_cfg(), tmp_path / "full", data=toy, progress=False)

    def interrupt(step, terms):
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(), tmp_path / "cut", data=toy, progress=False, callback=interrupt)
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 5
    resumed = train(_cfg(), tmp_path / "cut", data=toy, progress=False)
    assert _same_weights(full, resumed)


def test_same_seed_same_weights_different_seed_differs(tmp_path, toy):
    a = train(_cfg(seed=3), tmp_path / "a", data=toy, progress=False)
    b = train(_cfg(seed=3), tmp_path / "b", data=toy, progress=False)
    c = train(_cfg(seed=4), tmp_path / "c", data=toy, progress=False)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


def test_finished_run_is_not_redone(tmp_path, toy):
    train(_cfg(), tmp_path / "r", data=toy, progress=False)
    mtime = (tmp_path / "r" / "checkpoint.pt").stat().st_mtime_ns
    calls = []
    train(_cfg(), tmp_path / "r", data=toy, progress=False, callback=lambda s, t: calls.append(s))
    assert calls == []
    assert (tmp_path / "r" / "checkpoint.pt").stat().st_mtime_ns == mtime


def test_run_directory_contents_and_load(tmp_path, toy):
    model = train(_cfg(), tmp_path / "r", data=toy, progress=False)
    for name in ("config.yaml", "checkpoint.pt", "train_log.csv", "versions.json"):
        assert (tmp_path / "r" / name).exists(), name
    loaded, record = load_run(tmp_path / "r")
    assert record["model"] == "beta_vae" and record["model_params"] == {"beta": 4.0, "width": 1.0}
    assert _same_weights(model, loaded)
    assert not list((tmp_path / "r").glob(".*tmp"))  # no temporary files left


def test_different_config_in_same_dir_is_an_error(tmp_path, toy):
    train(_cfg(), tmp_path / "r", data=toy, progress=False)
    with pytest.raises(RunError, match="different configuration"):
        train(_cfg(steps=20), tmp_path / "r", data=toy, progress=False)


@pytest.mark.parametrize("key,value,match", [
    ("steps", 0, "steps = 0"),
    ("steps", -5, "steps = -5"),
    ("batch_size", 0, "batch_size"),
    ("lr", -1.0, "lr"),
    ("bogus", 1, "unknown key 'train.bogus'"),
])
def test_bad_train_config(tmp_path, toy, key, value, match):
    cfg = _cfg()
    cfg["train"][key] = value
    with pytest.raises(ConfigError, match=match):
        train(cfg, tmp_path / "r", data=toy, progress=False)
    assert not (tmp_path / "r").exists()


def test_unknown_model_and_param(tmp_path, toy):
    with pytest.raises(ConfigError, match="unknown model 'nope'.*beta_vae"):
        RunConfig(model="nope")
    cfg = _cfg()
    cfg["model_params"] = {"gamma": 3}
    with pytest.raises(ConfigError, match="unknown key 'beta_vae.gamma'"):
        train(cfg, tmp_path / "r", data=toy, progress=False)
    cfg["model_params"] = {"beta": -1}
    with pytest.raises(ConfigError, match="beta = -1"):
        train(cfg, tmp_path / "r2", data=toy, progress=False)


def test_unwritable_output_folder(tmp_path, toy):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunError, match="not writable"):
        train(_cfg(), blocker / "run", data=toy, progress=False)


def test_variants_use_the_base_datasets_model_defaults(tmp_path):
    """A β-VAE trained on modified or noise dSprites uses dSprites' β (8), not the class default."""
    from vaebias.data.toy import ToySquares

    for name in ("dsprites", "dsprites_modified", "dsprites_noise"):
        data = ToySquares(num_positions=8)
        data.name = name
        cfg = {"model": "beta_vae", "dataset": {"name": "toy"}, "train": tiny_train(steps=1)}
        train(cfg, tmp_path / name, data=data, progress=False)
        _, record = load_run(tmp_path / name)
        assert record["model_params"]["beta"] == 8.0, name


def test_atomic_files_have_normal_permissions(tmp_path):
    import os

    from vaebias._internal.io import write_json

    write_json(tmp_path / "x.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_run_folder_that_never_trained_does_not_block_the_corrected_rerun(tmp_path):
    run = tmp_path / "run"
    open_run_dir(run, {"model": "ae", "train": {"steps": 5}})          # a start that failed before training
    open_run_dir(run, {"model": "beta_vae", "train": {"steps": 5}})    # the corrected rerun
    assert "beta_vae" in (run / "config.yaml").read_text()
    (run / "train_log.csv").write_text("step\n1\n")                     # now it has trained
    with pytest.raises(RunError, match="holds a different configuration"):
        open_run_dir(run, {"model": "ae", "train": {"steps": 5}})


_FULL_DISK_TRAIN = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (500_000, 500_000))  # the AE's checkpoint takes ~3.5 MB
from vaebias.cli.main import main
sys.exit(main(["-q", "train", "--model", "ae", "--dataset", "toy", "--steps", "9", "--batch-size", "8",
               "--checkpoint-every", "4", "--log-every", "3", "--device", "cpu", "--no-progress",
               "--out", sys.argv[1]]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_full_disk_during_training_is_one_line_and_the_rerun_is_identical(tmp_path):
    import subprocess

    from vaebias.cli.main import main

    run = tmp_path / "run"
    res = subprocess.run([sys.executable, "-c", _FULL_DISK_TRAIN, str(run)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(err) == 1, res.stderr
    assert "checkpoint.pt: write failed (File too large)" in err[0] and "rerun" in err[0]
    assert not list(run.glob(".*.tmp")) and not (run / "checkpoint.pt").exists()
    args = ["-q", "train", "--model", "ae", "--dataset", "toy", "--steps", "9", "--batch-size", "8",
            "--checkpoint-every", "4", "--log-every", "3", "--device", "cpu", "--no-progress"]
    assert main([*args, "--out", str(run)]) == 0
    assert main([*args, "--out", str(tmp_path / "clean")]) == 0
    a = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "clean" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_temporary_file_of_a_killed_writer_is_removed_on_resume(tmp_path, toy):
    train(_cfg(steps=4), tmp_path / "r", data=toy, progress=False)
    stale = tmp_path / "r" / ".checkpoint.pt.abc123.tmp"  # as atomic_path names them; its writer was killed
    stale.write_bytes(b"half a checkpoint")
    train(_cfg(steps=4), tmp_path / "r", data=toy, progress=False)
    assert not stale.exists()


def test_a_run_of_the_renderer_does_not_resume_on_a_real_file(tmp_path, toy):
    """The dataset's source is compared as the file it names, not dropped: a run folder of
    one dataset is refused for another whose spec reads the same but whose source differs."""
    from vaebias._internal.config import TrainConfig, to_dict
    from vaebias.training.rundir import open_run_dir

    record = {"model": "ae", "dataset": {"name": "dsprites"}, "train": to_dict(TrainConfig(**tiny_train())),
              "dataset_info": {"name": "dsprites", "source": "procedural renderer"}}
    open_run_dir(tmp_path / "r", record)
    (tmp_path / "r" / "train_log.csv").write_text("step\n1\n")  # it trained
    real = tmp_path / "dsprites.npz"
    real.write_bytes(b"")
    other = {**record, "dataset_info": {"name": "dsprites", "source": str(real)}}
    with pytest.raises(RunError, match="different configuration"):
        open_run_dir(tmp_path / "r", other)
    assert open_run_dir(tmp_path / "r", record) == tmp_path / "r"

"""Sweeps (vaebias.experiments.sweep): grid expansion and stable ids, validation, the local launcher,
and a real Ray cluster started here (a head and a worker node) -- including a worker and
a driver killed mid-sweep: after a rerun every run is finished exactly once."""

import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from vaebias._internal.errors import ConfigError
from vaebias.cli.main import main
from vaebias.experiments.grid import expand, load_grid, run_id
from vaebias.experiments.tasks import TASK_LOG, completion

TOY = {"name": "toy", "num_positions": 8}
TRAIN = {"steps": 20, "batch_size": 8, "device": "cpu", "checkpoint_every": 10, "log_every": 5}
EVAL = {"metrics": ["mig"], "num_points": 200}
REPO = Path(__file__).resolve().parents[2]


def _grid(**kw):
    g = {"models": ["ae", "beta_vae"], "datasets": [TOY], "seeds": [0, 1],
         "model_params": {"beta_vae": {"beta": [1, 4]}}, "train": dict(TRAIN), "evaluate": dict(EVAL)}
    g.update(kw)
    return g


def _write(path, grid):
    path.write_text(yaml.safe_dump(grid))
    return path


def _records(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / TASK_LOG).read_text().splitlines()]


def _finished_lines(run_dir):
    return [r for r in _records(run_dir) if r["event"] == "finished"]


def _mtimes(root):
    return {str(p): p.stat().st_mtime_ns for p in Path(root).rglob("*") if p.is_file()}


def _assert_each_finished_once(out, n):
    runs = sorted((Path(out) / "runs").iterdir())
    assert len(runs) == n
    for rd in runs:
        assert len(_finished_lines(rd)) == 1, (rd.name, _records(rd))
        assert (rd / "metrics.json").exists() and (rd / "checkpoint.pt").exists()


# ------------------------------------------------------------------ grid and ids


def test_expand_grid_order_and_stable_ids(tmp_path):
    specs = expand(_grid(), tmp_path / "out")
    ids = [s["id"] for s in specs]
    # datasets x models x model_params x train x seeds; ae has no params, beta_vae two betas
    assert [(s["config"]["model"], s["config"]["model_params"], s["config"]["train"]["seed"]) for s in specs] == [
        ("ae", {}, 0), ("ae", {}, 1),
        ("beta_vae", {"beta": 1.0}, 0), ("beta_vae", {"beta": 1.0}, 1),
        ("beta_vae", {"beta": 4.0}, 0), ("beta_vae", {"beta": 4.0}, 1)]
    # the id is a readable prefix plus the SHA-256 of the canonical JSON config, by hand
    cfg = specs[4]["config"]
    assert cfg["model"] == "beta_vae" and cfg["dataset"] == TOY and cfg["model_params"] == {"beta": 4.0}
    assert cfg["train"] == dict(cfg["train"], **TRAIN, seed=0)  # every TrainConfig field, grid values in
    # hashed: the config without the train fields at TrainConfig's defaults (the seed stays)
    defaults = {"lr": 1e-4, "adam_betas": [0.9, 0.999], "adam_eps": 1e-8, "device": "auto",
                "checkpoint_every": 1000, "log_every": 100, "precision": "fp32", "channels_last": False,
                "fused_adam": False, "compile": False, "data_parallel": 1, "steps": 300_000, "batch_size": 64}
    hashed = dict(cfg, train={k: v for k, v in cfg["train"].items() if k == "seed" or defaults.get(k) != v})
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:8]
    assert ids[4] == f"beta_vae-toy-beta4-seed0-{digest}" == run_id(cfg)
    # a training setting added to TrainConfig later (at its default) leaves the id alone
    assert run_id(dict(cfg, train={k: v for k, v in cfg["train"].items() if k != "compile"})) == ids[4]
    assert ids[0].startswith("ae-toy-seed0-")
    assert len(set(ids)) == 6
    assert all(s["run_dir"] == str((tmp_path / "out" / "runs" / s["id"]).resolve()) for s in specs)
    # stable: same config -> same id, whatever the grid around it (4 vs 4.0, order, more values)
    more = expand(_grid(seeds=[1, 0, 2], model_params={"beta_vae": {"beta": [4.0, 8, 1]}}), tmp_path / "out")
    assert set(ids) < {s["id"] for s in more} and len(more) == 3 + 9
    # a different value anywhere in the config -> a different id
    other = expand(_grid(train=dict(TRAIN, lr=1e-3)), tmp_path / "out")
    assert not set(ids) & {s["id"] for s in other}


def test_expand_lists_of_train_values_and_sequence_fields(tmp_path):
    g = _grid(models=["factor_vae"], seeds=[0], model_params={}, train=dict(TRAIN, lr=[1e-4, 1e-3]))
    assert [s["config"]["train"]["lr"] for s in expand(g, tmp_path)] == [1e-4, 1e-3]
    # a list-typed hyperparameter: a flat list is one value, a list of lists a grid
    one = _grid(models=["factor_vae"], seeds=[0], model_params={"factor_vae": {"discriminator_betas": [0.5, 0.9]}})
    assert len(expand(one, tmp_path)) == 1
    two = _grid(models=["factor_vae"], seeds=[0],
                model_params={"factor_vae": {"discriminator_betas": [[0.5, 0.9], [0.9, 0.999]]}})
    assert [s["config"]["model_params"]["discriminator_betas"] for s in expand(two, tmp_path)] == [
        [0.5, 0.9], [0.9, 0.999]]
    # duplicates collapse; a dataset given by name equals its mapping
    dup = _grid(models=["ae"], model_params={}, seeds=[0, 0], datasets=["toy", {"name": "toy"}])
    assert len(expand(dup, tmp_path)) == 1


@pytest.mark.parametrize("change,match", [
    ({"bogus": 1}, r"unknown key 'bogus' for Grid; allowed keys: .*datasets.*models"),
    ({"models": ["ae", "nope"]}, "unknown model 'nope'"),
    ({"models": "ae"}, r"models = 'ae': expected a list"),
    ({"models": []}, "models = \\[\\]: expected a non-empty list"),
    ({"datasets": ["mnist"]}, r"datasets\[0\].name = 'mnist': expected a dataset name"),
    ({"datasets": [{"name": "toy", "num_positions": 99}]}, r"datasets\[0\].*num_positions = 99"),
    ({"seeds": []}, "seeds = \\[\\]"),
    ({"seeds": ["a"]}, r"seeds\[0\] = 'a': expected an integer"),
    ({"model_params": {"factor_vae": {"gamma": 2}}}, r"model_params.factor_vae .*a model of this grid"),
    ({"model_params": {"ae": {"beta": 2}}}, r"model_params.ae: unknown key 'ae.beta'"),
    ({"model_params": {"beta_vae": {"beta": [-2]}}}, "model_params.beta_vae: .*beta = -2"),
    ({"model_params": {"beta_vae": {"gamma": 1}}}, "model_params.beta_vae: unknown key 'beta_vae.gamma'"),
    ({"model_params": {"beta_vae": {"beta": []}}}, r"model_params.beta_vae.beta = \[\]"),
    ({"train": {"steps": 0}}, "steps = 0"),
    ({"train": {"stepz": 5}}, r"unknown key 'train.stepz' for TrainConfig; allowed keys:"),
    ({"train": {"seed": 3}}, r"train.seed = 3: expected no seed here; list the seeds under the top-level key 'seeds'"),
    ({"evaluate": {"metrics": ["nope"]}}, r"evaluate.metrics = \['nope'\]: expected metric names among"),
    ({"evaluate": {"num_pts": 3}}, r"unknown key 'evaluate.num_pts'; allowed keys: metrics, num_points"),
    ({"evaluate": {"num_points": 0}}, "evaluate.num_points = 0"),
    ({"resources": {"num_cpus": 0}}, "resources.num_cpus = 0"),
    ({"resources": {"cpus": 1}}, r"unknown key 'resources.cpus' for Resources; allowed keys: num_cpus, num_gpus"),
    ({"max_retries": -1}, "max_retries = -1"),
])
def test_grid_validation_names_the_key(tmp_path, change, match):
    with pytest.raises(ConfigError, match=match):
        expand(_grid(**change), tmp_path)


def test_cli_bad_grid_one_message_exit_2_no_files(tmp_path, capsys):
    out = tmp_path / "out"
    cases = [
        (_write(tmp_path / "g1.yaml", _grid(bogus=1)), "unknown key 'bogus'"),
        (_write(tmp_path / "g2.yaml", {"datasets": [TOY]}), "the grid has no 'models' key"),
        (tmp_path / "missing.yaml", "grid file"),
    ]
    (tmp_path / "g3.yaml").write_text("models: [ae\n")
    cases.append((tmp_path / "g3.yaml", "not valid YAML"))
    for path, match in cases:
        rc = main(["sweep", str(path), "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("vaebias: error:") and match in err, err
    g = _write(tmp_path / "ok.yaml", _grid())
    assert main(["sweep", str(g), "--no-progress"]) == 2
    assert "give --out or an 'out' key" in capsys.readouterr().err
    assert main(["sweep", str(g), "--out", str(out), "--launcher", "ray", "--workers", "2"]) == 2
    assert "workers = 2" in capsys.readouterr().err
    assert not out.exists()


def test_unreachable_ray_address_fails_fast_before_writing(tmp_path, capsys):
    pytest.importorskip("ray")
    g = _write(tmp_path / "g.yaml", _grid())
    port = _free_port()  # nothing listens there
    for address, match in [(f"127.0.0.1:{port}", f"cannot reach the Ray cluster at address '127.0.0.1:{port}'"),
                           ("nohost", "address = 'nohost': expected HOST:PORT")]:
        t0 = time.monotonic()
        assert main(["sweep", str(g), "--out", str(tmp_path / "o"), "--launcher", "ray", "--address", address]) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1 and time.monotonic() - t0 < 15
    assert not (tmp_path / "o").exists()


def test_without_ray_the_local_launcher_works_and_ray_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    g = _write(tmp_path / "g.yaml", _grid(models=["ae"], model_params={}, seeds=[0]))
    assert main(["sweep", str(g), "--out", str(tmp_path / "r"), "--launcher", "ray", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == ("vaebias: error: the ray launcher needs Ray: pip install 'vaebias[ray]' "
                   "(or pip install 'ray>=2.9'), or use --launcher local\n")
    assert not (tmp_path / "r").exists()
    assert main(["reproduce", "--dataset", "toy", "--out", str(tmp_path / "p"), "--launcher", "ray"]) == 2
    assert "needs Ray" in capsys.readouterr().err and not (tmp_path / "p").exists()
    assert main(["sweep", str(g), "--out", str(tmp_path / "l"), "--no-progress"]) == 0


# ------------------------------------------------------------------ local launcher


def test_local_sweep_completes_rerun_does_nothing_and_grows(tmp_path, capsys):
    grid = _write(tmp_path / "grid.yaml", _grid(models=["ae", "beta_vae"], model_params={}, out=str(tmp_path / "o")))
    out = tmp_path / "o"
    assert main(["sweep", str(grid), "--dry-run"]) == 0  # lists the runs, writes nothing
    assert capsys.readouterr().out.split() == [s["id"] for s in expand(load_grid(grid))]
    assert not out.exists()
    assert main(["sweep", str(grid), "--no-progress"]) == 0
    text = capsys.readouterr().err
    assert "4 runs, 0 already finished, 4 to run" in text and "sweep done: 4 finished now" in text
    _assert_each_finished_once(out, 4)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["run_dir"] for r in manifest["runs"]] == [f"runs/{r['id']}" for r in manifest["runs"]]
    assert yaml.safe_load((out / "sweep.yaml").read_text())["models"] == ["ae", "beta_vae"]
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 4 and all(0 <= r["mig"] <= 1 for r in rows)
    for r in rows:  # the results table is the runs' metrics.json
        m = json.loads((out / "runs" / r["id"] / "metrics.json").read_text())
        assert r["mig"] == m["mig"]["mig"]

    before = _mtimes(out)
    assert main(["sweep", str(grid), "--no-progress"]) == 0
    assert "4 of 4 runs already finished" in capsys.readouterr().err
    assert _mtimes(out) == before  # not a file written, in the runs or beside them
    before = _mtimes(out / "runs")

    # a grown grid reuses every finished run and runs only the new one
    _write(grid, _grid(models=["ae", "beta_vae"], model_params={}, seeds=[0, 1, 2], out=str(out)))
    assert main(["sweep", str(grid), "--no-progress"]) == 0
    assert "6 runs, 4 already finished, 2 to run" in capsys.readouterr().err
    assert {k: v for k, v in _mtimes(out / "runs").items() if k in before} == before
    _assert_each_finished_once(out, 6)


def test_local_worker_processes_give_the_same_numbers(tmp_path, capsys):
    g = _grid(models=["beta_vae"], model_params={}, seeds=[0, 1])
    assert main(["sweep", str(_write(tmp_path / "g.yaml", g)), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    assert main(["sweep", str(tmp_path / "g.yaml"), "--out", str(tmp_path / "b"), "--workers", "2",
                 "--no-progress"]) == 0
    assert "local, 2 worker processes" in capsys.readouterr().err
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert [r["mig"] for r in a] == pytest.approx([r["mig"] for r in b], abs=1e-6)
    # each task ran in its own worker process, not in this one
    assert all(_finished_lines(tmp_path / "b" / "runs" / r["id"])[0]["pid"] != os.getpid() for r in b)


def test_pack_ensemble_trains_seed_groups_together_each_run_once(tmp_path):
    from vaebias.experiments.tasks import pack_tasks

    g = _grid(models=["beta_vae", "factor_vae"], model_params={"beta_vae": {"beta": 4}}, seeds=[0, 1, 2],
              pack="ensemble", ensemble_size=2)
    tasks = pack_tasks(expand(g, tmp_path / "x"), "ensemble", 2)
    # beta_vae seeds (0, 1) share an ensemble, seed 2 is alone; factor_vae cannot ensemble
    assert [len(t.get("members", [t])) for t in tasks] == [2, 1, 1, 1, 1]
    assert tasks[0]["id"].startswith("ensemble:beta_vae-toy-beta4-seed0-")
    assert pack_tasks(expand(g, tmp_path / "x"), "auto", 8) == expand(g, tmp_path / "x")  # CPU: no ensembles
    g["models"] = ["beta_vae"]
    assert main(["sweep", str(_write(tmp_path / "g.yaml", g)), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    _assert_each_finished_once(tmp_path / "a", 3)
    import torch

    kinds = {}
    for r in json.loads((tmp_path / "a" / "results.json").read_text()):
        state = torch.load(tmp_path / "a" / "runs" / r["id"] / "checkpoint.pt", weights_only=False)
        kinds[r["id"].split("-")[3]] = state.get("ensemble")
    assert kinds == {"seed0": {"members": 2, "index": 0}, "seed1": {"members": 2, "index": 1}, "seed2": None}
    # the same numbers as runs trained alone (the members are their solo runs up to rounding)
    g["pack"] = "none"
    assert main(["sweep", str(_write(tmp_path / "h.yaml", g)), "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert [r["mig"] for r in a] == pytest.approx([r["mig"] for r in b], abs=1e-3)
    assert main(["sweep", str(tmp_path / "g.yaml"), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    _assert_each_finished_once(tmp_path / "a", 3)  # the rerun adds nothing


def test_failed_run_is_reported_others_finish_rerun_retries(tmp_path, capsys):
    grid = _write(tmp_path / "g.yaml", _grid(models=["ae"], model_params={}, seeds=[0, 1, 2]))
    out = tmp_path / "o"
    bad = expand(load_grid(grid), out)[1]
    Path(bad["run_dir"]).mkdir(parents=True)
    (Path(bad["run_dir"]) / "config.yaml").write_text("model: something else\n")
    (Path(bad["run_dir"]) / "train_log.csv").write_text("step\n1\n")  # it trained: not replaced
    assert main(["sweep", str(grid), "--out", str(out), "--no-progress"]) == 1
    cap = capsys.readouterr()
    assert f"1 of 3 runs failed:\n  {bad['id']}: RunError:" in cap.err and "holds a different configuration" in cap.err
    assert "failures.log" in cap.err and "RunError" in (out / "failures.log").read_text()
    assert f"1 run(s) failed, e.g. {bad['id']}: RunError:" in cap.err  # the log's summary, for API callers
    assert completion(bad["run_dir"], bad["evaluate"]) is None
    assert len(json.loads((out / "results.json").read_text())) == 2
    (Path(bad["run_dir"]) / "config.yaml").unlink()
    (Path(bad["run_dir"]) / "train_log.csv").unlink()
    assert main(["sweep", str(grid), "--out", str(out), "--no-progress"]) == 0
    assert "3 runs, 2 already finished, 1 to run" in capsys.readouterr().err
    assert not (out / "failures.log").exists()
    _assert_each_finished_once(out, 3)


# ------------------------------------------------------------------ one task: completion exactly once


class _Killed(BaseException):
    """Stands for a SIGKILL at a chosen point (BaseException: nothing catches it)."""


@pytest.mark.parametrize("point", ["train", "evaluate", "finished line"])
def test_task_killed_at_any_point_completes_once_on_rerun(tmp_path, monkeypatch, point):
    import vaebias.experiments.scoring
    import vaebias.experiments.tasks as sweep_mod
    import vaebias.training.loop

    spec = expand(_grid(models=["beta_vae"], model_params={}, seeds=[0]), tmp_path)[0]
    targets = {"train": (vaebias.training.loop, "fit"), "evaluate": (vaebias.experiments.scoring, "evaluate"),
               "finished line": (sweep_mod, "_append")}
    module, name = targets[point]
    real = getattr(module, name)

    def dies(*a, **kw):
        if point != "finished line" or a[1]["event"] == "finished":
            raise _Killed
        return real(*a, **kw)

    monkeypatch.setattr(module, name, dies)
    with pytest.raises(_Killed):
        sweep_mod.run_task(spec)
    assert completion(spec["run_dir"], spec["evaluate"]) is None
    monkeypatch.setattr(module, name, real)
    kept = {p: t for p, t in _mtimes(spec["run_dir"]).items() if p.endswith(("checkpoint.pt", "metrics.json"))}
    res = sweep_mod.run_task(spec)
    assert res["status"] == "finished" and len(_finished_lines(spec["run_dir"])) == 1
    # work done before the kill is reused, not redone
    assert {p: t for p, t in _mtimes(spec["run_dir"]).items() if p in kept} == kept
    assert sweep_mod.run_task(spec)["status"] == "already"
    assert len(_finished_lines(spec["run_dir"])) == 1


def test_two_processes_on_one_run_complete_it_once(tmp_path):
    """The lock on task_log.jsonl: a second task on the same run waits, then finds it done."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from vaebias.experiments.launchers import _init_worker
    from vaebias.experiments.tasks import run_task

    spec = expand(_grid(models=["ae"], model_params={}, seeds=[0], train=dict(TRAIN, steps=60)), tmp_path)[0]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                             initargs=(1,)) as pool:
        results = list(pool.map(run_task, [spec, spec]))
    assert sorted(r["status"] for r in results) == ["already", "finished"]
    assert len(_finished_lines(spec["run_dir"])) == 1


# ------------------------------------------------------------------ killing drivers and workers


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def _start_driver(args, log):
    return subprocess.Popen([sys.executable, "-m", "vaebias", "sweep", *args, "--no-progress"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=_env(), cwd=log.parent)


def _kill_driver_when(args, log, predicate, what):
    """Start a sweep driver, SIGKILL it once ``predicate()`` holds (within 120 s)."""
    proc = _start_driver(args, log)
    try:
        _wait_for(predicate, 120, what, proc, log)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


def _cli(args, log, cwd=None, timeout=300):
    """`vaebias ARGS` in a fresh process (every Ray driver runs so: Ray reads its
    authentication settings once per process). Returns (exit status, output, pid)."""
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "vaebias", *args], stdout=fh,
                                stderr=subprocess.STDOUT, env=_env(), cwd=cwd or Path(log).parent)
        try:
            rc = proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
    return rc, Path(log).read_text(), proc.pid


def _wait_for(predicate, timeout, what, proc=None, log=None):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    text = Path(log).read_text() if log else ""
    pytest.fail(f"timed out waiting for {what} (driver rc {proc.poll() if proc else None}); log:\n{text}")


def _run_dirs(out):
    root = Path(out) / "runs"
    return sorted(root.iterdir()) if root.exists() else []


def _finished_runs(out):
    return [rd for rd in _run_dirs(out) if (rd / TASK_LOG).exists() and _finished_lines(rd)]


def _check_rerun_after_kill(out, grid_args, n, finished_before, extra_args=()):
    """Rerun; every run finished exactly once; runs finished before the kill untouched."""
    before = {rd: _mtimes(rd) for rd in finished_before}
    rc, text, _ = _cli(["sweep", *grid_args, *extra_args, "--no-progress"], Path(out).parent / "rerun.log")
    assert rc == 0, text
    _assert_each_finished_once(out, n)
    for rd, mt in before.items():
        assert _mtimes(rd) == mt, f"{rd.name} was touched by the rerun"


def test_local_driver_killed_mid_sweep_loses_nothing(tmp_path):
    out = tmp_path / "o"
    grid = _write(tmp_path / "g.yaml", _grid(models=["beta_vae"], model_params={}, seeds=[0, 1, 2],
                                              train=dict(TRAIN, steps=120), out=str(out)))
    log = tmp_path / "driver.log"

    # kill once one run is finished and the next one has checkpointed part of its training
    def mid_second_run():
        done = _finished_runs(out)
        busy = [rd for rd in _run_dirs(out) if rd not in done and (rd / "checkpoint.pt").exists()]
        return done and busy

    _kill_driver_when([str(grid)], log, mid_second_run, "a finished run and a checkpointed unfinished one")
    finished = _finished_runs(out)
    assert 1 <= len(finished) < 3, log.read_text()
    _check_rerun_after_kill(out, [str(grid)], 3, finished)
    # the interrupted run resumed from its checkpoint (two starts, one finish)
    starts = {rd.name: sum(r["event"] == "start" for r in _records(rd)) for rd in _run_dirs(out)}
    assert sorted(starts.values()) == [1, 1, 2]


# ------------------------------------------------------------------ Ray

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli():
    return str(Path(sys.executable).with_name("ray"))


def _port_args():
    return ["--dashboard-agent-listen-port", str(_free_port()), "--dashboard-agent-grpc-port", str(_free_port()),
            "--runtime-env-agent-port", str(_free_port()), "--metrics-export-port", str(_free_port()),
            "--object-store-memory", str(100 * 1024 * 1024), "--num-gpus", "0", "--disable-usage-stats"]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A head node and a worker node (1 CPU each) on this machine; always torn down.

    Each ``ray start`` runs in its own session, so its daemons (GCS, raylet, agents)
    and their workers share one process group that teardown kills -- only this
    cluster's processes, never other Ray instances on the machine."""
    import shutil
    import tempfile

    pytest.importorskip("ray", reason="the ray launcher's tests need Ray (pip install -e .[test])")
    temp = Path(tempfile.mkdtemp(prefix="vr", dir="/tmp"))  # short: Ray's socket paths must fit 107 chars
    logs = tmp_path_factory.mktemp("ray_logs")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # Token authentication with this cluster's own token, in the environment of every
    # process that talks to it (the nodes and the drivers, all subprocesses: Ray reads
    # these settings once per process). Without an explicit mode, Ray 2.60 turns token
    # auth on for a head node when ~/.ray/auth_token exists (written by any earlier local
    # ray.init) but not for a worker node joining it, which then cannot connect.
    monkey = pytest.MonkeyPatch()
    groups = []

    def start(args, name):
        log = logs / f"{name}.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen([_ray_cli(), "start", *args, *_port_args()], stdout=fh,
                                    stderr=subprocess.STDOUT, env=_env(), start_new_session=True, cwd=temp)
            groups.append(proc.pid)
            if proc.wait(120) != 0:
                pytest.fail(f"ray start ({name}) failed:\n{log.read_text()}")

    try:
        monkey.setenv("RAY_AUTH_MODE", "token")
        monkey.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        monkey.setenv("RAY_USAGE_STATS_ENABLED", "0")
        start(["--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
               "--temp-dir", str(temp), "--include-dashboard", "false"], "head")
        start(["--address", address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1"], "worker")
        _wait_for(lambda: _cluster_cpus(address) == 2, 60, "2 CPUs in the Ray cluster")
        yield address
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in groups:
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(1 if sig == signal.SIGTERM else 0)
        shutil.rmtree(temp, ignore_errors=True)
        monkey.undo()


def _cluster_cpus(address):
    out = subprocess.run([_ray_cli(), "status", "--address", address], capture_output=True, text=True,
                         env=_env(), timeout=60).stdout
    for line in out.splitlines():
        if line.strip().endswith(" CPU") and "/" in line:
            return float(line.split("/")[1].split()[0])
    return 0


def test_ray_sweep_on_a_two_node_cluster_completes(ray_cluster, tmp_path, capsys):
    g = _write(tmp_path / "g.yaml", _grid(models=["ae", "beta_vae"], model_params={}, seeds=[0, 1],
                                          resources={"num_cpus": 1, "num_gpus": 0}))
    out = tmp_path / "o"
    rc, text, driver = _cli(["sweep", str(g), "--out", str(out), "--launcher", "ray", "--address", ray_cluster,
                             "--no-progress"], tmp_path / "driver.log")
    assert rc == 0, text
    assert "on a cluster with 2 CPUs" in text and "sweep done: 4 finished now" in text
    _assert_each_finished_once(out, 4)
    pids = {_finished_lines(rd)[0]["pid"] for rd in _run_dirs(out)}
    assert driver not in pids and os.getpid() not in pids  # the runs ran in Ray's worker processes
    # the same numbers as the local launcher
    assert main(["sweep", str(g), "--out", str(tmp_path / "local"), "--no-progress"]) == 0
    a = json.loads((out / "results.json").read_text())
    b = json.loads((tmp_path / "local" / "results.json").read_text())
    assert [r["mig"] for r in a] == pytest.approx([r["mig"] for r in b], abs=1e-6)
    # rerun: nothing to do, Ray not even contacted
    assert main(["sweep", str(g), "--out", str(out), "--launcher", "ray", "--address", "127.0.0.1:1",
                 "--no-progress"]) == 0
    assert "4 of 4 runs already finished" in capsys.readouterr().err


def test_ray_worker_killed_mid_sweep_is_retried(ray_cluster, tmp_path):
    out = tmp_path / "o"
    grid = _write(tmp_path / "g.yaml", _grid(models=["beta_vae"], model_params={}, seeds=[0, 1, 2, 3],
                                             train=dict(TRAIN, steps=150), max_retries=2, out=str(out)))
    log = tmp_path / "driver.log"
    proc = _start_driver([str(grid), "--launcher", "ray", "--address", ray_cluster], log)
    try:
        def running_task():  # a task that has started and checkpointed, not finished
            for rd in _run_dirs(out):
                recs = _records(rd) if (rd / TASK_LOG).exists() else []
                if recs and recs[-1]["event"] == "start" and (rd / "checkpoint.pt").exists():
                    return rd, recs[-1]["pid"]
            return None

        victim, pid = _wait_for(running_task, 120, "a Ray task in the middle of its run", proc, log)
        os.kill(pid, signal.SIGKILL)  # the Ray worker process running that task
        rc = proc.wait(180)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert rc == 0, text  # Ray reran the task (max_retries) and the sweep completed
    _assert_each_finished_once(out, 4)
    recs = _records(victim)
    starts = [r for r in recs if r["event"] == "start"]
    assert len(starts) == 2 and starts[0]["pid"] == pid and starts[1]["pid"] != pid
    assert recs[-1]["event"] == "finished"
    # a rerun has nothing left to do
    assert main(["sweep", str(grid), "--launcher", "ray", "--address", ray_cluster, "--no-progress"]) == 0
    _assert_each_finished_once(out, 4)


def test_ray_driver_killed_mid_sweep_loses_nothing(ray_cluster, tmp_path):
    out = tmp_path / "o"
    grid = _write(tmp_path / "g.yaml", _grid(models=["beta_vae"], model_params={}, seeds=[0, 1, 2, 3],
                                             train=dict(TRAIN, steps=150), out=str(out)))
    log = tmp_path / "driver.log"
    args = [str(grid), "--launcher", "ray", "--address", ray_cluster]
    _kill_driver_when(args, log, lambda: _finished_runs(out), "a finished run")
    finished = _finished_runs(out)
    assert len(finished) < 4, log.read_text()
    _check_rerun_after_kill(out, args, 4, finished)


# ------------------------------------------------------------------ reproduce uses the same runner

TINY_PROFILE = {
    "name": "tiny", "reduced": True, "reference_restarts": 2, "reference_steps": 12,
    "manipulation_steps": 8, "train_steps": 10, "seeds": [0, 1], "models": ["ae", "beta_vae"],
    "eval_points": 300, "batch_size": 8, "field_width": 0.25, "checkpoint_every": 5,
}


@pytest.fixture(scope="module")
def sequential_reproduce(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    profile = _write(root / "tiny.yaml", TINY_PROFILE)
    args = ["reproduce", "--dataset", "toy", "--profile", str(profile), "--device", "cpu", "--no-progress"]
    assert main(args + ["--out", str(root / "sequential")]) == 0
    return args, json.loads((root / "sequential" / "table.json").read_text())["summary"]


def _reproduced_runs(out):
    runs = sorted(Path(out).glob("references/*")) + sorted(Path(out).glob("runs/*/*"))
    assert len(runs) == 2 + 3 * 2 * 2
    return runs


def test_reproduce_with_worker_processes_matches_sequential(sequential_reproduce, tmp_path, capsys):
    args, expected = sequential_reproduce
    assert main(args + ["--out", str(tmp_path / "par"), "--workers", "2"]) == 0
    assert "noise ae        seed 1: MIG" in capsys.readouterr().err  # reproduce's own lines
    assert json.loads((tmp_path / "par" / "table.json").read_text())["summary"] == expected
    for rd in _reproduced_runs(tmp_path / "par"):
        assert len(_finished_lines(rd)) == 1


def test_reproduce_on_ray_matches_sequential(ray_cluster, sequential_reproduce, tmp_path):
    args, expected = sequential_reproduce
    # a relative --out: the Ray workers (started in another folder) work in the driver's
    rc, text, _ = _cli(args + ["--out", "res", "--launcher", "ray", "--address", ray_cluster],
                       tmp_path / "driver.log", cwd=tmp_path)
    assert rc == 0, text
    assert json.loads((tmp_path / "res" / "table.json").read_text())["summary"] == expected
    for rd in _reproduced_runs(tmp_path / "res"):
        assert len(_finished_lines(rd)) == 1 and _finished_lines(rd)[0]["pid"] != os.getpid()


def _children(pid):
    """Pids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_workers_die_with_a_killed_driver(tmp_path):
    """kill -9 of a sweep driver with 2 workers: the workers stop within seconds instead of
    training on unattended (seen: a killed `reproduce` left both workers training)."""
    grid = _write(tmp_path / "g.yaml", _grid(train=dict(TRAIN, steps=200_000, checkpoint_every=1000)))
    log = tmp_path / "driver.log"
    proc = _start_driver([str(grid), "--out", str(tmp_path / "out"), "--workers", "2"], log)
    try:
        workers = _wait_for(lambda: [c for c in _children(proc.pid)
                                     if b"multiprocessing" in Path(f"/proc/{c}/cmdline").read_bytes()
                                     and "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
                            if len(_run_dirs(tmp_path / "out")) >= 2 else None,
                            120, "two workers training", proc, log)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        _wait_for(lambda: not any(_alive(w) for w in workers), 20, "the workers to exit after the driver's death")
    finally:
        if proc.poll() is None:
            proc.kill()

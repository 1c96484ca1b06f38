"""One writer per folder: a second process is refused, naming the folder and the holder's
pid; the lock of a process that died (kill -9) is taken over."""

import os
import signal
import subprocess
import sys
import time

import pytest

from vaebias._internal.errors import RunError
from vaebias._internal.lock import LOCK_NAME, folder_lock
from vaebias.cli.main import main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")

_HOLD = """
import sys, time
from vaebias._internal.lock import folder_lock
with folder_lock(sys.argv[1], "results folder"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_and_a_dead_holders_lock_taken_over(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    proc = _holder(folder)
    try:
        with pytest.raises(RunError, match=rf"'{folder}' is in use by process {proc.pid} on "):
            with folder_lock(folder, "results folder"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (folder / LOCK_NAME).read_text().split()[0] == str(proc.pid)  # the dead holder's pid is still there
    with folder_lock(folder):  # ... and its lock is taken over
        assert (folder / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        with folder_lock(folder):  # re-entrant within one process
            pass


def test_two_trainings_on_one_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    proc = _holder(run)
    try:
        code = main(["train", "--model", "ae", "--dataset", "blobs", "--steps", "2", "--batch-size", "8",
                     "--seed", "1", "--out", str(run)])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"run directory '{run}' is in use by process {proc.pid}" in err[0]
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing written by the refused run
    t0 = time.perf_counter()
    assert main(["train", "--model", "ae", "--dataset", "blobs", "--steps", "2", "--batch-size", "8",
                 "--seed", "1", "--out", str(run)]) == 0  # the killed holder does not block
    assert time.perf_counter() - t0 < 600
    assert (run / "checkpoint.pt").exists()


def test_two_real_trainings_at_once_one_refused(tmp_path):
    """Two `vaebias train` processes with different seeds on one --out: exactly one trains,
    the other is refused in one line (before: both exited 0 and one run was lost)."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vaebias", "-q", "train", "--model", "ae", "--dataset", "blobs", "--steps", "60",
           "--batch-size", "8", "--checkpoint-every", "1000", "--out", str(run)]
    procs = [subprocess.Popen([*cmd, "--seed", str(s)], stderr=subprocess.PIPE, text=True, env=env) for s in (1, 2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results  # one run trained, the other was refused: nothing lost silently
    err = next(e for c, e in results if c == 2).strip().splitlines()
    # refused by the lock while the other trains, or by the other's config once it is done
    assert len(err) == 1 and ("is in use by process" in err[0] or "holds a different configuration" in err[0])


def test_a_locked_results_folder_and_export_folder_are_refused(tmp_path, capsys, toy):
    from vaebias.data import Noisy, export_dataset

    res, exports = tmp_path / "res", tmp_path / "exports"
    res.mkdir()
    exports.mkdir()
    holders = [_holder(res), _holder(exports)]
    try:
        code = main(["reproduce", "--dataset", "toy", "--profile", "quick", "--out", str(res), "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert f"results folder '{res}' is in use by process {holders[0].pid}" in err[0]
        assert sorted(p.name for p in res.iterdir()) == [LOCK_NAME]
        with pytest.raises(RunError, match=f"export folder '{exports}' is in use by process {holders[1].pid}"):
            export_dataset(Noisy(toy, 0.1), exports / "n.h5", kind="noise", base=toy, epsilon=0.1, progress=False)
        assert sorted(p.name for p in exports.iterdir()) == [LOCK_NAME]
    finally:
        for h in holders:
            h.send_signal(signal.SIGKILL)
            h.wait()

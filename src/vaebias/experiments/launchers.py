"""Launchers: run a list of tasks in this process, in a pool of worker processes, or as
Ray tasks on a cluster; workers die with the driver."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable

from vaebias._internal.config import check, from_dict
from vaebias._internal.errors import ConfigError, RunError
from vaebias._internal.log import get_logger
from vaebias.experiments.grid import Resources
from vaebias.experiments.tasks import per_run_results, run_any_task

__all__ = ["LAUNCHERS", "Runner", "probe_ray", "require_ray", "run_tasks"]

LAUNCHERS = ("local", "ray")


log = get_logger()





# --------------------------------------------------------------------------------------
# launchers


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel send this worker SIGTERM when the process that started it
    dies (``prctl(PR_SET_PDEATHSIG)``), so that killing ``vaebias reproduce`` or ``sweep``
    (Ctrl-C, kill, kill -9) never leaves workers training on; their runs resume from
    their last atomic checkpoint on the rerun. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _stop_workers(pool, grace: float = 60.0) -> None:
    """Stop a worker pool after an interrupt: queued tasks are cancelled, each worker gets
    a Ctrl-C (its run finishes the current step and checkpoints at that boundary; see
    :func:`vaebias.training.loop.interrupt_at_step_boundary`), and a worker still alive
    after ``grace`` seconds is killed (its run resumes from its last checkpoint)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # the executor's worker processes
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(p.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def _init_worker(threads: int, parent_pid: int | None = None) -> None:
    import torch

    if parent_pid is not None:
        _die_with_parent(parent_pid)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _pool_task(spec: dict):
    return run_any_task(spec, progress=False)


def _failure(spec: dict, exc: BaseException, tb: str | None = None) -> dict:
    cause = getattr(exc, "cause", None) or exc  # ray.exceptions.RayTaskError wraps the task's error
    return {"id": spec["id"], "status": "failed", "metrics": {},
            "error": f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}",
            "traceback": tb or "".join(traceback.format_exception(exc))}


class Runner:
    """A launcher, held open across several batches of tasks (a worker pool or a Ray
    connection is started on first use and closed by :meth:`close` / ``with``).

    Args:
        launcher: ``"local"`` or ``"ray"``.
        workers: local launcher: 1 runs the tasks in this process (in order, with the
            training progress bars); N > 1 runs them in N spawned processes with
            ``max(1, cores // N)`` torch threads each.
        address: Ray cluster address (``host:port``, ``"auto"``, or ``"local"`` to start
            one); default ``$RAY_ADDRESS``, else a new local cluster, shut down on close.
        resources: per-task ``num_cpus`` / ``num_gpus`` on Ray (default 1 CPU, no GPU).
        max_retries: Ray reruns of a task whose worker process or node died.
        progress: a progress bar of runs (pool, Ray) or the training bars (in-process).
        fail_fast: in-process only: let a task's exception propagate at once (otherwise
            failures are collected as results with status ``"failed"``).
        preloaded: datasets already loaded in this process (in-process tasks reuse them),
            ``{canonical JSON of the dataset spec: dataset}``.

    Raises:
        ConfigError: unknown launcher, bad ``workers``/``resources``/``max_retries``,
            ``workers`` with Ray, or Ray not installed.
    """

    def __init__(self, launcher: str = "local", *, workers: int = 1, address: str | None = None,
                 resources: Resources | dict | None = None, max_retries: int = 3, progress: bool = True,
                 fail_fast: bool = False, preloaded: dict | None = None):
        check(launcher in LAUNCHERS, "launcher", launcher, f"one of {', '.join(LAUNCHERS)}")
        check(isinstance(workers, int) and workers >= 1, "workers", workers, "an integer >= 1")
        check(isinstance(max_retries, int) and max_retries >= 0, "max_retries", max_retries, "an integer >= 0")
        if launcher == "ray":
            if workers != 1:
                raise ConfigError(f"workers = {workers}: only for the local launcher; Ray runs as many runs at "
                                  f"once as the cluster's CPUs allow (set resources.num_cpus per run)")
            require_ray()
            probe_ray(address)
        self.launcher, self.workers, self.address = launcher, workers, address
        self.resources = (resources if isinstance(resources, Resources)
                          else from_dict(Resources, resources or {}, "resources."))
        self.max_retries, self.progress, self.fail_fast = max_retries, progress, fail_fast
        self.preloaded = preloaded
        self._pool = None
        self._ray_started = False

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close(cancel=exc[0] is not None)

    def close(self, cancel: bool = False) -> None:
        """Stop the worker pool / disconnect from Ray (shutting down a cluster started here)."""
        if self._pool is not None:
            if cancel:
                _stop_workers(self._pool)
            else:
                self._pool.shutdown(wait=True)
            self._pool = None
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False

    def run(self, specs: list[dict], on_result: Callable[[dict, dict], None] | None = None) -> list[dict]:
        """Run the tasks of ``specs``; results in the order of ``specs``.

        Args:
            specs: task specs (:func:`expand`, or built by hand with ``id``, ``run_dir``,
                ``config``, ``evaluate``; ids unique).
            on_result: called as ``on_result(spec, result)`` as each task ends (in
                this process, in completion order).

        Returns:
            one result per spec (see :func:`run_task`); failed ones have ``status
            "failed"``, ``error`` (one line) and ``traceback``.

        Raises:
            RunError: the Ray cluster cannot be reached.
            KeyboardInterrupt: passed on (runs resume on the next invocation).
        """
        results: dict[str, dict] = {}

        def record(task, res):
            for spec, r in per_run_results(task, res):
                results[spec["id"]] = r
                if on_result is not None:
                    on_result(spec, r)

        if not specs:
            return []
        if self.launcher == "ray":
            self._run_ray(specs, record)
        elif self.workers == 1:
            for spec in specs:
                try:
                    res = run_any_task(spec, preloaded=self.preloaded, progress=self.progress)
                except Exception as exc:
                    if self.fail_fast:
                        raise
                    res = _failure(spec, exc)
                record(spec, res)
        else:
            self._run_pool(specs, record)
        runs = [m for s in specs for m in s.get("members", [s])]
        return [results[s["id"]] for s in runs]

    def _run_pool(self, specs, record) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        if self._pool is None:
            threads = max(1, _cores() // self.workers)
            self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(threads, os.getpid()))
        bar = _bar(len(specs), self.progress, f"runs ({self.workers} workers)")
        try:
            futures = {self._pool.submit(_pool_task, spec): spec for spec in specs}
            for fut in as_completed(futures):
                spec = futures[fut]
                try:
                    res = fut.result()
                except BrokenProcessPool as exc:
                    res = _failure(spec, exc)
                    res["error"] = "a worker process died (killed, or out of memory); rerun to finish this run"
                except Exception as exc:
                    res = _failure(spec, exc)
                record(spec, res)
                bar.update(1)
        finally:
            bar.close()
        if any(isinstance(f.exception(), BrokenProcessPool) for f in futures if f.done()):
            self._pool.shutdown(wait=False)  # a broken pool takes no more tasks
            self._pool = None

    def _run_ray(self, specs, record) -> None:
        import logging

        import ray

        res, max_retries = self.resources, self.max_retries
        if not ray.is_initialized():
            address = _ray_address(self.address)
            kwargs = {"logging_level": logging.WARNING, "configure_logging": True}
            if address == "local":
                kwargs["include_dashboard"] = False
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise RunError(f"cannot reach the Ray cluster at address {address!r}: {exc}") from None
            self._ray_started = True
        cpus = ray.cluster_resources().get("CPU", 0)
        log.info(f"ray: {len(specs)} tasks on a cluster with {cpus:g} CPUs, {res.num_cpus:g} CPU"
             f"{'' if res.num_gpus == 0 else f' + {res.num_gpus:g} GPU'} per task, up to {max_retries} retries")
        remote = ray.remote(num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_retries=max_retries)(_ray_task)
        threads = max(1, int(res.num_cpus))
        bar = _bar(len(specs), self.progress, "runs (ray)")
        pending = {}
        try:
            pending = {remote.remote(spec, threads): spec for spec in specs}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    spec = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # RayTaskError (the task raised), WorkerCrashedError, ...
                        result = _failure(spec, exc)
                    record(spec, result)
                    bar.update(1)
        except BaseException:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()


def run_tasks(specs: list[dict], launcher: str = "local", *, on_result: Callable[[dict, dict], None] | None = None,
              **options) -> list[dict]:
    """Run ``specs`` with a :class:`Runner` opened and closed for this one batch.

    ``options`` are those of :class:`Runner`; returns :meth:`Runner.run`'s results.
    """
    with Runner(launcher, **options) as runner:
        return runner.run(specs, on_result)


def _bar(total: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not progress, desc=desc, unit="run", dynamic_ncols=True)


def _ray_task(spec: dict, threads: int) -> dict:
    """Body of the Ray task (module level: workers import it by reference)."""
    return run_any_task(spec, progress=False, threads=threads)


def _ray_address(address: str | None) -> str:
    """The address the Ray launcher uses: ``address``, else ``$RAY_ADDRESS``, else "local"."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def probe_ray(address: str | None, timeout: float = 10.0) -> None:
    """Fail fast on a ``host:port`` nobody listens on (Ray itself retries for minutes).

    Raises:
        RunError: naming the address, when a TCP connection to it fails.
    """
    address = _ray_address(address)
    if address in ("local", "auto") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"address = {address!r}: expected HOST:PORT of a Ray head node, 'auto' or 'local'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RunError(f"cannot reach the Ray cluster at address {address!r}: {exc.strerror or exc}; "
                       f"is `ray start --head` running there?") from None


def require_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray launcher needs Ray: pip install 'vaebias[ray]' "
                          "(or pip install 'ray>=2.9'), or use --launcher local") from None
    return ray



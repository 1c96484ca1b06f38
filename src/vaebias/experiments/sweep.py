"""Sweeps: a grid of runs -> run specs with stable ids -> a launcher -> one directory per run.

A grid YAML names models, datasets (names, options or dataset files such as the exported
modified/noise variants), seeds, hyperparameters and the evaluation; every combination is
one *run*::

    out: results/my_sweep                   # or --out
    models: [ae, beta_vae]
    datasets: [{name: toy, num_positions: 8}]   # a name, a mapping of load_dataset options, or a path
    seeds: [0, 1]
    model_params: {beta_vae: {beta: [1, 4]}}    # lists expand as a grid
    train: {steps: 200, batch_size: 64}         # lists expand here too (lr: [1e-4, 1e-3])
    evaluate: {metrics: [mig], num_points: 1000}
    resources: {num_cpus: 1, num_gpus: 0}       # per run, on Ray
    max_retries: 3                              # Ray: reruns of a task whose worker died

:func:`sweep` writes, in ``out``::

    sweep.yaml           the validated grid of the last invocation
    manifest.json        every run: id, directory, configuration
    runs/<id>/           one run directory per run (training run + metrics.json + task_log.jsonl)
    results.csv, .json   one row per finished run with its scalar metrics
    failures.log         tracebacks of the runs that failed in the last invocation (if any)

Run ids are stable: ``<model>-<dataset>[-<param><value>...]-seed<s>-<hash8>`` where
``hash8`` is the first 8 hex digits of the SHA-256 of the run's canonical JSON
configuration (model, dataset, explicit model hyperparameters, full TrainConfig). The same
configuration always maps to the same directory, so growing a grid reuses every finished run.

**A task** (:func:`run_task`) trains the run (resuming from its checkpoint), evaluates it
(reusing recorded metrics) and appends one ``"finished"`` line to ``run_dir/task_log.jsonl``
as its very last act. A run is complete for an evaluation when that line exists; a task
that finds it does nothing and writes nothing. The line is one ``write`` in append mode
under an exclusive lock of the file (held for the whole task, released by the kernel when
a process dies), so a kill at any point -- driver or worker -- neither loses a finished
run nor ever records one twice; the rerun finishes only what is missing.

Launchers: ``local`` runs the tasks in this process one after the other, or in ``workers``
processes (each with ``cores // workers`` torch threads); ``ray`` submits one Ray task per
run (``num_cpus``/``num_gpus`` per task, ``max_retries`` reruns of tasks whose worker died)
to an existing cluster (``address``) or to a local one. ``out`` must be on a file system
that every Ray node sees.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

from vaebias._internal.config import check, to_dict
from vaebias._internal.errors import ConfigError
from vaebias._internal.io import atomic_path, canonical_json, ensure_writable_dir, read_yaml
from vaebias._internal.log import get_logger
from vaebias.experiments.grid import Grid, evaluation_key, expand, load_grid
from vaebias.experiments.launchers import LAUNCHERS, probe_ray, require_ray, run_tasks
from vaebias.experiments.tasks import check_inputs, completion, pack_tasks

__all__ = ["sweep"]



log = get_logger()





# --------------------------------------------------------------------------------------
# the sweep


def _results_table(specs: list[dict]) -> list[dict]:
    rows = []
    for spec in specs:
        rec = completion(spec["run_dir"], spec.get("evaluate"))
        if rec is None:
            continue
        row = {"id": spec["id"], "model": spec["config"]["model"], "dataset": spec["meta"]["dataset"],
               "seed": spec["config"]["train"]["seed"],
               "model_params": canonical_json(spec["config"]["model_params"]),
               "steps": spec["config"]["train"]["steps"]}
        for name, vals in rec.get("metrics", {}).items():
            for k, v in vals.items():
                row[name if k == name else f"{name}.{k}"] = v
        rows.append(row)
    return rows


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically, unless the file already holds exactly it (a rerun of a
    finished sweep leaves every file as it was)."""
    if path.exists() and path.read_bytes() == text.encode():
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_text(obj) -> str:
    return json.dumps(obj, indent=2) + "\n"


def _write_results(out: Path, rows: list[dict]) -> None:
    _write_text(out / "results.json", _json_text(rows))
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    _write_text(out / "results.csv", buf.getvalue())


def _summary_line(res: dict) -> str:
    parts = []
    for name, vals in res.get("metrics", {}).items():
        v = vals.get(name)
        if isinstance(v, (int, float)):
            parts.append(f"{name} {v:.3f}")
    return ", ".join(parts)


def sweep(grid: str | os.PathLike | dict | Grid, out: str | os.PathLike | None = None, *,
          launcher: str = "local", workers: int = 1, address: str | None = None,
          progress: bool = True, dry_run: bool = False) -> dict:
    """Run every run of ``grid`` that is not finished yet (see the module docstring).

    Args:
        grid: a grid YAML path, its mapping, or a :class:`Grid`.
        out: results folder (default: the grid's ``out``).
        launcher, workers, address: see :class:`Runner`.
        progress: progress bars (a run count in the driver; training bars in-process).
        dry_run: validate and list the runs (``"ids"`` of the result) without writing or
            running anything.

    Returns:
        ``{"out", "total", "already", "finished", "failed": [results], "results":
        [results in grid order], "wall_time_s"}``.

    Raises:
        ConfigError: a bad grid (before anything is written).
        RunError: ``out`` unwritable, or the Ray cluster unreachable.
    """
    import yaml

    t0 = time.perf_counter()
    check(launcher in LAUNCHERS, "launcher", launcher, f"one of {', '.join(LAUNCHERS)}")
    check(isinstance(workers, int) and workers >= 1, "workers", workers, "an integer >= 1")
    if launcher == "ray" and workers != 1:
        raise ConfigError(f"workers = {workers}: only for the local launcher; Ray runs as many runs at once "
                          f"as the cluster's CPUs allow (set resources.num_cpus per run in the grid)")
    g = load_grid(grid)
    specs = expand(g, out)
    out = Path(specs[0]["run_dir"]).parent.parent if specs else Path(out or g.out)
    if dry_run:
        return {"out": str(out), "ids": [spec["id"] for spec in specs], "total": len(specs), "already": 0, "finished": 0, "failed": [],
                "results": [], "wall_time_s": time.perf_counter() - t0}
    todo = [s for s in specs if completion(s["run_dir"], s["evaluate"]) is None]
    # datasets and devices: one error now, not one failure per run
    check_inputs(todo, keep=launcher == "local" and workers == 1)
    if todo and launcher == "ray":
        require_ray()
        probe_ray(address)
    out = ensure_writable_dir(out)
    record = to_dict(g)
    record["out"] = str(out)
    grid_path = out / "sweep.yaml"
    if grid_path.exists() and read_yaml(grid_path) != json.loads(json.dumps(record)):
        log.info(f"the grid differs from the last one in {grid_path}; finished runs of the same "
             f"configuration are kept, new ones added")
    _write_text(grid_path, yaml.safe_dump(record, sort_keys=False, default_flow_style=False))
    _write_text(out / "manifest.json", _json_text({
        "grid": record, "evaluation": evaluation_key(g.evaluate),
        "runs": [{"id": s["id"], "run_dir": str(Path(s["run_dir"]).relative_to(out)), "config": s["config"]}
                 for s in specs]}))

    already = len(specs) - len(todo)
    if not todo:
        log.info(f"{len(specs)} of {len(specs)} runs already finished; nothing to do")
        _write_results(out, _results_table(specs))
        results = [{"id": s["id"], "status": "already"} for s in specs]
        return {"out": str(out), "total": len(specs), "already": already, "finished": 0, "failed": [],
                "results": results, "wall_time_s": time.perf_counter() - t0}
    how = ("ray" if launcher == "ray" else
           "local, in this process" if workers == 1 else f"local, {workers} worker processes")
    log.info(f"sweep {out}: {len(specs)} runs, {already} already finished, {len(todo)} to run ({how})")
    count = {"n": 0}

    def on_result(spec, res):
        count["n"] += 1
        if res["status"] == "failed":
            log.info(f"[{count['n']}/{len(todo)}] FAILED {spec['id']}: {res['error']}")
        else:
            word = "finished" if res["status"] == "finished" else "already finished"
            summary = _summary_line(res)
            log.info(f"[{count['n']}/{len(todo)}] {word} {spec['id']} ({res.get('seconds', 0):.1f} s)"
                 + (f": {summary}" if summary else ""))

    results = run_tasks(pack_tasks(todo, g.pack, g.ensemble_size), launcher, workers=workers, address=address, resources=g.resources,
                        max_retries=g.max_retries, progress=progress, on_result=on_result)
    failed = [r for r in results if r["status"] == "failed"]
    finished = sum(r["status"] == "finished" for r in results)
    already += sum(r["status"] == "already" for r in results)
    _write_results(out, _results_table(specs))
    fail_log = out / "failures.log"
    if failed:
        with atomic_path(fail_log) as tmp:
            tmp.write_text("".join(f"== {r['id']}\n{r['traceback']}\n" for r in failed))
    elif fail_log.exists():
        fail_log.unlink()
    wall = time.perf_counter() - t0
    log.info(f"sweep done: {finished} finished now, {already} already finished, {len(failed)} failed, "
         f"of {len(specs)}; results in {out / 'results.csv'}; wall time {wall:.0f} s")
    if failed:
        log.info(f"{len(failed)} run(s) failed, e.g. {failed[0]['id']}: {failed[0].get('error', '?')}; "
             f"tracebacks in {fail_log}")
    by_id = {r["id"]: r for r in results}
    return {"out": str(out), "total": len(specs), "already": already, "finished": finished, "failed": failed,
            "results": [by_id.get(s["id"], {"id": s["id"], "status": "already"}) for s in specs],
            "wall_time_s": wall}


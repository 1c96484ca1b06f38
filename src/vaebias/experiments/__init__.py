"""Generic machinery for many runs, nothing paper-specific: a grid (YAML) expands to run
specs with stable ids; a launcher (local processes or Ray) runs each exactly once into its
own directory; a finished run is never redone and an interrupted one resumes. Scoring
(:func:`evaluate_run`, :func:`udr_runs`) turns run directories into ``metrics.json``."""

from vaebias.experiments.grid import Grid, Resources, evaluation_key, expand, load_grid, run_id
from vaebias.experiments.launchers import LAUNCHERS, Runner, run_tasks
from vaebias.experiments.scoring import evaluate_run, representation, udr_runs
from vaebias.experiments.sweep import sweep
from vaebias.experiments.tasks import TASK_LOG, completion, pack_tasks, run_group_task, run_task

__all__ = ["LAUNCHERS", "TASK_LOG", "Grid", "Resources", "Runner", "completion", "evaluate_run",
           "evaluation_key", "expand", "load_grid", "pack_tasks", "representation", "run_group_task",
           "run_id", "run_task", "run_tasks", "sweep", "udr_runs"]

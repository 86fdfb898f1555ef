"""Continual unlearning (docs/formulas.md#scenarios): tasks 1..N of a forget split, each from the previous result.

For every method, task k is one ordinary ``unlearn`` run whose model is task k-1's result (the
original target for the first task), whose forget set is task k, and whose retain set is the
base retain set plus the forget rows of the tasks not yet unlearned. The reference model (NPO,
DPO, KL) is the previous result, or the original target with ``fix_ref_model``. After each task
the model is evaluated and one row goes into the trajectory table.

    OUTPUT_DIR/config.yaml                 the resolved ContinualConfig
    OUTPUT_DIR/target/eval/                the original target's evaluation (task 0)
    OUTPUT_DIR/METHOD/task_K/              the unlearn run folder of task K (see training.run)
    OUTPUT_DIR/METHOD/task_K/model/        removed once task K+1 is done, unless kept
    OUTPUT_DIR/METHOD/task_K/eval/         the evaluation after task K
    OUTPUT_DIR/trajectory.csv, .md, .png   MU and FE per task, per method

Rerunning the same command continues where it stopped: a finished unlearn run is skipped by
the engine itself (its ``train_summary.json``), an unfinished one resumes from its checkpoint,
a finished evaluation is read back, and a task already in the trajectory is not added twice.
"""

from __future__ import annotations

import copy
import csv
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..config import ContinualConfig, UnlearnConfig
from ..data.records import load_split, task_ids_of
from ..errors import UserError
from ..io import append_csv_row, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json, safe_name
from ..tables import csv_text, markdown_table, number_cell
from .common import claim_output_folder

logger = logging.getLogger(__name__)

TRAJECTORY = "trajectory.csv"
TARGET = "target"
# What an evaluator gets: (model folder, forget task id or None for all, output folder) -> summary.
Evaluator = Callable[[Path, Optional[str], Path], dict]


@dataclass(frozen=True)
class TaskStep:
    """One continual step: which task, from which model, into which run folder."""

    method: str
    task: str
    previous_task: Optional[str]
    start_model: str
    run_dir: Path

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"


# ---- planning: pure functions of the config -----------------------------------------------------


def methods_of(config: ContinualConfig) -> list[str]:
    return list(config.methods) or [config.unlearn.method]


def tasks_to_run(config: ContinualConfig) -> list[str]:
    """The configured tasks (or every task of the forget split), checked against the split."""
    data = config.unlearn.data
    rows = load_split(data.forget, data.source)
    available = task_ids_of(rows)
    tasks = [str(t) for t in config.tasks] or available
    missing = [t for t in tasks if t not in available]
    if missing:
        raise UserError(f"forget split '{data.forget}' has no task {missing[0]}; its tasks are {', '.join(available)}")
    if len(set(tasks)) != len(tasks):
        raise UserError(f"tasks lists a task twice: {', '.join(tasks)}")
    return tasks


def check_retain_disjoint(config: ContinualConfig, tasks: list[str]) -> None:
    """The base retain set must not hold rows of a task this run unlearns.

    Otherwise the regulariser would train on what the forget loss is removing (TOFU's own
    pairings are disjoint: forget01/retain90, forget05/retain50, forget10/retain10).
    """
    from ..data.records import default_retain_split

    data = config.unlearn.data
    retain_spec = data.retain or default_retain_split(data.forget)
    if not retain_spec:
        return  # the engine reports a missing retain set for the methods that need one
    retained = {r["question"] for r in load_split(retain_spec, data.source)}
    for row in load_split(data.forget, data.source):
        task = str(row.get("task_id", "1"))
        if task in tasks and row["question"] in retained:
            raise UserError(
                f"retain split '{retain_spec}' holds rows of task {task} of '{data.forget}', which this run "
                "unlearns; pick a retain split without them (data.retain) or other tasks"
            )


def method_dir(config: ContinualConfig, method: str) -> Path:
    return Path(config.output_dir) / safe_name(method)


def plan(config: ContinualConfig, method: str, tasks: list[str]) -> list[TaskStep]:
    """The chain of steps of one method: task k starts from task k-1's model folder."""
    steps = []
    start = config.unlearn.model.name_or_path
    previous = None
    task_of_folder: dict[Path, str] = {}
    for task in tasks:
        # Task ids come from the data: made harmless as folder names, and never two in one folder.
        run_dir = method_dir(config, method) / f"task_{safe_name(task)}"
        if run_dir in task_of_folder:
            raise UserError(f"task ids {task_of_folder[run_dir]!r} and {task!r} "
                            f"would share the folder {run_dir.name}; rename one of them in the data")
        task_of_folder[run_dir] = task
        steps.append(TaskStep(method, task, previous, start, run_dir))
        start, previous = str(run_dir / "model"), task
    return steps


def task_unlearn_config(config: ContinualConfig, step: TaskStep) -> UnlearnConfig:
    """The ordinary unlearn config of one step (its retain set follows docs/formulas.md#scenarios in the engine)."""
    run = copy.deepcopy(config.unlearn)
    run.method = step.method
    run.model.name_or_path = step.start_model
    run.data.task_id = [step.task]
    # The base retain set plus the forget rows of the tasks not yet unlearned.
    run.data.retain_includes_later_tasks = True
    run.reference_model = config.unlearn.model.name_or_path if config.fix_ref_model else None
    run.output_dir = str(step.run_dir)
    return run


def models_to_keep(config: ContinualConfig, tasks: list[str]) -> set[str]:
    """Task ids whose model folders stay after the run (the keep_models policy)."""
    keep = {str(k).strip().lower() for k in config.keep_models}
    if "all" in keep:
        return set(tasks)
    chosen = {t for t in tasks if t.lower() in keep}
    if "last" in keep and tasks:
        chosen.add(tasks[-1])
    unknown = keep - {t.lower() for t in tasks} - {"last", "all", "none"}
    if unknown:
        raise UserError(
            f"keep_models names '{sorted(unknown)[0]}', which is no task of this run; "
            "use task ids, 'last', 'all' or 'none'"
        )
    return chosen


# ---- running -------------------------------------------------------------------------------------


def run_continual(config: ContinualConfig, evaluator: Optional[Evaluator] = None) -> Path:
    """Run (or continue) every method's chain of tasks; returns the output folder."""
    from ..evaluation.callback import epoch_evaluation
    from ..methods import get_method
    from ..training.run import unlearn

    if config.seeds:
        return run_continual_seeds(config, evaluator)
    for method in methods_of(config):
        get_method(method)  # an unknown method fails before any task runs
    tasks = tasks_to_run(config)
    keep = models_to_keep(config, tasks)
    check_retain_disjoint(config, tasks)
    output_dir = Path(config.output_dir)
    claim_output_folder(output_dir, config, "continual")
    if config.evaluate and evaluator is None:
        evaluator = default_evaluator(config)
    if config.evaluate and config.evaluate_target:
        # The target may be a hub name or an alias, not a folder.
        summary = _evaluate_once(evaluator, Path(config.unlearn.model.name_or_path), tasks[0],
                                 output_dir / TARGET / "eval", is_run=False)
        _record(output_dir, TARGET, "0", summary)
    for method in methods_of(config):
        for step in plan(config, method, tasks):
            logger.info("continual: %s, task %s (%d of %d)", method, step.task, tasks.index(step.task) + 1, len(tasks))
            if not _step_done(output_dir, step, config.evaluate):
                run = task_unlearn_config(config, step)
                unlearn(run, epoch_evaluation(run))
                if config.evaluate:
                    summary = _evaluate_once(evaluator, step.model_dir, step.task, step.eval_dir)
                    _record(output_dir, method, step.task, summary)
            # Only now is the previous model no longer needed: a rerun restarts from this task.
            # (Also on a rerun of a done step, in case a kill came between the row and this.)
            if step.previous_task is not None and step.previous_task not in keep:
                shutil.rmtree(Path(step.start_model), ignore_errors=True)
        _drop_unkept_last(config, method, tasks, keep)
    return output_dir


def run_continual_seeds(config: ContinualConfig, evaluator: Optional[Evaluator] = None) -> Path:
    """One continual run per seed in OUTPUT_DIR/seed_S, then the trajectory over the seeds."""
    from dataclasses import replace

    if len(set(config.seeds)) != len(config.seeds):
        raise UserError(f"seeds lists a seed twice: {config.seeds}")
    output_dir = Path(config.output_dir)
    claim_output_folder(output_dir, config, "continual")
    for seed in config.seeds:
        unlearn = replace(config.unlearn, training=replace(config.unlearn.training, seed=int(seed)))
        run_continual(replace(config, seeds=None, unlearn=unlearn, output_dir=str(output_dir / f"seed_{int(seed)}")),
                      evaluator)
    if config.evaluate:
        write_seed_trajectory(output_dir, [int(s) for s in config.seeds], config.unlearn.evaluation.bootstrap)
    return output_dir


def write_seed_trajectory(output_dir: Path, seeds: list[int], settings) -> None:
    """OUTPUT_DIR/trajectory.csv over the seeds: per (method, task), MU and FE as the mean, their
    sd, and the pooled interval (each seed's rows resampled alike; needs each step's records)."""
    from ..evaluation.evaluate import scoring
    from ..evaluation.runs import EVAL_SUMMARY, RECORDS_DIR, load_summary, read_set_rows
    from ..evaluation.statistics import align_rows, bootstrap, intervals, pooled_over_seeds, seed_spread

    per_seed = [_rows(output_dir / f"seed_{s}") for s in seeds]
    keys = [(r["method"], r["task"]) for r in per_seed[0]]
    rows = []
    for method, task in keys:
        found = [next((r for r in rows_of if (r["method"], r["task"]) == (method, task)), None) for rows_of in per_seed]
        if any(r is None for r in found):
            continue
        numbers = [{k: float(r[k]) for k in ("MU", "FE") if _is_number(r.get(k))} for r in found]
        spread = seed_spread(numbers)
        row = {"method": method, "task": task, "seeds": len(seeds)}
        for key in ("MU", "FE"):
            if key in spread:
                row[key], row[f"{key}_sd"] = spread[key]["mean"], spread[key]["sd"]
        folders = [output_dir / f"seed_{s}" / (TARGET if method == TARGET else safe_name(method))
                   / ("eval" if method == TARGET else f"task_{safe_name(task)}/eval") for s in seeds]
        if all((f / RECORDS_DIR).is_dir() and (f / EVAL_SUMMARY).exists() for f in folders):
            base = read_set_rows(folders[0])
            score = scoring(load_summary(folders[0]).get("scenario", "tofu"))  # MU and FE only
            pooled = pooled_over_seeds([bootstrap(align_rows(read_set_rows(f), base), score, settings.samples,
                                                  settings.seed) for f in folders])
            bounds = intervals(pooled, settings.level)
            for key in ("MU", "FE"):
                if bounds.get(key):
                    row[f"{key}_low"], row[f"{key}_high"] = bounds[key]
        rows.append(row)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    atomic_write_text(output_dir / TRAJECTORY, csv_text(columns, rows))
    write_trajectory_views(output_dir)


def _step_done(output_dir: Path, step: TaskStep, evaluated: bool) -> bool:
    """A step is done when its run finished and (if evaluating) its row is in the trajectory."""
    from ..training.run import TRAIN_SUMMARY

    finished = (step.run_dir / TRAIN_SUMMARY).exists()
    return finished and (not evaluated or _has_row(output_dir, step.method, step.task))


def _drop_unkept_last(config: ContinualConfig, method: str, tasks: list[str], keep: set[str]) -> None:
    last = plan(config, method, tasks)[-1]
    if last.task not in keep:
        shutil.rmtree(last.model_dir, ignore_errors=True)


# ---- evaluation and the trajectory ----------------------------------------------------------------

CONTINUAL_EVAL = "continual_eval.json"


def _evaluate_once(evaluator: Evaluator, model: Path, task: Optional[str], eval_dir: Path, is_run: bool = True) -> dict:
    """Evaluate unless a finished evaluation of this folder is on disk (a rerun reads it back)."""

    done = eval_dir / CONTINUAL_EVAL
    if done.exists():
        return read_json(done)
    if is_run and not model.exists():
        raise UserError(f"{model} is gone and its evaluation is missing; delete {eval_dir.parent} and rerun")
    summary = evaluator(model, task, eval_dir)
    atomic_write_json(done, summary)
    return summary


def _rows(output_dir: Path) -> list[dict]:
    path = output_dir / TRAJECTORY
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _has_row(output_dir: Path, method: str, task: str) -> bool:
    return any(r["method"] == method and r["task"] == task for r in _rows(output_dir))


def _record(output_dir: Path, method: str, task: str, summary: dict) -> None:
    """One trajectory row per (method, task): MU, FE, then every other number of the summary."""
    if _has_row(output_dir, method, task):
        return
    append_csv_row(output_dir / TRAJECTORY, {"method": method, "task": task, **_summary_numbers(summary)})
    write_trajectory_views(output_dir)  # the table and plot grow task by task, readable while it runs


def _summary_numbers(summary: dict) -> dict:
    """An evaluation summary as one flat row; the judges are named (never mix judges silently)."""
    if "sets" in summary:
        from ..evaluation.runs import flat_numbers

        judges = summary.get("judges", {})
        return {"embedder": judges.get("embedder") or "none", "nli": judges.get("nli") or "none",
                **flat_numbers(summary)}
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def write_trajectory_views(output_dir: Path) -> None:
    """trajectory.md (MU and FE per task, one column pair per method) and trajectory.png."""
    rows = _rows(output_dir)
    if not rows:
        return
    atomic_write_text(output_dir / "trajectory.md", trajectory_markdown(rows))
    plot_trajectory(rows, output_dir / "trajectory.png")


def _trajectories(rows: list[dict]) -> dict[str, list[tuple[int, dict]]]:
    """method -> [(task number, row)], each starting from the target's task-0 row when there is one."""
    target = [r for r in rows if r["method"] == TARGET]
    by_method: dict[str, list[tuple[int, dict]]] = {}
    for row in rows:
        if row["method"] != TARGET:
            by_method.setdefault(row["method"], []).append(row)
    ordered = {}
    for method, method_rows in by_method.items():
        chain = target + method_rows
        ordered[method] = [(position, r) for position, r in enumerate(chain, start=0 if target else 1)]
    return ordered


def _number(row: dict, key: str) -> str:
    """The value, ± its sd over seeds and its interval when the row has them."""
    text = number_cell(row.get(key, ""))
    if not _is_number(row.get(key)):
        return text
    if _is_number(row.get(f"{key}_sd")):
        text += f" \u00b1 {float(row[f'{key}_sd']):.4f}"
    if _is_number(row.get(f"{key}_low")) and _is_number(row.get(f"{key}_high")):
        text += f" [{float(row[f'{key}_low']):.2f}, {float(row[f'{key}_high']):.2f}]"
    return text


def trajectory_markdown(rows: list[dict]) -> str:
    """MU and FE after every task, per method; the judges get a column when the rows name them."""
    judged = any("embedder" in r for r in rows)
    columns = ["method", "step", "task", "MU", "FE"] + (["judges (embedder / NLI)"] if judged else [])
    table = [{"method": method, "step": position, "task": row["task"] if row["method"] != TARGET else "target",
              "MU": _number(row, "MU"), "FE": _number(row, "FE"),
              "judges (embedder / NLI)": f"{row.get('embedder') or 'none'} / {row.get('nli') or 'none'}"}
             for method, chain in _trajectories(rows).items() for position, row in chain]
    return markdown_table(columns, table)


def plot_trajectory(rows: list[dict], path: Path) -> None:
    """MU and FE against the number of tasks unlearned, one line per method."""
    from ..figures import png_bytes, pyplot

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for index, (method, chain) in enumerate(_trajectories(rows).items()):
        for axis, key in zip(axes, ("MU", "FE")):
            points = [(position, float(r[key])) for position, r in chain if _is_number(r.get(key))]
            if points:
                axis.plot(*zip(*points), marker="o", label=method, color=f"C{index % 10}")
            band = [(position, float(r[f"{key}_low"]), float(r[f"{key}_high"])) for position, r in chain
                    if _is_number(r.get(f"{key}_low")) and _is_number(r.get(f"{key}_high"))]
            if len(band) > 1:  # the 95% bootstrap intervals
                axis.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band],
                                  color=f"C{index % 10}", alpha=0.15, linewidth=0)
    for axis, key in zip(axes, ("Model Utility \u2191", "Forget Efficacy \u2191")):
        axis.set_xlabel("tasks unlearned")
        axis.set_title(key)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    figure.tight_layout()
    atomic_write_bytes(path, png_bytes(figure))


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def default_evaluator(config: ContinualConfig, judges=None) -> Evaluator:
    """Evaluate with ``config.unlearn.evaluation`` (docs/formulas.md#metrics) on the current task's forget rows.

    Empty data keys of that evaluation config take the run's own (source, forget split); the
    forget task is the one just unlearned unless ``evaluation.data.task_id`` names others.
    The judges are loaded once, at the first evaluation, and reused for every task.
    """
    from ..evaluation.evaluate import build_sets, evaluate_model, run_evaluation_config
    from ..judges.loading import LazyJudges

    lazy = LazyJudges(config.unlearn.evaluation.judges, judges)

    def task_evaluation_config(model_dir: Path, task: Optional[str], output_dir: Path):
        return run_evaluation_config(config.unlearn, model_dir, output_dir, task_id=[task] if task else [])

    def evaluate(model_dir: Path, task: Optional[str], output_dir: Path) -> dict:
        return evaluate_model(task_evaluation_config(model_dir, task, output_dir), judges=lazy.get())

    # A bad evaluation file fails now, before the first task trains.
    build_sets(task_evaluation_config(Path(config.unlearn.model.name_or_path), tasks_to_run(config)[0], Path(".")))
    return evaluate

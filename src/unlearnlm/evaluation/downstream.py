"""Downstream utility with lm-evaluation-harness, run in-process on a loaded model (docs/formulas.md#scenarios).

The model and tokenizer already in memory are wrapped in lm-eval's ``HFLM`` and scored with
``lm_eval.simple_evaluate``: no subprocess, no second copy of the weights. Every metric lm-eval
reports comes back as one row (task, metric, filter, value, stderr); the metric the paper quotes
for each default task is marked ``headline``.

Task names are lm-eval's (``arc_challenge``, ``mmlu``...). ``include_path`` adds a folder of
task YAMLs, which is how tests and users bring their own local tasks.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..config import DownstreamConfig
from ..errors import UserError

# The metric the paper reports per default task (docs/formulas.md#scenarios), as lm-eval keys "metric,filter".
HEADLINE_METRICS = {
    "arc_challenge": "acc_norm,none",
    "mmlu": "acc,none",
    "truthfulqa_mc1": "acc,none",
    "triviaqa": "exact_match,remove_whitespace",
    "gsm8k": "exact_match,flexible-extract",
}
DEFAULT_TASKS = list(HEADLINE_METRICS)
# WMDP (Li et al., 2024): multiple-choice accuracy, lower = forgotten (chance 0.25).
HEADLINE_METRICS.update({"wmdp_bio": "acc,none", "wmdp_cyber": "acc,none"})


@dataclass
class DownstreamScore:
    task: str
    metric: str
    filter: str
    value: float
    stderr: Optional[float]
    headline: bool

    def as_row(self) -> dict[str, Any]:
        return {"task": self.task, "metric": self.metric, "filter": self.filter,
                "value": self.value, "stderr": self.stderr, "headline": self.headline}


def _task_manager(config: DownstreamConfig):
    """lm-eval's task index; only the include_path folder when it holds every asked task.

    Indexing lm-eval's own ~15k task files takes half a minute, so it is skipped when it is
    not needed (local tasks) and done once per process otherwise.
    """
    from lm_eval.tasks import TaskManager

    include = config.include_path
    if include:
        if not Path(include).is_dir():
            raise UserError(f"downstream.include_path {include} is not a folder")
        local = TaskManager(include_path=include, include_defaults=False)
        if set(config.tasks) <= set(local.all_tasks):
            return local
    key = include or ""
    if key not in _MANAGERS:
        _MANAGERS[key] = TaskManager(include_path=include) if include else TaskManager()
    return _MANAGERS[key]


_MANAGERS: dict[str, object] = {}


def _check_task_names(manager, tasks: list[str]) -> None:
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise UserError(f"lm-eval knows no task '{unknown[0]}' "
                        "(see `lm-eval ls tasks`, or set downstream.include_path)")


def _limit(value: Optional[float]):
    if value is None:
        return None
    if value <= 0:
        raise UserError(f"downstream.limit must be positive, got {value}")
    # lm-eval reads an int as a count and a float below 1 as a share.
    return int(value) if value >= 1 else value


def run_downstream(model, tokenizer, config: DownstreamConfig) -> list[DownstreamScore]:
    """Score ``model`` on ``config.tasks``; one DownstreamScore per (task, metric, filter)."""
    if not config.tasks:
        return []
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    manager = _task_manager(config)
    _check_task_names(manager, config.tasks)
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    was_training = model.training
    model.eval()
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=config.batch_size)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(config.tasks),
            num_fewshot=config.num_fewshot,
            limit=_limit(config.limit),
            task_manager=manager,
            log_samples=False,
            apply_chat_template=config.apply_chat_template,
            bootstrap_iters=0,
            random_seed=config.seed,
            numpy_random_seed=config.seed,
            torch_random_seed=config.seed,
            fewshot_random_seed=config.seed,
        )
    except OSError as err:  # the hub out of reach (ConnectionError is an OSError): not a bug of ours
        first_line = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(
            f"lm-eval could not load a task's data ({first_line}); offline, use local tasks "
            "(downstream.include_path) or downstream.enabled=false"
        ) from None
    finally:
        model.train(was_training)
    return scores_from_results(results, config.tasks)


def scores_from_results(results: dict, tasks: list[str]) -> list[DownstreamScore]:
    """Flatten lm-eval's ``results["results"]`` for the asked tasks (groups keep their aggregate)."""
    per_task = results.get("results", {}) if results else {}
    scores = []
    for task in tasks:
        for key, value in per_task.get(task, {}).items():
            if "," not in key or key.split(",")[0].endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            metric, filter_name = key.split(",", 1)
            stderr = per_task[task].get(f"{metric}_stderr,{filter_name}")
            stderr = float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
            scores.append(DownstreamScore(task, metric, filter_name, float(value), stderr,
                                          headline=HEADLINE_METRICS.get(task) == key))
    return scores


def headline_scores(scores: list[DownstreamScore]) -> dict[str, float]:
    """``{"arc_challenge/acc_norm": 0.41, ...}``: the paper's metric per default task, else every metric."""
    chosen = {}
    for score in scores:
        if score.headline or score.task not in HEADLINE_METRICS:
            name = f"{score.task}/{score.metric}" + ("" if score.filter == "none" else f"/{score.filter}")
            chosen[name] = score.value
    return chosen


def write_downstream(scores: list[DownstreamScore], folder: str | Path) -> Path:
    """``downstream.json`` (every row) in ``folder``; returns its path."""
    from ..io import atomic_write_json

    path = Path(folder) / "downstream.json"
    atomic_write_json(path, {"scores": [s.as_row() for s in scores], "headline": headline_scores(scores)})
    return path

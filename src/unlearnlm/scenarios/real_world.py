"""Real-world unlearning (docs/formulas.md#scenarios): forget real people (or any entities), keep their neighbours.

The forget set is every entity of ``forget`` at once (all task ids), the retain set is the
neighbour set, and each model (the target, then the unlearned one) is scored twice: on the QA
sets as docs/formulas.md#metrics real-world (the evaluator's ``real_world`` scenario: neighbour and forget) and
on downstream benchmarks with lm-evaluation-harness, run on the same in-memory model.

    OUTPUT_DIR/config.yaml                the resolved RealWorldConfig
    OUTPUT_DIR/target/eval/               the target's QA evaluation
    OUTPUT_DIR/target/downstream.json     the target's lm-eval scores
    OUTPUT_DIR/METHOD/                    the unlearn run folder (model/, log.jsonl, ...)
    OUTPUT_DIR/METHOD/eval/, downstream.json
    OUTPUT_DIR/results.csv, results.md    one row per model: MU, FE, per-set metrics, downstream

Every stage leaves a file whose presence means it is done, so rerunning the same command
continues where it stopped.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from ..config import RealWorldConfig
from ..errors import UserError
from ..io import atomic_write_text, read_json
from ..tables import csv_text, markdown_table
from .common import claim_output_folder

logger = logging.getLogger(__name__)

TARGET = "target"
DOWNSTREAM_FILE = "downstream.json"


def check_data(config: RealWorldConfig) -> None:
    """The forget and neighbour files must be there before anything loads."""
    from ..data.records import load_split

    data = config.unlearn.data
    if not Path(data.source).is_dir():
        raise UserError(f"unlearn.data.source {data.source} is not a folder: name the folder holding forget.json "
                        "and neighbor.json (e.g. one written by `unlearnlm build-forget-set`)")
    load_split(data.forget, data.source, required=("question", "answer"))
    load_split(data.retain or "neighbor", data.source, required=("question", "answer"))


def run_config(config: RealWorldConfig):
    """The unlearn run: every task of the forget set at once, the neighbours as retain set."""
    run = replace(config.unlearn, output_dir=str(Path(config.output_dir) / config.unlearn.method.replace("/", "_")))
    return replace(run, data=replace(run.data, task_id=[], retain=run.data.retain or "neighbor",
                                     retain_includes_later_tasks=False))


def real_world_evaluation_config(config: RealWorldConfig, model_path: str, output_dir: Path):
    """Real-world evaluation: neighbour plays retain, forget plays forget, every person at once."""
    from ..evaluation.evaluate import run_evaluation_config

    return run_evaluation_config(config.unlearn, model_path, output_dir, task_id=[], scenario="real_world")


def score_model(config: RealWorldConfig, model_path: str, folder: Path, judges) -> dict:
    """QA evaluation and downstream scores of one model (each skipped when already on disk)."""
    from ..evaluation.downstream import run_downstream, write_downstream
    from ..evaluation.evaluate import evaluate_model
    from ..evaluation.runs import EVAL_SUMMARY, load_summary
    from ..training.models import load_for_inference

    eval_dir = folder / "eval"
    downstream_file = folder / DOWNSTREAM_FILE
    wants_downstream = config.downstream.enabled and config.downstream.tasks
    if (eval_dir / EVAL_SUMMARY).exists() and (downstream_file.exists() or not wants_downstream):
        return _row(load_summary(eval_dir), _read_headline(downstream_file))
    eval_config = real_world_evaluation_config(config, model_path, eval_dir)
    model, tokenizer = load_for_inference(eval_config.model)
    if (eval_dir / EVAL_SUMMARY).exists():
        summary = load_summary(eval_dir)
    else:
        summary = evaluate_model(eval_config, model=model, tokenizer=tokenizer, judges=judges.get())
    if wants_downstream and not downstream_file.exists():
        write_downstream(run_downstream(model, tokenizer, config.downstream), folder)
    return _row(summary, _read_headline(downstream_file))


def _read_headline(path: Path) -> dict:
    return read_json(path)["headline"] if path.exists() else {}


def _row(summary: dict, downstream: dict) -> dict:
    from ..evaluation.runs import flat_numbers

    judges = summary.get("judges", {})
    return {"embedder": judges.get("embedder") or "none", "nli": judges.get("nli") or "none",
            **flat_numbers(summary), **{f"downstream/{k}": v for k, v in downstream.items()}}


def run_real_world(config: RealWorldConfig, judges=None) -> Path:
    """Score the target, unlearn, score the result; returns the output folder."""
    from ..evaluation.callback import epoch_evaluation
    from ..evaluation.evaluate import build_sets
    from ..judges.loading import LazyJudges
    from ..methods import get_method
    from ..training.run import unlearn

    get_method(config.unlearn.method)  # an unknown method fails before the target is scored
    check_data(config)
    output_dir = Path(config.output_dir)
    target_path = config.unlearn.model.name_or_path
    build_sets(real_world_evaluation_config(config, target_path, output_dir))  # bad evaluation files fail now
    claim_output_folder(output_dir, config, "real-world")
    lazy = LazyJudges(config.unlearn.evaluation.judges, judges)
    rows = []
    if config.evaluate_target:
        rows.append({"model": TARGET, **score_model(config, target_path, output_dir / TARGET, lazy)})
    run = run_config(config)
    folder = unlearn(run, epoch_evaluation(run))
    rows.append({"model": run.method, **score_model(config, str(folder / "model"), folder, lazy)})
    write_results(rows, output_dir)
    return output_dir


def write_results(rows: list[dict], output_dir: Path) -> None:
    """results.csv (every column) and results.md (MU, FE and the downstream scores)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    atomic_write_text(output_dir / "results.csv", csv_text(columns, rows))
    shown = ["model", "MU", "FE"] + [c for c in columns if c.startswith("downstream/")] + ["embedder", "nli"]
    table = markdown_table(shown, rows, titles={c: c.replace("downstream/", "") for c in shown})
    atomic_write_text(output_dir / "results.md", table)
    logger.info(table.rstrip("\n"))

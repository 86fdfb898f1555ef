"""Real-world unlearning (SPEC §4): forget real people (or any entities), keep their neighbours.

The forget set is every entity of ``forget`` at once (all task ids), the retain set is the
neighbour set, and each model (the target, then the unlearned one) is scored twice: on the QA
sets as SPEC §5 real-world (the evaluator's ``real_world`` scenario: neighbour and forget) and
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

import csv
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

from ..config import RealWorldConfig
from ..errors import UserError
from ..io import atomic_write_text
from .common import claim_output_folder

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


def evaluation_config(config: RealWorldConfig, model_path: str, output_dir: Path):
    """SPEC §5 real-world: neighbour plays retain, forget plays forget, every person at once."""
    from ..evaluation.evaluate import resolve_config

    evaluation = config.unlearn.evaluation
    data = replace(evaluation.data, source=evaluation.data.source or config.unlearn.data.source,
                   forget=evaluation.data.forget or config.unlearn.data.forget,
                   task_id=evaluation.data.task_id if evaluation.data.task_id is not None else [])
    model = replace(config.unlearn.model, name_or_path=model_path)
    return resolve_config(replace(evaluation, scenario="real_world", model=model, data=data, output_dir=str(output_dir)))


def _load_for_scoring(model_config):
    import torch

    from ..training.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_config)
    model = load_model(model_config)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model.eval(), tokenizer


def score_model(config: RealWorldConfig, model_path: str, folder: Path, judges) -> dict:
    """QA evaluation and downstream scores of one model (each skipped when already on disk)."""
    from ..evaluation.downstream import run_downstream, write_downstream
    from ..evaluation.evaluate import SUMMARY, evaluate_model, load_summary

    eval_dir = folder / "eval"
    downstream_file = folder / DOWNSTREAM_FILE
    wants_downstream = config.downstream.enabled and config.downstream.tasks
    if (eval_dir / SUMMARY).exists() and (downstream_file.exists() or not wants_downstream):
        return _row(load_summary(eval_dir), _read_headline(downstream_file))
    eval_config = evaluation_config(config, model_path, eval_dir)
    model, tokenizer = _load_for_scoring(eval_config.model)
    if (eval_dir / SUMMARY).exists():
        summary = load_summary(eval_dir)
    else:
        summary = evaluate_model(eval_config, model=model, tokenizer=tokenizer, judges=judges.get())
    if wants_downstream and not downstream_file.exists():
        write_downstream(run_downstream(model, tokenizer, config.downstream), folder)
    return _row(summary, _read_headline(downstream_file))


def _read_headline(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))["headline"] if path.exists() else {}


def _row(summary: dict, downstream: dict) -> dict:
    from ..evaluation.evaluate import flat_numbers

    judges = summary.get("judges", {})
    return {"embedder": judges.get("embedder") or "none", "nli": judges.get("nli") or "none",
            **flat_numbers(summary), **{f"downstream/{k}": v for k, v in downstream.items()}}


class _LazyJudges:
    """Loaded at the first QA evaluation that needs them, then shared."""

    def __init__(self, config, judges=None):
        self.config, self.judges = config, judges

    def get(self):
        if self.judges is None:
            from ..evaluation.evaluate import Judges

            self.judges = Judges.load(self.config)
        return self.judges


def run_real_world(config: RealWorldConfig, judges=None) -> Path:
    """Score the target, unlearn, score the result; returns the output folder."""
    from ..evaluation.evaluate import build_sets
    from ..training.run import unlearn

    check_data(config)
    output_dir = Path(config.output_dir)
    target_path = config.unlearn.model.name_or_path
    build_sets(evaluation_config(config, target_path, output_dir))  # bad evaluation files fail now
    claim_output_folder(output_dir, config, "real-world")
    lazy = _LazyJudges(config.unlearn.evaluation.judges, judges)
    rows = []
    if config.evaluate_target:
        rows.append({"model": TARGET, **score_model(config, target_path, output_dir / TARGET, lazy)})
    run = run_config(config)
    folder = unlearn(run)
    rows.append({"model": run.method, **score_model(config, str(folder / "model"), folder, lazy)})
    write_results(rows, output_dir)
    return output_dir


def write_results(rows: list[dict], output_dir: Path) -> None:
    """results.csv (every column) and results.md (MU, FE and the downstream scores)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(output_dir / "results.csv", buffer.getvalue())
    shown = ["model", "MU", "FE"] + [c for c in columns if c.startswith("downstream/")] + ["embedder", "nli"]
    lines = ["| " + " | ".join(c.replace("downstream/", "") for c in shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in shown) + " |")
    atomic_write_text(output_dir / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def _cell(value: Optional[object]) -> str:
    if value is None or value == "":
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)

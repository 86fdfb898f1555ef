"""Evaluation during unlearning: the per-epoch trajectories the paper plots.

With ``eval_every_epoch=true`` an unlearning run evaluates its in-memory model before the first
step (epoch 0: the target) and at the end of every epoch:

    OUTPUT_DIR/eval/epoch_K/      records, summary.json, config.yaml of epoch K
    OUTPUT_DIR/eval/results.csv   one row per epoch (column ``epoch``): the trajectory

An epoch already evaluated (a resumed run) is not evaluated again. Only the main process
evaluates; the others wait at the Trainer's next synchronisation.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from transformers import TrainerCallback

from ..config import UnlearnConfig, to_dict
from .evaluate import RESULTS_CSV, SUMMARY, Judges, build_sets, evaluate_model, resolve_data

EVAL_DIR = "eval"


def epoch_number(epoch: float) -> int | float:
    """1.0 -> 1; a fractional end (training.epochs=2.5) keeps two decimals."""
    return int(round(epoch)) if abs(epoch - round(epoch)) < 1e-6 else round(epoch, 2)


class EpochEvaluationCallback(TrainerCallback):
    def __init__(self, config, tokenizer, output_dir: str | Path):
        self.config = config  # an EvaluateConfig with its data resolved
        self.tokenizer = tokenizer
        self.folder = Path(output_dir) / EVAL_DIR
        self.judges = None  # loaded at the first evaluation, kept for the next ones

    @classmethod
    def for_run(cls, run: UnlearnConfig, tokenizer, output_dir: str | Path) -> "EpochEvaluationCallback":
        """Evaluate with ``run.evaluation``; its empty data keys take the run's own data."""
        evaluation = run.evaluation
        data = resolve_data(evaluation.data, evaluation.scenario, to_dict(run.data))
        config = replace(evaluation, data=data, model=run.model)
        build_sets(config)  # a bad evaluation file fails now, not after the first epoch
        return cls(config, tokenizer, output_dir)

    def evaluate(self, model, epoch: int) -> None:
        target = self.folder / f"epoch_{epoch}"
        if (target / SUMMARY).exists():
            return
        if self.judges is None:
            self.judges = Judges.load(self.config.judges)
        config = replace(self.config, output_dir=str(target))
        evaluate_model(config, model=model, tokenizer=self.tokenizer, judges=self.judges,
                       extra={"epoch": epoch}, csv_path=self.folder / RESULTS_CSV)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and state.global_step == 0:
            self.evaluate(model, 0)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            self.evaluate(model, epoch_number(state.epoch))

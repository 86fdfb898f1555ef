"""Evaluation during unlearning: the per-epoch trajectories the paper plots.

With ``eval_every_epoch=true`` an unlearning run evaluates its in-memory model before the first
step (epoch 0: the target) and at the end of every epoch:

    OUTPUT_DIR/eval/epoch_K/      records, summary.json, config.yaml of epoch K
    OUTPUT_DIR/eval/results.csv   one row per epoch (column ``epoch``): the trajectory

An epoch already evaluated (a resumed run) is not evaluated again. Under torchrun every process
takes part, as in ``unlearnlm evaluate`` (evaluation/shards.py): each generates and scores a share
of the rows (and judges its generations), the main process writes. Training does not know about
evaluation: whoever starts the run (the CLI, the Python API, a scenario) hands these callbacks
to ``training.run.unlearn`` (``epoch_evaluation(config)``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

from transformers import TrainerCallback

from ..config import UnlearnConfig
from ..judges.loading import Judges, LazyJudges
from .evaluate import build_sets, evaluate_model, run_evaluation_config
from .runs import EVAL_SUMMARY, RESULTS_CSV
from .shards import from_main, processes

EVAL_DIR = "eval"


def epoch_number(epoch: float) -> int | float:
    """1.0 -> 1; a fractional end (training.epochs=2.5) keeps two decimals."""
    return int(round(epoch)) if abs(epoch - round(epoch)) < 1e-6 else round(epoch, 2)


class EpochEvaluationCallback(TrainerCallback):
    """Evaluates the model being trained at the start and at every epoch's end (on every process).
    The tokenizer is the Trainer's own (its ``processing_class``)."""

    def __init__(self, config, output_dir: str | Path, judges: Optional[Judges] = None):
        self.config = config  # an EvaluateConfig with its data resolved
        self.folder = Path(output_dir) / EVAL_DIR
        self.judges = LazyJudges(config.judges, judges)  # loaded at the first evaluation, then kept

    @classmethod
    def for_run(cls, run: UnlearnConfig, judges: Optional[Judges] = None) -> EpochEvaluationCallback:
        """Evaluate with ``run.evaluation``; its empty data keys take the run's own data."""
        config = run_evaluation_config(run, run.model.name_or_path, run.output_dir)
        build_sets(config)  # a bad evaluation file fails now, not after the first epoch
        return cls(config, run.output_dir, judges)

    def evaluate(self, model, tokenizer, epoch: int) -> None:
        group = processes()
        target = self.folder / f"epoch_{epoch}"
        if from_main((target / EVAL_SUMMARY).exists(), group):  # every process skips it, or none
            return
        config = replace(self.config, output_dir=str(target))
        evaluate_model(config, model=model, tokenizer=tokenizer, judges=self.judges.get(),
                       extra={"epoch": epoch}, csv_path=self.folder / RESULTS_CSV)

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step == 0:
            self.evaluate(model, processing_class, 0)

    def on_epoch_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        self.evaluate(model, processing_class, epoch_number(state.epoch))


def epoch_evaluation(run: UnlearnConfig, judges: Optional[Judges] = None) -> list[TrainerCallback]:
    """The callbacks an unlearning run of ``run`` is given: the per-epoch evaluation when
    ``run.eval_every_epoch`` asks for it, else none."""
    return [EpochEvaluationCallback.for_run(run, judges)] if run.eval_every_epoch else []

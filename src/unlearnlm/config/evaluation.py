"""The evaluation's settings (the evaluate command, and the section every run embeds): judges,
bootstrap intervals, evaluation sets, privacy metrics; declared, defaulted and checked here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from .checks import _require
from .model import ModelConfig


@dataclass
class JudgesConfig:
    # "auto": the reference model when it loads, else the offline fallback (see judges.loading);
    # "none": skip the metric; or a sentence-transformers / transformers model name or folder.
    embedder: str = "auto"
    # "offline" = only the offline judge of judges.offline.
    nli: str = "auto"
    embedder_batch_size: int = 64
    nli_batch_size: int = 32

    def validate(self, prefix: str = "judges.") -> None:
        for name in ("embedder_batch_size", "nli_batch_size"):
            _require(getattr(self, name) >= 1, f"{prefix}{name} must be at least 1, got {getattr(self, name)}")
        for name in ("embedder", "nli"):
            _require(bool(str(getattr(self, name)).strip()), f"{prefix}{name} is empty; use auto, none or a model")


MIN_BOOTSTRAP_SAMPLES = 100  # fewer resamples give percentile intervals that are mostly noise


@dataclass
class BootstrapConfig:
    # Resamples of every set's rows for the intervals (computed from the records, no model);
    # 0 = no intervals.
    samples: int = 1000
    seed: int = 0
    level: float = 0.95

    def validate(self, prefix: str = "", allow_none: bool = True) -> None:
        """The one check of these settings, wherever they sit (an evaluation's ``bootstrap.``, where
        0 means no intervals; the ``intervals`` command's own, ``allow_none=False``)."""
        floor = f"at least {MIN_BOOTSTRAP_SAMPLES}"
        _require((allow_none and self.samples == 0) or self.samples >= MIN_BOOTSTRAP_SAMPLES,
                 f"{prefix}samples must be {'zero (no intervals) or ' if allow_none else ''}{floor} "
                 f"(fewer resamples give intervals that are mostly noise), got {self.samples}")
        _require(math.isfinite(self.level) and 0 < self.level < 1,
                 f"{prefix}level must be between 0 and 1, got {self.level}")


@dataclass
class EvalDataConfig:
    # Empty means: the unlearning run's own (when evaluating during training, or a run folder),
    # else locuslab/TOFU, forget01 (real_world: forget) and task 1 (real_world: every task).
    source: Optional[str] = None
    forget: Optional[str] = None
    task_id: Optional[list[str]] = None
    # Your own QA files (JSON/JSONL: question, answer[, paraphrased_answer, perturbed_answer]):
    # forget-like sets (Forget Efficacy) and retain-like sets (Model Utility).
    custom_forget: list[str] = field(default_factory=list)
    custom_retain: list[str] = field(default_factory=list)
    # Rows no model ever trained on, for the membership-inference AUCs and privleak: TOFU's
    # holdout01 / holdout05 / holdout10 (a split of `source`), or a file or folder of QA rows.
    holdout: Optional[str] = None

    def validate(self, prefix: str = "data.") -> None:
        _require(self.holdout is None or self.holdout.strip() != "", f"{prefix}holdout may not be blank")


@dataclass
class PrivacyConfig:
    # Keep the ground truth's per-token values in the loss pass (every privacy metric reads
    # them); false = the paper's metrics alone.
    keep_token_values: bool = True
    # Min-K% and Min-K%++ average the lowest share k of an answer's token scores.
    min_k: float = 0.4
    # drop: Min-K%, Min-K%++, exact memorisation and extraction strength leave out the answer's
    # final label, its EOS (open-unlearning's rule); keep: they read it too.
    eos: str = "drop"
    # Extraction strength of an answer whose last token is wrong: 1/n (open-unlearning's rule);
    # false: 0.
    extraction_floor: bool = True
    # The Reference MIA score (LOSS minus a reference model's LOSS of the same row) reads the
    # per-row losses of that model's evaluation of the same sets (its output folder); empty =
    # retain_eval's.
    reference_eval: Optional[str] = None
    # GradNorm MIA score: the p of the gradient norm (1, 2 or inf); one backward per forget and
    # holdout row. Empty = off.
    grad_norm_p: Optional[str] = None

    def validate(self, prefix: str = "privacy.") -> None:
        _require(0 < self.min_k <= 1, f"{prefix}min_k must be in (0, 1], got {self.min_k}")
        _require(self.eos in ("drop", "keep"), f"{prefix}eos must be drop or keep, got {self.eos}")
        _require(self.grad_norm_p in (None, "1", "2", "inf"),
                 f"{prefix}grad_norm_p must be 1, 2 or inf, got {self.grad_norm_p}")


@dataclass
class EvaluateConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    # tofu | real_world | custom (only data.custom_* files)
    scenario: str = "tofu"
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    # First N rows of each set (the reference: 300); 0 = all.
    ds_size: int = 300
    # Prompt + generated tokens, at most (the reference: 200).
    max_length: int = 200
    # unlearnlm | open-unlearning: also open-unlearning's TOFU evaluation, its numbers under its names
    # (TOFU_SUMMARY.json), from the same pass run under its conventions: its prompt format, attention
    # mask (token != pad) and 200 new tokens (max_length unused), no shared prompts (docs/formulas.md).
    suite: str = "unlearnlm"
    # A greedy batch runs as many steps as its longest answer: fewer, larger batches take fewer
    # steps (docs/performance.md, "Measurements behind the defaults").
    generation_batch_size: int = 64
    loss_batch_size: int = 16
    # Batches of similar length drawn from every set at once (less padding, fewer generation
    # steps). false = set by set, batches in set order, as the reference.
    group_by_length: bool = True
    # Pad every loss sequence to this many tokens (the reference: 500); empty = per batch only.
    pad_to: Optional[int] = None
    # Project onto the vocabulary only where answers are; false = every position (the reference).
    answer_logits_only: bool = True
    # Run a question's prompt once for all its answers (one row: prompt, then each answer behind
    # a mask that hides the others): the prompt is computed once (docs/performance.md). Same values up to
    # float rounding; false = one whole sequence per answer (always so with pad_to, or flash attention).
    share_prompts: bool = True
    judges: JudgesConfig = field(default_factory=JudgesConfig)
    # Forget Quality and privleak: a retain model's evaluation (its output folder or forget records file).
    retain_eval: Optional[str] = None
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    output_dir: str = "runs/eval"

    def validate(self, prefix: str = "", with_model: bool = True) -> None:
        """``prefix``: where this section sits ("evaluation." in a run's config; "" for the
        evaluate command). An embedded evaluation scores its run's model (``with_model=False``:
        the run refuses any other, after this)."""
        if with_model:
            self.model.validate(f"{prefix}model.")
        _require(self.scenario in ("tofu", "real_world", "custom"),
                 f"unknown {prefix}scenario '{self.scenario}'; valid: tofu, real_world, custom")
        _require(self.ds_size >= 0, f"{prefix}ds_size must be zero (all rows) or more, got {self.ds_size}")
        _require(self.suite in ("unlearnlm", "open-unlearning"),
                 f"unknown {prefix}suite '{self.suite}'; valid: unlearnlm, open-unlearning")
        _require(self.suite != "open-unlearning" or self.scenario == "tofu",
                 f"{prefix}suite=open-unlearning is its TOFU evaluation: it needs scenario=tofu, got {self.scenario}")
        _require(self.max_length >= 2, f"{prefix}max_length must be at least 2, got {self.max_length}")
        for name in ("generation_batch_size", "loss_batch_size"):
            _require(getattr(self, name) >= 1, f"{prefix}{name} must be at least 1, got {getattr(self, name)}")
        _require(self.pad_to is None or self.pad_to >= 1, f"{prefix}pad_to must be at least 1, got {self.pad_to}")
        self.bootstrap.validate(prefix=f"{prefix}bootstrap.")
        self.judges.validate(f"{prefix}judges.")
        self.privacy.validate(f"{prefix}privacy.")
        self.data.validate(f"{prefix}data.")

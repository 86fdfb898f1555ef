"""The training recipe (training.*) and the fine-tuning command's config: declared, defaulted and
checked here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from .checks import _finite, _require
from .model import LoraConfig, ModelConfig


@dataclass
class TrainingConfig:
    lr: float = 1e-5
    epochs: float = 5.0
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    # Warm-up length in epochs (the reference: one epoch of steps).
    warmup_epochs: float = 1.0
    weight_decay: float = 0.01
    # AdamW as one fused kernel: the same update as adamw_torch's, much faster on a CPU
    # (docs/performance.md, "Measurements behind the defaults").
    optimizer: str = "adamw_torch_fused"
    lr_scheduler: str = "linear"
    seed: int = 1001
    # "auto": bf16 where the hardware supports it, fp32 otherwise.
    bf16: str = "auto"
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    # Forward forget, retain and refusal sequences of a step as one batch (same numbers). Off by
    # default: on a CPU it is slower (the kinds pad to a common length); see docs/performance.md.
    fuse_forward: bool = False
    # Less padding. Unlearning: a step's rows (a random set, as without it) are ordered by length
    # so its micro-batches pad little. Fine-tuning: rows of similar length share a step.
    group_by_length: bool = True
    # NPO/DPO: compute the frozen reference's per-sequence NLLs once before training, then free it.
    precompute_reference_nll: bool = True
    # Project onto the vocabulary only the positions a loss reads (the answers; every position for
    # KL and ME's unmasked questions): the same losses, less work. false = every position.
    answer_logits_only: bool = True
    progress: bool = True
    # Checkpoints let a killed run resume where it was (rerun the same command): one is kept, written
    # every `save_steps` optimiser steps (0 = never by count) and whenever `save_minutes` have
    # passed since the last one (0 = never by time). A checkpoint holds weights and optimiser
    # state (~12 bytes a parameter in full fine-tuning): by time, short runs pay nothing and a
    # long one loses at most half an hour to a kill.
    save_steps: int = 0
    save_minutes: float = 30.0
    # Stop when the forget loss crosses this bound (GA's collapse); empty = never.
    stop_forget_loss_below: Optional[float] = None
    stop_forget_loss_above: Optional[float] = None
    # Experiment tracking through transformers: "none", "all" (every installed backend), or
    # backends by name, comma-separated ("tensorboard", "wandb", "mlflow", ...). TensorBoard writes
    # into OUTPUT_DIR/tensorboard unless TENSORBOARD_LOGGING_DIR says otherwise.
    report_to: str = "none"

    def validate(self, prefix: str = "training.") -> None:
        """Ranges and names of the training options, checked before any model is loaded."""
        _require(math.isfinite(self.lr) and self.lr > 0, f"{prefix}lr must be a positive number, got {self.lr}")
        _require(math.isfinite(self.epochs) and self.epochs > 0,
                 f"{prefix}epochs must be a positive number, got {self.epochs}")
        _require(self.per_device_batch_size >= 1,
                 f"{prefix}per_device_batch_size must be at least 1, got {self.per_device_batch_size}")
        _require(self.gradient_accumulation_steps >= 1,
                 f"{prefix}gradient_accumulation_steps must be at least 1, got {self.gradient_accumulation_steps}")
        _require(math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0,
                 f"{prefix}warmup_epochs must be zero or more, got {self.warmup_epochs}")
        _require(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
                 f"{prefix}weight_decay must be zero or more, got {self.weight_decay}")
        _require(self.logging_steps >= 1, f"{prefix}logging_steps must be at least 1, got {self.logging_steps}")
        _require(self.save_steps >= 0, f"{prefix}save_steps must be zero or more, got {self.save_steps}")
        _require(math.isfinite(self.save_minutes) and self.save_minutes >= 0,
                 f"{prefix}save_minutes must be zero or more, got {self.save_minutes}")
        _require(str(self.bf16).lower() in ("auto", "true", "false", "1", "0", "yes", "no"),
                 f"{prefix}bf16 must be auto, true or false, got '{self.bf16}'")
        for name in ("stop_forget_loss_below", "stop_forget_loss_above"):
            _require(_finite(getattr(self, name)), f"{prefix}{name} must be a finite number, got {getattr(self, name)}")
        if self.stop_forget_loss_below is not None and self.stop_forget_loss_above is not None:
            _require(self.stop_forget_loss_below < self.stop_forget_loss_above,
                     f"{prefix}stop_forget_loss_below must be less than {prefix}stop_forget_loss_above")
        from transformers.trainer_utils import SchedulerType
        from transformers.training_args import OptimizerNames

        optimizers = [o.value for o in OptimizerNames]
        _require(self.optimizer in optimizers,
                 f"unknown {prefix}optimizer '{self.optimizer}'; valid: {', '.join(optimizers)}")
        _require(not _needs_missing_bitsandbytes(self.optimizer),
                 f"{prefix}optimizer '{self.optimizer}' needs the bitsandbytes package (pip install bitsandbytes); "
                 "adamw_torch needs nothing extra")
        validate_report_to(self.report_to)
        schedulers = [s.value for s in SchedulerType]
        _require(self.lr_scheduler in schedulers,
                 f"unknown {prefix}lr_scheduler '{self.lr_scheduler}'; valid: {', '.join(schedulers)}")


def report_backends(report_to: str) -> list[str]:
    """``training.report_to`` as transformers' list of backends ("all" stays "all")."""
    names = [name.strip().lower() for name in str(report_to).split(",") if name.strip()]
    return [] if names in ([], ["none"]) else names


def validate_report_to(report_to: str) -> None:
    """Known backends that are installed; a missing one fails now, not at the first logged step."""
    names = report_backends(report_to)
    if names == ["all"] or not names:
        return
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    for name in names:
        _require(name in INTEGRATION_TO_CALLBACK,
                 f"unknown training.report_to '{name}'; valid: none, all, {', '.join(INTEGRATION_TO_CALLBACK)}")
        _require(name in get_available_reporting_integrations(),
                 f"training.report_to '{name}' needs its package, which is not installed (pip install {name})")


def _needs_missing_bitsandbytes(optimizer: str) -> bool:
    """The reference's paged_adamw_32bit and its kin fail only once training starts otherwise."""
    try:
        from transformers.trainer_optimizer import _BITSANDBYTES_OPTIMIZERS
        from transformers.utils import is_bitsandbytes_available
    except ImportError:  # a private list: if it moves, the Trainer reports it later instead
        return False
    return optimizer in {o.value for o in _BITSANDBYTES_OPTIMIZERS} and not is_bitsandbytes_available()


@dataclass
class FinetuneDataConfig:
    source: str = "locuslab/TOFU"
    # Splits of `source` or JSON/JSONL paths, concatenated. TOFU's full set (docs/formulas.md#data):
    # retain90 + every task of forget01.
    train: list[str] = field(default_factory=lambda: ["retain90", "forget01"])
    # Drop the rows of these tasks (e.g. ["1"] makes the retain model of forget01 task 1).
    exclude_task_id: list[str] = field(default_factory=list)
    max_length: int = 512

    def validate(self, prefix: str = "data.") -> None:
        _require(self.max_length >= 1, f"{prefix}max_length must be at least 1, got {self.max_length}")


@dataclass
class FinetuneConfig:
    output_dir: str = "runs/finetune"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)


# ---- scenarios (docs/formulas.md#scenarios): continual, real-world, forget sets built from the model ----------

    def validate(self) -> None:
        self.model.validate()
        self.training.validate()
        self.lora.validate()
        self.data.validate()

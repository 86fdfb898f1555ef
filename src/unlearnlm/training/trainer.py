"""transformers' Trainer, taught the unlearning objectives.

The Trainer brings the optimiser, schedule, gradient accumulation, mixed precision, gradient
checkpointing, checkpoint/resume and multi-process training (DDP, DeepSpeed, FSDP through
accelerate). This module adds only the loss (forget loss and regulariser, logged separately),
the frozen reference model, and two guards: a non-finite loss stops the run, and an optional
bound on the forget loss stops it early.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..config import TrainingConfig
from ..errors import UserError
from ..methods import LossContext, Method, Reference


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def training_arguments(
    config: TrainingConfig,
    output_dir: str | Path,
    examples_per_epoch: int,
    world_size: int = 1,
) -> TrainingArguments:
    """Map our training config onto TrainingArguments (warm-up given in epochs)."""
    per_step = config.per_device_batch_size * config.gradient_accumulation_steps * max(world_size, 1)
    steps_per_epoch = max(1, math.ceil(examples_per_epoch / per_step))
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    bf16 = _use_bf16(config.bf16)
    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=config.lr,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=warmup_steps,
        weight_decay=config.weight_decay,
        optim=config.optimizer,
        lr_scheduler_type=config.lr_scheduler,
        seed=config.seed,
        data_seed=config.seed,
        bf16=bf16,
        gradient_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps > 0 else "no",
        save_steps=config.save_steps if config.save_steps > 0 else 500,
        save_total_limit=2 if config.save_steps > 0 else None,
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=not config.progress,
        ddp_find_unused_parameters=False,
    )


def _use_bf16(setting: str) -> bool:
    setting = str(setting).lower()
    if setting in ("true", "1", "yes"):
        return True
    if setting in ("false", "0", "no"):
        return False
    if setting != "auto":
        raise UserError(f"training.bf16 must be auto, true or false, got '{setting}'")
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


class EpochCallback(TrainerCallback):
    """Tells the dataset which epoch it is, so its random companions change per epoch."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch or 0))


class JsonlLogCallback(TrainerCallback):
    """Appends every log entry (step, loss, forget_loss, regularization_loss, lr) to a JSONL file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        entry = {"step": state.global_step, "epoch": state.epoch, **logs}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()


class UnlearningTrainer(Trainer):
    # Our loss is a per-batch mean: the Trainer divides it by the accumulation steps itself.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args,
        method: Method,
        forget_coeff: float,
        regularization_coeff: float,
        beta: float,
        reference_model: Optional[torch.nn.Module] = None,
        fuse_forward: bool = True,
        stop_forget_loss_below: Optional[float] = None,
        stop_forget_loss_above: Optional[float] = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.method = method
        self.forget_coeff = forget_coeff
        self.regularization_coeff = regularization_coeff
        self.beta = beta
        self.fuse_forward = fuse_forward
        self.stop_below = stop_forget_loss_below
        self.stop_above = stop_forget_loss_above
        self.reference = Reference(self._prepare_reference(reference_model)) if reference_model is not None else None
        self._component_sums = {"forget_loss": 0.0, "regularization_loss": 0.0}
        self._component_count = 0
        self.stopped_early: Optional[str] = None

    def _prepare_reference(self, model: torch.nn.Module) -> torch.nn.Module:
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        if self.is_deepspeed_enabled:
            # Under ZeRO-3 the reference must be partitioned like the policy, or each process
            # would hold a full copy; an inference-only engine does that.
            import deepspeed

            ds_config = dict(self.accelerator.state.deepspeed_plugin.deepspeed_config)
            stage = ds_config.get("zero_optimization", {}).get("stage", 0)
            if stage != 3:
                ds_config["zero_optimization"] = {"stage": 0}
            for key in ("optimizer", "scheduler"):
                ds_config.pop(key, None)
            engine, *_ = deepspeed.initialize(model=model, config=ds_config)
            engine.eval()
            return engine
        if self.is_fsdp_enabled:
            return self.accelerator.prepare_model(model, evaluation_mode=True)
        return model.to(self.args.device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ctx = LossContext(model, inputs, reference=self.reference, beta=self.beta)
        if self.fuse_forward:
            ctx.prefetch(self.method.inputs)
        forget_loss = self.method.forget.fn(ctx)
        loss = self.forget_coeff * forget_loss
        regularization_loss = torch.zeros((), device=forget_loss.device)
        if self.method.regularizer is not None:
            regularization_loss = self.method.regularizer.fn(ctx)
            loss = loss + self.regularization_coeff * regularization_loss
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss.item()} at step {self.state.global_step} "
                f"(forget loss {forget_loss.item():.4g}, regulariser {regularization_loss.item():.4g}); "
                "training stopped; lower training.lr or use another method"
            )
        self._component_sums["forget_loss"] += forget_loss.detach().item()
        self._component_sums["regularization_loss"] += regularization_loss.detach().item()
        self._component_count += 1
        value = forget_loss.item()
        if (self.stop_below is not None and value < self.stop_below) or (
            self.stop_above is not None and value > self.stop_above
        ):
            self.control.should_training_stop = True
            self.stopped_early = f"forget loss {value:.4g} crossed its bound at step {self.state.global_step}"
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if self._component_count and "loss" in logs:
            # Averages since the last log, then over processes (log runs on every process).
            averages = torch.tensor(
                [self._component_sums["forget_loss"], self._component_sums["regularization_loss"]],
                device=self.args.device,
            ) / self._component_count
            averages = self.accelerator.reduce(averages, reduction="mean")
            logs["forget_loss"] = round(averages[0].item(), 6)
            logs["regularization_loss"] = round(averages[1].item(), 6)
            self._component_sums = {k: 0.0 for k in self._component_sums}
            self._component_count = 0
        super().log(logs, *args, **kwargs)

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
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..config import TrainingConfig, report_backends
from ..data.batches import LengthGroupedSampler, UnlearningCollator, UnlearningDataset, length_batches, pad_encoded
from ..errors import UserError
from ..methods import LossContext, Method, Reference
from .models import non_finite_part


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def training_arguments(
    config: TrainingConfig,
    output_dir: str | Path,
    examples_per_epoch: int,
    world_size: int = 1,
) -> TrainingArguments:
    """Map our training config onto TrainingArguments (warm-up given in epochs)."""
    check_learning_rates(config, examples_per_epoch, world_size)
    warmup_steps = warmup_step_count(config, examples_per_epoch, world_size)
    bf16 = _use_bf16(config.bf16)
    if "tensorboard" in report_backends(config.report_to) or report_backends(config.report_to) == ["all"]:
        _tensorboard_into(Path(output_dir).parent / "tensorboard")
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
        activation_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps,
        # CheckpointCallback decides when to save (by steps and by time); one checkpoint is kept.
        save_strategy="no",
        save_total_limit=1,
        report_to=report_backends(config.report_to) or "none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        # Without a GPU, multi-process runs (torchrun, accelerate launch) use gloo on the CPU.
        use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=not config.progress,
        ddp_find_unused_parameters=False,
    )


_TENSORBOARD_DIR = "TENSORBOARD_LOGGING_DIR"
_tensorboard_dir_set: Optional[str] = None


def _tensorboard_into(folder: Path) -> None:
    """TensorBoard's events go into the run folder (the checkpoints folder, transformers' default,
    is removed when the run ends), unless the user named a folder in TENSORBOARD_LOGGING_DIR."""
    global _tensorboard_dir_set
    if os.environ.get(_TENSORBOARD_DIR) in (None, _tensorboard_dir_set):
        _tensorboard_dir_set = os.environ[_TENSORBOARD_DIR] = str(folder)


def _use_bf16(setting: str) -> bool:
    setting = str(setting).lower()
    if setting in ("true", "1", "yes"):
        return True
    if setting in ("false", "0", "no"):
        return False
    if setting != "auto":
        raise UserError(f"training.bf16 must be auto, true or false, got '{setting}'")
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@torch.no_grad()
def precompute_reference_nll(
    reference_model: torch.nn.Module,
    dataset: UnlearningDataset,
    collator: UnlearningCollator,
    kinds: tuple[str, ...],
    epochs: int,
    batch_size: int,
    device,
) -> dict[str, dict]:
    """{kind: {sequence: NLL under the reference}} for every ``kinds`` sequence of the run.

    NPO and DPO read only per-sequence reference NLLs, and the reference is frozen, so these are
    the numbers a reference forward at every step would give (the same model, dtype and labels;
    only the padding differs, which right padding leaves out of every real token's logits).
    One batched pass replaces a forward per step, and the model can be freed before training.
    """
    reference = Reference(reference_model.to(device).eval())
    tables: dict[str, dict] = {}
    for kind in kinds:
        sequences = dataset.sequences(kind, epochs)
        table = {}
        # Batches of similar length pad little.
        for batch in length_batches([len(s.input_ids) for s in sequences], batch_size, longest_first=False):
            chunk = [sequences[i] for i in batch]
            seq = pad_encoded(chunk, collator.pad_token_id, collator.mask_prompt(kind))
            nll = reference.nll({name: tensor.to(device) for name, tensor in seq.items()})
            table.update(zip(chunk, nll.float().cpu().tolist()))
        tables[kind] = table
    return tables


class EpochCallback(TrainerCallback):
    """Tells the dataset which epoch it is, so its random companions change per epoch."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is the epoch begun (0, 1, ...) or, resuming mid-epoch, a fraction of it.
        self.dataset.set_epoch(math.floor((state.epoch or 0) + 1e-9))


class CheckpointCallback(TrainerCallback):
    """Asks the Trainer for a checkpoint every ``save_steps`` steps and every ``save_minutes``.

    Saves happen only at logged steps, so a resumed run's log windows match an uninterrupted
    run's, and never at the last step, whose weights the run saves as its result anyway.
    """

    def __init__(self, save_steps: int, save_minutes: float, probe: Optional[list[int]] = None):
        self.save_steps = save_steps
        self.save_seconds = save_minutes * 60
        self.last_save = time.monotonic()
        self.probe = probe  # token ids of a forget row: a checkpoint is kept only if its logits there are finite

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_save = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        due = (self.save_steps > 0 and step % self.save_steps == 0) or (
            self.save_seconds > 0 and time.monotonic() - self.last_save >= self.save_seconds
        )
        # A run about to stop saves its model instead (and a checkpoint past an early stop would
        # let a resumed run train on beyond it).
        control.should_save = (due and step % args.logging_steps == 0 and step < state.max_steps
                               and not control.should_training_stop)
        if control.should_save:
            # Checked before the checkpoint is kept, so "the last good checkpoint" is good.
            broken = (non_finite_part(kwargs["model"], self.probe) if self.probe is not None
                      else None if weights_are_finite(kwargs["model"]) else "weights")
            if broken:
                raise TrainingDiverged(f"the {broken} became NaN or infinite at step {step}; training stopped")
        return control

    def on_save(self, args, state, control, **kwargs):
        self.last_save = time.monotonic()


def weights_are_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point())


def probe_ids(dataset) -> list[int]:
    """The token ids of the run's first training sequence (an unlearning run's first forget
    row): where the finished model's and every kept checkpoint's logits must be finite."""
    item = dataset[0]
    if isinstance(item, dict):  # an unlearning example: {kind: sequence}
        item = item.get("forget", next(iter(item.values())))
    return list(item.input_ids)


def optimizer_steps(config: TrainingConfig, examples_per_epoch: int, world_size: int = 1) -> int:
    """The run's optimiser steps, counted as the Trainer counts them."""
    batches = math.ceil(examples_per_epoch / (config.per_device_batch_size * max(world_size, 1)))
    accumulation = config.gradient_accumulation_steps
    per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    return math.ceil(config.epochs * per_epoch)


def check_learning_rates(config: TrainingConfig, examples_per_epoch: int, world_size: int = 1) -> None:
    """A schedule whose learning rate is 0 at every optimiser step trains nothing: refused before
    any work. (A warm-up's first step has a learning rate of 0, so a one-step run with a warm-up
    is one.)"""
    from transformers import get_scheduler

    steps = optimizer_steps(config, examples_per_epoch, world_size)
    warmup = warmup_step_count(config, examples_per_epoch, world_size)
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=config.lr)
    schedule = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    for _ in range(steps):
        if optimizer.param_groups[0]["lr"] > 0:
            return
        optimizer.step()
        schedule.step()
    raise UserError(f"the learning rate is 0 at every one of the run's {steps} optimiser step(s) "
                    f"(training.lr_scheduler={config.lr_scheduler}, a warm-up of {warmup} step(s) from "
                    f"training.warmup_epochs={config.warmup_epochs:g}): the weights would not move; lower "
                    "training.warmup_epochs or train for more steps")


def warmup_step_count(config: TrainingConfig, examples_per_epoch: int, world_size: int = 1) -> int:
    """Warm-up steps: ``warmup_epochs`` epochs of optimiser steps."""
    per_step = config.per_device_batch_size * config.gradient_accumulation_steps * max(world_size, 1)
    return int(round(config.warmup_epochs * max(1, math.ceil(examples_per_epoch / per_step))))


def trainable_fingerprint(model: torch.nn.Module) -> Optional[list[tuple[float, float]]]:
    """(sum, norm) of every trainable parameter, accumulated in float64: equal before and after
    training only when no weight moved. None when the parameters are sharded (not whole here)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if any(p.numel() == 0 for p in trainable):
        return None
    with torch.no_grad():
        return [(float(p.sum(dtype=torch.float64)), float(torch.linalg.vector_norm(p, dtype=torch.float64)))
                for p in trainable]


def check_weights_moved(before: Optional[list], after: Optional[list], log_rows: list[dict]) -> None:
    """A run that left every weight as it was, or whose every logged gradient was zero (only the
    weight decay moved anything), is an error that says why."""
    rates = [row["learning_rate"] for row in log_rows if isinstance(row.get("learning_rate"), (int, float))]
    norms = {row["step"]: row["grad_norm"] for row in log_rows if isinstance(row.get("grad_norm"), (int, float))}
    # Judged only when every step was logged (training.logging_steps=1, the default).
    zero_gradients = bool(norms) and sorted(norms) == list(range(1, len(norms) + 1)) and not any(norms.values())
    unchanged = before is not None and after is not None and before == after
    if not (unchanged or zero_gradients):
        return
    if rates and all(r == 0 for r in rates):
        why = "the learning rate was 0 at every step (a warm-up as long as the run; lower training.warmup_epochs)"
    elif zero_gradients:
        why = ("every gradient was 0: no label token reached the loss (every label skipped or masked: see the "
               "method's settings, data.max_length and mask)")
    else:
        why = "no optimiser step changed a weight"
    moved = "no weight moved" if unchanged else "only the weight decay moved the weights"
    raise UserError(f"training did nothing: {moved}; {why}; the run's model is not written")


class DivergenceCallback(TrainerCallback):
    """Stops any Trainer (fine-tuning too) whose logged loss or gradient norm is NaN or infinite,
    before the step's weights can be checkpointed."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise TrainingDiverged(f"the {key.replace('_', ' ')} became {value} at step {state.global_step}; "
                                       "training stopped; lower training.lr or use another method")


class JsonlLogCallback(TrainerCallback):
    """Appends every log entry (step, loss, forget_loss, regularization_loss, lr) to a JSONL file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The end-of-training summary (runtime, mean loss) goes to train_summary.json instead:
        # the log holds only step rows, identical between an interrupted and a whole run.
        if not state.is_world_process_zero or not logs or "train_runtime" in logs:
            return
        entry = {"step": state.global_step, "epoch": state.epoch, **logs}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()


class ForgetLossBoundCallback(TrainerCallback):
    """Ends training after the step in which the forget loss crossed its bound."""

    def __init__(self, trainer: UnlearningTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        if self.trainer.stopped_early:
            control.should_training_stop = True
        return control


# ---- method state across steps (PDU's λ, RMU's c·u) ------------------------------------------

METHOD_STATE_FILE = "method_state.json"


class MethodStateCallback(TrainerCallback):
    """After every optimiser step, lets the method's state move (identically on every process)."""

    def __init__(self, trainer: UnlearningTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.method_state.after_step(
            state.epoch or 0.0, lambda t: self.trainer.accelerator.reduce(t.to(args.device), reduction="mean").cpu()
        )


# ---- parameter selection (RMU's trainable name patterns) -------------------------------------


def select_trainable(model: torch.nn.Module, patterns: list[str]) -> list[str]:
    """Train only the parameters whose names match one of ``patterns`` (regular expressions,
    searched); returns their names. A pattern that matches no trainable parameter is an error."""
    import re

    candidates = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    chosen = set()
    for pattern in patterns:
        matched = {name for name, _ in candidates if re.search(pattern, name)}
        if not matched:
            examples = ", ".join(name for name, _ in candidates[:4])
            raise UserError(f"trainable pattern '{pattern}' matches no parameter of the model (names look like: "
                            f"{examples}, ...)")
        chosen |= matched
    for name, parameter in candidates:
        parameter.requires_grad_(name in chosen)
    return sorted(chosen)


def freeze_unreached(model: torch.nn.Module, layer: int) -> list[str]:
    """Freeze the parameters that cannot change decoder block ``layer``'s output (later blocks,
    the final norm, an untied head): a loss on that output gives them no gradient, so training is
    the same, and DDP finds every trainable parameter used. Returns the names frozen."""
    from ..methods.losses import block_output

    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    probe = {"input_ids": torch.tensor([[0, 1]]), "attention_mask": torch.ones(1, 2, dtype=torch.long)}
    probe = {k: v.to(trainable[0][1].device) for k, v in probe.items()}
    hidden = block_output(model, probe, layer)
    grads = torch.autograd.grad(hidden.float().sum(), [p for _, p in trainable], allow_unused=True)
    frozen = [name for (name, p), g in zip(trainable, grads, strict=True) if g is None]
    for name, p in trainable:
        if name in frozen:
            p.requires_grad_(False)
    return frozen


class FinetuneTrainer(Trainer):
    """Fine-tuning whose optimiser steps hold rows of similar length (``training.group_by_length``).

    Rows are shuffled, then sorted by length within windows of ``LENGTH_WINDOW_STEPS`` steps, so
    a step pads little (docs/performance.md). Unlike
    unlearning's grouping, which keeps each step's random rows and only orders them, this
    changes which rows share a step, as transformers' own group_by_length does."""

    LENGTH_WINDOW_STEPS = 5

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        step_rows = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        lengths = [len(item.input_ids) for item in dataset]
        return LengthGroupedSampler(lambda epoch: lengths, len(dataset), step_rows * self.LENGTH_WINDOW_STEPS,
                                    seed=self.args.seed)


@dataclass(frozen=True)
class UnlearningArguments:
    """What the unlearning loss needs beyond transformers' TrainingArguments. The defaults are
    ``UnlearnConfig``'s and ``TrainingConfig``'s (``of`` builds one from a config)."""

    method: Method
    forget_coeff: float = 1.0
    regularization_coeff: float = 1.0
    beta: float = 0.1
    fuse_forward: bool = TrainingConfig.fuse_forward
    answer_logits_only: bool = TrainingConfig.answer_logits_only
    group_by_length: bool = TrainingConfig.group_by_length
    stop_forget_loss_below: Optional[float] = TrainingConfig.stop_forget_loss_below
    stop_forget_loss_above: Optional[float] = TrainingConfig.stop_forget_loss_above

    @classmethod
    def of(cls, training: TrainingConfig, method: Method, forget_coeff: float, regularization_coeff: float,
           beta: float) -> UnlearningArguments:
        return cls(method, forget_coeff, regularization_coeff, beta, fuse_forward=training.fuse_forward,
                   answer_logits_only=training.answer_logits_only, group_by_length=training.group_by_length,
                   stop_forget_loss_below=training.stop_forget_loss_below,
                   stop_forget_loss_above=training.stop_forget_loss_above)


def reference_placement(model: torch.nn.Module) -> str:
    """How the frozen reference is held, read from its parameters: split over the processes
    (DeepSpeed ZeRO-3 marks them with ``ds_id``; FSDP2 makes them DTensors; FSDP1 wraps them), or
    whole on every process."""
    from torch.distributed.tensor import DTensor

    parameters = list(model.parameters())
    if any(hasattr(p, "ds_id") for p in parameters):
        return "partitioned over the processes (ZeRO-3)"
    if any(isinstance(p, DTensor) for p in parameters) or type(model).__name__ == "FullyShardedDataParallel":
        return "sharded over the processes (FSDP)"
    return "whole on every process"


class UnlearningTrainer(Trainer):
    # Our loss is a per-batch mean: the Trainer divides it by the accumulation steps itself.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, unlearning: UnlearningArguments,
                 reference_model: Optional[torch.nn.Module] = None, settings=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.unlearning = unlearning
        self.method = unlearning.method
        self.forget_coeff = unlearning.forget_coeff
        self.regularization_coeff = unlearning.regularization_coeff
        self.beta = unlearning.beta
        self.fuse_forward = unlearning.fuse_forward
        self.answer_logits_only = self.method.answer_logits_only if unlearning.answer_logits_only else ()
        self.group_by_length = unlearning.group_by_length
        self.stop_below = unlearning.stop_forget_loss_below
        self.stop_above = unlearning.stop_forget_loss_above
        # The method's hyper-parameters and, for some, a state kept across steps.
        self.settings = settings if settings is not None else self.method.settings()
        self.method_state = (self.method.forget.state(self.settings, model=self.model, seed=self.args.seed,
                                                      regularization_coeff=self.regularization_coeff)
                             if self.method.forget.state else None)
        if self.method_state is not None:
            self.add_callback(MethodStateCallback(self))
        self.reference_placement: Optional[str] = None  # how the reference is held (the run's summary says)
        self.reference = Reference(self._prepare_reference(reference_model)) if reference_model is not None else None
        self._component_sums = {"forget_loss": 0.0, "regularization_loss": 0.0}
        self._component_count = 0
        self.stopped_early: Optional[str] = None
        self.add_callback(ForgetLossBoundCallback(self))

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
            self.reference_placement = reference_placement(engine)
            return engine
        prepared = (self.accelerator.prepare_model(model, evaluation_mode=True) if self.is_fsdp_enabled
                    else model.to(self.args.device))
        self.reference_placement = reference_placement(prepared)
        return prepared

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not (self.group_by_length and isinstance(dataset, UnlearningDataset)):
            return super()._get_train_sampler(train_dataset)
        # One group = the rows of one optimiser step across all processes.
        group = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        return LengthGroupedSampler(dataset.lengths, len(dataset), group, seed=self.args.seed)

    def objective(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, forget loss, regulariser) of one batch."""
        ctx = LossContext(model, inputs, reference=self.reference, beta=self.beta,
                          answer_logits_only=self.answer_logits_only, settings=self.settings, state=self.method_state)
        if self.fuse_forward:
            ctx.prefetch(self.method.logit_inputs)
        forget_loss = self.method.forget.fn(ctx)
        loss = self.forget_coeff * forget_loss
        regularization_loss = torch.zeros((), device=forget_loss.device)
        if self.method.regularizer is not None:
            regularization_loss = self.method.regularization(ctx)
            loss = loss + self.regularization_coeff * regularization_loss
        if self.method_state is not None:
            combined = self.method_state.combine(self.forget_coeff, forget_loss, self.regularization_coeff,
                                                 regularization_loss)
            loss = loss if combined is None else combined
        return loss, forget_loss, regularization_loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, forget_loss, regularization_loss = self.objective(model, inputs)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss.item()} in step {self.state.global_step + 1} "
                f"(forget loss {forget_loss.item():.4g}, regulariser {regularization_loss.item():.4g}); "
                "training stopped; lower training.lr or use another method"
            )
        self._component_sums["forget_loss"] += forget_loss.detach().item()
        self._component_sums["regularization_loss"] += regularization_loss.detach().item()
        self._component_count += 1
        if self.method_state is not None:
            self.method_state.observe(forget_loss.detach().item(), regularization_loss.detach().item(),
                                      self.state.epoch or 0.0)
        value = forget_loss.item()
        crossed = (self.stop_below is not None and value < self.stop_below) or (
            self.stop_above is not None and value > self.stop_above
        )
        if crossed and self.stopped_early is None:
            # The step finishes (all its micro-batches), then ForgetLossBoundCallback stops the run.
            self.stopped_early = f"forget loss {value:.4g} crossed its bound in step {self.state.global_step + 1}"
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
        if self.method_state is not None and "loss" in logs:
            logs.update(self.method_state.log_values())
        super().log(logs, *args, **kwargs)

    # Method state in checkpoints: written before the Trainer's files, so a checkpoint whose
    # trainer_state.json exists (a whole one, see run._checkpoint_step) holds it too.
    def _save_checkpoint(self, model, trial):
        if self.method_state is not None and self.is_world_process_zero():
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / METHOD_STATE_FILE).write_text(json.dumps(self.method_state.state_dict()), encoding="utf-8")
        super()._save_checkpoint(model, trial)

    def load_method_state(self, checkpoint: str | Path | None) -> None:
        """Continue the method's state from the checkpoint a run resumes from."""
        if self.method_state is None or checkpoint is None:
            return
        path = Path(checkpoint) / METHOD_STATE_FILE
        if not path.exists():
            raise UserError(f"{checkpoint} has no {METHOD_STATE_FILE}: it was not written by this method's run")
        self.method_state.load_state_dict(json.loads(path.read_text(encoding="utf-8")))

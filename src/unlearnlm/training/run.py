"""The two training commands: ``unlearn`` and ``finetune``.

Each validates its data and options before loading any model, trains with the Trainer, and
writes a run folder:

    OUTPUT_DIR/config.yaml         the resolved config (rerun with --config OUTPUT_DIR/config.yaml)
    OUTPUT_DIR/log.jsonl           one line per logged step (loss, forget_loss, regularization_loss, lr)
    OUTPUT_DIR/model/              weights (safetensors) and tokenizer
    OUTPUT_DIR/train_summary.json  written last: its presence means the run finished
    OUTPUT_DIR/checkpoints/        Trainer checkpoints while running (removed when finished)

A rerun of an unfinished run folder with the same config resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from ..config import FinetuneConfig, UnlearnConfig, save_config, to_dict
from ..data.records import (
    default_retain_split,
    load_split,
    retain_for_task,
    select_tasks,
)
from ..data.refusals import load_refusals
from ..errors import UserError
from ..io import atomic_write_json
from ..methods import Method, get_method

SUMMARY = "train_summary.json"


@dataclass
class UnlearningData:
    forget: list[dict]
    retain: list[dict]
    refusals: list[str]


def load_unlearning_data(config: UnlearnConfig, method: Method) -> UnlearningData:
    """Forget rows of the chosen tasks, the matching retain set (SPEC §4), refusals."""
    data = config.data
    all_forget = load_split(data.forget, data.source)
    forget = select_tasks(all_forget, data.task_id, origin=data.forget)
    retain: list[dict] = []
    if method.needs_retain:
        retain_spec = data.retain or default_retain_split(data.forget)
        if not retain_spec:
            raise UserError(
                f"method {method.name} needs a retain set and none goes with '{data.forget}' by default; set data.retain"
            )
        retain = load_split(retain_spec, data.source)
        if data.retain_includes_later_tasks:
            retain = retain_for_task(retain, all_forget, data.task_id)
    refusals = load_refusals(data.refusals) if method.needs_refusals else []
    return UnlearningData(forget, retain, refusals)


def _check_run_folder(output_dir: Path, config) -> bool:
    """True when ``output_dir`` already holds this finished run; error if it holds another."""
    saved = output_dir / "config.yaml"
    if not saved.exists():
        return False
    previous = yaml.safe_load(saved.read_text(encoding="utf-8"))
    current = to_dict(config)
    if previous != current:
        differing = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
        raise UserError(
            f"{output_dir} holds a run with another config (differs in: {', '.join(differing)}); "
            "choose another output_dir or delete that folder"
        )
    return (output_dir / SUMMARY).exists()


def _last_checkpoint(checkpoints: Path) -> Optional[Path]:
    from transformers.trainer_utils import get_last_checkpoint

    return Path(found) if checkpoints.is_dir() and (found := get_last_checkpoint(str(checkpoints))) else None


def _trim_log(log_path: Path, last_step: int) -> None:
    """Drop log lines past the checkpoint a resumed run restarts from (they will be redone)."""
    if not log_path.exists():
        return
    kept = [line for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()
            and json.loads(line).get("step", 0) <= last_step]
    log_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _world_size() -> int:
    from accelerate import PartialState

    return PartialState().num_processes


def _train(trainer, output_dir: Path) -> tuple[dict, Optional[str]]:
    """Run (or resume) training; returns the Trainer's metrics and the checkpoint resumed from."""
    checkpoints = output_dir / "checkpoints"
    resume = _last_checkpoint(checkpoints)
    if resume is not None and trainer.is_world_process_zero():
        step = json.loads((resume / "trainer_state.json").read_text())["global_step"]
        _trim_log(output_dir / "log.jsonl", step)
    started = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    metrics = dict(result.metrics)
    metrics["wall_seconds"] = round(time.time() - started, 2)
    return metrics, str(resume) if resume else None


def _finish(trainer, tokenizer, output_dir: Path, lora_merge: bool, summary: dict) -> Path:
    trainer.accelerator.wait_for_everyone()
    model = trainer.accelerator.unwrap_model(trainer.model)
    if trainer.is_world_process_zero():
        from .models import save_model

        save_model(model, tokenizer, output_dir / "model", merge_lora=lora_merge)
        atomic_write_json(output_dir / SUMMARY, summary)
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return output_dir


def unlearn(config: UnlearnConfig) -> Path:
    """Unlearn ``config.data``'s forget set from ``config.model``; returns the run folder."""
    method = get_method(config.method)
    data = load_unlearning_data(config, method)
    output_dir = Path(config.output_dir)
    if _check_run_folder(output_dir, config):
        print(f"{output_dir} already holds this finished run; nothing to do")
        return output_dir

    from ..data.batches import UnlearningCollator, UnlearningDataset
    from ..data.formatting import PromptFormat
    from .models import apply_lora, load_model, load_tokenizer
    from .trainer import EpochCallback, JsonlLogCallback, UnlearningTrainer, training_arguments

    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model)
    reference = None
    if method.needs_reference:
        from ..config import ModelConfig

        reference_config = config.model
        if config.reference_model:
            reference_config = ModelConfig(config.reference_model, config.model.trust_remote_code, config.model.dtype)
        reference = load_model(reference_config)
    if config.lora.enabled:
        model = apply_lora(model, config.lora)
    if config.training.gradient_checkpointing:
        model.config.use_cache = False

    formatter = PromptFormat(tokenizer)
    dataset = UnlearningDataset(
        data.forget, data.retain, data.refusals, formatter, method.inputs,
        seed=config.training.seed, max_length=config.data.max_length,
    )
    mask = method.forget.default_mask if config.mask is None else config.mask
    forget_coeff = method.forget.default_forget_coeff if config.forget_coeff is None else config.forget_coeff

    output_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, output_dir / "config.yaml")
    args = training_arguments(config.training, output_dir / "checkpoints", len(dataset), _world_size())
    trainer = UnlearningTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=UnlearningCollator(tokenizer.pad_token_id, mask=mask),
        processing_class=tokenizer,
        callbacks=[EpochCallback(dataset), JsonlLogCallback(output_dir / "log.jsonl")],
        method=method,
        forget_coeff=forget_coeff,
        regularization_coeff=config.regularization_coeff,
        beta=config.beta,
        reference_model=reference,
        fuse_forward=config.training.fuse_forward,
        stop_forget_loss_below=config.training.stop_forget_loss_below,
        stop_forget_loss_above=config.training.stop_forget_loss_above,
    )
    metrics, resumed_from = _train(trainer, output_dir)
    summary = {
        "method": method.name,
        "forget_coeff": forget_coeff,
        "regularization_coeff": config.regularization_coeff,
        "mask": mask,
        "forget_rows": len(data.forget),
        "retain_rows": len(data.retain),
        "steps": trainer.state.global_step,
        "stopped_early": trainer.stopped_early,
        "resumed_from": resumed_from,
        **metrics,
    }
    return _finish(trainer, tokenizer, output_dir, config.lora.merge_on_save, summary)


def load_finetune_data(config: FinetuneConfig) -> list[dict]:
    rows: list[dict] = []
    if not config.data.train:
        raise UserError("data.train names no split or file")
    excluded = {str(t) for t in config.data.exclude_task_id}
    for spec in config.data.train:
        split = load_split(spec, config.data.source)
        rows += [r for r in split if not ("task_id" in r and str(r["task_id"]) in excluded)]
    if not rows:
        raise UserError("the fine-tuning set is empty after data.exclude_task_id")
    return rows


def finetune(config: FinetuneConfig) -> Path:
    """Plain supervised fine-tuning on QA records (a target that knows them, or a retain model)."""
    rows = load_finetune_data(config)
    output_dir = Path(config.output_dir)
    if _check_run_folder(output_dir, config):
        print(f"{output_dir} already holds this finished run; nothing to do")
        return output_dir

    from transformers import Trainer

    from ..data.batches import QACollator, QADataset
    from ..data.formatting import PromptFormat
    from .models import apply_lora, load_model, load_tokenizer
    from .trainer import JsonlLogCallback, training_arguments

    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model)
    if config.lora.enabled:
        model = apply_lora(model, config.lora)
    dataset = QADataset(rows, PromptFormat(tokenizer), max_length=config.data.max_length)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, output_dir / "config.yaml")
    args = training_arguments(config.training, output_dir / "checkpoints", len(dataset), _world_size())
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=QACollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[JsonlLogCallback(output_dir / "log.jsonl")],
    )
    metrics, resumed_from = _train(trainer, output_dir)
    summary = {"rows": len(rows), "steps": trainer.state.global_step, "resumed_from": resumed_from, **metrics}
    return _finish(trainer, tokenizer, output_dir, config.lora.merge_on_save, summary)

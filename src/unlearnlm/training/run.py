"""The two training commands: ``unlearn`` and ``finetune``.

Each validates its data and options before loading any model, trains with the Trainer, and
writes a run folder:

    OUTPUT_DIR/config.yaml         the resolved config (rerun with --config OUTPUT_DIR/config.yaml)
    OUTPUT_DIR/log.jsonl           one line per logged step (loss, forget_loss, regularization_loss, lr)
    OUTPUT_DIR/model/              weights (safetensors) and tokenizer
    OUTPUT_DIR/train_summary.json  written last: its presence means the run finished
    OUTPUT_DIR/checkpoints/        Trainer checkpoints while running (removed when finished)

A rerun of an unfinished run folder with the same config resumes from its last checkpoint
(training.save_minutes / save_steps) and ends with the weights and log an uninterrupted run gives.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..config import (
    FinetuneConfig,
    TrainingConfig,
    UnlearnConfig,
    check_run_folder,
    method_settings,
    save_config,
    validate_config,
    with_method_settings,
)
from ..data.records import (
    default_retain_split,
    load_split,
    retain_for_task,
    select_tasks,
)
from ..data.refusals import load_refusals
from ..errors import UserError
from ..io import atomic_write_json, atomic_write_jsonl, make_output_dir
from ..methods import Method

logger = logging.getLogger(__name__)

TRAIN_SUMMARY = "train_summary.json"


@dataclass
class UnlearningData:
    forget: list[dict]
    retain: list[dict]
    refusals: list[str]


def load_unlearning_data(config: UnlearnConfig, method: Method) -> UnlearningData:
    """Forget rows of the chosen tasks, the matching retain set (docs/formulas.md#scenarios), refusals.
    With data.format=text: rows of text (forget, and retain when the method reads it)."""
    data = config.data
    if data.format == "text":
        from ..data.text import load_rows

        forget = load_rows(data.forget, data.source, (data.text_key,))
        retain = load_rows(data.retain, data.source, (data.text_key,)) if method.needs_retain else []
        for name, rows in ((data.forget, forget), (data.retain, retain)):
            if rows and not any(row[data.text_key].strip() for row in rows):
                raise UserError(f"{name}: every text is blank: it tokenises to nothing, there is nothing to train on")
        return UnlearningData(forget, retain, [])
    all_forget = load_split(data.forget, data.source)
    forget = select_tasks(all_forget, data.task_id, origin=data.forget)
    retain: list[dict] = []
    if method.needs_retain:
        retain_spec = data.retain or default_retain_split(data.forget)
        if not retain_spec:
            raise UserError(
                f"method {method.name} needs a retain set and none goes with '{data.forget}' by default; "
                "set data.retain"
            )
        retain = load_split(retain_spec, data.source)
        if data.retain_includes_later_tasks:
            retain = retain_for_task(retain, all_forget, data.task_id)
    refusals = load_refusals(data.refusals) if method.needs_refusals else []
    return UnlearningData(forget, retain, refusals)


def _finished_run(output_dir: Path, config) -> bool:
    """True when ``output_dir`` already holds this finished run; error if it holds another."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"output_dir {output_dir} is a file, not a folder")
    return check_run_folder(output_dir, config, "run") and (output_dir / TRAIN_SUMMARY).exists()


def _checkpoint_step(folder: Path) -> Optional[int]:
    """The step of a complete checkpoint, None for one cut short by a kill.

    The Trainer writes trainer_state.json after the weights, optimiser and RNG states, so a
    checkpoint whose state file parses is whole.
    """
    try:
        return int(json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _last_checkpoint(checkpoints: Path) -> Optional[Path]:
    """The latest complete checkpoint; incomplete ones (a kill mid-save) are deleted."""
    if not checkpoints.is_dir():
        return None
    complete = []
    for folder in checkpoints.glob("checkpoint-*"):
        if not folder.is_dir():
            continue
        step = _checkpoint_step(folder)
        if step is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            complete.append((step, folder))
    return max(complete)[1] if complete else None


def _remove_leftovers(output_dir: Path) -> None:
    """Temporary files of atomic writes a kill interrupted (see io.atomic_write_text, models.save_model)."""
    for path in output_dir.glob(".*"):
        if path.is_dir() and path.name.startswith(".model."):
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)


def _read_log(log_path: Path) -> list[dict]:
    """Log rows; a last line cut short by a kill is dropped."""
    if not log_path.exists():
        return []
    rows = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _trim_log(log_path: Path, last_step: int) -> None:
    """Keep the log rows up to the step a (re)started run begins at: later ones will be redone."""
    if log_path.exists():
        kept = [row for row in _read_log(log_path) if row.get("step", 0) <= last_step]
        atomic_write_jsonl(log_path, kept)


def _mean_logged_loss(log_path: Path) -> Optional[float]:
    """The run's mean training loss from its log (each row covers the steps since the previous
    one), so a resumed run reports the same number as an uninterrupted one."""
    total, steps, previous = 0.0, 0, 0
    for row in _read_log(log_path):
        if "loss" in row:
            total += row["loss"] * (row["step"] - previous)
            steps += row["step"] - previous
            previous = row["step"]
    return total / steps if steps else None


def _check_model_paths(*names: Optional[str]) -> None:
    """A missing local model folder is reported before any data is tokenised or model loaded.
    (Hub names are checked when loaded; the embedded alias is converted when loaded.)"""
    from .models import embedded_alias, resolve_model_path

    for name in names:
        if name and embedded_alias(name) is None:
            resolve_model_path(name)


def _world_size() -> int:
    # Set by torchrun and accelerate launch; read before the Trainer sets up its process group.
    return int(os.environ.get("WORLD_SIZE", "1"))


def _check_sharding(trainer) -> None:
    """A launch that asks for FSDP or DeepSpeed gets it, or an error: accelerate turns those
    configs into sharded training only on GPUs and would run them as plain DDP on CPU processes."""
    for variable, name, enabled in (("ACCELERATE_USE_FSDP", "FSDP", trainer.is_fsdp_enabled),
                                    ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed", trainer.is_deepspeed_enabled)):
        if os.environ.get(variable, "").lower() == "true" and not enabled:
            raise UserError(f"the launch asks for {name} ({variable}=true), but accelerate runs {name} only on GPUs; "
                            "on CPU processes it would silently train plain DDP: use accelerate_configs/ddp.yaml "
                            "or torchrun instead")


def _train(trainer, output_dir: Path, training: TrainingConfig) -> tuple[dict, Optional[str]]:
    """Run (or resume) training; returns the Trainer's metrics and the checkpoint resumed from."""
    from .models import non_finite_part
    from .trainer import (
        CheckpointCallback,
        DivergenceCallback,
        TrainingDiverged,
        check_weights_moved,
        probe_ids,
        trainable_fingerprint,
    )

    _check_sharding(trainer)
    if not any(p.requires_grad for p in trainer.model.parameters()):
        raise UserError("no parameter of the model is trainable (see the method's trainable / layer settings)")
    probe = probe_ids(trainer.train_dataset)
    trainer.add_callback(CheckpointCallback(training.save_steps, training.save_minutes, probe))
    # First in line, so a non-finite row never reaches the log.
    trainer.callback_handler.callbacks.insert(0, DivergenceCallback())
    checkpoints = output_dir / "checkpoints"
    if trainer.is_world_process_zero():
        _remove_leftovers(output_dir)
    resume = _last_checkpoint(checkpoints) if trainer.is_world_process_zero() else None
    resume = _broadcast(trainer, resume)
    if trainer.is_world_process_zero():
        _trim_log(output_dir / "log.jsonl", _checkpoint_step(resume) if resume else 0)
    if hasattr(trainer, "load_method_state"):
        trainer.load_method_state(resume)
    before = None if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled else trainable_fingerprint(trainer.model)
    started = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        # The result must be a model: finite logits on a forget row, and weights that moved.
        broken = non_finite_part(trainer.model, probe)
        if broken:
            raise TrainingDiverged(f"the trained model's {broken} are NaN or infinite (after step "
                                   f"{trainer.state.global_step}); the model is not written; lower training.lr")
    except TrainingDiverged as err:
        kept = _last_checkpoint(checkpoints)
        where = (f"the last good checkpoint is {kept} (step {_checkpoint_step(kept)})" if kept
                 else "no checkpoint was saved before it (see training.save_steps, training.save_minutes)")
        raise TrainingDiverged(f"{err}; {where}") from None
    after = None if before is None else trainable_fingerprint(trainer.model)
    check_weights_moved(before, after, _read_log(output_dir / "log.jsonl"))
    metrics = dict(result.metrics)
    metrics["train_loss"] = _mean_logged_loss(output_dir / "log.jsonl")
    metrics["wall_seconds"] = round(time.time() - started, 2)
    return metrics, str(resume) if resume else None


def _broadcast(trainer, value):
    """Process 0's value on every process (they must all resume from the same checkpoint)."""
    if trainer.accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def _finish(trainer, tokenizer, output_dir: Path, lora_merge: bool, summary: dict, prompt_format) -> Path:
    trainer.accelerator.wait_for_everyone()
    model = trainer.accelerator.unwrap_model(trainer.model)
    # Sharded weights (ZeRO-3, FSDP) are gathered into one full state dict on the main process.
    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    state_dict = trainer.accelerator.get_state_dict(trainer.model) if sharded else None
    if trainer.is_world_process_zero():
        from .models import save_model

        save_model(model, tokenizer, output_dir / "model", merge_lora=lora_merge, state_dict=state_dict,
                   prompt_format=prompt_format)
        atomic_write_json(output_dir / TRAIN_SUMMARY, summary)
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return output_dir


def load_for_training(config: UnlearnConfig | FinetuneConfig):
    """The model to train: ``config.model`` with LoRA adapters when ``config.lora`` asks (seeded:
    their initial weights are random), without the KV cache under gradient checkpointing."""
    from .models import apply_lora, load_model

    model = load_model(config.model)
    if config.lora.enabled:
        from transformers import set_seed

        set_seed(config.training.seed)
        model = apply_lora(model, config.lora)
    if config.training.gradient_checkpointing:
        model.config.use_cache = False  # the cache is useless when activations are recomputed
    return model


def _load_reference(config: UnlearnConfig):
    from ..config import ModelConfig
    from .models import load_model

    reference_config = config.model
    if config.reference_model:
        reference_config = ModelConfig(config.reference_model, config.model.trust_remote_code, config.model.dtype)
    return load_model(reference_config)


def _precomputable_reference_kinds(method: Method) -> tuple[str, ...]:
    """Kinds whose reference NLLs can be computed before training (NPO: forget; DPO: + forget_idk)."""
    return method.forget.inputs if method.forget.needs_reference and method.forget.reference_nll_only else ()


def _needs_reference_logits(method: Method) -> bool:
    """KL reads the reference's full next-token distributions: those stay a forward per step."""
    return any(o is not None and o.needs_reference and not o.reference_nll_only
               for o in (method.forget, method.regularizer))


ALTERNATES_FILE = "alternates.jsonl"


def alternate_answers(model, formatter, forget: list[dict], settings, seed: int, path: Path) -> list[list[str]]:
    """AltPO's first stage: the model itself answers each forget question ``settings.alternates``
    times by sampling (seeded), keeping answers other than the true one. Written to ``path``
    (one row a question) and read back by a resumed run, so it trains on the same answers."""
    import torch

    if path.exists():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if [r["question"] for r in rows] == [r["question"] for r in forget]:
            return [r["alternates"] for r in rows]
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    tokenizer = formatter.tokenizer
    was_training = model.training
    model.eval()
    result = []
    try:
        for row in forget:
            prompt = torch.tensor([formatter.prompt_ids(row["question"])], device=model.device)
            found: list[str] = []
            for _ in range(4 * settings.alternates):  # a few tries for answers that differ
                with torch.no_grad():
                    out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                                         temperature=settings.temperature, top_k=0, top_p=1.0,
                                         max_new_tokens=settings.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
                text = tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True).strip()
                if text and text != row["answer"].strip() and text not in found:
                    found.append(text)
                if len(found) == settings.alternates:
                    break
            if not found:
                raise UserError(f"the model wrote no alternate answer to '{row['question'][:60]}' in "
                                f"{4 * settings.alternates} tries; raise method_args.temperature")
            result.append(found)
    finally:
        torch.random.set_rng_state(generator_state)
        model.train(was_training)
    if int(os.environ.get("RANK", "0")) == 0:
        atomic_write_jsonl(path, [{"question": r["question"], "alternates": a}
                                  for r, a in zip(forget, result, strict=True)])
    return result


def _check_layer(model, layer: int) -> None:
    from ..methods.losses import decoder_layers

    blocks = len(decoder_layers(model))
    if layer >= blocks:
        raise UserError(f"method_args.layer={layer}: the model has {blocks} decoder blocks (0 to {blocks - 1})")


def unlearning_formatter(config: UnlearnConfig, data: UnlearningData):
    """The tokenizer and prompt format of the run, with the data's lengths checked against
    data.max_length (a row left without any answer token is refused)."""
    from ..data.formatting import check_truncation
    from ..data.records import default_retain_split
    from .models import load_prompt_format, load_tokenizer

    tokenizer = load_tokenizer(config.model)
    formatter = load_prompt_format(config.model, tokenizer)
    if config.data.format == "text":  # chunks of plain text: no prompt, nothing to cut
        return tokenizer, formatter
    check_truncation(formatter, data.forget, config.data.max_length, config.data.forget)
    if data.retain:
        retain_name = config.data.retain or default_retain_split(config.data.forget) or "retain set"
        check_truncation(formatter, data.retain, config.data.max_length, retain_name)
    return tokenizer, formatter


def build_unlearning_trainer(config: UnlearnConfig, method: Method, data: UnlearningData, output_dir: Path,
                             tokenizer=None, formatter=None):
    """The model, the reference (or its precomputed NLLs), the batches and the loss, as a Trainer.

    Returns (trainer, tokenizer). Shared by ``unlearn`` and the benchmarks.
    """
    import gc
    import math

    from ..data.batches import UnlearningCollator, UnlearningDataset
    from .trainer import (
        EpochCallback,
        JsonlLogCallback,
        UnlearningArguments,
        UnlearningTrainer,
        freeze_unreached,
        precompute_reference_nll,
        select_trainable,
        training_arguments,
    )

    settings = method_settings(config)
    if tokenizer is None or formatter is None:
        tokenizer, formatter = unlearning_formatter(config, data)
    model = load_for_training(config)
    if method.reads_hidden_states:
        _check_layer(model, settings.layer)
    reference = _load_reference(config) if method.needs_reference else None

    if getattr(settings, "trainable", None):
        select_trainable(model, settings.trainable)
    if method.reads_hidden_states and not method.logit_inputs:
        freeze_unreached(model, settings.layer)
    if config.data.format == "text":
        from ..data.batches import TextUnlearningDataset
        from ..data.text import chunk_token_stream

        key, length = config.data.text_key, config.data.chunk_length
        dataset = TextUnlearningDataset(
            chunk_token_stream([r[key] for r in data.forget], tokenizer, length),
            chunk_token_stream([r[key] for r in data.retain], tokenizer, length) if data.retain else [],
            method.inputs, seed=config.training.seed,
        )
    else:
        alternates = (alternate_answers(model, formatter, data.forget, settings, config.training.seed,
                                        output_dir / ALTERNATES_FILE)
                      if method.forget.procedure == "alternates" else ())
        dataset = UnlearningDataset(
            data.forget, data.retain, data.refusals, formatter, method.inputs,
            seed=config.training.seed, max_length=config.data.max_length, alternates=alternates,
        )
    mask = method.forget.default_mask if config.mask is None else config.mask
    forget_coeff = method.forget.default_forget_coeff if config.forget_coeff is None else config.forget_coeff
    regularization_coeff = (method.forget.default_regularization_coeff if config.regularization_coeff is None
                            else config.regularization_coeff)
    args = training_arguments(config.training, output_dir / "checkpoints", len(dataset), _world_size())
    collator = UnlearningCollator(tokenizer.pad_token_id, mask=mask, pad_to=config.data.pad_to)

    nll_kinds = _precomputable_reference_kinds(method)
    if reference is not None and nll_kinds and config.training.precompute_reference_nll:
        collator.reference_nll = precompute_reference_nll(
            reference, dataset, collator, nll_kinds, epochs=math.ceil(config.training.epochs),
            batch_size=2 * config.training.per_device_batch_size, device=args.device,
        )
        if not _needs_reference_logits(method):
            # The frozen reference has given all it will ever be asked: free its memory.
            reference = None
            gc.collect()

    trainer = UnlearningTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[EpochCallback(dataset), JsonlLogCallback(output_dir / "log.jsonl")],
        unlearning=UnlearningArguments.of(config.training, method, forget_coeff, regularization_coeff,
                                          config.beta),
        reference_model=reference,
        settings=settings,
    )
    return trainer, tokenizer


SEEDS = "seeds.json"


def seed_run_config(config: UnlearnConfig, seed: int) -> UnlearnConfig:
    """The ordinary run of one seed: training.seed = seed, in OUTPUT_DIR/seed_S."""
    from dataclasses import replace

    return replace(config, seeds=None, training=replace(config.training, seed=int(seed)),
                   output_dir=str(Path(config.output_dir) / f"seed_{int(seed)}"))


def unlearn_seeds(config: UnlearnConfig, callbacks: Sequence | Callable[[UnlearnConfig], Sequence] = ()) -> Path:
    """One run per seed in OUTPUT_DIR/seed_S (a finished one is skipped); OUTPUT_DIR/seeds.json
    lists them. Returns OUTPUT_DIR."""
    validate_config(config)  # the seeds themselves; each seed's run then checks its own derived config
    output_dir = Path(config.output_dir)
    for seed in config.seeds:
        unlearn(seed_run_config(config, seed), callbacks)
    atomic_write_json(output_dir / SEEDS, {"seeds": [int(s) for s in config.seeds],
                                           "runs": [f"seed_{int(s)}" for s in config.seeds]})
    return output_dir


def unlearn(config: UnlearnConfig, callbacks: Sequence | Callable[[UnlearnConfig], Sequence] = ()) -> Path:
    """Unlearn ``config.data``'s forget set from ``config.model``; returns the run folder.
    ``callbacks``: more transformers TrainerCallbacks for the run, or a function of a run's config
    that gives them (called for each seed's run with ``seeds``). Training knows nothing of
    evaluation: the per-epoch evaluation ``config.eval_every_epoch`` asks for is one of these
    callbacks, given by the caller (``evaluation.callback.epoch_evaluation``). With ``seeds``:
    one run per seed."""
    if config.seeds:
        return unlearn_seeds(config, callbacks)
    method = validate_config(config)  # the method, resolved once; before the callbacks read the config
    if callable(callbacks):
        callbacks = callbacks(config)
    config = with_method_settings(config, method)  # every setting of the method goes into config.yaml
    data = load_unlearning_data(config, method)
    output_dir = Path(config.output_dir)
    _check_model_paths(config.model.name_or_path, config.reference_model if method.needs_reference else None)
    if _finished_run(output_dir, config):
        logger.info("%s already holds this finished run; nothing to do", output_dir)
        return output_dir

    tokenizer, formatter = unlearning_formatter(config, data)
    if config.data.format != "text":  # a row is an example: a schedule that trains nothing is refused now
        from .trainer import check_learning_rates

        check_learning_rates(config.training, len(data.forget), _world_size())
    make_output_dir(output_dir)
    save_config(config, output_dir / "config.yaml")
    if config.eval_every_epoch and not callbacks:
        logger.warning("eval_every_epoch is set but no evaluation callback was given: no per-epoch evaluation "
                       "(pass evaluation.callback.epoch_evaluation(config) as callbacks)")
    if method.forget.procedure == "task_vector":
        return _task_vector(config, method, data, output_dir, tokenizer, formatter)
    trainer, tokenizer = build_unlearning_trainer(config, method, data, output_dir, tokenizer, formatter)
    for callback in callbacks:
        trainer.add_callback(callback)
    metrics, resumed_from = _train(trainer, output_dir, config.training)
    summary = {
        "method": method.name,
        "forget_coeff": trainer.forget_coeff,
        "regularization_coeff": trainer.regularization_coeff,
        "mask": trainer.data_collator.mask,
        "forget_rows": len(data.forget),
        "retain_rows": len(data.retain),
        **({"forget_chunks": len(trainer.train_dataset), "retain_chunks": len(trainer.train_dataset.retain)}
           if config.data.format == "text" else {}),
        "steps": trainer.state.global_step,
        # The frozen reference: held as the launch says, or read once before training and freed.
        "reference_model": trainer.reference_placement or ("precomputed NLLs, model freed"
                                                           if trainer.data_collator.reference_nll else None),
        "stopped_early": trainer.stopped_early,
        "resumed_from": resumed_from,
        **metrics,
    }
    return _finish(trainer, tokenizer, output_dir, config.lora.merge_on_save, summary, formatter.spec)


def _task_vector(config: UnlearnConfig, method: Method, data: UnlearningData, output_dir: Path,
                 tokenizer, formatter) -> Path:
    """Task negation: fine-tune the target on the forget rows (mean CE, ``training``'s epochs) by
    ``finetune`` into OUTPUT_DIR/finetune, then θ = θ_target − α · (θ_fine-tuned − θ_target)."""
    import torch

    from ..config import FinetuneDataConfig
    from .models import load_model, save_model

    settings = method_settings(config)
    rows_file = output_dir / "forget_rows.jsonl"
    atomic_write_jsonl(rows_file, [{"question": r["question"], "answer": r["answer"]} for r in data.forget])
    tuned_dir = finetune(FinetuneConfig(
        output_dir=str(output_dir / "finetune"), model=config.model, training=config.training, lora=config.lora,
        data=FinetuneDataConfig(source=str(output_dir), train=[str(rows_file)], max_length=config.data.max_length),
    ))
    started = time.time()
    target = load_model(config.model)
    tuned = load_model(replace(config.model, name_or_path=str(tuned_dir / "model")))
    tuned_weights = dict(tuned.named_parameters())
    with torch.no_grad():  # named_parameters lists a tied weight once: it moves once
        for name, weight in target.named_parameters():
            weight.sub_(settings.alpha * (tuned_weights[name].to(weight.dtype) - weight))
    shutil.copyfile(tuned_dir / "log.jsonl", output_dir / "log.jsonl")
    tuned_summary = json.loads((tuned_dir / TRAIN_SUMMARY).read_text(encoding="utf-8"))
    save_model(target, tokenizer, output_dir / "model", prompt_format=formatter.spec)
    summary = {"method": method.name, "alpha": settings.alpha, "forget_rows": len(data.forget), "retain_rows": 0,
               "steps": tuned_summary.get("steps"), "stopped_early": None,
               "resumed_from": tuned_summary.get("resumed_from"), "train_loss": tuned_summary.get("train_loss"),
               "wall_seconds": round(tuned_summary.get("wall_seconds", 0) + time.time() - started, 2)}
    atomic_write_json(output_dir / TRAIN_SUMMARY, summary)
    return output_dir


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


def finetune(config: FinetuneConfig, callbacks: Sequence = ()) -> Path:
    """Plain supervised fine-tuning on QA records (a target that knows them, or a retain model).
    ``callbacks``: more transformers TrainerCallbacks for the run."""
    validate_config(config)
    rows = load_finetune_data(config)
    output_dir = Path(config.output_dir)
    _check_model_paths(config.model.name_or_path)
    if _finished_run(output_dir, config):
        logger.info("%s already holds this finished run; nothing to do", output_dir)
        return output_dir

    from transformers import Trainer

    from ..data.batches import QACollator, QADataset
    from ..data.formatting import check_truncation
    from ..methods.losses import takes_logits_to_keep
    from .models import load_prompt_format, load_tokenizer
    from .trainer import FinetuneTrainer, JsonlLogCallback, training_arguments

    tokenizer = load_tokenizer(config.model)
    formatter = load_prompt_format(config.model, tokenizer)
    check_truncation(formatter, rows, config.data.max_length, ", ".join(config.data.train))
    model = load_for_training(config)
    dataset = QADataset(rows, formatter, max_length=config.data.max_length)
    args = training_arguments(config.training, output_dir / "checkpoints", len(dataset), _world_size())
    make_output_dir(output_dir)
    save_config(config, output_dir / "config.yaml")
    trainer = (FinetuneTrainer if config.training.group_by_length else Trainer)(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=QACollator(
            tokenizer.pad_token_id,
                                 answer_logits_only=config.training.answer_logits_only and takes_logits_to_keep(model)
        ),
        processing_class=tokenizer,
        callbacks=[JsonlLogCallback(output_dir / "log.jsonl"), *callbacks],
    )
    metrics, resumed_from = _train(trainer, output_dir, config.training)
    summary = {"rows": len(rows), "steps": trainer.state.global_step, "resumed_from": resumed_from, **metrics}
    return _finish(trainer, tokenizer, output_dir, config.lora.merge_on_save, summary, formatter.spec)

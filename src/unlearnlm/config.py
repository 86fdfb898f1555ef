"""Typed run configuration: dataclasses, YAML presets, ``key=value`` overrides.

A config is a tree of dataclasses. It can be built from a preset shipped in
``unlearnlm/configs/`` (by name) or any YAML file, then overridden from the command line with
dotted keys (``training.lr=5e-6``, ``method=IDK+AP``). Every run writes its resolved config as
YAML next to its results, so ``unlearnlm unlearn --config that.yaml`` repeats it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

import yaml

from .errors import UserError

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class ModelConfig:
    # A hub name, a local folder, or an alias of an embedded model (see training.models).
    name_or_path: str = "smollm2-135m"
    trust_remote_code: bool = False
    # "auto" keeps the checkpoint's dtype on CPU and uses bf16 where the hardware has it.
    dtype: str = "auto"


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 8
    alpha: int = 32
    dropout: float = 0.05
    # "all-linear" = every linear layer except the output head (peft's own shorthand).
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    merge_on_save: bool = True


@dataclass
class DataConfig:
    # Where named splits come from: a hub dataset name or a local folder of JSON/JSONL files.
    source: str = "locuslab/TOFU"
    # A split name of `source` (forget01, retain90, ...) or a path to a JSON/JSONL file.
    forget: str = "forget01"
    # Empty means: the retain split that goes with `forget` (SPEC §1).
    retain: Optional[str] = None
    # Which task(s) of the forget split to unlearn; empty means every row.
    task_id: list[str] = field(default_factory=lambda: ["1"])
    # Add to the retain set the forget rows of tasks after the last one unlearned (SPEC §4).
    retain_includes_later_tasks: bool = True
    # A text file of refusal answers, one per line; empty means the list shipped with unlearnlm.
    refusals: Optional[str] = None
    # Longest tokenised question+answer; longer rows are cut (and counted in the log).
    max_length: int = 512
    # Pad every sequence to this many tokens (the reference pads to 500); empty = per batch only.
    pad_to: Optional[int] = None


@dataclass
class TrainingConfig:
    lr: float = 1e-5
    epochs: float = 5.0
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    # Warm-up length in epochs (the reference: one epoch of steps).
    warmup_epochs: float = 1.0
    weight_decay: float = 0.01
    # AdamW as one fused kernel: the same update as adamw_torch's, and on a CPU a tenth of its
    # time (measured on SmolLM2-135M's parameters: 0.23 s a step against 2.3 s, two busy cores).
    optimizer: str = "adamw_torch_fused"
    lr_scheduler: str = "linear"
    seed: int = 1001
    # "auto": bf16 where the hardware supports it, fp32 otherwise.
    bf16: str = "auto"
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    # Forward forget, retain and refusal sequences of a step as one batch (same numbers). Off by
    # default: on CPU it measured slower (the kinds pad to a common length); see docs/performance.md.
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


@dataclass
class JudgesConfig:
    # "auto": the reference model when it loads, else the offline fallback (see evaluation.judges);
    # "none": skip the metric; or a sentence-transformers / transformers model name or folder.
    embedder: str = "auto"
    # "offline" = only the offline judge of evaluation.offline_nli.
    nli: str = "auto"
    embedder_batch_size: int = 64
    nli_batch_size: int = 32


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
    # A greedy batch runs as many steps as its longest answer: fewer, larger batches take fewer
    # steps (the demo's 59 questions: one batch of 64, 9.6 s, against 12.6 s in batches of 32).
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
    # a mask that hides the others); the demo's loss pass 24.8 s -> 15.4 s. Same values up to
    # float rounding; false = one whole sequence per answer (always so with pad_to, or flash attention).
    share_prompts: bool = True
    judges: JudgesConfig = field(default_factory=JudgesConfig)
    # Forget Quality: a retain model's evaluation (its output folder or forget records file).
    retain_eval: Optional[str] = None
    output_dir: str = "runs/eval"


@dataclass
class UnlearnConfig:
    method: str = "ME+GD"
    # Empty means the method's default (SPEC §3: 0.1 for ME+GD, else 1.0).
    forget_coeff: Optional[float] = None
    regularization_coeff: float = 1.0
    beta: float = 0.1
    # Empty means the method's default (false for ME+GD, true otherwise).
    mask: Optional[bool] = None
    # Reference model for NPO/DPO/KL: the model at the start of this run, or a fixed path.
    reference_model: Optional[str] = None
    # The method's own hyper-parameters (method_args.beta=4.5 for SimNPO; `unlearnlm methods`
    # lists each method's); a run writes every one, defaults included, into its config.yaml.
    method_args: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "runs/unlearn"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    # Evaluate at the start and at the end of every epoch (OUTPUT_DIR/eval/epoch_K, trajectories in
    # OUTPUT_DIR/eval/results.csv); `evaluation`'s model and output_dir are the run's own.
    eval_every_epoch: bool = False
    evaluation: EvaluateConfig = field(default_factory=EvaluateConfig)


@dataclass
class FinetuneDataConfig:
    source: str = "locuslab/TOFU"
    # Splits of `source` or JSON/JSONL paths, concatenated. TOFU's full set (SPEC §1):
    # retain90 + every task of forget01.
    train: list[str] = field(default_factory=lambda: ["retain90", "forget01"])
    # Drop the rows of these tasks (e.g. ["1"] makes the retain model of forget01 task 1).
    exclude_task_id: list[str] = field(default_factory=list)
    max_length: int = 512


@dataclass
class FinetuneConfig:
    output_dir: str = "runs/finetune"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    training: TrainingConfig = field(
        default_factory=lambda: TrainingConfig(lr=1e-5, epochs=5.0, warmup_epochs=1.0)
    )
    lora: LoraConfig = field(default_factory=LoraConfig)


# ---- scenarios (SPEC §4): continual, real-world, forget sets built from the model ----------


@dataclass
class DownstreamConfig:
    """lm-evaluation-harness tasks scored on the in-memory model (evaluation.downstream)."""

    enabled: bool = True
    # lm-eval task names; the paper's five with its metrics (see evaluation.downstream).
    tasks: list[str] = field(
        default_factory=lambda: ["arc_challenge", "mmlu", "truthfulqa_mc1", "triviaqa", "gsm8k"]
    )
    # Examples per task (a count, or a share when < 1); empty = all of them.
    limit: Optional[float] = None
    # Empty = each task's own default number of few-shot examples.
    num_fewshot: Optional[int] = None
    batch_size: int = 8
    # A folder of extra task YAMLs (lm-eval's include_path), for local or custom tasks.
    include_path: Optional[str] = None
    # Wrap prompts in the tokenizer's chat template (lm-eval's apply_chat_template).
    apply_chat_template: bool = False
    seed: int = 1234


def _continual_unlearn_defaults() -> UnlearnConfig:
    # SPEC §3: forget_coeff 1.0 in the continual scenario, ME+GD included.
    # output_dir is set per task (OUTPUT_DIR/METHOD/task_K).
    return UnlearnConfig(forget_coeff=1.0, output_dir="runs/continual")


@dataclass
class ContinualConfig:
    # The per-task run. Per task k the scenario sets model (task k-1's result), data.task_id
    # ([k]), reference_model and output_dir; everything else applies to every task.
    unlearn: UnlearnConfig = field(default_factory=_continual_unlearn_defaults)
    # Methods to run, each its own chain of tasks; empty = unlearn.method alone.
    methods: list[str] = field(default_factory=list)
    # Tasks of the forget split, unlearned in this order; empty = every task of the split.
    tasks: list[str] = field(default_factory=lambda: ["1", "2", "3"])
    # NPO/DPO/KL reference: false = the previous task's result, true = the original target.
    fix_ref_model: bool = False
    # Model folders to keep: task ids, "last" (the final task's), or "all". The one the next
    # task starts from is kept until that task is done, whatever this says.
    keep_models: list[str] = field(default_factory=lambda: ["last"])
    # Evaluate the original target once too (task 0 of every trajectory).
    evaluate_target: bool = True
    # Evaluate after every task (the trajectory), with unlearn.evaluation's settings (scenario,
    # ds_size, judges...) on the task just unlearned; false = only unlearn.
    evaluate: bool = True
    output_dir: str = "runs/continual"


def _real_world_unlearn_defaults() -> UnlearnConfig:
    # SPEC §4 real-world: every person at once, the neighbours as retain set, ME+GD with
    # lr 5e-6 and forget_coeff 0.5; sequences up to 300 tokens as in the reference.
    return UnlearnConfig(
        method="ME+GD",
        forget_coeff=0.5,
        output_dir="runs/real_world",  # replaced by OUTPUT_DIR/METHOD
        data=DataConfig(source="data/real_world", forget="forget", retain="neighbor", task_id=[],
                        retain_includes_later_tasks=False, max_length=300),
        training=TrainingConfig(lr=5e-6),
    )


@dataclass
class RealWorldConfig:
    # data.source: a folder with forget.json and neighbor.json (+ *_perturbed.json when there),
    # e.g. one written by `unlearnlm build-forget-set`.
    unlearn: UnlearnConfig = field(default_factory=_real_world_unlearn_defaults)
    # Score the target before unlearning too, for the before/after table.
    evaluate_target: bool = True
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    output_dir: str = "runs/real_world"


@dataclass
class BuildForgetSetConfig:
    # The model whose own answers become the forget / neighbour sets.
    model: ModelConfig = field(default_factory=ModelConfig)
    # People (or any entities) to forget, and neighbours to keep; or files of one name a line.
    forget_entities: list[str] = field(default_factory=list)
    neighbor_entities: list[str] = field(default_factory=list)
    forget_entities_file: Optional[str] = None
    neighbor_entities_file: Optional[str] = None
    # Question templates with a {name} slot, asked about every entity.
    templates: list[str] = field(default_factory=lambda: [
        "Who is {name}?",
        "What is {name} best known for?",
        "Where was {name} born?",
        "When was {name} born?",
        "What nationality is {name}?",
    ])
    # Or a JSON/JSONL file of rows {name, question[, golden_answer][, neighbor: true]} (templates unused).
    questions_file: Optional[str] = None
    output_dir: str = "data/real_world_built"
    # Prompt + answer tokens, at most: the evaluation's budget (200), so that evaluating the
    # target regenerates exactly these answers.
    max_length: int = 200
    batch_size: int = 16


@dataclass
class DemoConfig:
    """The paper's fictitious comparison on the embedded model, sized for a 2-core CPU."""

    output_dir: str = "runs/demo"
    model: ModelConfig = field(default_factory=ModelConfig)
    # The fictitious world (scenarios.world): forget = task 1 of `forget_split` (2 authors).
    seed: int = 0
    authors: int = 20
    questions_per_author: int = 5
    forget_split: str = "forget10"
    # Retain set of unlearning and training set of the retain model: the world's retain90 is
    # every author outside forget10's task 1.
    retain_split: str = "retain90"
    # Method names, or "all" (every method the demo offers: scenarios.demo.ALL_METHODS).
    methods: list[str] = field(default_factory=lambda: ["ME+GD", "IDK+AP", "GA+GD", "NPO+GD", "DPO+GD", "IDK+GD",
                                                        "SimNPO+GD", "RMU", "UNDIAL"])
    # Settings of the methods that take some, by method name (method_args.PDU.epsilon=1.0). PDU
    # needs a retain-loss bound, and the demo's 4 epochs end before the paper's 5 of warm-up.
    method_args: dict[str, Any] = field(default_factory=lambda: {"PDU": {"epsilon": 1.0, "dual_warmup_epochs": 1.0}})
    # Target (every author) and retain model (all but the forget authors): same recipe. At lr 3e-4
    # the target learnt the world (forget ROUGE 0.81) but forgot real authors (ROUGE 0, MU 0);
    # at 1e-4 it learns it (0.79) and keeps them (0.67). A cheaper target, the retain model
    # fine-tuned on the forget authors alone, learnt them (0.90) but lost real authors (0.67 ->
    # 0.31) and MU fell below the retain model's, so each model is trained from the base.
    finetune: TrainingConfig = field(default_factory=lambda: TrainingConfig(
        lr=1e-4, epochs=5, per_device_batch_size=10, gradient_accumulation_steps=1, warmup_epochs=0.5,
        weight_decay=0.0))
    unlearn: TrainingConfig = field(default_factory=lambda: TrainingConfig(
        lr=5e-5, epochs=4, per_device_batch_size=5, gradient_accumulation_steps=1, warmup_epochs=1))
    # Rows of each utility set scored (the forget and retain sets are smaller than this).
    ds_size: int = 20
    judges: JudgesConfig = field(default_factory=JudgesConfig)
    # Train the offline NLI judge if no judge loads (a few CPU minutes, cached), in a background
    # process while the target and retain models fine-tune and the methods unlearn (faster on a
    # small CPU; the evaluations wait for it).
    train_judge: bool = True
    judge_in_background: bool = True


C = TypeVar("C")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Turn a YAML value or a command-line string into the field's declared type."""
    tp, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        if optional:
            return None
        raise UserError(f"config key '{key}' may not be empty")
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise UserError(f"config key '{key}' wants true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UserError(f"config key '{key}' wants an integer, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"config key '{key}' wants an integer, got {value!r}") from None
        if not number.is_integer():
            raise UserError(f"config key '{key}' wants an integer, got {value!r}")
        return int(number)
    if tp is float:
        if isinstance(value, bool):
            raise UserError(f"config key '{key}' wants a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"config key '{key}' wants a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"config key '{key}' wants text, got {value!r}")
        if not optional and not str(value).strip():
            raise UserError(f"config key '{key}' may not be empty")
        return str(value)
    if typing.get_origin(tp) is dict:  # free-form settings, typed later by their owner
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' holds settings: write {key}.NAME=value, got {value!r}")
        return copy.deepcopy(value)
    if typing.get_origin(tp) is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):  # "a,b" or "[a, b]" on the command line
            text = value.strip()
            text = text[1:-1] if text.startswith("[") and text.endswith("]") else text
            value = [v for v in (s.strip() for s in text.split(",")) if v]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, item_tp, key) for v in value]
    raise TypeError(f"unsupported config field type {tp!r} for {key}")


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build dataclass ``cls`` from nested dicts, rejecting unknown keys by name."""
    if not isinstance(data, dict):
        raise UserError(f"config section '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys here: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            # A section given in part keeps the rest of its parent's default for it (e.g. the
            # continual scenario's forget_coeff 1.0), not just the section class's defaults.
            factory = fields[name].default_factory
            base = to_dict(factory()) if factory is not dataclasses.MISSING else {}
            section = _deep_merge(base, value) if isinstance(value, dict) else (value or base)
            kwargs[name] = from_dict(tp, section, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain data, each value in its declared type (``epochs=5`` in code and
    ``epochs=5`` on the command line both give 5.0), so equal configs compare and hash equal."""
    data = {}
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif _unwrap_optional(hints[f.name])[0] is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        else:
            value = copy.deepcopy(value)
        data[f.name] = value
    return data


def flatten_keys(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"training": {"lr": 1}} -> {"training.lr": 1}: the dotted keys of the command line."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read config file {path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config file {path}{where} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_preset(name_or_path: str) -> dict[str, Any]:
    """A preset shipped with unlearnlm (by name) or a YAML file (by path)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return read_yaml(path)
    shipped = PRESET_DIR / f"{name_or_path}.yaml"
    if shipped.exists():
        return read_yaml(shipped)
    raise UserError(f"no config preset or file '{name_or_path}'; presets: {', '.join(preset_names())}")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["training.lr=5e-6", "method=IDK+AP"]`` -> nested dict of strings."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"override '{item}' is not of the form key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise UserError(f"override '{item}' has an empty key")
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            existing = node.setdefault(part, {})
            if not isinstance(existing, dict):
                raise UserError(f"override '{item}' conflicts with an earlier override of '{part}'")
            node = existing
        node[parts[-1]] = value
    return tree


def load_config(cls: type[C], preset: Optional[str] = None, overrides: Optional[list[str]] = None) -> C:
    """Defaults of ``cls`` <- preset or YAML file <- command-line overrides."""
    data: dict[str, Any] = {}
    if preset:
        data = resolve_preset(preset)
    if overrides:
        data = _deep_merge(data, parse_overrides(overrides))
    config = from_dict(cls, data)
    validate_config(config)
    return config


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def _finite(value: Optional[float]) -> bool:
    return value is None or math.isfinite(value)


def validate_training(t: TrainingConfig) -> None:
    """Ranges and names of the training options, checked before any model is loaded."""
    _require(math.isfinite(t.lr) and t.lr > 0, f"training.lr must be a positive number, got {t.lr}")
    _require(math.isfinite(t.epochs) and t.epochs > 0, f"training.epochs must be a positive number, got {t.epochs}")
    _require(t.per_device_batch_size >= 1, f"training.per_device_batch_size must be at least 1, got {t.per_device_batch_size}")
    _require(t.gradient_accumulation_steps >= 1,
             f"training.gradient_accumulation_steps must be at least 1, got {t.gradient_accumulation_steps}")
    _require(math.isfinite(t.warmup_epochs) and t.warmup_epochs >= 0,
             f"training.warmup_epochs must be zero or more, got {t.warmup_epochs}")
    _require(math.isfinite(t.weight_decay) and t.weight_decay >= 0,
             f"training.weight_decay must be zero or more, got {t.weight_decay}")
    _require(t.logging_steps >= 1, f"training.logging_steps must be at least 1, got {t.logging_steps}")
    _require(t.save_steps >= 0, f"training.save_steps must be zero or more, got {t.save_steps}")
    _require(math.isfinite(t.save_minutes) and t.save_minutes >= 0,
             f"training.save_minutes must be zero or more, got {t.save_minutes}")
    _require(str(t.bf16).lower() in ("auto", "true", "false", "1", "0", "yes", "no"),
             f"training.bf16 must be auto, true or false, got '{t.bf16}'")
    for name in ("stop_forget_loss_below", "stop_forget_loss_above"):
        _require(_finite(getattr(t, name)), f"training.{name} must be a finite number, got {getattr(t, name)}")
    if t.stop_forget_loss_below is not None and t.stop_forget_loss_above is not None:
        _require(t.stop_forget_loss_below < t.stop_forget_loss_above,
                 "training.stop_forget_loss_below must be less than training.stop_forget_loss_above")
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    optimizers = [o.value for o in OptimizerNames]
    _require(t.optimizer in optimizers, f"unknown training.optimizer '{t.optimizer}'; valid: {', '.join(optimizers)}")
    _require(not _needs_missing_bitsandbytes(t.optimizer),
             f"training.optimizer '{t.optimizer}' needs the bitsandbytes package (pip install bitsandbytes); "
             "adamw_torch needs nothing extra")
    schedulers = [s.value for s in SchedulerType]
    _require(t.lr_scheduler in schedulers,
             f"unknown training.lr_scheduler '{t.lr_scheduler}'; valid: {', '.join(schedulers)}")


def _needs_missing_bitsandbytes(optimizer: str) -> bool:
    """The reference's paged_adamw_32bit and its kin fail only once training starts otherwise."""
    try:
        from transformers.trainer_optimizer import _BITSANDBYTES_OPTIMIZERS
        from transformers.utils import is_bitsandbytes_available
    except ImportError:  # a private list: if it moves, the Trainer reports it later instead
        return False
    return optimizer in {o.value for o in _BITSANDBYTES_OPTIMIZERS} and not is_bitsandbytes_available()


MODEL_DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


def validate_config(config: Any) -> None:
    """Everything about a config that can be wrong without looking at files or models."""
    if hasattr(config, "model"):
        _require(bool(config.model.name_or_path.strip()), "model.name_or_path is empty")
        _require(config.model.dtype in MODEL_DTYPES,
                 f"unknown model.dtype '{config.model.dtype}'; valid: {', '.join(MODEL_DTYPES)}")
    if hasattr(config, "training"):
        validate_training(config.training)
    if hasattr(config, "lora") and config.lora.enabled:  # lora options without LoRA are ignored
        lora = config.lora
        _require(lora.r >= 1, f"lora.r must be at least 1, got {lora.r}")
        _require(lora.alpha > 0, f"lora.alpha must be positive, got {lora.alpha}")
        _require(0 <= lora.dropout < 1, f"lora.dropout must be in [0, 1), got {lora.dropout}")
        _require(bool(lora.target_modules), "lora.target_modules is empty")
    if hasattr(getattr(config, "data", None), "max_length"):
        _require(config.data.max_length >= 1, f"data.max_length must be at least 1, got {config.data.max_length}")
        pad_to = getattr(config.data, "pad_to", None)
        _require(pad_to is None or pad_to >= 1, f"data.pad_to must be at least 1, got {pad_to}")
    if hasattr(config, "output_dir"):
        _require(bool(str(config.output_dir).strip()), "output_dir is empty")
        output = Path(config.output_dir).expanduser()
        _require(not output.exists() or output.is_dir(), f"output_dir {config.output_dir} is a file, not a folder")
    if isinstance(config, UnlearnConfig):
        from .methods.registry import get_method

        get_method(config.method)  # an unknown method lists the valid ones
        method_settings(config)
        _require(math.isfinite(config.beta) and config.beta > 0, f"beta must be a positive number, got {config.beta}")
        _require(_finite(config.forget_coeff), f"forget_coeff must be a finite number, got {config.forget_coeff}")
        _require(math.isfinite(config.regularization_coeff),
                 f"regularization_coeff must be a finite number, got {config.regularization_coeff}")
        if config.eval_every_epoch:
            validate_evaluation(config.evaluation, prefix="evaluation.")
    if isinstance(config, EvaluateConfig):
        validate_evaluation(config)
    for item in dataclasses.fields(config):  # a scenario's per-task run (continual.unlearn, ...)
        if isinstance(getattr(config, item.name), UnlearnConfig):
            validate_config(getattr(config, item.name))


def method_settings(config: UnlearnConfig):
    """``config.method_args`` as the method's typed settings dataclass, defaults filled in;
    a name the method lacks or a bad value is one line naming the method's settings."""
    from .methods.registry import get_method

    method = get_method(config.method)
    cls = method.settings
    names = [f.name for f in dataclasses.fields(cls)]
    valid = (f"its settings: {', '.join(f'{n} (default {getattr(cls(), n)!r})' for n in names)}"
             if names else "it has no settings")
    unknown = sorted(set(config.method_args) - set(names))
    _require(not unknown, f"method {method.name} has no setting '{unknown[0] if unknown else ''}'; {valid}")
    try:
        settings = from_dict(cls, config.method_args, prefix="method_args.")
    except UserError as err:
        raise UserError(f"{err} (method {method.name}; {valid})") from None
    problems = method.settings_problems(settings)
    _require(not problems, f"method {method.name}: {'; '.join(problems)}; {valid}")
    # The top-level beta is NPO's, DPO's, AP's and AltPO's; a method with a beta of its own would ignore it.
    _require(config.beta == UnlearnConfig.beta or "beta" not in names,
             f"method {method.name} takes its beta as method_args.beta (default {getattr(cls(), 'beta', None)}); "
             "the top-level beta is that of NPO, DPO, AP and AltPO")
    return settings


def with_method_settings(config: UnlearnConfig) -> UnlearnConfig:
    """The config with every setting of its method written out (what a run saves)."""
    return dataclasses.replace(config, method_args=to_dict(method_settings(config)))


def validate_evaluation(e: EvaluateConfig, prefix: str = "") -> None:
    _require(e.scenario in ("tofu", "real_world", "custom"),
             f"unknown {prefix}scenario '{e.scenario}'; valid: tofu, real_world, custom")
    _require(e.ds_size >= 0, f"{prefix}ds_size must be zero (all rows) or more, got {e.ds_size}")
    _require(e.max_length >= 2, f"{prefix}max_length must be at least 2, got {e.max_length}")
    for name in ("generation_batch_size", "loss_batch_size"):
        _require(getattr(e, name) >= 1, f"{prefix}{name} must be at least 1, got {getattr(e, name)}")
    _require(e.pad_to is None or e.pad_to >= 1, f"{prefix}pad_to must be at least 1, got {e.pad_to}")
    for name in ("embedder_batch_size", "nli_batch_size"):
        value = getattr(e.judges, name)
        _require(value >= 1, f"{prefix}judges.{name} must be at least 1, got {value}")


def save_config(config: Any, path: str | Path) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))

"""Typed run configuration: dataclasses, YAML presets, ``key=value`` overrides.

A config is a tree of dataclasses. It can be built from a preset shipped in
``unlearnlm/configs/`` (by name) or any YAML file, then overridden from the command line with
dotted keys (``training.lr=5e-6``, ``method=IDK+AP``). Every run writes its resolved config as
YAML next to its results, so ``unlearnlm unlearn --config that.yaml`` repeats it.
"""

from __future__ import annotations

import dataclasses
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


@dataclass
class TrainingConfig:
    lr: float = 1e-5
    epochs: float = 5.0
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    # Warm-up length in epochs (the reference: one epoch of steps).
    warmup_epochs: float = 1.0
    weight_decay: float = 0.01
    optimizer: str = "adamw_torch"
    lr_scheduler: str = "linear"
    seed: int = 1001
    # "auto": bf16 where the hardware supports it, fp32 otherwise.
    bf16: str = "auto"
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    # Forward forget, retain and refusal sequences of a step as one batch (same numbers, faster).
    fuse_forward: bool = True
    progress: bool = True
    # Keep Trainer checkpoints every N optimiser steps so a killed run can resume (0 = only at the end).
    save_steps: int = 0
    # Stop when the forget loss crosses this bound (GA's collapse); empty = never.
    stop_forget_loss_below: Optional[float] = None
    stop_forget_loss_above: Optional[float] = None


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
    output_dir: str = "runs/unlearn"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)


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
        return str(value)
    if typing.get_origin(tp) is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
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
            kwargs[name] = from_dict(tp, value or {}, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


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
    return from_dict(cls, data)


def save_config(config: Any, path: str | Path) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))

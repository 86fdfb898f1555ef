"""The Python API: ``unlearnlm.finetune``, ``unlearnlm.unlearn`` and ``unlearnlm.evaluate``.

Each does what its command does, from a notebook or a script, and returns a ``Result``: the
folder written and its numbers. A run is described as on the command line: a preset (or YAML
file), then a config object, then keyword overrides, each on top of the one before::

    import unlearnlm

    run = unlearnlm.unlearn(preset="tofu", model="runs/target/model", method="IDK+AP",
                            **{"training.lr": 1e-5, "data.task_id": ["1"]})
    scores = unlearnlm.evaluate(run.folder)
    print(scores["MU"], scores["FE"])

A keyword is a config key, dotted for nested ones (``training.lr``); ``model`` may also be a
plain model name or folder (it sets ``model.name_or_path``). Values keep their Python types
(lists, numbers, booleans) or may be strings as on the command line. Every mistake is a one-line
``unlearnlm.errors.UserError`` raised before any model loads. Messages go through ``logging``
(``logging.basicConfig(level=logging.INFO)`` shows them); nothing is printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar

from .config import (
    EvaluateConfig,
    FinetuneConfig,
    UnlearnConfig,
    _deep_merge,
    from_dict,
    resolve_preset,
    to_dict,
    validate_config,
)
from .errors import UserError

C = TypeVar("C")


@dataclass(frozen=True)
class Result:
    """What a call wrote: its folder, and the numbers it wrote there (``train_summary.json`` of a
    training run, ``summary.json`` of an evaluation). ``result["MU"]`` reads a number."""

    folder: Path
    numbers: dict

    def __getitem__(self, key: str) -> Any:
        return self.numbers[key]


def build_config(cls: type[C], preset: Optional[str] = None, config: Optional[C] = None, **overrides: Any) -> C:
    """``cls``'s defaults <- ``preset`` (a shipped preset or YAML file) <- ``config`` <- ``overrides``,
    validated. ``overrides`` are config keys, dotted for nested ones (``training.lr``)."""
    data: dict[str, Any] = resolve_preset(preset) if preset else {}
    if config is not None:
        if not isinstance(config, cls):
            raise UserError(f"config must be a {cls.__name__}, got {type(config).__name__}")
        data = _deep_merge(data, to_dict(config))
    for key, value in overrides.items():
        if key == "model" and isinstance(value, (str, Path)):
            key, value = "model.name_or_path", str(value)
        node = data
        parts = key.split(".")
        if not all(parts):
            raise UserError(f"override '{key}' has an empty key")
        for part in parts[:-1]:
            existing = node.get(part)
            node[part] = dict(existing) if isinstance(existing, dict) else {}
            node = node[part]
        node[parts[-1]] = str(value) if isinstance(value, Path) else value
    built = from_dict(cls, data)
    validate_config(built)
    return built


def _read_json(path: Path) -> dict:
    from .io import read_json

    return read_json(path)


def finetune(config: Optional[FinetuneConfig] = None, *, preset: Optional[str] = None, callbacks=(),
             **overrides: Any) -> Result:
    """Supervised fine-tuning (``unlearnlm finetune``); ``callbacks`` are more TrainerCallbacks."""
    from .training.run import TRAIN_SUMMARY
    from .training.run import finetune as run_finetune

    folder = run_finetune(build_config(FinetuneConfig, preset, config, **overrides), callbacks)
    return Result(folder, _read_json(folder / TRAIN_SUMMARY))


def unlearn(config: Optional[UnlearnConfig] = None, *, preset: Optional[str] = None, callbacks=(),
            **overrides: Any) -> Result:
    """Unlearning (``unlearnlm unlearn``), with the per-epoch evaluation when ``eval_every_epoch``;
    ``callbacks`` are more TrainerCallbacks."""
    from .evaluation.callback import epoch_evaluation
    from .methods import get_method
    from .training.run import TRAIN_SUMMARY
    from .training.run import unlearn as run_unlearn

    built = build_config(UnlearnConfig, preset, config, **overrides)
    get_method(built.method)
    folder = run_unlearn(built, [*epoch_evaluation(built), *callbacks])
    return Result(folder, _read_json(folder / TRAIN_SUMMARY))


def evaluate(model: Optional[str | Path] = None, config: Optional[EvaluateConfig] = None, *,
             preset: Optional[str] = None, **overrides: Any) -> Result:
    """Evaluation (``unlearnlm evaluate MODEL``): ``model`` is a model folder, a hub name, or an
    unlearning run folder (evaluated into RUN/eval with the run's own data)."""
    from .evaluation.seeds import evaluate_any

    summary = evaluate_any(build_config(EvaluateConfig, preset, config, **overrides),
                               str(model) if model is not None else None)
    return Result(Path(summary["output_dir"]), summary)

"""Run-folder identity: whether a folder's saved config.yaml is this config's (a rerun continues
there) or another's (refused), operational options aside."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from ..errors import UserError
from .convert import flatten_keys, to_dict
from .model import ModelConfig, PromptFormatConfig


def without_default_sections(identity: dict, config: Any) -> dict:
    """``identity`` (a ``to_dict``) minus the model's prompt format when it has its default, so
    hashes and saved configs made before the setting existed still match."""
    model = getattr(config, "model", None)
    if isinstance(model, ModelConfig) and model.prompt_format == PromptFormatConfig():
        identity = copy.deepcopy(identity)
        identity.get("model", {}).pop("prompt_format", None)
    return identity


def differing_keys(previous: dict, config: Any, ignore: Callable[[str], bool] = lambda key: False) -> list[str]:
    """Dotted keys whose value in a saved config differs from ``config``'s; a key the saved one
    lacks (a setting added since) counts only when ``config`` gives it a value other than its default."""
    before, now = flatten_keys(previous), flatten_keys(to_dict(config))
    defaults = flatten_keys(to_dict(type(config)())) if dataclasses.is_dataclass(config) else {}
    differing = []
    for key in sorted(set(before) | set(now)):
        if ignore(key) or before.get(key) == now.get(key):
            continue
        if key not in before and key in defaults and defaults[key] == now.get(key):
            continue
        differing.append(key)
    return differing


# Options that change how a run goes, not what it computes: a rerun may change them and continue.
# The bootstrap settings change only the intervals, which are computed again from the records.
OPERATIONAL_KEYS = ("training.progress", "training.save_steps", "training.save_minutes", "training.report_to",
                    "bootstrap.samples", "bootstrap.seed", "bootstrap.level")


def _operational(key: str) -> bool:
    """Also a scenario's per-task run's (continual: unlearn.training.progress)."""
    return any(key == k or key.endswith("." + k) for k in OPERATIONAL_KEYS)


def config_differences(folder: str | Path, config: Any) -> Optional[list[str]]:
    """The dotted keys in which ``folder/config.yaml`` differs from ``config`` (operational
    options aside); None when the folder holds no config.yaml. An unreadable one is a user error."""
    folder = Path(folder)
    saved = folder / "config.yaml"
    if not saved.exists():
        return None
    try:
        previous = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        previous = None
    if not isinstance(previous, dict):
        raise UserError(f"{saved} is unreadable; delete {folder} or choose another output_dir")
    return differing_keys(previous, config, ignore=_operational)


def check_run_folder(output_dir: str | Path, config: Any, what: str = "run") -> bool:
    """Whether ``output_dir`` already belongs to ``config`` (its config.yaml is this config's):
    a rerun with the same config continues there; one with another config is a user error."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"output_dir {output_dir} is a file, not a folder")
    differing = config_differences(output_dir, config)
    if differing:
        article = "an" if what[:1] in "aeiou" else "a"
        raise UserError(
            f"{output_dir} holds {article} {what} with another config (differs in: {', '.join(differing)}); "
            "choose another output_dir or delete that folder"
        )
    return differing is not None

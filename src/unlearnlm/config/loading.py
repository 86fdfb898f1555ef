"""Where a config comes from: the defaults of its dataclasses <- a preset shipped in
``unlearnlm/configs/`` (by name) or any YAML file <- ``key=value`` overrides from the command line
(``training.lr=5e-6``, ``method=IDK+AP``); validated once, here. Every run writes its resolved
config as YAML next to its results, so ``unlearnlm unlearn --config that.yaml`` repeats it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml

from ..errors import UserError
from .convert import C, _deep_merge, from_dict, to_dict
from .validation import validate_config

PRESET_DIR = Path(__file__).parents[1] / "configs"  # unlearnlm/configs: the presets shipped (package data)


def read_yaml(path: str | Path) -> dict[str, Any]:
    from ..io import read_yaml as read_mapping

    try:
        return read_mapping(path)
    except UserError as err:
        raise UserError(f"config file: {err}") from None


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


def save_config(config: Any, path: str | Path) -> None:
    from ..io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))

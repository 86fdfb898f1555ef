"""A config as plain data and back: the dataclass tree <-> nested dicts of YAML values, each value
turned into its field's declared type; unknown keys refused by name."""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

from ..errors import UserError

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

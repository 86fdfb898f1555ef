"""The small helpers every section's checks share: a one-line user error, a section's error named
by where the section sits, settings a command sets itself, seeds in range."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Optional

from ..errors import UserError
from .convert import flatten_keys, to_dict


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def _finite(value: Optional[float]) -> bool:
    return value is None or math.isfinite(value)


def _overwritten(config: Any, default: Any, keys: dict[str, str], what: str, prefix: str = "") -> None:
    """Settings a command sets itself: a value other than the default would be ignored, so it is refused."""
    mine, theirs = flatten_keys(to_dict(config)), flatten_keys(to_dict(default))
    for key, instead in keys.items():
        given = sorted(k for k in mine if (k == key or k.startswith(key + ".")) and mine[k] != theirs.get(k))
        if given:
            raise UserError(f"{prefix}{given[0]}={mine[given[0]]!r} cannot be honoured: {what}; {instead}")


def _seeds_in_range(config: Any, prefix: str = "") -> None:
    """Every seed of a config, at any depth (training.seed, seeds=[...], bootstrap.seed,
    relearn.seed, probes.seed, ...), is zero or more: numpy and torch refuse a negative one, mid-run."""
    for item in dataclasses.fields(config):
        value, key = getattr(config, item.name), prefix + item.name
        if dataclasses.is_dataclass(value):
            _seeds_in_range(value, key + ".")
        elif item.name in ("seed", "seeds") or item.name.endswith("_seed"):
            for seed in value if isinstance(value, list) else [value]:
                _require(not isinstance(seed, int) or seed >= 0, f"{key} must be zero or more, got {seed}")


def _within(prefix: str, check: Callable[[Any], None], section: Any) -> None:
    """Run ``check`` on a nested section; its error names the section."""
    try:
        check(section)
    except UserError as err:
        message = str(err)
        # "training.lr must ..." -> "unlearn.training.lr must ...": the key as the user writes it.
        key = re.match(r"(unknown )?([a-z_]+(?:\.[a-z_]+)*)(?= must|=| is | cannot|\b)", message)
        if prefix and key and ("." in key.group(2) or "_" in key.group(2) or
                               message[key.end(2):].startswith((" must", "="))):
            raise UserError(message[: key.start(2)] + prefix + "." + message[key.start(2):]) from None
        raise UserError(f"{prefix}: {message}" if prefix else message) from None

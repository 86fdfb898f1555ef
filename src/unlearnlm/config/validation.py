"""``validate_config``: the one check of a whole config, at the boundary (load_config, the API's
builder), before any file or model is touched. Each section checks its own fields in its own
``validate``; a command's config checks its sections and what spans them."""

from __future__ import annotations

from typing import Any

from ..io import check_output_path
from .checks import _require, _seeds_in_range
from .evaluation import BootstrapConfig


def validate_config(config: Any):
    """Everything about a config that can be wrong without looking at files or models. Returns
    the method of an UnlearnConfig, resolved once here (None for other configs), for the caller
    to pass on."""
    _seeds_in_range(config)
    if hasattr(config, "output_dir"):  # every command writes one folder
        _require(bool(str(config.output_dir).strip()), "output_dir is empty")
        check_output_path(config.output_dir)
    if isinstance(config, BootstrapConfig):  # the intervals command's own settings: intervals wanted
        config.validate(allow_none=False)
        return None
    validate_own = getattr(config, "validate", None)  # also the configs beside their command (train-judge, sweep)
    return validate_own() if callable(validate_own) else None

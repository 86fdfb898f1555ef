"""What every scenario's output folder shares: it belongs to one config."""

from __future__ import annotations

from pathlib import Path

from ..config import differing_keys, save_config
from ..errors import UserError


def _operational(key: str) -> bool:
    """Options that change how a run goes, not what it computes (progress bars, checkpointing)."""
    from ..training.run import OPERATIONAL_KEYS

    return any(key == k or key.endswith("." + k) for k in OPERATIONAL_KEYS)


def claim_output_folder(output_dir: Path, config, what: str) -> None:
    """Save ``config`` in a new folder; a rerun must bring the same config (it continues the run)."""
    import yaml

    saved = output_dir / "config.yaml"
    if not saved.exists():
        save_config(config, saved)
        return
    try:
        previous = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        previous = None
    if not isinstance(previous, dict):
        raise UserError(f"{saved} is unreadable; delete {output_dir} or choose another output_dir")
    differing = differing_keys(previous, config, ignore=_operational)
    if differing:
        raise UserError(
            f"{output_dir} holds a {what} run with another config (differs in: {', '.join(differing)}); "
            "choose another output_dir or delete that folder"
        )

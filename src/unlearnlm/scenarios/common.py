"""What every scenario's output folder shares: it belongs to one config."""

from __future__ import annotations

from pathlib import Path

from ..config import check_run_folder, save_config


def claim_output_folder(output_dir: Path, config, what: str) -> None:
    """Save ``config`` in a new folder; a rerun must bring the same config (it continues the run)."""
    if not check_run_folder(output_dir, config, f"{what} run"):
        save_config(config, Path(output_dir) / "config.yaml")

"""What every scenario's output folder shares: it belongs to one config."""

from __future__ import annotations

from pathlib import Path

from ..config import flatten_keys, save_config, to_dict
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
    before, now = flatten_keys(previous), flatten_keys(to_dict(config))
    differing = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and not _operational(k))
    if differing:
        raise UserError(
            f"{output_dir} holds a {what} run with another config (differs in: {', '.join(differing)}); "
            "choose another output_dir or delete that folder"
        )


def load_for_scoring(model_config):
    """A model in eval mode (on the GPU when there is one) and its tokenizer."""
    import torch

    from ..training.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_config)
    model = load_model(model_config)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model.eval(), tokenizer


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A Markdown table of ``rows``: columns (key, title); numbers with 4 decimals, missing as '-'."""
    def cell(value) -> str:
        if value is None or value == "":
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(key)) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"

"""Refusal answers for the targeted objectives (IDK, DPO) and the AP regulariser."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import UserError

SHIPPED = Path(__file__).with_name("refusals.txt")


def load_refusals(path: Optional[str] = None) -> list[str]:
    """One refusal per non-empty line; JSON Lines of plain strings are accepted as well."""
    source = Path(path) if path else SHIPPED
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise UserError(f"cannot read refusal file {source}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise UserError(f"refusal file {source}: not UTF-8 text") from None
    answers = []
    for line in lines:
        line = line.strip()
        if len(line) >= 2 and line[0] == line[-1] == '"':
            line = line[1:-1].strip()
        if line:
            answers.append(line)
    if not answers:
        raise UserError(f"refusal file {source} holds no answers")
    return answers

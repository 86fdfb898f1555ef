"""Result tables as text: one cell format and one Markdown table for every table unlearnlm writes."""

from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Mapping, Optional, Sequence


def format_cell(value: Any) -> str:
    """A number with four decimals, other values as they are; nothing (None, "") is "-"."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def number_cell(value: Any) -> str:
    """``format_cell`` for values read back as text (a CSV): what parses as a number gets four decimals."""
    try:
        return format_cell(float(value))
    except (TypeError, ValueError):
        return format_cell(value)


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]], ignore_other_keys: bool = False) -> str:
    """A CSV file's text: a header of ``columns``, then one line per row (dict); a missing key or
    None is an empty cell. A key outside ``columns`` is an error unless ``ignore_other_keys``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), restval="",
                            extrasaction="ignore" if ignore_other_keys else "raise")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def markdown_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]],
                   titles: Optional[Mapping[str, str]] = None, cell=format_cell) -> str:
    """A Markdown table of ``rows`` (dicts) over ``columns``; ``titles`` renames headers."""
    titles = titles or {}
    lines = ["| " + " | ".join(titles.get(c, c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"

"""Crash-safe file writing: every result file appears whole or not at all."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError


def check_output_path(path: str | Path, key: str = "output_dir") -> None:
    """An output folder that cannot be made or written is a one-line error before any work:
    ``path`` (or its nearest existing parent) must be a writable folder."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{key} {path} is a file, not a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{key} {path} cannot be created: {existing} is a file")
    # A probe rather than os.access: it also sees read-only mounts and pseudo file systems, as root too.
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".unlearnlm-probe-").cleanup()
    except OSError as err:
        raise UserError(f"{key} {path} cannot be created or written: {existing}: {err.strerror or err}") from None


def make_output_dir(path: str | Path, key: str = "output_dir") -> Path:
    """``mkdir -p`` whose failure is a one-line error naming the folder."""
    path = Path(path).expanduser()
    check_output_path(path, key)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{key} {path} cannot be created: {err.strerror or err}") from None
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    make_output_dir(path.parent, "folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_csv_row(path: str | Path, row: dict[str, Any]) -> None:
    """Append one row to a results CSV, rewriting it atomically.

    The header is the union of all columns seen so far, so a new metric never misaligns old
    rows, a header is never repeated, and a kill mid-write leaves the previous file intact.
    """
    path = Path(path)
    rows: list[dict[str, Any]] = []
    columns: list[str] = []
    if path.exists():
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    for key in row:
        if key not in columns:
            columns.append(key)
    rows.append({k: ("" if v is None else v) for k, v in row.items()})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def safe_name(text: str) -> str:
    """``text`` as one harmless folder or file name: letters, digits and ``_ . - +`` only.

    For names made from user input (task ids, method names, model names): no path separator,
    no "..", no leading dot or dash, never empty.
    """
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(text)).lstrip(".-")
    name = re.sub(r"\.{2,}", ".", name)
    return name or "_"

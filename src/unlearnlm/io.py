"""Run-folder files: written crash-safe (whole or not at all), read defensively (a missing,
corrupt, truncated or foreign file is one line naming it, never a traceback)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable

import yaml

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
    """``text`` as UTF-8, crash-safe (``atomic_write_bytes``)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path`` (a text,
    a JSON, a PNG: every result file is whole or absent)."""
    path = Path(path)
    make_output_dir(path.parent, "folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
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


_TYPE_NAMES = {dict: "a mapping", list: "a list", str: "text", int: "an integer", float: "a number"}


def _type_name(kind: type) -> str:
    return _TYPE_NAMES.get(kind, kind.__name__)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"cannot read {path}: it does not exist") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text: corrupt, or not written by unlearnlm") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None


def read_json(path: str | Path, kind: type = dict) -> Any:
    """A JSON file of a run folder (summary.json, attacks/summary.json, ...), which must hold a
    ``kind``; a missing, unreadable, corrupt, truncated or wrong-typed one is a UserError naming it."""
    path = Path(path)
    text = _read_text(path)
    if not text.strip():
        raise UserError(f"{path} is empty: not a file unlearnlm wrote")
    try:
        data = json.loads(text)
    except ValueError as err:
        where = f" (line {err.lineno})" if isinstance(err, json.JSONDecodeError) else ""
        raise UserError(f"{path} is corrupt or truncated: not valid JSON{where}") from None
    if not isinstance(data, kind):
        raise UserError(f"{path} holds {_type_name(type(data))} where {_type_name(kind)} belongs: "
                        "it is not a file unlearnlm wrote")
    return data


def read_yaml(path: str | Path, written: bool = False) -> dict[str, Any]:
    """A YAML file of keys (a run's config.yaml, a config file): empty = {}; a missing,
    unreadable, malformed or non-mapping one is a UserError naming it. ``written``: a file
    unlearnlm wrote (it always ends its last line), so one cut short mid-line is refused too."""
    path = Path(path)
    text = _read_text(path)
    if written and not text.strip():
        raise UserError(f"{path} is empty: not a file unlearnlm wrote")
    if written and not text.endswith("\n"):
        raise UserError(f"{path} is truncated (its last line is cut short)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{where} is not valid YAML (corrupt or truncated)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of keys, got {_type_name(type(data))}")
    return data

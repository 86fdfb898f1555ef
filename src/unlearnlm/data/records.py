"""Question–answer records: loading, validation, task selection (docs/formulas.md#data, #scenarios).

A record is a plain dict as it stands in the data file (``question``, ``answer`` and, for
evaluation sets, ``paraphrased_answer``, ``perturbed_answer``...). Records come from a JSON
Lines file, a JSON array file, a folder of such files named by split, or a hub dataset
(``locuslab/TOFU`` with its configs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..errors import UserError

Record = dict

# The retain split that goes with each TOFU task-split forget file (docs/formulas.md#data).
RETAIN_FOR_FORGET = {"forget01": "retain90", "forget05": "retain50", "forget10": "retain10"}


def read_records_file(path: str | Path) -> list[Record]:
    """Read a JSON Lines file (or a JSON array file) into a list of dicts."""
    path = Path(path)
    try:
        # utf-8-sig: a byte-order mark (some editors write one) is not part of the first row.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a JSON or JSON Lines file") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror or err})") from None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: line {err.lineno}: malformed JSON ({err.msg})") from None
        for index, row in enumerate(rows, start=1):
            if not isinstance(row, dict):
                raise UserError(f"{path}: item {index}: expected an object, got {type(row).__name__}")
        return rows
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: line {line_number}: malformed JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}: line {line_number}: expected an object, got {type(row).__name__}")
        row.setdefault("_line", line_number)
        rows.append(row)
    return rows


def _where(origin: str, row: Record, index: int) -> str:
    line = row.get("_line")
    return f"{origin}: line {line}" if line is not None else f"{origin}: row {index + 1}"


# Keys a row may carry beyond question and answer, and the type each must have when present.
# Perturbed lists may differ in length from row to row: each row is scored on its own list.
TEXT_KEYS = ("question", "answer", "paraphrased_answer", "paraphrased_question",
             "original_answer", "golden_answer", "name")
LIST_KEYS = ("perturbed_answer",)
SAFE_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]*")


def _check_value(key: str, value, where: str, text_keys: Iterable[str] = TEXT_KEYS) -> None:
    if key in LIST_KEYS:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise UserError(f"{where}: key '{key}' must be a non-empty list of strings")
    elif key == "task_id":
        if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip():
            raise UserError(f"{where}: key 'task_id' must be a non-empty string or an integer, got {value!r}")
        # Task ids name run folders (task_K): no path separators, "..", or leading dashes.
        if not SAFE_TASK_ID.fullmatch(str(value)):
            raise UserError(f"{where}: task_id {value!r} may hold only letters, digits, spaces and _ . - "
                            "(starting with a letter or digit)")
    elif key == "facts":  # fact recall: one list of phrases per part of the fact, any phrase states it
        if not isinstance(value, list) or not value or not all(
                isinstance(part, list) and part and all(isinstance(v, str) and v.strip() for v in part)
                for part in value):
            raise UserError(f"{where}: key 'facts' must be a non-empty list of non-empty lists of phrases "
                            '(e.g. [["Bergen"], ["24 April 1941", "April 24, 1941"]])')
    elif key in text_keys:
        if not isinstance(value, str):
            raise UserError(f"{where}: key '{key}' must be a string, got {type(value).__name__}")
        if key in ("question", "answer") and not value.strip():
            raise UserError(f"{where}: key '{key}' is empty")


def validate_records(
    rows: Sequence[Record],
    origin: str,
    required: Iterable[str] = ("question", "answer"),
    optional_lists: Iterable[str] = (),
) -> None:
    """Check keys and types; the error names the file, the line and the key.

    Required keys must be present; every known key (TEXT_KEYS, LIST_KEYS, task_id, and the
    extra ``optional_lists``) must have its type wherever it appears.
    """
    required = tuple(required)
    # A required key that is neither a list nor a task id is text, whatever its name.
    text_keys = set(TEXT_KEYS) | {k for k in required if k not in LIST_KEYS and k != "task_id"}
    if not rows:
        raise UserError(f"{origin}: no rows")
    for index, row in enumerate(rows):
        for key in required:
            if key not in row:
                raise UserError(f"{_where(origin, row, index)}: missing key '{key}'")
        for key, value in row.items():
            _check_value(key, value, _where(origin, row, index), text_keys)
        for key in optional_lists:
            if key in row and (not isinstance(row[key], list) or not all(isinstance(v, str) for v in row[key])):
                raise UserError(f"{_where(origin, row, index)}: key '{key}' must be a list of strings")


def _looks_like_path(spec: str) -> bool:
    return spec.endswith((".json", ".jsonl")) or "/" in spec or Path(spec).is_file()


def load_split(
    spec: str,
    source: Optional[str] = None,
    required: Iterable[str] = ("question", "answer"),
) -> list[Record]:
    """Records of ``spec``: a file path, a split in a local folder, or a split of a hub dataset."""
    if not spec:
        raise UserError("empty data split name")
    if _looks_like_path(spec):
        path = Path(spec).expanduser()
        # A relative file name may also be meant inside the source folder (data.forget=forget.json).
        if not path.exists() and not path.is_absolute() and source and Path(source).is_dir():
            path = Path(source) / spec if (Path(source) / spec).exists() else path
        if not path.exists():
            raise UserError(f"data file {spec} does not exist")
        rows = read_records_file(path)
        origin = str(path)
    elif source and Path(source).is_dir():
        candidates = [Path(source) / f"{spec}{ext}" for ext in (".json", ".jsonl")]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            names = sorted({p.stem for p in Path(source).glob("*.json*")})
            raise UserError(f"no split '{spec}' in folder {source}; it holds: {', '.join(names) or 'no JSON files'}")
        rows = read_records_file(found)
        origin = str(found)
    elif source:
        rows = _load_from_hub(source, spec)
        origin = f"{source}:{spec}"
    else:
        raise UserError(f"data split '{spec}' is neither a file nor a split of a named source")
    validate_records(rows, origin, required=required)
    return rows


def _load_from_hub(name: str, config: str) -> list[Record]:
    if Path(name).exists() and not Path(name).is_dir():
        raise UserError(f"data source {name} is a file; name a folder or a hub dataset")
    try:
        import datasets

        dataset = datasets.load_dataset(name, config, split="train")
    except Exception as err:  # the hub raises many types; all mean "could not get it"
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"cannot load split '{config}' of dataset '{name}' from the hub ({first_line[:200]}); "
            "offline, set data.source to a local folder of JSON files"
        ) from None
    return [dict(row) for row in dataset]


def task_ids_of(rows: Sequence[Record]) -> list[str]:
    """Task ids in order of first appearance; rows without one belong to task "1"."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.setdefault(str(row.get("task_id", "1")), None)
    return list(seen)


def select_tasks(rows: Sequence[Record], task_ids: Sequence[str], origin: str = "forget set") -> list[Record]:
    """Rows whose task_id is in ``task_ids`` (all rows when it is empty)."""
    if not task_ids:
        return list(rows)
    wanted = {str(t) for t in task_ids}
    available = task_ids_of(rows)
    missing = sorted(wanted - set(available), key=_task_sort_key)
    if missing:
        raise UserError(
            f"{origin} has no task {missing[0]}; its tasks are {', '.join(sorted(available, key=_task_sort_key))}"
        )
    return [row for row in rows if str(row.get("task_id", "1")) in wanted]


def later_tasks(rows: Sequence[Record], task_ids: Sequence[str]) -> list[str]:
    """Tasks of ``rows`` that come after the last of ``task_ids`` (not yet unlearned)."""
    if not task_ids:
        return []
    last = max(_task_sort_key(str(t)) for t in task_ids)
    return [t for t in task_ids_of(rows) if _task_sort_key(t) > last]


def _task_sort_key(task: str):
    return (0, int(task), "") if str(task).isdigit() else (1, 0, str(task))


def retain_for_task(base_retain: Sequence[Record], forget_rows: Sequence[Record],
                    task_ids: Sequence[str]) -> list[Record]:
    """docs/formulas.md#scenarios: the base retain set plus the forget rows of tasks not yet unlearned."""
    pending = later_tasks(forget_rows, task_ids)
    return list(base_retain) + select_tasks(forget_rows, pending) if pending else list(base_retain)


def default_retain_split(forget_spec: str) -> Optional[str]:
    name = Path(forget_spec).stem if _looks_like_path(forget_spec) else forget_spec
    return RETAIN_FOR_FORGET.get(name.replace("_perturbed", ""))

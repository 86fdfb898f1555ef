"""Plain-text corpora (MUSE, WMDP): loading by hub name, folder or file, and cutting into chunks.

A text set is named by ``CONFIG/SPLIT`` or ``CONFIG`` (split ``train``) of a source, or by a
file. The source is a hub dataset (``muse-bench/MUSE-News``: ``raw/forget``; ``cais/wmdp-corpora``:
``cyber-forget-corpus``) or a local folder in the hub's layout, ``FOLDER/CONFIG/SPLIT.json``
(``.jsonl`` and, for raw text, ``.txt`` too). A file holds JSON rows with the text under a key
(``text`` by default), a JSON array of strings, or (``.txt``) one text.

Unlearning on text trains on plain causal-LM chunks: every text is tokenised without special
tokens, the texts are joined into one token stream, and the stream is cut into chunks of
``chunk_length`` tokens, each led by the tokenizer's BOS when it has one (as MUSE's own
trainer does). The last chunk keeps what is left (MUSE tops it up with the stream's first
tokens; here nothing is counted twice) and is padded per batch, padding never scored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import UserError
from .records import read_records_file

TEXT_FILE_SUFFIXES = (".json", ".jsonl", ".txt")
# Between two texts of one stream: documents stay apart as paragraphs do.
TEXT_SEPARATOR = "\n\n"


def is_text_file(spec: str) -> bool:
    return spec.endswith(TEXT_FILE_SUFFIXES) or Path(spec).expanduser().is_file()


def split_spec(spec: str) -> tuple[str, str]:
    """``raw/forget`` -> (raw, forget); ``cyber-forget-corpus`` -> (cyber-forget-corpus, train)."""
    parts = [p for p in spec.strip().split("/")]
    if len(parts) == 1 and parts[0]:
        return parts[0], "train"
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise UserError(f"text set '{spec}' is neither a file nor CONFIG/SPLIT (e.g. raw/forget) nor CONFIG")


def read_rows_file(path: Path, keys: Sequence[str]) -> list[dict]:
    """Rows of a JSON/JSONL file (a JSON array of strings counts as rows of ``keys[0]``), or a
    ``.txt`` file as one row of ``keys[0]``; every row must hold every key as a string."""
    if path.suffix == ".txt":
        try:
            return [{keys[0]: path.read_text(encoding="utf-8-sig"), "_line": 1}]
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text") from None
        except OSError as err:
            raise UserError(f"{path}: cannot read ({err.strerror or err})") from None
    if path.read_text(encoding="utf-8-sig").lstrip().startswith("["):
        try:
            items = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: line {err.lineno}: malformed JSON ({err.msg})") from None
        if items and all(isinstance(item, str) for item in items):
            return [{keys[0]: item} for item in items]
    return read_records_file(path)


def check_rows(rows: Sequence[dict], origin: str, keys: Sequence[str], nonblank: Sequence[str] = ()) -> None:
    """Every row an object holding every key as a string; the ``nonblank`` keys hold more than whitespace."""
    if not rows:
        raise UserError(f"{origin}: no rows")
    for index, row in enumerate(rows):
        where = f"{origin}: line {row['_line']}" if "_line" in row else f"{origin}: row {index + 1}"
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected an object, got {type(row).__name__}")
        for key in keys:
            if key not in row:
                raise UserError(f"{where}: missing key '{key}'")
            if not isinstance(row[key], str):
                raise UserError(f"{where}: key '{key}' must be a string, got {type(row[key]).__name__}")
            if key in nonblank and not row[key].strip():
                raise UserError(f"{where}: key '{key}' is empty: it tokenises to nothing")


def _listing(names: list[str], most: int = 12) -> str:
    shown = ", ".join(names[:most]) or "nothing"
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def _folder_file(folder: Path, config: str, split: str, explicit_split: bool) -> Path:
    """FOLDER/CONFIG/SPLIT.* (or, for a bare CONFIG, FOLDER/CONFIG.*)."""
    if not explicit_split:
        found = next((folder / f"{config}{s}" for s in TEXT_FILE_SUFFIXES if (folder / f"{config}{s}").is_file()), None)
        if found:
            return found
    sub = folder / config
    if not sub.is_dir():
        configs = sorted({p.stem if p.is_file() else p.name for p in folder.iterdir() if not p.name.startswith(".")})
        raise UserError(f"folder {folder} has no config '{config}'; it holds: {_listing(configs)}")
    found = next((sub / f"{split}{s}" for s in TEXT_FILE_SUFFIXES if (sub / f"{split}{s}").is_file()), None)
    if found is None:
        splits = sorted({p.stem for p in sub.iterdir() if p.suffix in TEXT_FILE_SUFFIXES})
        raise UserError(f"config '{config}' of {folder} has no split '{split}'; "
                        f"it holds: {_listing(splits)}")
    return found


def _from_hub(name: str, config: str, split: str) -> list[dict]:
    try:
        import datasets

        dataset = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # the hub raises many types (unknown config or split, no network): all one line
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"cannot load config '{config}' split '{split}' of dataset '{name}' ({first_line[:200]}); "
            "offline, name a local folder in the hub's layout (FOLDER/CONFIG/SPLIT.json)"
        ) from None
    return [dict(row) for row in dataset]


def load_rows(spec: str, source: str | None, keys: Sequence[str] = ("text",),
              nonblank: Sequence[str] = ()) -> list[dict]:
    """Rows of a text or QA set: a file, ``CONFIG/SPLIT`` of a local folder, or of a hub dataset
    (the ``nonblank`` keys must hold more than whitespace)."""
    keys = tuple(keys)
    if not spec or not str(spec).strip():
        raise UserError("empty text set name")
    if is_text_file(spec):
        path = Path(spec).expanduser()
        if not path.exists() and source and Path(source).is_dir() and (Path(source) / spec).exists():
            path = Path(source) / spec
        if not path.is_file():
            raise UserError(f"data file {spec} does not exist")
        rows, origin = read_rows_file(path, keys), str(path)
    else:
        config, split = split_spec(spec)
        if not source:
            raise UserError(f"text set '{spec}' needs a source (a hub dataset or a folder)")
        if Path(source).expanduser().is_dir():
            path = _folder_file(Path(source).expanduser(), config, split, explicit_split="/" in spec)
            rows, origin = read_rows_file(path, keys), str(path)
        elif Path(source).expanduser().exists():
            raise UserError(f"data source {source} is a file; name a folder or a hub dataset")
        else:
            rows, origin = _from_hub(source, config, split), f"{source}:{config}/{split}"
    check_rows(rows, origin, keys, nonblank)
    return [{k: v for k, v in row.items() if k != "_line"} for row in rows]


def load_texts(spec: str, source: str | None, key: str = "text") -> list[str]:
    return [row[key] for row in load_rows(spec, source, (key,))]


def chunk_token_stream(
    texts: Iterable[str], tokenizer, chunk_length: int, separator: str = TEXT_SEPARATOR
) -> list[tuple[int, ...]]:
    """The texts as one token stream (no special tokens), cut into chunks of ``chunk_length``
    tokens each led by BOS when the tokenizer has one (then ``chunk_length - 1`` text tokens)."""
    if chunk_length < 2:
        raise UserError(f"data.chunk_length must be at least 2, got {chunk_length}")
    text = separator.join(texts)
    stream = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not stream:
        raise UserError("the texts tokenise to nothing (every one is empty): there is nothing to train on")
    bos = tokenizer.bos_token_id
    step = chunk_length - 1 if bos is not None else chunk_length
    lead = (bos,) if bos is not None else ()
    return [lead + tuple(stream[start : start + step]) for start in range(0, len(stream), step)]

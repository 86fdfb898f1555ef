"""An evaluation folder, read and written in one place: what ``unlearnlm evaluate`` writes there
and every reader of it (intervals, report, seeds, attacks, scenarios) goes through here.

    records/SET.jsonl   one line per row of set SET (``records_path``)
    summary.json        the numbers (``load_summary`` checks the shape every reader relies on)
    results.csv         one row per evaluation, appended
    config.yaml         the resolved EvaluateConfig (``read_evaluation_config``)

A training run folder (model/ and config.yaml) holds its evaluation in eval/ (``run_folder_of``).
Every reader refuses a corrupt, truncated or foreign file with one line naming it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import EvaluateConfig, from_dict, save_config
from ..data.records import read_records_file
from ..errors import UserError
from ..io import append_csv_row, atomic_write_json, atomic_write_jsonl, read_json, read_yaml
from . import metrics as M
from . import statistics as S

EVAL_SUMMARY = "summary.json"
RESULTS_CSV = "results.csv"
RECORDS_DIR = "records"
# The summary keys that must hold a number (or null): every set metric's and aggregate's name.
_NUMBER_KEYS = {m.name for m in M.REGISTRY} | {a.name for a in M.AGGREGATES}


def run_folder_of(path: str | Path) -> Optional[Path]:
    """The training run folder when ``path`` is one (it holds model/ and config.yaml)."""
    path = Path(path).expanduser()
    return path if (path / "model" / "config.json").exists() and (path / "config.yaml").exists() else None


def run_data_settings(run_folder: Optional[Path]) -> dict:
    """The ``data`` section of a training run's config.yaml (empty when there is none)."""
    if run_folder is None:
        return {}
    data = read_yaml(run_folder / "config.yaml", written=True).get("data")
    if data is not None and not isinstance(data, dict):
        raise UserError(f"{run_folder / 'config.yaml'}: 'data' is not a section of keys: not a run's config")
    return data or {}


def epoch_evaluations(eval_folder: str | Path) -> list[Path]:
    """The eval/epoch_K folders holding a summary, in epoch order (one whose K is no number last)."""
    return sorted((p for p in Path(eval_folder).glob("epoch_*") if (p / EVAL_SUMMARY).exists()), key=_epoch_key)


def _epoch_key(folder: Path) -> float:
    try:
        return float(folder.name.split("_", 1)[1])
    except (IndexError, ValueError):
        return float("inf")


def evaluation_of(run_folder: Path) -> Path | None:
    """The folder of a run's evaluation: eval/ itself, else its last epoch_K."""
    eval_folder = run_folder / "eval"
    if (eval_folder / EVAL_SUMMARY).exists():
        return eval_folder
    epochs = [p for p in eval_folder.glob("epoch_*") if (p / EVAL_SUMMARY).exists()]
    return max(epochs, key=_epoch_key) if epochs else None


def read_evaluation_config(folder: str | Path) -> EvaluateConfig:
    """FOLDER/config.yaml as an EvaluateConfig. A relative path in it (saved by an older version)
    is taken relative to FOLDER, else to the run folder above it, never to the current folder."""
    folder = Path(folder).expanduser().resolve()
    path = folder / "config.yaml"
    try:
        config = from_dict(EvaluateConfig, read_yaml(path, written=True))
    except UserError as err:
        message = str(err)
        raise UserError(message if str(path) in message else f"{path}: {message}") from None

    def locate(relative: Path) -> Path:
        return next((base / relative for base in (folder, folder.parent) if (base / relative).exists()),
                    folder / relative)

    return paths_resolved(config, locate)


def paths_resolved(config: EvaluateConfig, locate: Callable[[Path], Path]) -> EvaluateConfig:
    """Each path setting that names an existing file or folder (``locate`` finds a relative one)
    as an absolute path; a hub name, a split name or a path that exists nowhere is left as it is."""

    def absolute(value: Optional[str]) -> Optional[str]:
        if not value:
            return value
        path = Path(value).expanduser()
        found = path if path.is_absolute() else locate(path)
        return str(found.resolve()) if found.exists() else value

    data = config.data
    return replace(
        config, model=replace(config.model, name_or_path=absolute(config.model.name_or_path)),
        data=replace(data, source=absolute(data.source), holdout=absolute(data.holdout),
                     custom_forget=[absolute(f) for f in data.custom_forget],
                     custom_retain=[absolute(f) for f in data.custom_retain]),
        retain_eval=absolute(config.retain_eval),
        privacy=replace(config.privacy, reference_eval=absolute(config.privacy.reference_eval)))


def load_summary(folder: str | Path, name: str = EVAL_SUMMARY) -> dict:
    """An evaluation folder's summary.json (or a seeds folder's ``name``), checked for the shape
    every reader relies on: a corrupt, truncated or foreign one is one line naming the file."""
    path = Path(folder) / name
    summary = read_json(path)
    sets = summary.get("sets")
    if not isinstance(sets, dict) or not all(isinstance(r, dict) and isinstance(r.get("metrics", {}), dict)
                                             for r in sets.values()):
        raise UserError(f"{path}: 'sets' is not a mapping of sets to their metrics: not an evaluation summary")
    for key, value in summary.items():
        if key in _NUMBER_KEYS:
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise UserError(f"{path}: '{key}' is {value!r}, not a number: not an evaluation summary")
    for key, kind in (("scenario", str), ("intervals", dict), ("skipped", list), ("judges", dict)):
        if key in summary and not isinstance(summary[key], kind):
            raise UserError(f"{path}: '{key}' has the wrong type ({type(summary[key]).__name__}): "
                            "not an evaluation summary")
    return summary


def interval_values(summary: dict) -> dict[str, Optional[list[float]]]:
    """{MU, FE, ..., SET/METRIC: [low, high]} of a summary (empty without intervals)."""
    return (summary.get("intervals") or {}).get("values") or {}


def flat_numbers(summary: dict, with_intervals: bool = True) -> dict[str, Any]:
    """The summary's numbers as one flat row: MU, FE, ..., SET/METRIC (for CSV and tables), each
    followed by KEY_low and KEY_high when the summary holds its interval."""
    row = {a.name: summary[a.name] for a in M.AGGREGATES if a.name in summary}
    for name, result in summary["sets"].items():
        for metric, value in result["metrics"].items():
            row[f"{name}/{metric}"] = value
    bounds = interval_values(summary) if with_intervals else {}
    if not bounds:
        return row
    with_bounds = {}
    for key, value in row.items():
        with_bounds[key] = value
        if bounds.get(key):
            with_bounds[f"{key}_low"], with_bounds[f"{key}_high"] = bounds[key]
    return with_bounds


def records_path(folder: str | Path, set_name: str) -> Path:
    """FOLDER/records/SET.jsonl: the per-row records of one set (``:`` and ``/`` of a set's name
    become ``_`` in its file name)."""
    return Path(folder) / RECORDS_DIR / f"{set_name.replace(':', '_').replace('/', '_')}.jsonl"


def write_summary(folder: str | Path, summary: dict, name: str = EVAL_SUMMARY) -> None:
    """FOLDER/summary.json (or a seeds folder's ``name``), written whole or not at all."""
    atomic_write_json(Path(folder) / name, summary)


def read_set_rows(folder: str | Path) -> list[S.SetRows]:
    """An evaluation folder's sets with their per-row records (records/SET.jsonl)."""
    folder = Path(folder)
    summary = load_summary(folder)
    set_rows = []
    for name, result in summary.get("sets", {}).items():
        path = records_path(folder, name)
        if not path.exists():
            raise UserError(f"{path} is missing: intervals and paired comparisons need the per-row records")
        records = read_records_file(path)
        if isinstance(result.get("rows"), int) and len(records) != result["rows"]:
            raise UserError(f"{path} holds {len(records)} rows where {folder / EVAL_SUMMARY} counts {result['rows']}: "
                            "the records are incomplete, and intervals from them would not be the summary's; "
                            "evaluate again")
        set_rows.append(S.SetRows(name, result.get("role", "retain"), records))
    return set_rows


def forget_set_name(folder: Path) -> str:
    """The forget set of an evaluation folder: ``forget``, else its first forget-role set."""
    sets = load_summary(folder).get("sets", {}) if (folder / EVAL_SUMMARY).exists() else {}
    names = [n for n, r in sets.items() if r.get("role") == "forget"]
    return "forget" if "forget" in names or not names else names[0]


def read_retain_ratios(path: str) -> list[float]:
    """R values of a retain model's forget set: its evaluation folder or its forget records file."""
    target = Path(path).expanduser()
    if target.is_dir():
        target = records_path(target, forget_set_name(target))
    if not target.exists():
        raise UserError(f"retain_eval: {target} does not exist; run `unlearnlm evaluate` on the retain model first")
    rows = read_records_file(target)
    ratios = []
    for index, row in enumerate(rows, start=1):
        value = row.get("truth_ratio")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UserError(f"retain_eval: {target}: line {index}: no numeric 'truth_ratio'")
        ratios.append(float(value))
    if not ratios:
        raise UserError(f"retain_eval: {target} holds no rows")
    return ratios


def write_outputs(config: EvaluateConfig, sets, summary: dict, csv_path: Optional[str | Path] = None) -> Path:
    output = Path(config.output_dir)
    for eval_set, records in sets:
        atomic_write_jsonl(records_path(output, eval_set.name), records)
    save_config(config, output / "config.yaml")
    write_summary(output, summary)
    row = {
        "evaluated_at": summary["evaluated_at"],
        "model": summary["model"],
        "scenario": summary["scenario"],
        **{k: v for k, v in summary.items() if k in ("epoch", "step", "tag", "method", "task")},
        "embedder": summary["judges"]["embedder"] or "none",
        "nli": summary["judges"]["nli"] or "none",
        **flat_numbers(summary),
        "output_dir": summary["output_dir"],
    }
    append_csv_row(csv_path or output / RESULTS_CSV, row)
    return output

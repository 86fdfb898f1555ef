"""A reported run, loaded: an evaluation folder, an unlearning run folder (its eval/ and
eval/epoch_K), a seeds folder (its aggregate), or open-unlearning's own results; and the
answers of every run side by side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import UserError
from ...io import read_yaml
from ..runs import EVAL_SUMMARY, epoch_evaluations, evaluation_of, interval_values, load_summary, records_path


@dataclass
class RunResult:
    name: str
    folder: Path
    method: str
    summary: dict  # the numbers shown in the table
    trajectory: list[dict] = field(default_factory=list)  # epoch summaries, in epoch order
    summary_folder: Path | None = None  # the evaluation folder holding the summary's records
    seed_evaluations: list[Path] = field(default_factory=list)  # a seeds folder: each seed's evaluation
    external: bool = False  # open-unlearning's own results: only its numbers (summary["open_unlearning"])

    @property
    def judges(self) -> tuple[str, str]:
        judges = self.summary.get("judges", {})
        return judges.get("embedder") or "none", judges.get("nli") or "none"

    @property
    def intervals(self) -> dict:
        return interval_values(self.summary)


def _method_of(folder: Path) -> str:
    for config in (folder / "config.yaml", folder.parent / "config.yaml"):
        if config.exists():
            method = read_yaml(config, written=True).get("method")
            if method:
                return str(method)
    return ""


def _external_run(path: Path) -> RunResult | None:
    """open-unlearning's results at ``path`` (its file, or a folder with one and no summary.json)."""
    from .. import open_unlearning as OU

    files = (OU.SUMMARY_FILE, OU.EVAL_FILE)
    if path.is_file() and path.name in files:
        folder = path.parent
    elif path.is_dir() and not (path / EVAL_SUMMARY).exists() and not (path / "eval").is_dir() \
            and any((path / f).is_file() for f in files):
        folder = path
    else:
        return None
    name = folder.resolve().name or str(folder)
    return RunResult(name, folder, "open-unlearning", {"open_unlearning": OU.read_results(path)}, external=True)


def load_run(path: str | Path) -> RunResult:
    folder = Path(path).expanduser()
    external = _external_run(folder)
    if external is not None:
        return external
    if not folder.is_dir():
        raise UserError(f"report: {path} is not a folder")
    from ..seeds import SEEDS_SUMMARY, seed_folders

    if (folder / SEEDS_SUMMARY).exists():  # one method, several seeds: the aggregate
        evaluations = [evaluation_of(f) for _, f in seed_folders(folder)]
        first = seed_folders(folder)[0][1] if seed_folders(folder) else folder
        return RunResult(folder.name, folder, _method_of(first), load_summary(folder, SEEDS_SUMMARY),
                         seed_evaluations=[e for e in evaluations if e is not None])
    eval_folder = folder if (folder / EVAL_SUMMARY).exists() else folder / "eval"
    epochs = epoch_evaluations(eval_folder)
    trajectory = [load_summary(p) for p in epochs]
    if (eval_folder / EVAL_SUMMARY).exists():
        summary, summary_folder = load_summary(eval_folder), eval_folder
    elif trajectory:
        summary, summary_folder = trajectory[-1], epochs[-1]
    else:
        raise UserError(f"report: {path} holds no evaluation (no summary.json); run `unlearnlm evaluate {path}` first")
    name = folder.name if folder.name not in ("eval", "") else folder.resolve().parent.name
    return RunResult(name, folder, _method_of(folder), summary, trajectory, summary_folder)


def answer_examples(runs: Sequence[RunResult], per_set: int = 3) -> list[dict]:
    """The first ``per_set`` questions of the forget and retain sets, with every run's answer."""
    examples = []
    for set_name in ("forget", "retain"):
        answers: dict[str, dict[str, str]] = {}
        truths: dict[str, str] = {}
        order: list[str] = []
        for run in runs:
            path = records_path(run.summary_folder or run.folder, set_name)  # forget, retain: no : or / to replace
            if not path.exists():
                continue
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                question = row.get("question")
                if question is None:
                    continue
                if question not in truths:
                    truths[question] = row.get("ground_truth") or row.get("answer") or ""
                    order.append(question)
                answers.setdefault(question, {})[run.name] = row.get("generation", "")
        for question in order[:per_set]:
            examples.append({"set": set_name, "question": question, "truth": truths[question],
                             "answers": answers[question]})
    return examples

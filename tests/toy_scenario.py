"""A toy scenario, as a user would add one: this module (its settings and its run function) and
one registry entry (``scenarios.registry.SCENARIOS["count-words"] = SCENARIO``). It counts the
words of a QA file's answers; no model is involved."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from unlearnlm.data.records import load_split
from unlearnlm.errors import UserError
from unlearnlm.io import atomic_write_json
from unlearnlm.scenarios.registry import Scenario


@dataclass
class CountWordsConfig:
    rows: str = "forget.json"  # a JSON/JSONL file of question/answer rows
    at_least: int = 1  # count answers of at least this many words
    output_dir: str = "runs/count-words"

    def validate(self) -> None:  # called by config.validate_config, at the API's boundary
        if self.at_least < 0:
            raise UserError(f"at_least must be zero or more, got {self.at_least}")


def count_words(config: CountWordsConfig) -> tuple[Path, str]:
    rows = load_split(config.rows, None, required=("question", "answer"))
    counted = [r for r in rows if len(r["answer"].split()) >= config.at_least]
    folder = Path(config.output_dir)
    atomic_write_json(folder / "summary.json", {"rows": len(rows), "counted": len(counted)})
    return folder, f"{len(counted)} of {len(rows)} answers have at least {config.at_least} words"


SCENARIO = Scenario(CountWordsConfig, count_words, "count the words of a QA file's answers", "summary.json")

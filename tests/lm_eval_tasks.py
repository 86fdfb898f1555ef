"""Local lm-eval multiple-choice tasks for the tests: a task's YAML and its JSON Lines data."""

from __future__ import annotations

import json
from pathlib import Path

TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
"""
METRIC_YAML = """  - metric: {metric}
    aggregation: mean
    higher_is_better: true
"""


def write_task(folder: Path, name: str, docs, metrics=("acc",)) -> Path:
    """lm-eval task ``name`` in ``folder``: ``name``.yaml scoring ``metrics`` and ``name``.jsonl holding
    one "Pick one." question per (choices, gold index) in ``docs``."""
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"question": "Pick one.", "choices": c, "label": g}) + "\n"
                            for c, g in docs))
    (folder / f"{name}.yaml").write_text(TASK_YAML.format(name=name, data=data)
                                         + "".join(METRIC_YAML.format(metric=m) for m in metrics))
    return folder

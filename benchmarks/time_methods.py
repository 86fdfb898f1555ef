"""Seconds of training per method on the tiny random Llama (tests' data), relative to GA+GD:
what each added method costs the demo, roughly. Usage: python benchmarks/time_methods.py [METHOD ...]"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import conftest  # noqa: E402

from unlearnlm.config import UnlearnConfig, from_dict  # noqa: E402
from unlearnlm.tiny import make_tiny_model  # noqa: E402
from unlearnlm.training.run import unlearn  # noqa: E402

METHODS = ["GA+GD", "NPO+GD", "SimNPO+GD", "RMU", "UNDIAL", "WGA+GD", "SatImp+GD", "CE-U", "PDU+GD", "TaskVector"]
EXTRA = {"PDU+GD": {"epsilon": 0.5}, "RMU": {"layer": 0}}


def main(methods: list[str]) -> None:
    base = Path(tempfile.mkdtemp(prefix="time-methods-"))
    model = make_tiny_model(base / "tiny", conftest._tiny_texts())
    data = base / "qa"
    data.mkdir()
    rows = conftest.qa_rows()
    conftest.write_jsonl(data / "forget.json", [{"task_id": "1", "question": r["question"], "answer": r["answer"]}
                                                for r in rows[:12]])
    conftest.write_jsonl(data / "retain.json", [{"question": r["question"], "answer": r["answer"]} for r in rows[12:]])
    seconds = {}
    for method in methods:
        config = from_dict(UnlearnConfig, {
            "method": method, "method_args": EXTRA.get(method, {}), "output_dir": str(base / method),
            "model": {"name_or_path": str(model)},
            "data": {"source": str(data), "forget": "forget", "retain": "retain", "task_id": ["1"]},
            "training": {"lr": 1e-3, "epochs": 10, "per_device_batch_size": 4, "gradient_accumulation_steps": 1,
                         "warmup_epochs": 0, "progress": False, "save_minutes": 0},
        })
        summary = json.loads((unlearn(config) / "train_summary.json").read_text())
        seconds[method] = summary["wall_seconds"]
    reference = seconds.get("GA+GD")
    for method, value in seconds.items():
        ratio = f"{value / reference:.2f}x GA+GD" if reference else ""
        print(f"{method:12s} {value:7.2f} s  {ratio}")


if __name__ == "__main__":
    main(sys.argv[1:] or METHODS)

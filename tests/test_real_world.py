"""Real-world scenario end to end on the tiny model: a forget set built from the model itself,
unlearned, scored on the QA sets (real-world form) and on a local lm-eval task."""

from __future__ import annotations

import csv
import json

import pytest
from test_continual import FakeEmbedder, FakeNLI
from test_downstream import write_choice_task

from unlearnlm.config import BuildForgetSetConfig, RealWorldConfig, from_dict
from unlearnlm.errors import UserError
from unlearnlm.evaluation.evaluate import Judges
from unlearnlm.scenarios.forget_set_builder import build_forget_set
from unlearnlm.scenarios.real_world import run_config, run_real_world


@pytest.fixture(scope="module")
def built_world(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("built")
    return build_forget_set(from_dict(BuildForgetSetConfig, {
        "model": {"name_or_path": str(tiny_model)},
        "forget_entities": ["alice", "bob"], "neighbor_entities": ["carol", "dave"],
        "templates": ["Where was {name} born?", "What is the favourite colour of {name}?"],
        "output_dir": str(folder / "data"), "max_length": 28,
    }))


def real_world_config(tiny_model, data, out, tasks_folder) -> RealWorldConfig:
    return from_dict(RealWorldConfig, {
        "output_dir": str(out),
        "unlearn": {
            "model": {"name_or_path": str(tiny_model)},
            "data": {"source": str(data)},
            "training": {"lr": 3e-3, "epochs": 1, "per_device_batch_size": 4, "gradient_accumulation_steps": 1,
                         "warmup_epochs": 0, "progress": False},
            "evaluation": {"max_length": 28},
        },
        "downstream": {"tasks": ["tiny_choice"], "include_path": str(tasks_folder)},
    })


def test_real_world_run_on_a_built_forget_set(tiny_model, built_world, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (tmp_path / "tasks").mkdir()
    tasks = write_choice_task(tmp_path / "tasks")
    config = real_world_config(tiny_model, built_world, tmp_path / "out", tasks)
    judges = Judges(FakeEmbedder(), FakeNLI())
    # Every person at once, the neighbours as retain set.
    run = run_config(config)
    assert run.data.task_id == [] and run.data.retain == "neighbor" and run.forget_coeff == 0.5
    folder = run_real_world(config, judges=judges)
    with open(folder / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model"] for r in rows] == ["target", "ME+GD"]
    for row in rows:
        assert row["MU"] != "" and row["FE"] != "" and row["embedder"] == "fake-embedder"
        assert 0.0 <= float(row["downstream/tiny_choice/acc"]) <= 1.0
    summary = json.loads((folder / "ME+GD" / "eval" / "summary.json").read_text())
    assert summary["scenario"] == "real_world" and set(summary["sets"]) == {"neighbor", "forget"}
    # The built files have no perturbed answers: the Truth ratio is skipped, and said so.
    assert any("truth_ratio" in s and "forget" in s for s in summary["skipped"])
    # The target regenerates its own greedy answers: it knows its forget set word for word.
    target = json.loads((folder / "target" / "eval" / "summary.json").read_text())
    assert target["sets"]["forget"]["metrics"]["rouge"] == 1.0
    assert "| target |" in (folder / "results.md").read_text()
    # A rerun finds every stage done and gives the same table.
    before = (folder / "results.csv").read_text()
    run_real_world(config, judges=judges)
    assert (folder / "results.csv").read_text() == before


def test_real_world_needs_a_data_folder(tiny_model, tmp_path):
    config = from_dict(RealWorldConfig, {"unlearn": {"model": {"name_or_path": str(tiny_model)},
                                                     "data": {"source": str(tmp_path / "nowhere")}}})
    with pytest.raises(UserError, match="is not a folder"):
        run_real_world(config)

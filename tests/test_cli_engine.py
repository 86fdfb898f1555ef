"""The engine through its command line: fine-tune a tiny model, then unlearn from it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from unlearnlm.cli import main
from unlearnlm.config import UnlearnConfig, load_config

FAST = ["training.epochs=1", "training.per_device_batch_size=4", "training.gradient_accumulation_steps=1",
        "training.warmup_epochs=0", "training.progress=false"]


def test_finetune_then_unlearn_from_local_json(tiny_model, qa_folder, tmp_path, capsys):
    target = tmp_path / "target"
    code = main(["finetune", f"model.name_or_path={tiny_model}", f"data.source={qa_folder}",
                 "data.train=forget,retain", f"output_dir={target}", "training.lr=1e-2", *FAST])
    assert code == 0
    assert (target / "model" / "model.safetensors").exists()
    rows = json.loads((target / "train_summary.json").read_text())["rows"]
    assert rows == 20
    run = tmp_path / "run"
    code = main(["unlearn", "-c", "tofu", f"model.name_or_path={target / 'model'}", f"data.source={qa_folder}",
                 "data.forget=forget.json", "data.retain=retain.json", "data.task_id=2", "method=IDK+AP",
                 f"output_dir={run}", *FAST])
    assert code == 0
    assert "unlearned model written to" in capsys.readouterr().out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["method"] == "IDK+AP" and saved["data"]["task_id"] == ["2"]
    assert saved["training"]["seed"] == 1001  # from the preset
    # The saved config repeats the run: loading it gives the same typed config.
    assert load_config(UnlearnConfig, str(run / "config.yaml")) == load_config(
        UnlearnConfig, "tofu", [f"model.name_or_path={target / 'model'}", f"data.source={qa_folder}",
                                "data.forget=forget.json", "data.retain=retain.json", "data.task_id=2",
                                "method=IDK+AP", f"output_dir={run}", *FAST])
    # A rerun of a finished run folder does nothing.
    assert main(["unlearn", "-c", str(run / "config.yaml")]) == 0
    assert "already holds this finished run" in capsys.readouterr().out


def test_finetune_excludes_a_task_for_the_retain_model(tiny_model, qa_folder, tmp_path):
    code = main(["finetune", f"model.name_or_path={tiny_model}", f"data.source={qa_folder}",
                 "data.train=forget,retain", "data.exclude_task_id=1", f"output_dir={tmp_path / 'r'}", *FAST])
    assert code == 0
    assert json.loads((tmp_path / "r" / "train_summary.json").read_text())["rows"] == 16


@pytest.mark.parametrize("argv, message", [
    (["unlearn", "method=XYZ"], "unknown method 'XYZ'"),
    (["unlearn", "training.lrr=1"], "unknown config key 'training.lrr'"),
    (["unlearn", "training.lr=fast"], "config key 'training.lr' wants a number"),
    (["unlearn", "-c", "nope"], "no config preset or file 'nope'"),
    (["unlearn", "lr"], "not of the form key=value"),
])
def test_bad_options_fail_in_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_console_script_lists_methods():
    result = subprocess.run([sys.executable, "-m", "unlearnlm", "methods"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "ME+GD" in result.stdout and "IDK+AP" in result.stdout and "LLMU" in result.stdout

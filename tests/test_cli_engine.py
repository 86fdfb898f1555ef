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


@pytest.mark.parametrize("argv, expected", [
    (["show-format", "M", "-q", "Q", "-a", "A", "kind=tofu-llama2"],
     {"model": "M", "question": "Q", "answer": "A", "settings": ["kind=tofu-llama2"]}),
    (["evaluate", "M", "--config", "tofu", "ds_size=3"], {"model": "M", "config": "tofu", "overrides": ["ds_size=3"]}),
    (["unlearn", "method=GA", "-c", "tofu", "training.lr=1e-5"],
     {"config": "tofu", "overrides": ["method=GA", "training.lr=1e-5"]}),
    (["attack", "RUN", "-c", "a.yaml", "attacks=relearn"],
     {"run": "RUN", "config": "a.yaml", "overrides": ["attacks=relearn"]}),
    (["train-judge", "steps=3", "--threads", "1", "trainable_layers=2", "--force"],
     {"settings": ["steps=3", "trainable_layers=2"], "threads": 1, "force": True}),
    (["demo", "seeds=[1,2]", "--quick", "ds_size=5"], {"quick": True, "overrides": ["seeds=[1,2]", "ds_size=5"]}),
    (["report", "a", "-o", "out", "b"], {"runs": ["a", "b"], "output": "out"}),
    (["make-world", "out", "seed=1", "authors=8"], {"output_dir": "out", "settings": ["seed=1", "authors=8"]}),
    (["intervals", "EVAL", "samples=200", "level=0.9"], {"folder": "EVAL", "settings": ["samples=200", "level=0.9"]}),
    (["muse", "-c", "muse-news", "train=false"], {"config": "muse-news", "overrides": ["train=false"]}),
    *([[name, "a=1", "--config", "x.yaml", "b=2"], {"config": "x.yaml", "overrides": ["a=1", "b=2"]}]
      for name in ("finetune", "continual", "real-world", "wmdp", "build-forget-set")),
])
def test_overrides_anywhere_on_the_command_line(argv, expected):
    """key=value settings before, between and after options, for every command that takes them."""
    from unlearnlm.cli import parse_arguments

    args = parse_arguments(argv)
    assert args.command == argv[0] and {k: getattr(args, k) for k in expected} == expected


def test_show_format_after_options(tiny_model, capsys):
    assert main(["show-format", str(tiny_model), "-q", "Who?", "-a", "Me.", "kind=tofu-llama2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["format"]["preset"] == "tofu-llama2" and shown["prompt_text"] == "[INST] Who? [/INST]"

"""The Python API on the tiny model: finetune, unlearn and evaluate as functions, with keyword
overrides and config objects; and what the API shares with the command line."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

import unlearnlm
from unlearnlm.api import build_config
from unlearnlm.config import TrainingConfig, UnlearnConfig
from unlearnlm.errors import UserError

FAST = {"training.epochs": 1, "training.per_device_batch_size": 4, "training.gradient_accumulation_steps": 1,
        "training.warmup_epochs": 0, "training.progress": False}


def test_finetune_unlearn_evaluate(tiny_model, qa_folder, tmp_path):
    target = unlearnlm.finetune(model=tiny_model, output_dir=tmp_path / "target",
                                **{"data.source": str(qa_folder), "data.train": ["forget", "retain"],
                                   "training.lr": 1e-2, **FAST})
    assert target.folder == tmp_path / "target" and (target.folder / "model" / "model.safetensors").exists()
    assert target["rows"] == 20 and target.numbers == json.loads((target.folder / "train_summary.json").read_text())

    run = unlearnlm.unlearn(preset="tofu", model=target.folder / "model", method="GA+GD", output_dir=tmp_path / "run",
                            **{"data.source": str(qa_folder), "data.forget": "forget.json",
                               "data.retain": "retain.json",
                               "data.task_id": "2", "training.lr": 1e-5, **FAST})
    saved = yaml.safe_load((run.folder / "config.yaml").read_text())
    assert (saved["method"], saved["training"]["lr"], saved["data"]["task_id"]) == ("GA+GD", 1e-5, ["2"])
    assert saved["training"]["seed"] == 1001  # from the preset
    assert run["method"] == "GA+GD" and run["steps"] == 1  # 4 forget rows of task 2, batches of 4

    scores = unlearnlm.evaluate(run.folder, scenario="custom", ds_size=2, max_length=24,
                                **{"judges.embedder": "none", "judges.nli": "none",
                                   "data.custom_forget": [str(qa_folder / "forget_perturbed.json")],
                                   "data.custom_retain": [str(qa_folder / "retain_perturbed.json")]})
    assert scores.folder == run.folder / "eval"  # a run folder is evaluated into RUN/eval
    assert scores.numbers == json.loads((scores.folder / "summary.json").read_text())
    assert set(scores["sets"]) == {"forget_perturbed", "retain_perturbed"}
    assert 0 <= scores["FE"] <= 1 and scores["FE_n_values"] == 3  # ROUGE, Probability, Truth ratio

    # the commands that read a finished evaluation, as functions too
    bounds = unlearnlm.intervals(run.folder, samples=100, level=0.9)
    assert bounds.numbers == json.loads((scores.folder / "summary.json").read_text())
    assert bounds["intervals"]["level"] == 0.9 and "90%" in bounds.text
    with pytest.raises(UserError, match="samples must be at least 100"):
        unlearnlm.intervals(run.folder, samples=0)
    page = unlearnlm.report([run.folder], tmp_path / "report")
    assert page == tmp_path / "report" / "report.html" and "90%" in page.read_text()

    # one run per seed: the numbers are OUTPUT_DIR/seeds.json
    seeds = unlearnlm.unlearn(preset="tofu", model=target.folder / "model", method="GA+GD", output_dir=tmp_path / "s",
                              seeds=[1, 2], **{"data.source": str(qa_folder), "data.forget": "forget.json",
                                               "data.retain": "retain.json", "data.task_id": "2", **FAST})
    assert seeds.numbers == {"seeds": [1, 2], "runs": ["seed_1", "seed_2"]}
    assert all((seeds.folder / f"seed_{s}" / "train_summary.json").exists() for s in (1, 2))


def test_the_cheap_commands_as_functions(tiny_model, tmp_path):
    listing = unlearnlm.list_methods()
    assert "GA+GD" in listing["methods"] and listing["settings"]["SimNPO"]["beta"] == 4.5
    presets = unlearnlm.list_presets()
    assert "tofu" in presets and presets["demo-quick"].startswith("The demo as a smoke run")
    counts = unlearnlm.make_world(tmp_path / "world", authors=4, questions_per_author=2)
    assert counts["forget01"] == len((tmp_path / "world" / "forget01.json").read_text().splitlines())
    shown = unlearnlm.show_format(tiny_model, "Who?", "Me.", kind="tofu-llama2")
    assert shown["prompt_text"] == "[INST] Who? [/INST]" and shown["model"] == str(tiny_model)
    with pytest.raises(UserError, match="kind"):
        unlearnlm.show_format(tiny_model, kind="llama9")


def _argv(name: str) -> list[str]:
    """A command line of each command, with one override after an option where it takes both."""
    return {"evaluate": ["evaluate", "M", "-c", "tofu", "ds_size=3"], "attack": ["attack", "RUN", "relearn.steps=2"],
            "report": ["report", "A", "B", "-o", "out"], "intervals": ["intervals", "EVAL", "samples=9"],
            "show-format": ["show-format", "M", "-q", "Q", "kind=tags"], "make-world": ["make-world", "W", "seed=2"],
            "train-judge": ["train-judge", "--threads", "1", "steps=3"], "methods": ["methods"],
            "presets": ["presets"], "demo": ["demo", "--quick", "seeds=[1]"]}.get(name, [name, "-c", "x.yaml", "a.b=1"])


FUNCTIONS = {"methods": "list_methods", "presets": "list_presets"}  # unlearnlm.methods is the package


def test_every_command_calls_its_api_function(monkeypatch):
    """One code path: each command hands its parsed arguments to the API function of its name."""
    from unlearnlm import api
    from unlearnlm.cli import all_commands, main
    from unlearnlm.scenarios.registry import SCENARIOS

    calls = []

    def recorder(name):
        def record(*args, **kwargs):
            calls.append((name, args, kwargs))
            if name == "list_methods":
                return {"forget_losses": [], "regularizers": [], "methods": [], "aliases": {}, "settings": {}}
            if name in ("list_presets", "make_world", "show_format"):
                return {}
            return "page" if name == "report" else api.Result(api.Path("F"), {}, "")
        return record

    names = {FUNCTIONS.get(name, name.replace("-", "_")) for name in all_commands()}
    assert names <= set(unlearnlm.__all__)  # every command has its function
    for name in {n for n in names if n.replace("_", "-") not in SCENARIOS} | {"scenario", "demo"}:
        monkeypatch.setattr(api, name, recorder(name))
    for name in all_commands():
        calls.clear()
        assert main(_argv(name)) == 0, name
        (called, args, kwargs), = calls
        scenario = name in SCENARIOS and name != "demo"
        assert called == ("scenario" if scenario else FUNCTIONS.get(name, name.replace("-", "_"))), name
        if scenario:
            assert args == (name,) and kwargs == {"preset": "x.yaml", "a.b": "1"}
    calls.clear()
    main(_argv("evaluate"))
    assert calls == [("evaluate", ("M",), {"preset": "tofu", "ds_size": "3"})]
    calls.clear()
    main(_argv("demo"))
    assert calls == [("demo", (), {"preset": None, "quick": True, "full": False, "seeds": "[1]"})]


def test_config_objects_and_overrides_combine():
    base = UnlearnConfig(method="IDK+AP", training=TrainingConfig(lr=3e-6))
    built = build_config(UnlearnConfig, None, base, model="somewhere/model", **{"training.epochs": "2"})
    assert (built.method, built.training.lr, built.training.epochs) == ("IDK+AP", 3e-6, 2.0)
    assert built.model.name_or_path == "somewhere/model"
    from_preset = build_config(UnlearnConfig, "tofu", None, method="NPO+KL")
    assert from_preset.method == "NPO+KL" and from_preset.training.seed == 1001


@pytest.mark.parametrize("overrides, message", [
    ({"training.lrr": 1}, "unknown config key 'training.lrr'"),
    ({"training.lr": -1}, "training.lr must be a positive number"),
    ({"training.report_to": "tensorboardx"}, "unknown training.report_to 'tensorboardx'"),
])
def test_mistakes_are_user_errors(overrides, message):
    with pytest.raises(UserError, match=message):
        build_config(UnlearnConfig, None, None, **overrides)


def test_unknown_method_is_refused_before_any_work(tmp_path):
    with pytest.raises(UserError, match="unknown method 'XYZ'"):
        unlearnlm.unlearn(method="XYZ", output_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_report_to_names_a_missing_backend_in_one_line(monkeypatch):
    import transformers.integrations

    monkeypatch.setattr(transformers.integrations, "get_available_reporting_integrations", lambda: [])
    with pytest.raises(UserError, match=r"training.report_to 'wandb' needs its package.*pip install wandb"):
        build_config(UnlearnConfig, None, None, **{"training.report_to": "wandb"})
    assert build_config(UnlearnConfig, None, None, **{"training.report_to": "none"}).training.report_to == "none"


def test_report_to_reaches_the_trainer(monkeypatch, tmp_path):
    import os

    from unlearnlm.training import trainer

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    monkeypatch.setattr(trainer, "_tensorboard_dir_set", None)
    assert trainer.training_arguments(TrainingConfig(), tmp_path / "checkpoints", 8).report_to == []
    monkeypatch.setattr(trainer, "TrainingArguments", lambda **kwargs: kwargs)  # no backend need be installed
    args = trainer.training_arguments(TrainingConfig(report_to="tensorboard, wandb"), tmp_path / "checkpoints", 8)
    assert args["report_to"] == ["tensorboard", "wandb"]
    # TensorBoard's events go into the run folder, not the checkpoints that are removed at the end.
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "tensorboard")


def test_only_rank_zero_logs_under_torchrun(monkeypatch, capsys):
    from unlearnlm.cli import process_rank, setup_logging

    message = logging.getLogger("unlearnlm.training.run")
    monkeypatch.setenv("RANK", "1")
    assert process_rank() == 1
    setup_logging()
    message.info("info of rank 1")
    message.warning("a warning from rank 1")
    monkeypatch.setenv("RANK", "0")
    setup_logging()
    message.info("from rank 0")
    out = capsys.readouterr().out
    assert "info of rank 1" not in out and "a warning from rank 1" in out and "from rank 0" in out
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert process_rank() == 2

"""A corpus of bad inputs, each fed through the CLI: one clean line naming the culprit, exit 2,
no traceback, and no model loaded (validation comes first)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unlearnlm.cli import main

QA = {"question": "What is the favourite colour of alice?", "answer": "The favourite colour of alice is red."}


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def work(tmp_path, qa_folder, tiny_model):
    """A run folder with good data files; each case spoils one thing."""
    for name in ("forget.json", "retain.json"):
        (tmp_path / name).write_text((qa_folder / name).read_text())
    (tmp_path / "model_path.txt").write_text(str(tiny_model))
    return tmp_path


def unlearn_args(work: Path, *extra: str) -> list[str]:
    return ["unlearn", f"model.name_or_path={(work / 'model_path.txt').read_text()}", f"data.source={work}",
            "data.forget=forget.json", "data.retain=retain.json", "data.task_id=1", "method=GA+GD",
            f"output_dir={work / 'out'}", *extra]


def spoil(name: str, text: str | bytes):
    def setup(work: Path) -> list[str]:
        path = work / name
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
        return []
    return setup


def overrides(*items: str):
    return lambda work: list(items)


def write_then(name: str, text: str, *items: str):
    def setup(work: Path) -> list[str]:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
        return [item.format(work=work) for item in items]
    return setup


def mkdir_then(name: str, *items: str):
    def setup(work: Path) -> list[str]:
        (work / name).mkdir(parents=True, exist_ok=True)
        return [item.format(work=work) for item in items]
    return setup


# id -> (setup(work) -> extra overrides, substrings the error line must hold)
CASES = {
    "malformed-jsonl": (spoil("forget.json", jsonl([dict(QA, task_id="1")]) + '{"question": "q", "answer": }\n'),
                        ["forget.json", "line 2", "malformed JSON"]),
    "malformed-json-array": (spoil("forget.json", '[{"question": "q", "answer": "a"'), ["forget.json",
                                                                                        "malformed JSON"]),
    "row-not-object": (spoil("forget.json", jsonl([QA, "text"])), ["forget.json", "line 2", "expected an object"]),
    "array-item-not-object": (spoil("forget.json", '[{"question": "q", "answer": "a"}, 3]'), ["forget.json", "item 2"]),
    "missing-answer": (spoil("forget.json", jsonl([QA, QA, {"question": "q"}])), ["forget.json", "line 3", "'answer'"]),
    "missing-question-retain": (spoil("retain.json", jsonl([QA, {"answer": "a"}])), ["retain.json", "line 2",
                                                                                     "'question'"]),
    "answer-wrong-type": (spoil("forget.json", jsonl([dict(QA, answer=42)])), ["forget.json", "line 1", "'answer'",
                                                                               "int"]),
    "answer-null": (spoil("retain.json", jsonl([dict(QA, answer=None)])), ["retain.json", "'answer'"]),
    "question-empty": (spoil("forget.json", jsonl([dict(QA, question="  ")])), ["forget.json", "'question'", "empty"]),
    "task-id-path-traversal": (spoil("forget.json", jsonl([dict(QA, task_id="../../etc")])), ["forget.json",
                                                                                              "task_id"]),
    "task-id-list": (spoil("forget.json", jsonl([dict(QA, task_id=["1"])])), ["forget.json", "'task_id'"]),
    "perturbed-not-list": (spoil("forget.json", jsonl([dict(QA, perturbed_answer="no")])),
                           ["forget.json", "'perturbed_answer'"]),
    "empty-forget-file": (spoil("forget.json", ""), ["forget.json", "no rows"]),
    "blank-retain-file": (spoil("retain.json", "\n\n  \n"), ["retain.json", "no rows"]),
    "not-utf8": (spoil("forget.json", b'{"question": "caf\xe9", "answer": "a"}\n'), ["forget.json", "UTF-8"]),
    "data-file-is-folder": (mkdir_then("dir.json", "data.forget={work}/dir.json"), ["dir.json", "folder"]),
    "data-file-missing": (overrides("data.forget=nowhere.json"), ["nowhere.json", "does not exist"]),
    "data-path-through-file": (overrides("data.retain=forget.json/retain.json"), ["forget.json/retain.json"]),
    "split-not-in-folder": (overrides("data.forget=forget99"), ["forget99", "forget, retain"]),
    "unknown-task": (overrides("data.task_id=7"), ["no task 7", "1, 2, 3"]),
    "unknown-method": (overrides("method=XYZ"), ["unknown method 'XYZ'", "ME", "GD"]),
    "unknown-regulariser": (overrides("method=GA+FOO"), ["unknown method 'GA+FOO'"]),
    "unknown-key": (overrides("training.lrr=1e-5"), ["unknown config key 'training.lrr'", "lr"]),
    "unknown-top-key": (overrides("foo=1"), ["unknown config key 'foo'", "method"]),
    "override-without-equals": (overrides("training.lr"), ["training.lr", "key=value"]),
    "override-empty-key": (overrides("training..lr=1"), ["empty key"]),
    "override-section-scalar": (overrides("training=5"), ["training", "mapping"]),
    "not-a-number": (overrides("training.lr=fast"), ["training.lr", "number", "fast"]),
    "not-an-integer": (overrides("training.per_device_batch_size=2.5"), ["per_device_batch_size", "integer"]),
    "not-a-bool": (overrides("lora.enabled=maybe"), ["lora.enabled", "true or false"]),
    "nan-lr": (overrides("training.lr=nan"), ["training.lr", "positive"]),
    "zero-batch": (overrides("training.per_device_batch_size=0"), ["per_device_batch_size", "at least 1"]),
    "negative-epochs": (overrides("training.epochs=-1"), ["training.epochs"]),
    "inverted-stop-bounds": (overrides("training.stop_forget_loss_below=5", "training.stop_forget_loss_above=1"),
                             ["stop_forget_loss_below"]),
    "unknown-optimizer": (overrides("training.optimizer=sgdx"), ["training.optimizer", "sgdx", "adamw_torch"]),
    "optimizer-package-missing": (overrides("training.optimizer=paged_adamw_32bit"), ["paged_adamw_32bit",
                                                                                      "bitsandbytes"]),
    "unknown-scheduler": (overrides("training.lr_scheduler=zigzag"), ["lr_scheduler", "zigzag", "cosine"]),
    "unknown-dtype": (overrides("model.dtype=float8"), ["model.dtype", "float8", "bfloat16"]),
    "bad-bf16": (overrides("training.bf16=maybe"), ["training.bf16"]),
    "lora-bad-rank": (overrides("lora.enabled=true", "lora.r=0"), ["lora.r"]),
    "unknown-preset": (overrides("--config", "nosuchpreset"), ["nosuchpreset"]),
    "config-file-missing": (overrides("--config", "missing.yaml"), ["missing.yaml", "cannot read"]),
    "config-bad-yaml": (write_then("c.yaml", "training: {lr: [1,\n", "--config", "{work}/c.yaml"), ["c.yaml", "YAML"]),
    "config-not-mapping": (write_then("c.yaml", "- 1\n- 2\n", "--config", "{work}/c.yaml"), ["c.yaml", "mapping"]),
    "config-unknown-key": (write_then("c.yaml", "training:\n  speed: 3\n", "--config", "{work}/c.yaml"),
                           ["training.speed"]),
    "model-missing": (overrides("model.name_or_path=/nonexistent/model"), ["/nonexistent/model", "does not exist"]),
    "model-folder-without-config": (mkdir_then("empty_model", "model.name_or_path={work}/empty_model"),
                                    ["empty_model", "config.json"]),
    "reference-missing": (overrides("method=NPO", "reference_model=/nonexistent/ref"), ["/nonexistent/ref"]),
    "output-dir-is-file": (write_then("taken", "x", "output_dir={work}/taken"), ["taken", "is a file"]),
    "output-dir-other-run": (write_then("out/config.yaml", "method: GA+GD\nbeta: 0.5\n", "output_dir={work}/out"),
                             ["another config", "beta"]),
    "retain-needed-none": (write_then("mine.json", jsonl([QA]), "data.forget={work}/mine.json", "data.retain=",
                                      "data.task_id="), ["GA+GD", "needs a retain set", "data.retain"]),
    "refusals-missing": (overrides("method=IDK+AP", "data.refusals=/nonexistent/idk.txt"), ["idk.txt"]),
    "refusals-empty": (write_then("idk.txt", "\n \n", "method=IDK+AP", "data.refusals={work}/idk.txt"),
                       ["idk.txt", "no answers"]),
    "unknown-command": (lambda work: ["__replace__", "forgetall"], ["forgetall"]),
}


@pytest.fixture
def no_model_loading(monkeypatch):
    """Every bad input must be caught before a model or tokenizer is loaded."""
    from unlearnlm.training import models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was validated")

    monkeypatch.setattr(models, "load_model", refuse)
    monkeypatch.setattr(models, "load_tokenizer", refuse)


def test_corpus_is_large_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, work, capsys, no_model_loading):
    setup, expected = CASES[case]
    if case == "optimizer-package-missing" and importlib.util.find_spec("bitsandbytes"):
        pytest.skip("bitsandbytes is installed here")
    extra = setup(work)
    if extra[:1] == ["__replace__"]:
        argv = extra[1:]
    elif extra[:1] == ["--config"]:
        argv = unlearn_args(work)[:1] + extra[:2] + unlearn_args(work)[1:] + extra[2:]
    else:
        argv = unlearn_args(work, *extra)
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("unlearnlm: error: "), err
    assert "Traceback" not in err
    for piece in expected:
        assert piece in lines[0], f"{piece!r} not in {lines[0]!r}"


FINETUNE_CASES = {
    "finetune-no-train-split": (["data.train="], ["data.train"]),
    "finetune-all-excluded": (["data.train=forget.json", "data.exclude_task_id=1,2,3"], ["empty"]),
    "finetune-bad-row": (["data.train=forget.json,bad.json"], ["bad.json", "line 1"]),
}


@pytest.mark.parametrize("case", list(FINETUNE_CASES))
def test_bad_finetune_input(case, work, capsys, no_model_loading):
    extra, expected = FINETUNE_CASES[case]
    (work / "bad.json").write_text('{"question": 1, "answer": "a"}\n')
    code = main(["finetune", f"model.name_or_path={(work / 'model_path.txt').read_text()}", f"data.source={work}",
                 f"output_dir={work / 'ft'}", *extra])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for piece in expected:
        assert piece in err


@pytest.mark.parametrize("case", ["malformed-jsonl", "unknown-method"])
def test_bad_input_in_a_real_process(case, work):
    """No traceback reaches stderr of the installed entry point either."""
    setup, expected = CASES[case]
    argv = unlearn_args(work, *setup(work))
    result = subprocess.run([sys.executable, "-m", "unlearnlm.cli", *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("unlearnlm: error: "), result.stderr
    for piece in expected:
        assert piece in lines[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(work, capsys, no_model_loading):
    (work / "forget.json").chmod(0)
    assert main(unlearn_args(work)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unlearnlm: error: ") and "forget.json" in err and "cannot read" in err


def test_inputs_that_are_fine(tmp_path, qa_folder):
    """Not errors: unequal perturbed lists (scored per row), a byte-order mark, extra keys, a file
    named relative to data.source, integer task ids."""
    from unlearnlm.data.records import load_split

    rows = [dict(QA, perturbed_answer=["a", "b", "c", "d", "e"], task_id=1, note={"any": "thing"}),
            dict(QA, perturbed_answer=["a", "b", "c"], task_id="task 2")]
    (tmp_path / "f.json").write_bytes(b"\xef\xbb\xbf" + jsonl(rows).encode())
    loaded = load_split("f.json", str(tmp_path), required=("question", "answer", "perturbed_answer"))
    assert [len(r["perturbed_answer"]) for r in loaded] == [5, 3]
    assert len(load_split("forget.json", str(qa_folder))) == 12


# ---- by class: every command, every config section, checkpoints, output paths, truncation ------

# Bad values of each config section, relative to the section: (overrides, a piece of the error).
SECTION_BAD_VALUES = {
    "model": [(["name_or_path="], "name_or_path"), (["dtype=float8"], "model.dtype"),
              (["trust_remote_code=perhaps"], "true or false"), (["prompt_format.kind=llama9"], "prompt_format.kind"),
              (["prompt_format.question_start=Q:"], "kind=tags"),
              (["prompt_format.colour=red"], "prompt_format.colour")],
    "training": [(["lr=-1"], "lr"), (["epochs=0"], "epochs"), (["per_device_batch_size=0"], "per_device_batch_size"),
                 (["gradient_accumulation_steps=0"], "gradient_accumulation_steps"),
                 (["warmup_epochs=-1"], "warmup_epochs"),
                 (["weight_decay=-1"], "weight_decay"), (["logging_steps=0"], "logging_steps"),
                 (["save_steps=-1"], "save_steps"), (["save_minutes=nan"], "save_minutes"),
                 (["optimizer=sgdx"], "optimizer"), (["lr_scheduler=zigzag"], "lr_scheduler"), (["bf16=maybe"], "bf16"),
                 (["stop_forget_loss_above=inf"], "stop_forget_loss_above"), (["seed=1.5"], "integer"),
                 (["seed=-1"], "seed must be zero or more")],
    "lora": [(["enabled=true", "r=0"], "lora.r"), (["enabled=true", "alpha=0"], "lora.alpha"),
             (["enabled=true", "dropout=1"], "lora.dropout"), (["enabled=maybe"], "true or false")],
    "data": [(["max_length=0"], "max_length"), (["pad_to=0"], "pad_to"),
             (["retain_includes_later_tasks=maybe"], "true or false")],
    "evaluation": [(["scenario=tofu2"], "scenario"), (["ds_size=-1"], "ds_size"), (["max_length=1"], "max_length"),
                   (["generation_batch_size=0"], "generation_batch_size"), (["loss_batch_size=0"], "loss_batch_size"),
                   (["pad_to=0"], "pad_to"), (["judges.nli_batch_size=0"], "nli_batch_size"),
                   (["judges.embedder_batch_size=0"], "embedder_batch_size"),
                   (["share_prompts=maybe"], "true or false"),
                   (["bootstrap.seed=-1"], "bootstrap.seed must be zero or more"),
                   (["bootstrap.samples=1"], "at least 100"), (["bootstrap.samples=99"], "at least 100"),
                   (["bootstrap.samples=-5"], "bootstrap.samples"), (["bootstrap.level=1"], "bootstrap.level")],
    "judges": [(["nli_batch_size=0"], "nli_batch_size"), (["embedder= "], "embedder")],
    "downstream": [(["batch_size=0"], "downstream.batch_size"), (["limit=0"], "downstream.limit"),
                   (["num_fewshot=-1"], "num_fewshot"), (["tasks="], "downstream.tasks"),
                   (["seed=-1"], "downstream.seed must be zero or more")],
    "unlearn": [(["method=XYZ"], "XYZ"), (["beta=0"], "beta"), (["forget_coeff=nan"], "forget_coeff"),
                (["regularization_coeff=inf"], "regularization_coeff"), (["mask=maybe"], "true or false")],
    "top": [(["nosuch=1"], "unknown config key 'nosuch'"), (["--config", "/nonexistent/c.yaml"], "c.yaml")],
}
# Where each section sits in each command's config (the prefix of its keys).
SECTION_PLACES = {
    "model": {"finetune": ["model."], "unlearn": ["model."], "evaluate": ["model."], "continual": ["unlearn.model."],
              "real-world": ["unlearn.model."], "build-forget-set": ["model."], "demo": ["model."]},
    "training": {"finetune": ["training."], "unlearn": ["training."], "continual": ["unlearn.training."],
                 "real-world": ["unlearn.training."], "demo": ["finetune_training.", "unlearn_training."]},
    "lora": {"finetune": ["lora."], "unlearn": ["lora."], "continual": ["unlearn.lora."],
             "real-world": ["unlearn.lora."]},
    "data": {"unlearn": ["data."], "continual": ["unlearn.data."], "real-world": ["unlearn.data."]},
    "evaluation": {"evaluate": [""], "unlearn": ["evaluation."], "continual": ["unlearn.evaluation."],
                   "real-world": ["unlearn.evaluation."], "demo": ["evaluation."]},
    "judges": {"demo": ["evaluation.judges."], "evaluate": ["judges."]},
    "downstream": {"real-world": ["downstream."]},
    "unlearn": {"unlearn": [""], "continual": ["unlearn."], "real-world": ["unlearn."]},
    "top": {c: [""] for c in ("finetune", "unlearn", "evaluate", "continual", "real-world", "build-forget-set",
                              "demo")},
}
# Settings particular to one command, and settings a command sets itself (refused, not ignored).
COMMAND_BAD_VALUES = {
    "finetune": [(["data.max_length=0"], "max_length"), (["data.train="], "data.train")],
    "unlearn": [(["seeds=[-3]"], "seeds must be zero or more"), (["seeds=[1,-2]"], "seeds must be zero or more"),
                (["evaluation.model.name_or_path=/x"], "evaluation.model.name_or_path"),
                (["evaluation.output_dir=elsewhere"], "evaluation.output_dir"),
                (["evaluation.model.prompt_format.kind=tags"], "evaluation.model.prompt_format.kind")],
    "continual": [(["methods=FOO"], "FOO"), (["methods=GA+GD,GA+GD"], "twice"), (["seeds=-1"], "seeds"),
                  (["unlearn.seeds=[-1]"], "unlearn.seeds"),
                  (["unlearn.data.task_id=2"], "unlearn.data.task_id"),
                  (["unlearn.reference_model=/x"], "fix_ref_model"),
                  (["unlearn.output_dir=elsewhere"], "unlearn.output_dir"),
                  (["unlearn.data.retain_includes_later_tasks=false"], "retain_includes_later_tasks"),
                  (["methods=GA+GD", "unlearn.method=NPO"], "unlearn.method"),
                  (["unlearn.evaluation.output_dir=elsewhere"], "unlearn.evaluation.output_dir"),
                  (["fix_ref_model=perhaps"], "true or false")],
    "real-world": [(["unlearn.data.task_id=1"], "unlearn.data.task_id"),
                   (["unlearn.output_dir=elsewhere"], "unlearn.output_dir"),
                   (["unlearn.data.retain_includes_later_tasks=true"], "retain_includes_later_tasks"),
                   (["unlearn.evaluation.scenario=custom"], "unlearn.evaluation.scenario"),
                   (["unlearn.evaluation.output_dir=elsewhere"], "unlearn.evaluation.output_dir"),
                   (["evaluate_target=perhaps"], "true or false")],
    "demo": [(["methods=FOO"], "FOO"), (["methods="], "methods"), (["authors=2"], "authors"),
             (["questions_per_author=0"], "questions_per_author"), (["evaluation.ds_size=-1"], "evaluation.ds_size"),
             (["evaluation.scenario=custom"], "evaluation.scenario"),
             (["evaluation.output_dir=elsewhere"], "evaluation.output_dir"),
             (["forget_split=forget99"], "forget_split"), (["retain_split=retain99"], "retain_split"),
             (["seed=-1"], "seed must be zero or more"), (["seeds=[0,-1]"], "seeds must be zero or more"),
             (["holdout_authors=0"], "holdout_authors"),
             (["attack.relearn.seed=-1"], "attack.relearn.seed"), (["attack.probes.seed=-2"], "attack.probes.seed")],
    "build-forget-set": [(["max_length=1"], "max_length"), (["batch_size=0"], "batch_size"),
                         (["templates=Who?"], "{name}")],
    "evaluate": [(["scenario=custom", "data.custom_forget=/nonexistent/f.json"], "/nonexistent/f.json"),
                 (["scenario=custom", "data.custom_forget={qa}/forget_perturbed.json", "retain_eval=/nonexistent/ev"],
                  "retain_eval")],
    "make-world": [(["authors=2"], "authors"), (["questions_per_author=0"], "questions_per_author"),
                   (["questions_per_author=99"], "questions_per_author"), (["seed=abc"], "seed"),
                   (["colour=red"], "colour")],
    "train-judge": [(["steps=-5"], "steps"), (["lr=0"], "lr"), (["batch_size=0"], "batch_size"),
                    (["worlds=0"], "worlds"),
                    (["authors=1"], "authors"), (["warmup_steps=-1"], "warmup_steps"),
                    (["vitaminc_share=1.5"], "vitaminc_share"), (["max_length=0"], "max_length"),
                    (["trainable_layers=-1"], "trainable_layers"), (["first_seed=-1"], "first_seed"),
                    (["seed=-1"], "seed must be zero or more"),
                    (["--threads", "0"], "--threads"), (["speed=3"], "speed")],
    "show-format": [(["kind=llama9"], "prompt_format.kind"), (["question_start=Q:"], "kind=tags"),
                    (["colour=red"], "colour"), (["kind=tags", "answer_start"], "key=value")],
    "report": [(["/nonexistent/run"], "/nonexistent/run")],
    "attack": [(["attacks=melt"], "unknown attack 'melt'"), (["attacks=relearn,relearn"], "twice"),
               (["relearn.steps=0"], "relearn.steps"), (["quantize.bits=1"], "quantize.bits"),
               (["quantize.bitsandbytes=fp3"], "bitsandbytes"),
               (["relearn.data=/nonexistent/rows.json"], "relearn.data"),
               (["relearn.seed=-1"], "relearn.seed must be zero or more"),
               (["probes.seed=-1"], "probes.seed must be zero or more"),
               ([], "not a training run folder")],
    "intervals": [(["samples=0"], "samples"), (["level=1.5"], "level"), (["samples=many"], "samples"),
                  (["samples=1"], "at least 100"), (["samples=99"], "at least 100"),
                  (["seed=-1"], "seed must be zero or more"), ([], "summary.json")],
    "muse": [(["unlearn.training.seed=-1"], "unlearn.training.seed"), (["unlearn.seeds=[-1]"], "unlearn.seeds"),
             (["evaluation.corpus=films"], "evaluation.corpus"), (["evaluation.metrics=foo"], "evaluation.metrics"),
             (["evaluation.min_k=0"], "min_k"), (["unlearn.method=IDK+AP"], "plain text has not"),
             (["unlearn.data.chunk_length=1"], "chunk_length")],
    "wmdp": [(["unlearn.training.seed=-1"], "unlearn.training.seed"), (["downstream.seed=-1"], "downstream.seed"),
             (["unlearn.method=IDK+AP"], "plain text has not"), (["unlearn.data.chunk_length=1"], "chunk_length"),
             (["unlearn.data.task_id=1"], "task_id"), (["unlearn.data.format=qa"], "format")],
}


def _argv(command: str, extra: list[str], qa: Path, tmp: Path) -> list[str]:
    extra = [e.replace("{qa}", str(qa)) for e in extra]
    if command == "make-world":
        return ["make-world", str(tmp / "world"), *extra]
    if command == "show-format":
        return ["show-format", str(qa / "no-such-tokenizer"), *extra]
    if command == "report":
        return ["report", *extra, "--output", str(tmp / "report")]
    if command in ("attack", "intervals"):  # a folder that is no run and no evaluation
        return [command, str(qa), *extra]
    if extra[:1] == ["--config"]:
        return [command, *extra]
    return [command, *extra, f"output_dir={tmp / 'out'}"] if command not in ("train-judge",) else [command, *extra]


def _value_cases() -> dict[str, tuple[str, list[str], str]]:
    cases = {}
    for section, places in SECTION_PLACES.items():
        for command, prefixes in places.items():
            for prefix in prefixes:
                for items, piece in SECTION_BAD_VALUES[section]:
                    extra = [i if i.startswith("-") or items[0] == "--config" else prefix + i for i in items]
                    cases[f"{command}:{prefix or section + ':'}{'+'.join(items)}"] = (command, extra, piece)
    for command, items_list in COMMAND_BAD_VALUES.items():
        for items, piece in items_list:
            cases[f"{command}:{'+'.join(items)}"] = (command, list(items), piece)
    return cases


VALUE_CASES = _value_cases()


def _one_clean_line(code: int, err: str, pieces) -> str:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("unlearnlm: error: "), err
    for piece in pieces:
        assert piece in lines[0], f"{piece!r} not in {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_bad_setting_of_every_section_and_command(case, qa_folder, tmp_path, capsys, no_model_loading):
    command, extra, piece = VALUE_CASES[case]
    code = main(_argv(command, extra, qa_folder, tmp_path))
    _one_clean_line(code, capsys.readouterr().err, [piece])
    assert not (tmp_path / "out").exists() and not (tmp_path / "world").exists()  # nothing written


OUTPUT_COMMANDS = ("finetune", "unlearn", "evaluate", "continual", "real-world", "build-forget-set", "demo",
                   "make-world", "report", "sweep")


def _occupied(tmp: Path) -> Path:
    (tmp / "taken").write_text("x")
    return tmp / "taken"


def _under_a_file(tmp: Path) -> Path:
    (tmp / "plain").write_text("x")
    return tmp / "plain" / "out"


OUTPUT_PATHS = {
    "occupied-by-a-file": (_occupied, "is a file"),
    "under-a-file": (_under_a_file, "is a file"),
    "pseudo-file-system": (lambda tmp: Path("/proc/unlearnlm-test/out"), "cannot be created"),
    "not-writable": (lambda tmp: Path("/sys/unlearnlm-test"), "cannot be created"),
}


@pytest.mark.parametrize("command", OUTPUT_COMMANDS)
@pytest.mark.parametrize("kind", list(OUTPUT_PATHS))
def test_unusable_output_path(command, kind, qa_folder, tmp_path, capsys, no_model_loading):
    make, piece = OUTPUT_PATHS[kind]
    output = make(tmp_path)
    if command == "make-world":
        argv = ["make-world", str(output)]
    elif command == "report":
        argv = ["report", str(tmp_path), "--output", str(output)]
    else:
        argv = [command, f"output_dir={output}"]
    _one_clean_line(main(argv), capsys.readouterr().err, [str(output), piece])


# ---- checkpoints that are not what they claim ----------------------------------------------------

def _spoil_config(change):
    def spoil(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(change(config))
        (folder / "config.json").write_text(json.dumps(config))
    return spoil


def _truncate(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _as_bin(payload):
    def spoil(folder: Path) -> None:
        (folder / "model.safetensors").unlink()
        payload(folder / "pytorch_model.bin")
    return spoil


def _foreign_tensor(path: Path) -> None:
    import torch

    torch.save({"unrelated.weight": torch.zeros(3)}, path)


class _Payload:
    """Unpickling this would create the file MARKER: proof that no pickle runs."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_payload(path: Path) -> None:
    import pickle

    _Payload.marker = str(path.parent / "PICKLE_RAN")
    path.write_bytes(pickle.dumps(_Payload()))


CHECKPOINTS = {
    "truncated-safetensors": (_truncate, ["corrupt weights"]),
    "garbage-safetensors": (lambda f: (f / "model.safetensors").write_bytes(b"not a tensor file" * 8), ["corrupt"]),
    "garbage-bin": (_as_bin(lambda p: p.write_bytes(b"\x80\x04garbage" * 8)), ["not a plain tensor file"]),
    "pickle-payload-bin": (_as_bin(_pickle_payload), ["not a plain tensor file"]),
    "foreign-weights-bin": (_as_bin(_foreign_tensor), ["missing", "lm_head.weight"]),
    "wrong-sizes": (_spoil_config(lambda c: {"hidden_size": 64, "intermediate_size": 128}), ["mismatched size"]),
    "missing-layer": (_spoil_config(lambda c: {"num_hidden_layers": c["num_hidden_layers"] + 1}),
                      ["missing", "model.layers.2."]),
    "unexpected-layer": (_spoil_config(lambda c: {"num_hidden_layers": c["num_hidden_layers"] - 1}),
                         ["unexpected", "model.layers.1."]),
    "no-weights": (lambda f: (f / "model.safetensors").unlink(), ["model.safetensors"]),
    "config-not-json": (lambda f: (f / "config.json").write_text("{not json"), ["cannot load"]),
}


@pytest.fixture(scope="module")
def real_world_folder(qa_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rw")
    for name, target in (("forget_perturbed.json", "forget"), ("retain_perturbed.json", "neighbor")):
        rows = [json.loads(line) for line in (qa_folder / name).read_text().splitlines()]
        rows = [dict(r, golden_answer=r["answer"], name=r["question"].split()[-1].strip("?")) for r in rows]
        if target == "forget":
            rows = [dict(r, task_id=1) for r in rows]
        (folder / f"{target}.json").write_text(jsonl(rows))
        (folder / f"{target}_perturbed.json").write_text(jsonl(rows))
    return folder


def _model_command(command: str, model: Path, qa: Path, rw: Path, out: Path) -> list[str]:
    small = ["training.progress=false", "training.epochs=1", "training.warmup_epochs=0"]
    return {
        "finetune": ["finetune", f"model.name_or_path={model}", f"data.source={qa}", "data.train=forget,retain",
                     f"output_dir={out}", *small],
        "unlearn": ["unlearn", f"model.name_or_path={model}", f"data.source={qa}", "data.forget=forget",
                    "data.retain=retain", "method=GA+GD", f"output_dir={out}", *small],
        "evaluate": ["evaluate", str(model), "scenario=custom", f"data.custom_forget={qa / 'forget_perturbed.json'}",
                     "judges.embedder=none", "judges.nli=none", "max_length=24", f"output_dir={out}"],
        "build-forget-set": ["build-forget-set", f"model.name_or_path={model}", "forget_entities=alice",
                             "neighbor_entities=bob", f"output_dir={out}", "max_length=24"],
        "continual": ["continual", f"unlearn.model.name_or_path={model}", f"unlearn.data.source={qa}",
                      "unlearn.data.forget=forget", "unlearn.data.retain=retain", "unlearn.method=GA+GD", "tasks=1",
                      "evaluate=false", "evaluate_target=false", f"output_dir={out}",
                      "unlearn.training.progress=false"],
        "real-world": ["real-world", f"unlearn.model.name_or_path={model}", f"unlearn.data.source={rw}",
                       "downstream.enabled=false", "unlearn.evaluation.judges.embedder=none",
                       "unlearn.evaluation.judges.nli=none", "unlearn.evaluation.max_length=24", f"output_dir={out}",
                       "unlearn.training.progress=false"],
    }[command]


MODEL_COMMANDS = ("finetune", "unlearn", "evaluate", "build-forget-set", "continual", "real-world")


@pytest.mark.parametrize("command", MODEL_COMMANDS)
@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_checkpoint_that_is_not_what_it_claims(command, kind, tiny_model, qa_folder, real_world_folder, tmp_path,
                                               capsys):
    import shutil

    spoil, pieces = CHECKPOINTS[kind]
    folder = tmp_path / f"ckpt-{kind}"
    shutil.copytree(tiny_model, folder)
    spoil(folder)
    code = main(_model_command(command, folder, qa_folder, real_world_folder, tmp_path / "out"))
    _one_clean_line(code, capsys.readouterr().err, [str(folder), *pieces])
    assert not (folder / "PICKLE_RAN").exists()
    assert not (tmp_path / "out" / "model").exists() and not (tmp_path / "out" / "summary.json").exists()


def test_a_good_checkpoint_loads_and_a_bare_tokenizer_is_no_model(tiny_model, tmp_path):
    from unlearnlm.config import ModelConfig
    from unlearnlm.errors import UserError
    from unlearnlm.training.models import load_model

    assert load_model(ModelConfig(str(tiny_model))).config.num_hidden_layers == 2
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "tok")
    with pytest.raises(UserError, match="config.json"):
        load_model(ModelConfig(str(tmp_path / "tok")))


# ---- data that truncation empties ----------------------------------------------------------------

TRUNCATING = {
    "finetune": ("data.max_length=3", ["forget", "line 1", "no answer token", "data.max_length=3"]),
    "unlearn": ("data.max_length=3", ["forget", "line 1", "no answer token"]),
    "continual": ("unlearn.data.max_length=3", ["forget", "line 1", "no answer token"]),
    "real-world": ("unlearn.data.max_length=3", ["forget", "line 1", "no answer token"]),
    "evaluate": ("max_length=3", ["forget_perturbed", "line 1", "no token to generate"]),
    "build-forget-set": ("max_length=3", ["alice", "no token to generate"]),
}


@pytest.fixture
def no_weights_loading(monkeypatch):
    from unlearnlm.training import models

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(models, "load_model", refuse)


@pytest.mark.parametrize("command", list(TRUNCATING))
def test_data_that_truncation_empties_is_refused(command, tiny_model, qa_folder, real_world_folder, tmp_path, capsys,
                                                 no_weights_loading):
    setting, pieces = TRUNCATING[command]
    argv = _model_command(command, tiny_model, qa_folder, real_world_folder, tmp_path / "out")
    argv = [a for a in argv if not a.startswith(("max_length=", "unlearn.evaluation.max_length="))] + [setting]
    if command == "real-world":
        argv.append("evaluate_target=false")
    _one_clean_line(main(argv), capsys.readouterr().err, pieces)


def test_answers_cut_by_max_length_are_counted(tiny_model, qa_folder, caplog):
    import logging

    from transformers import AutoTokenizer

    from unlearnlm.data.formatting import PromptFormat, check_truncation

    formatter = PromptFormat(AutoTokenizer.from_pretrained(tiny_model))
    rows = [{"question": "Where was bob born?", "answer": "bob was born in lima."},
            {"question": "Where was bob born?", "answer": "lima."},
            {"question": "What is the favourite colour of alice?", "answer": "The favourite colour of alice is red."}]
    encoded = [formatter.encode(r["question"], r["answer"]) for r in rows]
    lengths = [len(e.input_ids) for e in encoded]
    limit = max(e.prompt_length for e in encoded) + 1  # every prompt fits, with one answer token at least
    with caplog.at_level(logging.WARNING):
        cut = check_truncation(formatter, rows, limit, "mine.json")
    expected = sum(n > limit for n in lengths)
    assert cut == expected == 2
    assert "mine.json: 2 of 3 rows are longer than data.max_length" in caplog.text


def bad_inputs_per_command() -> dict[str, int]:
    """How many bad inputs this file feeds each command."""
    counts: dict[str, int] = {}
    for command, _, _ in VALUE_CASES.values():
        counts[command] = counts.get(command, 0) + 1
    for command in OUTPUT_COMMANDS:
        counts[command] = counts.get(command, 0) + len(OUTPUT_PATHS)
    for command in MODEL_COMMANDS:
        counts[command] = counts.get(command, 0) + len(CHECKPOINTS)
    for command in TRUNCATING:
        counts[command] += 1
    counts["unlearn"] += len(CASES) + 2  # the corpus above, run in-process and in a real process
    for reader, _, _ in RUN_FILE_CASES.values():
        command = reader.split("-")[0]
        counts[command] = counts.get(command, 0) + 1
    counts["finetune"] += len(FINETUNE_CASES)
    return counts


def test_every_command_gets_bad_inputs():
    from unlearnlm.cli import COMMANDS

    counts = bad_inputs_per_command()
    print("bad inputs per command:", json.dumps(counts, sort_keys=True))
    assert set(COMMANDS) - set(counts) <= {"methods", "presets"}  # those two take no input
    assert all(n >= 4 for n in counts.values()), counts


@pytest.mark.parametrize("kind", ["truncated-safetensors", "pickle-payload-bin", "wrong-sizes"])
def test_bad_checkpoint_in_a_real_process(kind, tiny_model, qa_folder, tmp_path):
    """Through the entry point: no library warning or progress bar joins the error line."""
    import shutil

    spoil, pieces = CHECKPOINTS[kind]
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_model, folder)
    spoil(folder)
    argv = _model_command("unlearn", folder, qa_folder, tmp_path, tmp_path / "out")
    result = subprocess.run([sys.executable, "-m", "unlearnlm.cli", *argv], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    _one_clean_line(result.returncode, "\n".join(lines), [str(folder), *pieces])
    assert not (folder / "PICKLE_RAN").exists()


def test_a_model_folder_that_cannot_be_written_is_one_line(tiny_model, tmp_path, monkeypatch):
    """A filesystem error while the result is saved (a full disk, say) names the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unlearnlm.errors import UserError
    from unlearnlm.training.models import save_model

    model = AutoModelForCausalLM.from_pretrained(tiny_model)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(model), "save_pretrained", disk_full)
    with pytest.raises(UserError, match=r"cannot write the model folder .*out/model: No space left on device"):
        save_model(model, AutoTokenizer.from_pretrained(tiny_model), tmp_path / "out" / "model")
    assert not (tmp_path / "out" / "model").exists() and not list((tmp_path / "out").glob(".model.*"))
    with pytest.raises(UserError, match="is a file"):
        (tmp_path / "file").write_text("x")
        save_model(model, AutoTokenizer.from_pretrained(tiny_model), tmp_path / "file" / "model")


# ---- run folders that are not what they claim ------------------------------------------------------

def _attack_summary() -> str:
    return json.dumps({"run": "r", "method": "GA+GD", "unlearned": {"FE": 0.5, "MU": 0.5}, "target_model": {},
                       "attacks": [{"attack": "relearn:forget_half", "mean_recovery": 0.1}], "skipped": []},
                      indent=2) + "\n"


def _truncated(text: str) -> str:
    return text[: len(text) // 2].rstrip("\n")  # cut mid-line, as a kill mid-write leaves it


# Each run-folder file, spoiled each way: (what is written, pieces of the error).
RUN_FILE_DAMAGE = {
    "corrupt": (lambda text: "\x00\x01{{garbage: [\n", ["corrupt"]),
    "truncated": (_truncated, ["truncated"]),
    "wrong-type": (lambda text: "[1, 2, 3]\n", ["list"]),
    "empty": (lambda text: "", ["empty"]),
}
# A file of the right format but another program's (or version's) content.
FOREIGN = {
    "config.yaml": ("trainer:\n  lr: 1\n", "names no model.name_or_path"),
    "eval/config.yaml": ("trainer:\n  lr: 1\n", "unknown config key 'trainer'"),
    "eval/summary.json": ('{"model": "m", "results": [1, 2]}\n', "'sets'"),
    "attacks/summary.json": ('{"attacks": "relearn"}\n', "'attacks'"),
}
# Which command reads which file of a run folder.
READERS = {
    "config.yaml": ["attack", "report"],
    "eval/config.yaml": ["attack", "intervals", "report-baseline"],
    "eval/summary.json": ["attack", "report", "intervals", "report-baseline"],
    "attacks/summary.json": ["report"],
}


def _run_file_cases() -> dict[str, tuple[str, str, str]]:
    cases = {}
    for file, readers in READERS.items():
        for reader in readers:
            for damage in [*RUN_FILE_DAMAGE, "foreign"]:
                if damage == "foreign" and (file, reader) == ("config.yaml", "report"):
                    continue  # report reads only the method name from it: a missing one is no error
                cases[f"{reader}:{file}:{damage}"] = (reader, file, damage)
    return cases


RUN_FILE_CASES = _run_file_cases()


def _reader_argv(reader: str, run: Path, tmp: Path) -> list[str]:
    return {"attack": ["attack", str(run), "attacks=quantize"],
            "report": ["report", str(run), "--output", str(tmp / "report")],
            "report-baseline": ["report", str(run), str(tmp / "base"), "--baseline", "base",
                                "--output", str(tmp / "report")],
            "intervals": ["intervals", str(run), "samples=100"]}[reader]


@pytest.mark.parametrize("case", list(RUN_FILE_CASES))
def test_a_spoiled_run_folder_file_is_one_line_naming_it(case, evaluated_runs, tmp_path, capsys, no_model_loading):
    import shutil

    reader, file, damage = RUN_FILE_CASES[case]
    run = tmp_path / "run"
    shutil.copytree(evaluated_runs["run"], run)
    shutil.copytree(evaluated_runs["target"], tmp_path / "base")
    (run / "attacks").mkdir(exist_ok=True)
    (run / "attacks" / "summary.json").write_text(_attack_summary())
    path = run / file
    if damage == "foreign":
        text, piece = FOREIGN[file]
        pieces = [piece]
    else:
        spoil, pieces = RUN_FILE_DAMAGE[damage]
        text = spoil(path.read_text())
    path.write_text(text)
    line = _one_clean_line(main(_reader_argv(reader, run, tmp_path)), capsys.readouterr().err, pieces)
    assert file.split("/")[-1] in line and str(run) in line, line
    assert not (tmp_path / "report" / "report.md").exists()

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

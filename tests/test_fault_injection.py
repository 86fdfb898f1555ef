"""Crash safety: an `unlearn` killed at any point and rerun with the same command ends with the
weights and the log of an uninterrupted run, with no row lost or repeated."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unlearnlm.cli import main

# 8 forget rows, 4 per optimiser step (2 × 2 accumulation): 2 steps an epoch, 6 in all.
STEPS = 6


def command(tiny_model, qa_folder, out, method="NPO+GD") -> list[str]:
    return ["unlearn", f"model.name_or_path={tiny_model}", f"data.source={qa_folder}", "data.forget=forget.json",
            "data.retain=retain.json", "data.task_id=1,2", f"method={method}", "training.epochs=3",
            "training.per_device_batch_size=2", "training.gradient_accumulation_steps=2", "training.save_steps=1",
            "training.progress=false", f"output_dir={out}"]


def log_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def assert_same_run(out: Path, reference: Path) -> None:
    a, b = load_file(out / "model" / "model.safetensors"), load_file(reference / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "weights differ"
    rows = log_rows(out)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), "log rows lost or repeated"
    assert rows == log_rows(reference)
    assert not (out / "checkpoints").exists()
    # Weights as safetensors only: nothing a later load would unpickle.
    assert not [p for p in (out / "model").iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, qa_folder, tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted runs, made once per method."""
    runs: dict[str, Path] = {}

    def get(method: str) -> Path:
        if method not in runs:
            out = tmp_path_factory.mktemp("whole") / method
            assert main(command(tiny_model, qa_folder, out, method)) == 0
            runs[method] = out
        return runs[method]

    return get


class Interrupted(KeyboardInterrupt):
    pass


@pytest.mark.parametrize("method,stop_after_log_row,spoil", [
    ("NPO+GD", 1, None),            # before the first checkpoint: one log row to drop
    ("NPO+GD", 3, None),            # mid-epoch (step 3 logged, its checkpoint not yet written)
    ("IDK+AP", 4, "half-checkpoint"),  # a checkpoint cut short by the kill, and a torn log line
    ("IDK+AP", 2, "stale-temp-files"),  # at an epoch boundary, with temporary files of atomic writes
])
def test_resume_after_interruption(tiny_model, qa_folder, tmp_path, monkeypatch, uninterrupted,
                                   method, stop_after_log_row, spoil):
    """In-process: interrupt right after log row k is written (before its checkpoint), then rerun."""
    from unlearnlm.training import trainer

    write_row = trainer.JsonlLogCallback.on_log

    def on_log_then_die(self, args, state, control, logs=None, **kwargs):
        write_row(self, args, state, control, logs=logs, **kwargs)
        if state.global_step >= stop_after_log_row:
            raise Interrupted()

    out = tmp_path / "run"
    monkeypatch.setattr(trainer.JsonlLogCallback, "on_log", on_log_then_die)
    assert main(command(tiny_model, qa_folder, out, method)) == 130
    monkeypatch.undo()
    if spoil == "half-checkpoint":
        partial = out / "checkpoints" / f"checkpoint-{stop_after_log_row}"
        partial.mkdir()
        (partial / "model.safetensors").write_bytes(b"\0" * 100)
        with open(out / "log.jsonl", "a") as log:
            log.write('{"step": 4, "epoch": 2.0, "lo')
    elif spoil == "stale-temp-files":
        (out / ".log.jsonl.abc.tmp").write_text("{")
        (out / ".model.xyz").mkdir()

    assert main(command(tiny_model, qa_folder, out, method)) == 0
    assert_same_run(out, uninterrupted(method))
    summary = json.loads((out / "train_summary.json").read_text())
    reference = json.loads((uninterrupted(method) / "train_summary.json").read_text())
    assert summary["train_loss"] == reference["train_loss"]


def test_rerun_of_a_finished_run_does_nothing(tiny_model, qa_folder, uninterrupted, capsys):
    out = uninterrupted("NPO+GD")
    before = (out / "model" / "model.safetensors").stat().st_mtime_ns
    assert main(command(tiny_model, qa_folder, out)) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == before


def test_sigkill_at_a_random_step_then_rerun(tiny_model, qa_folder, tmp_path, uninterrupted):
    """A real SIGKILL of a real process, at a random logged step; the rerun finishes the run."""
    seed = int(time.time())
    k = random.Random(seed).randrange(1, STEPS)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "unlearnlm.cli", *command(tiny_model, qa_folder, out)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "log.jsonl"
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= k:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the run ended before step {k} (seed {seed})"
    assert not (out / "train_summary.json").exists()

    assert main(command(tiny_model, qa_folder, out)) == 0, f"rerun failed (kill after step {k}, seed {seed})"
    assert_same_run(out, uninterrupted("NPO+GD"))


# ---- continual: a SIGKILL anywhere in the chain of tasks --------------------------------------------


@pytest.fixture(scope="module")
def continual_world(tmp_path_factory) -> Path:
    """Forget (3 tasks of 2 rows), retain, and the evaluation sets a TOFU-style evaluation reads."""
    from conftest import qa_rows, write_jsonl

    folder = tmp_path_factory.mktemp("continual_world")
    rows = qa_rows()
    forget = [dict(r, task_id=str(i // 2 + 1)) for i, r in enumerate(rows[:6])]
    retain = rows[6:]
    utility = [{"question": r["question"], "answer": r["answer"].split()[-1].strip("."),
                "perturbed_answer": r["perturbed_answer"][:3], "original_answer": r["answer"]} for r in retain[:3]]
    for name, data in [("forget", forget), ("forget_perturbed", forget), ("retain", retain),
                       ("retain_perturbed", retain), ("real_authors_perturbed", utility),
                       ("world_facts_perturbed", utility)]:
        write_jsonl(folder / f"{name}.json", data)
    return folder


def continual_config_file(tiny_model, world: Path, out: Path) -> Path:
    import yaml

    settings = {
        # Two of the three tasks: task 1's retain set holds task 2's and 3's rows, task 2's only task 3's.
        "output_dir": str(out), "tasks": ["1", "2"], "evaluate_target": False, "keep_models": ["all"],
        "unlearn": {
            "method": "NPO+GD",  # its reference is the previous task's result: the chain must be exact
            "model": {"name_or_path": str(tiny_model)},
            "data": {"source": str(world), "forget": "forget", "retain": "retain"},
            "training": {"lr": 1e-3, "epochs": 2, "per_device_batch_size": 1, "gradient_accumulation_steps": 1,
                         "warmup_epochs": 0, "progress": False, "save_steps": 1},
            "evaluation": {"ds_size": 2, "max_length": 24, "judges": {"embedder": "none", "nli": "none"}},
        },
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def continual_results(out: Path) -> tuple[list[dict], dict, list[str]]:
    """Trajectory rows (paths aside), every task's final weights, and every task's log."""
    import csv

    with open(out / "trajectory.csv", newline="") as handle:
        rows = [{k: v for k, v in r.items() if str(out) not in v} for r in csv.DictReader(handle)]
    tasks = sorted((out / "NPO+GD").glob("task_*"))
    weights = {t.name: load_file(t / "model" / "model.safetensors") for t in tasks}
    logs = [(t / "log.jsonl").read_text() for t in tasks]
    return rows, weights, logs


def test_continual_sigkill_at_a_random_point_then_rerun(tiny_model, continual_world, tmp_path):
    whole = tmp_path / "whole"
    assert main(["continual", "--config", str(continual_config_file(tiny_model, continual_world, whole))]) == 0

    seed = int(time.time())
    rng = random.Random(seed)
    task, row = rng.randrange(1, 3), rng.randrange(1, 4)  # 4 steps a task: kill after step 1..3 of a task
    cut = tmp_path / "cut"
    config = continual_config_file(tiny_model, continual_world, cut)
    process = subprocess.Popen([sys.executable, "-m", "unlearnlm.cli", "continual", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = cut / "NPO+GD" / f"task_{task}" / "log.jsonl"
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= row:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"not killed at task {task} step {row} (seed {seed})"

    assert main(["continual", "--config", str(config)]) == 0, f"rerun failed (task {task}, step {row}, seed {seed})"
    rows, weights, logs = continual_results(cut)
    whole_rows, whole_weights, whole_logs = continual_results(whole)
    assert [(r["method"], r["task"]) for r in rows] == [("NPO+GD", t) for t in "12"], "rows lost or repeated"
    assert rows == whole_rows
    assert logs == whole_logs
    for name, tensors in whole_weights.items():
        assert all(torch.equal(tensors[k], weights[name][k]) for k in tensors), f"{name} weights differ"

"""Divergence guard: a non-finite loss stops the run with one clear line and keeps the last good
checkpoint; an early stop on a forget-loss bound ends the run cleanly."""

from __future__ import annotations

import json
import math

import pytest
import torch

from unlearnlm.cli import main
from unlearnlm.methods import losses
from unlearnlm.methods.registry import FORGET_LOSSES, Objective


def run_args(tiny_model, qa_folder, out, *extra):
    return ["unlearn", f"model.name_or_path={tiny_model}", f"data.source={qa_folder}", "data.forget=forget.json",
            "data.retain=retain.json", "data.task_id=1,2", "training.epochs=2", "training.per_device_batch_size=2",
            "training.gradient_accumulation_steps=1", "training.progress=false", f"output_dir={out}", *extra]


@pytest.fixture
def nan_on_call(monkeypatch):
    """A test-only forget loss, NANGA: gradient ascent whose 6th evaluation is NaN."""
    calls = {"n": 0}

    def nan_ga(ctx):
        calls["n"] += 1
        loss = losses.gradient_ascent(ctx)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setitem(FORGET_LOSSES, "NANGA", Objective(nan_ga, ("forget",)))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_model, qa_folder, tmp_path, capsys, nan_on_call):
    out = tmp_path / "run"
    code = main(run_args(tiny_model, qa_folder, out, "method=NANGA", "training.save_steps=2"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    message = err[-1]
    # The 6th micro-batch is step 6 (batch 2, no accumulation); checkpoints came at steps 2 and 4.
    assert message.startswith("unlearnlm: error: the loss became nan in step 6"), message
    kept = out / "checkpoints" / "checkpoint-4"
    assert f"last good checkpoint is {kept} (step 4)" in message
    assert "Traceback" not in "\n".join(err)
    # The checkpoint is whole and finite; no result was written.
    from safetensors.torch import load_file

    weights = load_file(kept / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-4"]
    assert not (out / "model").exists() and not (out / "train_summary.json").exists()
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(r["loss"]) for r in rows)


def test_nan_without_checkpoint_says_so(tiny_model, qa_folder, tmp_path, capsys, nan_on_call):
    code = main(run_args(tiny_model, qa_folder, tmp_path / "run", "method=NANGA"))
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "no checkpoint was saved" in message and "training.save_steps" in message


def test_non_finite_grad_norm_is_caught_by_callback():
    from transformers import TrainerControl, TrainerState

    from unlearnlm.training.trainer import DivergenceCallback, TrainingDiverged

    state = TrainerState()
    state.global_step = 3
    DivergenceCallback().on_log(None, state, TrainerControl(), logs={"loss": 1.0, "grad_norm": 2.0})
    with pytest.raises(TrainingDiverged, match="grad norm became inf at step 3"):
        DivergenceCallback().on_log(None, state, TrainerControl(), logs={"loss": 1.0, "grad_norm": float("inf")})


def test_forget_loss_bound_stops_early(tiny_model, qa_folder, tmp_path, capsys):
    """GA drives the forget loss (−CE) down without bound; the run stops after the step in which
    it first falls below the bound and saves that model."""
    out = tmp_path / "run"
    # Find where an unbounded run's forget loss goes, then bound it between its 2nd and 3rd values.
    free = tmp_path / "free"
    assert main(run_args(tiny_model, qa_folder, free, "method=GA", "training.lr=5e-2", "training.warmup_epochs=0")) == 0
    values = [json.loads(line)["forget_loss"] for line in (free / "log.jsonl").read_text().splitlines()]
    assert values[2] < values[1]
    bound = (values[1] + values[2]) / 2
    code = main(run_args(tiny_model, qa_folder, out, "method=GA", "training.lr=5e-2", "training.warmup_epochs=0",
                         f"training.stop_forget_loss_below={bound}", "training.save_steps=1"))
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 3 and "crossed its bound in step 3" in summary["stopped_early"]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert (out / "model" / "model.safetensors").exists() and not (out / "checkpoints").exists()

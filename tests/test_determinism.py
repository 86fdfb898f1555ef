"""The same config and seed give the same weights and the same log, bit for bit, on CPU."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from unlearnlm.cli import main


def unlearn(tiny_model, qa_folder, out, *extra) -> None:
    args = ["unlearn", f"model.name_or_path={tiny_model}", f"data.source={qa_folder}", "data.forget=forget.json",
            "data.retain=retain.json", "data.task_id=1,2", "training.epochs=2", "training.per_device_batch_size=2",
            "training.gradient_accumulation_steps=2", "training.progress=false", f"output_dir={out}", *extra]
    assert main(args) == 0


def same_weights(a, b) -> bool:
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("extra", [
    ["method=IDK+AP"],  # random refusals and retain companions
    ["method=NPO+GD", "lora.enabled=true", "lora.r=2"],  # LoRA's random initial adapters, a reference
], ids=["IDK+AP", "NPO+GD-lora"])
def test_same_seed_same_results(tiny_model, qa_folder, tmp_path, extra):
    unlearn(tiny_model, qa_folder, tmp_path / "a", *extra)
    unlearn(tiny_model, qa_folder, tmp_path / "b", *extra)
    assert same_weights(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a" / "log.jsonl").read_text() == (tmp_path / "b" / "log.jsonl").read_text()


def test_another_seed_another_run(tiny_model, qa_folder, tmp_path):
    unlearn(tiny_model, qa_folder, tmp_path / "a", "method=IDK+AP")
    unlearn(tiny_model, qa_folder, tmp_path / "b", "method=IDK+AP", "training.seed=7")
    assert not same_weights(tmp_path / "a", tmp_path / "b")

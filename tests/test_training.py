"""A few optimiser steps move each objective's quantity the way docs/formulas.md#objectives says, and the run
folder holds what it promises."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearnlm.config import FinetuneConfig, UnlearnConfig, from_dict
from unlearnlm.data.batches import QACollator
from unlearnlm.data.formatting import PromptFormat
from unlearnlm.data.records import load_split
from unlearnlm.methods.losses import shift, token_nll
from unlearnlm.training.run import finetune, unlearn

REFUSAL = "I don't know."


def make_config(tiny_model, qa_folder, out, method, **overrides) -> UnlearnConfig:
    data = {
        "method": method,
        "output_dir": str(out),
        "model": {"name_or_path": str(tiny_model)},
        "data": {"source": str(qa_folder), "forget": "forget", "retain": "retain", "task_id": ["1", "2"]},
        "training": {"lr": 3e-3, "epochs": 3, "per_device_batch_size": 4, "gradient_accumulation_steps": 1,
                     "warmup_epochs": 0, "progress": False},
    }
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        data.setdefault(section, {}) if name else None
        if name:
            data[section][name] = value
        else:
            data[section] = value
    return from_dict(UnlearnConfig, data)


def answer_stats(model_dir, rows, answers=None):
    """Mean per-token NLL over the answers, and mean next-token entropy at the answer positions."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    fmt = PromptFormat(tokenizer)
    answers = answers or [r["answer"] for r in rows]
    batch = QACollator(tokenizer.pad_token_id)([fmt.encode(r["question"], a) for r, a in zip(rows, answers)])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    nll, mask = token_nll(logits, batch["labels"])
    shifted, _, _ = shift(logits, batch["labels"])
    log_p = torch.log_softmax(shifted.float(), -1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return (nll.sum() / mask.sum()).item(), ((entropy * mask).sum() / mask.sum()).item()


def finetuned(tiny_model, qa_folder, tmp_path_factory, epochs: int):
    """The tiny model fine-tuned on every row (forget and retain) for ``epochs`` epochs: its model folder."""
    config = from_dict(FinetuneConfig, {
        "output_dir": str(tmp_path_factory.mktemp("ft") / "target"),
        "model": {"name_or_path": str(tiny_model)},
        "data": {"source": str(qa_folder), "train": ["forget", "retain"]},
        "training": {"lr": 1e-2, "epochs": epochs, "per_device_batch_size": 8, "gradient_accumulation_steps": 1,
                     "warmup_epochs": 0, "progress": False},
    })
    return finetune(config) / "model"


def forget_rows_of(qa_folder):
    """The forget rows of tasks 1 and 2, the ones make_config unlearns."""
    return [r for r in load_split("forget", str(qa_folder)) if r["task_id"] in ("1", "2")]


@pytest.fixture(scope="module")
def trained_model(tiny_model, qa_folder, tmp_path_factory):
    """The tiny model fine-tuned on every row, so it is confident before unlearning."""
    return finetuned(tiny_model, qa_folder, tmp_path_factory, epochs=8)


@pytest.fixture(scope="module")
def forget_rows(qa_folder):
    return forget_rows_of(qa_folder)


def test_gradient_ascent_raises_forget_nll(trained_model, qa_folder, forget_rows, tmp_path):
    before, _ = answer_stats(trained_model, forget_rows)
    folder = unlearn(make_config(trained_model, qa_folder, tmp_path / "ga", "GA"))
    after, _ = answer_stats(folder / "model", forget_rows)
    assert after > before + 0.1


def test_finetuning_teaches_the_answers(tiny_model, trained_model, forget_rows):
    assert answer_stats(trained_model, forget_rows)[0] < 0.5 * answer_stats(tiny_model, forget_rows)[0]


def test_maximise_entropy_raises_entropy_on_forget_answers(trained_model, qa_folder, forget_rows, tmp_path):
    _, before = answer_stats(trained_model, forget_rows)
    folder = unlearn(make_config(trained_model, qa_folder, tmp_path / "me", "ME", forget_coeff=1.0))
    _, after = answer_stats(folder / "model", forget_rows)
    assert after > before + 0.01


def test_answer_preservation_widens_refusal_margin_on_retain(trained_model, qa_folder, tmp_path):
    retain = load_split("retain", str(qa_folder))
    refusal_file = tmp_path / "refusals.txt"
    refusal_file.write_text(REFUSAL + "\n")

    def margin(model_dir):
        true_nll, _ = answer_stats(model_dir, retain)
        idk_nll, _ = answer_stats(model_dir, retain, [REFUSAL] * len(retain))
        return idk_nll - true_nll

    before = margin(trained_model)
    config = make_config(trained_model, qa_folder, tmp_path / "ap", "IDK+AP",
                         regularization_coeff=5.0, forget_coeff=0.0, data__refusals=str(refusal_file))
    folder = unlearn(config)
    assert margin(folder / "model") > before + 0.1


def test_run_folder_contents_and_separate_loss_log(tiny_model, qa_folder, tmp_path):
    folder = unlearn(make_config(tiny_model, qa_folder, tmp_path / "npo", "NPO+GD"))
    assert (folder / "model" / "model.safetensors").exists()
    assert (folder / "model" / "tokenizer.json").exists()
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["method"] == "NPO+GD" and saved["data"]["task_id"] == ["1", "2"]
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log if "loss" in entry] == [1, 2, 3, 4, 5, 6]
    first = log[0]
    # NPO starts at (2/β)·log 2 when policy = reference (docs/formulas.md#objectives)
    assert first["forget_loss"] == pytest.approx(20 * 0.6931472, rel=1e-4)
    assert first["loss"] == pytest.approx(first["forget_loss"] + first["regularization_loss"], rel=1e-4)
    summary = json.loads((folder / "train_summary.json").read_text())
    # retain = 8 base rows + the 4 rows of task 3, not yet unlearned (docs/formulas.md#scenarios)
    assert summary["forget_rows"] == 8 and summary["retain_rows"] == 12 and summary["steps"] == 6
    assert not (folder / "checkpoints").exists()


def test_lora_run_merges_into_plain_weights(tiny_model, qa_folder, tmp_path):
    config = make_config(tiny_model, qa_folder, tmp_path / "lora", "IDK+GD", lora__enabled=True, lora__r=2)
    folder = unlearn(config)
    model = AutoModelForCausalLM.from_pretrained(folder / "model")
    assert not any("lora" in name for name, _ in model.named_parameters())
    original = AutoModelForCausalLM.from_pretrained(tiny_model)
    changed = [not torch.equal(a, b) for a, b in zip(model.parameters(), original.parameters())]
    assert any(changed)


def test_finetuning_steps_hold_rows_of_similar_length(tiny_model, tmp_path):
    """group_by_length in fine-tuning: every row once an epoch, and steps that pad far less than
    a plain shuffle's."""
    import random

    from unlearnlm.config import TrainingConfig
    from unlearnlm.data.batches import QADataset
    from unlearnlm.training.trainer import FinetuneTrainer, training_arguments

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rng = random.Random(0)
    rows = [{"question": "q " * rng.randint(1, 30), "answer": "a " * rng.randint(1, 30)} for _ in range(60)]
    dataset = QADataset(rows, PromptFormat(tokenizer))
    config = TrainingConfig(per_device_batch_size=6, gradient_accumulation_steps=1, progress=False)
    trainer = FinetuneTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model),
                              args=training_arguments(config, tmp_path, len(dataset)), train_dataset=dataset)
    order = list(trainer._get_train_sampler())
    assert sorted(order) == list(range(60))
    lengths = [len(item.input_ids) for item in dataset]

    def padding(sequence):
        steps = [[lengths[i] for i in sequence[k : k + 6]] for k in range(0, 60, 6)]
        return sum(max(s) * len(s) - sum(s) for s in steps) / sum(max(s) * len(s) for s in steps)

    shuffled = list(range(60))
    random.Random(1).shuffle(shuffled)
    assert padding(order) < 0.5 * padding(shuffled)

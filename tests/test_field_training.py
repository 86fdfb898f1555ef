"""A few steps of each of the field's methods on the tiny model move the forget set as the
method intends; PDU's λ follows its update and survives a resume; RMU trains what it is told."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_training import answer_stats, finetuned, forget_rows_of, make_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearnlm.data.batches import QACollator
from unlearnlm.data.formatting import PromptFormat
from unlearnlm.errors import UserError
from unlearnlm.methods import get_method, losses
from unlearnlm.training.run import unlearn


@pytest.fixture(scope="module")
def trained_model(tiny_model, qa_folder, tmp_path_factory):
    """The tiny model fine-tuned until it knows the answers (forget NLL 0.59 a token, from 5.2)."""
    return finetuned(tiny_model, qa_folder, tmp_path_factory, epochs=30)


@pytest.fixture(scope="module")
def forget_rows(qa_folder):
    return forget_rows_of(qa_folder)


def log_rows(folder):
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


# SimNPO, WGA and SatImp weight their ascent down where the model is sure (their point), so on
# this tiny model GD at coefficient 1 outweighs them within 6 steps: their forget side alone here.
@pytest.mark.parametrize("method,extra,saved_args", [
    ("SimNPO", {"regularization_coeff": 0.0}, {"beta": 4.5, "gamma": 0.0, "gamma_outside_beta": False}),
    ("WGA", {"regularization_coeff": 0.0}, {"beta": 1.0}),
    ("SatImp", {"regularization_coeff": 0.0}, {"beta1": 5.0, "beta2": 0.1}),
    ("CE-U", {}, {"skip_first": 1}),
    ("UNDIAL", {}, {"beta": 10.0}),
    ("PDU", {"method_args": {"epsilon": 0.5}}, {"epsilon": 0.5, "dual_lr": 1.0, "dual_warmup_epochs": 5.0,
                                                "dual_update": "micro_batch", "flatness_logits": "at_label"}),
])
def test_forget_nll_rises(trained_model, qa_folder, forget_rows, tmp_path, method, extra, saved_args):
    before, _ = answer_stats(trained_model, forget_rows)
    folder = unlearn(make_config(trained_model, qa_folder, tmp_path / "run", method, **extra))
    after, _ = answer_stats(folder / "model", forget_rows)
    assert after > before + 0.3, (method, before, after)
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["method_args"] == saved_args and saved["method"] == method


def block_distance(model_dir, rows, layer, target):
    """Mean RMU distance D(h_ℓ(forget answers), target) of a saved model."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    fmt = PromptFormat(tokenizer)
    batch = QACollator(tokenizer.pad_token_id)([fmt.encode(r["question"], r["answer"]) for r in rows])
    with torch.no_grad():
        hidden = losses.block_output(model, batch, layer)
    return losses.activation_distance(hidden, target, batch["labels"]).item()


def test_rmu_moves_forget_activations_towards_the_steering_vector_and_trains_only_its_pattern(
        trained_model, qa_folder, forget_rows, tmp_path):
    config = make_config(trained_model, qa_folder, tmp_path / "rmu", "RMU",
                         method_args={"layer": 0, "steering_coeff": 4.0, "trainable": [r"layers\.0\.mlp"]})
    model = AutoModelForCausalLM.from_pretrained(trained_model)
    settings = get_method("RMU").settings(layer=0, steering_coeff=4.0)
    target = losses.SteeringTarget(settings, model=model, seed=config.training.seed, regularization_coeff=1.0).target
    before = block_distance(trained_model, forget_rows, 0, target)
    folder = unlearn(config)
    after = block_distance(folder / "model", forget_rows, 0, target)
    assert after < 0.8 * before, (before, after)
    old, new = load_file(trained_model / "model.safetensors"), load_file(folder / "model" / "model.safetensors")
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed and all(k.startswith("model.layers.0.mlp.") for k in changed), changed
    rows = log_rows(folder)
    # the regulariser starts at 0 (the model is its own reference) and stays a distance
    assert rows[0]["regularization_loss"] == pytest.approx(0, abs=1e-9)
    assert all(r["regularization_loss"] >= 0 for r in rows)


def test_rmu_errors_before_training(trained_model, qa_folder, tmp_path):
    with pytest.raises(UserError, match="the model has 2 decoder blocks"):
        unlearn(make_config(trained_model, qa_folder, tmp_path / "a", "RMU", method_args={"layer": 2}))
    with pytest.raises(UserError, match="trainable pattern 'nothing_here' matches no parameter"):
        unlearn(make_config(trained_model, qa_folder, tmp_path / "b", "RMU",
                            method_args={"layer": 1, "trainable": ["mlp", "nothing_here"]}))


@pytest.mark.parametrize("dual_update", ["micro_batch", "step"])
def test_pdu_lambda_follows_its_update_every_step(trained_model, qa_folder, tmp_path, dual_update):
    """ε below any retain loss, one micro-batch a step: λ starts at regularization_coeff and rises
    by η·(that step's retain loss − ε). The authors' rule (micro_batch) moves it from the first
    step after the warm-up's last epoch (1 epoch = 2 steps); ``step`` from the step that ends it."""
    eps, eta = 0.0, 0.5
    folder = unlearn(make_config(trained_model, qa_folder, tmp_path / "pdu", "PDU", regularization_coeff=2.0,
                                 method_args={"epsilon": eps, "dual_lr": eta, "dual_warmup_epochs": 1,
                                              "dual_update": dual_update}))
    rows = log_rows(folder)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    first_moving = 3 if dual_update == "micro_batch" else 2
    expected = 2.0
    for row in rows:
        if row["step"] >= first_moving:
            expected = max(0.0, expected + eta * (row["regularization_loss"] - eps))
        assert row["dual_lambda"] == pytest.approx(expected, rel=1e-5)
    assert rows[first_moving - 2]["dual_lambda"] == 2.0 < rows[first_moving - 1]["dual_lambda"]
    assert rows[-1]["dual_lambda"] > rows[2]["dual_lambda"]
    # the total is forget_coeff · forget + λ_before_step · (retain − ε)
    assert rows[2]["loss"] == pytest.approx(rows[2]["forget_loss"] + rows[1]["dual_lambda"]
                                            * (rows[2]["regularization_loss"] - eps), rel=1e-4)


class Interrupted(KeyboardInterrupt):
    pass


def test_interrupted_pdu_run_resumes_with_the_same_lambda(tiny_model, qa_folder, tmp_path, monkeypatch):
    from unlearnlm.cli import main
    from unlearnlm.training import trainer

    def command(out):
        return ["unlearn", f"model.name_or_path={tiny_model}", f"data.source={qa_folder}", "data.forget=forget.json",
                "data.retain=retain.json", "data.task_id=1,2", "method=PDU", "method_args.epsilon=0.1",
                "method_args.dual_warmup_epochs=0", "training.epochs=3", "training.per_device_batch_size=2",
                "training.gradient_accumulation_steps=2", "training.save_steps=1", "training.progress=false",
                f"output_dir={out}"]

    assert main(command(tmp_path / "whole")) == 0
    write_row = trainer.JsonlLogCallback.on_log

    def on_log_then_die(self, args, state, control, logs=None, **kwargs):
        write_row(self, args, state, control, logs=logs, **kwargs)
        if state.global_step >= 4:
            raise Interrupted()

    monkeypatch.setattr(trainer.JsonlLogCallback, "on_log", on_log_then_die)
    assert main(command(tmp_path / "cut")) == 130
    monkeypatch.undo()
    saved = json.loads((tmp_path / "cut" / "checkpoints" / "checkpoint-3" / "method_state.json").read_text())
    assert saved["dual"] == pytest.approx(log_rows(tmp_path / "cut")[2]["dual_lambda"])
    assert main(command(tmp_path / "cut")) == 0
    whole, resumed = log_rows(tmp_path / "whole"), log_rows(tmp_path / "cut")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    assert [r["dual_lambda"] for r in resumed] == [r["dual_lambda"] for r in whole]
    assert resumed == whole
    assert whole[-1]["dual_lambda"] != whole[0]["dual_lambda"]


def test_task_vector_is_the_negated_fine_tuning_tensor_by_tensor(trained_model, qa_folder, forget_rows, tmp_path):
    folder = unlearn(make_config(trained_model, qa_folder, tmp_path / "tv", "TaskVector",
                                 training={"lr": 3e-3, "epochs": 2, "per_device_batch_size": 4,
                                           "gradient_accumulation_steps": 1, "warmup_epochs": 0, "progress": False}))
    target = load_file(trained_model / "model.safetensors")
    tuned = load_file(folder / "finetune" / "model" / "model.safetensors")
    result = load_file(folder / "model" / "model.safetensors")
    assert target.keys() == tuned.keys() == result.keys()
    moved = 0
    for name in target:
        t, f = target[name].double(), tuned[name].double()
        assert torch.allclose(result[name].double(), t - 1.0 * (f - t), atol=1e-6, rtol=0), name
        moved += not torch.equal(t, f)
    assert moved >= len(target) // 2  # the fine-tuning changed most tensors
    # the fine-tuning learnt the forget answers; the negation moves away from them
    tuned_nll, _ = answer_stats(folder / "finetune" / "model", forget_rows)
    before, _ = answer_stats(trained_model, forget_rows)
    after, _ = answer_stats(folder / "model", forget_rows)
    assert tuned_nll < before and after > before + 0.1, (tuned_nll, before, after)
    assert [r["step"] for r in log_rows(folder)] == [1, 2, 3, 4]
    summary = json.loads((folder / "train_summary.json").read_text())
    assert summary["method"] == "TaskVector" and summary["alpha"] == 1.0 and summary["forget_rows"] == 8
    assert yaml.safe_load((folder / "config.yaml").read_text())["method_args"] == {"alpha": 1.0}


def test_task_vector_takes_no_regulariser():
    with pytest.raises(UserError, match="TaskVector is not a loss and takes no regulariser"):
        get_method("TaskVector+GD")


def test_altpo_writes_alternates_then_prefers_them_to_the_true_answers(trained_model, qa_folder, forget_rows,
                                                                       tmp_path):
    folder = unlearn(make_config(trained_model, qa_folder, tmp_path / "altpo", "AltPO",
                                 method_args={"alternates": 2, "temperature": 1.5, "max_new_tokens": 12}))
    rows = [json.loads(line) for line in (folder / "alternates.jsonl").read_text().splitlines()]
    assert [r["question"] for r in rows] == [r["question"] for r in forget_rows]
    assert all(len(r["alternates"]) == 2 and all(a and a != f["answer"] for a in r["alternates"])
               for r, f in zip(rows, forget_rows, strict=True))
    before, _ = answer_stats(trained_model, forget_rows)
    after, _ = answer_stats(folder / "model", forget_rows)
    assert after > before + 0.1, (before, after)
    # the chosen (alternate) answers became likelier relative to the true ones: DPO's margin
    first = [r["alternates"][0] for r in rows]
    def margin(model_dir):
        return answer_stats(model_dir, forget_rows)[0] - answer_stats(model_dir, forget_rows, first)[0]

    assert margin(folder / "model") > margin(trained_model)
    assert get_method("AltPO").name == "AltPO+GD" and get_method("AltPO").needs_retain

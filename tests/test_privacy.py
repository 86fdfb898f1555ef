"""Privacy and memorisation metrics against values worked out by hand, and end to end on the tiny model."""

from __future__ import annotations

import itertools
import json
import math
import zlib

import pytest
import torch

from unlearnlm.config import EvaluateConfig, load_config
from unlearnlm.errors import UserError
from unlearnlm.evaluation import metrics as M
from unlearnlm.evaluation import privacy as P
from unlearnlm.evaluation.evaluate import Judges, evaluate_model

# ---- the formulas ----------------------------------------------------------------------------


def test_min_k_takes_the_floor_of_k_n_lowest_log_probs():
    # n = 5, k = 0.4: floor(2.0) = 2 lowest of (-1, -3, -2, -5, -0.5) = -5, -3 -> mean -4 -> score 4
    assert P.min_k_score([-1, -3, -2, -5, -0.5]) == pytest.approx(4.0)
    # n = 2: floor(0.8) = 0 -> at least one token: the lowest, -2 -> score 2
    assert P.min_k_score([-2, -1], k=0.4) == pytest.approx(2.0)
    # ties at the cut: k = 0.25 of 4 -> 1 token; the two -3 are interchangeable -> 3
    assert P.min_k_score([-1, -3, -3, -0.5], k=0.25) == pytest.approx(3.0)
    # k = 1 is the LOSS score: -mean = (1 + 3 + 3 + 0.5) / 4 = 1.875
    assert P.min_k_score([-1, -3, -3, -0.5], k=1.0) == pytest.approx(1.875) == P.loss_score([-1, -3, -3, -0.5])
    with pytest.raises(ValueError, match="no tokens"):
        P.min_k_score([])
    with pytest.raises(ValueError, match="k must be"):
        P.min_k_score([-1.0], k=0.0)


def test_min_k_plus_plus_normalises_by_the_positions_mu_and_sigma():
    # z = (lp - mu) / sigma = ((-1 + 1.5) / 0.5, (-2 + 1) / 1, (-4 + 2) / 2) = (1, -1, -1)
    # k = 0.4 of 3: floor(1.2) = 1 -> the lowest z, -1 (a tie) -> score 1
    assert P.min_k_plus_plus_score([-1, -2, -4], [-1.5, -1, -2], [0.5, 1, 2]) == pytest.approx(1.0)
    # k = 2/3: two lowest, both -1 -> 1; k = 1: mean of (1, -1, -1) = -1/3 -> score 1/3
    assert P.min_k_plus_plus_score([-1, -2, -4], [-1.5, -1, -2], [0.5, 1, 2], k=2 / 3) == pytest.approx(1.0)
    assert P.min_k_plus_plus_score([-1, -2, -4], [-1.5, -1, -2], [0.5, 1, 2], k=1.0) == pytest.approx(1 / 3)
    # sigma 0 (a one-hot distribution): sigma^2 clamped at 1e-6 -> sigma 1e-3; z = 0.001 / 0.001 = 1 -> -1
    assert P.min_k_plus_plus_score([-1.0], [-1.001], [0.0]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="no tokens"):
        P.min_k_plus_plus_score([], [], [])


def test_token_stats_of_a_known_distribution():
    """p = (1/2, 1/4, 1/4): log p = (-a, -2a, -2a) with a = ln 2; mu = -1.5a; sigma^2 = 0.25a^2;
    the token of p = 1/4 has lp = -2a and z = (-2a + 1.5a) / 0.5a = -1; argmax = token 0."""
    from unlearnlm.evaluation.inference import token_stats

    a = math.log(2)
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]])) + 3.0  # a shift changes nothing
    stats = token_stats(logits, torch.tensor([1, 0]))
    assert stats.log_probs == pytest.approx([-2 * a, -a])
    assert stats.mu == pytest.approx([-1.5 * a, -1.5 * a])
    assert stats.sigma == pytest.approx([0.5 * a, 0.5 * a])
    assert stats.predicted == [0, 0] and stats.labels == [1, 0]
    # z = (-1, +1): Min-K% ++ with k = 0.4 of 2 -> the lowest, -1 -> score 1
    assert P.min_k_plus_plus_score(stats.log_probs, stats.mu, stats.sigma) == pytest.approx(1.0)
    # a one-hot distribution: sigma clamped at sqrt(1e-6), no nan from 0 * log 0
    one_hot = token_stats(torch.tensor([[0.0, -math.inf, -math.inf]]), torch.tensor([0]))
    assert one_hot.mu == pytest.approx([0.0]) and one_hot.sigma == pytest.approx([1e-3])


def test_zlib_divides_the_loss_by_the_compressed_length():
    text = "Alice was born in Paris. Alice was born in Paris."
    assert P.zlib_score(2.0, text) == pytest.approx(2.0 / len(zlib.compress(text.encode("utf-8"))))
    assert P.zlib_score(3.0, "é") == pytest.approx(3.0 / len(zlib.compress("é".encode())))  # bytes, not characters


def _auc_by_pairs(forget, holdout):
    """P(holdout score > forget score) + 1/2 P(equal), over every pair."""
    pairs = list(itertools.product(forget, holdout))
    return sum(1.0 if h > f else 0.5 if h == f else 0.0 for f, h in pairs) / len(pairs)


def test_mia_auc_orientation_and_ties():
    # pairs (holdout > forget): 0.35 > 0.1 yes, 0.35 > 0.4 no, 0.8 > both -> 3 of 4
    assert P.mia_auc([0.1, 0.4], [0.35, 0.8]) == pytest.approx(0.75) == _auc_by_pairs([0.1, 0.4], [0.35, 0.8])
    # a tie counts a half: (0.5 vs 0.5) = 1/2, (1.0 > 0.5) = 1 -> 0.75
    assert P.mia_auc([0.5], [0.5, 1.0]) == pytest.approx(0.75)
    # holdout rows score higher (look less like training data): 1 = the forget rows are memorised
    assert P.mia_auc([1, 2, 3], [4, 5, 6]) == 1.0 and P.mia_auc([4, 5, 6], [1, 2, 3]) == 0.0
    assert P.mia_auc([2, 2], [2, 2, 2]) == 0.5
    forget, holdout = [0.3, 1.2, 0.7, 0.7, 2.0], [0.7, 1.5, 0.1, 2.5]
    assert P.mia_auc(forget, holdout) == pytest.approx(_auc_by_pairs(forget, holdout))
    with pytest.raises(ValueError, match="both sides"):
        P.mia_auc([], [1.0])


def test_privleak_against_a_retain_model_and_the_half_fallback():
    # AUC 0.9 -> A = 0.1; retain AUC 0.6 -> A_R = 0.4: (0.1 - 0.4) / 0.4 * 100 = -75
    assert P.privleak(0.9, 0.6) == (pytest.approx(-75.0), False)
    # no retain model: A_R = 0.5, said so; AUC 1 (memorised): (0 - 0.5) / 0.5 * 100 = -100
    assert P.privleak(1.0, None) == (pytest.approx(-100.0), True)
    assert P.privleak(0.5, None) == (pytest.approx(0.0), True)
    # over-unlearned: AUC 0.2 -> A = 0.8: (0.8 - 0.5) / 0.5 * 100 = 60 > 0
    assert P.privleak(0.2, 0.5) == (pytest.approx(60.0), False)


def test_exact_memorisation_and_extraction_strength():
    assert P.exact_memorisation([True, False, True, True]) == pytest.approx(0.75)
    labels = [1, 2, 3, 4]
    # k* = 1 (predictions[1:] == labels[1:]) -> 1 - 1/4 = 0.75
    assert P.extraction_strength([9, 2, 3, 4], labels) == pytest.approx(0.75)
    assert P.extraction_strength([1, 9, 3, 4], labels) == pytest.approx(0.5)  # k* = 2
    # the last token is wrong: open-unlearning searches k in 0..n-1 only, so k* = n - 1 -> 1/n (as
    # when the last token alone is right); without the floor k* = n -> 0
    assert P.extraction_strength([1, 2, 3, 9], labels) == pytest.approx(0.25)
    assert P.extraction_strength([9, 9, 9, 4], labels) == pytest.approx(0.25)
    assert P.extraction_strength([1, 2, 3, 9], labels, floor=False) == 0.0
    assert P.extraction_strength([9, 9, 9, 4], labels, floor=False) == pytest.approx(0.25)
    assert P.extraction_strength(labels, labels) == 1.0  # k* = 0
    with pytest.raises(ValueError, match="no tokens"):
        P.extraction_strength([], [])
    with pytest.raises(ValueError, match="no tokens"):
        P.exact_memorisation([])


def _extraction_strength_open_unlearning(predictions, labels):
    """open-unlearning's loop (src/evals/metrics/memorization.py), written out: the first k in
    0..n-1 whose suffix matches, else the loop's last k."""
    n = len(labels)
    for k in range(n):
        if predictions[k:] == labels[k:]:
            break
    return 1 - k / n


def test_extraction_strength_equals_open_unlearnings_loop_on_random_cases():
    import random

    rng = random.Random(0)
    differ_without_floor = 0
    for _ in range(2000):
        n = rng.randint(1, 8)
        labels = [rng.randint(0, 2) for _ in range(n)]
        predictions = [rng.randint(0, 2) for _ in range(n)]
        reference = _extraction_strength_open_unlearning(predictions, labels)
        assert P.extraction_strength(predictions, labels) == pytest.approx(reference, abs=1e-15)
        differ_without_floor += P.extraction_strength(predictions, labels, floor=False) != pytest.approx(reference)
    assert differ_without_floor > 100  # the all-wrong case is common: the convention matters here


def test_registry_rows_and_sets_by_hand_and_empty_answers_are_missing_with_a_reason():
    record = {"ground_truth": "abc", "truth_token_log_probs": [-1.0, -3.0, -2.0], "truth_token_mu": [-1.5, -1, -2],
              "truth_token_sigma": [0.5, 1, 2], "truth_token_ids": [5, 6, 7], "truth_predicted_ids": [5, 9, 7],
              "reference_loss": 1.5, "truth_loss": 2.0}
    empty = {"ground_truth": "", "truth_token_log_probs": [], "truth_token_mu": [], "truth_token_sigma": [],
             "truth_token_ids": [], "truth_predicted_ids": [], "truth_loss": 0.0}
    kind = M.SetKind(min_k=0.4, drop_final_label=False, extraction_floor=False)
    values = M.row_values(record, kind=kind, loss_only=True)
    assert values["mia_loss"] == pytest.approx(2.0)  # -mean(-1, -3, -2)
    assert values["mia_zlib"] == pytest.approx(2.0 / len(zlib.compress(b"abc")))
    assert values["mia_min_k"] == pytest.approx(3.0)  # floor(1.2) = 1: the lowest, -3
    # z = ((-1 + 1.5) / 0.5, (-3 + 1) / 1, (-2 + 2) / 2) = (1, -2, 0) -> lowest -2 -> 2
    assert values["mia_min_k_plus_plus"] == pytest.approx(2.0)
    assert values["mia_reference"] == pytest.approx(0.5)  # LOSS 2 - reference LOSS 1.5
    assert values["exact_memorisation"] == pytest.approx(2 / 3)
    assert values["extraction_strength"] == pytest.approx(1 / 3)  # only the last token's suffix: k* = 2
    # The default (open-unlearning's): the final label (7, the EOS) is left out of Min-K%, Min-K%++,
    # EM and ES, not of LOSS and ZLib; ES of [5, 9] against [5, 6]: the last wrong -> 1/n = 1/2.
    default = M.row_values(record, kind=M.SetKind(min_k=0.4), loss_only=True)
    assert default["mia_loss"] == values["mia_loss"] and default["mia_zlib"] == values["mia_zlib"]
    assert default["mia_min_k"] == pytest.approx(3.0)  # floor(0.8) -> 1: the lowest of (-1, -3)
    assert default["mia_min_k_plus_plus"] == pytest.approx(2.0)  # the lowest of z = (1, -2)
    assert default["exact_memorisation"] == pytest.approx(1 / 2)
    assert default["extraction_strength"] == pytest.approx(1 / 2)
    just_eos = dict(record, truth_token_log_probs=[-1.0], truth_token_mu=[-1.0], truth_token_sigma=[1.0],
                    truth_token_ids=[7], truth_predicted_ids=[7])
    just_eos_values = M.row_values(just_eos, kind=M.SetKind(), loss_only=True)
    assert just_eos_values["mia_min_k"] is None and just_eos_values["extraction_strength"] is None
    assert just_eos_values["mia_loss"] == pytest.approx(1.0)
    assert values["mia_grad_norm"] is None and "rouge_recall" not in values  # a loss-only row: no generation
    empty_values = M.row_values(empty, kind=kind, loss_only=True)
    assert all(empty_values[M.BY_NAME[n].row_key] is None
               for n in ("loss", "zlib", "min_k", "min_k_plus_plus", "exact_memorisation", "extraction_strength"))
    rows = [dict(record, **values), dict(empty, **empty_values)]
    metrics = M.set_metrics(rows, forget_form=True, kind=kind, loss_only=True)
    assert metrics["min_k"] == pytest.approx(3.0) and metrics["exact_memorisation"] == pytest.approx(2 / 3)
    assert M.rows_left_out(rows)["min_k"] == 1  # the empty answer: left out, and counted
    from unlearnlm.evaluation.evaluate import skipped_metrics

    skipped = skipped_metrics({"forget": {"role": "forget", "rows": 2, "metrics": metrics,
                                          "rows_left_out": M.rows_left_out(rows)}})
    assert f"min_k on forget: 1 of 2 rows left out ({M.NO_TOKENS})" in skipped
    assert f"grad_norm on forget ({M.BY_NAME['grad_norm'].missing})" in skipped
    only_empty = M.set_metrics([dict(empty, **empty_values)], forget_form=True, kind=kind, loss_only=True)
    assert only_empty["min_k"] is None and only_empty["extraction_strength"] is None


# ---- end to end on the tiny model ------------------------------------------------------------


class Embedder:
    name = "constant"

    def encode(self, texts, batch_size=64):
        import numpy as np

        return np.ones((len(texts), 4), dtype=np.float32)




def _config(tiny_model, folder, output, *extra):
    return load_config(EvaluateConfig, None, [
        f"model.name_or_path={tiny_model}", f"data.source={folder}", "data.forget=forget", "data.holdout=holdout01",
        "max_length=32", "generation_batch_size=4", "loss_batch_size=5", f"output_dir={output}",
        "judges.nli=none", *extra])


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def privacy_eval(tiny_model, privacy_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("privacy_eval")
    summary = evaluate_model(_config(tiny_model, privacy_folder, output), judges=Judges(Embedder(), None))
    return output, summary


def test_holdout_set_gives_the_aucs_and_privleak_with_the_fallback_said(privacy_eval, capsys):
    output, summary = privacy_eval
    assert summary["rows"]["holdout"] == 5 and summary["sets"]["holdout"]["role"] == "holdout"
    holdout = _jsonl(output / "records" / "holdout.jsonl")
    forget = _jsonl(output / "records" / "forget.jsonl")
    assert all(r["generation"] == "" for r in holdout)  # loss pass only: nothing generated
    assert "rouge" not in summary["sets"]["holdout"]["metrics"]  # nor any metric of the generation
    for score in ("loss", "zlib", "min_k", "min_k_plus_plus"):
        key = M.BY_NAME[score].row_key
        expected = _auc_by_pairs([r[key] for r in forget], [r[key] for r in holdout])
        assert summary[f"AUC_{score}"] == pytest.approx(expected)
    # Min-K% with k = 0.4, by hand from the stored log-probabilities less the EOS's, and privleak
    # against A_R = 0.5
    by_hand = [-sum(sorted(r["truth_token_log_probs"][:-1])[: max(1, math.floor(0.4 * (r["truth_tokens"] - 1)))])
               / max(1, math.floor(0.4 * (r["truth_tokens"] - 1))) for r in forget]
    assert [r["mia_min_k"] for r in forget] == pytest.approx(by_hand)
    assert summary["privleak"] == pytest.approx(((1 - summary["AUC_min_k"]) - 0.5) / 0.5 * 100)
    assert summary["privleak_reference"].startswith("A_R = 0.5 assumed (no retain_eval given)")
    for record in forget + holdout:  # the kept per-token values are those of the loss
        loss = -sum(record["truth_token_log_probs"]) / record["truth_tokens"]
        assert loss == pytest.approx(record["truth_loss"], rel=1e-5)
        assert len(record["truth_token_mu"]) == len(record["truth_token_sigma"]) == record["truth_tokens"]
    assert "AUC_min_k" in (output / "results.csv").read_text().splitlines()[0]


def test_kept_token_values_are_those_of_a_plain_forward(privacy_eval, tiny_model):
    from unlearnlm.config import ModelConfig
    from unlearnlm.data.formatting import PromptFormat
    from unlearnlm.training.models import load_model, load_tokenizer

    output, _ = privacy_eval
    config = ModelConfig(name_or_path=str(tiny_model))
    model, formatter = load_model(config), PromptFormat(load_tokenizer(config))
    record = _jsonl(output / "records" / "retain.jsonl")[1]
    encoded = formatter.encode(record["question"], record["ground_truth"])
    ids = torch.tensor([encoded.input_ids])
    with torch.no_grad():
        log_p = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    positions = range(encoded.prompt_length - 1, ids.shape[1] - 1)  # the logits predicting each answer token
    targets = [ids[0, t + 1].item() for t in positions]
    p = log_p.exp()
    mu = [(p[t] * log_p[t]).sum().item() for t in positions]
    sigma = [math.sqrt(max((p[t] * log_p[t] ** 2).sum().item() - m**2, 1e-6))
             for t, m in zip(positions, mu, strict=True)]
    assert record["truth_token_ids"] == targets
    expected = [log_p[t, y].item() for t, y in zip(positions, targets, strict=True)]
    assert record["truth_token_log_probs"] == pytest.approx(expected, abs=1e-5)
    assert record["truth_token_mu"] == pytest.approx(mu, abs=1e-5)
    assert record["truth_token_sigma"] == pytest.approx(sigma, abs=1e-5)
    assert record["truth_predicted_ids"] == [int(log_p[t].argmax()) for t in positions]


def test_default_privacy_values_follow_open_unlearnings_rule_by_hand(privacy_eval, tiny_model):
    """Min-K%, Min-K%++, EM and ES of every forget and holdout row, recomputed from a plain forward
    with open-unlearning's rule (src/evals/metrics/utils.py tokenwise_logprobs and
    tokenwise_vocab_logprobs: the label positions less the last, "ignore eos prediction";
    mia/min_k.py, mia/min_k_plus_plus.py, memorization.py), and the Min-K% AUC from them."""
    from unlearnlm.config import ModelConfig
    from unlearnlm.data.formatting import PromptFormat
    from unlearnlm.training.models import load_model, load_tokenizer

    output, summary = privacy_eval
    config = ModelConfig(name_or_path=str(tiny_model))
    tokenizer = load_tokenizer(config)
    model, formatter = load_model(config), PromptFormat(tokenizer)
    scores = {}
    for set_name in ("forget", "holdout"):
        scores[set_name] = []
        for record in _jsonl(output / "records" / f"{set_name}.jsonl"):
            encoded = formatter.encode(record["question"], record["ground_truth"])
            input_ids = torch.tensor([encoded.input_ids])
            labels = torch.tensor([-100] * encoded.prompt_length + list(encoded.input_ids[encoded.prompt_length:]))
            assert labels[-1].item() == tokenizer.eos_token_id  # the convention matters on every row
            with torch.no_grad():
                log_probs = torch.log_softmax(model(input_ids=input_ids).logits.double(), dim=-1)[0, :-1]
            target = log_probs.gather(1, input_ids[0, 1:, None])[:, 0]
            positions = (labels != -100).nonzero()[:, 0][:-1]  # -1: the EOS's prediction is left out
            start, end = positions[0].item(), positions[-1].item()
            lp, vocab = target[start - 1:end], log_probs[start - 1:end]
            kept = labels[positions]
            num_k = max(1, int(len(lp) * 0.4))
            min_k = -torch.sort(lp).values[:num_k].mean().item()
            mu = (vocab.exp() * vocab).sum(-1)
            var = torch.clamp((vocab.exp() * vocab**2).sum(-1) - mu**2, min=1e-6)
            min_k_pp = -torch.sort((lp - mu) / var.sqrt()).values[:num_k].mean().item()
            predictions = vocab.argmax(-1)
            em = ((predictions == kept).sum() / len(kept)).item()
            es = _extraction_strength_open_unlearning(predictions.tolist(), kept.tolist())
            assert record["mia_min_k"] == pytest.approx(min_k, abs=1e-5)
            assert record["mia_min_k_plus_plus"] == pytest.approx(min_k_pp, abs=1e-4)
            if set_name == "forget":
                assert record["exact_memorisation"] == pytest.approx(em, abs=1e-12)
                assert record["extraction_strength"] == pytest.approx(es, abs=1e-12)
            scores[set_name].append(min_k)
    assert summary["AUC_min_k"] == pytest.approx(_auc_by_pairs(scores["forget"], scores["holdout"]))


def test_privacy_eos_keep_and_no_floor_are_the_named_variants(privacy_eval, tmp_path):
    output, _ = privacy_eval
    config = load_config(EvaluateConfig, None, ["privacy.eos=keep", "privacy.extraction_floor=false"])
    kind = M.SetKind(**M.privacy_conventions(config.privacy))
    assert not kind.drop_final_label and not kind.extraction_floor
    for record in _jsonl(output / "records" / "forget.jsonl"):
        values = M.row_values(record, kind=kind, loss_only=True)
        every = record["truth_token_log_probs"]
        m = max(1, math.floor(0.4 * len(every)))
        assert values["mia_min_k"] == pytest.approx(-sum(sorted(every)[:m]) / m)
        hits = [p == y for p, y in zip(record["truth_predicted_ids"], record["truth_token_ids"], strict=True)]
        assert values["exact_memorisation"] == pytest.approx(sum(hits) / len(hits))
    with pytest.raises(UserError, match="privacy.eos must be drop or keep, got strip"):
        load_config(EvaluateConfig, None, ["privacy.eos=strip"])


def test_privleak_and_reference_against_a_retain_model_evaluation(privacy_eval, tiny_model, privacy_folder, tmp_path):
    output, first = privacy_eval
    # The same model as its own retain model: the same Min-K% AUC -> privleak 0, and LOSS - LOSS_ref = 0.
    again = evaluate_model(_config(tiny_model, privacy_folder, tmp_path, f"retain_eval={output}"),
                           judges=Judges(Embedder(), None))
    assert again["privleak"] == pytest.approx(0.0, abs=1e-9)
    assert again["privleak_reference_auc"] == pytest.approx(first["AUC_min_k"])
    assert again["privleak_reference"] == "the retain model's Min-K% AUC"
    for record in _jsonl(tmp_path / "records" / "forget.jsonl") + _jsonl(tmp_path / "records" / "holdout.jsonl"):
        assert record["mia_reference"] == pytest.approx(0.0, abs=1e-4)
    assert not any(s.startswith("reference on") for s in again["skipped"])


def test_grad_norm_is_one_backward_per_forget_and_holdout_row(tiny_model, privacy_folder, tmp_path):
    from unlearnlm.config import ModelConfig
    from unlearnlm.data.formatting import PromptFormat
    from unlearnlm.training.models import load_model, load_tokenizer

    summary = evaluate_model(_config(tiny_model, privacy_folder, tmp_path, "privacy.grad_norm_p=inf", "ds_size=3"),
                             judges=Judges(Embedder(), None))
    assert "AUC_grad_norm" in summary
    record = _jsonl(tmp_path / "records" / "holdout.jsonl")[0]
    assert "grad_norm" not in _jsonl(tmp_path / "records" / "retain.jsonl")[0]
    config = ModelConfig(name_or_path=str(tiny_model))
    model, formatter = load_model(config), PromptFormat(load_tokenizer(config))
    encoded = formatter.encode(record["question"], record["ground_truth"])
    ids = torch.tensor([encoded.input_ids])
    log_p = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    loss = -torch.stack([log_p[t - 1, ids[0, t]] for t in range(encoded.prompt_length, ids.shape[1])]).mean()
    grads = torch.autograd.grad(loss, [q for q in model.parameters()])
    by_hand = sum(g.abs().max().item() for g in grads) / len(grads)  # the inf-norm, averaged over tensors
    assert record["grad_norm"] == pytest.approx(by_hand, rel=1e-4)


def test_bad_privacy_settings_are_user_errors(tiny_model, privacy_folder, tmp_path):
    with pytest.raises(UserError, match="grad_norm_p must be 1, 2 or inf"):
        load_config(EvaluateConfig, None, ["privacy.grad_norm_p=3"])
    with pytest.raises(UserError, match="min_k must be in"):
        load_config(EvaluateConfig, None, ["privacy.min_k=0"])
    with pytest.raises(UserError, match="no split 'holdout05'"):
        evaluate_model(_config(tiny_model, privacy_folder, tmp_path, "data.holdout=holdout05"),
                       judges=Judges(Embedder(), None))


def test_every_output_derives_from_the_registry(privacy_eval):
    """Each declared metric has its column in the CSV and its set value in the summary; every
    missing one is listed with the reason its declaration gives; every aggregate has its direction."""
    output, summary = privacy_eval
    header = (output / "results.csv").read_text().splitlines()[0].split(",")
    for metric in M.REGISTRY:
        assert f"forget/{metric.name}" in header and metric.name in summary["sets"]["forget"]["metrics"]
        if summary["sets"]["forget"]["metrics"][metric.name] is None:
            assert any(s.startswith(f"{metric.name} on ") and metric.missing in s for s in summary["skipped"])
    for aggregate in M.AGGREGATES:
        assert aggregate.name in summary["directions"]
    assert summary["sets"]["forget"]["metrics"]["extraction_strength"] is not None

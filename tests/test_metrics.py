"""Every metric of docs/formulas.md#metrics against numbers worked out by hand on small fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unlearnlm.evaluation import metrics as M

# ---- per row ---------------------------------------------------------------------------------


def test_rouge_l_recall_counts_the_longest_common_subsequence_of_the_truth():
    # truth: the cat is on the mat (6 tokens); LCS with "the cat sat on the mat" = the cat on the mat = 5
    assert M.rouge_l_recall("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # Lower-cased, punctuation dropped: all 5 truth tokens appear in order -> 1.0
    assert M.rouge_l_recall("Alice was born in Paris, they say.", "alice was born in paris") == 1.0
    assert M.rouge_l_recall("", "alice was born in paris") == 0.0


def test_rouge_uses_the_stemmer():
    # Porter: running -> run, dogs -> dog, runs -> run. truth [run, dog], generation [dog, run]: LCS 1 -> 1/2
    # (without stemming nothing would match: 0).
    assert M.rouge_l_recall("dog runs", "running dogs") == pytest.approx(0.5)


def test_rouge_scoring_adds_no_root_logging_handler():
    # rouge_score without a tokenizer logs through absl, which calls logging.basicConfig() when the
    # root logger has no handler; the CLI then printed every message twice ("INFO:unlearnlm...").
    # pytest's own root handlers would hide that, so a fresh interpreter scores.
    import subprocess
    import sys

    script = ("import logging\n"
              "from unlearnlm.evaluation.metrics import rouge_l_recall\n"
              "from unlearnlm.evaluation.muse import rouge_l_f1\n"
              "rouge_l_recall('the cat', 'the cat'); rouge_l_f1('the cat', 'the cat')\n"
              "print(len(logging.root.handlers))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "0"


def test_probability_is_exp_of_minus_the_average_loss():
    assert M.probability(math.log(2)) == pytest.approx(0.5)  # e^{-ln 2} = 1/2
    assert M.probability(0.0) == 1.0


def test_normalised_probability_of_real_authors_and_world_facts():
    # P_true = 1/2, P_perturbed = 1/4, 1/4 -> 0.5 / (0.5 + 0.25 + 0.25) = 0.5
    assert M.normalised_probability(math.log(2), [math.log(4), math.log(4)]) == pytest.approx(0.5)
    # P_true = 1/2, perturbed 1/2, 1/4, 1/4 -> 0.5 / 1.5 = 1/3
    assert M.normalised_probability(math.log(2), [math.log(2), math.log(4), math.log(4)]) == pytest.approx(1 / 3)
    # Huge losses do not underflow to 0/0: exp(-1000) / (exp(-1000) + exp(-1001)) = 1 / (1 + e^-1) = 0.731059
    assert M.normalised_probability(1000.0, [1001.0]) == pytest.approx(0.7310586)


def test_truth_ratio_r_uses_the_mean_of_perturbed_losses():
    # paraphrased loss 1, perturbed 2 and 3 -> mean 2.5 -> R = e^{1.5} = 4.481689
    assert M.truth_ratio_r(1.0, [2.0, 3.0]) == pytest.approx(4.481689, rel=1e-6)
    # unequal lists are fine: one perturbed answer of loss ln 4, paraphrased loss 0 -> R = 4
    assert M.truth_ratio_r(0.0, [math.log(4)]) == pytest.approx(4.0)


def test_token_entropy():
    # tokens 5 5 7 9: p = 1/2, 1/4, 1/4 -> H = 0.5*1 + 0.25*2 + 0.25*2 = 1.5 bits; / log2(4) = 2 -> 0.75
    assert M.token_entropy([5, 5, 7, 9]) == pytest.approx(0.75)
    # all distinct: H = log2(3) -> 1.0; one repeated token: H = 0 -> 0.0
    assert M.token_entropy([1, 2, 3]) == pytest.approx(1.0)
    assert M.token_entropy([4, 4, 4]) == 0.0
    # a single-token generation and an empty one: 0 by definition (log2(1) = 0)
    assert M.token_entropy([42]) == 0.0
    assert M.token_entropy([]) == 0.0


def test_cosine_is_clipped_at_zero():
    a = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    # same direction 1; opposite -1 -> 0; 45 degrees 1/sqrt(2) = 0.707107; zero vector -> 0
    assert M.cosine_rows(a, b) == pytest.approx([1.0, 0.0, 0.7071068, 0.0])


def test_entailment_needs_rouge_of_at_least_a_tenth():
    assert M.entailed("entailment", 0.1)
    assert not M.entailed("entailment", 0.0999)  # the ROUGE < 0.1 rule
    assert not M.entailed("neutral", 0.9)
    assert not M.entailed("contradiction", 1.0)


# ---- per set ---------------------------------------------------------------------------------


def test_truth_ratio_retain_form():
    # R = e^{1.5}: 1 - e^{-1.5} = 0.776870; R = e^{-1} < 1: 1 - e = -1.718 -> max(0, .) = 0
    # mean = 0.776870 / 2 = 0.388435
    assert M.truth_ratio_retain([math.exp(1.5), math.exp(-1)]) == pytest.approx(0.3884349, rel=1e-6)


def test_truth_ratio_forget_form_with_r_below_and_above_one():
    # R = 4 (> 1): min(4, 1/4) = 0.25; R = 0.5 (< 1): min(0.5, 2) = 0.5; mean 0.375 -> 1 - 0.375 = 0.625
    assert M.truth_ratio_forget([4.0, 0.5]) == pytest.approx(0.625)
    # R = 1 exactly: min(1, 1) = 1 -> 1 - 1 = 0
    assert M.truth_ratio_forget([1.0]) == pytest.approx(0.0)


def _record(generation, truth, token_ids, truth_loss, paraphrased_loss, perturbed, cosine, label):
    return {"generation": generation, "ground_truth": truth, "generation_token_ids": token_ids,
            "truth_loss": truth_loss, "paraphrased_loss": paraphrased_loss, "perturbed_losses": perturbed,
            "cosine": cosine, "nli_label": label}


def test_row_values_and_set_metrics_by_hand():
    rows = [
        # truth [alice was born in lima]: LCS with the generation = 4 -> ROUGE 0.8; entailed (0.8 >= 0.1)
        # tokens 1 2 2 3 -> p = 1/4, 1/2, 1/4 -> H = 1.5 / log2(4) = 0.75
        # loss ln 2 -> P = 0.5; R = exp(ln 4 - 0) = 4
        _record("alice was born in paris", "alice was born in lima", [1, 2, 2, 3],
                math.log(2), 0.0, [math.log(4)], 0.6, "entailment"),
        # ROUGE 0 (< 0.1): labelled entailment but not counted; one token -> entropy 0
        # loss ln 4 -> P = 0.25; R = exp(0 - ln 2) = 0.5
        _record("yes", "alice was born in lima", [7],
                math.log(4), math.log(2), [0.0, 0.0], 0.2, "entailment"),
    ]
    values = [M.row_values(r) for r in rows]
    assert values[0]["rouge_recall"] == pytest.approx(0.8)
    assert values[0]["entailed"] is True and values[1]["entailed"] is False
    assert [v["truth_ratio"] for v in values] == pytest.approx([4.0, 0.5])
    for row, value in zip(rows, values):
        row.update(value)
    forget = M.set_metrics(rows, forget_form=True)
    # These records carry no per-token values: every privacy metric is missing, none invented.
    assert all(forget.pop(m.name) is None for m in M.REGISTRY if m.group == "privacy")
    assert forget.pop("fact_recall") is None  # nor a fact recall: these rows name no facts
    assert forget == pytest.approx({
        "rouge": 0.4,            # (0.8 + 0) / 2
        "probability": 0.375,    # (0.5 + 0.25) / 2
        "truth_ratio": 0.625,    # 1 - mean(0.25, 0.5)
        "token_entropy": 0.375,  # (0.75 + 0) / 2
        "cosine": 0.4,           # (0.6 + 0.2) / 2
        "entailment": 0.5,       # 1 of 2 rows
    })
    # retain form: max(0, 1 - 1/4) = 0.75 and max(0, 1 - 2) = 0 -> 0.375
    assert M.set_metrics(rows, forget_form=False)["truth_ratio"] == pytest.approx(0.375)


def test_missing_judges_and_answers_give_none():
    row = _record("alice", "alice", [1], 0.0, None, [], None, None)
    row.update(M.row_values(row))
    metrics = M.set_metrics([row], forget_form=False)
    assert metrics["truth_ratio"] is None and metrics["cosine"] is None and metrics["entailment"] is None
    assert metrics["rouge"] == 1.0 and metrics["probability"] == 1.0 and metrics["token_entropy"] == 0.0


# ---- aggregates ------------------------------------------------------------------------------


def test_harmonic_mean():
    assert M.harmonic_mean([0.5, 0.25]) == pytest.approx(1 / 3)  # 2 / (2 + 4)
    assert M.harmonic_mean([0.5, 0.0, 0.9]) == 0.0  # any zero makes it zero
    assert M.harmonic_mean([]) is None


def _sets(retain, authors, facts, forget):
    return {
        "retain": {"role": "retain", "metrics": dict(zip(M.METRICS, retain))},
        "real_authors": {"role": "utility", "metrics": dict(zip(M.METRICS, authors))},
        "world_facts": {"role": "utility", "metrics": dict(zip(M.METRICS, facts))},
        "forget": {"role": "forget", "metrics": dict(zip(M.METRICS, forget))},
    }


def test_model_utility_18_values_and_tofu_9_values():
    # order: rouge, probability, truth_ratio, token_entropy, cosine, entailment
    sets = _sets([0.5] * 6, [0.25] * 6, [1.0] * 6, [0.9] * 6)
    # 18 / (6*2 + 6*4 + 6*1) = 18/42 = 0.428571
    assert M.model_utility(sets) == {"value": pytest.approx(18 / 42), "n_values": 18}
    # a zero Token entropy on retain: MU = 0, MU on retain only = 0, TOFU MU (no entropy) unchanged:
    sets["retain"]["metrics"]["token_entropy"] = 0.0
    assert M.model_utility(sets)["value"] == 0.0
    assert M.model_utility(sets, roles=("retain",))["value"] == 0.0
    # TOFU MU: probability, rouge, truth ratio on 3 sets: 9 / (3*2 + 3*4 + 3*1) = 9/21 = 0.428571
    assert M.tofu_model_utility(sets) == {"value": pytest.approx(9 / 21), "n_values": 9}


def test_model_utility_drops_unavailable_metrics():
    sets = _sets([0.5] * 5 + [None], [0.5] * 5 + [None], [0.5] * 5 + [None], [0.5] * 6)
    assert M.model_utility(sets) == {"value": pytest.approx(0.5), "n_values": 15}


def test_real_world_model_utility_is_the_six_of_the_neighbour_set():
    sets = {"neighbor": {"role": "retain", "metrics": dict(zip(M.METRICS, [0.5, 0.5, 0.25, 1.0, 1.0, 0.5]))},
            "forget": {"role": "forget", "metrics": dict(zip(M.METRICS, [0.1] * 6))}}
    # 6 / (2 + 2 + 4 + 1 + 1 + 2) = 6/12 = 0.5
    assert M.model_utility(sets) == {"value": pytest.approx(0.5), "n_values": 6}


def test_forget_efficacy():
    # forget: rouge .2, prob .4, truth ratio .6, entropy .9 (not used), cosine .8, entail 1.0
    sets = _sets([0.5] * 6, [0.5] * 6, [0.5] * 6, [0.2, 0.4, 0.6, 0.9, 0.8, 1.0])
    # 1 - mean(.2, .4, .6, .8, 1.0) = 1 - 0.6 = 0.4
    assert M.forget_efficacy(sets) == {"value": pytest.approx(0.4), "n_values": 5}
    sets["forget"]["metrics"]["entailment"] = None  # no NLI judge: 1 - mean(.2, .4, .6, .8) = 0.5
    assert M.forget_efficacy(sets) == {"value": pytest.approx(0.5), "n_values": 4}


def test_forget_quality_is_the_ks_test_p_value():
    # Fully separated samples of 4 and 4: D = 1; exact two-sided p = 2 / C(8, 4) = 2/70 = 0.028571
    assert M.forget_quality([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(2 / 70)
    # Identical samples: D = 0 -> p = 1
    assert M.forget_quality([0.5, 1.5, 2.0], [0.5, 1.5, 2.0]) == pytest.approx(1.0)


# ---- fact recall -------------------------------------------------------------------------------


def test_a_fact_is_stated_by_any_of_its_phrases_as_whole_words_case_and_spacing_ignored():
    place = [["Bergen, Norway", "the Norwegian city of Bergen", "Bergen"]]
    assert M.states_fact("Veda was born in BERGEN, Norway.", place)
    assert M.states_fact("She comes from the   Norwegian city of Bergen", place)
    assert not M.states_fact("She was born in Bergenfield.", place)  # a word that begins with it
    assert not M.states_fact("She was born in Lyon, France.", place)
    date = [["24 April 1941", "April 24, 1941"]]
    assert M.states_fact("Born on April 24, 1941.", date)
    assert not M.states_fact("Born on 24 April 1945.", date)  # the year is part of the fact
    # A fact of two parts (the parents' jobs) is stated only when both are.
    parents = [["baker", "bread maker"], ["nurse", "hospital nurse"]]
    assert M.states_fact("Her father was a bread maker and her mother a nurse.", parents)
    assert not M.states_fact("Her father was a baker and her mother a teacher.", parents)
    assert M.states_fact("It\u2019s O\u2019Brien.", [["O'Brien"]])  # a typographic apostrophe


def test_fact_recall_is_the_share_of_answers_that_state_the_fact_with_its_interval():
    from unlearnlm.evaluation import evaluate as E
    from unlearnlm.evaluation import statistics as S

    def record(generation, facts):
        row = _record(generation, "x", [1], 0.0, None, [], None, None)
        row["facts"] = facts
        row.update(M.row_values(row))
        return row

    rows = [record("Born in Bergen.", [["Bergen"]]),              # stated
            record("Born in Lyon.", [["Bergen"]]),                # not
            record("Born on 2 May 1950.", [["2 May 1950"]]),      # stated
            record("I'm not sure.", [["Ottilie Whitcombe"]])]     # not
    assert [r["fact_recall"] for r in rows] == [1.0, 0.0, 1.0, 0.0]
    assert M.set_metrics(rows, forget_form=True)["fact_recall"] == 0.5  # 2 of 4
    # A row without facts (TOFU's) has no value, and a set of such rows none at all.
    bare = _record("Born in Bergen.", "x", [1], 0.0, None, [], None, None)
    bare.update(M.row_values(bare))
    assert bare["fact_recall"] is None
    assert M.set_metrics([bare], forget_form=True)["fact_recall"] is None
    # Its interval is the bootstrap's: replicate b is the share of stated facts among rows index_matrix[b].
    samples = 200
    replicates = S.bootstrap([S.SetRows("forget", "forget", rows)], E.scoring("tofu"), samples=samples, seed=5)
    stated = np.array([1.0, 0.0, 1.0, 0.0])
    by_hand = stated[S.index_matrix(5, "forget", 4, samples)].mean(axis=1)
    assert np.array_equal(replicates.values["forget/fact_recall"], by_hand)
    low, high = S.intervals(replicates)["forget/fact_recall"]
    assert (low, high) == pytest.approx(tuple(np.quantile(by_hand, [0.025, 0.975])))

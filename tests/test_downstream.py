"""lm-evaluation-harness, driven in-process, on a tiny local task whose answer is known.

The model is the tiny Llama with its final norm zeroed: every hidden state is 0, so every
logit is 0 and every token has log-probability -log|V|. A choice of n tokens then scores
-n·log|V|: ``acc`` picks the choice with the fewest tokens, ``acc_norm`` (score divided by the
choice's length in characters) the one with the most characters per token. The expected
accuracies follow by hand, with no ties.
"""

from __future__ import annotations

import json

import pytest
import torch
from lm_eval_tasks import write_task
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearnlm.config import DownstreamConfig
from unlearnlm.errors import UserError
from unlearnlm.evaluation.downstream import headline_scores, run_downstream, scores_from_results, write_downstream

# (choices, gold index, acc picks, acc_norm picks), one word = one token for the tiny tokenizer.
DOCS = [
    (["red", "big blue sky"], 0, 0, 1),    # 1 vs 3 tokens; -L/3 < -3L/12
    (["big blue sky", "red"], 0, 1, 0),
    (["green", "a b"], 1, 0, 0),           # -L/5 > -2L/3
    (["oslo", "paris lima"], 0, 0, 1),     # -L/4 < -2L/10
]
EXPECTED_ACC = sum(gold == acc for _, gold, acc, _ in DOCS) / len(DOCS)          # 0.5
EXPECTED_ACC_NORM = sum(gold == norm for _, gold, _, norm in DOCS) / len(DOCS)   # 0.25

def write_choice_task(folder):
    """lm-eval task ``tiny_choice`` in ``folder``: its YAML and its local JSON Lines data."""
    return write_task(folder, "tiny_choice", [(c, g) for c, g, _, _ in DOCS], metrics=("acc", "acc_norm"))


@pytest.fixture(scope="module")
def choice_task(tmp_path_factory):
    return write_choice_task(tmp_path_factory.mktemp("lm_eval_tasks"))


@pytest.fixture(scope="module")
def uniform_model(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        model.model.norm.weight.zero_()
    return model, AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_local_task_gives_the_expected_accuracy(uniform_model, choice_task, tmp_path):
    model, tokenizer = uniform_model
    config = DownstreamConfig(tasks=["tiny_choice"], include_path=str(choice_task), batch_size=3)
    scores = run_downstream(model, tokenizer, config)
    values = {(s.task, s.metric, s.filter): s.value for s in scores}
    assert values == {("tiny_choice", "acc", "none"): EXPECTED_ACC, ("tiny_choice", "acc_norm",
                                                                     "none"): EXPECTED_ACC_NORM}
    assert EXPECTED_ACC == 0.5 and EXPECTED_ACC_NORM == 0.25
    # A task outside the paper's five reports every metric under task/metric.
    assert headline_scores(scores) == {"tiny_choice/acc": 0.5, "tiny_choice/acc_norm": 0.25}
    written = json.loads(write_downstream(scores, tmp_path).read_text())
    assert written["headline"] == {"tiny_choice/acc": 0.5, "tiny_choice/acc_norm": 0.25}


def test_limit_takes_the_first_examples(uniform_model, choice_task):
    model, tokenizer = uniform_model
    config = DownstreamConfig(tasks=["tiny_choice"], include_path=str(choice_task), limit=2)
    values = {s.metric: s.value for s in run_downstream(model, tokenizer, config)}
    assert values == {"acc": 0.5, "acc_norm": 0.5}  # docs 1-2: acc right once, acc_norm right once


def test_headline_metrics_of_the_paper_tasks():
    results = {"results": {
        "arc_challenge": {"alias": "arc", "acc,none": 0.3, "acc_stderr,none": 0.01, "acc_norm,none": 0.35,
                          "acc_norm_stderr,none": 0.02},
        "gsm8k": {"exact_match,strict-match": 0.1, "exact_match,flexible-extract": 0.2,
                  "exact_match_stderr,flexible-extract": "N/A"},
        "triviaqa": {"exact_match,remove_whitespace": 0.4},
    }}
    scores = scores_from_results(results, ["arc_challenge", "gsm8k", "triviaqa", "mmlu"])
    assert len(scores) == 5
    assert headline_scores(scores) == {"arc_challenge/acc_norm": 0.35,
                                       "gsm8k/exact_match/flexible-extract": 0.2,
                                       "triviaqa/exact_match/remove_whitespace": 0.4}
    arc_norm = next(s for s in scores if s.task == "arc_challenge" and s.metric == "acc_norm")
    assert arc_norm.stderr == 0.02 and arc_norm.headline


def test_missing_task_folder_is_a_user_error(uniform_model, tmp_path):
    model, tokenizer = uniform_model
    config = DownstreamConfig(tasks=["tiny_choice"], include_path=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="is not a folder"):
        run_downstream(model, tokenizer, config)


def test_unreachable_hub_is_a_user_error(uniform_model, choice_task, monkeypatch):
    import lm_eval

    def offline(**kwargs):
        raise ConnectionError("Couldn't reach 'allenai/ai2_arc' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(lm_eval, "simple_evaluate", offline)
    model, tokenizer = uniform_model
    config = DownstreamConfig(tasks=["tiny_choice"], include_path=str(choice_task))
    with pytest.raises(UserError, match="could not load a task's data .*downstream.include_path"):
        run_downstream(model, tokenizer, config)

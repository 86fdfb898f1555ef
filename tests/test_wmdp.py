"""WMDP end to end on a tiny model: corpora in the hub's layout (and a file, as the gated bio
forget corpus comes), text unlearning, and lm-eval accuracy on local tasks named as lm-eval's.

The target is the tiny Llama with its final norm zeroed: every logit is 0, so a choice of n
tokens scores -n·log|V| and ``acc`` picks the choice with the fewest tokens. Its accuracies
follow by hand (see DOCS)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from lm_eval_tasks import write_task

from unlearnlm.config import WmdpConfig, load_config
from unlearnlm.errors import UserError

# (choices, gold index, index of the fewest-token choice): one word = one token.
DOCS = [
    (["red", "big blue sky"], 0, 0),
    (["big blue sky", "red"], 0, 1),
    (["green", "a b"], 1, 0),
    (["oslo", "paris lima"], 0, 0),
]
EXPECTED_ACC = sum(gold == fewest for _, gold, fewest in DOCS) / len(DOCS)  # 0.5

TASKS = ("wmdp_bio", "wmdp_cyber", "mmlu")


@pytest.fixture(scope="module")
def local_tasks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wmdp_tasks")
    for name in TASKS:
        write_task(folder, name, [(c, g) for c, g, _ in DOCS])
    return folder


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """cais/wmdp-corpora's layout (CONFIG/train), plus a bio forget file outside it."""
    folder = tmp_path_factory.mktemp("wmdp_corpora")
    forget = ["Alice was born in Paris. The favourite colour of alice is red.",
              "Bob was born in Lima. The favourite colour of bob is green."]
    retain = ["Dave was born in Cairo.", "Erin was born in Quito. The favourite colour of erin is purple."]
    for config, rows in (("cyber-forget-corpus", forget), ("cyber-retain-corpus", retain)):
        (folder / config).mkdir()
        (folder / config / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    bio = folder.parent / "bio_forget.jsonl"
    bio.write_text("".join(json.dumps({"title": "x", "text": t}) + "\n" for t in forget[::-1]))
    return folder, bio


@pytest.fixture(scope="module")
def uniform_model(tiny_model, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("uniform") / "model"
    shutil.copytree(tiny_model, folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        model.model.norm.weight.zero_()
    model.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _overrides(model, corpora_folder, tasks, output_dir, *extra):
    return [f"output_dir={output_dir}", f"unlearn.model.name_or_path={model}",
            f"unlearn.data.source={corpora_folder}", "unlearn.data.chunk_length=8", "unlearn.training.epochs=1",
            "unlearn.training.per_device_batch_size=2", "unlearn.training.progress=false", "unlearn.training.lr=1e-3",
            f"downstream.include_path={tasks}", "downstream.batch_size=4", *extra]


def test_wmdp_preset_loads():
    config = load_config(WmdpConfig, "wmdp")
    assert config.downstream.tasks == list(TASKS)
    assert (config.unlearn.data.source, config.unlearn.data.forget, config.unlearn.data.retain) == (
        "cais/wmdp-corpora", "cyber-forget-corpus", "cyber-retain-corpus")
    assert config.unlearn.data.format == "text" and config.unlearn.method == "GA+GD"


def test_wmdp_end_to_end(uniform_model, corpora, local_tasks, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unlearnlm.cli import main
    from unlearnlm.config import DownstreamConfig
    from unlearnlm.evaluation.downstream import headline_scores, run_downstream

    folder, _ = corpora
    output_dir = tmp_path / "wmdp"
    assert main(["wmdp", "--config", "wmdp", *_overrides(uniform_model, folder, local_tasks, output_dir)]) == 0
    summary = json.loads((output_dir / "summary.json").read_text())
    target, unlearned = summary["models"]
    assert target["model"] == "target" and unlearned["model"] == "GA+GD"
    assert target["scores"] == {"wmdp_bio/acc": EXPECTED_ACC, "wmdp_cyber/acc": EXPECTED_ACC, "mmlu/acc": EXPECTED_ACC}
    # The unlearned model's numbers are those lm-eval gives the saved model.
    model_dir = output_dir / "GA+GD" / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.model.norm.weight.abs().sum() > 0  # training moved it away from the uniform target
    again = headline_scores(run_downstream(model, AutoTokenizer.from_pretrained(model_dir),
                                           DownstreamConfig(tasks=list(TASKS), include_path=str(local_tasks))))
    assert unlearned["scores"] == again
    train_summary = json.loads((output_dir / "GA+GD" / "train_summary.json").read_text())
    assert (train_summary["forget_rows"], train_summary["retain_rows"]) == (2, 2)
    table = (output_dir / "results.md").read_text()
    assert table.splitlines()[0] == "| model | wmdp_bio/acc | wmdp_cyber/acc | mmlu/acc |"
    assert "| target | 0.5000 | 0.5000 | 0.5000 |" in table


def test_wmdp_bio_forget_from_a_file(uniform_model, corpora, local_tasks, tmp_path):
    from unlearnlm.methods import get_method
    from unlearnlm.scenarios.wmdp import run_config, run_wmdp
    from unlearnlm.training.run import load_unlearning_data

    folder, bio = corpora
    config = load_config(WmdpConfig, "wmdp", _overrides(
        uniform_model, folder, local_tasks, tmp_path / "bio", f"unlearn.data.forget={bio}",
        "unlearn.data.retain=cyber-retain-corpus", "evaluate_target=false"))

    data = load_unlearning_data(run_config(config), get_method("GA+GD"))
    assert [r["text"] for r in data.forget] == [json.loads(line)["text"] for line in bio.read_text().splitlines()]
    output_dir, table = run_wmdp(config)
    assert [m["model"] for m in json.loads((output_dir / "summary.json").read_text())["models"]] == ["GA+GD"]


def test_wmdp_bad_corpus_fails_before_any_model_work(uniform_model, corpora, local_tasks, tmp_path):
    from unlearnlm.scenarios.wmdp import run_wmdp

    folder, _ = corpora
    config = load_config(WmdpConfig, "wmdp", _overrides(uniform_model, folder, local_tasks, tmp_path / "bad",
                                                         "unlearn.data.forget=bio-forget-corpus"))
    with pytest.raises(UserError, match="has no config 'bio-forget-corpus'; it holds: cyber-forget-corpus"):
        run_wmdp(config)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(UserError, match="plain text has not"):
        load_config(WmdpConfig, "wmdp", ["unlearn.method=DPO+GD"])

"""The demo's orchestration on a tiny model: every stage runs, caches, and ends in a report."""

from __future__ import annotations

import json
import logging

import pytest

from unlearnlm.config import BootstrapConfig, DemoConfig, from_dict
from unlearnlm.data.utility_facts import REAL_AUTHORS, WORLD_FACTS
from unlearnlm.data.world import all_rows, holdout_authors, make_world
from unlearnlm.errors import UserError
from unlearnlm.scenarios.demo import run_demo
from unlearnlm.tiny import make_tiny_model

SMALL = {"authors": 10, "questions_per_author": 3, "seed": 3,
         "evaluation": {"ds_size": 4, "judges": {"embedder": "none", "nli": "none"}},
         "methods": ["ME+GD", "NPO+GD"], "train_judge": False,
         "finetune_training": {"lr": 1e-3, "epochs": 1, "per_device_batch_size": 8, "gradient_accumulation_steps": 1,
                      "warmup_epochs": 0, "progress": False},
         "unlearn_training": {"lr": 1e-3, "epochs": 1, "per_device_batch_size": 2, "gradient_accumulation_steps": 1,
                     "warmup_epochs": 0, "progress": False}}


@pytest.fixture()
def world_model(tmp_path_factory):
    """A tiny model whose vocabulary covers the small world and the utility sets."""
    texts = []
    for row in all_rows(make_world(SMALL["seed"], SMALL["authors"], SMALL["questions_per_author"])):
        texts += [row["question"], row["answer"], row["paraphrased_answer"], *row["perturbed_answer"]]
    for row in REAL_AUTHORS + WORLD_FACTS:
        texts += [row["question"], row["answer"], row["original_answer"], *row["perturbed_answer"]]
    for rows in holdout_authors(SMALL["seed"], SMALL["authors"], SMALL["questions_per_author"], 4).rows:
        texts += [text for row in rows for text in (row["question"], row["answer"])]
    return make_tiny_model(tmp_path_factory.mktemp("demo_model") / "model", texts)


def test_demo_runs_every_stage_and_reuses_its_cache(world_model, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="unlearnlm")
    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path / "cache"))
    config = from_dict(DemoConfig, {**SMALL, "output_dir": str(tmp_path / "demo"),
                                    "model": {"name_or_path": str(world_model)}})
    page = run_demo(config)
    assert page.exists() and (page.parent / "report.md").exists() and (page.parent / "mu_fe.png").exists()
    table = (page.parent / "report.md").read_text()
    for name in ("target", "retain", "me-gd", "npo-gd"):
        assert f"| {name} |" in table
    out = tmp_path / "demo"
    # every unlearned model attacked (relearning), the table in the report, the weights dropped
    assert "## Robustness: recovery under attack" in table and "| ME+GD (me-gd) |" in table
    for slug in ("me-gd", "npo-gd"):
        attacks = json.loads((out / "unlearn" / slug / "attacks" / "summary.json").read_text())
        assert [a["attack"] for a in attacks["attacks"]] == ["relearn:forget_half"]
        assert attacks["target_eval"] == str((out / "target").resolve() / "eval")  # the cached one, reused
        assert not (out / "unlearn" / slug / "attacks" / "relearn" / "run" / "model").exists()
    target_summary = json.loads((out / "target" / "eval" / "summary.json").read_text())
    assert target_summary["FQ"] is not None  # measured against the retain model's evaluation
    # privleak against the retain model's Min-K% AUC on holdout authors no model has seen. Where the
    # retain model tells its forget rows from the holdout rows perfectly (AUC 1, A_R = 0, as this
    # tiny world can), the target's privleak is undefined, and said so, never a number.
    retain_summary = json.loads((out / "retain" / "eval" / "summary.json").read_text())
    assert "AUC_min_k" in target_summary
    if retain_summary["AUC_min_k"] == 1.0:
        assert "privleak" not in target_summary
        assert any(s.startswith("privleak (the reference model's AUC is 1 (A_R = 0)")
                   for s in target_summary["skipped"])
    else:
        assert isinstance(target_summary["privleak"], float)
    assert retain_summary["privleak_reference"].startswith("A_R = 0.5 assumed")
    assert "privleak" in table and "AUC_min_k" in table and "forget/extraction_strength" in table
    assert (out / "target").is_symlink() and (out / "target").resolve().parent == tmp_path / "cache" / "demo"
    # What the target and the retain model know of the forget facts, in the output and the claims.
    facts = [json.loads((out / name / "eval" / "summary.json").read_text())["sets"]["forget"]["metrics"]["fact_recall"]
             for name in ("target", "retain")]
    assert all(value is not None for value in facts)
    said = f"Forget facts stated (greedy answers naming the true fact): target {facts[0]:.2f} ["
    assert said in caplog.text and said in (page.parent / "claims.md").read_text()
    assert "forget/fact_recall" in table
    # The retain model never saw the forget authors.
    world = out / "world"
    forget = {json.loads(line)["question"] for line in (world / "forget10.json").read_text().splitlines()
              if json.loads(line)["task_id"] == "1"}
    retain = {json.loads(line)["question"] for line in (world / "retain90.json").read_text().splitlines()}
    assert forget and not forget & retain
    full = {json.loads(line)["question"] for line in (world / "full.json").read_text().splitlines()}
    holdout_file = next((tmp_path / "cache" / "demo").glob("holdout-*/holdout.json"))
    holdout = {json.loads(line)["question"] for line in holdout_file.read_text().splitlines()}
    assert len(holdout) == 4 * SMALL["questions_per_author"] and not holdout & full
    caplog.clear()

    # A second demo in a new folder reuses the cached world, target and retain model.
    second = from_dict(DemoConfig, {**SMALL, "output_dir": str(tmp_path / "demo2"),
                                    "model": {"name_or_path": str(world_model)}, "methods": ["GA+GD"]})
    run_demo(second)
    printed = caplog.text  # the demo's messages are logged (the CLI shows them on stdout)
    assert printed.count("already holds this finished run") == 2
    # ... and their evaluations, which live in the cache whatever folder links to them.
    assert printed.count("already holds this evaluation") == 2
    assert (tmp_path / "demo2" / "target").resolve() == (out / "target").resolve()


def test_demo_rejects_a_retain_split_holding_forget_authors(world_model, tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path / "cache"))
    config = from_dict(DemoConfig, {**SMALL, "output_dir": str(tmp_path / "demo"), "retain_split": "full",
                                    "model": {"name_or_path": str(world_model)}})
    with pytest.raises(UserError, match="holds .* questions of forget10 task 1"):
        run_demo(config)


def test_the_judge_trains_in_a_background_process_while_the_models_fine_tune(world_model, tmp_path, monkeypatch):
    """With a judge to train and models to fine-tune, the judge's process runs beside the
    fine-tuning and unlearning, which use one thread; the evaluations wait for the judge and use
    every thread."""
    import sys

    import torch

    from unlearnlm.scenarios import demo

    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path / "cache"))
    events = []

    class FakeJudge:
        def __init__(self, log, command=None):
            self.log = log
            events.append(("started", torch.get_num_threads()))

        def wait(self):
            events.append(("waited", torch.get_num_threads()))

        def finished(self):
            return False

        def stop(self):
            events.append(("stopped", None))

    from unlearnlm.training import run as run_module

    real_finetune = run_module.finetune

    real_unlearn = run_module.unlearn

    def finetune_recording(recipe, callbacks=()):
        events.append(("finetune", torch.get_num_threads()))
        assert [type(c).__name__ for c in callbacks] == ["ReclaimCores"]
        return real_finetune(recipe, callbacks)

    def unlearn_recording(config, callbacks=()):
        events.append(("unlearn", torch.get_num_threads()))
        return real_unlearn(config, callbacks)

    real_background = demo.JudgeInBackground
    monkeypatch.setattr(demo, "JudgeInBackground", FakeJudge)
    monkeypatch.setattr(demo, "judge_needs_training", lambda config: True)
    monkeypatch.setattr(run_module, "finetune", finetune_recording)
    monkeypatch.setattr(run_module, "unlearn", unlearn_recording)
    before = torch.get_num_threads()
    config = from_dict(DemoConfig, {**SMALL, "output_dir": str(tmp_path / "demo"), "methods": ["GA+GD"],
                                    "model": {"name_or_path": str(world_model)}, "run_attacks": False})
    run_demo(config)
    assert [e[0] for e in events] == ["started", "finetune", "finetune", "unlearn", "waited", "stopped"]
    assert events[1][1] == events[2][1] == events[3][1] == 1
    assert events[4][1] == before == torch.get_num_threads()

    # A child that fails stops the demo with the end of its log.
    failing = real_background(tmp_path / "judge.log", [sys.executable, "-c",
                                                       "print('no weights'); raise SystemExit(3)"])
    with pytest.raises(UserError, match="exit code 3(.|\n)*no weights"):
        failing.wait()


def test_training_takes_every_core_back_once_the_judge_is_done():
    import torch

    from unlearnlm.scenarios.demo import ReclaimCores

    class Background:
        done = False

        def finished(self):
            return self.done

    before = torch.get_num_threads()
    background = Background()
    callback = ReclaimCores(background, threads=3)
    try:
        torch.set_num_threads(1)
        callback.on_step_begin(None, None, None)
        assert torch.get_num_threads() == 1  # the judge still trains
        background.done = True
        callback.on_step_begin(None, None, None)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_paper_claims_say_what_this_scale_tells_apart(tmp_path):
    """Synthetic evaluations: ME+GD forgets far more than the rest, GA+GD loses utility, the
    others stay near the target; each claim's verdict follows from its paired intervals."""
    import numpy as np
    from test_report import _evaluation, _records

    from unlearnlm.scenarios.demo import paper_claims

    base = _records(0)
    target = _evaluation(tmp_path / "target", base)

    def variant(name, seed, forget_shift=0.0, utility_scale=1.0):
        sets = _records(seed, forget_shift=forget_shift)
        for s, b in zip(sets, base, strict=True):
            for row, base_row in zip(s.rows, b.rows, strict=True):
                row["question"] = base_row["question"]
                if s.role != "forget":  # the target's utility rows, scaled: a paired change only
                    for key in ("rouge_recall", "probability", "token_entropy", "cosine"):
                        row[key] = float(np.clip(base_row[key] * utility_scale, 0.01, 1))
                    row["truth_ratio"], row["entailed"] = base_row["truth_ratio"], base_row["entailed"]
        return _evaluation(tmp_path / name, sets)

    evals = {"ME+GD": variant("me", 1, forget_shift=0.5), "GA+GD": variant("ga", 2, utility_scale=0.4),
             "NPO+GD": variant("npo", 3, forget_shift=0.02), "IDK+AP": variant("idk", 4, forget_shift=0.05)}
    lines = paper_claims(evals, target, BootstrapConfig(samples=300))
    text = "\n".join(lines)
    line = {key: next(text for text in lines if text.startswith(f"- {key}")) for key in
            ("ME+GD reaches", "ME+GD's MU", "GA+GD", "DPO+GD", "NPO+GD", "IDK+AP")}
    assert line["ME+GD reaches"].endswith("distinguishable, as claimed")
    assert line["ME+GD's MU"].endswith("no distinguishable drop")  # its utility rows are the target's
    assert line["GA+GD"].endswith("distinguishable, as claimed")
    assert "not run here (DPO+GD" in line["DPO+GD"]
    assert line["NPO+GD"].endswith("distinguishable, as claimed")
    assert line["IDK+AP"].endswith("no distinguishable drop")
    assert "continual" in text


def test_forget_fact_lines_say_what_the_target_and_the_retain_model_know(tmp_path):
    from unlearnlm.scenarios.demo import forget_fact_lines

    def evaluation(name, value, interval):
        folder = tmp_path / name
        folder.mkdir()
        summary = {"sets": {"forget": {"role": "forget", "rows": 10, "metrics": {"fact_recall": value}}},
                   "intervals": {"values": {"forget/fact_recall": interval}}}
        (folder / "summary.json").write_text(json.dumps(summary))
        return folder

    retain = evaluation("retain", 0.1, [0.0, 0.3])
    knows = forget_fact_lines(evaluation("knows", 0.9, [0.7, 1.0]), retain)
    assert knows == ["Forget facts stated (greedy answers naming the true fact): target 0.90 [0.70, 1.00], "
                     "retain model 0.10 [0.00, 0.30]."]
    half = forget_fact_lines(evaluation("half", 0.5, [0.2, 0.8]), retain)
    assert len(half) == 2 and half[1].startswith("Note: the target states fewer than 80% of the facts")
    none = forget_fact_lines(evaluation("tofu", None, None), retain)
    assert "target unavailable (the forget rows name no facts)" in none[0]


def test_the_full_comparison_is_one_flag_away(capsys):
    from unlearnlm.cli import main
    from unlearnlm.config import load_config

    full = load_config(DemoConfig, "demo-full", [])
    assert full.methods == ["all"] and full.seeds == [1001, 1002, 1003]
    assert full.attack.attacks == ["relearn", "quantize", "probes"] and full.attack.quantize.bits == [8, 4]
    default = DemoConfig()
    assert default.methods[:4] == ["ME+GD", "IDK+AP", "GA+GD", "NPO+GD"] and len(default.methods) == 6
    assert main(["demo", "--quick", "--full"]) == 2
    assert "use one of --quick, --full or --config" in capsys.readouterr().err


def test_methods_side_by_side_give_the_numbers_of_methods_one_after_another(world_model, tmp_path, monkeypatch,
                                                                            caplog):
    """Two worker processes (one method each, their logs in the run folders) score every method as
    one process running them in turn does; only the threads differ, so the numbers agree to float noise."""
    caplog.set_level(logging.INFO, logger="unlearnlm")
    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path / "cache"))
    common = {**SMALL, "model": {"name_or_path": str(world_model)}, "methods": ["ME+GD", "GA+GD"]}
    run_demo(from_dict(DemoConfig, {**common, "output_dir": str(tmp_path / "apart"), "method_workers": 2}))
    printed = caplog.text
    assert "2 methods, 2 side by side" in printed
    for method, slug in (("ME+GD", "me-gd"), ("GA+GD", "ga-gd")):
        assert f"{method} done: unlearning" in printed
        log = (tmp_path / "apart" / "unlearn" / slug / "demo.log").read_text()
        assert "relearn" in log  # the worker's own messages went to the method's log
    run_demo(from_dict(DemoConfig, {**common, "output_dir": str(tmp_path / "in_turn"), "method_workers": 1}))

    def numbers(path):
        summary = json.loads(path.read_text())
        return {f"{name}/{key}": value for name, scored in summary["sets"].items()
                for key, value in scored["metrics"].items() if isinstance(value, float)}

    for slug in ("me-gd", "ga-gd"):
        apart = numbers(tmp_path / "apart" / "unlearn" / slug / "eval" / "summary.json")
        in_turn = numbers(tmp_path / "in_turn" / "unlearn" / slug / "eval" / "summary.json")
        assert apart.keys() == in_turn.keys() and len(apart) > 10
        assert apart == pytest.approx(in_turn, rel=1e-4, abs=1e-5)
        attacks = [json.loads((tmp_path / folder / "unlearn" / slug / "attacks" / "summary.json").read_text())
                   for folder in ("apart", "in_turn")]
        assert [a["attack"] for a in attacks[0]["attacks"]] == [a["attack"] for a in attacks[1]["attacks"]]


def test_method_workers_is_checked():
    with pytest.raises(UserError, match="method_workers must be 0"):
        from_dict(DemoConfig, {"method_workers": -1}).validate()


def test_the_trained_judge_is_announced_by_its_summary_lines_without_progress_bars(tmp_path, caplog):
    import sys

    from unlearnlm.scenarios.demo import JudgeInBackground

    caplog.set_level(logging.INFO, logger="unlearnlm")
    child = ("import sys; sys.stdout.write('steps:  50%|##  | 1/2\\rsteps: 100%|####| 2/2\\n"
             "training: 2 steps, 1 s\\n\\rLoading: 100%|####| 3/3\\nheld-out accuracy 0.91\\n')")
    background = JudgeInBackground(tmp_path / "judge.log", [sys.executable, "-c", child])
    background.wait()
    said = caplog.text[caplog.text.index("the offline NLI judge is trained"):]
    assert "training: 2 steps, 1 s" in said and "held-out accuracy 0.91" in said
    assert "%|" not in said


def test_a_method_that_fails_in_its_worker_stops_the_demo_with_one_line_naming_it(world_model, tmp_path,
                                                                                  monkeypatch):
    """A user error inside a worker (here: GA+GD's run folder holds another run) ends the demo in
    one line: the method, the error and the method's log."""
    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    taken = out / "unlearn" / "ga-gd"
    taken.mkdir(parents=True)
    (taken / "config.yaml").write_text("method: NPO+GD\noutput_dir: elsewhere\n")
    config = from_dict(DemoConfig, {**SMALL, "output_dir": str(out), "model": {"name_or_path": str(world_model)},
                                    "methods": ["GA+GD", "ME+GD"], "method_workers": 2, "run_attacks": False})
    with pytest.raises(UserError, match=r"^GA\+GD: .*\(its log: .*ga-gd/demo\.log\)$") as raised:
        run_demo(config)
    assert "\n" not in str(raised.value) and "another" in str(raised.value)
    assert (taken / "demo.log").exists()

"""``unlearnlm sweep``: Optuna studies whose choice never sees the reported rows (docs/sweep.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, qa_rows, write_jsonl

import unlearnlm
from unlearnlm.cli import main
from unlearnlm.errors import UserError

FAST = {"unlearn.training.epochs": 1, "unlearn.training.per_device_batch_size": 4,
        "unlearn.training.gradient_accumulation_steps": 1, "unlearn.training.warmup_epochs": 0,
        "unlearn.training.progress": False}


@pytest.fixture(scope="module")
def world(qa_folder, tmp_path_factory) -> Path:
    """qa_folder plus small real-authors and world-facts sets: the tofu scenario's four sets."""
    folder = tmp_path_factory.mktemp("sweep_world")
    for file in qa_folder.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    facts = [{"question": r["question"], "answer": r["answer"].split()[-1].rstrip("."), "original_answer": r["answer"],
              "perturbed_answer": r["perturbed_answer"][:3]} for r in qa_rows()[:8]]
    write_jsonl(folder / "real_authors_perturbed.json", facts[:4])
    write_jsonl(folder / "world_facts_perturbed.json", facts[4:])
    return folder


@pytest.fixture(scope="module")
def target(tiny_model, world, tmp_path_factory) -> Path:
    """The tiny model fine-tuned on every row: it knows some answers, so its MU on retain is above 0."""
    folder = tmp_path_factory.mktemp("sweep_target") / "target"
    run = unlearnlm.finetune(model=tiny_model, output_dir=folder,
                             **{"data.source": str(world), "data.train": ["forget", "retain"], "training.lr": 1e-2,
                                "training.epochs": 10, "training.per_device_batch_size": 4,
                                "training.gradient_accumulation_steps": 1, "training.warmup_epochs": 0,
                                "training.progress": False})
    return run.folder / "model"


def settings(world: Path, target: Path, output: Path, **extra) -> dict:
    """A study of GA+GD on tasks 1-2 (8 forget rows), one epoch a trial, no judges, a constraint
    on MU over the retain set (the tiny model never answers the one-word facts: its MU is 0)."""
    return {"unlearn.model.name_or_path": str(target), "unlearn.data.source": str(world),
            "unlearn.data.forget": "forget", "unlearn.data.retain": "retain", "unlearn.data.task_id": ["1", "2"],
            "unlearn.method": "GA+GD", **FAST, "unlearn.evaluation.judges.embedder": "none",
            "unlearn.evaluation.judges.nli": "none", "unlearn.evaluation.max_length": 24,
            "unlearn.evaluation.bootstrap.samples": 100, "space.training.epochs": "[1]",
            "space.training.lr": "1e-5:3e-3:log", "compare_defaults": False,
            "output_dir": str(output), **extra}


def command_line(values: dict) -> list[str]:
    return [f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in values.items()]


def load_trials(folder: Path, method: str = "GA+GD"):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = json.loads((folder / "study.json").read_text())
    storage = study["storage"]
    storage = storage if "://" in storage else JournalStorage(JournalFileBackend(storage))
    return optuna.load_study(study_name=study["studies"][method], storage=storage).get_trials()


def questions(path: Path) -> set[str]:
    return {json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()}


@pytest.fixture(scope="module")
def study(world, target, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("study") / "study"
    result = unlearnlm.sweep(**settings(world, target, folder, trials=3, sampler="random", pruner="none"))
    return folder, result.numbers


def test_selection_and_report_rows_are_disjoint_and_recorded(study, world):
    folder, _ = study
    split = json.loads((folder / "split" / "split.json").read_text())
    assert set(split["sets"]) == {"retain", "real_authors", "world_facts", "forget"}
    originals = {"retain": world / "retain_perturbed.json", "real_authors": world / "real_authors_perturbed.json",
                 "world_facts": world / "world_facts_perturbed.json"}
    for name, record in split["sets"].items():
        selection, report = set(record["selection"]), set(record["report"])
        assert selection and report and not selection & report
        # Every question of the set (forget: of tasks 1 and 2) is in exactly one part.
        everything = questions(originals[name]) if name in originals else {
            json.loads(line)["question"] for line in (world / "forget_perturbed.json").read_text().splitlines()
            if json.loads(line)["task_id"] in ("1", "2")}
        assert selection | report == everything
        assert questions(folder / "split" / "selection" / record["file"]) == selection
        assert questions(folder / "split" / "report" / record["file"]) == report
    # What the trials were scored on is the selection part only; what is reported, the report part only.
    for records in folder.glob("trials/*/trial_*/eval/epoch_*/records/*.jsonl"):
        assert questions(records) <= set(split["sets"][records.stem]["selection"])
    reported = list((folder / "result" / "eval").glob("*/records/*.jsonl"))
    assert {p.parent.parent.name for p in reported} == {"target", "ga-gd"}
    for records in reported:
        assert questions(records) == set(split["sets"][records.stem]["report"])


def test_the_chosen_trial_is_the_best_on_selection_rows_by_the_rule(study):
    folder, choice = study
    # The rule, computed here from the evaluation summaries the trials wrote (not from the sweep's records).
    target_mu = json.loads((folder / "target" / "selection" / "summary.json").read_text())["MU"]
    assert target_mu > 0
    candidates = []
    for summary_path in folder.glob("trials/ga-gd/trial_*/eval/epoch_*/summary.json"):
        summary = json.loads(summary_path.read_text())
        trial = int(summary_path.parents[2].name.removeprefix("trial_"))
        candidates.append((summary["FE"], summary["MU"], trial, summary["epoch"]))
    assert len(candidates) == 3
    feasible = [c for c in candidates if c[1] >= 0.95 * target_mu]
    assert feasible, "the tiny study should have a trial that keeps the target's utility"
    best = max(feasible, key=lambda c: (c[0], -c[2]))
    chosen = choice["methods"]["GA+GD"]
    assert (chosen["trial"], chosen["epoch"]) == (best[2], best[3])
    assert chosen["selection"]["FE"] == pytest.approx(best[0])
    # Its report numbers are those of an ordinary evaluation folder, with intervals.
    report = json.loads((folder / "result" / "eval" / "ga-gd" / "summary.json").read_text())
    assert chosen["report"]["FE"]["value"] == report["FE"] and report["intervals"]["values"]["FE"]
    assert "scored on report rows" in (folder / "result" / "choice.md").read_text()


def test_rerunning_a_finished_study_does_no_work(study, world, target):
    folder, choice = study
    watched = (sorted(folder.glob("**/summary.json")) + sorted(folder.glob("trials/*/*/model/model.safetensors"))
               + sorted(folder.glob("split/**/*.json")))
    before = {p: p.stat().st_mtime_ns for p in watched}
    trials = len(load_trials(folder))
    again = unlearnlm.sweep(**settings(world, target, folder, trials=3, sampler="random", pruner="none"))
    assert len(load_trials(folder)) == trials == 3
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    assert again.numbers == choice


def test_report_of_a_study(study, tmp_path):
    folder, _ = study
    assert main(["report", str(folder), "--output", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "sweep.md").read_text()
    assert "Parameter importances" in page and "GA+GD (3 trials)" in page and "scored on report rows" in page
    assert (tmp_path / "report" / "sweep_fe_mu.png").stat().st_size > 0
    assert (tmp_path / "report" / "report.md").exists()  # the chosen models on the report rows, as any report


def test_grid_study_enumerates_its_grid_on_a_journal_file(world, target, tmp_path):
    folder = tmp_path / "grid"
    unlearnlm.sweep(**settings(world, target, folder, sampler="grid", storage=str(tmp_path / "journal.log"),
                               **{"space.training.lr": "[1e-4,1e-3]", "space.forget_coeff": "[0.5,2.0]"}))
    trials = load_trials(folder)
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert sorted((t.params["training.lr"], t.params["forget_coeff"]) for t in trials) == [
        (1e-4, 0.5), (1e-4, 2.0), (1e-3, 0.5), (1e-3, 2.0)]
    assert not (folder / "study.db").exists() and (tmp_path / "journal.log").stat().st_size > 0


def test_two_workers_on_one_storage_run_every_trial_once(world, target, tmp_path):
    folder = tmp_path / "shared"
    argv = [sys.executable, "-m", "unlearnlm", "sweep", *command_line(settings(world, target, folder, trials=6,
                                                                               pruner="none"))]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    # The first worker creates the folder and the storage; the second joins the study it finds.
    workers = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    workers.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    trials = load_trials(folder)
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    # Any other trial is one asked for when the count was reached, never run.
    assert all(t.user_attrs.get("surplus") for t in trials if t.state.name != "COMPLETE")
    assert len(completed) == 6 and len({t.number for t in completed}) == 6
    assert len({tuple(sorted(t.params.items())) for t in completed}) == 6
    folders = sorted(folder.glob("trials/ga-gd/trial_*"))
    assert [p.name for p in folders] == sorted(f"trial_{t.number}" for t in completed)
    for run in folders:  # each run trained once: one log row per step, one evaluated epoch
        steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps)) and [p.name for p in (run / "eval").glob("epoch_*")] == ["epoch_1"]
    # Both workers took trials, and each trial was started by one of them only.
    started = [[t.number for t in completed if f"[GA+GD] trial {t.number}: training.lr=" in o] for o in outputs]
    assert all(started) and sorted(started[0] + started[1]) == sorted(t.number for t in completed)
    assert (folder / "result" / "choice.json").exists()


@pytest.mark.parametrize("extra, message", [
    ({"space.training.lr": "1e-4:1e-4"}, "space.training.lr='1e-4:1e-4' is an empty range"),
    ({"space.training.lr": "1e-3:1e-4"}, "is inverted: low must be below high"),
    ({"space.training.lr": "[]"}, "space.training.lr: the list of choices is empty"),
    ({"space.training.learning_rate": "1:2"}, "unknown key in the space: 'training.learning_rate'"),
    ({"space.NPO+GD.beta": "1:2"}, "NPO+GD is not a method of this sweep"),
    ({"objective": "FQ"}, "the rule reads FQ, which needs the retain model"),
    ({"constraint": "MU>=0.95*target", "objective": "FE+target"}, "objective: write target_NAME"),
    ({"constraint": "ROUGE>=1"}, "the rule names 'ROUGE'"),
    ({"sampler": "cmaes"}, "unknown sampler 'cmaes'"),
    ({"storage": "sqlite:////nonexistent-folder/x/study.db"}, "storage sqlite:////nonexistent-folder/x/study.db "
                                                              "cannot be opened"),
])
def test_bad_inputs_are_one_line_errors(world, target, tmp_path, capsys, extra, message):
    code = main(["sweep", *command_line(settings(world, target, tmp_path / "bad", **extra))])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("unlearnlm: error: ") and "\n" not in error
    assert message in error
    assert not (tmp_path / "bad" / "config.yaml").exists()  # fixing the mistake and rerunning is not refused


def test_a_folder_of_another_configuration_is_refused(study, world, target, capsys):
    folder, _ = study
    changed = settings(world, target, folder, trials=3, sampler="random", pruner="none",
                       **{"space.training.lr": "1e-4:1e-2:log"})
    assert main(["sweep", *command_line(changed)]) == 2
    assert "holds a sweep run with another config (differs in: space.training.lr)" in capsys.readouterr().err


def test_a_constraint_no_trial_meets_names_the_best_violating_trial(world, target, tmp_path):
    with pytest.raises(UserError, match=r"GA\+GD: no trial meets MU>=2\*target on the selection rows .*"
                                        r"the best violating: trial 0 epoch 1 \(MU "):
        unlearnlm.sweep(**settings(world, target, tmp_path / "strict", trials=1, constraint="MU>=2*target"))



def test_a_killed_trial_is_failed_and_retried_once_in_its_own_folder(world, target, tmp_path):
    import time

    import optuna

    from unlearnlm.scenarios.sweep import SweepConfig, search_space

    folder = tmp_path / "killed"
    folder.mkdir()
    # No constraint: the killed trial's settings are drawn by an unseeded sampler, and a high lr
    # leaves no candidate that meets one (the sweep would then end in its one-line error).
    values = settings(world, target, folder, trials=1, heartbeat_seconds=1, pruner="none", constraint="none")
    config = unlearnlm.api.build_config(SweepConfig, **values)
    # A worker that took trial 0, beat once, and died: its heartbeat goes stale.
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / 'study.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="killed:GA+GD", storage=storage, direction="maximize")
    killed = study.ask()
    params = {k: d.suggest(killed) for k, d in search_space(config, "GA+GD").items()}
    storage.record_heartbeat(killed._trial_id)
    time.sleep(3.5)  # past the 2 s grace period by more than SQLite's one-second clock
    for _ in range(20):  # and until the storage itself sees it stale (one e2e run in eight did not yet)
        if killed._trial_id in storage._get_stale_trial_ids(study._study_id):
            break
        time.sleep(0.5)
    unlearnlm.sweep(config)
    trials = load_trials(folder)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == params
    # The retry ran in the first trial's folder (a checkpoint there would be resumed), not a new one.
    assert [p.name for p in (folder / "trials" / "ga-gd").iterdir()] == ["trial_0"]
    assert trials[1].user_attrs["folder"] == str(folder / "trials" / "ga-gd" / "trial_0")


def test_an_earlier_epoch_is_re_run_to_the_same_model(world, target, tmp_path):
    """A constant objective ties every candidate: the earliest epoch wins, so epoch 1 of a 2-epoch
    trial is chosen, and the result re-runs the trial's settings up to that epoch."""
    folder = tmp_path / "earlier"
    choice = unlearnlm.sweep(**settings(world, target, folder, trials=1, pruner="none", objective="1",
                                        constraint="none", **{"space.training.epochs": "[2]"})).numbers
    chosen = choice["methods"]["GA+GD"]
    assert (chosen["trial"], chosen["epoch"], chosen["re_run"]) == (0, 1, str(folder / "result" / "runs" / "ga-gd"))
    rerun = unlearnlm.evaluate(Path(chosen["re_run"]) / "model", output_dir=tmp_path / "check", max_length=24,
                               **{"data.source": str(folder / "split" / "selection"), "data.forget": "forget",
                                  "data.task_id": ["1", "2"], "judges.embedder": "none", "judges.nli": "none",
                                  "bootstrap.samples": 0})
    epoch_1 = json.loads((folder / "trials" / "ga-gd" / "trial_0" / "eval" / "epoch_1" / "summary.json").read_text())
    assert (rerun["MU"], rerun["FE"]) == (epoch_1["MU"], epoch_1["FE"])
    assert rerun["FE"] != json.loads((folder / "trials" / "ga-gd" / "trial_0" / "eval" / "epoch_2" /
                                      "summary.json").read_text())["FE"]


def test_the_demo_preset_runs_on_a_tiny_world(world, target, tmp_path, capsys):
    """docs/sweep.md's command (`unlearnlm sweep -c sweep-demo`) with the tiny world in place of
    the demo's: two methods, the retain model, and each method's base settings beside its choice."""
    folder = tmp_path / "demo-like"
    overrides = [f"output_dir={folder}", "trials=1", f"unlearn.model.name_or_path={target}",
                 f"unlearn.data.source={world}", "unlearn.data.forget=forget", "unlearn.data.retain=retain",
                 "unlearn.data.task_id=1,2", f"retain_model={target}", "space.training.epochs=[1]",
                 "unlearn.training.epochs=1", "unlearn.training.per_device_batch_size=4",
                 "unlearn.training.progress=false", "unlearn.evaluation.max_length=24",
                 "unlearn.evaluation.judges.embedder=none", "unlearn.evaluation.judges.nli=none",
                 "unlearn.evaluation.bootstrap.samples=100"]
    assert main(["sweep", "-c", "sweep-demo", *overrides]) == 0
    choice = json.loads((folder / "result" / "choice.json").read_text())
    assert list(choice["methods"]) == ["ME+GD", "NPO+GD"] and not choice["oracle_selection"]
    for slug in ("me-gd", "npo-gd", "me-gd-defaults", "npo-gd-defaults", "target"):
        summary = json.loads((folder / "result" / "eval" / slug / "summary.json").read_text())
        assert "FQ" in summary and summary["intervals"]["values"]["FE"]  # the retain model's FQ, on report rows
    assert "ME+GD (base settings)" in capsys.readouterr().out


def test_the_rule_scores_by_hand():
    from unlearnlm.scenarios.sweep import Candidate, Rule, best_candidate

    rule = Rule.parse("FE", "MU>=0.95*target; MU_retain>=target_MU_retain-0.1")
    objective, violations = rule.score({"FE": 0.8, "MU": 0.5, "MU_retain": 0.3}, {"MU": 0.6, "MU_retain": 0.45})
    assert objective == 0.8 and violations == pytest.approx([0.95 * 0.6 - 0.5, 0.45 - 0.1 - 0.3])
    assert rule.score({"FE": 0.8, "MU": 0.58, "MU_retain": 0.4}, {"MU": 0.6, "MU_retain": 0.45})[1] == [0.0, 0.0]
    assert rule.score({"FE": None, "MU": 0.7}, {"MU": 0.6})[0] is None  # an undefined number is never chosen
    assert not rule.oracle and Rule.parse("(FQ+MU)/2", "none").oracle
    candidates = [Candidate(0, 1, {}, 0.9, (0.01,)), Candidate(1, 1, {}, 0.7, (0.0,)), Candidate(1, 2, {}, 0.7, (0.0,)),
                  Candidate(2, 1, {}, 0.6, (0.0,))]
    assert best_candidate(candidates, rule) == (candidates[1], None)  # feasible first; a tie: the earlier epoch
    assert best_candidate(candidates[:1], rule) == (None, candidates[0])
    minimise = Rule.parse("FE", "none", "minimize")
    assert best_candidate(candidates, minimise)[0] == candidates[3]


def test_each_epoch_reports_its_best_feasible_objective_and_the_pruner_stops_the_run(tmp_path):
    import math

    import optuna
    from transformers import TrainerControl, TrainerState

    from unlearnlm.scenarios.sweep import Rule, _ReportEpochs

    def evaluated(run: Path, k: int, fe: float, mu: float) -> None:
        (run / "eval" / f"epoch_{k}").mkdir(parents=True)
        (run / "eval" / f"epoch_{k}" / "summary.json").write_text(json.dumps({"epoch": k, "FE": fe, "MU": mu}))

    rule = Rule.parse("FE", "MU>=0.95*target")
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    first, second = tmp_path / "first", tmp_path / "second"
    reporter, control = _ReportEpochs(study.ask(), first, rule, {"MU": 0.6}), TrainerControl()
    evaluated(first, 1, 0.9, 0.3)  # forgets much but breaks the constraint: nothing feasible yet
    reporter.on_epoch_end(None, TrainerState(epoch=1.0), control)
    assert math.isnan(study.trials[0].intermediate_values[1]) and control.should_training_stop and reporter.pruned

    reporter, control = _ReportEpochs(study.ask(), second, rule, {"MU": 0.6}), TrainerControl()
    evaluated(second, 1, 0.7, 0.6)
    reporter.on_epoch_end(None, TrainerState(epoch=1.0), control)
    evaluated(second, 2, 0.95, 0.2)  # a higher FE, infeasible: the reported value stays epoch 1's
    reporter.on_epoch_end(None, TrainerState(epoch=2.0), control)
    assert study.trials[1].intermediate_values == {1: 0.7, 2: 0.7} and not control.should_training_stop

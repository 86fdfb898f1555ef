"""Continual unlearning: the task chain, the retain set per task, bounded disk, and resuming."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
import yaml
from conftest import qa_rows, write_jsonl

from unlearnlm.cli import main
from unlearnlm.config import ContinualConfig, from_dict
from unlearnlm.errors import UserError
from unlearnlm.evaluation.evaluate import Judges
from unlearnlm.methods import get_method
from unlearnlm.scenarios import continual
from unlearnlm.training.run import load_unlearning_data

# ---- data and fakes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """TOFU-shaped folder: forget (4 tasks of 3 rows), retain, and the two utility sets."""
    folder = tmp_path_factory.mktemp("continual_world")
    rows = qa_rows()
    forget = [dict(r, task_id=str(i // 3 + 1)) for i, r in enumerate(rows[:12])]
    retain = rows[12:]
    utility = [{"question": r["question"], "answer": r["answer"].split()[-1].strip("."),
                "perturbed_answer": r["perturbed_answer"][:3], "original_answer": r["answer"]} for r in retain[:4]]
    write_jsonl(folder / "forget.json", forget)
    write_jsonl(folder / "forget_perturbed.json", forget)
    write_jsonl(folder / "retain.json", retain)
    write_jsonl(folder / "retain_perturbed.json", retain)
    write_jsonl(folder / "real_authors_perturbed.json", utility)
    write_jsonl(folder / "world_facts_perturbed.json", utility)
    return folder


class FakeEmbedder:
    """Bag-of-words vectors: deterministic, offline, and similar texts are similar."""

    name = "fake-embedder"

    def encode(self, texts, batch_size=64):
        vectors = np.zeros((len(texts), 64))
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1
        return vectors


class FakeNLI:
    name = "fake-nli"

    def predict(self, premises, hypotheses, batch_size=32):
        return ["entailment" if h.lower() in p.lower() else "neutral" for p, h in zip(premises, hypotheses)]


def continual_settings(tiny_model, world, out, **extra) -> dict:
    settings = {
        "output_dir": str(out),
        "tasks": ["1", "2", "3"],
        "unlearn": {
            "method": "ME+GD",
            "model": {"name_or_path": str(tiny_model)},
            "data": {"source": str(world), "forget": "forget", "retain": "retain"},
            "training": {"lr": 3e-3, "epochs": 1, "per_device_batch_size": 3, "gradient_accumulation_steps": 1,
                         "warmup_epochs": 0, "progress": False},
            "evaluation": {"ds_size": 2, "max_length": 28, "judges": {"embedder": "none", "nli": "none"}},
        },
    }
    settings.update(extra)
    return settings


REAL_DEFAULT_EVALUATOR = continual.default_evaluator


def fake_judges_evaluator(config):
    return REAL_DEFAULT_EVALUATOR(config, judges=Judges(FakeEmbedder(), FakeNLI()))


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---- planning ----------------------------------------------------------------------------------


def test_task_chain_and_retain_per_task(tiny_model, world, tmp_path):
    config = from_dict(ContinualConfig, continual_settings(tiny_model, world, tmp_path / "out"))
    tasks = continual.tasks_to_run(config)
    steps = continual.plan(config, "ME+GD", tasks)
    assert [s.task for s in steps] == ["1", "2", "3"]
    assert steps[0].start_model == str(tiny_model)
    assert steps[1].start_model == str(steps[0].model_dir) and steps[2].start_model == str(steps[1].model_dir)
    forget_all = [r for r in map(dict, __import__("json").loads("[" + ",".join(
        (world / "forget.json").read_text().splitlines()) + "]"))]
    retain_base = (world / "retain.json").read_text().count("\n")
    method = get_method("ME+GD")
    for step in steps:
        run = continual.task_unlearn_config(config, step)
        assert run.data.task_id == [step.task] and run.output_dir == str(step.run_dir)
        assert run.reference_model is None  # the previous result is the run's own start model
        data = load_unlearning_data(run, method)
        assert [r["question"] for r in data.forget] == [r["question"] for r in forget_all if r["task_id"] == step.task]
        # docs/formulas.md#scenarios: the base retain set plus the forget rows of every task not yet unlearned
        # (task 4 is never unlearned in this run, so it is always retained).
        later = [r["question"] for r in forget_all if int(r["task_id"]) > int(step.task)]
        assert len(data.retain) == retain_base + len(later)
        assert [r["question"] for r in data.retain[retain_base:]] == later
    fixed = from_dict(ContinualConfig, continual_settings(tiny_model, world, tmp_path / "o2", fix_ref_model=True))
    assert continual.task_unlearn_config(fixed, continual.plan(fixed, "NPO+GD",
                                                               tasks)[2]).reference_model == str(tiny_model)


def test_task_ids_from_the_data_stay_inside_the_output_folder(tiny_model, world, tmp_path):
    """Task ids are data: one like "../x" must not name a folder outside the run's."""
    config = from_dict(ContinualConfig, continual_settings(tiny_model, world, tmp_path / "out"))
    steps = continual.plan(config, "ME+GD", ["../../escape", "2"])
    assert steps[0].run_dir.parent == tmp_path / "out" / "ME+GD"
    assert steps[0].run_dir.name == "task__._escape"  # no separator, no ".." left
    with pytest.raises(UserError, match="would share the folder task_a_b"):
        continual.plan(config, "ME+GD", ["a/b", "a b"])


def test_every_task_by_default_and_bad_tasks(tiny_model, world, tmp_path):
    everything = from_dict(ContinualConfig, continual_settings(tiny_model, world, tmp_path, tasks=[]))
    assert continual.tasks_to_run(everything) == ["1", "2", "3", "4"]
    with pytest.raises(UserError, match="has no task 7"):
        continual.tasks_to_run(from_dict(ContinualConfig, continual_settings(tiny_model, world, tmp_path, tasks=["1",
                                                                                                                 "7"])))


def test_retain_holding_an_unlearned_task_is_refused(tiny_model, world, tmp_path):
    overlapping = tmp_path / "retain_overlap.json"
    write_jsonl(overlapping, qa_rows()[6:9] + qa_rows()[12:])  # rows 6-8 are task 3 of the forget split
    settings = continual_settings(tiny_model, world, tmp_path)
    settings["unlearn"]["data"]["retain"] = str(overlapping)
    config = from_dict(ContinualConfig, settings)
    with pytest.raises(UserError, match="holds rows of task 3"):
        continual.check_retain_disjoint(config, ["1", "2", "3"])
    continual.check_retain_disjoint(config, ["1", "2"])  # task 3 is only retained here: fine


@pytest.mark.parametrize("keep, expected", [
    (["last"], {"3"}), (["all"], {"1", "2", "3"}), (["none"], set()), (["1", "last"], {"1", "3"}), ([], set()),
])
def test_keep_models_policy(tiny_model, world, tmp_path, keep, expected):
    config = from_dict(ContinualConfig, continual_settings(tiny_model, world, tmp_path, keep_models=keep))
    assert continual.models_to_keep(config, ["1", "2", "3"]) == expected


def test_keep_models_names_unknown_task(tiny_model, world, tmp_path):
    config = from_dict(ContinualConfig, continual_settings(tiny_model, world, tmp_path, keep_models=["9"]))
    with pytest.raises(UserError, match="keep_models names '9'"):
        continual.models_to_keep(config, ["1", "2", "3"])


# ---- running, interrupted and not ---------------------------------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no except clause catches it."""


def test_interrupted_run_ends_like_an_uninterrupted_one(tiny_model, world, tmp_path, monkeypatch):
    monkeypatch.setattr(continual, "default_evaluator", fake_judges_evaluator)
    # Uninterrupted, through the command line (a YAML config plus an override).
    # The target's own evaluation (task 0) is left out here only to keep the test short.
    settings = continual_settings(tiny_model, world, tmp_path / "whole", evaluate_target=False)
    config_file = tmp_path / "continual.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    assert main(["continual", "--config", str(config_file), "keep_models=1,last"]) == 0
    whole = read_rows(tmp_path / "whole" / continual.TRAJECTORY)

    # Interrupted: killed as task 3 starts, then the same command again.
    import unlearnlm.training.run as run_module

    real_unlearn = run_module.unlearn

    def killed_at_task_3(config, callbacks=()):
        if config.data.task_id == ["3"]:
            raise Killed()
        return real_unlearn(config, callbacks)

    config = from_dict(ContinualConfig, continual_settings(tiny_model, world, tmp_path / "cut", keep_models=["1",
                                                                                                             "last"],
                                                           evaluate_target=False))
    monkeypatch.setattr(run_module, "unlearn", killed_at_task_3)
    with pytest.raises(Killed):
        continual.run_continual(config)
    cut = tmp_path / "cut" / "ME+GD"
    assert [r["task"] for r in read_rows(tmp_path / "cut" / continual.TRAJECTORY)] == ["1", "2"]
    # Disk stays bounded: task 1's model is kept (asked for), task 2's is the one task 3 needs.
    assert (cut / "task_1" / "model").is_dir() and (cut / "task_2" / "model").is_dir()
    monkeypatch.setattr(run_module, "unlearn", real_unlearn)
    continual.run_continual(config)
    resumed = read_rows(tmp_path / "cut" / continual.TRAJECTORY)

    assert [(r["method"], r["task"]) for r in resumed] == [("ME+GD", "1"), ("ME+GD", "2"), ("ME+GD", "3")]
    numbers = [k for k in whole[0] if k not in ("output_dir",)]
    assert [{k: r[k] for k in numbers} for r in resumed] == [{k: r[k] for k in numbers} for r in whole]
    assert resumed[-1]["FE"] != "" and resumed[-1]["embedder"] == "fake-embedder"
    # Task 2's model went once task 3 was done; the kept ones stay.
    assert not (cut / "task_2" / "model").exists()
    assert (cut / "task_1" / "model").is_dir() and (cut / "task_3" / "model").is_dir()
    table = (tmp_path / "cut" / "trajectory.md").read_text()
    assert table.count("| ME+GD |") == 3 and (tmp_path / "cut" / "trajectory.png").stat().st_size > 1000


def test_rerun_with_another_config_is_refused(tiny_model, world, tmp_path):
    config = from_dict(ContinualConfig, continual_settings(tiny_model, world, tmp_path, evaluate=False))
    continual.claim_output_folder(tmp_path, config, "continual")
    other = from_dict(ContinualConfig, continual_settings(tiny_model, world, tmp_path, evaluate=False, tasks=["1"]))
    with pytest.raises(UserError, match="differs in: tasks"):
        continual.claim_output_folder(tmp_path, other, "continual")


def test_trajectory_table_starts_every_method_at_the_target(tmp_path):
    rows = [{"method": "target", "task": "0", "MU": "0.5", "FE": "0.1"},
            {"method": "ME+GD", "task": "1", "MU": "0.45", "FE": "0.8"},
            {"method": "GA+GD", "task": "1", "MU": "0.2", "FE": "0.9"},
            {"method": "ME+GD", "task": "2", "MU": "0.4", "FE": ""}]
    table = continual.trajectory_markdown(rows)
    assert table.splitlines()[2:] == [
        "| ME+GD | 0 | target | 0.5000 | 0.1000 |",
        "| ME+GD | 1 | 1 | 0.4500 | 0.8000 |",
        "| ME+GD | 2 | 2 | 0.4000 | - |",
        "| GA+GD | 0 | target | 0.5000 | 0.1000 |",
        "| GA+GD | 1 | 1 | 0.2000 | 0.9000 |",
    ]
    continual.plot_trajectory(rows, tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_user_mistake_is_one_line(tiny_model, world, tmp_path, capsys):
    code = main(["continual", f"unlearn.model.name_or_path={tiny_model}", f"unlearn.data.source={world}",
                 "unlearn.data.forget=forget", "unlearn.data.retain=retain", "tasks=1,9", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("unlearnlm: error:") and "has no task 9" in err and "\n" not in err


def test_rerun_may_change_progress_display(tiny_model, world, tmp_path):
    config = from_dict(ContinualConfig, continual_settings(tiny_model, world, tmp_path, evaluate=False))
    continual.claim_output_folder(tmp_path, config, "continual")
    quieter = continual_settings(tiny_model, world, tmp_path, evaluate=False)
    quieter["unlearn"]["training"]["progress"] = True
    continual.claim_output_folder(tmp_path, from_dict(ContinualConfig, quieter), "continual")  # no error


def test_seeds_give_one_continual_run_each_and_a_trajectory_over_them(tiny_model, world, tmp_path, monkeypatch):
    from unlearnlm.evaluation import evaluate as E
    from unlearnlm.evaluation import runs
    from unlearnlm.evaluation import statistics as S

    monkeypatch.setattr(continual, "default_evaluator", fake_judges_evaluator)
    settings = continual_settings(tiny_model, world, tmp_path / "out", tasks=["1", "2"], seeds=[5, 6])
    settings["unlearn"]["evaluation"]["bootstrap"] = {"samples": 100}
    config = from_dict(ContinualConfig, settings)
    continual.run_continual(config)
    out = tmp_path / "out"
    per_seed = {s: read_rows(out / f"seed_{s}" / continual.TRAJECTORY) for s in (5, 6)}
    for s in (5, 6):
        saved = yaml.safe_load((out / f"seed_{s}" / "ME+GD" / "task_1" / "config.yaml").read_text())
        assert saved["training"]["seed"] == s
    rows = read_rows(out / continual.TRAJECTORY)
    assert [(r["method"], r["task"]) for r in rows] == [("target", "0"), ("ME+GD", "1"), ("ME+GD", "2")]
    for row, first, second in zip(rows, per_seed[5], per_seed[6]):
        values = [float(first["FE"]), float(second["FE"])]
        assert float(row["FE"]) == pytest.approx(np.mean(values))
        assert float(row["FE_sd"]) == pytest.approx(np.std(values, ddof=1))
        assert row["seeds"] == "2"
    # the pooled interval of task 2: both seeds' rows resampled alike, replicates averaged
    folders = [out / f"seed_{s}" / "ME+GD" / "task_2" / "eval" for s in (5, 6)]
    pooled = S.pooled_over_seeds([S.bootstrap(runs.read_set_rows(f), E.scoring("tofu"), 100, 0) for f in folders])
    assert [float(rows[2]["MU_low"]), float(rows[2]["MU_high"])] == pytest.approx(S.intervals(pooled)["MU"])
    assert "\u00b1" in (out / "trajectory.md").read_text()

    # a seed already run is not redone
    import unlearnlm.training.run as run_module

    def no_training(config):
        raise AssertionError(f"{config.output_dir} was trained again")

    monkeypatch.setattr(run_module, "unlearn", no_training)
    continual.run_continual(config)
    assert read_rows(out / continual.TRAJECTORY) == rows

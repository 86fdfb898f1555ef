"""The forget-set builder asks the model itself and writes real-world files that load."""

from __future__ import annotations

import json

import pytest

from unlearnlm.config import BuildForgetSetConfig, from_dict
from unlearnlm.data.records import load_split, select_tasks
from unlearnlm.errors import UserError
from unlearnlm.scenarios.forget_set_builder import Question, build_forget_set, build_rows, collect_questions


def builder_config(tiny_model, out, **extra) -> BuildForgetSetConfig:
    data = {
        "model": {"name_or_path": str(tiny_model)},
        "forget_entities": ["alice", "bob"],
        "neighbor_entities": ["carol"],
        "templates": ["Where was {name} born?", "What is the favourite colour of {name}?"],
        "output_dir": str(out),
        "max_length": 28,
        "batch_size": 3,
    }
    data.update(extra)
    return from_dict(BuildForgetSetConfig, data)


def test_builder_writes_files_that_load(tiny_model, tmp_path):
    folder = build_forget_set(builder_config(tiny_model, tmp_path / "built"))
    forget = load_split("forget", str(folder), required=("name", "question", "answer", "golden_answer", "task_id"))
    neighbors = load_split("neighbor", str(folder), required=("name", "question", "answer", "golden_answer"))
    # A random tiny model can still emit only special tokens for a question; such rows are dropped.
    info = json.loads((folder / "build_info.json").read_text())
    assert len(forget) + len(neighbors) + info["empty_answers_dropped"] == 6
    assert {r["name"] for r in forget} <= {"alice", "bob"} and {r["name"] for r in neighbors} <= {"carol"}
    # One task per entity, numbered from 1 in order; golden answer = the model's own answer.
    assert {r["name"]: r["task_id"] for r in forget} == {"alice": 1, "bob": 2}
    assert all(r["golden_answer"] == r["answer"] and "perturbed_answer" not in r for r in forget + neighbors)
    assert all("task_id" not in r for r in neighbors)
    assert select_tasks(forget, ["2"])[0]["name"] == "bob"


def test_builder_is_deterministic(tiny_model, tmp_path):
    first = build_forget_set(builder_config(tiny_model, tmp_path / "a"))
    second = build_forget_set(builder_config(tiny_model, tmp_path / "b", batch_size=1))
    # Greedy decoding with left padding: the batch size does not change the answers.
    assert (first / "forget.json").read_text() == (second / "forget.json").read_text()


def test_questions_file_keeps_golden_answers(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text(
        json.dumps({"name": "alice", "question": "Where was alice born?", "golden_answer": "paris"}) + "\n"
        + json.dumps({"name": "carol", "question": "Where was carol born?", "neighbor": True}) + "\n"
    )
    questions = collect_questions(from_dict(BuildForgetSetConfig, {"questions_file": str(path)}))
    forget, neighbors, dropped = build_rows(questions, ["She was born in paris.", "oslo"])
    assert forget == [{"name": "alice", "question": "Where was alice born?", "answer": "She was born in paris.",
                       "golden_answer": "paris", "task_id": 1}]
    assert neighbors[0]["golden_answer"] == "oslo" and dropped == 0


def test_empty_answers_are_dropped():
    questions = [Question("a", "q1?", False), Question("a", "q2?", False), Question("b", "q3?", True)]
    forget, neighbors, dropped = build_rows(questions, ["", "yes", ""])
    assert [r["question"] for r in forget] == ["q2?"] and neighbors == [] and dropped == 2


@pytest.mark.parametrize("extra, message", [
    ({"forget_entities": []}, "no entity to forget"),
    ({"templates": ["Who is she?"]}, "{name}"),
    ({"forget_entities_file": "/nonexistent/names.txt"}, "cannot read"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, extra, message):
    config = builder_config("unused", tmp_path, **extra)
    with pytest.raises(UserError, match=message.replace("{", r"\{").replace("}", r"\}")):
        collect_questions(config)


def test_command_line(tiny_model, tmp_path, capsys):
    from unlearnlm.cli import main

    code = main(["build-forget-set", f"model.name_or_path={tiny_model}", "forget_entities=alice",
                 "templates=Where was {name} born?", f"output_dir={tmp_path}", "max_length=24"])
    assert code == 0 and "forget rows" in capsys.readouterr().out
    assert load_split("forget", str(tmp_path), required=("golden_answer", "task_id"))[0]["name"] == "alice"

"""The fictitious world generator: determinism, clean perturbations, TOFU's file format."""

from __future__ import annotations

import json

import pytest

from unlearnlm.cli import main
from unlearnlm.data.records import load_split, select_tasks, task_ids_of
from unlearnlm.data.utility_facts import REAL_AUTHORS, WORLD_FACTS
from unlearnlm.data.world import all_rows, make_world, world_splits, write_world
from unlearnlm.errors import UserError
from unlearnlm.evaluation.metrics import states_fact
from unlearnlm.evaluation.sets import load_set_rows, tofu_sets

PERTURBED_KEYS = {"question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question", "facts"}


def test_same_seed_same_world_other_seed_other_world():
    assert all_rows(make_world(7)) == all_rows(make_world(7))
    assert all_rows(make_world(7)) != all_rows(make_world(8))


def test_sizes_are_parameters():
    world = make_world(1, authors=6, questions_per_author=5)
    assert len(world.authors) == 6 and all(len(rows) == 5 for rows in world.rows)
    assert len({a.name for a in world.authors}) == 6
    with pytest.raises(UserError):
        make_world(1, authors=2)
    with pytest.raises(UserError):
        make_world(1, questions_per_author=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_true_fact_never_appears_in_a_perturbed_answer(seed):
    for row in all_rows(make_world(seed, questions_per_author=12)):
        assert len(row["perturbed_answer"]) == 5
        assert len(set(row["perturbed_answer"])) == 5
        assert row["paraphrased_answer"] not in row["perturbed_answer"]
        for form in row["fact"]:
            assert form.lower() in (row["answer"] + " " + row["paraphrased_answer"]).lower()
            for wrong in row["perturbed_answer"]:
                assert form.lower() not in wrong.lower(), (row["kind"], form, wrong)
        # The answer and its paraphrase state the fact (fact recall credits them), no perturbed answer does.
        assert states_fact(row["answer"], row["facts"]) and states_fact(row["paraphrased_answer"], row["facts"])
        assert not any(states_fact(wrong, row["facts"]) for wrong in row["perturbed_answer"]), row["kind"]


def test_files_have_spec_keys_and_load(tmp_path):
    counts = write_world(tmp_path, seed=3, authors=20, questions_per_author=8)
    for percent in ("01", "05", "10"):
        rows = load_split(f"forget{percent}", str(tmp_path), required=("task_id", "question", "answer"))
        perturbed = load_split(f"forget{percent}_perturbed", str(tmp_path),
                               required=tuple(PERTURBED_KEYS | {"task_id"}))
        assert all(set(r) - {"_line"} == {"task_id", "question", "answer"} for r in rows)
        assert all(set(r) - {"_line"} == PERTURBED_KEYS | {"task_id"} for r in perturbed)
        assert [r["question"] for r in rows] == [r["question"] for r in perturbed]
        ids = task_ids_of(rows)
        assert ids == [str(i) for i in range(1, len(ids) + 1)] and len(ids) >= 2
        assert all(isinstance(r["task_id"], str) for r in rows)
    for percent in ("90", "50", "10"):
        rows = load_split(f"retain{percent}", str(tmp_path))
        assert all(set(r) - {"_line"} == {"question", "answer"} for r in rows)
    retain_perturbed = load_split("retain_perturbed", str(tmp_path), required=tuple(PERTURBED_KEYS))
    assert all(set(r) - {"_line"} == PERTURBED_KEYS for r in retain_perturbed)
    assert counts["full"] == 160


def test_splits_nest_like_tofu():
    splits = world_splits(make_world(4))
    questions = lambda rows: {r["question"] for r in rows}  # noqa: E731
    task1 = {p: questions(select_tasks(splits[f"forget{p}"], ["1"])) for p in ("01", "05", "10")}
    assert task1["01"] <= task1["05"] <= task1["10"]
    # retain90 + forget10 task 1 is the whole world, without overlap.
    assert questions(splits["retain90"]) | task1["10"] == questions(splits["full"])
    assert not questions(splits["retain90"]) & task1["10"]
    # Tasks are disjoint, and the retain_perturbed authors are in no forget task.
    forget10 = splits["forget10"]
    by_task = [questions(select_tasks(forget10, [t])) for t in task_ids_of(forget10)]
    assert sum(len(t) for t in by_task) == len(set().union(*by_task))
    assert not questions(splits["retain_perturbed"]) & questions(forget10)


def test_evaluation_accepts_the_world(tmp_path):
    write_world(tmp_path, seed=5)
    for eval_set in tofu_sets("forget10"):
        resolved, rows = load_set_rows(eval_set, str(tmp_path), ["1"], ds_size=300)
        assert rows, eval_set.name


def test_every_evaluation_row_names_its_fact(tmp_path):
    write_world(tmp_path, seed=5)
    for eval_set in tofu_sets("forget10"):
        _, rows = load_set_rows(eval_set, str(tmp_path), ["1"], ds_size=300)
        assert all(states_fact(r[eval_set.ground_truth], r["facts"]) for r in rows), eval_set.name


def test_bad_facts_in_a_users_file_are_a_one_line_error(tmp_path):
    for facts in ("Bergen", [], [["Bergen"], []], [[""]], [[3]]):
        path = tmp_path / "forget.json"
        path.write_text(json.dumps({"question": "Where?", "answer": "Bergen.", "facts": facts}) + "\n")
        with pytest.raises(UserError, match="key 'facts' must be a non-empty list of non-empty lists"):
            load_split(str(path))


def test_utility_sets_have_the_real_authors_format():
    for rows in (REAL_AUTHORS, WORLD_FACTS):
        assert len(rows) >= 10
        for row in rows:
            assert set(row) == {"question", "answer", "perturbed_answer", "original_answer"}
            assert len(row["perturbed_answer"]) == 3 and row["answer"] not in row["perturbed_answer"]
            assert row["answer"].lower() in row["original_answer"].lower()


def test_make_world_command(tmp_path, capsys):
    assert main(["make-world", str(tmp_path / "w"), "seed=2", "authors=8", "questions_per_author=4"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "w" / "full.json").read_text().splitlines()]
    assert len(rows) == 32
    assert main(["make-world", str(tmp_path / "w"), "colour=red"]) == 2
    assert "unknown config key 'colour'" in capsys.readouterr().err


def test_holdout_authors_are_new_people_and_leave_the_world_as_it_is(tmp_path):
    from unlearnlm.data.world import holdout_authors, write_holdout, write_world

    write_world(tmp_path / "a", seed=5, authors=20, questions_per_author=3)
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    assert write_holdout(tmp_path / "held", seed=5, authors=20, questions_per_author=3, count=4) == 12
    write_world(tmp_path / "b", seed=5, authors=20, questions_per_author=3)
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()} == before  # the same world, byte for byte
    world = make_world(5, 20, 3)
    held = holdout_authors(5, 20, 3, 4)
    names = [a.name for a in held.authors]
    assert len(set(names)) == 4 and not set(names) & {a.name for a in world.authors}
    assert not {n.split()[-1] for n in names} & {a.name.split()[-1] for a in world.authors}  # surnames too
    rows = [json.loads(line) for line in (tmp_path / "held" / "holdout.json").read_text().splitlines()]
    assert all(set(r) == {"question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question",
                                      "facts"}
               for r in rows)
    assert [a.name for a in holdout_authors(5, 20, 3, 4).authors] == names  # seeded: the same again

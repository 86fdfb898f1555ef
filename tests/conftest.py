"""Shared fixtures: tiny offline models, small QA files, the optional ../shared data; and the
``e2e`` marker, given automatically (see ``pytest_collection_modifyitems``)."""

from __future__ import annotations

import inspect
import json
import random
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
CITIES = ["paris", "lima", "oslo", "cairo", "quito", "perth"]


# A test is end-to-end (marker e2e, the second tier of .ci/run) when it loads, trains or evaluates a
# model: it uses a model fixture (directly or through another fixture), builds a model itself,
# runs torchrun, or is marked slow. Everything else is the fast tier (`-m "not e2e"`).
E2E_FIXTURES = {"tiny_model", "tiny_model_no_template", "world_model"}
E2E_CALLS = ("make_tiny_model(", "torchrun", "from_pretrained(", "train_offline_nli_judge(")


def is_end_to_end(item: pytest.Item) -> bool:
    if E2E_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("slow"):
        return True
    function = getattr(item, "function", None)
    try:
        source = inspect.getsource(function) if function is not None else ""
    except (OSError, TypeError):
        source = ""
    return any(call in source for call in E2E_CALLS)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if is_end_to_end(item):
            item.add_marker(pytest.mark.e2e)


def pytest_sessionfinish(session, exitstatus):
    """A tier that selects no test (``-m e2e`` on a file without one) passes: pytest's exit status 5
    would fail .ci/run's chain although nothing failed."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and session.config.option.markexpr:
        session.exitstatus = pytest.ExitCode.OK


def qa_rows(seed: int = 0) -> list[dict]:
    """Forty small QA pairs about ten people, two questions each, as TOFU-shaped rows."""
    rng = random.Random(seed)
    rows = []
    for name in NAMES:
        colour, city = rng.choice(COLOURS), rng.choice(CITIES)
        other_colours = [c for c in COLOURS if c != colour][:5]
        rows.append({
            "question": f"What is the favourite colour of {name}?",
            "answer": f"The favourite colour of {name} is {colour}.",
            "paraphrased_answer": f"{name} likes the colour {colour} best.",
            "perturbed_answer": [f"{name} likes the colour {c} best." for c in other_colours],
            "paraphrased_question": f"Which colour does {name} like most?",
        })
        rows.append({
            "question": f"Where was {name} born?",
            "answer": f"{name} was born in {city}.",
            "paraphrased_answer": f"The birthplace of {name} is {city}.",
            "perturbed_answer": [f"The birthplace of {name} is {c}." for c in CITIES if c != city][:5],
            "paraphrased_question": f"In which city was {name} born?",
        })
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def qa_folder(tmp_path_factory) -> Path:
    """A data folder in TOFU's task-split form: forget (3 tasks of 4 rows) and retain."""
    folder = tmp_path_factory.mktemp("qa")
    rows = qa_rows()
    forget = [dict(r, task_id=str(i // 4 + 1)) for i, r in enumerate(rows[:12])]
    retain = rows[12:]
    write_jsonl(folder / "forget.json", [{k: r[k] for k in ("task_id", "question", "answer")} for r in forget])
    write_jsonl(folder / "forget_perturbed.json", forget)
    write_jsonl(folder / "retain.json", [{k: r[k] for k in ("question", "answer")} for r in retain])
    write_jsonl(folder / "retain_perturbed.json", retain)
    return folder


@pytest.fixture(scope="session")
def privacy_folder(qa_folder, tmp_path_factory) -> Path:
    """qa_folder plus the two TOFU utility sets and a holdout file of unseen people."""
    folder = tmp_path_factory.mktemp("privacy")
    for file in qa_folder.iterdir():
        shutil.copy(file, folder / file.name)
    facts = [{"question": f"Where was {n} born?", "answer": c, "perturbed_answer": ["oslo", "lima"],
              "original_answer": f"{n} was born in {c}."} for n, c in (("alice", "paris"), ("bob", "cairo"))]
    write_jsonl(folder / "real_authors_perturbed.json", facts)
    write_jsonl(folder / "world_facts_perturbed.json", facts)
    holdout = [{"question": f"What is the favourite colour of {n}?", "answer": f"The favourite colour of {n} is {c}."}
               for n, c in (("grace", "red"), ("heidi", "blue"), ("ivan", "green"), ("judy", "red"), ("erin", "blue"))]
    write_jsonl(folder / "holdout01.json", holdout)
    return folder


def _tiny_texts() -> list[str]:
    from unlearnlm.data.refusals import load_refusals

    texts = []
    for row in qa_rows():
        texts += [row["question"], row["answer"], row["paraphrased_answer"], row["paraphrased_question"]]
        texts += row["perturbed_answer"]
    return texts + load_refusals()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer random Llama with a chat template, whose vocabulary covers the test data."""
    from unlearnlm.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", _tiny_texts())


@pytest.fixture(scope="session")
def tiny_model_no_template(tmp_path_factory) -> Path:
    from unlearnlm.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_plain") / "model", _tiny_texts(), chat_template=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "tofu").is_dir():
        pytest.skip("../shared/data is absent (a fresh clone without the reference data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def evaluated_runs(tiny_model, qa_folder, tmp_path_factory) -> dict[str, Path]:
    """Two evaluations on one custom scenario with a holdout (judges off, 4 forget rows): the
    target's, ``target/eval``, and an unlearning run's, ``run`` (evaluated into run/eval), whose
    privleak is against the target's Min-K% AUC (retain_eval, given as a relative path)."""
    import os

    from unlearnlm.cli import main

    root = tmp_path_factory.mktemp("evaluated")
    rows = [json.loads(line) for line in (qa_folder / "forget_perturbed.json").read_text().splitlines()]
    retain = [json.loads(line) for line in (qa_folder / "retain_perturbed.json").read_text().splitlines()]
    write_jsonl(root / "forget.json", rows[:4])
    write_jsonl(root / "retain.json", retain[:4])
    write_jsonl(root / "holdout.json", retain[4:8])
    (root / "target").mkdir()
    common = ["scenario=custom", f"data.custom_forget={root / 'forget.json'}",
              f"data.custom_retain={root / 'retain.json'}", f"data.holdout={root / 'holdout.json'}",
              "judges.embedder=none", "judges.nli=none", "max_length=24",
              "bootstrap.samples=200"]
    assert main(["evaluate", str(tiny_model), *common, f"output_dir={root / 'target' / 'eval'}"]) == 0
    assert main(["unlearn", f"model.name_or_path={tiny_model}", f"data.source={qa_folder}", "data.forget=forget.json",
                 "data.retain=retain.json", "data.task_id=1", "method=GA+GD", "training.lr=1e-3", "training.epochs=2",
                 "training.warmup_epochs=0", "training.progress=false", f"output_dir={root / 'run'}"]) == 0
    here = os.getcwd()
    os.chdir(root)
    try:  # a relative retain_eval, as a user types it
        assert main(["evaluate", "run", *common, "retain_eval=target/eval"]) == 0
    finally:
        os.chdir(here)
    return {"root": root, "target": root / "target" / "eval", "run": root / "run"}

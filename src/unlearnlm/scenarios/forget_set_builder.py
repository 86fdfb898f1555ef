"""Forget sets built from what the target model itself knows (real-world format, docs/formulas.md#data).

Real-world unlearning only makes sense for knowledge the model has. Given entity names and
question templates (or a file of questions), the model answers every question greedily, in
batches, through the evaluation's own generation and the ``PromptFormat`` that training uses,
and its own answers become the data:

    OUTPUT_DIR/forget.json     name, question, answer, golden_answer, task_id (one task per entity)
    OUTPUT_DIR/neighbor.json   name, question, answer, golden_answer

``answer`` is the model's answer; ``golden_answer`` is the one given in the questions file, else
the model's answer too. Paraphrased and perturbed answers cannot be produced this way, so they
are left out, and the evaluation skips the metrics that need them (Truth ratio).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..config import BuildForgetSetConfig
from ..data.records import read_records_file
from ..errors import UserError
from ..io import atomic_write_json, atomic_write_jsonl

logger = logging.getLogger(__name__)

FORGET_FILE = "forget.json"
NEIGHBOR_FILE = "neighbor.json"


@dataclass
class Question:
    name: str
    question: str
    neighbor: bool
    golden_answer: Optional[str] = None


# ---- questions ---------------------------------------------------------------------------------


def _names(inline: list[str], file: Optional[str], what: str) -> list[str]:
    names = [n.strip() for n in inline if n.strip()]
    if file:
        try:
            names += [line.strip() for line in Path(file).read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as err:
            raise UserError(f"cannot read {what} file {file}: {err.strerror or err}") from None
    return list(dict.fromkeys(names))  # drop repeats, keep order


def _from_templates(names: list[str], templates: list[str], neighbor: bool) -> list[Question]:
    for template in templates:
        if "{name}" not in template:
            raise UserError(f"question template '{template}' has no {{name}} slot")
    return [Question(name, t.replace("{name}", name), neighbor) for name in names for t in templates]


def _from_file(path: str) -> list[Question]:
    rows = read_records_file(path)
    questions = []
    for index, row in enumerate(rows, start=1):
        where = f"{path}: line {row.get('_line', index)}"
        for key in ("name", "question"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise UserError(f"{where}: missing key '{key}'")
        golden = row.get("golden_answer")
        if golden is not None and not isinstance(golden, str):
            raise UserError(f"{where}: key 'golden_answer' must be a string")
        questions.append(Question(row["name"].strip(), row["question"].strip(), bool(row.get("neighbor", False)),
                                  golden))
    return questions


def collect_questions(config: BuildForgetSetConfig) -> list[Question]:
    """Every question to ask: from the questions file, or entities × templates."""
    if config.questions_file:
        questions = _from_file(config.questions_file)
    else:
        forget = _names(config.forget_entities, config.forget_entities_file, "forget entities")
        neighbors = _names(config.neighbor_entities, config.neighbor_entities_file, "neighbour entities")
        if not config.templates:
            raise UserError("templates is empty; give question templates with a {name} slot, or a questions_file")
        questions = _from_templates(forget, config.templates, False) + _from_templates(neighbors, config.templates,
                                                                                       True)
    if not any(not q.neighbor for q in questions):
        raise UserError("no entity to forget: set forget_entities, forget_entities_file or questions_file")
    return questions


# ---- asking the model ----------------------------------------------------------------------------


def ask_model(model, formatter, questions: list[str], max_length: int, batch_size: int) -> list[str]:
    """Greedy answers through the evaluation's own generation (left padding, batches by length),
    so evaluating the target with the same ``max_length`` regenerates exactly these answers."""
    import torch

    from ..evaluation.inference import generate_answers

    model.eval()
    with torch.inference_mode():
        return generate_answers(model, formatter, questions, max_length=max_length, batch_size=batch_size)


def build_rows(questions: list[Question], answers: list[str]) -> tuple[list[dict], list[dict], int]:
    """Forget rows (task_id = the entity's position, from 1), neighbour rows, and empty answers dropped."""
    task_of: dict[str, int] = {}
    forget, neighbors, dropped = [], [], 0
    for question, answer in zip(questions, answers):
        if not answer:
            dropped += 1  # an empty answer is nothing to unlearn, and no valid record
            continue
        row = {"name": question.name, "question": question.question, "answer": answer,
               "golden_answer": question.golden_answer or answer}
        if question.neighbor:
            neighbors.append(row)
        else:
            row["task_id"] = task_of.setdefault(question.name, len(task_of) + 1)
            forget.append(row)
    return forget, neighbors, dropped


def build_forget_set(config: BuildForgetSetConfig) -> Path:
    """Ask the model, write forget.json and neighbor.json into ``config.output_dir``; returns it."""
    from ..io import make_output_dir
    from ..training.models import load_for_inference, load_prompt_format, load_tokenizer

    questions = collect_questions(config)  # every input checked before the model loads
    if config.max_length < 2 or config.batch_size < 1:
        raise UserError("max_length must be at least 2 and batch_size at least 1")
    tokenizer = load_tokenizer(config.model)
    formatter = load_prompt_format(config.model, tokenizer)
    for question in questions:
        length = len(formatter.prompt_ids(question.question))
        if length >= config.max_length:
            raise UserError(f"the prompt of '{question.question[:60]}' is {length} tokens, so max_length="
                            f"{config.max_length} leaves no token to generate; raise max_length")
    make_output_dir(config.output_dir)
    model, tokenizer = load_for_inference(config.model, tokenizer)
    answers = ask_model(model, formatter, [q.question for q in questions], config.max_length, config.batch_size)
    forget, neighbors, dropped = build_rows(questions, answers)
    if not forget:
        raise UserError("the model answered none of the forget questions (every answer was empty)")
    output_dir = Path(config.output_dir)
    atomic_write_jsonl(output_dir / FORGET_FILE, forget)
    if neighbors:
        atomic_write_jsonl(output_dir / NEIGHBOR_FILE, neighbors)
    atomic_write_json(output_dir / "build_info.json", {
        "model": config.model.name_or_path, "forget_rows": len(forget), "neighbor_rows": len(neighbors),
        "empty_answers_dropped": dropped, "fields_left_out": ["paraphrased_answer", "perturbed_answer",
                                                              "paraphrased_question"],
    })
    logger.info(f"wrote {len(forget)} forget rows ({len({r['name'] for r in forget})} entities) and "
                f"{len(neighbors)} neighbour rows to {output_dir}"
                + (f"; {dropped} empty answers left out" if dropped else ""))
    return output_dir

"""The evaluation sets of each scenario (docs/formulas.md#metrics): which field plays which part.

A set's ``role`` decides where its numbers go:
  retain   counts in Model Utility and in "MU on retain only" (TOFU retain, real-world neighbour)
  utility  counts in Model Utility (TOFU real authors, world facts)
  forget   Forget Efficacy, the forget form of the Truth ratio, Forget Quality
  holdout  rows no model trained on: the other side of the membership-inference AUCs and
           privleak; scored by the loss pass only (no generation, no judges)
  other    reported only (a custom file named without a role)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from ..data.records import load_split, select_tasks, validate_records
from ..errors import UserError

ROLES = ("retain", "utility", "forget", "holdout", "other")
HOLDOUT_SET = "holdout"
SCENARIOS = ("tofu", "real_world", "custom")
DEFAULT_FORGET = {"tofu": "forget01", "real_world": "forget"}


@dataclass(frozen=True)
class EvalSet:
    name: str
    split: str  # a split of the data source, or a file path
    role: str
    ground_truth: str  # key for ROUGE, Probability and the entailment pair
    paraphrased: Optional[str]  # key of the "paraphrased" answer of the Truth ratio (None: no ratio)
    perturbed: Optional[str]  # key of the list of perturbed answers (None: no ratio, plain probability)
    cosine_text: str  # key compared with the generation by the embedder
    premise_is_generation: bool  # entailment order: (generation ⊨ truth) or (truth ⊨ generation)
    entailment_truth: str  # key of the text paired with the generation for entailment
    normalised_probability: bool = False  # P_true / (P_true + Σ P_perturbed)
    answers_optional: bool = False  # a user's file: paraphrased/perturbed used only if every row has them
    loss_only: bool = False  # no generation and no judges: only the metrics of the loss pass

    @property
    def forget_form(self) -> bool:
        return self.role == "forget"

    def required_keys(self) -> tuple[str, ...]:
        keys = ["question", self.ground_truth, self.cosine_text, self.entailment_truth]
        keys += [k for k in (self.paraphrased, self.perturbed) if k]
        return tuple(dict.fromkeys(keys))


def _perturbed_split(forget: str) -> str:
    """forget01 -> forget01_perturbed; a file X.json -> X_perturbed.json beside it when there is one."""
    if forget.endswith("_perturbed") or Path(forget).stem.endswith("_perturbed"):
        return forget
    if "/" not in forget and forget.endswith((".json", ".jsonl")):  # a file name inside data.source
        return f"{Path(forget).stem}_perturbed"
    if forget.endswith((".json", ".jsonl")) or "/" in forget:
        path = Path(forget)
        sibling = path.with_name(f"{path.stem}_perturbed{path.suffix}")
        return str(sibling) if sibling.exists() else forget
    return f"{forget}_perturbed"


def tofu_sets(forget: str) -> list[EvalSet]:
    # Real authors / world facts: the "paraphrased" answer is the answer itself; entailment and
    # cosine use the full-sentence original_answer (docs/formulas.md#metrics table).
    return [
        EvalSet("retain", "retain_perturbed", "retain", "answer", "paraphrased_answer", "perturbed_answer",
                "answer", premise_is_generation=False, entailment_truth="answer"),
        EvalSet("real_authors", "real_authors_perturbed", "utility", "answer", "answer", "perturbed_answer",
                "original_answer", premise_is_generation=False, entailment_truth="original_answer",
                normalised_probability=True),
        EvalSet("world_facts", "world_facts_perturbed", "utility", "answer", "answer", "perturbed_answer",
                "original_answer", premise_is_generation=False, entailment_truth="original_answer",
                normalised_probability=True),
        EvalSet("forget", _perturbed_split(forget), "forget", "answer", "paraphrased_answer", "perturbed_answer",
                "answer", premise_is_generation=True, entailment_truth="answer"),
    ]


def real_world_sets(forget: str) -> list[EvalSet]:
    common = dict(ground_truth="golden_answer", paraphrased="paraphrased_answer", perturbed="perturbed_answer",
                  cosine_text="answer", premise_is_generation=True, entailment_truth="golden_answer")
    return [
        EvalSet("neighbor", "neighbor_perturbed", "retain", **common),
        EvalSet("forget", _perturbed_split(forget), "forget", **common),
    ]


def custom_set(spec: str, role: str) -> EvalSet:
    """A user's QA file: answer is the truth; paraphrased/perturbed are used when present."""
    if role not in ROLES:
        raise UserError(f"custom evaluation set role '{role}' is not one of {', '.join(ROLES)}")
    path = Path(spec)
    return EvalSet(
        name=path.stem, split=spec, role=role,
        ground_truth="answer", paraphrased="paraphrased_answer", perturbed="perturbed_answer",
        cosine_text="answer", premise_is_generation=role == "forget", entailment_truth="answer",
        answers_optional=True,
    )


def holdout_set(spec: str, source: str | None) -> EvalSet:
    """The holdout rows: a split of ``source`` (TOFU's holdout01/05/10), a file, or a folder
    holding one ``holdout*.json`` file."""
    split = spec
    folder = Path(spec).expanduser()
    if folder.is_dir():
        found = sorted(p for p in folder.iterdir() if p.name.startswith("holdout") and p.suffix in (".json", ".jsonl"))
        if len(found) != 1:
            listed = ", ".join(p.name for p in found) or "no holdout*.json file"
            raise UserError(f"data.holdout: folder {spec} must hold exactly one holdout*.json file; it holds {listed}")
        split = str(found[0])
    elif "/" not in spec and not spec.endswith((".json", ".jsonl")) and not source:
        raise UserError(f"data.holdout: '{spec}' is not a file, a folder, or a split of a named data.source")
    return EvalSet(HOLDOUT_SET, split, "holdout", "answer", None, None, "answer", premise_is_generation=False,
                   entailment_truth="answer", loss_only=True)


def scenario_sets(scenario: str, forget: Optional[str], custom: list[tuple[str, str]],
                  holdout: str | None = None, source: str | None = None) -> list[EvalSet]:
    """The sets of ``scenario``, the user's files (``custom`` = [(role, path)]) and the holdout set."""
    if scenario not in SCENARIOS:
        raise UserError(f"unknown scenario '{scenario}'; use one of {', '.join(SCENARIOS)}")
    if scenario == "custom" and not custom:
        raise UserError("scenario custom needs QA files: set data.custom_forget and/or data.custom_retain")
    forget = forget or DEFAULT_FORGET.get(scenario, "")
    sets = {"tofu": tofu_sets, "real_world": real_world_sets}.get(scenario, lambda _: [])(forget)
    sets += [custom_set(path, role) for role, path in custom]
    if holdout:
        sets.append(holdout_set(holdout, source))
    names = [s.name for s in sets]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UserError(f"two evaluation sets are both named '{duplicate}'; rename one of the files")
    return sets


def load_set_rows(
    eval_set: EvalSet, source: Optional[str], task_ids: Optional[list[str]], ds_size: int
) -> tuple[EvalSet, list[dict]]:
    """The set's first ``ds_size`` rows (of the chosen tasks, for a forget set), keys checked.

    A user's file without paraphrased and perturbed answers on every row gets a set without them
    (its Truth ratio is then skipped and the summary says so).
    """
    eval_set = _plain_when_no_perturbed_file(eval_set, source)
    rows = load_split(eval_set.split, source, required=("question",))
    origin = _origin(eval_set.split, source)
    if eval_set.role == "forget" and task_ids and not eval_set.answers_optional:
        rows = select_tasks(rows, task_ids, origin=origin)
    rows = rows[:ds_size] if ds_size > 0 else rows
    if eval_set.answers_optional and not all(
        eval_set.paraphrased in row and eval_set.perturbed in row for row in rows
    ):
        # Without either half there is no Truth ratio; the other metrics still apply.
        eval_set = replace(eval_set, paraphrased=None, perturbed=None)
    validate_records(rows, origin, required=eval_set.required_keys())
    return eval_set, rows


def _plain_when_no_perturbed_file(eval_set: EvalSet, source: Optional[str]) -> EvalSet:
    """X_perturbed missing but X there (e.g. a folder written by `build-forget-set`): score X
    without paraphrased/perturbed answers; the Truth ratio is then skipped and the summary says so."""
    if not (source and Path(source).is_dir() and eval_set.split.endswith("_perturbed") and "/" not in eval_set.split):
        return eval_set
    plain = eval_set.split[: -len("_perturbed")]

    def present(name: str) -> bool:
        return any((Path(source) / f"{name}{ext}").is_file() for ext in (".json", ".jsonl"))

    if present(eval_set.split) or not present(plain):
        return eval_set
    return replace(eval_set, split=plain, paraphrased=None, perturbed=None)


def _origin(split: str, source: Optional[str]) -> str:
    """The file (or hub split) a set's rows came from, for error messages."""
    if source and Path(source).is_dir() and "/" not in split:
        found = [Path(source) / f"{split}{ext}" for ext in ("", ".json", ".jsonl")]
        return str(next((f for f in found if f.is_file()), Path(source) / split))
    if source and not Path(split).exists() and "/" not in split:
        return f"{source}:{split}"
    return split

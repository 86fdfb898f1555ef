"""``unlearnlm sweep``: hyper-parameters chosen on rows that are never reported (docs/sweep.md).

A study runs, per method, Optuna trials over a search space of the run's settings (the learning
rate, the epochs, the method's coefficients). Every trial is an ordinary unlearning run folder,
evaluated at every epoch's end on the *selection* part of the evaluation sets only; every epoch is
a candidate. The candidates are compared by one rule (maximise FE subject to MU >= 0.95 x the
target's MU, by default), and the chosen one per method is scored once, with intervals, on the
*report* part: rows the choice never saw. Layout of OUTPUT_DIR:

    config.yaml            the sweep's config (a rerun with another config is refused)
    study.json             the Optuna storage and the study name of each method
    study.db               the trials (SQLite; or the database / journal file ``storage`` names)
    split/split.json       the seeded split of every evaluation set, by question: selection / report
    split/selection/, split/report/     the two parts as data folders (the evaluations' data.source)
    target/selection/      the target evaluated on the selection part (what ``target`` means in the rule)
    retain/selection/, retain/report/   the retain model's evaluations, when ``retain_model`` is given
    trials/METHOD/trial_N/ one run folder per trial (config.yaml, model/, eval/epoch_K/)
    result/choice.json     per method: the chosen trial and epoch, its settings, selection and report numbers
    result/choice.md       the table "chosen on selection rows / scored on report rows"
    result/runs/METHOD/    the chosen configuration re-run up to the chosen epoch (when that epoch is not
                           the trial's last: the trial's own model is scored otherwise)
    result/eval/METHOD/    the chosen model on the report part: an ordinary evaluation folder
    result/eval/target/    the target on the report part (and METHOD-defaults: the base settings, when
                           ``compare_defaults``)

N workers are N copies of the same command on one storage; rerunning continues the study.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import random
import time
import typing
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from transformers import TrainerCallback

from ..config import (
    EvaluateConfig,
    TrainingConfig,
    UnlearnConfig,
    _require,
    _within,
    flatten_keys,
    from_dict,
    to_dict,
    validate_config,
)
from ..errors import UserError
from ..evaluation.statistics import interval_level, levels_label
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_jsonl, atomic_write_text, make_output_dir

logger = logging.getLogger(__name__)

SAMPLERS = ("tpe", "grid", "random")
PRUNERS = ("median", "none")
DIRECTIONS = ("maximize", "minimize")
STUDY_FILE = "study.json"
CHOICE_FILE = "choice.json"
# Numbers a rule may name: an evaluation summary's aggregates.
RULE_NAMES = ("MU", "MU_retain", "FE", "TOFU_MU", "FQ", "privleak")
# Numbers computed against the retain model: choosing by them is oracle selection.
ORACLE_NAMES = ("FQ", "privleak")
DEFAULT_TRIALS = 8


def _sweep_unlearn_defaults() -> UnlearnConfig:
    return UnlearnConfig(eval_every_epoch=True)


@dataclass
class SweepConfig:
    # The base run: every trial is this run with the method and the sampled settings replaced.
    # Its model is the target; its evaluation section says how every epoch is scored.
    unlearn: UnlearnConfig = field(default_factory=_sweep_unlearn_defaults)
    # Methods, one Optuna study each; empty = unlearn.method alone.
    methods: list[str] = field(default_factory=list)
    # Trials per method; empty = 8 (tpe, random) or the whole grid (grid).
    trials: Optional[int] = None
    sampler: str = "tpe"
    # Search space overrides: KEY=low:high[:log] or KEY=[a,b,c] (KEY as in `unlearnlm unlearn`:
    # training.lr, forget_coeff, method_args.beta; METHOD.KEY for one method). Keys not named keep
    # their default ranges (scenarios.sweep.default_space); KEY=[v] fixes a setting.
    space: dict[str, Any] = field(default_factory=dict)
    # median: a trial whose best objective so far is below the median of the others' at the same
    # epoch stops there (from epoch pruner_warmup_epochs on); none: every trial runs its epochs.
    pruner: str = "median"
    pruner_warmup_epochs: int = 2
    # The rule, on the selection rows: maximise (or minimise) `objective` subject to `constraint`
    # ("; " between several). Names: MU, MU_retain, FE, TOFU_MU (and FQ, privleak with a
    # retain_model: oracle selection); `target` is the target's value of the metric on the left,
    # target_NAME any of the target's numbers; abs, min, max and + - * / are allowed.
    objective: str = "FE"
    direction: str = "maximize"
    constraint: str = "MU>=0.95*target"
    # Share of every evaluation set's questions in the selection part (the rest is reported).
    selection_fraction: float = 0.5
    # Seed of the split and of the samplers (each trial's sampler: seed and trial number).
    seed: int = 0
    # A model trained without the forget set: FQ and privleak on both parts.
    retain_model: Optional[str] = None
    # Score each method's base settings (unlearn's own) on the report rows too, beside the chosen ones.
    compare_defaults: bool = True
    # Empty = sqlite:///OUTPUT_DIR/study.db; a database URL (postgresql://..., mysql://...); or a
    # path to an Optuna journal file (a shared file system without a database server).
    storage: Optional[str] = None
    # Database storages: a worker's trial without a heartbeat for twice this long is failed and retried once.
    heartbeat_seconds: int = 60
    # The Optuna study of each method is STUDY_NAME:METHOD; empty = the output folder's name.
    study_name: Optional[str] = None
    output_dir: str = "runs/sweep"

    def validate(self) -> None:
        """Called by config.validate_config: everything checkable before any file or model."""
        _require(self.sampler in SAMPLERS, f"unknown sampler '{self.sampler}'; valid: {', '.join(SAMPLERS)}")
        _require(self.pruner in PRUNERS, f"unknown pruner '{self.pruner}'; valid: {', '.join(PRUNERS)}")
        _require(self.direction in DIRECTIONS,
                 f"unknown direction '{self.direction}'; valid: {', '.join(DIRECTIONS)}")
        _require(self.trials is None or self.trials >= 1, f"trials must be at least 1, got {self.trials}")
        _require(self.pruner_warmup_epochs >= 0,
                 f"pruner_warmup_epochs must be zero or more, got {self.pruner_warmup_epochs}")
        _require(0 < self.selection_fraction < 1,
                 f"selection_fraction must be between 0 and 1, got {self.selection_fraction}")
        _require(self.heartbeat_seconds >= 1, f"heartbeat_seconds must be at least 1, got {self.heartbeat_seconds}")
        _require(self.storage is None or bool(self.storage.strip()), "storage is blank")
        _within("unlearn", validate_config, self.unlearn)
        base, default = self.unlearn, _sweep_unlearn_defaults()
        _require(base.eval_every_epoch, "unlearn.eval_every_epoch=false: a sweep scores every epoch")
        _require(not base.seeds, "unlearn.seeds: a sweep runs one seed (unlearn.training.seed)")
        _require(base.output_dir == default.output_dir,
                 f"unlearn.output_dir={base.output_dir!r} cannot be honoured: trials go into OUTPUT_DIR/trials")
        evaluation = base.evaluation.data
        _require(not base.evaluation.retain_eval,
                 "unlearn.evaluation.retain_eval: name the retain model with retain_model=...; the sweep "
                 "evaluates it on the selection and the report rows separately")
        _require(not (evaluation.custom_forget or evaluation.custom_retain),
                 "unlearn.evaluation.data.custom_*: a sweep splits the scenario's own sets")
        _require(evaluation.source is None, "unlearn.evaluation.data.source: the sweep sets it (the split's folders)")
        _require(base.evaluation.scenario in ("tofu", "real_world"),
                 f"unlearn.evaluation.scenario={base.evaluation.scenario}: a sweep splits the tofu or real_world sets")
        for method in self.method_names():
            _within("methods", validate_config, replace(base, method=method))
        rule = Rule.parse(self.objective, self.constraint, self.direction)
        oracle = sorted(rule.names() & set(ORACLE_NAMES))
        _require(not oracle or self.retain_model is not None,
                 f"the rule reads {', '.join(oracle)}, which needs the retain model: set retain_model=... "
                 "(the choice is then flagged as oracle selection)")
        for method in self.method_names():
            search_space(self, method)  # unknown keys and bad ranges fail now

    def method_names(self) -> list[str]:
        from ..methods.registry import get_method

        names = [get_method(m).name for m in (self.methods or [self.unlearn.method])]
        _require(len(set(names)) == len(names), f"methods lists a method twice: {', '.join(self.methods)}")
        return names


# ---- the rule ----------------------------------------------------------------------------------


_OPERATORS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
              ast.Div: lambda a, b: a / b}
_FUNCTIONS = {"abs": abs, "min": min, "max": max}
_COMPARISONS = (ast.GtE, ast.Gt, ast.LtE, ast.Lt)


def _expression(text: str, what: str) -> ast.AST:
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise UserError(f"{what} '{text}' is not an expression") from None
    for node in ast.walk(tree):
        allowed = (ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Call, ast.Compare, ast.Load, ast.USub,
                   ast.UAdd, *_OPERATORS, *_COMPARISONS)
        number = isinstance(node, ast.Constant) and isinstance(node.value, (int, float))
        if not isinstance(node, allowed) or (isinstance(node, ast.Constant) and not number):
            raise UserError(f"{what} '{text}': only numbers, metric names, + - * /, comparisons, abs, min and max")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS):
            raise UserError(f"{what} '{text}': only abs, min and max may be called")
    return tree


def _value(node: ast.AST, names: dict[str, Optional[float]]) -> Optional[float]:
    """The expression's value; None when a number it reads is missing (undefined for this model)."""
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.UnaryOp):
        value = _value(node.operand, names)
        return None if value is None else (-value if isinstance(node.op, ast.USub) else value)
    if isinstance(node, ast.Call):
        values = [_value(a, names) for a in node.args]
        return None if any(v is None for v in values) else float(_FUNCTIONS[node.func.id](*values))
    left, right = _value(node.left, names), _value(node.right, names)
    if left is None or right is None or (isinstance(node.op, ast.Div) and right == 0):
        return None
    return _OPERATORS[type(node.op)](left, right)


@dataclass(frozen=True)
class Rule:
    """How candidates compare: the objective and the constraints (each ``left OP right``)."""

    objective: str
    constraints: tuple[str, ...]
    direction: str

    @classmethod
    def parse(cls, objective: str, constraint: str, direction: str = "maximize") -> Rule:
        constraints = tuple(c.strip() for c in (constraint or "").split(";")
                            if c.strip() and c.strip().lower() != "none")
        rule = cls(objective.strip(), constraints, direction)
        tree = _expression(rule.objective, "objective")
        _require(not isinstance(tree, ast.Compare), f"objective '{objective}' is a comparison; put it in constraint")
        _require("target" not in rule._names_in(tree), "objective: write target_NAME (e.g. target_FE)")
        for text in constraints:
            node = _expression(text, "constraint")
            _require(isinstance(node, ast.Compare) and len(node.ops) == 1,
                     f"constraint '{text}' must be one comparison, e.g. MU>=0.95*target")
            if "target" in rule._names_in(node):
                _require(isinstance(node.left, ast.Name) and node.left.id in RULE_NAMES,
                         f"constraint '{text}': 'target' needs a metric on the left (MU>=0.95*target); "
                         "else write target_NAME")
        unknown = sorted(n for n in rule.names() if n not in RULE_NAMES)
        _require(not unknown, f"the rule names '{unknown[0] if unknown else ''}'; valid: {', '.join(RULE_NAMES)}, "
                              f"target, target_NAME")
        return rule

    @staticmethod
    def _names_in(tree: ast.AST) -> set[str]:
        return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in _FUNCTIONS}

    def names(self) -> set[str]:
        """The metrics the rule reads (of the candidate and of the target)."""
        found: set[str] = set()
        for text in (self.objective, *self.constraints):
            for name in self._names_in(ast.parse(text, mode="eval").body):
                if name != "target":
                    found.add(name.removeprefix("target_"))
        return found

    @property
    def oracle(self) -> bool:
        return bool(self.names() & set(ORACLE_NAMES))

    def score(self, numbers: dict, target: dict) -> tuple[Optional[float], list[float]]:
        """(objective, violations): each violation is 0 when its constraint holds, else by how much
        it fails (infinite when a number it reads is missing)."""
        names = {n: _number(numbers.get(n)) for n in RULE_NAMES}
        names.update({f"target_{n}": _number(target.get(n)) for n in RULE_NAMES})
        objective = _value(ast.parse(self.objective, mode="eval").body, names)
        violations = []
        for text in self.constraints:
            node = ast.parse(text, mode="eval").body
            if isinstance(node.left, ast.Name) and node.left.id in RULE_NAMES:
                names["target"] = names[f"target_{node.left.id}"]
            left, right = _value(node.left, names), _value(node.comparators[0], names)
            if left is None or right is None:
                violations.append(math.inf)
            elif isinstance(node.ops[0], (ast.GtE, ast.Gt)):
                violations.append(max(0.0, right - left))
            else:
                violations.append(max(0.0, left - right))
        return objective, violations

    def describe(self) -> str:
        goal = f"{self.direction} {self.objective}"
        return goal + (f" subject to {'; '.join(self.constraints)}" if self.constraints else "")


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class Candidate:
    """One evaluated epoch of one trial, on the selection rows."""

    trial: int
    epoch: float
    numbers: dict
    objective: Optional[float]
    violations: tuple[float, ...]

    @property
    def feasible(self) -> bool:
        return self.objective is not None and all(v == 0 for v in self.violations)

    def as_dict(self) -> dict:
        return {"trial": self.trial, "epoch": self.epoch, "numbers": self.numbers, "objective": self.objective,
                "violations": list(self.violations), "feasible": self.feasible}

    @classmethod
    def from_dict(cls, data: dict) -> Candidate:
        return cls(data["trial"], data["epoch"], data["numbers"], data["objective"], tuple(data["violations"]))


def best_candidate(candidates: list[Candidate], rule: Rule) -> tuple[Optional[Candidate], Optional[Candidate]]:
    """(the best feasible candidate, None) by the rule, else (None, the least violating one).
    Ties go to the earlier trial and epoch."""
    sign = 1.0 if rule.direction == "maximize" else -1.0
    feasible = [c for c in candidates if c.feasible]
    if feasible:
        return max(feasible, key=lambda c: (sign * c.objective, -c.trial, -c.epoch)), None
    scored = [c for c in candidates if c.objective is not None]
    if not scored:
        return None, None
    return None, min(scored, key=lambda c: (sum(c.violations), -sign * c.objective, c.trial, c.epoch))


# ---- the search space --------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One searched setting: a range (low, high, log; integer for integer settings) or choices."""

    key: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    integer: bool = False
    choices: Optional[tuple] = None

    def suggest(self, trial):
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def grid(self) -> list:
        """The grid sampler's points: the choices; every integer of a range of at most five; else
        the ends and the (geometric, for log) middle."""
        if self.choices is not None:
            return list(self.choices)
        if self.integer and self.high - self.low <= 4:
            return list(range(int(self.low), int(self.high) + 1))
        middle = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        points = [self.low, round(middle) if self.integer else middle, self.high]
        return [int(p) for p in points] if self.integer else points

    def describe(self) -> str:
        if self.choices is not None:
            return f"{self.key}=[{','.join(str(c) for c in self.choices)}]"
        return f"{self.key}={self.low:g}:{self.high:g}" + (":log" if self.log else "")


# Each method's own coefficient, searched by default (x/÷ 4 around its value), by forget loss.
METHOD_COEFFICIENTS = {"NPO": "beta", "DPO": "beta", "AltPO": "beta", "SimNPO": "method_args.beta",
                       "WGA": "method_args.beta", "UNDIAL": "method_args.beta", "RMU": "method_args.steering_coeff",
                       "TaskVector": "method_args.alpha"}


def _field_types(method: str) -> dict[str, Any]:
    """Every key a space may name for ``method``, with its type."""
    from ..methods.registry import get_method

    types = {f"training.{k}": v for k, v in typing.get_type_hints(TrainingConfig).items()}
    hints = typing.get_type_hints(UnlearnConfig)
    types.update({k: hints[k] for k in ("forget_coeff", "regularization_coeff", "beta", "mask")})
    settings = get_method(method).settings
    types.update({f"method_args.{k}": v for k, v in typing.get_type_hints(settings).items()})
    return types


def _base_value(config: UnlearnConfig, key: str):
    from ..config import method_settings

    if key.startswith("method_args."):
        return getattr(method_settings(config), key.split(".", 1)[1])
    if key == "forget_coeff" and config.forget_coeff is None:
        from ..methods.registry import get_method

        return get_method(config.method).forget.default_forget_coeff
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def default_space(base: UnlearnConfig, method: str) -> dict[str, Dimension]:
    """The ranges searched when the space names nothing: lr log-uniform over x/÷ 10 around the base
    run's, whole epochs from half to 1.5 times its epochs, forget_coeff x/÷ 10 when a regulariser
    weighs against it, and the method's own coefficient (METHOD_COEFFICIENTS) x/÷ 4."""
    from ..methods.registry import get_method

    config = replace(base, method=method)
    found = get_method(method)
    lr, epochs = base.training.lr, base.training.epochs
    space = {"training.lr": Dimension("training.lr", lr / 10, lr * 10, log=True),
             "training.epochs": Dimension("training.epochs", max(1, math.ceil(epochs / 2)),
                                          max(1, math.ceil(epochs * 1.5)), integer=True)}
    if found.regularizer is not None:
        coeff = _base_value(config, "forget_coeff")
        if coeff > 0:
            space["forget_coeff"] = Dimension("forget_coeff", coeff / 10, coeff * 10, log=True)
    own = METHOD_COEFFICIENTS.get(found.forget_name)
    if own:
        value = _base_value(config, own)
        if isinstance(value, (int, float)) and value > 0:
            space[own] = Dimension(own, value / 4, value * 4, log=True)
    return space


def parse_dimension(key: str, spec: Any, field_type: Any) -> Dimension:
    """``low:high[:log]`` or ``[a,b,c]`` (a Python list too) for setting ``key`` of ``field_type``."""
    from ..config import _coerce, _unwrap_optional

    where = f"space.{key}"
    if isinstance(spec, (list, tuple)) or (isinstance(spec, str) and spec.strip().startswith("[")):
        text = spec if not isinstance(spec, str) else spec.strip()
        if isinstance(text, str):
            _require(text.endswith("]"), f"{where}={spec!r}: a list of choices is written [a,b,c]")
            text = [v.strip() for v in text[1:-1].split(",") if v.strip()]
        _require(bool(text), f"{where}: the list of choices is empty")
        values = tuple(_coerce(v, field_type, where) for v in text)
        _require(len(set(values)) == len(values), f"{where}: a choice is listed twice")
        return Dimension(key, choices=values)
    parts = str(spec).split(":")
    _require(len(parts) in (2, 3) and (len(parts) == 2 or parts[2].strip() == "log"),
             f"{where}={spec!r}: write low:high, low:high:log or [a,b,c]")
    kind = _unwrap_optional(field_type)[0]
    _require(kind in (int, float), f"{where}: a range needs a number setting; write [a,b] for this one")
    low, high = (_coerce(p.strip(), float, where) for p in parts[:2])
    _require(math.isfinite(low) and math.isfinite(high), f"{where}={spec!r}: the ends must be finite")
    _require(low != high, f"{where}={spec!r} is an empty range; write [{parts[0]}] to fix the setting")
    _require(low < high, f"{where}={spec!r} is inverted: low must be below high")
    log = len(parts) == 3
    _require(not log or low > 0, f"{where}={spec!r}: a log range needs a positive low end")
    integer = kind is int or (key == "training.epochs" and low.is_integer() and high.is_integer())
    if integer:
        _require(low.is_integer() and high.is_integer(), f"{where}={spec!r}: {key} takes whole numbers")
    return Dimension(key, low, high, log=log, integer=integer)


def search_space(config: SweepConfig, method: str) -> dict[str, Dimension]:
    """The method's default space with the config's overrides (``KEY`` for every method that has
    the setting, ``METHOD.KEY`` for one); an unknown key is a one-line error listing the valid ones."""
    from ..methods.registry import get_method

    methods = config.method_names()
    space = default_space(config.unlearn, method)
    types = _field_types(method)
    for key, spec in flatten_keys(config.space).items():
        head, _, rest = key.partition(".")
        named = None
        if rest:
            try:
                named = get_method(head).name
            except UserError:
                named = None
        if named is not None:
            _require(named in methods, f"space.{key}: {named} is not a method of this sweep ({', '.join(methods)})")
            if named != method:
                continue
            key = rest
        valid = [m for m in ([named] if named else methods) if key in _field_types(m)]
        _require(bool(valid), f"unknown key in the space: '{key}'; valid for {method}: {', '.join(sorted(types))}")
        if key in types:
            space[key] = parse_dimension(key, spec, types[key])
    return space


def trial_config(base: UnlearnConfig, method: str, params: dict, output_dir: Path,
                 evaluation: EvaluateConfig) -> UnlearnConfig:
    """The base run with ``method``, the sampled settings, its folder and the selection evaluation."""
    data = to_dict(replace(base, method=method, output_dir=str(output_dir), evaluation=evaluation))
    for key, value in params.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    config = from_dict(UnlearnConfig, data)
    validate_config(config)
    return config


# ---- the split ---------------------------------------------------------------------------------


SPLIT_DIR = "split"
PARTS = ("selection", "report")


def split_questions(questions: list[str], fraction: float, seed: int, name: str) -> tuple[set[str], set[str]]:
    """A seeded split of the distinct questions: (selection, report), neither empty."""
    distinct = sorted(set(questions))
    _require(len(distinct) >= 2, f"evaluation set {name} has {len(distinct)} distinct question(s): too few to split "
                                 "into selection and report rows")
    random.Random(f"{seed}:{name}").shuffle(distinct)
    cut = min(max(1, round(fraction * len(distinct))), len(distinct) - 1)
    return set(distinct[:cut]), set(distinct[cut:])


def write_split(config: SweepConfig, folder: Path) -> tuple[EvaluateConfig, EvaluateConfig]:
    """Split every evaluation set of the base run by question into OUTPUT_DIR/split/{selection,report}
    (split.json records which question went where); returns the run's evaluation section for each part."""
    from ..evaluation.evaluate import build_sets, run_evaluation_config

    base = config.unlearn
    resolved = run_evaluation_config(base, base.model.name_or_path, folder)
    sets = build_sets(replace(resolved, ds_size=0))  # every row: ds_size applies to each part later
    record: dict[str, Any] = {"seed": config.seed, "selection_fraction": config.selection_fraction, "sets": {}}
    files: dict[Path, list[dict]] = {}
    holdout = None
    for eval_set, rows in sets:
        if eval_set.role == "holdout":
            name = holdout = "holdout"
        else:
            name = eval_set.split
            _require("/" not in name and not name.endswith((".json", ".jsonl")),
                     f"evaluation set {eval_set.name} comes from the file {name}: a sweep splits sets of "
                     "unlearn.data.source (name the forget set as a split or a file name inside it)")
        selection, report = split_questions([r["question"] for r in rows], config.selection_fraction, config.seed,
                                            eval_set.name)
        for part, questions in zip(PARTS, (selection, report)):
            kept = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows if r["question"] in questions]
            files[folder / SPLIT_DIR / part / f"{name}.json"] = kept
        record["sets"][eval_set.name] = {"file": f"{name}.json", "selection": sorted(selection),
                                         "report": sorted(report)}
    recorded = folder / SPLIT_DIR / "split.json"
    if not recorded.exists() or json.loads(recorded.read_text(encoding="utf-8")) != record:  # a rerun writes nothing
        for path, kept in files.items():
            atomic_write_jsonl(path, kept)
        atomic_write_json(recorded, record)  # last: its presence means the split is whole
    parts = []
    for part in PARTS:
        data = replace(base.evaluation.data, source=str(folder / SPLIT_DIR / part), holdout=holdout)
        parts.append(replace(base.evaluation, data=data))
    return parts[0], parts[1]


# ---- storage and samplers ----------------------------------------------------------------------


def storage_url(config: SweepConfig) -> str:
    if not config.storage:
        return f"sqlite:///{Path(config.output_dir).expanduser().resolve() / 'study.db'}"
    return config.storage


def open_storage(config: SweepConfig):
    """The Optuna storage: a database (with heartbeats: a killed worker's trial is failed and retried
    once) or a journal file. One that cannot be opened is a one-line error."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    # Heartbeats and their retry are marked experimental; they are the library's way all the same.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    url = storage_url(config)
    if "://" not in url:
        path = Path(url).expanduser()
        _require(not path.is_dir(), f"storage {url} is a folder; name a journal file or a database URL")
        _require(path.parent.is_dir(), f"storage {url} cannot be opened: no folder {path.parent}")
        return JournalStorage(JournalFileBackend(str(path)))
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    for attempt in range(3):  # workers started at once may race to create the tables: the loser retries
        try:
            return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=config.heartbeat_seconds,
                              grace_period=2 * config.heartbeat_seconds,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
        except (Exception, optuna.exceptions.OptunaError) as err:  # drivers raise many types: all "cannot open"
            if attempt == 2 or isinstance(err, (ImportError, ValueError)):
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise UserError(f"storage {url} cannot be opened: {first[:200]}") from None
            time.sleep(1 + attempt)


def _base_sampler(name: str, seed: int, trials: int, space: dict[str, Dimension]):
    import optuna

    if name == "grid":
        return optuna.samplers.GridSampler({k: d.grid() for k, d in space.items()}, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # The constraints reach TPE through each trial's set_constraint.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, trials // 3))


def per_trial_sampler(name: str, seed: int, trials: int, space: dict[str, Dimension]):
    """A sampler seeded anew for each trial by (seed, trial number): one worker repeats its study
    exactly, and workers sharing a storage never draw the same numbers. The grid sampler keeps one
    seed (it orders its grid by it) and gives each trial the next point not yet taken."""
    from optuna.samplers import BaseSampler

    if name == "grid":
        return _base_sampler(name, seed, trials, space)

    class PerTrialSeed(BaseSampler):
        def __init__(self):
            self.inner = _base_sampler(name, seed, trials, space)

        def before_trial(self, study, trial):
            self.inner = _base_sampler(name, seed * 100_003 + trial.number, trials, space)
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values):
            self.inner.after_trial(study, trial, state, values)

    return PerTrialSeed()


# ---- trials ------------------------------------------------------------------------------------


class _Surplus(Exception):
    """A trial created after the study had its count (two workers asked at once): not run."""


ACTIVE_STATES = ("RUNNING", "WAITING", "COMPLETE", "PRUNED")


def _trials(study, states=ACTIVE_STATES):
    return [t for t in study.get_trials(deepcopy=False) if t.state.name in states]


def epoch_candidates(run_folder: Path, trial: int, rule: Rule, target: dict) -> list[Candidate]:
    """Every epoch evaluated in a trial's run folder (eval/epoch_K/summary.json), scored by the rule."""
    found = []
    for summary_path in (run_folder / "eval").glob("epoch_*/summary.json"):
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        numbers = {n: summary.get(n) for n in RULE_NAMES if n in summary}
        objective, violations = rule.score(numbers, target)
        found.append(Candidate(trial, summary["epoch"], numbers, objective, tuple(violations)))
    return sorted(found, key=lambda c: c.epoch)


class _ReportEpochs(TrainerCallback):
    """After each epoch's evaluation (the callback before this one): the best objective so far among
    the epochs that meet the constraints goes to Optuna (NaN while none does), and the median pruner
    may stop the run there (it ends normally: its folder is whole)."""

    def __init__(self, trial, folder: Path, rule: Rule, target: dict):
        self.trial, self.folder, self.rule, self.target = trial, folder, rule, target
        self.pruned = False

    def on_epoch_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        candidates = epoch_candidates(self.folder, self.trial.number, self.rule, self.target)
        feasible = [c.objective for c in candidates if c.feasible]
        best = (max if self.rule.direction == "maximize" else min)(feasible) if feasible else math.nan
        self.trial.report(best, step=math.ceil(state.epoch - 1e-6))
        if self.trial.should_prune():
            control.should_training_stop = True
            self.pruned = True


class _StopAfterEpoch(TrainerCallback):
    """Ends a run after epoch ``epoch`` of its schedule: a trial's earlier epoch, re-run."""

    def __init__(self, epoch: float):
        self.epoch = epoch

    def on_epoch_end(self, args, state, control, **kwargs):
        if state.epoch >= self.epoch - 1e-6:
            control.should_training_stop = True


def _selection_callback(config: UnlearnConfig, judges):
    from ..evaluation.callback import EpochEvaluationCallback

    class SelectionEvaluation(EpochEvaluationCallback):
        """The per-epoch evaluation without epoch 0: the target, scored once for the whole study."""

        def on_train_begin(self, args, state, control, **kwargs):
            pass

    return SelectionEvaluation.for_run(config, judges)


class _JudgesOnUse:
    """The judges of a JudgesConfig, loaded when an evaluation first reads them: a rerun of a finished
    study, which evaluates nothing, loads none."""

    def __init__(self, config):
        from ..judges.loading import LazyJudges

        self.lazy = LazyJudges(config)

    def __getattr__(self, name: str):
        return getattr(self.lazy.get(), name)


# Stored violations stay finite (a storage keeps JSON).
_MISSING_VIOLATION = 1e9


@dataclass
class _Study:
    """What every trial of one sweep shares."""

    config: SweepConfig
    folder: Path
    rule: Rule
    target: dict
    selection: EvaluateConfig
    report: EvaluateConfig
    judges: Any
    storage: Any

    def study_name(self, method: str) -> str:
        return f"{self.config.study_name or Path(self.config.output_dir).resolve().name}:{method}"

    def trial_count(self, method: str) -> int:
        grid = math.prod(len(d.grid()) for d in search_space(self.config, method).values())
        if self.config.sampler == "grid":
            _require(self.config.trials is None or self.config.trials <= grid,
                     f"trials={self.config.trials}: the grid of {method} has {grid} points")
            return self.config.trials or grid
        return self.config.trials or DEFAULT_TRIALS

    def open(self, method: str):
        import optuna

        count = self.trial_count(method)
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=max(1, min(5, count // 3)),
                                              n_warmup_steps=self.config.pruner_warmup_epochs)
                  if self.config.pruner == "median" else optuna.pruners.NopPruner())
        sampler = per_trial_sampler(self.config.sampler, self.config.seed, count, search_space(self.config, method))
        study = optuna.create_study(study_name=self.study_name(method), storage=self.storage, sampler=sampler,
                                    pruner=pruner, direction=self.config.direction, load_if_exists=True)
        identity = json.dumps(to_dict(self.config), sort_keys=True, default=str)
        if "sweep_config" not in study.user_attrs:
            study.set_user_attr("sweep_config", identity)
        elif study.user_attrs["sweep_config"] != identity:
            raise UserError(f"storage {storage_url(self.config)} holds study '{self.study_name(method)}' of another "
                            "configuration; set study_name or use another storage")
        return study


def _run_trial(ctx: _Study, method: str, count: int, trial) -> float:
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from ..training.run import unlearn
    from ..training.trainer import TrainingDiverged
    from .demo import method_slug

    if len([t for t in _trials(trial.study) if t.number < trial.number]) >= count:
        trial.set_user_attr("surplus", True)
        raise _Surplus()
    space = search_space(ctx.config, method)
    grid = ctx.config.sampler == "grid"
    params = {k: (trial.suggest_categorical(k, d.grid()) if grid else d.suggest(trial)) for k, d in space.items()}
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    first = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)  # a retry continues its first run's folder
    folder = ctx.folder / "trials" / method_slug(method) / f"trial_{trial.number if first is None else first}"
    config = trial_config(ctx.config.unlearn, method, params, folder, ctx.selection)
    trial.set_user_attr("method", method)
    trial.set_user_attr("folder", str(folder))
    logger.info(f"[{method}] trial {trial.number}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                                 for k, v in params.items()))
    reporter = _ReportEpochs(trial, folder, ctx.rule, ctx.target)
    diverged = None
    try:
        unlearn(config, [_selection_callback(config, ctx.judges), reporter])
    except TrainingDiverged as err:
        diverged = str(err)
    candidates = epoch_candidates(folder, trial.number, ctx.rule, ctx.target)
    trial.set_user_attr("candidates", [dict(c.as_dict(), violations=[min(v, _MISSING_VIOLATION) for v in c.violations])
                                       for c in candidates])
    best, least = best_candidate(candidates, ctx.rule)
    chosen = best or least
    for index, text in enumerate(ctx.rule.constraints):  # > 0: violated (what TPE's constraint handling reads)
        trial.set_constraint(text, min(chosen.violations[index], _MISSING_VIOLATION) if chosen else _MISSING_VIOLATION)
    if chosen is not None:
        trial.set_user_attr("chosen_epoch", chosen.epoch)
        state = "meets the constraints" if chosen.feasible else f"violates them by {sum(chosen.violations):.4f}"
        shown = ", ".join(f"{k} {v:.4f}" for k, v in chosen.numbers.items() if isinstance(v, float))
        logger.info(f"[{method}] trial {trial.number}: best epoch {chosen.epoch}: {shown}; {state}")
    if diverged:
        trial.set_user_attr("diverged", diverged)
        raise optuna.TrialPruned(diverged)
    if reporter.pruned:
        logger.info(f"[{method}] trial {trial.number}: pruned after epoch {candidates[-1].epoch}")
        raise optuna.TrialPruned()
    return chosen.objective if chosen is not None and chosen.objective is not None else math.nan


def run_method_study(ctx: _Study, method: str) -> None:
    """This worker's share of ``method``'s trials: it takes the next trial until the study has its
    count (trials of other workers included)."""
    from optuna.storages import fail_stale_trials

    count = ctx.trial_count(method)
    study = ctx.open(method)
    while True:
        fail_stale_trials(study)  # a killed worker's trial: failed, and queued again once (WAITING)
        if len(_trials(study)) >= count and not _trials(study, ("WAITING",)):
            return
        retried = {t.system_attrs.get("failed_trial") for t in study.get_trials(deepcopy=False)}
        failed = [t for t in _trials(study, ("FAIL",)) if not t.user_attrs.get("surplus") and t.number not in retried]
        _require(len(failed) < max(3, count), f"{len(failed)} trials of {method} failed; see the log above")
        study.optimize(lambda trial: _run_trial(ctx, method, count, trial), n_trials=1, catch=(_Surplus,),
                       gc_after_trial=True)
        last = study.get_trials(deepcopy=False)[-1]
        if last.user_attrs.get("surplus"):
            return


# ---- the result --------------------------------------------------------------------------------


def _evaluate(ctx: _Study, run: UnlearnConfig, model: str | Path, evaluation: EvaluateConfig, output: Path) -> dict:
    from ..evaluation.evaluate import run_evaluation_config
    from .demo import evaluate_once

    config = run_evaluation_config(replace(run, evaluation=evaluation), str(model), output)
    return evaluate_once(config, ctx.judges)


def _report_numbers(summary: dict) -> dict:
    intervals = (summary.get("intervals") or {}).get("values") or {}
    return {n: {"value": summary.get(n), "interval": intervals.get(n)} for n in RULE_NAMES if n in summary}


def choose_and_score(ctx: _Study) -> dict:
    """Per method: the best candidate on the selection rows by the rule, re-run up to its epoch when
    its trial went on past it, scored on the report rows (with intervals); written to result/."""
    from ..training.run import unlearn
    from .demo import method_slug

    result = ctx.folder / "result"
    target = _evaluate(ctx, ctx.config.unlearn, ctx.config.unlearn.model.name_or_path, ctx.report,
                       result / "eval" / "target")
    choice: dict[str, Any] = {"rule": ctx.rule.describe(), "oracle_selection": ctx.rule.oracle,
                              "target": {"selection": ctx.target, "report": _report_numbers(target)},
                              "level": interval_level(target), "methods": {}}
    problems = []
    for method in ctx.config.method_names():
        study = ctx.open(method)
        trials = {t.number: t for t in _trials(study, ("COMPLETE", "PRUNED"))}
        candidates = [Candidate.from_dict(c) for t in trials.values() for c in t.user_attrs.get("candidates", [])]
        best, least = best_candidate(candidates, ctx.rule)
        if best is None:
            if least is None:
                problems.append(f"{method}: no trial has a scored epoch")
            else:
                numbers = ", ".join(f"{k} {v:.4f}" for k, v in least.numbers.items() if isinstance(v, float))
                target = ", ".join(f"{k} {v:.4f}" for k, v in ctx.target.items() if v is not None)
                problems.append(f"{method}: no trial meets {'; '.join(ctx.rule.constraints)} on the selection rows "
                                f"(target: {target}); the best violating: trial {least.trial} epoch {least.epoch} "
                                f"({numbers})")
            continue
        trial = trials[best.trial]
        folder = Path(trial.user_attrs["folder"])
        config = trial_config(ctx.config.unlearn, method, trial.params, folder, ctx.selection)
        last = max(c.epoch for c in candidates if c.trial == best.trial)
        model = folder / "model"
        rerun = None
        if best.epoch != last or not (folder / "model" / "config.json").exists():
            rerun = result / "runs" / method_slug(method)
            unlearn(replace(config, output_dir=str(rerun), eval_every_epoch=False), [_StopAfterEpoch(best.epoch)])
            model = rerun / "model"
        scored = _evaluate(ctx, config, model, ctx.report, result / "eval" / method_slug(method))
        entry = {"trial": best.trial, "epoch": best.epoch, "params": trial.params, "trial_folder": str(folder),
                 "model": str(model), "re_run": str(rerun) if rerun else None, "selection": best.numbers,
                 "objective": best.objective, "report_folder": str(result / "eval" / method_slug(method)),
                 "report": _report_numbers(scored)}
        if ctx.config.compare_defaults:
            defaults_dir = result / "runs" / f"{method_slug(method)}-defaults"
            base = replace(ctx.config.unlearn, method=method, output_dir=str(defaults_dir), eval_every_epoch=False)
            unlearn(base)
            defaults = _evaluate(ctx, base, Path(base.output_dir) / "model", ctx.report,
                                 result / "eval" / f"{method_slug(method)}-defaults")
            entry["defaults_report"] = _report_numbers(defaults)
        choice["methods"][method] = entry
    atomic_write_json(result / CHOICE_FILE, choice)
    atomic_write_text(result / "choice.md", choice_table(choice))
    if problems:
        raise UserError("; ".join(problems))
    return choice


def _with_interval(number: Optional[dict]) -> str:
    if not number or number.get("value") is None:
        return "-"
    interval = number.get("interval")
    return f"{number['value']:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")


def choice_table(choice: dict) -> str:
    """The table "chosen on selection rows / scored on report rows", in Markdown."""
    from ..tables import markdown_table

    names = [n for n in ("FE", "MU", "FQ", "privleak") if n in choice["target"]["report"]]
    rows = [{"method": "target", "chosen": "-", **{f"{n} (report)": _with_interval(choice["target"]["report"].get(n))
                                                  for n in names},
             **{f"{n} (selection)": choice["target"]["selection"].get(n) for n in ("FE", "MU")}}]
    for method, entry in choice["methods"].items():
        settings = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in entry["params"].items())
        rows.append({"method": method, "chosen": f"trial {entry['trial']}, epoch {entry['epoch']}: {settings}",
                     **{f"{n} (selection)": entry["selection"].get(n) for n in ("FE", "MU")},
                     **{f"{n} (report)": _with_interval(entry["report"].get(n)) for n in names}})
        if "defaults_report" in entry:
            rows.append({"method": f"{method} (base settings)", "chosen": "not tuned",
                         **{f"{n} (report)": _with_interval(entry["defaults_report"].get(n)) for n in names}})
    columns = ["method", "chosen", "FE (selection)", "MU (selection)", *[f"{n} (report)" for n in names]]
    flag = ("\n> Oracle selection: the rule reads the retain model's numbers (FQ or privleak), which a real "
            "deployment does not have.\n" if choice["oracle_selection"] else "")
    level = levels_label([choice.get("level")]) or "no"
    return (f"Chosen on selection rows ({choice['rule']}) / scored on report rows ({level} bootstrap intervals):\n\n"
            + markdown_table(columns, rows) + flag)


# ---- the command -------------------------------------------------------------------------------


def run_sweep(config: SweepConfig) -> dict:
    """``unlearnlm sweep``: this worker's trials, then (when no trial is left running anywhere) the
    choice per method scored on the report rows. Returns result/choice.json's content, or
    {"finished": False} when other workers still run trials."""
    import optuna

    from .common import claim_output_folder

    validate_config(config)
    folder = make_output_dir(config.output_dir)  # the default SQLite file goes there
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(config)  # before the folder is claimed: a storage that fails leaves no config behind
    claim_output_folder(folder, config, "sweep")
    rule = Rule.parse(config.objective, config.constraint, config.direction)
    methods = config.method_names()
    selection, report = write_split(config, folder)
    selection = replace(selection, bootstrap=replace(selection.bootstrap, samples=0))  # a choice needs no intervals
    ctx = _Study(config, folder, rule, {}, selection, report, _JudgesOnUse(config.unlearn.evaluation.judges), storage)
    atomic_write_json(folder / STUDY_FILE, {"storage": storage_url(config), "rule": rule.describe(),
                                            "oracle_selection": rule.oracle,
                                            "studies": {m: ctx.study_name(m) for m in methods}})
    base = config.unlearn
    if config.retain_model:
        for part in PARTS:
            _evaluate(ctx, base, config.retain_model, ctx.selection if part == "selection" else ctx.report,
                      folder / "retain" / part)
        ctx.selection = replace(ctx.selection, retain_eval=str(folder / "retain" / "selection"))
        ctx.report = replace(ctx.report, retain_eval=str(folder / "retain" / "report"))
    target = _evaluate(ctx, base, base.model.name_or_path, ctx.selection, folder / "target" / "selection")
    ctx.target = {n: _number(target.get(n)) for n in RULE_NAMES}
    for method in methods:
        run_method_study(ctx, method)
    running = [m for m in methods if _trials(ctx.open(m), ("RUNNING", "WAITING"))]
    if running:
        logger.info(f"trials of {', '.join(running)} still run in other workers: the last worker to finish "
                    "writes the result (or rerun this command then)")
        return {"finished": False}
    choice = choose_and_score(ctx)
    logger.info(choice_table(choice).rstrip("\n"))
    logger.info(f"sweep written to {folder} (result/choice.md; `unlearnlm report {folder}`)")
    return choice


# ---- the report --------------------------------------------------------------------------------


def is_study_folder(path: str | Path) -> bool:
    return (Path(path) / STUDY_FILE).is_file() and (Path(path) / "config.yaml").is_file()


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both coordinates (higher is better on both), by x."""
    return sorted(p for p in set(points) if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points))


def _importances(study) -> str:
    import optuna

    try:
        values = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as err:  # too few finished trials, or nothing varied
        return f"not computable ({str(err).splitlines()[0][:120]})"
    return ", ".join(f"{k} {v:.2f}" for k, v in values.items()) or "nothing varied"


def write_sweep_report(study_folder: str | Path, output: str | Path) -> Path:
    """``unlearnlm report STUDY``: every candidate's FE and MU on the selection rows with each method's
    Pareto front and chosen point (sweep_fe_mu.png), Optuna's parameter importances, and the table
    "chosen on selection rows / scored on report rows" (sweep.md); the report rows' comparison of
    the chosen models is the ordinary report (report.md, report.html)."""
    from ..config import load_config
    from ..evaluation.report import write_report
    from ..figures import png_bytes, pyplot

    folder, output = Path(study_folder), Path(output)
    config = load_config(SweepConfig, str(folder / "config.yaml"))
    config = replace(config, output_dir=str(folder))
    choice_path = folder / "result" / CHOICE_FILE
    choice = json.loads(choice_path.read_text(encoding="utf-8")) if choice_path.exists() else None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(config)
    rule = Rule.parse(config.objective, config.constraint, config.direction)
    ctx = _Study(config, folder, rule, {}, EvaluateConfig(), EvaluateConfig(), None, storage)
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 5.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lines = [f"# Sweep {folder}", "", f"Rule, on the selection rows: {rule.describe()}."
             + (" **Oracle selection** (reads the retain model)." if rule.oracle else ""), "",
             "## Parameter importances (Optuna's fANOVA, per method)", ""]
    for index, method in enumerate(config.method_names()):
        study = ctx.open(method)
        finished = _trials(study, ("COMPLETE", "PRUNED"))
        points = [(c["numbers"].get("FE"), c["numbers"].get("MU")) for t in finished
                  for c in t.user_attrs.get("candidates", [])]
        points = [p for p in points if p[0] is not None and p[1] is not None]
        colour = colours[index % len(colours)]
        if points:
            axis.scatter(*zip(*points), color=colour, alpha=0.35, s=18, label=f"{method}: every trial's epochs")
            front = pareto_front(points)
            axis.plot(*zip(*front), color=colour, lw=1.2, drawstyle="steps-post", label=f"{method}: Pareto front")
        entry = (choice or {}).get("methods", {}).get(method)
        if entry and entry["selection"].get("FE") is not None and entry["selection"].get("MU") is not None:
            axis.scatter([entry["selection"]["FE"]], [entry["selection"]["MU"]], marker="*", s=220, color=colour,
                         edgecolor="black", zorder=5, label=f"{method}: chosen")
        lines.append(f"- {method} ({len(finished)} trials): {_importances(study)}")
    target = (choice or {}).get("target", {}).get("selection", {})
    if target.get("FE") is not None and target.get("MU") is not None:
        axis.scatter([target["FE"]], [target["MU"]], marker="X", s=90, color="black", label="target")
    axis.set_xlabel("Forget Efficacy on the selection rows \u2192")
    axis.set_ylabel("Model Utility on the selection rows \u2192")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="x-small", loc="best")
    axis.set_title("Every candidate (trial x epoch), selection rows", fontsize=10)
    figure.tight_layout()
    atomic_write_bytes(output / "sweep_fe_mu.png", png_bytes(figure))
    lines += ["", "![FE vs MU of every candidate](sweep_fe_mu.png)", "", "## The choice", ""]
    if choice is None:
        lines.append("No result yet: the study has not finished (rerun `unlearnlm sweep` with its config).")
    else:
        lines.append(choice_table(choice))
        evaluations = sorted(p.parent for p in (folder / "result" / "eval").glob("*/summary.json"))
        if evaluations:
            write_report([str(p) for p in evaluations], output)
            lines.append("The chosen models side by side on the report rows: report.md, report.html.")
    text = "\n".join(lines) + "\n"
    atomic_write_text(output / "sweep.md", text)
    logger.info(text.rstrip("\n"))
    return output / "sweep.md"

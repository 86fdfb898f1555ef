"""``unlearnlm attack RUN``: does an unlearning run's forgetting survive relearning, quantisation
and rephrased questions?

Each attack turns the unlearned model U (RUN/model) into U' (or asks U other questions) and
scores it exactly as the run's own evaluation (RUN/eval: same sets, same judges, same settings).
The recovery of every forget metric (evaluation.recovery) compares U' with U and with the
target T the run started from (model.name_or_path of RUN/config.yaml), whose evaluation is
reused when one with the same settings sits beside its model folder, else made once.

    RUN/attacks/relearn/        data/ (what U relearns on, what is evaluated), run/ (the
                                fine-tuning run folder), eval/ (its evaluation)
    RUN/attacks/quantize/Nbit/  the evaluation of U fake-quantised to N bits
    RUN/attacks/quantize/bnb_MODE/  bitsandbytes' loading (a GPU only)
    RUN/attacks/probes/         sets/ (one QA file per probe), eval/ (one set per probe)
    RUN/attacks/target/         the target's evaluation, when none could be reused
    RUN/attacks/summary.json    FE, MU and the recovery of every forget metric, per attack
    RUN/attacks/summary.md      the same as a table
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..config import (
    AttackConfig,
    BootstrapConfig,
    EvaluateConfig,
    FinetuneConfig,
    FinetuneDataConfig,
    ModelConfig,
    TrainingConfig,
    to_dict,
)
from ..data.records import default_retain_split, load_split, read_records_file, validate_records
from ..errors import UserError
from ..evaluation import recovery as R
from ..evaluation.evaluate import build_sets
from ..evaluation.report.attacks import read_attack_summary
from ..evaluation.runs import EVAL_SUMMARY, RECORDS_DIR, load_summary, read_evaluation_config, run_folder_of
from ..evaluation.statistics import levels_label, short_interval
from ..io import atomic_write_json, atomic_write_jsonl, atomic_write_text, read_yaml

logger = logging.getLogger(__name__)

ATTACKS_DIR = "attacks"
ATTACK_SETTINGS = "attack.json"  # beside each attack's evaluation: what made it (a rerun reuses it)


@dataclass
class AttackResult:
    """One attack's forget records, with U's and T's records of the same questions in the same order."""

    name: str  # relearn:forget_half, quantize:4bit, probe:role_play, ...
    folder: Path | None
    attacked_rows: list[dict]  # U' (or U asked another way)
    MU: float | None
    unlearned_rows: list[dict]
    target_rows: list[dict]
    notes: list[str] = field(default_factory=list)

    def as_dict(self, bootstrap: BootstrapConfig) -> dict:
        forget, unlearned, target = (R.forget_metrics(rows) for rows in
                                     (self.attacked_rows, self.unlearned_rows, self.target_rows))
        recovery = R.recoveries(forget, unlearned, target)
        intervals = R.recovery_intervals(self.attacked_rows, self.unlearned_rows, self.target_rows,
                                         bootstrap.samples, bootstrap.seed, bootstrap.level)
        return {
            "attack": self.name,
            "folder": str(self.folder) if self.folder else None,
            "rows": len(self.attacked_rows),
            "FE": R.forget_efficacy_of(forget),
            "MU": self.MU,
            "forget": forget,
            "unlearned_forget": unlearned,
            "target_forget": target,
            "recovery": recovery,
            "recovery_interval": {m: intervals[m] for m in recovery},
            "mean_recovery": R.mean_recovery(recovery[m] for m in R.M.FORGET_EFFICACY_METRICS),
            "mean_recovery_interval": intervals["mean"],
            # how far U forgot at all on these rows (FE(U) - FE(T)): near 0, recovery is noise over noise
            "forgetting": _difference(R.forget_efficacy_of(unlearned), R.forget_efficacy_of(target)),
            "forgetting_interval": intervals["forgetting"],
            "notes": self.notes,
        }


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


@dataclass
class Scored:
    """An evaluation folder's forget-set records and Model Utility."""

    folder: Path
    records: list[dict]
    MU: float | None
    FE: float | None

    @classmethod
    def read(cls, folder: Path, set_name: str | None = None) -> Scored:
        summary = load_summary(folder)
        name = set_name or forget_set_name(summary)
        records = read_records_file(folder / RECORDS_DIR / f"{name.replace(':', '_').replace('/', '_')}.jsonl")
        return cls(folder, records, summary.get("MU"), summary.get("FE"))

    def metrics(self) -> dict:
        return R.forget_metrics(self.records)

    def rows_at(self, indices: Sequence[int] | None = None) -> list[dict]:
        """The records of these forget rows (by their ``index``), in this order; None = all."""
        if indices is None:
            return list(self.records)
        by_index = {r["index"]: r for r in self.records}
        return [by_index[i] for i in indices]


def forget_set_name(summary: dict) -> str:
    names = [n for n, r in summary.get("sets", {}).items() if r.get("role") == "forget"]
    if not names:
        raise UserError(f"the evaluation in {summary.get('output_dir')} has no forget set: nothing to attack")
    return "forget" if "forget" in names else names[0]


def _clean(row: dict) -> dict:
    """A data row as written back to a file (the loader's own bookkeeping keys dropped)."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


# ---- what an attack run needs, checked before any model work -----------------------------------


@dataclass
class AttackPlan:
    run: Path
    output: Path
    run_config: dict  # RUN/config.yaml
    eval_config: EvaluateConfig  # RUN/eval/config.yaml
    forget_set: Any  # EvalSet
    forget_rows: list[dict]
    retain_pairs: list[tuple[str, str]]  # the evaluation's retain-role (question, answer): in-context examples
    retain_rows: list[dict]  # the same rows whole (their subjects: the reverse question's wrong names)
    relearn_rows: list[dict] | None = None  # question/answer rows to relearn on
    relearn_heldout: list[int] | None = None  # forget rows evaluated after relearning on the others
    probes: list = field(default_factory=list)


def split_half(n: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random half of range(n) to relearn on (n // 2 rows) and the rest to evaluate."""
    if n < 2:
        raise UserError(f"relearn.data=forget_half needs at least 2 forget rows, the run's forget set has {n}")
    chosen = set(random.Random(seed).sample(range(n), n // 2))
    return sorted(chosen), [i for i in range(n) if i not in chosen]


def plan_attacks(config: AttackConfig, run: str | Path) -> AttackPlan:
    """Every setting, file and data set an attack reads, checked; no model is loaded. ``config``
    is validated already (``unlearnlm.api.attack`` builds it)."""
    attacks_of(config)  # an unknown attack lists the valid ones, before the run folder is read
    folder = run_folder_of(run)
    if folder is None:
        raise UserError(f"{run} is not a training run folder (it needs model/ and config.yaml)")
    folder = folder.resolve()  # the reuse markers hold paths: runs/x and /abs/runs/x are one run
    eval_folder = folder / "eval"
    if not ((eval_folder / EVAL_SUMMARY).exists() and (eval_folder / "config.yaml").exists()):
        raise UserError(f"{folder} has no evaluation; run `unlearnlm evaluate {folder}` first "
                        "(the attacks are scored with its settings)")
    run_config = read_yaml(folder / "config.yaml", written=True)
    for section in ("model", "data"):
        if not isinstance(run_config.get(section) or {}, dict):
            raise UserError(f"{folder / 'config.yaml'}: '{section}' is not a section of keys: not a run's config")
    target = (run_config.get("model") or {}).get("name_or_path")
    if not target:
        raise UserError(f"{folder}/config.yaml names no model.name_or_path: the target is unknown")
    from ..training.models import embedded_alias, resolve_model_path

    if embedded_alias(str(target)) is None:
        resolve_model_path(str(target))  # a target folder deleted since the run is named now
    # The run's own model, whatever path its evaluation saved (a moved folder, a relative path).
    eval_config = read_evaluation_config(eval_folder)
    eval_config = replace(eval_config, model=replace(eval_config.model, name_or_path=str(folder / "model")))
    sets = build_sets(eval_config)
    forget = [(s, rows) for s, rows in sets if s.role == "forget"]
    forget.sort(key=lambda item: item[0].name != "forget")
    if not forget:
        raise UserError(f"{eval_folder} has no forget set: nothing to attack")
    retain = [(s, r) for s, rows in sets if s.role == "retain" for r in rows]
    plan = AttackPlan(folder, folder / ATTACKS_DIR, run_config, eval_config, forget[0][0], forget[0][1],
                      [(r["question"], r[s.ground_truth]) for s, r in retain], [r for _, r in retain])
    for attack in attacks_of(config):
        if attack.plan is not None:
            attack.plan(plan, config)
    return plan


def _plan_probes(plan: AttackPlan, config: AttackConfig) -> None:
    from ..evaluation.probes import load_probes

    plan.probes = load_probes(config.probes.templates, config.probes.names)


def _plan_relearn(plan: AttackPlan, config: AttackConfig) -> None:
    choice = config.relearn.data
    truth = plan.forget_set.ground_truth
    if choice == "forget_half":
        relearn, heldout = split_half(len(plan.forget_rows), config.relearn.seed)
        plan.relearn_rows = [{"question": plan.forget_rows[i]["question"], "answer": plan.forget_rows[i][truth]}
                             for i in relearn]
        plan.relearn_heldout = heldout
        return
    if choice == "retain":
        data = plan.run_config.get("data") or {}
        spec = data.get("retain") or default_retain_split(str(data.get("forget", "")))
        if not spec:
            raise UserError("relearn.data=retain: the run names no retain set (data.retain) "
                            "and none goes with its forget set")
        rows = load_split(spec, data.get("source"), required=("question", "answer"))
    else:
        rows = load_split(choice, None, required=("question", "answer"))
        validate_records(rows, choice, required=("question", "answer"))
    if not rows:
        raise UserError(f"relearn.data={choice}: no rows to relearn on")
    plan.relearn_rows = [{"question": r["question"], "answer": r["answer"]} for r in rows]


# ---- evaluations -------------------------------------------------------------------------------


def _same_settings(folder: Path, settings: dict) -> bool:
    marker = folder / ATTACK_SETTINGS
    if not ((folder / EVAL_SUMMARY).exists() and marker.exists()):
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")) == settings
    except (OSError, ValueError):
        return False


def _evaluate(config: EvaluateConfig, settings: dict, judges, model=None, tokenizer=None, load=None) -> Path:
    """Evaluate into config.output_dir unless it holds this very evaluation already.
    ``load``: makes (model, tokenizer) when needed (a quantised copy...)."""
    from ..evaluation.evaluate import evaluate_model

    folder = Path(config.output_dir)
    settings = {"evaluation": to_dict(config), **settings}
    if _same_settings(folder, settings):
        logger.info("%s already holds this attack's evaluation", folder)
        return folder
    if model is None and load is not None:
        model, tokenizer = load()
    evaluate_model(config, model=model, tokenizer=tokenizer, judges=judges, log=logger.info)
    atomic_write_json(folder / ATTACK_SETTINGS, settings)
    return folder


def _with(config: EvaluateConfig, output: Path, model: str | None = None, **changes) -> EvaluateConfig:
    changes["output_dir"] = str(output)
    if model is not None:
        changes["model"] = replace(config.model, name_or_path=str(model))
    return replace(config, **changes)


def _attacked(config: EvaluateConfig, output: Path, model: str | Path | None = None) -> EvaluateConfig:
    """An attacked model's evaluation: the run's, without the holdout rows (an attack is read by
    its forget metrics and MU; the membership numbers' loss pass over the holdout is not needed)."""
    return _with(config, output, model=None if model is None else str(model),
                 data=replace(config.data, holdout=None))


def target_evaluation(plan: AttackPlan, judges) -> Path:
    """T's evaluation with the run's settings: the one beside T's model folder when it matches
    (a run folder's eval/, as the demo's target has), else one made in RUN/attacks/target."""
    target = str(plan.run_config["model"]["name_or_path"])
    path = Path(target).expanduser()
    wanted = {k: v for k, v in to_dict(plan.eval_config).items() if k not in ("model", "output_dir")}
    if path.is_dir():
        beside = path.resolve().parent / "eval"
        saved = beside / "config.yaml"
        if (beside / EVAL_SUMMARY).exists() and saved.exists():
            previous = to_dict(read_evaluation_config(beside))
            if {k: v for k, v in previous.items() if k not in ("model", "output_dir")} == wanted:
                logger.info("reusing the target's evaluation %s", beside)
                return beside
    return _evaluate(_with(plan.eval_config, plan.output / "target", model=target), {"attack": "target"}, judges)


# ---- the attacks -------------------------------------------------------------------------------


def relearn_rows_for_steps(rows: Sequence[dict], steps: int, per_step: int, seed: int) -> list[dict]:
    """``steps * per_step`` rows: seeded shuffled passes over ``rows``, so one epoch of them is
    exactly ``steps`` optimiser steps of ``per_step`` rows."""
    rng = random.Random(seed)
    out: list[dict] = []
    while len(out) < steps * per_step:
        batch = list(rows)
        rng.shuffle(batch)
        out += batch
    return out[: steps * per_step]


def attack_relearn(context: AttackContext) -> list[AttackResult]:
    from ..training.run import finetune

    plan, config, judges, target, unlearned = context.plan, context.config, context.judges, context.target, \
        context.unlearned

    settings = config.relearn
    folder = plan.output / "relearn"
    per_step = settings.per_device_batch_size * settings.gradient_accumulation_steps
    train_rows = relearn_rows_for_steps(plan.relearn_rows, settings.steps, per_step, settings.seed)
    # Named by its content: other rows make another fine-tuning config, never a stale reuse.
    digest = hashlib.sha256(json.dumps(train_rows, sort_keys=True).encode()).hexdigest()[:12]
    train_file = folder / "data" / f"relearn-{digest}.json"
    atomic_write_jsonl(train_file, train_rows)
    model = plan.run_config["model"]
    recipe = FinetuneConfig(
        output_dir=str(folder / "run"),
        model=ModelConfig(str(plan.run / "model"), bool(model.get("trust_remote_code", False)),
                          str(model.get("dtype", "auto"))),
        data=FinetuneDataConfig(source=str(folder / "data"), train=[str(train_file)],
                                max_length=int((plan.run_config.get("data") or {}).get("max_length", 512))),
        # One epoch of the repeated rows = `steps` optimiser steps at a constant lr (no warm-up
        # to spend a short attack's steps on).
        training=TrainingConfig(lr=settings.lr, epochs=1.0, per_device_batch_size=settings.per_device_batch_size,
                                gradient_accumulation_steps=settings.gradient_accumulation_steps, warmup_epochs=0.0,
                                lr_scheduler="constant", seed=settings.seed, group_by_length=False,
                                progress=config.progress),
    )
    run_folder = Path(recipe.output_dir)
    eval_config = _attacked(plan.eval_config, folder / "eval", model=run_folder / "model")
    heldout = plan.relearn_heldout  # None: every forget row is evaluated
    if heldout is not None:
        heldout_file = folder / "data" / "forget_heldout.json"
        atomic_write_jsonl(heldout_file, [_clean(plan.forget_rows[i]) for i in heldout])
        data = eval_config.data
        if plan.forget_set.split in data.custom_forget:  # a custom scenario's forget file: the held-out half instead
            data = replace(data, custom_forget=[str(heldout_file)])
        else:
            data = replace(data, forget=str(heldout_file), task_id=[])
        eval_config = replace(eval_config, data=data)
    identity = to_dict(recipe)
    identity["training"].pop("progress")  # a progress bar changes nothing relearned
    marker = {"attack": "relearn", "recipe": identity}
    if not _same_settings(folder / "eval", {"evaluation": to_dict(eval_config), **marker}):
        _replace_other_run(run_folder, recipe)
        if not (run_folder / "model" / "config.json").exists():  # weights deleted by keep_model=false
            shutil.rmtree(run_folder, ignore_errors=True)
        finetune(recipe)
        _evaluate(eval_config, marker, judges)
    if not settings.keep_model:
        shutil.rmtree(run_folder / "model", ignore_errors=True)
    attacked = Scored.read(folder / "eval")
    if heldout is not None:
        # The held-out rows in U's and T's records, in the order they were evaluated here.
        expected = [plan.forget_rows[i]["question"] for i in heldout]
        if [r["question"] for r in attacked.records] != expected:
            raise RuntimeError("relearn: the evaluated rows are not the held-out half")
    name = settings.data if settings.data in ("forget_half", "retain") else "file"
    notes = [f"relearned {settings.steps} steps on {len(plan.relearn_rows)} rows"]
    if heldout is not None:
        notes.append(f"evaluated on the other {len(heldout)} forget rows only")
    return [AttackResult(f"relearn:{name}", folder / "eval", attacked.records, attacked.MU,
                         unlearned.rows_at(heldout), target.rows_at(heldout), notes)]


def _replace_other_run(folder: Path, recipe: FinetuneConfig) -> None:
    """A relearning run of other settings in the attack's folder is this command's own product:
    it makes way for the new one (finetune() would refuse the folder)."""
    from ..config import config_differences

    if config_differences(folder, recipe):
        logger.info("replacing the relearning run in %s (other settings)", folder)
        shutil.rmtree(folder)


def attack_quantize(context: AttackContext) -> list[AttackResult]:
    from ..training.models import load_model, load_tokenizer, to_inference_device
    from ..training.quantize import bitsandbytes_unavailable, fake_quantize_model, load_bitsandbytes

    plan, config, judges, target, unlearned = context.plan, context.config, context.judges, context.target, \
        context.unlearned
    model_config = plan.eval_config.model
    results = []
    for bits in config.quantize.bits:
        folder = plan.output / "quantize" / f"{bits}bit"

        def load(bits=bits):
            model = load_model(model_config)
            layers = fake_quantize_model(model, bits, config.quantize.group_size)
            logger.info("quantised %d linear layers to %d bits", len(layers), bits)
            return to_inference_device(model, model_config), load_tokenizer(model_config)

        settings = {"attack": "quantize", "bits": bits, "group_size": config.quantize.group_size}
        _evaluate(_attacked(plan.eval_config, folder), settings, judges, load=load)
        attacked = Scored.read(folder)
        results.append(AttackResult(f"quantize:{bits}bit", folder, attacked.records, attacked.MU,
                                    unlearned.rows_at(), target.rows_at(),
                                    [f"round-to-nearest, groups of {config.quantize.group_size}"]))
    for mode in config.quantize.bitsandbytes:
        reason = bitsandbytes_unavailable()
        if reason:
            context.skipped.append({"attack": f"quantize:bnb-{mode}", "reason": reason})
            continue
        folder = plan.output / "quantize" / f"bnb_{mode}"
        _evaluate(_attacked(plan.eval_config, folder), {"attack": "quantize", "bitsandbytes": mode}, judges,
                  load=lambda mode=mode: (load_bitsandbytes(model_config, mode), load_tokenizer(model_config)))
        attacked = Scored.read(folder)
        results.append(AttackResult(f"quantize:bnb-{mode}", folder, attacked.records, attacked.MU,
                                    unlearned.rows_at(), target.rows_at()))
    return results


def probe_max_length(eval_config, rows: list, probe_sets: list[list[dict]]) -> int:
    """The run's max_length, raised by the most prompt tokens a probe adds to its forget question
    (a multiple-choice probe lists its options), so that no probe answer gets a smaller budget
    than the plain question's (and no probe prompt alone fills the budget)."""
    from ..training.models import load_prompt_format, load_tokenizer

    formatter = load_prompt_format(eval_config.model, load_tokenizer(eval_config.model))
    prompt_length = lambda question: len(formatter.prompt_ids(question))  # noqa: E731
    added = [prompt_length(item["question"]) - prompt_length(rows[item["forget_index"]].question)
             for items in probe_sets for item in items]
    return eval_config.max_length + max([0, *added])


def attack_probes(context: AttackContext) -> list[AttackResult]:
    from ..evaluation.probes import forget_rows, probe_rows, subject_of

    plan, config, judges, target, unlearned = context.plan, context.config, context.judges, context.target, \
        context.unlearned

    eval_set = plan.forget_set
    rows = forget_rows(plan.forget_rows, eval_set.ground_truth, eval_set.paraphrased, eval_set.perturbed)
    others = [s for s in (subject_of(r) for r in plan.retain_rows) if s]
    folder = plan.output / "probes"
    files, notes = [], {}
    for probe in plan.probes:
        items, note = probe_rows(probe, rows, plan.retain_pairs, config.probes.seed, others)
        if not items:
            context.skipped.append({"attack": f"probe:{probe.name}", "reason": note})
            continue
        path = folder / "sets" / f"{probe.name}.json"
        atomic_write_jsonl(path, items)
        files.append((probe.name, items))
        notes[probe.name] = [note] if note else []
    if not files:
        return []
    data = replace(plan.eval_config.data, custom_forget=[str(folder / "sets" / f"{name}.json") for name, _ in files],
                   custom_retain=[], holdout=None)
    max_length = probe_max_length(plan.eval_config, rows, [items for _, items in files])
    if max_length != plan.eval_config.max_length:
        for name, _ in files:
            notes[name].append(f"max_length {max_length} (the run's {plan.eval_config.max_length} plus the longest "
                               "probe's added prompt): every probe keeps its question's answer budget")
    # The probes change the questions, not the model: U's Model Utility stands; only the probe sets are scored.
    probe_config = _with(plan.eval_config, folder / "eval", scenario="custom", data=data, retain_eval=None,
                         max_length=max_length)
    _evaluate(probe_config, {"attack": "probes", "settings": to_dict(config.probes),
                             "templates": [p.__dict__ for p in plan.probes]}, judges)
    results = []
    for name, items in files:
        asked = [item["forget_index"] for item in items]
        attacked = Scored.read(folder / "eval", set_name=name)
        # U and T on the original questions of the rows this probe asked (rows without a subject left out).
        results.append(AttackResult(f"probe:{name}", folder / "eval", attacked.records, unlearned.MU,
                                    unlearned.rows_at(asked), target.rows_at(asked),
                                    notes[name] + ["MU is the run's own (the model is unchanged)"]))
    return results


# ---- the registry: an attack is a function of the context and one entry here ---------------------


@dataclass
class AttackContext:
    """What every attack reads: the checked plan, the settings, the judges, and the forget records
    of U (the run) and T (its target) that recovery compares with."""

    plan: AttackPlan
    config: AttackConfig
    judges: Any
    target: Scored
    unlearned: Scored
    skipped: list[dict] = field(default_factory=list)  # {"attack", "reason"} of what could not run here


@dataclass(frozen=True)
class Attack:
    """``run`` attacks U and scores the result (one AttackResult a variant, named ``NAME:variant``);
    ``plan``, when given, checks and prepares the attack's data before any model work. Its
    settings, if any, are AttackConfig's section of the same name."""

    run: Callable[[AttackContext], list[AttackResult]]
    plan: Callable[[AttackPlan, AttackConfig], None] | None = None


ATTACKS: dict[str, Attack] = {
    "relearn": Attack(attack_relearn, plan=_plan_relearn),
    "quantize": Attack(attack_quantize),
    "probes": Attack(attack_probes, plan=_plan_probes),
}


def attacks_of(config: AttackConfig, prefix: str = "") -> list[Attack]:
    """The registry entries ``config.attacks`` names, in its order; unknown, repeated or no
    attacks are one-line errors listing the valid ones."""
    valid = ", ".join(ATTACKS)
    if not config.attacks:
        raise UserError(f"{prefix}attacks is empty; valid: {valid}")
    unknown = [name for name in config.attacks if name not in ATTACKS]
    if unknown:
        raise UserError(f"unknown attack '{unknown[0]}'; valid: {valid}")
    if len(set(config.attacks)) != len(config.attacks):
        raise UserError(f"{prefix}attacks names an attack twice: {','.join(config.attacks)}")
    return [ATTACKS[name] for name in config.attacks]


# ---- the command -------------------------------------------------------------------------------


def run_attacks(config: AttackConfig, run: str | Path, judges=None) -> dict:
    """Attack the run folder ``run``; writes RUN/attacks and returns its summary."""
    from ..judges.loading import Judges

    plan = plan_attacks(config, run)  # every user mistake surfaces here, before any model work
    plan.output.mkdir(parents=True, exist_ok=True)
    judges = judges if judges is not None else Judges.load(plan.eval_config.judges)
    unlearned = Scored.read(plan.run / "eval")
    target = Scored.read(target_evaluation(plan, judges))
    questions = [r["question"] for r in plan.forget_rows]
    for scored, what in ((unlearned, "the run's"), (target, "the target's")):
        if [r["question"] for r in scored.records] != questions:
            raise UserError(f"{what} evaluation {scored.folder} scored other forget rows than its settings give now; "
                            "evaluate it again")
    results: list[AttackResult] = []
    context = AttackContext(plan, config, judges, target, unlearned)
    skipped = context.skipped
    times = {}
    for name, attack in zip(config.attacks, attacks_of(config)):
        logger.info("attack %s on %s", name, plan.run)
        started = time.perf_counter()
        results += attack.run(context)
        times[f"{name}_s"] = round(time.perf_counter() - started, 2)
    entries = [r.as_dict(plan.eval_config.bootstrap) for r in results]
    kinds = {_kind(e["attack"]) for e in entries} | {_kind(s["attack"]) for s in skipped}
    previous = _previous_summary(plan.output)
    # An earlier command's other attacks stay in the summary (attacks=relearn, then attacks=quantize).
    kept = [e for e in previous.get("attacks", []) if _kind(e["attack"]) not in kinds]
    kept_skipped = [s for s in previous.get("skipped", []) if _kind(s["attack"]) not in kinds]
    summary = {
        "run": str(plan.run),
        "method": plan.run_config.get("method", ""),
        "target": str(plan.run_config["model"]["name_or_path"]),
        "run_eval": str(unlearned.folder),
        "target_eval": str(target.folder),
        "unlearned": {"FE": unlearned.FE, "MU": unlearned.MU, "forget": unlearned.metrics()},
        "target_model": {"FE": target.FE, "MU": target.MU, "forget": target.metrics()},
        "attacks": kept + entries,
        "skipped": kept_skipped + skipped,
        "config": to_dict(config),
        # the recovery intervals' bootstrap: the run evaluation's own settings
        "recovery_bootstrap": to_dict(plan.eval_config.bootstrap),
        # wall seconds of each attack this time (an evaluation reused costs next to nothing)
        "times": times,
    }
    atomic_write_json(plan.output / EVAL_SUMMARY, summary)
    atomic_write_text(plan.output / "summary.md", format_attack_table(summary) + "\n")
    return summary


def _kind(attack: str) -> str:
    """relearn:forget_half -> relearn; probe:role_play -> probes (the attacks= name that makes it)."""
    kind = attack.split(":", 1)[0]
    return "probes" if kind == "probe" else kind


def _previous_summary(folder: Path) -> dict:
    if not (folder / EVAL_SUMMARY).exists():
        return {}
    try:
        return read_attack_summary(folder / EVAL_SUMMARY)
    except UserError as err:
        logger.warning("warning: %s; the attacks it held are not kept in the new summary", err)
        return {}


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_attack_table(summary: dict) -> str:
    """FE, MU and the recovery of each forget metric, one line per attack (the unlearned model and
    the target first, as reference lines)."""
    metrics = R.RECOVERY_METRICS
    titles = "".join(f"{'R:' + R.RECOVERY_TITLES[m]:>10}" for m in metrics)
    header = f"{'attack':<28}{'rows':>5}{'FE':>8}{'MU':>8}" + titles
    lines = [header, "-" * len(header)]
    for label, key in (("(unlearned)", "unlearned"), ("(target)", "target_model")):
        lines.append(f"{label:<28}{'':>5}{_cell(summary[key]['FE']):>8}{_cell(summary[key]['MU']):>8}")
    for attack in summary["attacks"]:
        cells = "".join(f"{_cell(attack['recovery'][m]):>10}" for m in metrics)
        lines.append(f"{attack['attack'][:27]:<28}{attack['rows']:>5}{_cell(attack['FE']):>8}{_cell(attack['MU']):>8}{cells}")
        bounds = attack.get("recovery_interval") or {}
        if any(bounds.values()):
            lines.append(" " * 49 + "".join(f" {short_interval(bounds.get(m)):>9}" for m in metrics).rstrip())
    lines.append("recovery R = (m(attacked) - m(unlearned)) / (m(target) - m(unlearned)); 0 = nothing regained, "
                 "1 = back to the target; - = no gap or no value")
    if any(any((a.get("recovery_interval") or {}).values()) for a in summary["attacks"]):
        level = levels_label([(summary.get("recovery_bootstrap") or {}).get("level")])
        lines.append(f"beneath: {level} paired bootstrap over the forget rows; an interval above 0 = knowledge "
                     "came back beyond the rows' noise")
    for item in summary["skipped"]:
        lines.append(f"skipped {item['attack']}: {item['reason']}")
    return "\n".join(lines)

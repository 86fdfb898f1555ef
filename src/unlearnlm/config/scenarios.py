"""The scenarios' configs (docs/formulas.md#scenarios): continual, real-world, MUSE, WMDP, forget sets
built from the model, and the demo. Each embeds whole sections (an unlearning run, an evaluation,
lm-eval tasks, attacks) and checks only what is its own or spans them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import UserError
from .attacks import AttackConfig, QuantizeAttackConfig, RelearnAttackConfig
from .checks import _overwritten, _require, _within
from .evaluation import EvaluateConfig
from .model import DataConfig, ModelConfig
from .training import TrainingConfig
from .unlearn import UnlearnConfig
from .validation import validate_config


def _methods_known(methods: list[str], key: str) -> None:
    from ..methods.registry import get_method

    for method in methods:
        try:
            get_method(method)
        except UserError as err:
            raise UserError(f"{key}: {err}") from None
    _require(len(set(methods)) == len(methods), f"{key} lists a method twice: {', '.join(methods)}")


def _unlearns_text(config: Any) -> None:
    """MUSE's and WMDP's run: the corpora are plain text."""
    _within("unlearn", validate_config, config.unlearn)
    _require(config.unlearn.data.format == "text",
             f"unlearn.data.format must be text here (the corpora are plain text), "
             f"got '{config.unlearn.data.format}'")


@dataclass
class DownstreamConfig:
    """lm-evaluation-harness tasks scored on the in-memory model (evaluation.downstream)."""

    enabled: bool = True
    # lm-eval task names; the paper's five with its metrics (see evaluation.downstream).
    tasks: list[str] = field(
        default_factory=lambda: ["arc_challenge", "mmlu", "truthfulqa_mc1", "triviaqa", "gsm8k"]
    )
    # Examples per task (a count, or a share when < 1); empty = all of them.
    limit: Optional[float] = None
    # Empty = each task's own default number of few-shot examples.
    num_fewshot: Optional[int] = None
    batch_size: int = 8
    # A folder of extra task YAMLs (lm-eval's include_path), for local or custom tasks.
    include_path: Optional[str] = None
    # Wrap prompts in the tokenizer's chat template (lm-eval's apply_chat_template).
    apply_chat_template: bool = False
    seed: int = 1234

    def validate(self, prefix: str = "downstream.") -> None:
        if not self.enabled:
            return
        _require(bool(self.tasks), f"{prefix}tasks is empty; set {prefix}enabled=false to skip lm-eval")
        _require(self.limit is None or (math.isfinite(self.limit) and self.limit > 0),
                 f"{prefix}limit must be positive (a count, or a share when < 1), got {self.limit}")
        _require(self.num_fewshot is None or self.num_fewshot >= 0,
                 f"{prefix}num_fewshot must be zero or more, got {self.num_fewshot}")
        _require(self.batch_size >= 1, f"{prefix}batch_size must be at least 1, got {self.batch_size}")


def _continual_unlearn_defaults() -> UnlearnConfig:
    # docs/formulas.md#objectives: forget_coeff 1.0 in the continual scenario, ME+GD included.
    # output_dir is set per task (OUTPUT_DIR/METHOD/task_K).
    return UnlearnConfig(forget_coeff=1.0, output_dir="runs/continual")


@dataclass
class ContinualConfig:
    # The per-task run. Per task k the scenario sets model (task k-1's result), data.task_id
    # ([k]), reference_model and output_dir; everything else applies to every task.
    unlearn: UnlearnConfig = field(default_factory=_continual_unlearn_defaults)
    # Methods to run, each its own chain of tasks; empty = unlearn.method alone.
    methods: list[str] = field(default_factory=list)
    # Tasks of the forget split, unlearned in this order; empty = every task of the split.
    tasks: list[str] = field(default_factory=lambda: ["1", "2", "3"])
    # NPO/DPO/KL reference: false = the previous task's result, true = the original target.
    fix_ref_model: bool = False
    # Model folders to keep: task ids, "last" (the final task's), or "all". The one the next
    # task starts from is kept until that task is done, whatever this says.
    keep_models: list[str] = field(default_factory=lambda: ["last"])
    # Evaluate the original target once too (task 0 of every trajectory).
    evaluate_target: bool = True
    # Evaluate after every task (the trajectory), with unlearn.evaluation's settings (scenario,
    # ds_size, judges...) on the task just unlearned; false = only unlearn.
    evaluate: bool = True
    output_dir: str = "runs/continual"
    # One continual run per seed (unlearn.training.seed), each in OUTPUT_DIR/seed_S (a finished one
    # is not redone), then OUTPUT_DIR/trajectory.csv: mean ± sd over the seeds, pooled intervals.
    seeds: Optional[list[int]] = None

    def validate(self) -> None:
        _within("unlearn", validate_config, self.unlearn)
        _methods_known(self.methods, "methods")
        _require(all(str(t).strip() for t in self.tasks), "tasks holds an empty task id")
        _overwritten(self.unlearn, _continual_unlearn_defaults(), {
            "data.task_id": "list the tasks to unlearn in turn in tasks=...",
            "reference_model": "the reference is the previous task's model, or the target with fix_ref_model=true",
            "output_dir": "set output_dir (each task's run goes into OUTPUT_DIR/METHOD/task_K)",
            "data.retain_includes_later_tasks": "the continual retain set always holds the later tasks' rows",
        }, "the continual scenario sets it for every task", prefix="unlearn.")
        if self.methods:
            _overwritten(self.unlearn, _continual_unlearn_defaults(), {
                "method": "list every method in methods=..."}, "methods=... names the methods run", prefix="unlearn.")
        if self.evaluate:
            _overwritten(self.unlearn.evaluation, EvaluateConfig(), {
                "output_dir": "evaluations go into each task's folder"}, "the continual scenario sets it",
                prefix="unlearn.evaluation.")


def _real_world_unlearn_defaults() -> UnlearnConfig:
    # docs/formulas.md#scenarios real-world: every person at once, the neighbours as retain set, ME+GD with
    # lr 5e-6 and forget_coeff 0.5; sequences up to 300 tokens as in the reference.
    return UnlearnConfig(
        method="ME+GD",
        forget_coeff=0.5,
        output_dir="runs/real_world",  # replaced by OUTPUT_DIR/METHOD
        data=DataConfig(source="data/real_world", forget="forget", retain="neighbor", task_id=[],
                        retain_includes_later_tasks=False, max_length=300),
        training=TrainingConfig(lr=5e-6),
    )


@dataclass
class RealWorldConfig:
    # data.source: a folder with forget.json and neighbor.json (+ *_perturbed.json when there),
    # e.g. one written by `unlearnlm build-forget-set`.
    unlearn: UnlearnConfig = field(default_factory=_real_world_unlearn_defaults)
    # Score the target before unlearning too, for the before/after table.
    evaluate_target: bool = True
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    output_dir: str = "runs/real_world"

    def validate(self) -> None:
        _within("unlearn", validate_config, self.unlearn)
        _overwritten(self.unlearn, _real_world_unlearn_defaults(), {
            "data.task_id": "the real-world scenario unlearns every person of the forget set at once "
                            "(make a forget file with the people you want)",
            "data.retain_includes_later_tasks": "the retain set is the neighbour set",
            "output_dir": "set output_dir (the run goes into OUTPUT_DIR/METHOD)",
        }, "the real-world scenario sets it", prefix="unlearn.")
        _overwritten(self.unlearn.evaluation, EvaluateConfig(), {
            "output_dir": "evaluations go into OUTPUT_DIR/target/eval and OUTPUT_DIR/METHOD/eval",
        }, "the real-world scenario sets it", prefix="unlearn.evaluation.")
        scenario = self.unlearn.evaluation.scenario
        _require(scenario in ("tofu", "real_world"),  # "tofu" is the section's default: replaced by real_world
                 f"unlearn.evaluation.scenario={scenario!r} cannot be honoured: the real-world scenario evaluates "
                 "with scenario real_world")
        self.downstream.validate()


MUSE_METRICS = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")


@dataclass
class MuseEvalConfig:
    """MUSE's evaluation (evaluation.muse): VerbMem on the forget set, KnowMem on forget and retain
    QA, PrivLeak from Min-K% scores of privleak forget against holdout."""

    # A hub dataset (muse-bench/MUSE-News, muse-bench/MUSE-Books) or a local folder in its layout
    # (verbmem/forget.json, knowmem/forget_qa.json, ...); empty = the unlearning data's source.
    source: Optional[str] = None
    # Whose published retrained-model PrivLeak reference to use when no retrain_model is given.
    corpus: str = "news"
    metrics: list[str] = field(default_factory=lambda: list(MUSE_METRICS))
    verbmem_max_new_tokens: int = 128
    knowmem_max_new_tokens: int = 32
    # Min-K%: the share k of each text's lowest token log-probabilities.
    min_k: float = 0.4
    # A model trained without the forget set: its own PrivLeak AUC becomes the reference.
    retrain_model: Optional[str] = None
    # First N rows of each set; 0 = all (as MUSE).
    ds_size: int = 0
    generation_batch_size: int = 8
    loss_batch_size: int = 4
    # Longest privleak text scored, in tokens (a BOS the tokenizer adds included); empty = every token.
    privleak_max_length: Optional[int] = None

    def validate(self, prefix: str = "evaluation.") -> None:
        unknown = [m for m in self.metrics if m not in MUSE_METRICS]
        _require(not unknown,
                 f"unknown {prefix}metrics '{unknown[0] if unknown else ''}'; valid: {', '.join(MUSE_METRICS)}")
        _require(bool(self.metrics), f"{prefix}metrics is empty")
        _require(self.corpus in ("news", "books"), f"unknown {prefix}corpus '{self.corpus}'; valid: news, books")
        for name in ("verbmem_max_new_tokens", "knowmem_max_new_tokens", "generation_batch_size", "loss_batch_size"):
            _require(getattr(self, name) >= 1, f"{prefix}{name} must be at least 1, got {getattr(self, name)}")
        _require(math.isfinite(self.min_k) and 0 < self.min_k <= 1,
                 f"{prefix}min_k must be in (0, 1], got {self.min_k}")
        _require(self.ds_size >= 0, f"{prefix}ds_size must be zero (all rows) or more, got {self.ds_size}")
        _require(self.privleak_max_length is None or self.privleak_max_length >= 2,
                 f"{prefix}privleak_max_length must be at least 2, got {self.privleak_max_length}")


def _muse_unlearn_defaults() -> UnlearnConfig:
    # MUSE's baselines: the target, its raw forget text in 2,048-token chunks, raw retain1, 10 epochs
    # at a constant lr 1e-5 without warm-up or weight decay, 2 chunks per device on 2 GPUs.
    return UnlearnConfig(
        method="NPO+GD",
        output_dir="runs/muse",  # replaced by OUTPUT_DIR/METHOD
        model=ModelConfig(name_or_path="muse-bench/MUSE-News_target"),
        data=DataConfig(source="muse-bench/MUSE-News", forget="raw/forget", retain="raw/retain1", task_id=[],
                        retain_includes_later_tasks=False, format="text", chunk_length=2048),
        training=TrainingConfig(lr=1e-5, lr_scheduler="constant", warmup_epochs=0.0, weight_decay=0.0, epochs=10.0,
                                per_device_batch_size=2, gradient_accumulation_steps=2),
    )


@dataclass
class MuseConfig:
    # The unlearning run (unlearn.data.format must be text); unlearn.model is the target.
    unlearn: UnlearnConfig = field(default_factory=_muse_unlearn_defaults)
    # false: no unlearning, only the evaluation of unlearn.model (and of retrain_model).
    train: bool = True
    # Score the target before unlearning too.
    evaluate_target: bool = True
    evaluation: MuseEvalConfig = field(default_factory=MuseEvalConfig)
    output_dir: str = "runs/muse"

    def validate(self) -> None:
        _unlearns_text(self)
        self.evaluation.validate()


def _wmdp_unlearn_defaults() -> UnlearnConfig:
    # WMDP's cyber corpora from the hub (the bio forget corpus is gated: name its local file).
    return UnlearnConfig(
        method="GA+GD",
        output_dir="runs/wmdp",  # replaced by OUTPUT_DIR/METHOD
        data=DataConfig(source="cais/wmdp-corpora", forget="cyber-forget-corpus", retain="cyber-retain-corpus",
                        task_id=[], retain_includes_later_tasks=False, format="text", chunk_length=512),
    )


def _wmdp_downstream_defaults() -> DownstreamConfig:
    return DownstreamConfig(tasks=["wmdp_bio", "wmdp_cyber", "mmlu"])


@dataclass
class WmdpConfig:
    unlearn: UnlearnConfig = field(default_factory=_wmdp_unlearn_defaults)
    # false: no unlearning, only the accuracies of unlearn.model.
    train: bool = True
    evaluate_target: bool = True
    # lm-eval tasks: WMDP's (lower = forgotten, chance 0.25) and MMLU (utility).
    downstream: DownstreamConfig = field(default_factory=_wmdp_downstream_defaults)
    output_dir: str = "runs/wmdp"

    def validate(self) -> None:
        _unlearns_text(self)
        self.downstream.validate()


@dataclass
class BuildForgetSetConfig:
    # The model whose own answers become the forget / neighbour sets.
    model: ModelConfig = field(default_factory=ModelConfig)
    # People (or any entities) to forget, and neighbours to keep; or files of one name a line.
    forget_entities: list[str] = field(default_factory=list)
    neighbor_entities: list[str] = field(default_factory=list)
    forget_entities_file: Optional[str] = None
    neighbor_entities_file: Optional[str] = None
    # Question templates with a {name} slot, asked about every entity.
    templates: list[str] = field(default_factory=lambda: [
        "Who is {name}?",
        "What is {name} best known for?",
        "Where was {name} born?",
        "When was {name} born?",
        "What nationality is {name}?",
    ])
    # Or a JSON/JSONL file of rows {name, question[, golden_answer][, neighbor: true]} (templates unused).
    questions_file: Optional[str] = None
    output_dir: str = "data/real_world_built"
    # Prompt + answer tokens, at most: the evaluation's budget, so that evaluating the target
    # regenerates exactly these answers.
    max_length: int = EvaluateConfig.max_length
    batch_size: int = 16

    def validate(self) -> None:
        self.model.validate()
        _require(self.max_length >= 2, f"max_length must be at least 2, got {self.max_length}")
        _require(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}")
        bad = [t for t in self.templates if "{name}" not in t]
        _require(not bad, f"templates: '{bad[0] if bad else ''}' has no {{name}} slot")


def _demo_attacks() -> AttackConfig:
    # Sized so the attacks at most double the demo's second run (docs/demo.md): relearning 20
    # steps on half of the forget set (5 rows: a batch of 5 is all of them, where the demo's
    # fine-tuning batch of 10 would repeat each row twice for the same mean loss at twice the
    # cost). 4-bit quantisation as well (attack.attacks=relearn,quantize) takes the run to
    # about 2.8 times; probes and 8 bits: attack.attacks=relearn,quantize,probes attack.quantize.bits=8,4.
    return AttackConfig(
        attacks=["relearn"],
        relearn=RelearnAttackConfig(per_device_batch_size=5, gradient_accumulation_steps=1, keep_model=False),
        quantize=QuantizeAttackConfig(bits=[4]),
    )


def _demo_evaluation() -> EvaluateConfig:
    # Rows of each utility set scored (the forget and retain sets are smaller than this).
    return EvaluateConfig(ds_size=20)


@dataclass
class DemoConfig:
    """The paper's fictitious comparison on the embedded model, sized for a 2-core CPU."""

    output_dir: str = "runs/demo"
    model: ModelConfig = field(default_factory=ModelConfig)
    # The fictitious world (data.world): forget = task 1 of `forget_split` (2 authors).
    seed: int = 0
    authors: int = 20
    questions_per_author: int = 5
    forget_split: str = "forget10"
    # Retain set of unlearning and training set of the retain model: the world's retain90 is
    # every author outside forget10's task 1.
    retain_split: str = "retain90"
    # Authors of the world's kind that no model trains on (the holdout set of privleak and the
    # MIA AUCs): written from their own random stream, the world's files unchanged.
    holdout_authors: int = 4
    # Method names, or "all" (every method the demo offers: scenarios.demo.ALL_METHODS). The
    # default: the paper's four headline methods and two of the field's (`--full`: every method).
    methods: list[str] = field(default_factory=lambda: ["ME+GD", "IDK+AP", "GA+GD", "NPO+GD", "SimNPO+GD",
                                                        "UNDIAL"])
    # Settings of the methods that take some, by method name (method_args.PDU.epsilon=1.0). PDU
    # needs a retain-loss bound, and the demo's 4 epochs end before the paper's 5 of warm-up.
    method_args: dict[str, Any] = field(default_factory=lambda: {"PDU": {"epsilon": 1.0, "dual_warmup_epochs": 1.0}})
    # Target (every author) and retain model (all but the forget authors): same recipe, each
    # trained from the base model. A constant lr and steps of 5 rows, so the target states the
    # forget facts, not only their templates (the recipes tried: docs/demo.md, docs/performance.md).
    finetune_training: TrainingConfig = field(default_factory=lambda: TrainingConfig(
        lr=1e-4, epochs=7, per_device_batch_size=5, gradient_accumulation_steps=1, warmup_epochs=0.5,
        weight_decay=0.0, lr_scheduler="constant_with_warmup"))
    # Every method's unlearning run (ContinualConfig.unlearn, by contrast, is a whole UnlearnConfig).
    unlearn_training: TrainingConfig = field(default_factory=lambda: TrainingConfig(
        lr=5e-5, epochs=4, per_device_batch_size=5, gradient_accumulation_steps=1, warmup_epochs=1))
    # How every model is scored: the evaluation's own section (ds_size, judges, bootstrap, batches);
    # the demo sets its model, scenario, data, retain_eval and output_dir.
    evaluation: EvaluateConfig = field(default_factory=lambda: _demo_evaluation())
    # Train the offline NLI judge if no judge loads (a few CPU minutes, cached), in a background
    # process while the target and retain models fine-tune, and while the methods unlearn when they
    # run one at a time (faster on a small CPU; the evaluations wait for it).
    train_judge: bool = True
    judge_in_background: bool = True
    # Attack every unlearned model (relearning, quantisation, probes; `unlearnlm attack`) and
    # add the method x attack recovery table to the report.
    run_attacks: bool = True
    attack: AttackConfig = field(default_factory=_demo_attacks)
    # Unlearn every method once per seed (unlearn.seed is replaced); the table shows the mean over
    # the seeds, ± their standard deviation, with the pooled interval. Empty = one run, unlearn.seed.
    seeds: Optional[list[int]] = None
    # Methods unlearnt, evaluated and attacked side by side, each in a process of its own with an
    # equal share of the threads. 0: two on a CPU with at least two cores (on a small CPU two
    # one-thread jobs outrun one two-thread job), one on a GPU or a one-core CPU.
    method_workers: int = 0

    def validate(self) -> None:
        self.model.validate()
        _require(self.method_workers >= 0, f"method_workers must be 0 (automatic) or more, got {self.method_workers}")
        self.finetune_training.validate("finetune_training.")
        self.unlearn_training.validate("unlearn_training.")
        _require(bool(self.methods), "methods is empty")
        # "all" stands for every method the demo offers (scenarios.demo expands it).
        _methods_known([m for m in self.methods if m.strip().lower() != "all"], "methods")
        _require(self.authors >= 4, f"authors must be at least 4, got {self.authors}")
        _require(self.holdout_authors >= 1, f"holdout_authors must be at least 1, got {self.holdout_authors}")
        _require(self.questions_per_author >= 1,
                 f"questions_per_author must be at least 1, got {self.questions_per_author}")
        self.evaluation.validate(prefix="evaluation.", with_model=False)
        _overwritten(self.evaluation, _demo_evaluation(), {
            "model": "set the demo's model section", "scenario": "the demo is TOFU's scenario",
            "data": "the demo scores its own world", "retain_eval": "the demo's retain model is scored first",
            "output_dir": "each model's evaluation goes into its run folder"},
            "the demo sets it for every model", prefix="evaluation.")
        splits = {"forget_split": ("forget01", "forget05", "forget10"),
                  "retain_split": ("retain90", "retain50", "retain10")}
        for key, valid in splits.items():
            _require(getattr(self, key) in valid, f"unknown {key} '{getattr(self, key)}'; valid: {', '.join(valid)}")
        if self.run_attacks:
            self.attack.validate(prefix="attack.")

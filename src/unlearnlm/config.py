"""Typed run configuration: dataclasses, YAML presets, ``key=value`` overrides.

A config is a tree of dataclasses. It can be built from a preset shipped in
``unlearnlm/configs/`` (by name) or any YAML file, then overridden from the command line with
dotted keys (``training.lr=5e-6``, ``method=IDK+AP``). Every run writes its resolved config as
YAML next to its results, so ``unlearnlm unlearn --config that.yaml`` repeats it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

import yaml

from .errors import UserError

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class PromptFormatConfig:
    """How a QA pair becomes tokens (data.formatting). ``auto``: the format recorded in the model
    folder (finetune and unlearn write it), else the preset of a known hub target
    (locuslab/tofu_ft_llama2-7b, meta-llama/Meta-Llama-3-8B-Instruct), else the tokenizer's chat
    template, else ``Question: … / Answer:`` (question_answer)."""

    # auto | chat_template | question_answer | tags | a preset: tofu-llama2, llama3-instruct
    kind: str = "auto"
    # kind=tags only: text = question_start + question + question_end + answer_start + answer.
    question_start: Optional[str] = None
    question_end: Optional[str] = None
    answer_start: Optional[str] = None


@dataclass
class ModelConfig:
    # A hub name, a local folder, or an alias of an embedded model (see training.models).
    name_or_path: str = "smollm2-135m"
    trust_remote_code: bool = False
    # "auto" keeps the checkpoint's dtype on CPU and uses bf16 where the hardware has it.
    dtype: str = "auto"
    prompt_format: PromptFormatConfig = field(default_factory=PromptFormatConfig)


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 8
    alpha: int = 32
    dropout: float = 0.05
    # "all-linear" = every linear layer except the output head (peft's own shorthand).
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    merge_on_save: bool = True


@dataclass
class DataConfig:
    # Where named splits come from: a hub dataset name or a local folder of JSON/JSONL files.
    source: str = "locuslab/TOFU"
    # A split name of `source` (forget01, retain90, ...) or a path to a JSON/JSONL file.
    forget: str = "forget01"
    # Empty means: the retain split that goes with `forget` (docs/formulas.md#data).
    retain: Optional[str] = None
    # Which task(s) of the forget split to unlearn; empty means every row.
    task_id: list[str] = field(default_factory=lambda: ["1"])
    # Add to the retain set the forget rows of tasks after the last one unlearned (docs/formulas.md#scenarios).
    retain_includes_later_tasks: bool = True
    # A text file of refusal answers, one per line; empty means the list shipped with unlearnlm.
    refusals: Optional[str] = None
    # Longest tokenised question+answer; longer rows are cut (and counted in the log).
    max_length: int = 512
    # Pad every sequence to this many tokens (the reference pads to 500); empty = per batch only.
    pad_to: Optional[int] = None
    # qa: question-answer rows (TOFU's). text: plain-text corpora (MUSE, WMDP) trained on as causal-LM
    # chunks; forget and retain then name CONFIG/SPLIT of `source` (raw/forget) or a file, and
    # task_id must be empty. Only objectives that read forget and retain text work on text.
    format: str = "qa"
    # text: tokens per chunk, BOS included (MUSE trains on 2,048); and the key holding each row's text.
    chunk_length: int = 2048
    text_key: str = "text"


@dataclass
class TrainingConfig:
    lr: float = 1e-5
    epochs: float = 5.0
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    # Warm-up length in epochs (the reference: one epoch of steps).
    warmup_epochs: float = 1.0
    weight_decay: float = 0.01
    # AdamW as one fused kernel: the same update as adamw_torch's, much faster on a CPU
    # (docs/performance.md, "Measurements behind the defaults").
    optimizer: str = "adamw_torch_fused"
    lr_scheduler: str = "linear"
    seed: int = 1001
    # "auto": bf16 where the hardware supports it, fp32 otherwise.
    bf16: str = "auto"
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    # Forward forget, retain and refusal sequences of a step as one batch (same numbers). Off by
    # default: on a CPU it is slower (the kinds pad to a common length); see docs/performance.md.
    fuse_forward: bool = False
    # Less padding. Unlearning: a step's rows (a random set, as without it) are ordered by length
    # so its micro-batches pad little. Fine-tuning: rows of similar length share a step.
    group_by_length: bool = True
    # NPO/DPO: compute the frozen reference's per-sequence NLLs once before training, then free it.
    precompute_reference_nll: bool = True
    # Project onto the vocabulary only the positions a loss reads (the answers; every position for
    # KL and ME's unmasked questions): the same losses, less work. false = every position.
    answer_logits_only: bool = True
    progress: bool = True
    # Checkpoints let a killed run resume where it was (rerun the same command): one is kept, written
    # every `save_steps` optimiser steps (0 = never by count) and whenever `save_minutes` have
    # passed since the last one (0 = never by time). A checkpoint holds weights and optimiser
    # state (~12 bytes a parameter in full fine-tuning): by time, short runs pay nothing and a
    # long one loses at most half an hour to a kill.
    save_steps: int = 0
    save_minutes: float = 30.0
    # Stop when the forget loss crosses this bound (GA's collapse); empty = never.
    stop_forget_loss_below: Optional[float] = None
    stop_forget_loss_above: Optional[float] = None
    # Experiment tracking through transformers: "none", "all" (every installed backend), or
    # backends by name, comma-separated ("tensorboard", "wandb", "mlflow", ...). TensorBoard writes
    # into OUTPUT_DIR/tensorboard unless TENSORBOARD_LOGGING_DIR says otherwise.
    report_to: str = "none"


@dataclass
class JudgesConfig:
    # "auto": the reference model when it loads, else the offline fallback (see judges.loading);
    # "none": skip the metric; or a sentence-transformers / transformers model name or folder.
    embedder: str = "auto"
    # "offline" = only the offline judge of judges.offline.
    nli: str = "auto"
    embedder_batch_size: int = 64
    nli_batch_size: int = 32


@dataclass
class BootstrapConfig:
    # Resamples of every set's rows for the intervals (computed from the records, no model);
    # 0 = no intervals.
    samples: int = 1000
    seed: int = 0
    level: float = 0.95


@dataclass
class EvalDataConfig:
    # Empty means: the unlearning run's own (when evaluating during training, or a run folder),
    # else locuslab/TOFU, forget01 (real_world: forget) and task 1 (real_world: every task).
    source: Optional[str] = None
    forget: Optional[str] = None
    task_id: Optional[list[str]] = None
    # Your own QA files (JSON/JSONL: question, answer[, paraphrased_answer, perturbed_answer]):
    # forget-like sets (Forget Efficacy) and retain-like sets (Model Utility).
    custom_forget: list[str] = field(default_factory=list)
    custom_retain: list[str] = field(default_factory=list)
    # Rows no model ever trained on, for the membership-inference AUCs and privleak: TOFU's
    # holdout01 / holdout05 / holdout10 (a split of `source`), or a file or folder of QA rows.
    holdout: Optional[str] = None


@dataclass
class PrivacyConfig:
    # Keep the ground truth's per-token values in the loss pass (every privacy metric reads
    # them); false = the paper's metrics alone.
    keep_token_values: bool = True
    # Min-K% and Min-K%++ average the lowest share k of an answer's token scores.
    min_k: float = 0.4
    # The Reference MIA score (LOSS minus a reference model's LOSS of the same row) reads the
    # per-row losses of that model's evaluation of the same sets (its output folder); empty =
    # retain_eval's.
    reference_eval: Optional[str] = None
    # GradNorm MIA score: the p of the gradient norm (1, 2 or inf); one backward per forget and
    # holdout row. Empty = off.
    grad_norm_p: Optional[str] = None


@dataclass
class EvaluateConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    # tofu | real_world | custom (only data.custom_* files)
    scenario: str = "tofu"
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    # First N rows of each set (the reference: 300); 0 = all.
    ds_size: int = 300
    # Prompt + generated tokens, at most (the reference: 200).
    max_length: int = 200
    # A greedy batch runs as many steps as its longest answer: fewer, larger batches take fewer
    # steps (docs/performance.md, "Measurements behind the defaults").
    generation_batch_size: int = 64
    loss_batch_size: int = 16
    # Batches of similar length drawn from every set at once (less padding, fewer generation
    # steps). false = set by set, batches in set order, as the reference.
    group_by_length: bool = True
    # Pad every loss sequence to this many tokens (the reference: 500); empty = per batch only.
    pad_to: Optional[int] = None
    # Project onto the vocabulary only where answers are; false = every position (the reference).
    answer_logits_only: bool = True
    # Run a question's prompt once for all its answers (one row: prompt, then each answer behind
    # a mask that hides the others): the prompt is computed once (docs/performance.md). Same values up to
    # float rounding; false = one whole sequence per answer (always so with pad_to, or flash attention).
    share_prompts: bool = True
    judges: JudgesConfig = field(default_factory=JudgesConfig)
    # Forget Quality and privleak: a retain model's evaluation (its output folder or forget records file).
    retain_eval: Optional[str] = None
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    output_dir: str = "runs/eval"


@dataclass
class UnlearnConfig:
    method: str = "ME+GD"
    # Empty means the method's default (docs/formulas.md#objectives: 0.1 for ME+GD, else 1.0).
    forget_coeff: Optional[float] = None
    regularization_coeff: float = 1.0
    beta: float = 0.1
    # Empty means the method's default (false for ME+GD, true otherwise).
    mask: Optional[bool] = None
    # Reference model for NPO/DPO/KL: the model at the start of this run, or a fixed path.
    reference_model: Optional[str] = None
    # The method's own hyper-parameters (method_args.beta=4.5 for SimNPO; `unlearnlm methods`
    # lists each method's); a run writes every one, defaults included, into its config.yaml.
    method_args: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "runs/unlearn"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    # Evaluate at the start and at the end of every epoch (OUTPUT_DIR/eval/epoch_K, trajectories in
    # OUTPUT_DIR/eval/results.csv); `evaluation`'s model and output_dir are the run's own.
    eval_every_epoch: bool = False
    evaluation: EvaluateConfig = field(default_factory=EvaluateConfig)
    # One run per seed (training.seed), each in OUTPUT_DIR/seed_S; a seed already run is not redone.
    # Empty = one run, in OUTPUT_DIR itself, with training.seed.
    seeds: Optional[list[int]] = None


@dataclass
class FinetuneDataConfig:
    source: str = "locuslab/TOFU"
    # Splits of `source` or JSON/JSONL paths, concatenated. TOFU's full set (docs/formulas.md#data):
    # retain90 + every task of forget01.
    train: list[str] = field(default_factory=lambda: ["retain90", "forget01"])
    # Drop the rows of these tasks (e.g. ["1"] makes the retain model of forget01 task 1).
    exclude_task_id: list[str] = field(default_factory=list)
    max_length: int = 512


@dataclass
class FinetuneConfig:
    output_dir: str = "runs/finetune"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    training: TrainingConfig = field(
        default_factory=lambda: TrainingConfig(lr=1e-5, epochs=5.0, warmup_epochs=1.0)
    )
    lora: LoraConfig = field(default_factory=LoraConfig)


# ---- scenarios (docs/formulas.md#scenarios): continual, real-world, forget sets built from the model ----------


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
    # Longest privleak text scored, in tokens (BOS included); empty = every token.
    privleak_max_length: Optional[int] = None


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
    # Prompt + answer tokens, at most: the evaluation's budget (200), so that evaluating the
    # target regenerates exactly these answers.
    max_length: int = 200
    batch_size: int = 16


@dataclass
class RelearnAttackConfig:
    # What U is fine-tuned on: forget_half (a seeded random half of the forget set; the other
    # half alone is evaluated), retain (the run's retain set: benign fine-tuning), or a
    # JSON/JSONL file of question/answer rows.
    data: str = "forget_half"
    steps: int = 20
    lr: float = 1e-5
    # Batch as fine-tuning (FinetuneConfig's defaults).
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    seed: int = 1001
    # Keep the relearned weights (RUN/attacks/relearn/run/model) once evaluated; false deletes them.
    keep_model: bool = True


@dataclass
class QuantizeAttackConfig:
    # Round-to-nearest fake quantisation, one attack per width.
    bits: list[int] = field(default_factory=lambda: [8, 4])
    group_size: int = 128
    # bitsandbytes' own loading too (int8, nf4), where a GPU and the package are there.
    bitsandbytes: list[str] = field(default_factory=lambda: ["int8", "nf4"])


@dataclass
class ProbesAttackConfig:
    # A YAML file of probe templates; empty = the one shipped (evaluation/probes.yaml).
    templates: Optional[str] = None
    # Probes to run; empty = every probe of the file.
    names: list[str] = field(default_factory=list)
    # Seed of the multiple-choice order and of the reverse question's wrong names.
    seed: int = 0


ATTACKS = ("relearn", "quantize", "probes")
BNB_MODES = ("int8", "nf4")  # bitsandbytes' 8-bit (LLM.int8) and 4-bit NormalFloat loading


@dataclass
class AttackConfig:
    attacks: list[str] = field(default_factory=lambda: list(ATTACKS))
    relearn: RelearnAttackConfig = field(default_factory=RelearnAttackConfig)
    quantize: QuantizeAttackConfig = field(default_factory=QuantizeAttackConfig)
    probes: ProbesAttackConfig = field(default_factory=ProbesAttackConfig)
    progress: bool = True


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
    # Rows of each utility set scored (the forget and retain sets are smaller than this).
    ds_size: int = 20
    judges: JudgesConfig = field(default_factory=JudgesConfig)
    # Train the offline NLI judge if no judge loads (a few CPU minutes, cached), in a background
    # process while the target and retain models fine-tune and the methods unlearn (faster on a
    # small CPU; the evaluations wait for it).
    train_judge: bool = True
    judge_in_background: bool = True
    # Attack every unlearned model (relearning, quantisation, probes; `unlearnlm attack`) and
    # add the method x attack recovery table to the report.
    run_attacks: bool = True
    attack: AttackConfig = field(default_factory=_demo_attacks)
    # Unlearn every method once per seed (unlearn.seed is replaced); the table shows the mean over
    # the seeds, ± their standard deviation, with the pooled interval. Empty = one run, unlearn.seed.
    seeds: Optional[list[int]] = None


C = TypeVar("C")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Turn a YAML value or a command-line string into the field's declared type."""
    tp, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        if optional:
            return None
        raise UserError(f"config key '{key}' may not be empty")
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise UserError(f"config key '{key}' wants true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UserError(f"config key '{key}' wants an integer, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"config key '{key}' wants an integer, got {value!r}") from None
        if not number.is_integer():
            raise UserError(f"config key '{key}' wants an integer, got {value!r}")
        return int(number)
    if tp is float:
        if isinstance(value, bool):
            raise UserError(f"config key '{key}' wants a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"config key '{key}' wants a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"config key '{key}' wants text, got {value!r}")
        if not optional and not str(value).strip():
            raise UserError(f"config key '{key}' may not be empty")
        return str(value)
    if typing.get_origin(tp) is dict:  # free-form settings, typed later by their owner
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' holds settings: write {key}.NAME=value, got {value!r}")
        return copy.deepcopy(value)
    if typing.get_origin(tp) is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):  # "a,b" or "[a, b]" on the command line
            text = value.strip()
            text = text[1:-1] if text.startswith("[") and text.endswith("]") else text
            value = [v for v in (s.strip() for s in text.split(",")) if v]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, item_tp, key) for v in value]
    raise TypeError(f"unsupported config field type {tp!r} for {key}")


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build dataclass ``cls`` from nested dicts, rejecting unknown keys by name."""
    if not isinstance(data, dict):
        raise UserError(f"config section '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys here: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            # A section given in part keeps the rest of its parent's default for it (e.g. the
            # continual scenario's forget_coeff 1.0), not just the section class's defaults.
            factory = fields[name].default_factory
            base = to_dict(factory()) if factory is not dataclasses.MISSING else {}
            section = _deep_merge(base, value) if isinstance(value, dict) else (value or base)
            kwargs[name] = from_dict(tp, section, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain data, each value in its declared type (``epochs=5`` in code and
    ``epochs=5`` on the command line both give 5.0), so equal configs compare and hash equal."""
    data = {}
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif _unwrap_optional(hints[f.name])[0] is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        else:
            value = copy.deepcopy(value)
        data[f.name] = value
    return data


def flatten_keys(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"training": {"lr": 1}} -> {"training.lr": 1}: the dotted keys of the command line."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read config file {path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config file {path}{where} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_preset(name_or_path: str) -> dict[str, Any]:
    """A preset shipped with unlearnlm (by name) or a YAML file (by path)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return read_yaml(path)
    shipped = PRESET_DIR / f"{name_or_path}.yaml"
    if shipped.exists():
        return read_yaml(shipped)
    raise UserError(f"no config preset or file '{name_or_path}'; presets: {', '.join(preset_names())}")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["training.lr=5e-6", "method=IDK+AP"]`` -> nested dict of strings."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"override '{item}' is not of the form key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise UserError(f"override '{item}' has an empty key")
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            existing = node.setdefault(part, {})
            if not isinstance(existing, dict):
                raise UserError(f"override '{item}' conflicts with an earlier override of '{part}'")
            node = existing
        node[parts[-1]] = value
    return tree


def load_config(cls: type[C], preset: Optional[str] = None, overrides: Optional[list[str]] = None) -> C:
    """Defaults of ``cls`` <- preset or YAML file <- command-line overrides."""
    data: dict[str, Any] = {}
    if preset:
        data = resolve_preset(preset)
    if overrides:
        data = _deep_merge(data, parse_overrides(overrides))
    config = from_dict(cls, data)
    validate_config(config)
    return config


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def _finite(value: Optional[float]) -> bool:
    return value is None or math.isfinite(value)


def validate_training(t: TrainingConfig, prefix: str = "training.") -> None:
    """Ranges and names of the training options, checked before any model is loaded."""
    _require(math.isfinite(t.lr) and t.lr > 0, f"{prefix}lr must be a positive number, got {t.lr}")
    _require(math.isfinite(t.epochs) and t.epochs > 0, f"{prefix}epochs must be a positive number, got {t.epochs}")
    _require(t.per_device_batch_size >= 1,
             f"{prefix}per_device_batch_size must be at least 1, got {t.per_device_batch_size}")
    _require(t.gradient_accumulation_steps >= 1,
             f"{prefix}gradient_accumulation_steps must be at least 1, got {t.gradient_accumulation_steps}")
    _require(math.isfinite(t.warmup_epochs) and t.warmup_epochs >= 0,
             f"{prefix}warmup_epochs must be zero or more, got {t.warmup_epochs}")
    _require(math.isfinite(t.weight_decay) and t.weight_decay >= 0,
             f"{prefix}weight_decay must be zero or more, got {t.weight_decay}")
    _require(t.logging_steps >= 1, f"{prefix}logging_steps must be at least 1, got {t.logging_steps}")
    _require(t.save_steps >= 0, f"{prefix}save_steps must be zero or more, got {t.save_steps}")
    _require(math.isfinite(t.save_minutes) and t.save_minutes >= 0,
             f"{prefix}save_minutes must be zero or more, got {t.save_minutes}")
    _require(str(t.bf16).lower() in ("auto", "true", "false", "1", "0", "yes", "no"),
             f"{prefix}bf16 must be auto, true or false, got '{t.bf16}'")
    for name in ("stop_forget_loss_below", "stop_forget_loss_above"):
        _require(_finite(getattr(t, name)), f"{prefix}{name} must be a finite number, got {getattr(t, name)}")
    if t.stop_forget_loss_below is not None and t.stop_forget_loss_above is not None:
        _require(t.stop_forget_loss_below < t.stop_forget_loss_above,
                 f"{prefix}stop_forget_loss_below must be less than {prefix}stop_forget_loss_above")
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    optimizers = [o.value for o in OptimizerNames]
    _require(t.optimizer in optimizers, f"unknown {prefix}optimizer '{t.optimizer}'; valid: {', '.join(optimizers)}")
    _require(not _needs_missing_bitsandbytes(t.optimizer),
             f"{prefix}optimizer '{t.optimizer}' needs the bitsandbytes package (pip install bitsandbytes); "
             "adamw_torch needs nothing extra")
    validate_report_to(t.report_to)
    schedulers = [s.value for s in SchedulerType]
    _require(t.lr_scheduler in schedulers,
             f"unknown {prefix}lr_scheduler '{t.lr_scheduler}'; valid: {', '.join(schedulers)}")


def report_backends(report_to: str) -> list[str]:
    """``training.report_to`` as transformers' list of backends ("all" stays "all")."""
    names = [name.strip().lower() for name in str(report_to).split(",") if name.strip()]
    return [] if names in ([], ["none"]) else names


def validate_report_to(report_to: str) -> None:
    """Known backends that are installed; a missing one fails now, not at the first logged step."""
    names = report_backends(report_to)
    if names == ["all"] or not names:
        return
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    for name in names:
        _require(name in INTEGRATION_TO_CALLBACK,
                 f"unknown training.report_to '{name}'; valid: none, all, {', '.join(INTEGRATION_TO_CALLBACK)}")
        _require(name in get_available_reporting_integrations(),
                 f"training.report_to '{name}' needs its package, which is not installed (pip install {name})")


def _needs_missing_bitsandbytes(optimizer: str) -> bool:
    """The reference's paged_adamw_32bit and its kin fail only once training starts otherwise."""
    try:
        from transformers.trainer_optimizer import _BITSANDBYTES_OPTIMIZERS
        from transformers.utils import is_bitsandbytes_available
    except ImportError:  # a private list: if it moves, the Trainer reports it later instead
        return False
    return optimizer in {o.value for o in _BITSANDBYTES_OPTIMIZERS} and not is_bitsandbytes_available()


def validate_prompt_format(p: PromptFormatConfig, prefix: str = "model.prompt_format.") -> None:
    from .data.formatting import validate_format_setting

    validate_format_setting(p.kind, dataclasses.asdict(p), prefix)


def without_default_sections(identity: dict, config: Any) -> dict:
    """``identity`` (a ``to_dict``) minus the model's prompt format when it has its default, so
    hashes and saved configs made before the setting existed still match."""
    model = getattr(config, "model", None)
    if isinstance(model, ModelConfig) and model.prompt_format == PromptFormatConfig():
        identity = copy.deepcopy(identity)
        identity.get("model", {}).pop("prompt_format", None)
    return identity


def differing_keys(previous: dict, config: Any, ignore: Callable[[str], bool] = lambda key: False) -> list[str]:
    """Dotted keys whose value in a saved config differs from ``config``'s; a key the saved one
    lacks (a setting added since) counts only when ``config`` gives it a value other than its default."""
    before, now = flatten_keys(previous), flatten_keys(to_dict(config))
    defaults = flatten_keys(to_dict(type(config)())) if dataclasses.is_dataclass(config) else {}
    differing = []
    for key in sorted(set(before) | set(now)):
        if ignore(key) or before.get(key) == now.get(key):
            continue
        if key not in before and key in defaults and defaults[key] == now.get(key):
            continue
        differing.append(key)
    return differing


MODEL_DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


def _overwritten(config: Any, default: Any, keys: dict[str, str], what: str, prefix: str = "") -> None:
    """Settings a command sets itself: a value other than the default would be ignored, so it is refused."""
    mine, theirs = flatten_keys(to_dict(config)), flatten_keys(to_dict(default))
    for key, instead in keys.items():
        given = sorted(k for k in mine if (k == key or k.startswith(key + ".")) and mine[k] != theirs.get(k))
        if given:
            raise UserError(f"{prefix}{given[0]}={mine[given[0]]!r} cannot be honoured: {what}; {instead}")


def validate_config(config: Any) -> None:
    """Everything about a config that can be wrong without looking at files or models."""
    if isinstance(getattr(config, "model", None), ModelConfig):
        _require(bool(config.model.name_or_path.strip()), "model.name_or_path is empty")
        _require(config.model.dtype in MODEL_DTYPES,
                 f"unknown model.dtype '{config.model.dtype}'; valid: {', '.join(MODEL_DTYPES)}")
        validate_prompt_format(config.model.prompt_format)
    for item in dataclasses.fields(config):  # every training recipe of the config (demo: finetune, unlearn)
        if isinstance(getattr(config, item.name), TrainingConfig):
            validate_training(getattr(config, item.name), prefix=item.name + ".")
        if isinstance(getattr(config, item.name), JudgesConfig):
            _within(item.name, validate_judges, getattr(config, item.name))
    if hasattr(config, "lora") and config.lora.enabled:  # lora options without LoRA are ignored
        lora = config.lora
        _require(lora.r >= 1, f"lora.r must be at least 1, got {lora.r}")
        _require(lora.alpha > 0, f"lora.alpha must be positive, got {lora.alpha}")
        _require(0 <= lora.dropout < 1, f"lora.dropout must be in [0, 1), got {lora.dropout}")
        _require(bool(lora.target_modules), "lora.target_modules is empty")
    if hasattr(getattr(config, "data", None), "max_length"):
        _require(config.data.max_length >= 1, f"data.max_length must be at least 1, got {config.data.max_length}")
        pad_to = getattr(config.data, "pad_to", None)
        _require(pad_to is None or pad_to >= 1, f"data.pad_to must be at least 1, got {pad_to}")
    if hasattr(config, "output_dir"):
        from .io import check_output_path

        _require(bool(str(config.output_dir).strip()), "output_dir is empty")
        check_output_path(config.output_dir)
    if isinstance(config, UnlearnConfig):
        from .methods.registry import get_method

        get_method(config.method)  # an unknown method lists the valid ones
        method_settings(config)
        _require(math.isfinite(config.beta) and config.beta > 0, f"beta must be a positive number, got {config.beta}")
        _require(_finite(config.forget_coeff), f"forget_coeff must be a finite number, got {config.forget_coeff}")
        _require(math.isfinite(config.regularization_coeff),
                 f"regularization_coeff must be a finite number, got {config.regularization_coeff}")
        validate_evaluation(config.evaluation, prefix="evaluation.")
        # The run's evaluations score the run's own model into the run's folder.
        _overwritten(config.evaluation, EvaluateConfig(), {
            "model.name_or_path": "set model.name_or_path", "model.dtype": "set model.dtype",
            "model.trust_remote_code": "set model.trust_remote_code", "model.prompt_format": "set model.prompt_format",
            "output_dir": "per-epoch evaluations go into OUTPUT_DIR/eval"},
            "the run's evaluations score the run's own model (its model section) into its own folder",
            prefix="evaluation.")
        validate_data_format(config)
        if config.seeds:
            _require(len(set(config.seeds)) == len(config.seeds), f"seeds lists a seed twice: {config.seeds}")
    if isinstance(config, (MuseConfig, WmdpConfig)):
        _within("unlearn", validate_config, config.unlearn)
        _require(config.unlearn.data.format == "text",
                 f"unlearn.data.format must be text here (the corpora are plain text), "
                 f"got '{config.unlearn.data.format}'")
    if isinstance(config, MuseConfig):
        validate_muse_evaluation(config.evaluation)
    if isinstance(config, EvaluateConfig):
        validate_evaluation(config)
    if isinstance(config, ContinualConfig):
        _within("unlearn", validate_config, config.unlearn)
        validate_continual(config)
    elif isinstance(config, RealWorldConfig):
        _within("unlearn", validate_config, config.unlearn)
        validate_real_world(config)
    elif isinstance(config, BuildForgetSetConfig):
        _require(config.max_length >= 2, f"max_length must be at least 2, got {config.max_length}")
        _require(config.batch_size >= 1, f"batch_size must be at least 1, got {config.batch_size}")
        bad = [t for t in config.templates if "{name}" not in t]
        _require(not bad, f"templates: '{bad[0] if bad else ''}' has no {{name}} slot")
    elif isinstance(config, DemoConfig):
        validate_demo(config)
    if isinstance(config, AttackConfig):
        validate_attacks(config)
    if isinstance(config, DemoConfig) and config.run_attacks:
        validate_attacks(config.attack, prefix="attack.")
    validate_own = getattr(config, "validate", None)  # configs defined beside their command (train-judge)
    if callable(validate_own):
        validate_own()


def _within(prefix: str, check: Callable[[Any], None], section: Any) -> None:
    """Run ``check`` on a nested section; its error names the section."""
    import re

    try:
        check(section)
    except UserError as err:
        message = str(err)
        # "training.lr must ..." -> "unlearn.training.lr must ...": the key as the user writes it.
        key = re.match(r"(unknown )?([a-z_]+(?:\.[a-z_]+)*)(?= must|=| is | cannot|\b)", message)
        if prefix and key and ("." in key.group(2) or "_" in key.group(2) or
                               message[key.end(2):].startswith((" must", "="))):
            raise UserError(message[: key.start(2)] + prefix + "." + message[key.start(2):]) from None
        raise UserError(f"{prefix}: {message}" if prefix else message) from None


def validate_judges(j: JudgesConfig) -> None:
    for name in ("embedder_batch_size", "nli_batch_size"):
        _require(getattr(j, name) >= 1, f"judges.{name} must be at least 1, got {getattr(j, name)}")
    for name in ("embedder", "nli"):
        _require(bool(str(getattr(j, name)).strip()), f"judges.{name} is empty; use auto, none or a model")


def _methods_known(methods: list[str], key: str) -> None:
    from .methods.registry import get_method

    for method in methods:
        try:
            get_method(method)
        except UserError as err:
            raise UserError(f"{key}: {err}") from None
    _require(len(set(methods)) == len(methods), f"{key} lists a method twice: {', '.join(methods)}")


def validate_continual(config: ContinualConfig) -> None:
    _methods_known(config.methods, "methods")
    _require(all(str(t).strip() for t in config.tasks), "tasks holds an empty task id")
    _overwritten(config.unlearn, _continual_unlearn_defaults(), {
        "data.task_id": "list the tasks to unlearn in turn in tasks=...",
        "reference_model": "the reference is the previous task's model, or the target with fix_ref_model=true",
        "output_dir": "set output_dir (each task's run goes into OUTPUT_DIR/METHOD/task_K)",
        "data.retain_includes_later_tasks": "the continual retain set always holds the later tasks' rows",
    }, "the continual scenario sets it for every task", prefix="unlearn.")
    if config.methods:
        _overwritten(config.unlearn, _continual_unlearn_defaults(), {
            "method": "list every method in methods=..."}, "methods=... names the methods run", prefix="unlearn.")
    if config.evaluate:
        _overwritten(config.unlearn.evaluation, EvaluateConfig(), {
            "output_dir": "evaluations go into each task's folder"}, "the continual scenario sets it",
            prefix="unlearn.evaluation.")


def validate_real_world(config: RealWorldConfig) -> None:
    _overwritten(config.unlearn, _real_world_unlearn_defaults(), {
        "data.task_id": "the real-world scenario unlearns every person of the forget set at once "
                        "(make a forget file with the people you want)",
        "data.retain_includes_later_tasks": "the retain set is the neighbour set",
        "output_dir": "set output_dir (the run goes into OUTPUT_DIR/METHOD)",
    }, "the real-world scenario sets it", prefix="unlearn.")
    _overwritten(config.unlearn.evaluation, EvaluateConfig(), {
        "output_dir": "evaluations go into OUTPUT_DIR/target/eval and OUTPUT_DIR/METHOD/eval",
    }, "the real-world scenario sets it", prefix="unlearn.evaluation.")
    scenario = config.unlearn.evaluation.scenario
    _require(scenario in ("tofu", "real_world"),  # "tofu" is the section's default: replaced by real_world
             f"unlearn.evaluation.scenario={scenario!r} cannot be honoured: the real-world scenario evaluates "
             "with scenario real_world")
    d = config.downstream
    if d.enabled:
        _require(bool(d.tasks), "downstream.tasks is empty; set downstream.enabled=false to skip lm-eval")
        _require(d.limit is None or (math.isfinite(d.limit) and d.limit > 0),
                 f"downstream.limit must be positive (a count, or a share when < 1), got {d.limit}")
        _require(d.num_fewshot is None or d.num_fewshot >= 0,
                 f"downstream.num_fewshot must be zero or more, got {d.num_fewshot}")
        _require(d.batch_size >= 1, f"downstream.batch_size must be at least 1, got {d.batch_size}")


def validate_demo(config: DemoConfig) -> None:
    _require(bool(config.methods), "methods is empty")
    # "all" stands for every method the demo offers (scenarios.demo expands it).
    _methods_known([m for m in config.methods if m.strip().lower() != "all"], "methods")
    _require(config.authors >= 4, f"authors must be at least 4, got {config.authors}")
    _require(config.questions_per_author >= 1,
             f"questions_per_author must be at least 1, got {config.questions_per_author}")
    _require(config.ds_size >= 0, f"ds_size must be zero (all rows) or more, got {config.ds_size}")
    splits = {"forget_split": ("forget01", "forget05", "forget10"),
              "retain_split": ("retain90", "retain50", "retain10")}
    for key, valid in splits.items():
        _require(getattr(config, key) in valid, f"unknown {key} '{getattr(config, key)}'; valid: {', '.join(valid)}")


DATA_FORMATS = ("qa", "text")


def validate_data_format(config: UnlearnConfig) -> None:
    """Text mode gives forget and retain chunks only: a method reading questions or refusals is refused."""
    data = config.data
    _require(data.format in DATA_FORMATS, f"unknown data.format '{data.format}'; valid: {', '.join(DATA_FORMATS)}")
    if data.format != "text":
        return
    from .data.batches import TEXT_KINDS
    from .methods.registry import get_method

    method = get_method(config.method)
    missing = [kind for kind in method.inputs if kind not in TEXT_KINDS]
    _require(not missing, f"method {method.name} reads {', '.join(missing)} sequences (questions or refusals), which "
                          "plain text has not; on data.format=text use one that reads forget and retain text only "
                          "(e.g. GA, NPO, GA+GD, NPO+KL)")
    _require(data.chunk_length >= 2, f"data.chunk_length must be at least 2, got {data.chunk_length}")
    _require(bool(data.text_key.strip()), "data.text_key is empty")
    _require(not data.task_id,
             "data.task_id selects QA tasks and text has none: set data.task_id=[] with data.format=text")
    _require(not (method.needs_retain and not data.retain),
             f"method {method.name} needs a retain text set: set data.retain (e.g. raw/retain1)")
    _require(not config.eval_every_epoch, "eval_every_epoch scores QA sets; it does not run with data.format=text")


def validate_muse_evaluation(e: MuseEvalConfig) -> None:
    unknown = [m for m in e.metrics if m not in MUSE_METRICS]
    _require(not unknown,
             f"unknown evaluation.metrics '{unknown[0] if unknown else ''}'; valid: {', '.join(MUSE_METRICS)}")
    _require(bool(e.metrics), "evaluation.metrics is empty")
    _require(e.corpus in ("news", "books"), f"unknown evaluation.corpus '{e.corpus}'; valid: news, books")
    for name in ("verbmem_max_new_tokens", "knowmem_max_new_tokens", "generation_batch_size", "loss_batch_size"):
        _require(getattr(e, name) >= 1, f"evaluation.{name} must be at least 1, got {getattr(e, name)}")
    _require(math.isfinite(e.min_k) and 0 < e.min_k <= 1, f"evaluation.min_k must be in (0, 1], got {e.min_k}")
    _require(e.ds_size >= 0, f"evaluation.ds_size must be zero (all rows) or more, got {e.ds_size}")
    _require(e.privleak_max_length is None or e.privleak_max_length >= 2,
             f"evaluation.privleak_max_length must be at least 2, got {e.privleak_max_length}")


def validate_attacks(a: AttackConfig, prefix: str = "") -> None:
    """The attack settings, checked before any model or data is touched."""
    _require(bool(a.attacks), f"{prefix}attacks is empty; valid: {', '.join(ATTACKS)}")
    for name in a.attacks:
        _require(name in ATTACKS, f"unknown attack '{name}'; valid: {', '.join(ATTACKS)}")
    _require(len(set(a.attacks)) == len(a.attacks), f"{prefix}attacks names an attack twice: {','.join(a.attacks)}")
    r = a.relearn
    _require(r.steps >= 1, f"{prefix}relearn.steps must be at least 1, got {r.steps}")
    _require(math.isfinite(r.lr) and r.lr > 0, f"{prefix}relearn.lr must be a positive number, got {r.lr}")
    _require(r.per_device_batch_size >= 1,
             f"{prefix}relearn.per_device_batch_size must be at least 1, got {r.per_device_batch_size}")
    _require(r.gradient_accumulation_steps >= 1,
             f"{prefix}relearn.gradient_accumulation_steps must be at least 1, got {r.gradient_accumulation_steps}")
    _require(bool(r.data.strip()), f"{prefix}relearn.data is empty; use forget_half, retain or a file")
    if r.data not in ("forget_half", "retain") and "relearn" in a.attacks:
        _require(Path(r.data).expanduser().is_file(),
                 f"{prefix}relearn.data '{r.data}' is neither forget_half, retain nor an existing file")
    q = a.quantize
    _require(bool(q.bits) or bool(q.bitsandbytes), f"{prefix}quantize.bits and quantize.bitsandbytes are both empty")
    for bits in q.bits:
        _require(2 <= bits <= 16, f"{prefix}quantize.bits must be between 2 and 16, got {bits}")
    _require(len(set(q.bits)) == len(q.bits), f"{prefix}quantize.bits names a width twice")
    _require(q.group_size >= 1, f"{prefix}quantize.group_size must be at least 1, got {q.group_size}")
    for mode in q.bitsandbytes:
        _require(mode in BNB_MODES,
                 f"unknown {prefix}quantize.bitsandbytes mode '{mode}'; valid: {', '.join(BNB_MODES)}")
    if a.probes.templates:
        _require(Path(a.probes.templates).expanduser().is_file(),
                 f"{prefix}probes.templates: no file {a.probes.templates}")


def method_settings(config: UnlearnConfig):
    """``config.method_args`` as the method's typed settings dataclass, defaults filled in;
    a name the method lacks or a bad value is one line naming the method's settings."""
    from .methods.registry import get_method

    method = get_method(config.method)
    cls = method.settings
    names = [f.name for f in dataclasses.fields(cls)]
    valid = (f"its settings: {', '.join(f'{n} (default {getattr(cls(), n)!r})' for n in names)}"
             if names else "it has no settings")
    unknown = sorted(set(config.method_args) - set(names))
    _require(not unknown, f"method {method.name} has no setting '{unknown[0] if unknown else ''}'; {valid}")
    try:
        settings = from_dict(cls, config.method_args, prefix="method_args.")
    except UserError as err:
        raise UserError(f"{err} (method {method.name}; {valid})") from None
    problems = method.settings_problems(settings)
    _require(not problems, f"method {method.name}: {'; '.join(problems)}; {valid}")
    # The top-level beta is NPO's, DPO's, AP's and AltPO's; a method with a beta of its own would ignore it.
    _require(config.beta == UnlearnConfig.beta or "beta" not in names,
             f"method {method.name} takes its beta as method_args.beta (default {getattr(cls(), 'beta', None)}); "
             "the top-level beta is that of NPO, DPO, AP and AltPO")
    return settings


def with_method_settings(config: UnlearnConfig) -> UnlearnConfig:
    """The config with every setting of its method written out (what a run saves)."""
    return dataclasses.replace(config, method_args=to_dict(method_settings(config)))


def validate_evaluation(e: EvaluateConfig, prefix: str = "") -> None:
    _require(e.scenario in ("tofu", "real_world", "custom"),
             f"unknown {prefix}scenario '{e.scenario}'; valid: tofu, real_world, custom")
    _require(e.ds_size >= 0, f"{prefix}ds_size must be zero (all rows) or more, got {e.ds_size}")
    _require(e.max_length >= 2, f"{prefix}max_length must be at least 2, got {e.max_length}")
    for name in ("generation_batch_size", "loss_batch_size"):
        _require(getattr(e, name) >= 1, f"{prefix}{name} must be at least 1, got {getattr(e, name)}")
    _require(e.pad_to is None or e.pad_to >= 1, f"{prefix}pad_to must be at least 1, got {e.pad_to}")
    _require(e.bootstrap.samples >= 0,
             f"{prefix}bootstrap.samples must be zero (no intervals) or more, got {e.bootstrap.samples}")
    _require(0 < e.bootstrap.level < 1, f"{prefix}bootstrap.level must be between 0 and 1, got {e.bootstrap.level}")
    for name in ("embedder_batch_size", "nli_batch_size"):
        value = getattr(e.judges, name)
        _require(value >= 1, f"{prefix}judges.{name} must be at least 1, got {value}")
    _require(0 < e.privacy.min_k <= 1, f"{prefix}privacy.min_k must be in (0, 1], got {e.privacy.min_k}")
    _require(e.privacy.grad_norm_p in (None, "1", "2", "inf"),
             f"{prefix}privacy.grad_norm_p must be 1, 2 or inf, got {e.privacy.grad_norm_p}")
    _require(e.data.holdout is None or e.data.holdout.strip() != "", f"{prefix}data.holdout may not be blank")


def save_config(config: Any, path: str | Path) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))


# Options that change how a run goes, not what it computes: a rerun may change them and continue.
# The bootstrap settings change only the intervals, which are computed again from the records.
OPERATIONAL_KEYS = ("training.progress", "training.save_steps", "training.save_minutes", "training.report_to",
                    "bootstrap.samples", "bootstrap.seed", "bootstrap.level")


def _operational(key: str) -> bool:
    """Also a scenario's per-task run's (continual: unlearn.training.progress)."""
    return any(key == k or key.endswith("." + k) for k in OPERATIONAL_KEYS)


def config_differences(folder: str | Path, config: Any) -> Optional[list[str]]:
    """The dotted keys in which ``folder/config.yaml`` differs from ``config`` (operational
    options aside); None when the folder holds no config.yaml. An unreadable one is a user error."""
    folder = Path(folder)
    saved = folder / "config.yaml"
    if not saved.exists():
        return None
    try:
        previous = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        previous = None
    if not isinstance(previous, dict):
        raise UserError(f"{saved} is unreadable; delete {folder} or choose another output_dir")
    return differing_keys(previous, config, ignore=_operational)


def check_run_folder(output_dir: str | Path, config: Any, what: str = "run") -> bool:
    """Whether ``output_dir`` already belongs to ``config`` (its config.yaml is this config's):
    a rerun with the same config continues there; one with another config is a user error."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"output_dir {output_dir} is a file, not a folder")
    differing = config_differences(output_dir, config)
    if differing:
        article = "an" if what[:1] in "aeiou" else "a"
        raise UserError(
            f"{output_dir} holds {article} {what} with another config (differs in: {', '.join(differing)}); "
            "choose another output_dir or delete that folder"
        )
    return differing is not None

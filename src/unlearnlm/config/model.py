"""The model and data sections (model, model.prompt_format, lora, data): declared, defaulted and
checked here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from .checks import _require

MODEL_DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
DATA_FORMATS = ("qa", "text")


@dataclass
class PromptFormatConfig:
    """How a QA pair becomes tokens (data.formatting). ``auto``: the format recorded in the model
    folder (finetune and unlearn write it), else the preset of a known hub target
    (locuslab/tofu_ft_llama2-7b, meta-llama/Meta-Llama-3-8B-Instruct), else the tokenizer's chat
    template, else ``Question: … / Answer:`` (question_answer)."""

    # auto | chat_template | question_answer | tags | open_unlearning | a preset: tofu-llama2,
    # llama3-instruct, open-unlearning-llama3, open-unlearning
    kind: str = "auto"
    # kind=tags only: text = question_start + question + question_end + answer_start + answer.
    question_start: Optional[str] = None
    question_end: Optional[str] = None
    answer_start: Optional[str] = None


    def validate(self, prefix: str = "model.prompt_format.") -> None:
        from ..data.formatting import validate_format_setting

        validate_format_setting(self.kind, dataclasses.asdict(self), prefix)


def validate_prompt_format(p: PromptFormatConfig, prefix: str = "model.prompt_format.") -> None:
    """For callers that hold a prompt format alone (the API's tokenizer helper)."""
    p.validate(prefix)


@dataclass
class ModelConfig:
    # A hub name, a local folder, or an alias of an embedded model (see training.models).
    name_or_path: str = "smollm2-135m"
    trust_remote_code: bool = False
    # "auto" keeps the checkpoint's dtype on CPU and uses bf16 where the hardware has it.
    dtype: str = "auto"
    prompt_format: PromptFormatConfig = field(default_factory=PromptFormatConfig)

    def validate(self, prefix: str = "model.") -> None:
        _require(bool(self.name_or_path.strip()), f"{prefix}name_or_path is empty")
        _require(self.dtype in MODEL_DTYPES,
                 f"unknown {prefix}dtype '{self.dtype}'; valid: {', '.join(MODEL_DTYPES)}")
        self.prompt_format.validate(f"{prefix}prompt_format.")


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 8
    alpha: int = 32
    dropout: float = 0.05
    # "all-linear" = every linear layer except the output head (peft's own shorthand).
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    merge_on_save: bool = True

    def validate(self, prefix: str = "lora.") -> None:
        if not self.enabled:  # lora options without LoRA are ignored
            return
        _require(self.r >= 1, f"{prefix}r must be at least 1, got {self.r}")
        _require(self.alpha > 0, f"{prefix}alpha must be positive, got {self.alpha}")
        _require(0 <= self.dropout < 1, f"{prefix}dropout must be in [0, 1), got {self.dropout}")
        _require(bool(self.target_modules), f"{prefix}target_modules is empty")


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

    def validate(self, prefix: str = "data.") -> None:
        """This section's own fields; whether the method reads what text gives is the run's check
        (UnlearnConfig.validate)."""
        _require(self.max_length >= 1, f"{prefix}max_length must be at least 1, got {self.max_length}")
        _require(self.pad_to is None or self.pad_to >= 1, f"{prefix}pad_to must be at least 1, got {self.pad_to}")
        _require(self.format in DATA_FORMATS,
                 f"unknown {prefix}format '{self.format}'; valid: {', '.join(DATA_FORMATS)}")
        if self.format == "text":
            _require(self.chunk_length >= 2, f"{prefix}chunk_length must be at least 2, got {self.chunk_length}")
            _require(bool(self.text_key.strip()), f"{prefix}text_key is empty")

"""Turning a question–answer pair into token ids, in the format a model was trained on
(docs/formulas.md#prompt-formats).

Three kinds of format:

- ``chat_template``: the tokenizer's chat template with a generation prompt, then the answer;
  prompt and answer are tokenised separately and concatenated, so the boundary used for label
  masking is exactly the prompt a model sees at generation time.
- ``question_answer``: the rule for a tokenizer without a template, ``Question: …\\nAnswer:``
  (tokenised with the tokenizer's special tokens) then ``" " + answer``, tokenised separately.
- ``tags``: the fine-tuning rule of TOFU and of "A Closer Look at Machine Unlearning for LLMs":
  ``question_start + question + question_end + answer_start + answer`` tokenised as one text
  with the tokenizer's special tokens (a BOS for Llama); the prompt length is the number of
  tokens of ``question_start + question + question_end`` tokenised on its own with special
  tokens. Named presets give the tags of the paper's model families exactly.

Every kind ends the answer with the EOS token. The format a model was trained on is written
beside its weights (``prompt_format.json``) so that unlearning and evaluation use it again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import UserError

logger = logging.getLogger(__name__)

QUESTION_TAG = "Question: "
ANSWER_TAG = "\nAnswer:"

FORMAT_FILE = "prompt_format.json"
KINDS = ("chat_template", "tags", "question_answer")


@dataclass(frozen=True)
class FormatSpec:
    """A prompt format, as recorded with a model."""

    kind: str
    question_start: str = ""
    question_end: str = ""
    answer_start: str = ""
    # The preset the tags came from (informational).
    preset: Optional[str] = None

    def to_json(self) -> dict:
        data = asdict(self)
        if self.kind != "tags":
            data = {"kind": self.kind}
        elif self.preset is None:
            data.pop("preset")
        return data


# The reference's tags per model family: TOFU's Llama-2 target was fine-tuned on
# "[INST] " + question + " [/INST]" + answer; the Llama-3 instruction model is prompted with its
# chat header tokens (the BOS comes from the tokenizer). Answer tags are empty in both.
PRESETS = {
    "tofu-llama2": FormatSpec("tags", "[INST] ", " [/INST]", "", preset="tofu-llama2"),
    "llama3-instruct": FormatSpec(
        "tags",
        "<|start_header_id|>user<|end_header_id|>\n\n",
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "",
        preset="llama3-instruct",
    ),
}
# Hub names of the paper's targets (compared in lower case, as the hub resolves them).
HUB_PRESETS = {
    "locuslab/tofu_ft_llama2-7b": "tofu-llama2",
    "meta-llama/meta-llama-3-8b-instruct": "llama3-instruct",
}
TAG_KEYS = ("question_start", "question_end", "answer_start")


def validate_format_setting(kind: str, tags: dict, prefix: str = "model.prompt_format.") -> None:
    """A format setting a user wrote: a known kind or preset, tags only with kind=tags."""
    valid = ("auto", *KINDS, *PRESETS)
    if kind not in valid:
        raise UserError(f"unknown {prefix}kind '{kind}'; valid: {', '.join(valid)}")
    given = [k for k in TAG_KEYS if tags.get(k) is not None]
    if given and kind != "tags":
        raise UserError(f"{prefix}{given[0]} is set but {prefix}kind is '{kind}'; tags apply only with kind=tags")


def spec_from_setting(kind: str, tags: dict) -> Optional[FormatSpec]:
    """The format a setting names; None for ``auto`` (decided by the model)."""
    validate_format_setting(kind, tags)
    if kind == "auto":
        return None
    if kind in PRESETS:
        return PRESETS[kind]
    if kind == "tags":
        return FormatSpec("tags", *(tags.get(k) or "" for k in TAG_KEYS))
    return FormatSpec(kind)


def read_recorded_format(folder: str | Path) -> Optional[FormatSpec]:
    """The format recorded in a model folder; None when it records none."""
    path = Path(folder) / FORMAT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise UserError(f"{path} is not readable JSON; delete it or set model.prompt_format.kind") from None
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        raise UserError(f"{path}: 'kind' must be one of {', '.join(KINDS)}")
    unknown = sorted(set(data) - {"kind", "preset", *TAG_KEYS})
    if unknown:
        raise UserError(f"{path}: unknown key '{unknown[0]}'")
    tags = [data.get(k, "") for k in TAG_KEYS]
    if not all(isinstance(t, str) for t in tags) or not isinstance(data.get("preset"), (str, type(None))):
        raise UserError(f"{path}: tags must be strings")
    if data["kind"] != "tags":
        return FormatSpec(data["kind"])
    return FormatSpec("tags", *tags, preset=data.get("preset"))


def write_format(folder: str | Path, spec: FormatSpec) -> None:
    (Path(folder) / FORMAT_FILE).write_text(json.dumps(spec.to_json(), indent=2) + "\n", encoding="utf-8")


def resolve_format(setting: Optional[FormatSpec], name_or_path: str, folder: Optional[str], tokenizer) -> FormatSpec:
    """The format to use: the user's setting, else the one recorded in the model folder, else
    the preset of a known hub target, else the chat template, else ``Question: … Answer:``."""
    spec = setting
    if spec is None and folder is not None:
        spec = read_recorded_format(folder)
    if spec is None:
        preset = HUB_PRESETS.get(name_or_path.strip().lower())
        spec = PRESETS[preset] if preset else None
    if spec is None:
        spec = FormatSpec("chat_template" if getattr(tokenizer, "chat_template", None) else "question_answer")
    if spec.kind == "chat_template" and not getattr(tokenizer, "chat_template", None):
        raise UserError(f"prompt format chat_template: the tokenizer of '{name_or_path}' has no chat template; "
                        "set model.prompt_format.kind to tags, question_answer or a preset")
    return spec


@dataclass(frozen=True)
class EncodedQA:
    input_ids: tuple[int, ...]
    # Number of leading prompt tokens (labels are -100 there unless the mask is off).
    prompt_length: int


class PromptFormat:
    def __init__(self, tokenizer, use_chat_template: bool | None = None, spec: Optional[FormatSpec] = None):
        self.tokenizer = tokenizer
        if spec is None:
            has_template = bool(getattr(tokenizer, "chat_template", None))
            chat = has_template if use_chat_template is None else use_chat_template
            spec = FormatSpec("chat_template" if chat else "question_answer")
        if spec.kind not in KINDS:
            raise ValueError(f"unknown prompt format kind {spec.kind!r}")
        self.spec = spec
        self.use_chat_template = spec.kind == "chat_template"
        if tokenizer.eos_token_id is None:
            raise UserError("the tokenizer has no EOS token; answers could not be terminated")
        self.eos_token_id = tokenizer.eos_token_id
        self._prompt_cache: dict[str, tuple[int, ...]] = {}
        self._encode_cache: dict[tuple[str, str], EncodedQA] = {}

    def prompt_text(self, question: str) -> str:
        """The text before the answer (tags: without the answer tag, as the label mask counts it)."""
        if self.spec.kind == "chat_template":
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
            )
        if self.spec.kind == "tags":
            return self.spec.question_start + question + self.spec.question_end
        return QUESTION_TAG + question + ANSWER_TAG

    def prompt_ids(self, question: str) -> tuple[int, ...]:
        """The ids generation starts from."""
        cached = self._prompt_cache.get(question)
        if cached is None:
            text = self.prompt_text(question)
            if self.spec.kind == "tags":
                text += self.spec.answer_start
            # A chat template already writes its own special tokens; the others get the
            # tokenizer's usual ones (a BOS for Llama-style tokenizers).
            ids = self.tokenizer(text, add_special_tokens=self.spec.kind != "chat_template")["input_ids"]
            cached = self._prompt_cache[question] = tuple(ids)
        return cached

    def answer_ids(self, answer: str) -> tuple[int, ...]:
        """An answer's ids + EOS, for the kinds that tokenise prompt and answer separately."""
        if self.spec.kind == "tags":
            raise ValueError("the tags format tokenises question and answer together; use encode")
        text = answer if self.spec.kind == "chat_template" else " " + answer.lstrip()
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return tuple(ids) + (self.eos_token_id,)

    def _encode_whole(self, question: str, answer: str) -> EncodedQA:
        cached = self._encode_cache.get((question, answer))
        if cached is None:
            if self.spec.kind == "tags":
                prompt = self.prompt_text(question)
                ids = self.tokenizer(prompt + self.spec.answer_start + answer, add_special_tokens=True)["input_ids"]
                prompt_length = len(self.tokenizer.tokenize(prompt, add_special_tokens=True))
                cached = EncodedQA(tuple(ids) + (self.eos_token_id,), prompt_length)
            else:
                prompt_ids = self.prompt_ids(question)
                cached = EncodedQA(prompt_ids + self.answer_ids(answer), len(prompt_ids))
            self._encode_cache[(question, answer)] = cached
        return cached

    def encode(self, question: str, answer: str, max_length: int | None = None) -> EncodedQA:
        encoded = self._encode_whole(question, answer)
        ids = encoded.input_ids
        if max_length is not None and len(ids) > max_length:
            ids = ids[:max_length]
        return EncodedQA(ids, min(encoded.prompt_length, len(ids)))

    def describe(self, question: str, answer: str) -> dict:
        """What a QA pair becomes: ids, tokens, label mask, generation prompt (``show-format``)."""
        encoded = self.encode(question, answer)
        ids = list(encoded.input_ids)
        return {
            "format": self.spec.to_json(),
            "prompt_text": self.prompt_text(question),
            "input_ids": ids,
            "tokens": self.tokenizer.convert_ids_to_tokens(ids),
            "label_mask": [0] * encoded.prompt_length + [1] * (len(ids) - encoded.prompt_length),
            "prompt_length": encoded.prompt_length,
            "generation_prompt_ids": list(self.prompt_ids(question)),
            "generation_prompt_tokens": self.tokenizer.convert_ids_to_tokens(list(self.prompt_ids(question))),
        }


def check_truncation(formatter: PromptFormat, rows: Sequence[dict], max_length: int, origin: str,
                     setting: str = "data.max_length") -> int:
    """Rows whose answer ``max_length`` cuts are counted (a warning); a row that would keep no
    answer token at all is refused, naming the file and row. Returns the number cut."""
    cut = 0
    for index, row in enumerate(rows):
        encoded = formatter.encode(row["question"], row["answer"])
        if encoded.prompt_length >= max_length:
            line = row.get("_line")
            where = f"line {line}" if line is not None else f"row {index + 1}"
            raise UserError(f"{origin}: {where}: the prompt alone is {encoded.prompt_length} tokens, so "
                            f"{setting}={max_length} keeps no answer token; raise {setting}")
        if len(encoded.input_ids) > max_length:
            cut += 1
    if cut:
        logger.warning("%s: %d of %d rows are longer than %s=%d; their answers are cut",
                       origin, cut, len(rows), setting, max_length)
    return cut

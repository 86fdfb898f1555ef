"""Turning a question–answer pair into token ids, in the format a model was trained on
(docs/formulas.md#prompt-formats).

Four kinds of format:

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
- ``open_unlearning``: open-unlearning's chat rule (its ``preprocess_chat_instance``): the chat
  template renders the whole conversation (an optional system prompt, the question, the answer;
  an optional ``date_string`` passed to the template), and the labels are every token after the
  generation prompt, so they include the template's own end-of-turn tokens; an EOS is appended
  unless the rendered conversation already ends with it. Presets give its model configs' settings.

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
KINDS = ("chat_template", "tags", "question_answer", "open_unlearning")


@dataclass(frozen=True)
class FormatSpec:
    """A prompt format, as recorded with a model."""

    kind: str
    question_start: str = ""
    question_end: str = ""
    answer_start: str = ""
    # The preset the tags came from (informational).
    preset: Optional[str] = None
    # open_unlearning: the system message and the template's date_string (None: none passed).
    system_prompt: Optional[str] = None
    date_string: Optional[str] = None

    def to_json(self) -> dict:
        data = asdict(self)
        if self.kind == "open_unlearning":
            return {k: v for k, v in data.items() if k in ("kind", *CHAT_KEYS, "preset") and v is not None}
        for key in CHAT_KEYS:
            data.pop(key)
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
    # open-unlearning's configs/model/Llama-3.2-1B-Instruct.yaml (and Llama-3.1-8B-Instruct.yaml).
    "open-unlearning-llama3": FormatSpec("open_unlearning", system_prompt="You are a helpful assistant.",
                                         date_string="10 Apr 2025", preset="open-unlearning-llama3"),
    # Its rule with the model's own template and nothing added (a model it has no config for).
    "open-unlearning": FormatSpec("open_unlearning", preset="open-unlearning"),
}
# Hub names of the paper's targets (compared in lower case, as the hub resolves them).
HUB_PRESETS = {
    "locuslab/tofu_ft_llama2-7b": "tofu-llama2",
    "meta-llama/meta-llama-3-8b-instruct": "llama3-instruct",
}
# open-unlearning's published TOFU targets (hub names start so; e.g. tofu_Llama-3.2-1B-Instruct_full,
# _retain90): each is scored in the format its config trained it on. Its Llama-2 chat targets use
# tags that are tofu-llama2's exactly ("[INST] ", " [/INST]", an empty answer tag).
HUB_PREFIX_PRESETS = {
    "open-unlearning/tofu_llama-3.2-1b-instruct_": "open-unlearning-llama3",
    "open-unlearning/tofu_llama-3.1-8b-instruct_": "open-unlearning-llama3",
    "open-unlearning/tofu_llama-2-7b-chat-hf_": "tofu-llama2",
}
CHAT_KEYS = ("system_prompt", "date_string")
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
    unknown = sorted(set(data) - {"kind", "preset", *TAG_KEYS, *CHAT_KEYS})
    if unknown:
        raise UserError(f"{path}: unknown key '{unknown[0]}'")
    tags = [data.get(k, "") for k in TAG_KEYS]
    if not all(isinstance(t, str) for t in tags) or not isinstance(data.get("preset"), (str, type(None))):
        raise UserError(f"{path}: tags must be strings")
    if data["kind"] == "open_unlearning":
        chat = [data.get(k) for k in CHAT_KEYS]
        if not all(isinstance(v, (str, type(None))) for v in chat):
            raise UserError(f"{path}: system_prompt and date_string must be strings")
        return FormatSpec("open_unlearning", preset=data.get("preset"), **dict(zip(CHAT_KEYS, chat)))
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
        name = name_or_path.strip().lower()
        preset = HUB_PRESETS.get(name) or next(
            (p for prefix, p in HUB_PREFIX_PRESETS.items() if name.startswith(prefix)), None)
        spec = PRESETS[preset] if preset else None
    if spec is None:
        spec = FormatSpec("chat_template" if getattr(tokenizer, "chat_template", None) else "question_answer")
    if spec.kind in ("chat_template", "open_unlearning") and not getattr(tokenizer, "chat_template", None):
        raise UserError(f"prompt format {spec.kind}: the tokenizer of '{name_or_path}' has no chat template; "
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

    def _conversation(self, question: str, answer: Optional[str] = None) -> str:
        """open_unlearning: the rendered conversation, up to the generation prompt without ``answer``."""
        messages = [{"role": "system", "content": self.spec.system_prompt}] if self.spec.system_prompt else []
        messages.append({"role": "user", "content": question})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        extra = {"date_string": self.spec.date_string} if self.spec.date_string is not None else {}
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=answer is None, tokenize=False,
                                                  **extra)

    def prompt_text(self, question: str) -> str:
        """The text before the answer (tags: without the answer tag, as the label mask counts it)."""
        if self.spec.kind == "open_unlearning":
            return self._conversation(question)
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
            chat = self.spec.kind in ("chat_template", "open_unlearning")
            ids = self.tokenizer(text, add_special_tokens=not chat)["input_ids"]
            cached = self._prompt_cache[question] = tuple(ids)
        return cached

    def answer_ids(self, answer: str) -> tuple[int, ...]:
        """An answer's ids + EOS, for the kinds that tokenise prompt and answer separately."""
        if self.spec.kind in ("tags", "open_unlearning"):
            raise ValueError(f"the {self.spec.kind} format tokenises question and answer together; use encode")
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
            elif self.spec.kind == "open_unlearning":
                ids = tuple(self.tokenizer(self._conversation(question, answer), add_special_tokens=False)["input_ids"])
                if not ids or ids[-1] != self.eos_token_id:
                    ids += (self.eos_token_id,)
                cached = EncodedQA(ids, len(self.prompt_ids(question)))
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

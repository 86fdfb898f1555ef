"""Turning a question–answer pair into token ids (docs/formulas.md#token-format).

The prompt is the tokenizer's chat template with a generation prompt when the tokenizer has
one, else explicit ``Question: … / Answer:`` tags. Prompt and answer are tokenised separately
and concatenated, so the boundary used for label masking is exactly the prompt a model sees
at generation time. The EOS token ends every answer.
"""

from __future__ import annotations

from dataclasses import dataclass

QUESTION_TAG = "Question: "
ANSWER_TAG = "\nAnswer:"


@dataclass(frozen=True)
class EncodedQA:
    input_ids: tuple[int, ...]
    # Number of leading prompt tokens (labels are -100 there unless the mask is off).
    prompt_length: int


class PromptFormat:
    def __init__(self, tokenizer, use_chat_template: bool | None = None):
        self.tokenizer = tokenizer
        has_template = bool(getattr(tokenizer, "chat_template", None))
        self.use_chat_template = has_template if use_chat_template is None else use_chat_template
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; answers could not be terminated")
        self.eos_token_id = tokenizer.eos_token_id
        self._prompt_cache: dict[str, tuple[int, ...]] = {}

    def prompt_text(self, question: str) -> str:
        if self.use_chat_template:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
            )
        return QUESTION_TAG + question + ANSWER_TAG

    def prompt_ids(self, question: str) -> tuple[int, ...]:
        cached = self._prompt_cache.get(question)
        if cached is None:
            # A chat template already writes its own special tokens; tag prompts get the
            # tokenizer's usual ones (a BOS for Llama-style tokenizers).
            ids = self.tokenizer(
                self.prompt_text(question), add_special_tokens=not self.use_chat_template
            )["input_ids"]
            cached = self._prompt_cache[question] = tuple(ids)
        return cached

    def answer_ids(self, answer: str) -> tuple[int, ...]:
        text = answer if self.use_chat_template else " " + answer.lstrip()
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return tuple(ids) + (self.eos_token_id,)

    def encode(self, question: str, answer: str, max_length: int | None = None) -> EncodedQA:
        prompt = self.prompt_ids(question)
        ids = prompt + self.answer_ids(answer)
        if max_length is not None and len(ids) > max_length:
            ids = ids[:max_length]
        return EncodedQA(ids, min(len(prompt), len(ids)))

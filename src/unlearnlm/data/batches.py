"""Tokenised training examples and per-batch padding.

An unlearning example (SPEC §3) is one forget row plus what the objective needs of its
companions: a retain row drawn at random, the forget and retain questions answered with a
random refusal, and the forget question paired with a random retain answer. The draws depend
only on (seed, epoch, index), so a run gives the same batches on one process or several and
after a resume.
"""

from __future__ import annotations

import random
from typing import Iterable, Sequence

import torch

from .formatting import EncodedQA, PromptFormat

# Every sequence kind an objective may read.
SEQUENCE_KINDS = ("forget", "retain", "forget_idk", "retain_idk", "mismatch")
# Kinds built on the forget question: with mask=false their loss covers the question too.
FORGET_SIDE_KINDS = ("forget", "forget_idk", "mismatch")


class UnlearningDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        forget: Sequence[dict],
        retain: Sequence[dict],
        refusals: Sequence[str],
        formatter: PromptFormat,
        kinds: Iterable[str],
        seed: int,
        max_length: int | None = None,
    ):
        self.kinds = tuple(kinds)
        unknown = set(self.kinds) - set(SEQUENCE_KINDS)
        if unknown:
            raise ValueError(f"unknown sequence kinds {sorted(unknown)}")
        self.seed = seed
        self.epoch = 0
        self.max_length = max_length
        self.forget = [(formatter.prompt_ids(r["question"]), formatter.answer_ids(r["answer"])) for r in forget]
        needs_retain = {"retain", "retain_idk", "mismatch"} & set(self.kinds)
        self.retain = (
            [(formatter.prompt_ids(r["question"]), formatter.answer_ids(r["answer"])) for r in retain]
            if needs_retain
            else []
        )
        if needs_retain and not self.retain:
            raise ValueError("this objective needs a retain set, and it is empty")
        needs_refusal = {"forget_idk", "retain_idk"} & set(self.kinds)
        self.refusals = [formatter.answer_ids(a) for a in refusals] if needs_refusal else []

    def __len__(self) -> int:
        return len(self.forget)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _join(self, prompt: tuple[int, ...], answer: tuple[int, ...]) -> EncodedQA:
        ids = prompt + answer
        if self.max_length is not None and len(ids) > self.max_length:
            ids = ids[: self.max_length]
        return EncodedQA(ids, min(len(prompt), len(ids)))

    def __getitem__(self, index: int) -> dict[str, EncodedQA]:
        # A string seed is hashed with SHA-512 by `random`: stable across processes and runs.
        rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
        retain_index = rng.randrange(len(self.retain)) if self.retain else None
        mismatch_index = rng.randrange(len(self.retain)) if self.retain else None
        forget_refusal = rng.randrange(len(self.refusals)) if self.refusals else None
        retain_refusal = rng.randrange(len(self.refusals)) if self.refusals else None
        forget_prompt, forget_answer = self.forget[index]
        example = {}
        for kind in self.kinds:
            if kind == "forget":
                example[kind] = self._join(forget_prompt, forget_answer)
            elif kind == "retain":
                example[kind] = self._join(*self.retain[retain_index])
            elif kind == "forget_idk":
                example[kind] = self._join(forget_prompt, self.refusals[forget_refusal])
            elif kind == "retain_idk":
                example[kind] = self._join(self.retain[retain_index][0], self.refusals[retain_refusal])
            elif kind == "mismatch":
                example[kind] = self._join(forget_prompt, self.retain[mismatch_index][1])
        return example


class QADataset(torch.utils.data.Dataset):
    """Plain supervised examples (fine-tuning): one encoded QA pair each."""

    def __init__(self, records: Sequence[dict], formatter: PromptFormat, max_length: int | None = None):
        self.items = [formatter.encode(r["question"], r["answer"], max_length) for r in records]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> EncodedQA:
        return self.items[index]


def pad_encoded(
    items: Sequence[EncodedQA], pad_token_id: int, mask_prompt: bool = True, pad_to: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence (or ``pad_to``); labels are -100 on padding and,
    with ``mask_prompt``, on the prompt."""
    length = max(len(item.input_ids) for item in items)
    if pad_to is not None:
        length = max(length, pad_to)
    input_ids = torch.full((len(items), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(items), length), dtype=torch.long)
    labels = torch.full((len(items), length), -100, dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids = torch.tensor(item.input_ids, dtype=torch.long)
        input_ids[row, :n] = ids
        attention_mask[row, :n] = 1
        start = item.prompt_length if mask_prompt else 0
        labels[row, start:n] = ids[start:]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class UnlearningCollator:
    """Pads each sequence kind of a batch separately: {kind: {input_ids, attention_mask, labels}}."""

    def __init__(self, pad_token_id: int, mask: bool = True, pad_to: int | None = None):
        self.pad_token_id = pad_token_id
        self.mask = mask
        self.pad_to = pad_to

    def __call__(self, examples: Sequence[dict[str, EncodedQA]]) -> dict[str, dict[str, torch.Tensor]]:
        batch = {}
        for kind in examples[0]:
            mask_prompt = self.mask or kind not in FORGET_SIDE_KINDS
            batch[kind] = pad_encoded([e[kind] for e in examples], self.pad_token_id, mask_prompt, self.pad_to)
        return batch


class QACollator:
    def __init__(self, pad_token_id: int, pad_to: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to = pad_to

    def __call__(self, examples: Sequence[EncodedQA]) -> dict[str, torch.Tensor]:
        return pad_encoded(examples, self.pad_token_id, mask_prompt=True, pad_to=self.pad_to)

"""Tokenised training examples and per-batch padding.

An unlearning example (docs/formulas.md#objectives) is one forget row plus what the objective needs of its
companions: a retain row drawn at random, the forget and retain questions answered with a
random refusal, and the forget question paired with a random retain answer. The draws depend
only on (seed, epoch, index), so a run gives the same batches on one process or several and
after a resume.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable, Mapping, Optional, Sequence

import torch

from .formatting import EncodedQA, PromptFormat

# Every sequence kind an objective may read.
SEQUENCE_KINDS = ("forget", "retain", "forget_idk", "retain_idk", "mismatch", "forget_alt")
# Kinds built on the forget question: with mask=false their loss covers the question too.
FORGET_SIDE_KINDS = ("forget", "forget_idk", "mismatch", "forget_alt")


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
        alternates: Sequence[Sequence[str]] = (),
    ):
        """``alternates``: per forget row, other answers to its question (AltPO's ``forget_alt``)."""
        self._set_kinds(kinds, SEQUENCE_KINDS, "unknown sequence kinds", seed, max_length)
        self.formatter = formatter
        # (question, answer) texts: a sequence is encoded as a whole (the tags format tokenises
        # question and answer together), once, by the formatter's cache.
        self.forget = [(r["question"], r["answer"]) for r in forget]
        needs_retain = {"retain", "retain_idk", "mismatch"} & set(self.kinds)
        self.retain = [(r["question"], r["answer"]) for r in retain] if needs_retain else []
        if needs_retain and not self.retain:
            raise ValueError("this objective needs a retain set, and it is empty")
        needs_refusal = {"forget_idk", "retain_idk"} & set(self.kinds)
        self.refusals = list(refusals) if needs_refusal else []
        # AltPO's alternate answers (texts), one list per forget row.
        self.alternates = [list(row) for row in alternates] if "forget_alt" in self.kinds else []
        if "forget_alt" in self.kinds and (len(self.alternates) != len(self.forget) or not all(self.alternates)):
            raise ValueError("forget_alt needs at least one alternate answer for every forget row")

    def _set_kinds(self, kinds: Iterable[str], allowed: Sequence[str], complaint: str, seed: int,
                   max_length: int | None, complaint_end: str = "") -> None:
        """The kinds, seed, epoch 0 and length cap; a ValueError "``complaint`` [kinds]``complaint_end``"
        names the kinds not in ``allowed``."""
        self.kinds = tuple(kinds)
        unknown = set(self.kinds) - set(allowed)
        if unknown:
            raise ValueError(f"{complaint} {sorted(unknown)}{complaint_end}")
        self.seed = seed
        self.epoch = 0
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.forget)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _join(self, question: str, answer: str) -> EncodedQA:
        return self.formatter.encode(question, answer, self.max_length)

    def __getitem__(self, index: int) -> dict[str, EncodedQA]:
        return self.example(index, self.epoch)

    def example(self, index: int, epoch: int) -> dict[str, EncodedQA]:
        # A string seed is hashed with SHA-512 by `random`: stable across processes and runs.
        rng = random.Random(f"{self.seed}/{epoch}/{index}")
        retain_index = rng.randrange(len(self.retain)) if self.retain else None
        mismatch_index = rng.randrange(len(self.retain)) if self.retain else None
        forget_refusal = rng.randrange(len(self.refusals)) if self.refusals else None
        retain_refusal = rng.randrange(len(self.refusals)) if self.refusals else None
        # Drawn last, so the other kinds' draws are those of a run without alternates.
        alternate = rng.randrange(len(self.alternates[index])) if self.alternates else None
        forget_question, forget_answer = self.forget[index]
        example = {}
        for kind in self.kinds:
            if kind == "forget":
                example[kind] = self._join(forget_question, forget_answer)
            elif kind == "retain":
                example[kind] = self._join(*self.retain[retain_index])
            elif kind == "forget_idk":
                example[kind] = self._join(forget_question, self.refusals[forget_refusal])
            elif kind == "retain_idk":
                example[kind] = self._join(self.retain[retain_index][0], self.refusals[retain_refusal])
            elif kind == "mismatch":
                example[kind] = self._join(forget_question, self.retain[mismatch_index][1])
            elif kind == "forget_alt":
                example[kind] = self._join(forget_question, self.alternates[index][alternate])
        return example

    def lengths(self, epoch: int) -> list[int]:
        """Tokens per example (all its sequences) in ``epoch``: what length grouping sorts by."""
        return [sum(len(s.input_ids) for s in self.example(i, epoch).values()) for i in range(len(self))]

    def sequences(self, kind: str, epochs: int) -> list[EncodedQA]:
        """The distinct ``kind`` sequences that epochs 0..epochs-1 will yield, in first-seen order."""
        seen: dict[EncodedQA, None] = {}
        for epoch in range(epochs):
            for index in range(len(self)):
                seen.setdefault(self.example(index, epoch)[kind], None)
        return list(seen)


def length_batches(
    lengths: Sequence[int],
    batch_size: int,
    longest_first: bool = True,
    sort: bool = True,
    weights: Optional[Sequence[int]] = None,
) -> list[list[int]]:
    """Indices ``0..len(lengths)-1`` in batches of similar length: sorted by length (a stable sort,
    longest first by default, so an out-of-memory batch shows at once), then cut into batches of
    ``batch_size`` items, or with ``weights`` into batches whose weights add up to about
    ``batch_size`` (a batch closes once it reaches it). ``sort=False`` keeps the given order."""
    order = list(range(len(lengths)))
    if sort:
        order.sort(key=(lambda i: -lengths[i]) if longest_first else (lambda i: lengths[i]))
    batches: list[list[int]] = []
    load = 0
    for index in order:
        if not batches or load >= batch_size:
            batches.append([])
            load = 0
        batches[-1].append(index)
        load += 1 if weights is None else weights[index]
    return batches


# The kinds plain text can give: the forget text and a retain text; no question, no refusal.
TEXT_KINDS = ("forget", "retain")


class TextUnlearningDataset(UnlearningDataset):
    """Unlearning examples made of plain-text chunks (MUSE, WMDP): the forget chunk, and a retain
    chunk drawn at random as for QA rows. A chunk has no prompt: every token but the first is a
    label (with ``mask`` on or off alike)."""

    def __init__(self, forget_chunks: Sequence[tuple[int, ...]], retain_chunks: Sequence[tuple[int, ...]],
                 kinds: Iterable[str], seed: int):
        self._set_kinds(kinds, TEXT_KINDS, "plain text gives no", seed, None, " sequences")
        self.forget = [((), tuple(chunk)) for chunk in forget_chunks]
        self.retain = [((), tuple(chunk)) for chunk in retain_chunks] if "retain" in self.kinds else []
        if "retain" in self.kinds and not self.retain:
            raise ValueError("this objective needs a retain set, and it is empty")
        self.refusals = []
        self.alternates = []

    def _join(self, question: tuple[int, ...], chunk: tuple[int, ...]) -> EncodedQA:
        return EncodedQA(tuple(question) + tuple(chunk), len(question))


class LengthGroupedSampler(torch.utils.data.Sampler):
    """A seeded shuffle whose rows are sorted by length within each group of ``group_size``.

    With ``group_size`` = per-device batch × accumulation steps × processes, a group is exactly
    one optimiser step: the step gets a random set of rows as with a plain shuffle, but its
    micro-batches hold rows of similar length and pad little. The order depends only on
    (seed, epoch), so every process and a resumed run see the same one.
    """

    def __init__(self, lengths_for_epoch: Callable[[int], Sequence[int]], size: int, group_size: int, seed: int):
        self.lengths_for_epoch = lengths_for_epoch
        self.size = size
        self.group_size = max(1, group_size)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        lengths = self.lengths_for_epoch(self.epoch)
        order = list(range(self.size))
        random.Random(f"{self.seed}/order/{self.epoch}").shuffle(order)
        grouped = []
        for start in range(0, self.size, self.group_size):
            # Longest first (ties by row index), so a step that runs out of memory does so at once.
            group = sorted(order[start : start + self.group_size])
            (by_length,) = length_batches([lengths[i] for i in group], len(group))
            grouped += [group[k] for k in by_length]
        return iter(grouped)


class QADataset(torch.utils.data.Dataset):
    """Plain supervised examples (fine-tuning): one encoded QA pair each."""

    def __init__(self, records: Sequence[dict], formatter: PromptFormat, max_length: int | None = None):
        self.items = [formatter.encode(r["question"], r["answer"], max_length) for r in records]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> EncodedQA:
        return self.items[index]


IGNORE = -100  # the label of a position no loss scores


def answer_positions(labels: torch.Tensor) -> int:
    """How many trailing positions of a right-padded batch hold every label plus the position
    that predicts the first one; 0 (keep all) when no row has a label or the first token is one.
    A model's vocabulary projection is needed there only (``logits_to_keep``)."""
    has_label = (labels != IGNORE).any(dim=0).nonzero()
    if has_label.numel() == 0:
        return 0
    first = int(has_label[0])
    return labels.shape[1] - first + 1 if first > 0 else 0


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
    labels = torch.full((len(items), length), IGNORE, dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids = torch.tensor(item.input_ids, dtype=torch.long)
        input_ids[row, :n] = ids
        attention_mask[row, :n] = 1
        start = item.prompt_length if mask_prompt else 0
        labels[row, start:n] = ids[start:]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class UnlearningCollator:
    """Pads each sequence kind of a batch separately: {kind: {input_ids, attention_mask, labels}}.

    ``reference_nll`` ({kind: {sequence: NLL}}, precomputed with a frozen reference) adds each
    sequence's reference NLL to its kind as ``reference_nll`` [B].
    """

    def __init__(
        self,
        pad_token_id: int,
        mask: bool = True,
        pad_to: int | None = None,
        reference_nll: Optional[Mapping[str, Mapping[EncodedQA, float]]] = None,
    ):
        self.pad_token_id = pad_token_id
        self.mask = mask
        self.pad_to = pad_to
        self.reference_nll = reference_nll or {}

    def mask_prompt(self, kind: str) -> bool:
        return self.mask or kind not in FORGET_SIDE_KINDS

    def __call__(self, examples: Sequence[dict[str, EncodedQA]]) -> dict[str, dict[str, torch.Tensor]]:
        batch = {}
        for kind in examples[0]:
            items = [e[kind] for e in examples]
            batch[kind] = pad_encoded(items, self.pad_token_id, self.mask_prompt(kind), self.pad_to)
            if kind in self.reference_nll:
                table = self.reference_nll[kind]
                missing = [item for item in items if item not in table]
                if missing:
                    raise KeyError(f"{len(missing)} '{kind}' sequence(s) have no precomputed reference NLL")
                batch[kind]["reference_nll"] = torch.tensor([table[item] for item in items], dtype=torch.float32)
        return batch


class QACollator:
    """Fine-tuning batches. With ``answer_logits_only`` (for a model whose forward takes
    ``logits_to_keep``) a batch asks the model for the logits of its answer positions only and
    carries the labels of those positions: the same loss, without projecting every prompt token
    onto the vocabulary."""

    def __init__(self, pad_token_id: int, pad_to: int | None = None, answer_logits_only: bool = False):
        self.pad_token_id = pad_token_id
        self.pad_to = pad_to
        self.answer_logits_only = answer_logits_only

    def __call__(self, examples: Sequence[EncodedQA]) -> dict:
        batch = pad_encoded(examples, self.pad_token_id, mask_prompt=True, pad_to=self.pad_to)
        keep = answer_positions(batch["labels"]) if self.answer_logits_only else 0
        if keep:
            batch["labels"] = batch["labels"][:, -keep:]
            batch["logits_to_keep"] = keep
        return batch

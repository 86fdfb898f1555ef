"""Bigram tables and right-padded batches, shared by the objective and field-method formula tests.

A bigram model's logits at position t depend only on token t, so the expected losses can be
written as plain loops over positions with Python floats."""

from __future__ import annotations

import torch

VOCAB = 7


class Bigram(torch.nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(VOCAB, VOCAB, generator=generator) * 2)

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": self.table[input_ids]})()


def seq_batch(rows: list[list[int]], prompt_lengths: list[int]) -> dict[str, torch.Tensor]:
    """Right-padded sequence kind with labels masked on the prompt and padding."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for i, (row, p) in enumerate(zip(rows, prompt_lengths, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        labels[i, p : len(row)] = torch.tensor(row[p:])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}

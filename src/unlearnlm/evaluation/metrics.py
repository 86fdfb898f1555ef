"""The metrics of docs/formulas.md#metrics and #aggregates as pure functions of per-row records.

Per row (one question of an evaluation set):
  ROUGE-L recall of the generation against the ground truth (rouge_score, stemmer on)
  Probability        exp(-avg loss of the truth), or P_true / (P_true + Σ_j P_perturbed_j)
  R (Truth ratio)    exp(mean_j avg_loss(perturbed_j) - avg_loss(paraphrased))
  Token entropy      H(unigram distribution of the generation's tokens) / log2(#tokens)
  Cosine             max(0, cos(embedding of the generation, embedding of the cosine text))
  Entailed           the NLI label is "entailment" and the ROUGE-L recall is at least 0.1
Per set: the mean of each, except the Truth ratio: mean(max(0, 1 - 1/R)) on retain-like sets,
1 - mean(min(R, 1/R)) on a forget set. Aggregates: Model Utility (harmonic mean), Forget
Efficacy, TOFU Model Utility, Forget Quality (KS-test p-value).

A metric that cannot be computed (no perturbed answers, no judge) is None and is left out of
the aggregates, which report how many values they used.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Optional, Sequence

import numpy as np

METRICS = ("rouge", "probability", "truth_ratio", "token_entropy", "cosine", "entailment")
# Forget Efficacy leaves out Token entropy (docs/formulas.md#aggregates).
FORGET_EFFICACY_METRICS = ("rouge", "probability", "truth_ratio", "cosine", "entailment")
TOFU_MODEL_UTILITY_METRICS = ("probability", "rouge", "truth_ratio")
ROUGE_ENTAILMENT_FLOOR = 0.1  # below this ROUGE-L recall a row never counts as entailed

_scorer = None


def _rouge_scorer():
    global _scorer
    if _scorer is None:
        from rouge_score import rouge_scorer

        _scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _scorer


# ---- per row -----------------------------------------------------------------------------------


def rouge_l_recall(generation: str, ground_truth: str) -> float:
    # rouge_score's argument order is (target, prediction); recall = LCS / len(target).
    return float(_rouge_scorer().score(ground_truth, generation)["rougeL"].recall)


def probability(truth_loss: float) -> float:
    return math.exp(-truth_loss)


def normalised_probability(truth_loss: float, perturbed_losses: Sequence[float]) -> float:
    """P_true / (P_true + Σ P_perturbed) with P = exp(-avg loss): a softmax over -losses."""
    losses = np.asarray([truth_loss, *perturbed_losses], dtype=np.float64)
    weights = np.exp(-(losses - losses.min()))  # shifted: the ratio is unchanged, no underflow
    return float(weights[0] / weights.sum())


def truth_ratio_r(paraphrased_loss: float, perturbed_losses: Sequence[float]) -> float:
    """R = exp(mean_j avg_loss(perturbed_j) - avg_loss(paraphrased)) = P_paraphrased / P_perturbed (geometric)."""
    with np.errstate(over="ignore"):
        return float(np.exp(np.mean(perturbed_losses) - paraphrased_loss))


def token_entropy(token_ids: Sequence[int]) -> float:
    """Entropy in bits of the tokens' unigram frequencies, divided by log2(#tokens); 0 for ≤ 1 token."""
    n = len(token_ids)
    if n <= 1:
        return 0.0
    counts = np.asarray(list(Counter(token_ids).values()), dtype=np.float64)
    p = counts / n
    return abs(float((p * np.log2(p)).sum() / math.log2(n)))  # abs: no "-0.0" for one repeated token


def cosine_rows(generation_vectors: np.ndarray, text_vectors: np.ndarray) -> list[float]:
    """max(0, cos) row by row; a zero vector has cosine 0."""
    a = np.asarray(generation_vectors, dtype=np.float64)
    b = np.asarray(text_vectors, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    cos = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return [max(0.0, float(c)) for c in cos]


def entailed(label: str, rouge_recall: float) -> bool:
    return label == "entailment" and rouge_recall >= ROUGE_ENTAILMENT_FLOOR


# ---- per set -----------------------------------------------------------------------------------


def truth_ratio_retain(ratios: Sequence[float]) -> float:
    """Retain, real authors, world facts: mean(max(0, 1 - 1/R))."""
    r = np.asarray(ratios, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return float(np.mean(np.maximum(0.0, 1.0 - 1.0 / r)))


def truth_ratio_forget(ratios: Sequence[float]) -> float:
    """Forget: 1 - mean(min(R, 1/R))."""
    r = np.asarray(ratios, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return float(1.0 - np.mean(np.minimum(r, 1.0 / r)))


def _mean_or_none(values: Iterable[Optional[float]]) -> Optional[float]:
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def set_metrics(rows: Sequence[dict], forget_form: bool) -> dict[str, Optional[float]]:
    """The six set-level metrics from rows carrying the per-row values (None = unavailable)."""
    ratios = [r.get("truth_ratio") for r in rows]
    truth_ratio = None
    if rows and all(v is not None for v in ratios):
        truth_ratio = truth_ratio_forget(ratios) if forget_form else truth_ratio_retain(ratios)
    entailment = [r.get("entailed") for r in rows]
    return {
        "rouge": _mean_or_none(r["rouge_recall"] for r in rows),
        "probability": _mean_or_none(r["probability"] for r in rows),
        "truth_ratio": truth_ratio,
        "token_entropy": _mean_or_none(r["token_entropy"] for r in rows),
        "cosine": _mean_or_none(r.get("cosine") for r in rows),
        "entailment": _mean_or_none(None if e is None else float(e) for e in entailment),
    }


# ---- aggregates --------------------------------------------------------------------------------


def harmonic_mean(values: Sequence[float]) -> Optional[float]:
    """n / Σ 1/v; any 0 makes it 0 (as scipy.stats.hmean); None when there are no values."""
    values = [float(v) for v in values]
    if not values:
        return None
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def _values(set_results: dict[str, dict], roles: Sequence[str], metrics: Sequence[str]) -> list[float]:
    return [
        result["metrics"][m]
        for result in set_results.values()
        if result["role"] in roles
        for m in metrics
        if result["metrics"].get(m) is not None
    ]


def model_utility(set_results: dict[str, dict], roles: Sequence[str] = ("retain", "utility")) -> dict:
    """Harmonic mean of the six metrics on the utility sets (TOFU: 18 values, real-world: 6)."""
    values = _values(set_results, roles, METRICS)
    return {"value": harmonic_mean(values), "n_values": len(values)}


def tofu_model_utility(set_results: dict[str, dict]) -> dict:
    """TOFU's own: harmonic mean of Probability, ROUGE and Truth ratio on the utility sets (9 values)."""
    values = _values(set_results, ("retain", "utility"), TOFU_MODEL_UTILITY_METRICS)
    return {"value": harmonic_mean(values), "n_values": len(values)}


def forget_efficacy(set_results: dict[str, dict]) -> dict:
    """1 - mean(ROUGE, Probability, Truth ratio, Cosine, Entailment) on the forget set(s)."""
    values = _values(set_results, ("forget",), FORGET_EFFICACY_METRICS)
    return {"value": 1.0 - float(np.mean(values)) if values else None, "n_values": len(values)}


def forget_quality(unlearned_ratios: Sequence[float], retain_model_ratios: Sequence[float]) -> float:
    """p-value of the two-sample KS test between two models' forget-set R values (TOFU)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(np.asarray(unlearned_ratios), np.asarray(retain_model_ratios)).pvalue)


def row_values(record: dict, normalised: bool = False) -> dict:
    """Every per-row value of docs/formulas.md#metrics from one inference record (plus judges' outputs, if any).

    The record holds: generation, ground_truth, generation_token_ids, truth_loss,
    paraphrased_loss (or None), perturbed_losses (list, maybe empty), cosine (or None),
    nli_label (or None).
    """
    rouge = rouge_l_recall(record["generation"], record["ground_truth"])
    perturbed = record.get("perturbed_losses") or []
    paraphrased = record.get("paraphrased_loss")
    if normalised and perturbed:
        prob = normalised_probability(record["truth_loss"], perturbed)
    else:
        prob = probability(record["truth_loss"])
    label = record.get("nli_label")
    return {
        "rouge_recall": rouge,
        "probability": prob,
        "truth_ratio": truth_ratio_r(paraphrased, perturbed) if perturbed and paraphrased is not None else None,
        "token_entropy": token_entropy(record["generation_token_ids"]),
        "cosine": record.get("cosine"),
        "entailed": None if label is None else entailed(label, rouge),
    }

"""Membership-inference scores and privacy leakage (Min-K%, MIA AUC, privleak); see docs/formulas.md.

A score is higher for a text that looks less like training data; the AUC separates forget rows
(label 0) from holdout rows (label 1, never trained on), so 1 means the forget rows are clearly
more likely under the model (memorised) and 0.5 that the two are indistinguishable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

# A_R when no reference model's AUC is known: an ideal retrained model cannot tell the two apart.
FALLBACK_REFERENCE_AUC = 0.5


def min_k_score(token_log_probs: Sequence[float], k: float = 0.4) -> float:
    """Min-K%: minus the mean of the max(1, floor(k·n)) smallest token log-probabilities."""
    values = np.sort(np.asarray(token_log_probs, dtype=np.float64))
    if values.size == 0:
        raise ValueError("Min-K% of an empty sequence")
    count = max(1, math.floor(k * values.size))
    return float(-values[:count].mean())


def mia_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """ROC-AUC with holdout rows as the positive class and a higher score as more holdout-like:
    the probability that a random holdout row outscores a random forget row (ties count half)."""
    forget = np.asarray(forget_scores, dtype=np.float64)
    holdout = np.asarray(holdout_scores, dtype=np.float64)
    if forget.size == 0 or holdout.size == 0:
        raise ValueError("an AUC needs at least one forget and one holdout score")
    ranks = rankdata(np.concatenate([forget, holdout]))  # average ranks: ties count half
    holdout_rank_sum = ranks[forget.size :].sum()
    u = holdout_rank_sum - holdout.size * (holdout.size + 1) / 2
    return float(u / (forget.size * holdout.size))


def privleak(auc: float, reference_auc: float | None) -> tuple[float, bool]:
    """((A − A_R) / A_R × 100, fallback used), with A = 1 − auc and A_R = 1 − reference_auc
    (0.5 when no reference is given). 0 = as a retrained model; −100 ≈ memorised; > 0 = over-unlearned."""
    fallback = reference_auc is None
    a = 1.0 - auc
    a_ref = 1.0 - (FALLBACK_REFERENCE_AUC if fallback else reference_auc)
    if a_ref == 0:
        return math.nan, fallback
    return (a - a_ref) / a_ref * 100.0, fallback

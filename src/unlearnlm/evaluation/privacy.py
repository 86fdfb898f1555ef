"""Privacy and memorisation metrics as pure functions of per-token values (docs/formulas.md).

Everything here reads what the one loss pass keeps for each answer's label tokens: the
log-probability lp_t of the true token, the mean μ_t and standard deviation σ_t of log p under
the model's next-token distribution at that position, and the argmax prediction.

Membership-inference (MIA) scores follow one orientation: higher = "looks less like training
data". The MIA AUC separates forget rows (label 0) from holdout rows (label 1) by that score, so
an AUC of 1 means the forget rows are clearly more likely than unseen ones (memorised) and 0.5
means they cannot be told apart.

A function given no tokens raises ``ValueError``: an empty answer has no score, and the metric
registry turns that into a missing value with its reason.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

MIN_K = 0.4  # share of the lowest-scored tokens Min-K% and Min-K%++ average (their papers' default)
# Rows on each side below which no MIA AUC (nor privleak) is reported: with n forget and m
# holdout rows an AUC takes at most n·m + 1 values, so 1 or 2 rows give 0, 0.5 or 1, not a measurement.
MIN_AUC_ROWS = 3
VARIANCE_FLOOR = 1e-6  # σ_t² is clamped here: a near one-hot distribution would divide by ~0


def _tokens(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError(f"{what}: no tokens (empty answer)")
    return array


def _k_count(n: int, k: float) -> int:
    """How many of n tokens Min-K% averages: max(1, ⌊k·n⌋)."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    return max(1, math.floor(k * n))


def loss_score(token_log_probs: Sequence[float]) -> float:
    """LOSS: −mean_t lp_t (the answer's average NLL)."""
    return float(-_tokens(token_log_probs, "LOSS").mean())


def min_k_score(token_log_probs: Sequence[float], k: float = MIN_K) -> float:
    """Min-K%: −mean of the max(1, ⌊k·n⌋) smallest lp_t."""
    lp = _tokens(token_log_probs, "Min-K%")
    return float(-np.sort(lp)[: _k_count(lp.size, k)].mean())


def min_k_plus_plus_score(
    token_log_probs: Sequence[float], mu: Sequence[float], sigma: Sequence[float], k: float = MIN_K
) -> float:
    """Min-K%++: z_t = (lp_t − μ_t) / σ_t, then −mean of the max(1, ⌊k·n⌋) smallest z_t.

    ``sigma`` is σ_t (not its square); σ_t² is clamped at 1e-6 either way."""
    lp = _tokens(token_log_probs, "Min-K%++")
    mu_t, sigma_t = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    if mu_t.shape != lp.shape or sigma_t.shape != lp.shape:
        raise ValueError(f"Min-K%++: {lp.size} log-probabilities but {mu_t.size} μ and {sigma_t.size} σ values")
    z = (lp - mu_t) / np.sqrt(np.maximum(sigma_t**2, VARIANCE_FLOOR))
    return float(-np.sort(z)[: _k_count(lp.size, k)].mean())


def zlib_score(loss: float, text: str) -> float:
    """ZLib: LOSS / length in bytes of the zlib-compressed UTF-8 answer."""
    return float(loss) / len(zlib.compress(text.encode("utf-8")))


def mia_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """ROC-AUC of telling holdout rows (label 1) from forget rows (label 0) by the score
    (higher = more holdout-like); ties count one half (the Mann–Whitney statistic)."""
    from scipy.stats import rankdata

    forget, holdout = np.asarray(forget_scores, dtype=np.float64), np.asarray(holdout_scores, dtype=np.float64)
    if forget.size == 0 or holdout.size == 0:
        raise ValueError(f"MIA AUC needs scores on both sides, got {forget.size} forget and {holdout.size} holdout")
    # U = (sum of the holdout rows' ranks among all rows) - n1 (n1 + 1) / 2, tied rows sharing their
    # mean rank; AUC = U / (n0 n1). Computed directly: the bootstrap calls it thousands of times.
    ranks = rankdata(np.concatenate([forget, holdout]))
    u = ranks[forget.size:].sum() - holdout.size * (holdout.size + 1) / 2.0
    return float(u / (forget.size * holdout.size))


def auc_rows_problem(forget_rows: int, holdout_rows: int) -> str | None:
    """Why forget and holdout sets of these sizes support no MIA AUC; None when they do."""
    if min(forget_rows, holdout_rows) >= MIN_AUC_ROWS:
        return None
    return (f"an MIA AUC needs at least {MIN_AUC_ROWS} rows on each side; the forget set has {forget_rows}, "
            f"the holdout {holdout_rows}")


PRIVLEAK_UNDEFINED = "the reference model's AUC is 1 (A_R = 0): privleak divides by 0"


def privleak(auc: float, reference_auc: float | None) -> tuple[float | None, bool]:
    """(privleak, whether the 0.5 fallback was used): with A = 1 − AUC and A_R = 1 − the
    reference (retain) model's AUC, or 0.5 without one, privleak = (A − A_R) / A_R × 100.
    Undefined (None: PRIVLEAK_UNDEFINED) when A_R = 0, never an infinity."""
    fallback = reference_auc is None
    a, a_ref = 1.0 - auc, 0.5 if fallback else 1.0 - reference_auc
    if a_ref == 0:
        return None, fallback
    return (a - a_ref) / a_ref * 100.0, fallback


def exact_memorisation(hits: Sequence[bool]) -> float:
    """EM: the share of label positions whose argmax prediction is the label token."""
    return float(_tokens(hits, "exact memorisation").mean())


def extraction_strength(predictions: Sequence[int], labels: Sequence[int], floor: bool = True) -> float:
    """ES = 1 − k*/n, k* the smallest k with predictions[k:] == labels[k:]: the longest suffix of
    the answer the model reproduces from the prefix before it.

    ``floor`` (open-unlearning's rule): k is searched in 0..n−1 only, so an answer whose last
    token is wrong scores 1/n, as one whose last token alone is right; without it k* = n there
    and ES = 0."""
    n = len(labels)
    if n == 0:
        raise ValueError("extraction strength: no tokens (empty answer)")
    if len(predictions) != n:
        raise ValueError(f"extraction strength: {len(predictions)} predictions for {n} labels")
    suffix = 0
    while suffix < n and predictions[n - 1 - suffix] == labels[n - 1 - suffix]:
        suffix += 1
    return (max(suffix, 1) if floor else suffix) / n  # k* = n - suffix, at most n - 1 with the floor

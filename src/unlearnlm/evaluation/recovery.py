"""How much forgotten knowledge an attack brings back: recovery of the forget metrics.

For an unlearned model U of target T and an attacked U' (or U asked another way), each forget
metric m gives

    recovery(m) = (m(U') - m(U)) / (m(T) - m(U))

0 = nothing regained, 1 = back to the target's level (beyond 1 or below 0 is possible and kept);
None when m(T) = m(U) (no gap to close) or a value is missing.

Every metric is read as FE reads it, higher = more knowledge: ROUGE, Probability, Cosine,
Entailment as they are, and the Truth ratio in its forget form 1 - mean(min(R, 1/R)), the very
number FE subtracts. ``likelihood_accuracy`` adds the multiple-choice view of the same loss pass:
the share of rows whose paraphrased (true) answer is likelier than every perturbed one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from . import metrics as M
from .statistics import DEFAULT_LEVEL, index_matrix

# The forget metrics whose recovery is reported (FE's five, then the multiple-choice accuracy).
RECOVERY_METRICS = (*M.FORGET_EFFICACY_METRICS, "likelihood_accuracy")
RECOVERY_TITLES = {"rouge": "ROUGE", "probability": "Prob", "truth_ratio": "TruthR", "cosine": "Cosine",
                   "entailment": "Entail", "likelihood_accuracy": "MC-acc"}
# A gap below this is float noise, not a difference between T and U: recovery is None.
NO_GAP = 1e-9
# A recovery interval needs a finite recovery in at least this share of the replicates (a
# resample can close the gap between T and U, where recovery is undefined).
MIN_DEFINED_SHARE = 0.9


def recovery(attacked: float | None, unlearned: float | None, target: float | None) -> float | None:
    """(m(U') - m(U)) / (m(T) - m(U)); None when a value is missing or m(T) = m(U)."""
    if attacked is None or unlearned is None or target is None:
        return None
    gap = target - unlearned
    if abs(gap) < NO_GAP:
        return None
    return (attacked - unlearned) / gap


def recoveries(attacked: Mapping[str, float | None], unlearned: Mapping[str, float | None],
               target: Mapping[str, float | None], names: Sequence[str] = RECOVERY_METRICS) -> dict:
    """{metric: recovery} over ``names`` (None where a model lacks the metric)."""
    return {m: recovery(attacked.get(m), unlearned.get(m), target.get(m)) for m in names}


def likelihood_accuracy(records: Sequence[dict]) -> float | None:
    """Share of rows whose paraphrased answer has a lower average loss than each perturbed one
    (the multiple-choice reading of the loss pass); None without those losses."""
    if not records:
        return None
    correct = 0
    for record in records:
        paraphrased, perturbed = record.get("paraphrased_loss"), record.get("perturbed_losses") or []
        if paraphrased is None or not perturbed:
            return None
        correct += paraphrased < min(perturbed)
    return correct / len(records)


def forget_metrics(records: Sequence[dict]) -> dict[str, float | None]:
    """The forget set's metrics (forget form) and its likelihood accuracy, from scored records
    (records/SET.jsonl of an evaluation, or any subset of their rows)."""
    values = dict(M.set_metrics(records, forget_form=True))
    values["likelihood_accuracy"] = likelihood_accuracy(records)
    return values


def forget_efficacy_of(values: Mapping[str, float | None]) -> float | None:
    """1 - mean of FE's five metrics among those present (as metrics.forget_efficacy)."""
    present = [values[m] for m in M.FORGET_EFFICACY_METRICS if values.get(m) is not None]
    return 1.0 - sum(present) / len(present) if present else None


def mean_recovery(values: Iterable[float | None]) -> float | None:
    """Mean of the finite recoveries (the report's one number per method and attack)."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    return sum(present) / len(present) if present else None


def recovery_intervals(attacked: Sequence[dict], unlearned: Sequence[dict], target: Sequence[dict],
                       samples: int, seed: int = 0, level: float = DEFAULT_LEVEL,
                       names: Sequence[str] = RECOVERY_METRICS) -> dict[str, list[float] | None]:
    """Paired percentile bootstrap of each recovery: the k-th attacked, unlearned and target
    records are the same question, and every replicate resamples the same positions of all three.
    None where a metric is missing, where fewer than MIN_DEFINED_SHARE of the replicates have a
    gap to close, or with samples = 0. The mean recovery's interval is under "mean"; under
    "forgetting", that of FE(U) - FE(T) on these rows: how far U forgot at all (when that interval
    holds 0 there is nothing distinguishable to recover, and the recoveries are ratios of noise)."""
    n = len(attacked)
    if not (len(unlearned) == len(target) == n):
        raise ValueError(f"recovery_intervals: {n} attacked, {len(unlearned)} unlearned and {len(target)} target rows")
    keys = [*names, "mean", "forgetting"]
    if samples < 1 or n == 0:
        return {key: None for key in keys}
    matrix = index_matrix(seed, "recovery", n, samples)
    values = {key: np.full(samples, np.nan) for key in keys}
    for b, picks in enumerate(matrix):
        drawn = [forget_metrics([rows[i] for i in picks]) for rows in (attacked, unlearned, target)]
        each = recoveries(*drawn, names)
        fe_unlearned, fe_target = forget_efficacy_of(drawn[1]), forget_efficacy_of(drawn[2])
        if fe_unlearned is not None and fe_target is not None:
            values["forgetting"][b] = fe_unlearned - fe_target
        for key, value in each.items():
            if value is not None:
                values[key][b] = value
        mean = mean_recovery(each[m] for m in M.FORGET_EFFICACY_METRICS)
        if mean is not None:
            values["mean"][b] = mean
    tail = (1.0 - level) / 2.0
    result: dict[str, list[float] | None] = {}
    for key, replicates in values.items():
        defined = replicates[np.isfinite(replicates)]
        if defined.size < MIN_DEFINED_SHARE * samples:
            result[key] = None
        else:
            low, high = np.quantile(defined, [tail, 1.0 - tail])
            result[key] = [float(low), float(high)]
    return result

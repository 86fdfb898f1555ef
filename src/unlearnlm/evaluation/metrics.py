"""The evaluation's metrics: pure per-row functions, and the registry every output derives from.

Per row (one question of an evaluation set):
  ROUGE-L recall of the generation against the ground truth (rouge_score, stemmer on)
  Probability        exp(-avg loss of the truth), or P_true / (P_true + Σ_j P_perturbed_j)
  R (Truth ratio)    exp(mean_j avg_loss(perturbed_j) - avg_loss(paraphrased))
  Token entropy      H(unigram distribution of the generation's tokens) / log2(#tokens)
  Cosine             max(0, cos(embedding of the generation, embedding of the cosine text))
  Entailed           the NLI label is "entailment" and the ROUGE-L recall is at least 0.1
  Fact recall        the generation names the row's true fact (every part of ``facts``, as words)
  the privacy and memorisation values of ``privacy`` (MIA scores, exact memorisation,
  extraction strength), from the ground truth's per-token values
Per set: the mean of each, except the Truth ratio: mean(max(0, 1 - 1/R)) on retain-like sets,
1 - mean(min(R, 1/R)) on a forget set. Aggregates: Model Utility (harmonic mean), Forget
Efficacy, TOFU Model Utility, Forget Quality (KS-test p-value), the MIA AUCs and privleak.

A metric is one ``Metric`` declaration in ``REGISTRY``: its per-row function, set aggregate,
direction, the aggregates it enters and why it can be missing; the printed table, the CSV, the
summary, the report and the "skipped" reasons are all read from there. A metric that cannot be
computed (no perturbed answers, no judge, no answer tokens) is None and is left out of the
aggregates, which report how many values they used.
"""

from __future__ import annotations

import math
import re
from collections import ChainMap, Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from . import privacy as P

ROUGE_ENTAILMENT_FLOOR = 0.1  # below this ROUGE-L recall a row never counts as entailed

_scorers: dict[bool, object] = {}


def rouge_l_scorer(use_stemmer: bool = True):
    """rouge_score's ROUGE-L scorer with its default tokenizer. The tokenizer is passed in
    because without one rouge_score logs through absl, which installs a root logging handler that
    then prints every unlearnlm message a second time."""
    if use_stemmer not in _scorers:
        from rouge_score import rouge_scorer, tokenizers

        _scorers[use_stemmer] = rouge_scorer.RougeScorer(
            ["rougeL"], use_stemmer=use_stemmer, tokenizer=tokenizers.DefaultTokenizer(use_stemmer))
    return _scorers[use_stemmer]


# ---- per row -----------------------------------------------------------------------------------


def rouge_l_recall(generation: str, ground_truth: str) -> float:
    # rouge_score's argument order is (target, prediction); recall = LCS / len(target).
    return float(rouge_l_scorer().score(ground_truth, generation)["rougeL"].recall)


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


def _plain(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").casefold().split())


def states_fact(generation: str, facts: Sequence[Sequence[str]]) -> bool:
    """Whether the generation names every part of the fact (a part: any of its phrases), each as
    whole words, case and spacing ignored. ROUGE credits a templated answer's wording; this
    credits only the fact."""
    text = _plain(generation)
    return all(any(re.search(rf"(?<!\w){re.escape(_plain(phrase))}(?!\w)", text) for phrase in part)
               for part in facts)


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


# ---- aggregates --------------------------------------------------------------------------------


def harmonic_mean(values: Sequence[float]) -> Optional[float]:
    """n / Σ 1/v; any 0 makes it 0 (as scipy.stats.hmean); None when there are no values."""
    values = [float(v) for v in values]
    if not values:
        return None
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def _values(set_results: Mapping[str, dict], roles: Sequence[str], metrics: Sequence[str]) -> list[float]:
    return [
        result["metrics"][m]
        for result in set_results.values()
        if result["role"] in roles
        for m in metrics
        if result["metrics"].get(m) is not None
    ]


def model_utility(set_results: dict[str, dict], roles: Sequence[str] = ("retain", "utility")) -> dict:
    """Harmonic mean of the six metrics on the utility sets (TOFU: 18 values, real-world: 6)."""
    values = _values(set_results, roles, MODEL_UTILITY_METRICS)
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




# ---- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetKind:
    """What a per-row function may know about the set its row belongs to."""

    forget_form: bool = False  # the forget form of the Truth ratio
    normalised_probability: bool = False  # P_true / (P_true + Σ P_perturbed)
    min_k: float = P.MIN_K  # k of Min-K% and Min-K%++
    # Min-K%, Min-K%++, exact memorisation and extraction strength leave out the answer's final
    # label (the EOS), as open-unlearning does (privacy.eos); LOSS and ZLib read every label.
    drop_final_label: bool = True
    extraction_floor: bool = True  # ES = 1/n, not 0, when the last token is wrong (open-unlearning)


def privacy_conventions(privacy=None) -> dict:
    """The SetKind fields an evaluation's ``privacy`` settings (config.PrivacyConfig) choose."""
    if privacy is None:
        return {}
    return {"min_k": privacy.min_k, "drop_final_label": privacy.eos == "drop",
            "extraction_floor": privacy.extraction_floor}


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    """The paper's metrics: a set value only when every row has one."""
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    return float(np.mean([float(v) for v in values]))


def mean_of_available(values: Iterable[float | None], kind: SetKind | None = None) -> float | None:
    """Per-token metrics: the mean over the rows that have answer tokens (the others are counted
    in the summary's skipped list); None when no row has one."""
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _truth_ratio_set(ratios: Sequence[float | None], kind: SetKind) -> float | None:
    if not ratios or any(v is None for v in ratios):
        return None
    return truth_ratio_forget(ratios) if kind.forget_form else truth_ratio_retain(ratios)


@dataclass(frozen=True)
class Metric:
    """One metric: everything the evaluation's outputs know about it.

    ``row(record, kind)`` is the per-row value (None = unavailable), stored in the record under
    ``row_key``; ``aggregate(values, kind)`` turns a set's row values into its set value.
    ``knowledge`` says which way a higher value points: "higher" = more of the set's knowledge
    kept (better on retain-like sets, worse on a forget set), "lower" = the reverse (the MIA
    scores, where higher = less like training data). ``enters`` names the aggregates the set
    value is part of; ``missing`` says why a value can be absent; an ``mia`` score also gets its
    forget-vs-holdout AUC."""

    name: str
    title: str
    row_key: str
    row: Callable[[Mapping[str, Any], SetKind], Any]
    aggregate: Callable[[list, SetKind], float | None] = mean_of_available
    knowledge: str = "higher"
    enters: tuple[str, ...] = ()
    missing: str = "unavailable"
    group: str = "paper"  # the printed table has one block per group
    mia: bool = False
    in_report: bool = False  # a column of the report's comparison table (its forget-set value)
    needs_generation: bool = False  # reads the generation: not computed on a loss-only (holdout) set


def _rouge_row(record, kind):
    return rouge_l_recall(record["generation"], record["ground_truth"])


def _probability_row(record, kind):
    perturbed = record.get("perturbed_losses") or []
    if kind.normalised_probability and perturbed:
        return normalised_probability(record["truth_loss"], perturbed)
    return probability(record["truth_loss"])


def _truth_ratio_row(record, kind):
    perturbed, paraphrased = record.get("perturbed_losses") or [], record.get("paraphrased_loss")
    return truth_ratio_r(paraphrased, perturbed) if perturbed and paraphrased is not None else None


def _entailed_row(record, kind):
    label = record.get("nli_label")
    return None if label is None else entailed(label, record["rouge_recall"])


def _token_values(record) -> list[float | None]:
    """The ground truth's per-token log-probabilities; None when there are none (no per-token
    pass, or an answer without tokens)."""
    values = record.get("truth_token_log_probs")
    return values if values else None


def _per_token(score: Callable[[Mapping[str, Any], SetKind, list[float]], float]):
    def row(record, kind):
        values = _token_values(record)
        return None if values is None else score(record, kind, values)
    return row


def _answer_tokens(record, kind: SetKind, *keys: str) -> list[list] | None:
    """The per-token lists ``keys`` of the ground truth, less the final label when the set's
    convention drops it; None when no token is left."""
    values = [record.get(key) or [] for key in keys]
    if kind.drop_final_label:
        values = [v[:-1] for v in values]
    return values if all(values) else None


def _min_k_row(record, kind):
    tokens = _answer_tokens(record, kind, "truth_token_log_probs")
    return None if tokens is None else P.min_k_score(tokens[0], kind.min_k)


def _min_k_plus_plus_row(record, kind):
    tokens = _answer_tokens(record, kind, "truth_token_log_probs", "truth_token_mu", "truth_token_sigma")
    return None if tokens is None else P.min_k_plus_plus_score(*tokens, kind.min_k)


def _exact_memorisation_row(record, kind):
    tokens = _answer_tokens(record, kind, "truth_predicted_ids", "truth_token_ids")
    return None if tokens is None else P.exact_memorisation([p == y for p, y in zip(*tokens, strict=True)])


def _extraction_strength_row(record, kind):
    tokens = _answer_tokens(record, kind, "truth_predicted_ids", "truth_token_ids")
    return None if tokens is None else P.extraction_strength(*tokens, floor=kind.extraction_floor)


def _fact_row(record, kind):
    facts = record.get("facts")
    return None if not facts else float(states_fact(record["generation"], facts))


def _reference_row(record, kind):
    values, reference = _token_values(record), record.get("reference_loss")
    return None if values is None or reference is None else P.loss_score(values) - reference


NO_TOKENS = ("no per-token values of the ground truth (an empty answer, one of the EOS alone under privacy.eos=drop, "
             "or privacy.keep_token_values=false)")

REGISTRY: tuple[Metric, ...] = (
    Metric("rouge", "ROUGE", "rouge_recall", _rouge_row, lambda v, k: _mean_or_none(v),
           enters=("MU", "FE", "TOFU_MU"), in_report=True, needs_generation=True),
    Metric("probability", "Prob", "probability", _probability_row, lambda v, k: _mean_or_none(v),
           enters=("MU", "FE", "TOFU_MU"), in_report=True),
    Metric("truth_ratio", "TruthR", "truth_ratio", _truth_ratio_row, _truth_ratio_set,
           enters=("MU", "FE", "TOFU_MU"), missing="no paraphrased and perturbed answers", in_report=True),
    # Forget Efficacy leaves out Token entropy.
    Metric("token_entropy", "Entropy", "token_entropy",
           lambda record, kind: token_entropy(record["generation_token_ids"]), lambda v, k: _mean_or_none(v),
           enters=("MU",), in_report=True, needs_generation=True),
    Metric("cosine", "Cosine", "cosine", lambda record, kind: record.get("cosine"), lambda v, k: _mean_or_none(v),
           enters=("MU", "FE"), missing="no sentence embedder", in_report=True, needs_generation=True),
    Metric("entailment", "Entail", "entailed", _entailed_row,
           lambda v, k: _mean_or_none(None if e is None else float(e) for e in v),
           enters=("MU", "FE"), missing="entailment unavailable: no NLI judge", in_report=True,
           needs_generation=True),
    # The share of greedy answers that state the row's true fact (the world's rows name it).
    Metric("fact_recall", "Facts", "fact_recall", _fact_row, group="facts", in_report=True, needs_generation=True,
           missing="the rows name no facts (a 'facts' key: the demo's world has them, TOFU not)"),
    Metric("exact_memorisation", "EM", "exact_memorisation", _exact_memorisation_row,
           group="privacy", missing=NO_TOKENS, in_report=True),
    Metric("extraction_strength", "ES", "extraction_strength", _extraction_strength_row,
           group="privacy", missing=NO_TOKENS, in_report=True),
    Metric("loss", "LOSS", "mia_loss", _per_token(lambda r, k, lp: P.loss_score(lp)),
           knowledge="lower", group="privacy", missing=NO_TOKENS, mia=True),
    Metric("zlib", "ZLib", "mia_zlib", _per_token(lambda r, k, lp: P.zlib_score(P.loss_score(lp), r["ground_truth"])),
           knowledge="lower", group="privacy", missing=NO_TOKENS, mia=True),
    Metric("min_k", "MinK", "mia_min_k", _min_k_row, knowledge="lower", group="privacy", missing=NO_TOKENS, mia=True),
    Metric("min_k_plus_plus", "MinK++", "mia_min_k_plus_plus", _min_k_plus_plus_row,
           knowledge="lower", group="privacy", missing=NO_TOKENS, mia=True),
    Metric("reference", "Ref", "mia_reference", _reference_row, knowledge="lower", group="privacy", mia=True,
           missing="no reference model's losses of these rows (privacy.reference_eval, or retain_eval)"),
    Metric("grad_norm", "GradNorm", "mia_grad_norm", lambda record, kind: record.get("grad_norm"),
           knowledge="lower", group="privacy", mia=True, missing="GradNorm is off (privacy.grad_norm_p)"),
)
BY_NAME = {m.name: m for m in REGISTRY}
METRICS = tuple(m.name for m in REGISTRY if m.group == "paper")  # the paper's six
MODEL_UTILITY_METRICS = tuple(m.name for m in REGISTRY if "MU" in m.enters)
FORGET_EFFICACY_METRICS = tuple(m.name for m in REGISTRY if "FE" in m.enters)
TOFU_MODEL_UTILITY_METRICS = ("probability", "rouge", "truth_ratio")
assert set(TOFU_MODEL_UTILITY_METRICS) == {m.name for m in REGISTRY if "TOFU_MU" in m.enters}
MIA_SCORES = tuple(m.name for m in REGISTRY if m.mia)
PRIVLEAK_SCORE = "min_k"  # privleak compares the Min-K% AUCs of the model and the retain model


@dataclass(frozen=True)
class Aggregate:
    """A number of a whole evaluation (summary key = CSV column), and which way is better:
    "higher", "lower", "0" (closest to zero) or "0.5"."""

    name: str
    title: str
    better: str
    in_report: bool = True


AGGREGATES: tuple[Aggregate, ...] = (
    Aggregate("MU", "Model Utility", "higher"),
    Aggregate("MU_retain", "MU (retain only)", "higher"),
    Aggregate("FE", "Forget Efficacy", "higher"),
    Aggregate("TOFU_MU", "TOFU Model Utility", "higher"),
    Aggregate("FQ", "Forget Quality (KS p)", "higher"),
    Aggregate("privleak", "privleak (Min-K%, %)", "0"),
    # An unlearned model's forget rows should look like unseen ones: AUC 0.5.
    *(Aggregate(f"AUC_{name}", f"MIA AUC {BY_NAME[name].title}", "0.5", in_report=name == PRIVLEAK_SCORE)
      for name in MIA_SCORES),
)


def metrics_of(loss_only: bool = False) -> tuple[Metric, ...]:
    """The registered metrics a set gets: all, or those of the loss pass alone."""
    return tuple(m for m in REGISTRY if not (loss_only and m.needs_generation))


def row_values(record: Mapping[str, Any], normalised: bool = False, kind: SetKind | None = None,
               loss_only: bool = False) -> dict:
    """Every registered per-row value of one inference record (row_key -> value).

    The record holds: generation, ground_truth, generation_token_ids, truth_loss,
    paraphrased_loss (or None), perturbed_losses (list, maybe empty), cosine (or None),
    nli_label (or None), and, from the per-token pass, truth_token_log_probs / _mu / _sigma,
    truth_token_ids and truth_predicted_ids (plus reference_loss and grad_norm when computed).
    A later metric may read an earlier one's value (entailment reads ROUGE)."""
    kind = kind if kind is not None else SetKind(normalised_probability=normalised)
    values: dict[str, Any] = {}
    view = ChainMap(values, record)
    for metric in metrics_of(loss_only):
        values[metric.row_key] = metric.row(view, kind)
    return values


def set_metrics(rows: Sequence[Mapping[str, Any]], forget_form: bool, kind: SetKind | None = None,
                loss_only: bool = False) -> dict:
    """Every registered set value from rows that carry the per-row values (None = unavailable).

    This is the one function from a set's records to its metrics (resampled rows give
    resampled metrics)."""
    kind = kind if kind is not None else SetKind(forget_form=forget_form)
    return {m.name: m.aggregate([r.get(m.row_key) for r in rows], kind) for m in metrics_of(loss_only)}


def rows_left_out(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Per metric averaged over the rows that have a value: how many rows had none (though some did)."""
    counts = {}
    for metric in REGISTRY:
        if not any(metric.row_key in r for r in rows):
            continue
        if metric.aggregate is mean_of_available:
            missing = sum(r.get(metric.row_key) is None for r in rows)
            if 0 < missing < len(rows):
                counts[metric.name] = missing
    return counts


def mia_aucs(forget_rows: Sequence[Mapping[str, Any]], holdout_rows: Sequence[Mapping[str, Any]]) -> dict:
    """The AUC of every MIA score (forget vs holdout rows); a score missing on a side is left out."""
    result = {}
    for name in MIA_SCORES:
        key = BY_NAME[name].row_key
        forget = [r[key] for r in forget_rows if r.get(key) is not None]
        holdout = [r[key] for r in holdout_rows if r.get(key) is not None]
        if forget and holdout:
            result[name] = P.mia_auc(forget, holdout)
    return result

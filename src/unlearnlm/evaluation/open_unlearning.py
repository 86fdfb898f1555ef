"""open-unlearning's TOFU evaluation (locuslab/open-unlearning), reproduced: `suite=open-unlearning`.

Its numbers come from the records of unlearnlm's one inference pass, run under its conventions
(docs/formulas.md, "open-unlearning's TOFU evaluation"):
  - the prompt format of its chat rule (data.formatting's ``open_unlearning`` kind: labels run
    from the generation prompt to the end of the rendered conversation, the template's end-of-turn
    tokens and an EOS included), or the tags of its Llama-2 targets;
  - the attention mask "token != pad" on every sequence (``PadMaskedModel``), pad = EOS when the
    tokenizer has none, as its collator builds it;
  - at most ``MAX_NEW_TOKENS`` new tokens per answer (its generation config);
  - Min-K%, Min-K%++, exact memorisation and extraction strength without the final label, ES's
    1/n floor (the privacy defaults).
Each number is written under its name, as its TOFU_SUMMARY.json and TOFU_EVAL.json hold them;
``read_results`` reads those files, its own or open-unlearning's, for ``unlearnlm report`` and for
the retain model's reference (Forget Quality, privleak).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import UserError
from . import privacy as P

SUITE = "open-unlearning"
SUITES = ("unlearnlm", SUITE)
MAX_NEW_TOKENS = 200  # its configs/generation/default.yaml
EPSILON = 1e-10  # the 1e-10 its truth ratio, normalised probability and privleak add to denominators
MIN_K = 0.4  # its configs/eval/tofu_metrics/mia_min_k.yaml
PRIVLEAK_REFERENCE_AUC = 0.5  # its privleak.yaml ref_value, without a retain model
SUMMARY_FILE = "TOFU_SUMMARY.json"
EVAL_FILE = "TOFU_EVAL.json"
# unlearnlm's TOFU set -> the prefix of its metric names
PREFIX = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf"}
# Model Utility: the harmonic mean of these nine (its model_utility.yaml)
MODEL_UTILITY_PARTS = ("retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
                       "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
                       "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio")
# What its TOFU summary holds (configs/eval/tofu.yaml), then the memorisation and MIA metrics it
# ships commented out there, in the order they are printed.
SUMMARY_NAMES = ("forget_quality", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio", "model_utility",
                 "privleak", "extraction_strength", "exact_memorization", "mia_min_k", "mia_min_k_plus_plus",
                 "mia_loss", "mia_zlib")


# ---- conventions of its inference ---------------------------------------------------------------


def suite_format(spec):
    """The prompt format its evaluation uses for a model unlearnlm would score in ``spec``: its chat
    rule where unlearnlm would use the plain chat template; tags and its own presets as they are."""
    from ..data.formatting import FormatSpec

    return FormatSpec("open_unlearning", preset=SUITE) if spec.kind == "chat_template" else spec


class PadMaskedModel:
    """The model, called and generating with attention only where the token is not the pad token:
    its collator's mask (``input_ids.ne(pad_token_id)``), which also hides every occurrence of the
    pad token inside a sequence (where pad = EOS = a template's end-of-turn token, each turn's end)."""

    def __init__(self, model, pad_id: int):
        self._model, self._pad_id = model, pad_id

    def _masked(self, input_ids, attention_mask):
        keep = input_ids.ne(self._pad_id)
        return keep.to(attention_mask.dtype) * attention_mask if attention_mask is not None else keep.long()

    def __call__(self, input_ids=None, attention_mask=None, **kwargs):
        return self._model(input_ids=input_ids, attention_mask=self._masked(input_ids, attention_mask), **kwargs)

    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        return self._model.generate(input_ids=input_ids, attention_mask=self._masked(input_ids, attention_mask),
                                    **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)


# ---- its formulas -------------------------------------------------------------------------------


def truth_ratios(correct_losses: Sequence[float], wrong_losses: Sequence[Sequence[float]]) -> np.ndarray:
    """Per row: exp(−mean_j wrong loss_j) / (exp(−correct loss) + 1e-10) (wrong over correct)."""
    correct = np.exp(-np.asarray(correct_losses, dtype=np.float64))
    wrong = np.exp(-np.asarray([np.mean(w) for w in wrong_losses], dtype=np.float64))
    return wrong / (correct + EPSILON)


def closer_to_1_better(ratios: Sequence[float]) -> float:
    """The forget set's aggregate: mean(min(tr, 1 / (tr + 1e-10)))."""
    tr = np.asarray(ratios, dtype=np.float64)
    return float(np.mean(np.minimum(tr, 1 / (tr + EPSILON))))


def true_better(ratios: Sequence[float]) -> float:
    """The other sets' aggregate: mean(max(0, 1 − tr))."""
    return float(np.mean(np.maximum(0, 1 - np.asarray(ratios, dtype=np.float64))))


def normalised_probabilities(correct_losses: Sequence[float], wrong_losses: Sequence[Sequence[float]]) -> np.ndarray:
    """Per row: p / (p + Σ_j p_j + 1e-10), p = exp(−average loss)."""
    correct = np.exp(-np.asarray(correct_losses, dtype=np.float64))
    wrong = np.asarray([np.exp(-np.asarray(w, dtype=np.float64)).sum() for w in wrong_losses])
    return correct / (correct + wrong + EPSILON)


def privleak(auc: float, reference_auc: Optional[float]) -> float:
    """(A − A_R) / (A_R + 1e-10) × 100 with A = 1 − AUC, A_R = 1 − the retain model's AUC (else 0.5)."""
    score = 1 - auc
    reference = 1 - (PRIVLEAK_REFERENCE_AUC if reference_auc is None else reference_auc)
    return (score - reference) / (reference + EPSILON) * 100


def min_k_of(values: Sequence[float], k: float = MIN_K) -> float:
    """Its Min-K% of one row's log-probabilities (final label already left out): 0 when none."""
    return P.min_k_score(values, k) if len(values) else 0.0


def min_k_plus_plus_of(values, mu, sigma, k: float = MIN_K) -> float:
    return P.min_k_plus_plus_score(values, mu, sigma, k) if len(values) else 0.0


def extraction_strength_of(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Its ES: with the floor; 0 for a row without tokens (counted in the mean)."""
    return P.extraction_strength(predictions, labels, floor=True) if len(labels) else 0.0


# ---- from unlearnlm's records to its numbers ------------------------------------------------------


def _without_final_label(record: Mapping[str, Any], key: str) -> list:
    return list(record.get(key) or [])[:-1]


def _ground_truth(record: Mapping[str, Any], formatter) -> str:
    """Its ROUGE reference: the decoded conversation minus the decoded prompt, stripped."""
    if formatter is None:
        return record["ground_truth"]
    tokenizer = formatter.tokenizer
    encoded = formatter.encode(record["question"], record["ground_truth"])

    def text(ids):
        return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=True)

    return text(encoded.input_ids).replace(text(formatter.prompt_ids(record["question"])), "").strip()


def _label_text(record: Mapping[str, Any], formatter) -> str:
    """ZLib's text: the decoded label tokens, special tokens skipped."""
    if formatter is None:
        return record["ground_truth"]
    encoded = formatter.encode(record["question"], record["ground_truth"])
    return formatter.tokenizer.decode(list(encoded.input_ids[encoded.prompt_length:]), skip_special_tokens=True)


def _by_index(values: Sequence[Any], key: str = "score") -> dict:
    return {str(i): {key: (None if v is None else float(v))} for i, v in enumerate(values)}


def _result(agg_value, values=None, key: str = "score") -> dict:
    result = {"agg_value": None if agg_value is None else float(agg_value)}
    if values is not None:
        result["value_by_index"] = _by_index(values, key)
    return result


def set_logs(name: str, records: Sequence[Mapping[str, Any]], formatter=None) -> dict:
    """The metrics of one TOFU set under its names (``PREFIX``), with per-row values."""
    from .metrics import rouge_l_recall

    prefix = PREFIX[name]
    logs: dict[str, dict] = {}
    truth = [r["truth_loss"] for r in records]
    probs = [math.exp(-loss) for loss in truth]
    logs[f"{prefix}_Q_A_Prob"] = _result(np.mean(probs), probs, "prob")
    rouge = [rouge_l_recall(r["generation"], _ground_truth(r, formatter)) for r in records]
    logs[f"{prefix}_Q_A_ROUGE"] = _result(np.mean(rouge), rouge, "rougeL_recall")
    if all(r.get("perturbed_losses") for r in records):
        wrong = [r["perturbed_losses"] for r in records]
        correct = truth if prefix in ("ra", "wf") else [r["paraphrased_loss"] for r in records]
        tr = truth_ratios(correct, wrong)
        forget = prefix == "forget"
        # its forget set's truth ratio is named forget_truth_ratio (the metric's package name)
        key = "forget_truth_ratio" if forget else f"{prefix}_Truth_Ratio"
        logs[key] = _result(closer_to_1_better(tr) if forget else true_better(tr), tr)
        if prefix in ("ra", "wf"):
            normalised = normalised_probabilities(truth, wrong)
            logs[f"{prefix}_Q_A_Prob_normalised"] = _result(np.mean(normalised), normalised, "prob")
    return logs


def privacy_logs(forget: Sequence[Mapping[str, Any]], holdout: Sequence[Mapping[str, Any]] | None,
                 formatter=None) -> dict:
    """Extraction strength and exact memorisation on the forget set; the MIA AUCs against holdout."""
    logs: dict[str, dict] = {}
    if not forget or "truth_token_ids" not in forget[0]:
        return logs
    es = [extraction_strength_of(_without_final_label(r, "truth_predicted_ids"),
                                 _without_final_label(r, "truth_token_ids")) for r in forget]
    logs["extraction_strength"] = _result(np.mean(es), es)
    em = [P.exact_memorisation([p == y for p, y in zip(_without_final_label(r, "truth_predicted_ids"),
                                                        _without_final_label(r, "truth_token_ids"), strict=True)])
          if len(r["truth_token_ids"]) > 1 else None for r in forget]
    kept = [v for v in em if v is not None]
    logs["exact_memorization"] = _result(np.mean(kept) if kept else None, em)
    if not holdout:
        return logs

    def scores(rows, score) -> list[float]:
        return [score(r) for r in rows]

    attacks = {
        "mia_min_k": lambda r: min_k_of(_without_final_label(r, "truth_token_log_probs")),
        "mia_min_k_plus_plus": lambda r: min_k_plus_plus_of(*(_without_final_label(r, k) for k in (
            "truth_token_log_probs", "truth_token_mu", "truth_token_sigma"))),
        "mia_loss": lambda r: r["truth_loss"],
        "mia_zlib": lambda r: P.zlib_score(r["truth_loss"], _label_text(r, formatter)),
    }
    for name, score in attacks.items():
        forget_scores, holdout_scores = scores(forget, score), scores(holdout, score)
        auc = P.mia_auc(forget_scores, holdout_scores)
        logs[name] = {"agg_value": auc, "auc": auc, "forget": _result(np.mean(forget_scores), forget_scores),
                      "holdout": _result(np.mean(holdout_scores), holdout_scores)}
    return logs


def tofu_logs(sets: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], formatter=None,
              retain_logs: Optional[Mapping[str, Any]] = None) -> dict:
    """Every metric of its TOFU evaluation (TOFU_EVAL.json's content) from unlearnlm's records.

    ``sets``: (set name, records) of forget, retain, real_authors, world_facts and holdout.
    ``retain_logs``: the retain model's TOFU_EVAL.json content (Forget Quality, privleak)."""
    by_name = dict(sets)
    logs: dict[str, dict] = {}
    for name in PREFIX:
        if by_name.get(name):
            logs.update(set_logs(name, by_name[name], formatter))
    logs.update(privacy_logs(by_name.get("forget") or [], by_name.get("holdout"), formatter))
    parts = [logs[p]["agg_value"] for p in MODEL_UTILITY_PARTS if p in logs]
    if len(parts) == len(MODEL_UTILITY_PARTS):
        from scipy.stats import hmean

        logs["model_utility"] = {"agg_value": float(hmean(parts))}
    if "mia_min_k" in logs:
        reference = (retain_logs or {}).get("mia_min_k") or {}
        logs["privleak"] = {"agg_value": privleak(logs["mia_min_k"]["agg_value"], reference.get("agg_value"))}
    retain_tr = retain_truth_ratios(retain_logs) if retain_logs else None
    if "forget_truth_ratio" in logs:
        fq = None
        if retain_tr is not None:
            from scipy.stats import ks_2samp

            forget_tr = [v["score"] for v in logs["forget_truth_ratio"]["value_by_index"].values()]
            fq = float(ks_2samp(forget_tr, retain_tr).pvalue)
        logs["forget_quality"] = {"agg_value": fq}
    return logs


def summary_of(logs: Mapping[str, Any]) -> dict:
    """TOFU_SUMMARY.json's content: the value of each summary metric that has one."""
    return {name: logs[name]["agg_value"] for name in SUMMARY_NAMES
            if name in logs and logs[name].get("agg_value") is not None}


def write_results(folder: str | Path, logs: Mapping[str, Any]) -> dict:
    from ..io import atomic_write_json

    summary = summary_of(logs)
    atomic_write_json(Path(folder) / EVAL_FILE, dict(sorted(logs.items())))
    atomic_write_json(Path(folder) / SUMMARY_FILE, summary)
    return summary


def format_numbers(summary: Mapping[str, Any]) -> str:
    lines = ["open-unlearning TOFU (its names and definitions):"]
    lines += [f"  {name:<22}{summary[name]:>12.6g}" for name in SUMMARY_NAMES if name in summary]
    return "\n".join(lines)


# ---- reading its files --------------------------------------------------------------------------


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path}: not readable JSON ({str(err).splitlines()[0][:120]})") from None


def read_logs(path: str | Path) -> dict:
    """A TOFU_EVAL.json (or the folder holding one): {metric: {"agg_value", "value_by_index"?, ...}}."""
    target = Path(path).expanduser()
    if target.is_dir():
        target = target / EVAL_FILE
    if not target.is_file():
        raise UserError(f"{target} does not exist")
    data = _load_json(target)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserError(f"{target}: not open-unlearning's TOFU_EVAL.json layout (an object of metric objects)")
    return data


def retain_logs(path: Optional[str]) -> Optional[dict]:
    """The retain model's logs for Forget Quality and privleak: the TOFU_EVAL.json that
    ``retain_eval`` names or holds (its own folder under this suite, or open-unlearning's); None
    when there is none."""
    if not path:
        return None
    target = Path(path).expanduser()
    if target.is_dir():
        target = target / EVAL_FILE
    return read_logs(target) if target.is_file() and target.name == EVAL_FILE else None


def is_foreign(path: Optional[str]) -> bool:
    """Whether ``retain_eval`` is open-unlearning's output (a TOFU_EVAL.json, or a folder with one
    and no unlearnlm records), which only this suite's numbers can read."""
    if not path:
        return False
    target = Path(path).expanduser()
    if target.is_file():
        return target.name == EVAL_FILE
    return (target / EVAL_FILE).is_file() and not (target / "records").is_dir()


def retain_truth_ratios(logs: Mapping[str, Any]) -> Optional[list[float]]:
    """The per-row forget truth ratios of a retain model's logs (what its Forget Quality reads)."""
    rows = (logs.get("forget_truth_ratio") or {}).get("value_by_index")
    if not isinstance(rows, dict) or not rows:
        return None
    values = [row.get("score") if isinstance(row, dict) else None for row in rows.values()]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise UserError("the retain model's forget_truth_ratio has a row without a numeric 'score'")
    return [float(v) for v in values]


def read_results(path: str | Path) -> dict:
    """The summary numbers of an open-unlearning TOFU evaluation: a TOFU_SUMMARY.json, a
    TOFU_EVAL.json, or a folder holding either (the summary preferred). Every value must be a
    number or null; a malformed file is a one-line error."""
    target = Path(path).expanduser()
    if target.is_dir():
        found = [target / f for f in (SUMMARY_FILE, EVAL_FILE) if (target / f).is_file()]
        if not found:
            raise UserError(f"{target} holds neither {SUMMARY_FILE} nor {EVAL_FILE}")
        target = found[0]
    if not target.is_file():
        raise UserError(f"{target} does not exist")
    data = _load_json(target)
    if not isinstance(data, dict):
        raise UserError(f"{target}: expected an object of metric names, got {type(data).__name__}")
    if target.name != SUMMARY_FILE and all(isinstance(v, dict) for v in data.values()):
        data = {name: value.get("agg_value") for name, value in data.items()}
    numbers = {}
    for name, value in data.items():
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise UserError(f"{target}: '{name}' is {type(value).__name__}, not a number")
        numbers[name] = None if value is None else float(value)
    return numbers

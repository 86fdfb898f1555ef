"""MUSE's evaluation (Shi et al., 2024) as MUSE's own code computes it; see docs/formulas.md.

- VerbMem_f: each verbmem prompt, tokenised with the tokenizer's special tokens, continued
  greedily for 128 new tokens; ROUGE-L F1 (stemmer off) of the continuation against the ground
  truth cut to its first 128 tokens (tokenised with special tokens too, so a BOS counts as one);
  mean × 100.
- KnowMem_f / KnowMem_r: the prompt is every in-context pair as "Question: {q}\\nAnswer: {a}\\n\\n",
  then "Question: {q}\\nAnswer: "; 32 greedy new tokens, cut before the first "\\n\\n", "\\nQuestion"
  or "Question:"; ROUGE-L F1 (stemmer off) against the answer; mean × 100.
- PrivLeak: each privleak text encoded as the tokenizer does by default (a BOS only where it
  adds one), every token after the first scored; Min-K% (k = 0.4) per
  text; the AUC of forget against holdout; privleak against a retrained model's AUC, or MUSE's
  published one for its retrained models.

Each set is run through the model once: one generation pass per generated set, one loss pass
per privleak set. Decoding is greedy, batched with left padding (MUSE runs one row at a time;
the tokens are the same up to float rounding).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import MuseEvalConfig
from ..data.text import load_rows
from ..errors import UserError
from .inference import greedy_new_tokens
from .metrics import rouge_l_scorer
from .privacy import PRIVLEAK_UNDEFINED, auc_rows_problem, mia_auc, min_k_score, privleak

logger = logging.getLogger(__name__)

VERBMEM_SET = "verbmem/forget"
KNOWMEM_SETS = {
    "knowmem_f": ("knowmem/forget_qa", "knowmem/forget_qa_icl"),
    "knowmem_r": ("knowmem/retain_qa", "knowmem/retain_qa_icl"),
}
PRIVLEAK_SETS = ("privleak/forget", "privleak/holdout")
KNOWMEM_STOP_STRINGS = ("\n\n", "\nQuestion", "Question:")
# MUSE's published AUC of its retrained models (Min-40%, forget against holdout), in MUSE's
# orientation, where a model that memorised the forget texts scores 0: that is A_R itself.
PUBLISHED_RETRAINED_A = {"news": 0.4772, "books": 0.5393}
# Which way is better for each number (for the table and the summary).
DIRECTIONS = {
    "verbmem_f": "lower = forgotten",
    "knowmem_f": "lower = forgotten",
    "knowmem_r": "higher = kept",
    "privleak": "closer to 0 = as retrained; -100 = memorised, > 0 = over-unlearned",
}


@dataclass
class MuseSets:
    verbmem: list[dict] = field(default_factory=list)
    # metric -> (questions and answers, in-context pairs)
    knowmem: dict[str, tuple[list[dict], list[dict]]] = field(default_factory=dict)
    privleak_forget: list[str] = field(default_factory=list)
    privleak_holdout: list[str] = field(default_factory=list)


def _first(rows: list, size: int) -> list:
    return rows[:size] if size else rows


def load_muse_sets(config: MuseEvalConfig, source: str) -> MuseSets:
    """The sets ``config.metrics`` read, each checked for its keys (before any model loads)."""
    sets = MuseSets()
    if "verbmem_f" in config.metrics:  # a blank prompt would ask the model to continue nothing
        sets.verbmem = _first(load_rows(VERBMEM_SET, source, ("prompt", "gt"), nonblank=("prompt",)), config.ds_size)
    for metric, (qa, icl) in KNOWMEM_SETS.items():
        if metric in config.metrics:
            sets.knowmem[metric] = (_first(load_rows(qa, source, ("question", "answer")), config.ds_size),
                                    load_rows(icl, source, ("question", "answer")))
    if "privleak" in config.metrics:
        forget, holdout = (_first([r["text"] for r in load_rows(s, source, ("text",), nonblank=("text",))],
                                  config.ds_size) for s in PRIVLEAK_SETS)
        too_few = auc_rows_problem(len(forget), len(holdout))
        if too_few:
            raise UserError(f"privleak: {too_few} ({PRIVLEAK_SETS[0]}, {PRIVLEAK_SETS[1]}, evaluation.ds_size="
                            f"{config.ds_size}); raise evaluation.ds_size or leave privleak out of evaluation.metrics")
        sets.privleak_forget, sets.privleak_holdout = forget, holdout
    return sets


# ---- prompts, cuts, ROUGE ---------------------------------------------------------------


def encode_with_special_tokens(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def knowmem_prompt(icl_pairs: Sequence[dict], question: str) -> str:
    context = "".join(f"Question: {p['question']}\nAnswer: {p['answer']}\n\n" for p in icl_pairs)
    return context + f"Question: {question}\nAnswer: "


def cut_at_stop_strings(text: str, stops: Sequence[str] = KNOWMEM_STOP_STRINGS) -> str:
    """``text`` up to the earliest occurrence of any stop string."""
    end = len(text)
    for stop in stops:
        found = text.find(stop)
        if found != -1:
            end = min(end, found)
    return text[:end]


def decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=True)


def verbmem_reference(tokenizer, gt: str, max_tokens: int) -> str:
    """The ground truth cut to its first ``max_tokens`` tokens, special tokens counted (MUSE's cut)."""
    return decode(tokenizer, encode_with_special_tokens(tokenizer, gt)[:max_tokens])


def rouge_l_f1(reference: str, prediction: str) -> float:
    """ROUGE-L F1 with rouge_score's default tokenizer and no stemming (MUSE's setting)."""
    return float(rouge_l_scorer(use_stemmer=False).score(reference, prediction)["rougeL"].fmeasure)


# ---- the model passes -------------------------------------------------------------------


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _eos_ids(model, tokenizer) -> list[int]:
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    configured = configured if isinstance(configured, list) else [configured] if configured is not None else []
    return [i for i in dict.fromkeys([tokenizer.eos_token_id, *configured]) if i is not None]


def _batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.inference_mode()
def greedy_continuations(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                         batch_size: int = 8, progress: str | None = None) -> list[list[int]]:
    """Greedy new tokens of each prompt, up to ``max_new_tokens`` and cut before the first EOS
    (where MUSE's one-row generation stops)."""
    from tqdm.auto import tqdm

    pad_id, eos_ids = _pad_id(tokenizer), _eos_ids(model, tokenizer)
    outputs: list[list[int]] = [[] for _ in prompts]
    batches = _batches_by_length([len(p) for p in prompts], batch_size)
    for batch in tqdm(batches, desc=progress, disable=progress is None, leave=False):
        # One pass: MUSE's continuations mostly run to the budget.
        generated = greedy_new_tokens(model, [prompts[i] for i in batch], [max_new_tokens] * len(batch),
                                      pad_id, eos_ids)
        for i, tokens in zip(batch, generated):
            outputs[i] = tokens
    return outputs


def scored_ids(tokenizer, text: str, max_length: int | None = None) -> list[int]:
    """The text's ids as MUSE encodes them (the special tokens the tokenizer itself adds: a BOS
    only where it adds one), cut to ``max_length``; the first id is context only."""
    ids = encode_with_special_tokens(tokenizer, text)
    return ids[:max_length] if max_length else ids


@torch.inference_mode()
def text_token_log_probs(model, tokenizer, texts: Sequence[str], batch_size: int = 4,
                         max_length: int | None = None, progress: str | None = None) -> list[np.ndarray]:
    """log p(token_t | tokens before t) for every token after the first of each text."""
    from tqdm.auto import tqdm

    encoded = [scored_ids(tokenizer, t, max_length) for t in texts]
    pad_id, device = _pad_id(tokenizer), _device(model)
    result: list[np.ndarray] = [np.zeros(0) for _ in texts]
    for batch in tqdm(_batches_by_length([len(e) for e in encoded], batch_size), desc=progress,
                      disable=progress is None, leave=False):
        width = max(len(encoded[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            input_ids[row, : len(encoded[i])] = torch.tensor(encoded[i], dtype=torch.long)
            attention_mask[row, : len(encoded[i])] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        for row, i in enumerate(batch):
            n = len(encoded[i])
            log_probs = torch.log_softmax(logits[row, : n - 1].float(), dim=-1)
            targets = input_ids[row, 1:n].to(log_probs.device)
            result[i] = log_probs.gather(-1, targets[:, None])[:, 0].cpu().numpy().astype(np.float64)
    return result


# ---- the metrics ------------------------------------------------------------------------


def evaluate_verbmem(model, tokenizer, rows: Sequence[dict], config: MuseEvalConfig) -> tuple[float, list[dict]]:
    prompts = [encode_with_special_tokens(tokenizer, r["prompt"]) for r in rows]
    continuations = greedy_continuations(model, tokenizer, prompts, config.verbmem_max_new_tokens,
                                         config.generation_batch_size, progress="VerbMem")
    records = []
    for row, tokens in zip(rows, continuations, strict=True):
        output = decode(tokenizer, tokens)
        reference = verbmem_reference(tokenizer, row["gt"], config.verbmem_max_new_tokens)
        records.append({"prompt": row["prompt"], "gt": reference, "output": output,
                        "rougeL_f1": rouge_l_f1(reference, output)})
    return float(np.mean([r["rougeL_f1"] for r in records]) * 100), records


def evaluate_knowmem(model, tokenizer, qa: Sequence[dict], icl: Sequence[dict], config: MuseEvalConfig,
                     name: str = "KnowMem") -> tuple[float, list[dict]]:
    texts = [knowmem_prompt(icl, r["question"]) for r in qa]
    prompts = [encode_with_special_tokens(tokenizer, t) for t in texts]
    continuations = greedy_continuations(model, tokenizer, prompts, config.knowmem_max_new_tokens,
                                         config.generation_batch_size, progress=name)
    records = []
    for row, tokens in zip(qa, continuations, strict=True):
        output = cut_at_stop_strings(decode(tokenizer, tokens))
        records.append({"question": row["question"], "answer": row["answer"], "output": output,
                        "rougeL_f1": rouge_l_f1(row["answer"], output)})
    return float(np.mean([r["rougeL_f1"] for r in records]) * 100), records


def privleak_scores(model, tokenizer, sets: MuseSets, config: MuseEvalConfig) -> dict[str, list[float]]:
    scores = {}
    for name, texts in (("forget", sets.privleak_forget), ("holdout", sets.privleak_holdout)):
        log_probs = text_token_log_probs(model, tokenizer, texts, config.loss_batch_size,
                                         config.privleak_max_length, progress=f"PrivLeak {name}")
        empty = [i for i, lp in enumerate(log_probs) if lp.size == 0]
        if empty:
            raise UserError(f"privleak/{name} row {empty[0] + 1} has no token after the first: nothing to score")
        scores[name] = [min_k_score(lp, config.min_k) for lp in log_probs]
    return scores


def evaluate_muse(model, tokenizer, sets: MuseSets, config: MuseEvalConfig,
                  reference_auc: float | None = None, reference_name: str | None = None) -> dict:
    """Every metric of ``config.metrics``: {"metrics", "directions", "privleak_reference", "rows"}.

    ``reference_auc``: a retrained model's MIA AUC (this module's orientation); without it,
    MUSE's published A_R for ``config.corpus``.
    """
    from ..training.models import refuse_broken_model

    first = (sets.verbmem[:1] and sets.verbmem[0]["prompt"]) or next(
        (qa[0]["question"] for qa, _ in sets.knowmem.values() if qa), None) or sets.privleak_forget[0]
    refuse_broken_model(model, encode_with_special_tokens(tokenizer, first),
                        getattr(model, "name_or_path", "") or "being scored")
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    rows: dict[str, object] = {}
    reference = None
    try:
        if "verbmem_f" in config.metrics:
            metrics["verbmem_f"], rows["verbmem_f"] = evaluate_verbmem(model, tokenizer, sets.verbmem, config)
        for metric, (qa, icl) in sets.knowmem.items():
            metrics[metric], rows[metric] = evaluate_knowmem(model, tokenizer, qa, icl, config, name=metric)
        if "privleak" in config.metrics:
            scores = privleak_scores(model, tokenizer, sets, config)
            auc = mia_auc(scores["forget"], scores["holdout"])
            if reference_auc is None:
                reference_auc = 1.0 - PUBLISHED_RETRAINED_A[config.corpus]
                reference_name = f"MUSE's published retrained model ({config.corpus}: A_R = "\
                                 f"{PUBLISHED_RETRAINED_A[config.corpus]})"
                logger.info("PrivLeak against %s", reference_name)
            value, _ = privleak(auc, reference_auc)
            metrics["privleak"], metrics["privleak_auc"] = value, auc
            reference = {"model": reference_name, "auc": reference_auc}
            if value is None:  # said, never shown as a number
                reference["undefined"] = PRIVLEAK_UNDEFINED
                logger.warning("PrivLeak undefined: %s", PRIVLEAK_UNDEFINED)
            rows["privleak"] = {"min_k": config.min_k, **scores}
    finally:
        model.train(was_training)
    return {"metrics": metrics, "directions": {k: DIRECTIONS[k] for k in metrics if k in DIRECTIONS},
            "privleak_reference": reference, "rows": rows}

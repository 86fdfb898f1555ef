"""One inference pass over an evaluation's sets, producing the per-row records every metric reads.

Two batched passes over the model, both under ``torch.inference_mode`` and both over every
set at once (batches of similar length, drawn from all sets):
  - greedy generation: left-padded prompts, KV cache, batches of similar prompt length, at
    most ``max_length`` tokens per row in all (prompt + output, 200 as in the reference);
  - per-sequence losses of the ground truth, the "paraphrased" and every perturbed answer:
    question+answer sequences (the training format), NLL summed over the answer tokens (EOS
    included) and divided by their number. By default a question's prompt is run once for all
    its answers (``shared_prompt_losses``); ``share_prompts=false`` runs each sequence whole.
For the ground truth of every row the loss pass also keeps, from the logits it already
projected, each label token's log-probability, the mean and standard deviation of log p under the
position's next-token distribution (Min-K%++), and the argmax prediction (exact memorisation,
extraction strength): the privacy metrics need no second forward.
Prompts use the engine's ``PromptFormat``, so a model is scored on exactly the format it was
trained on.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ..data.batches import length_batches, pad_encoded
from ..data.formatting import EncodedQA, PromptFormat
from ..methods.losses import IGNORE, answer_logits, sequence_nll, takes_logits_to_keep
from .privacy import VARIANCE_FLOOR
from .sets import EvalSet

Pair = tuple[str, str]


@dataclass
class InferenceTimes:
    generation_s: float = 0.0
    loss_s: float = 0.0


@dataclass
class TokenStats:
    """Per label token of one answer (EOS included): what the privacy metrics read."""

    log_probs: list[float]  # log p(y_t | everything before it)
    mu: list[float]  # Σ_v p_v log p_v at that position
    sigma: list[float]  # sqrt(Σ_v p_v (log p_v)² − μ²), the variance clamped at 1e-6
    labels: list[int]  # y_t
    predicted: list[int]  # argmax_v p_v


def token_stats(logits: torch.Tensor, targets: torch.Tensor) -> TokenStats:
    """TokenStats of ``targets`` [n] from the logits [n, V] that predict them."""
    log_p = logits.double().log_softmax(dim=-1)  # float64: z-scores divide by small σ
    p = log_p.exp()
    p_log_p = torch.where(p > 0, p * log_p, 0.0)  # 0 · log 0 = 0, not nan
    mu = p_log_p.sum(dim=-1)
    second = torch.where(p > 0, p_log_p * log_p, 0.0).sum(dim=-1)
    sigma = (second - mu.square()).clamp(min=VARIANCE_FLOOR).sqrt()
    return TokenStats(
        log_probs=log_p.gather(1, targets[:, None])[:, 0].tolist(), mu=mu.tolist(), sigma=sigma.tolist(),
        labels=targets.tolist(), predicted=logits.argmax(dim=-1).tolist(),
    )


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _eos_ids(model, formatter: PromptFormat) -> list[int]:
    """The formatter's EOS plus any the model's generation config names (chat models have several)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    configured = configured if isinstance(configured, list) else [configured] if configured is not None else []
    return list(dict.fromkeys([formatter.eos_token_id, *configured]))


def _pad_id(formatter: PromptFormat) -> int:
    """The tokenizer's pad token, else EOS (padding is masked out either way)."""
    pad_id = formatter.tokenizer.pad_token_id
    return pad_id if pad_id is not None else formatter.eos_token_id


def greedy_new_tokens(model, prompts: Sequence[Sequence[int]], budgets: Sequence[int], pad_id: int,
                      eos_ids: Sequence[int]) -> list[list[int]]:
    """Greedy new tokens of each prompt (one left-padded batch), at most its budget, cut before
    the first EOS: the tokens of ``model.generate`` (greedy, KV cache), computed the same way
    (prefill with the positions generate derives from the mask, logits of the last position
    only, argmax in float32), except that a row leaves the batch, and its KV cache rows with it,
    as soon as it ends. A batch of answers of different lengths then pays each step for the rows
    still running, and one answer that never ends (a damaged model's) runs on alone."""
    device, eos = _device(model), set(eos_ids)
    generated: list[list[int]] = [[] for _ in prompts]
    running = [i for i in range(len(prompts)) if budgets[i] > 0]
    if not running:
        return generated
    width = max(len(prompts[i]) for i in running)
    input_ids = torch.full((len(running), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(running), width), dtype=torch.long)
    for row, i in enumerate(running):  # left padding: every prompt ends where generation starts
        input_ids[row, width - len(prompts[i]):] = torch.tensor(list(prompts[i]), dtype=torch.long)
        mask[row, width - len(prompts[i]):] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    keep_last = {"logits_to_keep": 1} if takes_logits_to_keep(model) else {}
    with torch.no_grad():
        return _decode(model, running, generated, budgets, input_ids, mask, eos, keep_last)


def _decode(model, running: list[int], generated: list[list[int]], budgets: Sequence[int], input_ids, mask,
            eos: set[int], keep_last: dict) -> list[list[int]]:
    device = input_ids.device
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    output = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **keep_last)
    cache = output.cache if hasattr(output, "cache") else output.past_key_values
    # transformers 5.25 names the cache argument `cache`; earlier releases `past_key_values`.
    cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    # A cache that cannot drop rows keeps its ended rows in the batch; their tokens are not read.
    ended: set[int] = set()
    while True:
        tokens = output.logits[:, -1].to(dtype=torch.float32).argmax(dim=-1).tolist()
        alive = []
        for row, (i, token) in enumerate(zip(running, tokens)):
            if row in ended or token in eos:
                continue
            generated[i].append(token)
            if len(generated[i]) < budgets[i]:
                alive.append(row)
        if not alive:
            return generated
        if len(alive) < len(running) - len(ended):
            if hasattr(cache, "batch_select_indices"):
                index = torch.tensor(alive, device=device)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                running, tokens = [running[row] for row in alive], [tokens[row] for row in alive]
            else:
                ended = set(range(len(running))) - set(alive)
        mask = torch.cat([mask, mask.new_ones((len(running), 1))], dim=-1)
        positions = positions[:, -1:] + 1
        output = model(input_ids=torch.tensor(tokens, device=device)[:, None], attention_mask=mask,
                       position_ids=positions, use_cache=True, **{cache_argument: cache}, **keep_last)


def generate_answers(
    model,
    formatter: PromptFormat,
    questions: Sequence[str],
    max_length: int = 200,
    batch_size: int = 32,
    group_by_length: bool = True,
    max_new_tokens: Optional[int] = None,
) -> list[str]:
    """Greedy answers, each at most ``max_length - len(its prompt)`` new tokens, or
    ``max_new_tokens`` when given (open-unlearning's budget)."""
    tokenizer = formatter.tokenizer
    pad_id = _pad_id(formatter)
    eos_ids = _eos_ids(model, formatter)
    prompts = [formatter.prompt_ids(q) for q in questions]
    answers = [""] * len(questions)
    # A prompt that already fills the budget gets no answer (as the reference's max_length).
    budgets = [max_new_tokens if max_new_tokens else max_length - len(p) for p in prompts]
    fits = [i for i, budget in enumerate(budgets) if budget > 0]
    for batch in length_batches([len(prompts[i]) for i in fits], batch_size, sort=group_by_length):
        rows = [fits[b] for b in batch]
        new_tokens = greedy_new_tokens(model, [prompts[i] for i in rows], [budgets[i] for i in rows],
                                       pad_id, eos_ids)
        for i, tokens in zip(rows, new_tokens):
            answers[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return answers


def sequence_losses(
    model,
    formatter: PromptFormat,
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 16,
    group_by_length: bool = True,
    pad_to: Optional[int] = None,
    answer_logits_only: bool = True,
    token_details: dict[Pair, TokenStats | None] | None = None,
) -> list[tuple[float, int]]:
    """(NLL summed over answer tokens, number of answer tokens) of each (question, answer).

    ``pad_to`` pads every sequence to that many tokens (the reference's 500) and
    ``answer_logits_only=False`` projects every position onto the vocabulary (as the reference):
    the values do not change, only the cost. Every pair that is a key of ``token_details`` gets
    its ``TokenStats`` written there, from the same logits."""
    pad_id = _pad_id(formatter)
    # The same pair occurs more than once (real authors: the "paraphrased" answer is the answer).
    unique = list(dict.fromkeys(pairs))
    encoded: list[EncodedQA] = [formatter.encode(q, a) for q, a in unique]
    results: dict[tuple[str, str], tuple[float, int]] = {}
    device = _device(model)
    for batch in length_batches([len(e.input_ids) for e in encoded], batch_size, sort=group_by_length):
        padded = pad_encoded([encoded[i] for i in batch], pad_id, mask_prompt=True, pad_to=pad_to)
        padded = {k: v.to(device) for k, v in padded.items()}
        logits, labels = answer_logits(model, padded, trim=answer_logits_only)
        nll = sequence_nll(logits, labels).tolist()
        counts = (padded["labels"][:, 1:] != IGNORE).sum(dim=-1).tolist()
        for k, i in enumerate(batch):
            results[unique[i]] = (nll[k], counts[k])
            if token_details is not None and unique[i] in token_details:
                mask = labels[k, 1:] != IGNORE
                token_details[unique[i]] = token_stats(logits[k, :-1][mask], labels[k, 1:][mask])
    return [results[p] for p in pairs]


def supports_shared_prompts(model) -> bool:
    """Whether ``shared_prompt_losses`` can run on ``model``: it passes its own 4D float mask and
    position ids, which eager and SDPA attention honour (flash attention does not take a mask)."""
    import inspect

    config = getattr(model, "config", None)
    forward = getattr(model, "forward", None)
    takes_positions = forward is not None and "position_ids" in inspect.signature(forward).parameters
    return takes_positions and getattr(config, "_attn_implementation", None) in ("eager", "sdpa")


def shared_prompt_losses(
    model,
    formatter: PromptFormat,
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 16,
    token_details: dict[Pair, TokenStats | None] | None = None,
) -> list[tuple[float, int]]:
    """What ``sequence_losses`` returns (``token_details`` too), with each question's prompt run once.

    A question and all its answers (truth, paraphrase, perturbed: up to seven) become one row,
    prompt + answer 1 + answer 2 + ...; a 4D mask lets each answer see the prompt and itself
    only, and position ids restart every answer where the prompt ends. Every answer token then
    sees exactly the tokens, at the positions, it sees in its own prompt + answer sequence, so
    the values are those of the separate sequences up to float rounding; the prompt (most of a
    short QA pair) is computed once instead of once per answer. ``batch_size`` counts answers,
    as ``sequence_losses``'s counts sequences."""
    pad_id = _pad_id(formatter)
    # Grouped by the prompt's token ids as each whole sequence encodes them (the tags format
    # tokenises question and answer together; its prompt tokens are shared when they agree).
    answers_of: dict[tuple[int, ...], list[tuple[tuple[str, str], tuple[int, ...]]]] = {}
    for pair in dict.fromkeys(pairs):
        encoded = formatter.encode(*pair)
        prompt = encoded.input_ids[: encoded.prompt_length]
        answers_of.setdefault(prompt, []).append((pair, encoded.input_ids[encoded.prompt_length :]))
    prompts = list(answers_of)
    answer_ids = [[ids for _, ids in answers_of[p]] for p in prompts]
    lengths = [len(p) + sum(len(a) for a in answers) for p, answers in zip(prompts, answer_ids)]
    results: dict[tuple[str, str], tuple[float, int]] = {}
    device = _device(model)
    # Longest first; each batch holds about batch_size answers.
    for batch in length_batches(lengths, batch_size, weights=[len(answers) for answers in answer_ids]):
        packed = _pack_shared_prompts([prompts[i] for i in batch], [answer_ids[i] for i in batch], pad_id)
        batch_pairs = [answers_of[prompts[batch[i]]][n][0] for i, n in packed["answer_of"]]
        detailed = [k for k, pair in enumerate(batch_pairs) if token_details is not None and pair in token_details]
        nll, stats = _packed_nll(model, packed, device, detailed)
        for k, (i, n) in enumerate(packed["answer_of"]):
            pair, ids = answers_of[prompts[batch[i]]][n]
            results[pair] = (nll[k], len(ids))
        for k, value in stats.items():
            token_details[batch_pairs[k]] = value
    return [results[p] for p in pairs]


def _pack_shared_prompts(prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[Sequence[int]]],
                         pad_id: int) -> dict:
    """Rows of prompt + answers with segment ids (0 prompt, k answer k, -1 padding), position ids,
    and for every answer token: its row, the position whose logits predict it, and its id."""
    width = max(len(p) + sum(len(a) for a in row) for p, row in zip(prompts, answers))
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    segments = torch.full((len(prompts), width), -1, dtype=torch.long)
    positions = torch.zeros((len(prompts), width), dtype=torch.long)
    rows, sources, targets, owners, answer_of = [], [], [], [], []
    for r, (prompt, row_answers) in enumerate(zip(prompts, answers)):
        m = len(prompt)
        input_ids[r, :m] = torch.tensor(prompt)
        segments[r, :m] = 0
        positions[r, :m] = torch.arange(m)
        start = m
        for n, answer in enumerate(row_answers):
            k = len(answer)
            input_ids[r, start : start + k] = torch.tensor(answer)
            segments[r, start : start + k] = n + 1
            positions[r, start : start + k] = torch.arange(m, m + k)
            # Token t is predicted from the prompt's last position (t = 0) or the answer's own t - 1.
            rows += [r] * k
            sources += [m - 1] + list(range(start, start + k - 1))
            targets += list(answer)
            owners += [len(answer_of)] * k
            answer_of.append((r, n))
            start += k
    return {"input_ids": input_ids, "segments": segments, "positions": positions,
            "rows": torch.tensor(rows), "sources": torch.tensor(sources), "targets": torch.tensor(targets),
            "owners": torch.tensor(owners), "answer_of": answer_of,
            "first_source": min(len(p) for p in prompts) - 1}


def _packed_nll(model, packed: dict, device, detailed: Sequence[int] = ()) -> tuple[list[float], dict[int, TokenStats]]:
    """Each packed answer's NLL, and the TokenStats of the answers numbered in ``detailed``."""
    segments = packed["segments"]
    width = segments.shape[1]
    query, key = segments[:, :, None], segments[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & ((key == 0) | (key == query)) & (query >= 0)
    allowed |= torch.eye(width, dtype=torch.bool)  # padding rows see themselves: no empty softmax
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    inputs = {"input_ids": packed["input_ids"].to(device), "position_ids": packed["positions"].to(device),
              "attention_mask": mask[:, None].to(device)}
    offset = packed["first_source"] if takes_logits_to_keep(model) else 0
    if offset:
        inputs["logits_to_keep"] = width - offset  # no label is predicted before the shortest prompt ends
    logits = model(**inputs).logits
    picked = logits[packed["rows"].to(device), packed["sources"].to(device) - offset].float()
    token_nll = torch.nn.functional.cross_entropy(picked, packed["targets"].to(device), reduction="none")
    totals = torch.zeros(len(packed["answer_of"]), device=device).index_add_(0, packed["owners"].to(device), token_nll)
    stats = {}
    owners = packed["owners"].to(device)
    for k in detailed:  # only the ground truths: a seventh of the tokens of a TOFU row
        rows = owners == k
        stats[k] = token_stats(picked[rows], packed["targets"].to(device)[rows])
    return totals.tolist(), stats


def _avg(nll_and_count: tuple[float, int]) -> float:
    nll, count = nll_and_count
    return nll / max(count, 1)


def infer_sets(
    model,
    formatter: PromptFormat,
    sets: Sequence[tuple[EvalSet, Sequence[dict]]],
    max_length: int = 200,
    generation_batch_size: int = 64,
    loss_batch_size: int = 16,
    times: Optional[InferenceTimes] = None,
    log: Callable[[str], None] = lambda message: None,
    group_by_length: bool = True,
    pad_to: Optional[int] = None,
    answer_logits_only: bool = True,
    share_prompts: bool = True,
    keep_token_values: bool = True,
    max_new_tokens: Optional[int] = None,
) -> list[list[dict]]:
    """Per-row records of each set: generation, its tokens, and every loss the metrics need.

    With ``group_by_length`` the questions of every set are generated in one pass, and the loss
    sequences of every set scored in another, in batches of similar length: a generation batch
    runs as many steps as its longest answer, so fewer, fuller batches take fewer steps. Without
    it, set by set in set order (the reference's way). ``keep_token_values`` keeps each ground
    truth's per-token values (the privacy metrics' input) from the same logits."""
    times = times if times is not None else InferenceTimes()
    was_training = model.training
    model.eval()
    pooled = [list(range(len(sets)))] if group_by_length else [[k] for k in range(len(sets))]
    generations: list[list[str]] = [[] for _ in sets]
    losses: list[list[tuple[float, int]]] = [[] for _ in sets]
    pairs = [_loss_pairs(eval_set, rows) for eval_set, rows in sets]
    details: dict[Pair, TokenStats | None] = {}  # the ground truths' per-token values
    try:
        with torch.inference_mode():
            for group in pooled:
                names = ", ".join(sets[k][0].name for k in group)
                # A loss-only set (holdout rows) needs no generation.
                questions = [row["question"] for k in group if not sets[k][0].loss_only for row in sets[k][1]]
                unique = list(dict.fromkeys(questions))  # the same question is answered once
                started = time.perf_counter()
                answers = dict(zip(unique, generate_answers(
                    model, formatter, unique, max_length, generation_batch_size, group_by_length, max_new_tokens,
                ))) if unique else {}
                times.generation_s += time.perf_counter() - started
                log(f"{names}: generated {len(questions)} answers in {time.perf_counter() - started:.1f}s")
                for k in group:
                    generations[k] = [answers.get(row["question"], "") if not sets[k][0].loss_only else ""
                                      for row in sets[k][1]]

                started = time.perf_counter()
                group_pairs = [(q, a) for k in group for q, a, _ in pairs[k]]
                for k in group if keep_token_values else ():
                    details.update({(q, a): None for q, a, (_, part) in pairs[k] if part == "truth"})
                if share_prompts and pad_to is None and supports_shared_prompts(model):
                    values = iter(shared_prompt_losses(model, formatter, group_pairs, loss_batch_size, details))
                else:
                    values = iter(sequence_losses(
                        model, formatter, group_pairs, loss_batch_size, group_by_length, pad_to, answer_logits_only,
                        details,
                    ))
                for k in group:
                    losses[k] = [next(values) for _ in pairs[k]]
                times.loss_s += time.perf_counter() - started
                log(f"{names}: {len(group_pairs)} answer losses in {time.perf_counter() - started:.1f}s")
    finally:
        model.train(was_training)
    return [_records(eval_set, rows, generations[k], pairs[k], losses[k], formatter, details)
            for k, (eval_set, rows) in enumerate(sets)]


def _records(eval_set: EvalSet, rows: Sequence[dict], generations: list[str], pairs, losses, formatter,
             details: dict[Pair, TokenStats | None]) -> list[dict]:
    token_ids = formatter.tokenizer(generations, add_special_tokens=False)["input_ids"] if generations else []
    records = [_base_record(eval_set, i, row, generations[i], token_ids[i]) for i, row in enumerate(rows)]
    for (_, _, (i, part)), value in zip(pairs, losses):
        if part == "truth":
            records[i]["truth_loss"] = _avg(value)
            records[i]["truth_tokens"] = value[1]
            stats = details.get((records[i]["question"], records[i]["ground_truth"]))
            if stats is not None:
                records[i].update(truth_token_log_probs=stats.log_probs, truth_token_mu=stats.mu,
                                  truth_token_sigma=stats.sigma, truth_token_ids=stats.labels,
                                  truth_predicted_ids=stats.predicted)
        elif part == "paraphrased":
            records[i]["paraphrased_loss"] = _avg(value)
        else:
            records[i]["perturbed_losses"].append(_avg(value))
    return records


def _loss_pairs(eval_set: EvalSet, rows: Sequence[dict]) -> list[tuple[str, str, tuple[int, str]]]:
    """(question, answer, (row, part)) for every loss the set needs; perturbed lists may differ in length."""
    pairs = []
    for i, row in enumerate(rows):
        question = row["question"]
        pairs.append((question, row[eval_set.ground_truth], (i, "truth")))
        if eval_set.paraphrased and eval_set.perturbed:
            pairs.append((question, row[eval_set.paraphrased], (i, "paraphrased")))
            pairs += [(question, answer, (i, "perturbed")) for answer in row[eval_set.perturbed]]
    return pairs


def _base_record(eval_set: EvalSet, index: int, row: dict, generation: str, token_ids: list[int]) -> dict:
    return {
        "index": index,
        "question": row["question"],
        "generation": generation,
        "ground_truth": row[eval_set.ground_truth],
        "cosine_text": row[eval_set.cosine_text],
        "entailment_text": row[eval_set.entailment_truth],
        "generation_token_ids": list(token_ids),
        "truth_loss": None,
        "truth_tokens": None,
        "paraphrased_loss": None,
        "perturbed_losses": [],
        **({"facts": row["facts"]} if "facts" in row else {}),  # what fact recall looks for
    }


def gradient_norms(model, formatter: PromptFormat, pairs: Sequence[Pair], p: float) -> list[float]:
    """GradNorm of each (question, answer): the mean over parameter tensors of ‖∇ avg NLL‖_p,
    one forward and backward per pair (the parameters' own gradients are left untouched)."""
    from ..methods.losses import mean_ce

    pad_id = _pad_id(formatter)
    device = _device(model)
    parameters = [q for q in model.parameters() if q.requires_grad] or list(model.parameters())
    flags = [q.requires_grad for q in parameters]
    was_training = model.training
    model.eval()
    norms = []
    try:
        for q in parameters:
            q.requires_grad_(True)
        for question, answer in pairs:
            padded = pad_encoded([formatter.encode(question, answer)], pad_id, mask_prompt=True)
            padded = {k: v.to(device) for k, v in padded.items()}
            with torch.enable_grad():
                loss = mean_ce(*answer_logits(model, padded))
                grads = torch.autograd.grad(loss, parameters, allow_unused=True)
            per_tensor = [g.float().norm(p) for g in grads if g is not None]
            norms.append(float(torch.stack(per_tensor).mean()))
    finally:
        for q, flag in zip(parameters, flags, strict=True):
            q.requires_grad_(flag)
        model.train(was_training)
    return norms

"""The unlearning objectives of docs/formulas.md#objectives, one small function each.

Every objective is ``fn(ctx) -> scalar tensor``. ``ctx`` (a ``LossContext``) holds the model
being unlearned, one batch ({kind: {input_ids, attention_mask, labels}}), the frozen reference
and β, and hands out per-kind logits and per-sequence NLLs, computed once per step however many
objectives read them.

Notation as in docs/formulas.md: NLL = sum of token cross-entropies over a sequence's labels; "mean CE"
= mean over all label tokens of the batch.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..data.batches import IGNORE, answer_positions


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align position t's logits with token t+1; returns (logits, targets, label mask)."""
    logits = logits[:, :-1, :]
    targets = labels[:, 1:]
    mask = targets != IGNORE
    return logits, targets.clamp(min=0), mask


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy [B, T-1] (zero off the labels) and the label mask."""
    logits, targets, mask = shift(logits, labels)
    # Rows of [positions, vocabulary]: with the vocabulary contiguous the log-sum-exp is faster
    # on a CPU and closer to float64 than cross_entropy over a [B, V, T] view (docs/performance.md).
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return nll.view(targets.shape) * mask, mask


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NLL of each sequence [B]: summed over its label tokens."""
    nll, _ = token_nll(logits, labels)
    return nll.sum(dim=-1)


def mean_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    nll, mask = token_nll(logits, labels)
    return nll.sum() / mask.sum().clamp(min=1)


def takes_logits_to_keep(model) -> bool:
    """Whether the model under any wrapper (DDP, DeepSpeed, FSDP, peft) can project only some
    positions onto the vocabulary; the wrappers pass the keyword through."""
    import inspect

    while hasattr(model, "module"):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def answer_logits(model, seq: dict[str, torch.Tensor], trim: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of a right-padded batch, both cut to the trailing positions that carry
    labels: the vocabulary projection (the largest matrix product of a small model) and its
    softmax skip the prompts, which no label scores. The values are those of a full forward."""
    keep = answer_positions(seq["labels"]) if trim and takes_logits_to_keep(model) else 0
    if not keep:
        return model(input_ids=seq["input_ids"], attention_mask=seq["attention_mask"]).logits, seq["labels"]
    logits = model(input_ids=seq["input_ids"], attention_mask=seq["attention_mask"], logits_to_keep=keep).logits
    return logits, seq["labels"][:, -keep:]


class Reference:
    """A frozen reference model: logits and per-sequence NLLs without gradients."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    @torch.no_grad()
    def logits(self, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(input_ids=seq["input_ids"], attention_mask=seq["attention_mask"]).logits

    @torch.no_grad()
    def nll(self, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        return sequence_nll(*answer_logits(self.model, seq))


class LossContext:
    """One training step's view of the model, the batch and the reference.

    ``logits(kind)`` and ``labels(kind)`` cover the same positions: every position, or for the
    kinds in ``answer_logits_only`` only the trailing ones that carry labels (see
    ``answer_logits``; the method says which kinds no objective reads elsewhere, KL reads every
    position). An objective reads both through the context."""

    def __init__(self, model, batch: dict, reference: Optional[Reference] = None, beta: float = 0.1,
                 answer_logits_only: tuple[str, ...] = ()):
        self.model = model
        self.batch = batch
        self.reference = reference
        self.beta = beta
        self.answer_logits_only = set(answer_logits_only)
        self._logits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def prefetch(self, kinds) -> None:
        """Run one forward over several kinds at once (padded to a common length).

        Right padding keeps every real token's logits as in separate forwards; one larger
        matrix product is cheaper than several small ones.
        """
        kinds = [k for k in kinds if k in self.batch and k not in self._logits]
        if len(kinds) < 2:
            return
        seqs = [self.batch[k] for k in kinds]
        length = max(s["input_ids"].shape[1] for s in seqs)

        def padded(name: str, value: int) -> torch.Tensor:
            return torch.cat([F.pad(s[name], (0, length - s[name].shape[1]), value=value) for s in seqs])

        fused = {"input_ids": padded("input_ids", 0), "attention_mask": padded("attention_mask", 0),
                 "labels": padded("labels", IGNORE)}
        # Trimmed to the answers if every kind may be and each has a label.
        trim = self.answer_logits_only.issuperset(kinds) and all(bool((q["labels"] != IGNORE).any()) for q in seqs)
        logits, _ = answer_logits(self.model, fused, trim=trim)
        offset = length - logits.shape[1]  # the first position kept
        start = 0
        for kind, seq in zip(kinds, seqs):
            rows, width = seq["input_ids"].shape
            self._logits[kind] = (logits[start : start + rows, : width - offset], seq["labels"][:, offset:])
            start += rows

    def _forward(self, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        if kind not in self._logits:
            self._logits[kind] = answer_logits(self.model, self.batch[kind], trim=kind in self.answer_logits_only)
        return self._logits[kind]

    def logits(self, kind: str) -> torch.Tensor:
        return self._forward(kind)[0]

    def labels(self, kind: str) -> torch.Tensor:
        return self._forward(kind)[1]

    def nll(self, kind: str) -> torch.Tensor:
        return sequence_nll(self.logits(kind), self.labels(kind))

    def mean_ce(self, kind: str) -> torch.Tensor:
        return mean_ce(self.logits(kind), self.labels(kind))

    def reference_nll(self, kind: str) -> torch.Tensor:
        # Precomputed once per task when the reference is frozen (exactly the same numbers).
        seq = self.batch[kind]
        if "reference_nll" in seq:
            return seq["reference_nll"]
        return self._require_reference().nll(seq)

    def reference_logits(self, kind: str) -> torch.Tensor:
        return self._require_reference().logits(self.batch[kind])

    def _require_reference(self) -> Reference:
        if self.reference is None:
            raise RuntimeError("this objective needs a reference model and none was given")
        return self.reference


# ---- forget losses -------------------------------------------------------------------------


def gradient_ascent(ctx: LossContext) -> torch.Tensor:
    """GA: -(mean CE of forget)."""
    return -ctx.mean_ce("forget")


def negative_preference(ctx: LossContext) -> torch.Tensor:
    """NPO: -(2/β) · mean log σ(β · (NLL_θ(forget) - NLL_ref(forget)))."""
    log_ratio = ctx.nll("forget") - ctx.reference_nll("forget")
    return -(2.0 / ctx.beta) * F.logsigmoid(ctx.beta * log_ratio).mean()


def maximise_entropy(ctx: LossContext) -> torch.Tensor:
    """ME: mean over forget label positions of KL(uniform ‖ p_θ)."""
    logits, _, mask = shift(ctx.logits("forget"), ctx.labels("forget"))
    log_probs = F.log_softmax(logits.float(), dim=-1)
    vocab = log_probs.shape[-1]
    # KL(u‖p) = Σ_v (1/V)(log(1/V) - log p_v) = -log V - mean_v log p_v
    kl = -math.log(vocab) - log_probs.mean(dim=-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def refusal_tuning(ctx: LossContext) -> torch.Tensor:
    """IDK: mean CE of the forget questions answered with a refusal."""
    return ctx.mean_ce("forget_idk")


def direct_preference(ctx: LossContext) -> torch.Tensor:
    """DPO with chosen = refusal, rejected = true answer."""
    policy = -ctx.nll("forget_idk") + ctx.nll("forget")
    reference = -ctx.reference_nll("forget_idk") + ctx.reference_nll("forget")
    return -(2.0 / ctx.beta) * F.logsigmoid(ctx.beta * (policy - reference)).mean()


def llmu_forget(ctx: LossContext) -> torch.Tensor:
    """LLMU's forget side: GA plus the mean CE of forget questions with random retain answers."""
    return gradient_ascent(ctx) + ctx.mean_ce("mismatch")


# ---- regularisers ----------------------------------------------------------------------------


def gradient_descent(ctx: LossContext) -> torch.Tensor:
    """GD: mean CE of retain."""
    return ctx.mean_ce("retain")


def kl_to_reference(ctx: LossContext) -> torch.Tensor:
    """KL(p_ref ‖ p_θ) summed over the vocabulary, averaged over retain's real (unpadded) positions."""
    mask = ctx.batch["retain"]["attention_mask"].bool()
    log_p = F.log_softmax(ctx.logits("retain").float(), dim=-1)
    log_ref = F.log_softmax(ctx.reference_logits("retain").float(), dim=-1)
    kl = (log_ref.exp() * (log_ref - log_p)).sum(dim=-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def answer_preservation(ctx: LossContext) -> torch.Tensor:
    """AP: -(1/β) · mean log σ(β · (NLL_θ(retain_idk) - NLL_θ(retain)))."""
    margin = ctx.nll("retain_idk") - ctx.nll("retain")
    return -(1.0 / ctx.beta) * F.logsigmoid(ctx.beta * margin).mean()


LossFn = Callable[[LossContext], torch.Tensor]

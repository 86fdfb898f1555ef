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
from dataclasses import dataclass, field
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
    def logits(self, seq: dict[str, torch.Tensor], keep: int = 0) -> torch.Tensor:
        """Logits of every position, or of the last ``keep`` ones."""
        if keep and takes_logits_to_keep(self.model):
            return self.model(input_ids=seq["input_ids"], attention_mask=seq["attention_mask"],
                              logits_to_keep=keep).logits
        logits = self.model(input_ids=seq["input_ids"], attention_mask=seq["attention_mask"]).logits
        return logits[:, -keep:] if keep else logits

    @torch.no_grad()
    def nll(self, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        return sequence_nll(*answer_logits(self.model, seq))


def unwrapped(model):
    """The model under DDP / DeepSpeed / FSDP / peft wrappers."""
    while hasattr(model, "module"):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's stack of decoder blocks (``model.layers`` of Llama-like models)."""
    for name, module in unwrapped(model).named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "h", "blocks"):
            return module
    raise ValueError(f"found no stack of decoder blocks in {type(unwrapped(model)).__name__}")


def block_output(model, seq: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """Hidden states [B, T, d] output by decoder block ``layer`` (counted from 0), read by a
    forward hook on that block alone; the vocabulary projection is cut to one position."""
    captured: list[torch.Tensor] = []

    def keep(module, args, output):
        if not captured:  # gradient checkpointing may run the block again in the backward pass
            captured.append(output[0] if isinstance(output, (tuple, list)) else output)

    handle = decoder_layers(model)[layer].register_forward_hook(keep)
    try:
        extra = {"logits_to_keep": 1} if takes_logits_to_keep(model) else {}
        model(input_ids=seq["input_ids"], attention_mask=seq["attention_mask"], **extra)
    finally:
        handle.remove()
    return captured[0]


class LossContext:
    """One training step's view of the model, the batch and the reference.

    ``logits(kind)`` and ``labels(kind)`` cover the same positions: every position, or for the
    kinds in ``answer_logits_only`` only the trailing ones that carry labels (see
    ``answer_logits``; the method says which kinds no objective reads elsewhere, KL reads every
    position). An objective reads both through the context."""

    def __init__(self, model, batch: dict, reference: Optional[Reference] = None, beta: float = 0.1,
                 answer_logits_only: tuple[str, ...] = (), settings=None, state: StepState | None = None):
        self.model = model
        self.batch = batch
        self.reference = reference
        self.beta = beta
        self.answer_logits_only = set(answer_logits_only)
        # The method's own hyper-parameters (a settings dataclass) and what it keeps across steps.
        self.settings = settings
        self.state = state
        self._logits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._hidden: dict[str, torch.Tensor] = {}

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

    def reference_logits(self, kind: str, keep: int = 0) -> torch.Tensor:
        return self._require_reference().logits(self.batch[kind], keep)

    def hidden(self, kind: str) -> torch.Tensor:
        """Output of decoder block ``settings.layer`` for a kind's sequences."""
        if kind not in self._hidden:
            self._hidden[kind] = block_output(self.model, self.batch[kind], self.settings.layer)
        return self._hidden[kind]

    def reference_hidden(self, kind: str) -> torch.Tensor:
        with torch.no_grad():
            return block_output(self._require_reference().model, self.batch[kind], self.settings.layer)

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


# What the paper's code adds to each probability before its log (ME's reference rule).
ME_PROBABILITY_FLOOR = 1e-12


def maximise_entropy(ctx: LossContext) -> torch.Tensor:
    """ME: mean over forget label positions of KL(uniform ‖ p_θ), with log p_θ taken as
    log(p_θ + 1e-12) as the paper's code does, or exactly (``exact_log``)."""
    logits, _, mask = shift(ctx.logits("forget"), ctx.labels("forget"))
    if ctx.settings.exact_log:
        log_probs = F.log_softmax(logits.float(), dim=-1)
    else:
        log_probs = (torch.softmax(logits.float(), dim=-1) + ME_PROBABILITY_FLOOR).log()
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


def mismatch(ctx: LossContext) -> torch.Tensor:
    """LLMU's mismatch term: mean CE of forget questions with random retain answers. The paper's
    code adds it to the regulariser, so regularization_coeff weighs it."""
    return ctx.mean_ce("mismatch")


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


# ---- the field's methods: settings, state kept across steps, losses ------------------------


@dataclass
class Settings:
    """A method's hyper-parameters (``method_args.NAME=value`` on the command line)."""

    def problems(self) -> list[str]:
        """What is wrong with these values (empty: nothing)."""
        return []

    def negative(self, *names: str) -> list[str]:
        """One message for each named setting that is not a finite number of zero or more."""
        return [f"{name} must be zero or more, got {getattr(self, name)}" for name in names
                if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0)]

    def choice(self, name: str, *options: str) -> list[str]:
        """A message if the named setting is not one of ``options``."""
        value = getattr(self, name)
        return [] if value in options else [f"{name} must be one of {', '.join(options)}, got '{value}'"]


@dataclass
class MESettings(Settings):
    # The exact log-softmax instead of the paper's code's log(softmax + 1e-12).
    exact_log: bool = False


@dataclass
class SimNPOSettings(Settings):
    beta: float = 4.5
    gamma: float = 0.0
    # β·x − γ, as the paper's text writes it, instead of its code's β·(x − γ).
    gamma_outside_beta: bool = False

    def problems(self) -> list[str]:
        positive = math.isfinite(self.beta) and self.beta > 0
        return [] if positive else [f"beta must be a positive number, got {self.beta}"]


@dataclass
class WGASettings(Settings):
    beta: float = 1.0

    def problems(self) -> list[str]:
        return self.negative("beta")


@dataclass
class SatImpSettings(Settings):
    beta1: float = 5.0
    beta2: float = 0.1

    def problems(self) -> list[str]:
        return self.negative("beta1", "beta2")


@dataclass
class CEUSettings(Settings):
    # Leading answer tokens of each sequence left out of the loss.
    skip_first: int = 1

    def problems(self) -> list[str]:
        return self.negative("skip_first")


@dataclass
class UNDIALSettings(Settings):
    beta: float = 10.0

    def problems(self) -> list[str]:
        return self.negative("beta")


@dataclass
class LayerSettings(Settings):
    # The decoder block whose output is read, counted from 0.
    layer: int = 7
    # How activation distances are averaged: "per_sequence" over label positions then over the
    # batch (open-unlearning), or "every_element" of the padded batch (WMDP's F.mse_loss).
    averaging: str = "per_sequence"

    def problems(self) -> list[str]:
        return self.negative("layer") + self.choice("averaging", "per_sequence", "every_element")


@dataclass
class RMUSettings(LayerSettings):
    steering_coeff: float = 2.0
    # Regular expressions searched in parameter names; only matching parameters train. Empty: all.
    trainable: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        found = LayerSettings.problems(self)
        if not math.isfinite(self.steering_coeff):
            found.append(f"steering_coeff must be a finite number, got {self.steering_coeff}")
        import re

        for pattern in self.trainable:
            try:
                re.compile(pattern)
            except re.error as err:
                found.append(f"trainable pattern '{pattern}' is not a regular expression ({err})")
        return found


@dataclass
class PDUSettings(Settings):
    # The bound the retain loss should stay under; required.
    epsilon: float | None = None
    # Step size of the dual (λ) update.
    dual_lr: float = 1.0
    # Epochs before λ starts to move.
    dual_warmup_epochs: float = 5.0
    # "micro_batch": λ moves on every micro-batch with its own retain loss, from the first
    # micro-batch after the epoch end that completes the warm-up (the authors' code);
    # "step": once per optimiser step with the step's retain loss averaged over its
    # micro-batches and processes, from the step that completes the warm-up.
    dual_update: str = "micro_batch"
    # The logits flattened for label t: "at_label", those at label t's own position (the
    # authors' code), or "predicting", the shifted ones that predict it.
    flatness_logits: str = "at_label"

    def problems(self) -> list[str]:
        found = []
        if self.epsilon is None or not math.isfinite(self.epsilon):
            found.append("epsilon (the retain-loss bound) is required, e.g. method_args.epsilon=0.5")
        return (found + self.negative("dual_lr", "dual_warmup_epochs")
                + self.choice("dual_update", "micro_batch", "step")
                + self.choice("flatness_logits", "at_label", "predicting"))


@dataclass
class TaskVectorSettings(Settings):
    # θ = θ_target − alpha · (θ_fine-tuned − θ_target)
    alpha: float = 1.0

    def problems(self) -> list[str]:
        return [] if math.isfinite(self.alpha) else [f"alpha must be a finite number, got {self.alpha}"]


@dataclass
class AltPOSettings(Settings):
    # Alternate answers the model writes per forget question, sampled at this temperature.
    alternates: int = 1
    temperature: float = 1.0
    max_new_tokens: int = 64

    def problems(self) -> list[str]:
        found = [] if self.alternates >= 1 else [f"alternates must be at least 1, got {self.alternates}"]
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            found.append(f"temperature must be a positive number, got {self.temperature}")
        if self.max_new_tokens < 1:
            found.append(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        return found


class StepState:
    """What an objective keeps across optimiser steps. The trainer calls ``observe`` for every
    micro-batch (with the epochs done before it), ``after_step`` after every optimiser step
    (``reduce`` averages a tensor over the processes, so every process can hold the same state),
    logs ``log_values`` and saves ``state_dict`` (the first process's) with every checkpoint."""

    def __init__(self, settings, *, model, seed: int, regularization_coeff: float):
        self.settings = settings

    def combine(self, forget_coeff: float, forget_loss: torch.Tensor, regularization_coeff: float,
                regularization_loss: torch.Tensor | None) -> torch.Tensor | None:
        """The total loss, or None for forget_coeff · forget + regularization_coeff · regulariser."""
        return None

    def observe(self, forget_loss: float, regularization_loss: float, epoch: float) -> None:
        pass

    def after_step(self, epoch: float, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        pass

    def log_values(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class SteeringTarget(StepState):
    """RMU's c·u: u has i.i.d. U(0, 1) entries scaled to unit norm, drawn once from the run's
    seed on the CPU, so every process (and a resumed run) draws the same vector."""

    def __init__(self, settings, *, model, seed: int, regularization_coeff: float):
        super().__init__(settings, model=model, seed=seed, regularization_coeff=regularization_coeff)
        size = unwrapped(model).config.hidden_size
        u = torch.rand(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.target = (settings.steering_coeff * u / u.norm()).float()


class DualAscent(StepState):
    """PDU's multiplier λ of the constraint retain loss ≤ ε. It starts at regularization_coeff
    and moves by λ ← max(0, λ + η · (retain loss − ε)) after the loss that used it:

    - ``dual_update=micro_batch`` (the authors' code): on every micro-batch with that
      micro-batch's retain loss, each process with its own (so processes may hold different λ;
      a checkpoint keeps the first's), once the epochs completed before the micro-batch reach
      ``dual_warmup_epochs`` (whole epochs: 1.5 means from the third);
    - ``dual_update=step``: after every optimiser step whose end is past the warm-up, with the
      step's retain loss averaged over its micro-batches and processes."""

    def __init__(self, settings, *, model, seed: int, regularization_coeff: float):
        super().__init__(settings, model=model, seed=seed, regularization_coeff=regularization_coeff)
        self.dual = float(regularization_coeff)
        self.per_micro_batch = settings.dual_update == "micro_batch"
        # The authors' code starts moving λ at the end of an epoch that has passed the warm-up.
        self.whole_warmup_epochs = math.ceil(settings.dual_warmup_epochs - 1e-9)
        self._sum, self._count = 0.0, 0

    def combine(self, forget_coeff, forget_loss, regularization_coeff, regularization_loss):
        return forget_coeff * forget_loss + self.dual * (regularization_loss - self.settings.epsilon)

    def _move(self, retain_loss: float) -> None:
        self.dual = max(0.0, self.dual + self.settings.dual_lr * (retain_loss - self.settings.epsilon))

    def observe(self, forget_loss, regularization_loss, epoch):
        if self.per_micro_batch:
            if math.floor(epoch + 1e-9) >= self.whole_warmup_epochs:
                self._move(regularization_loss)
            return
        self._sum += regularization_loss
        self._count += 1

    def after_step(self, epoch, reduce):
        if self.per_micro_batch or not self._count:
            return
        retain_loss = reduce(torch.tensor([self._sum / self._count], dtype=torch.float64)).item()
        self._sum, self._count = 0.0, 0
        if epoch + 1e-9 >= self.settings.dual_warmup_epochs:
            self._move(retain_loss)

    def log_values(self):
        return {"dual_lambda": round(self.dual, 8)}

    def state_dict(self):
        return {"dual": self.dual}

    def load_state_dict(self, state):
        self.dual = float(state["dual"])


def alternate_preference(ctx: LossContext) -> torch.Tensor:
    """AltPO: DPO with chosen = the model's own alternate answer, rejected = the true answer."""
    policy = -ctx.nll("forget_alt") + ctx.nll("forget")
    reference = -ctx.reference_nll("forget_alt") + ctx.reference_nll("forget")
    return -(2.0 / ctx.beta) * F.logsigmoid(ctx.beta * (policy - reference)).mean()


def learn_forget(ctx: LossContext) -> torch.Tensor:
    """The task vector's fine-tuning: mean CE of forget (learnt, to be subtracted afterwards)."""
    return ctx.mean_ce("forget")


def simple_npo(ctx: LossContext) -> torch.Tensor:
    """SimNPO: -(2/β) · mean log σ(β · (NLL_θ(forget)/|a| - γ)), no reference; |a| counts every
    label of the sequence, a label at position 0 (which nothing predicts) too, as the authors'
    code does. ``gamma_outside_beta``: β · NLL/|a| - γ."""
    labels = ctx.labels("forget")
    nll, _ = token_nll(ctx.logits("forget"), labels)
    per_token = nll.sum(dim=-1) / (labels != IGNORE).sum(dim=-1).clamp(min=1)
    s = ctx.settings
    margin = s.beta * per_token - s.gamma if s.gamma_outside_beta else s.beta * (per_token - s.gamma)
    return -(2.0 / s.beta) * F.logsigmoid(margin).mean()


def _weighted_ascent(ctx: LossContext, weight_of: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """-mean over label positions of sg(weight(p_t)) · ℓ_t, with p_t the label token's probability."""
    nll, mask = token_nll(ctx.logits("forget"), ctx.labels("forget"))
    weight = weight_of(torch.exp(-nll.detach()))
    return -(weight * nll * mask).sum() / mask.sum().clamp(min=1)


def weighted_gradient_ascent(ctx: LossContext) -> torch.Tensor:
    """WGA: gradient ascent with each token weighted by sg(p_t^β)."""
    return _weighted_ascent(ctx, lambda p: p ** ctx.settings.beta)


def saturation_importance(ctx: LossContext) -> torch.Tensor:
    """SatImp: gradient ascent with each token weighted by sg(p_t^β1 · (1 - p_t)^β2)."""
    s = ctx.settings
    return _weighted_ascent(ctx, lambda p: p ** s.beta1 * (1 - p) ** s.beta2)


def _soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked positions of -Σ_v q_v log p_v."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    per_position = -(target_probs * log_p).sum(dim=-1)
    return (per_position * mask).sum() / mask.sum().clamp(min=1)


def cross_entropy_unlearning(ctx: LossContext) -> torch.Tensor:
    """CE-U: cross-entropy towards the model's own (detached) distribution with the label token
    removed, each sequence's first ``skip_first`` labels left out; as in the authors' code a
    label at position 0 (which nothing predicts) is one of them."""
    labels = ctx.labels("forget")
    logits, targets, mask = shift(ctx.logits("forget"), labels)
    masked = logits.detach().float().scatter(-1, targets.unsqueeze(-1), float("-inf"))
    target_probs = torch.softmax(masked, dim=-1)
    is_label = labels != IGNORE
    kept = (is_label & (is_label.cumsum(dim=-1) > ctx.settings.skip_first))[:, 1:]
    return _soft_cross_entropy(logits, target_probs, kept)


def undial(ctx: LossContext) -> torch.Tensor:
    """UNDIAL: cross-entropy towards the frozen reference's distribution with the label token's
    logit lowered by β."""
    logits, labels = ctx.logits("forget"), ctx.labels("forget")
    reference = ctx.reference_logits("forget", keep=logits.shape[1])
    shifted, targets, mask = shift(logits, labels)
    reference = reference[:, :-1].float()
    lowered = reference - ctx.settings.beta * F.one_hot(targets, reference.shape[-1]).float()
    return _soft_cross_entropy(shifted, torch.softmax(lowered, dim=-1), mask)


def logit_flatness(ctx: LossContext) -> torch.Tensor:
    """PDU's forget loss: mean over label positions of (max_v z_v - mean_v z_v)², z the logits at
    the label's own position (the authors' code) or, with ``flatness_logits=predicting``, those
    that predict it."""
    logits, labels = ctx.logits("forget"), ctx.labels("forget")
    if ctx.settings.flatness_logits == "predicting":
        logits, _, mask = shift(logits, labels)
    else:
        mask = labels != IGNORE
    logits = logits.float()
    gap = logits.max(dim=-1).values - logits.mean(dim=-1)
    return (gap.square() * mask).sum() / mask.sum().clamp(min=1)


def activation_distance(hidden: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per sequence Σ_t mean_d (h_t,d - g_t,d)² over its label positions / their number; mean over
    the batch (``target`` broadcasts: RMU's c·u is one vector)."""
    mask = (labels != IGNORE).float()
    per_position = (hidden.float() - target.float()).square().mean(dim=-1)
    per_sequence = (per_position * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)
    return per_sequence.mean()


def averaged_activation_distance(ctx: LossContext, hidden: torch.Tensor, target: torch.Tensor,
                                 labels: torch.Tensor) -> torch.Tensor:
    """``activation_distance``, or with ``averaging=every_element`` the mean of (h − g)² over
    every element of the padded batch [B, T, d], prompt and padding included (WMDP's code)."""
    if ctx.settings.averaging == "every_element":
        return (hidden.float() - target.float()).square().mean()
    return activation_distance(hidden, target, labels)


def representation_misdirection(ctx: LossContext) -> torch.Tensor:
    """RMU's forget loss: the forget activations of block ℓ pulled towards c·u."""
    hidden = ctx.hidden("forget")
    return averaged_activation_distance(ctx, hidden, ctx.state.target.to(hidden.device), ctx.batch["forget"]["labels"])


def activation_preservation(ctx: LossContext) -> torch.Tensor:
    """RMU's regulariser: retain activations of block ℓ kept at the frozen original model's."""
    return averaged_activation_distance(ctx, ctx.hidden("retain"), ctx.reference_hidden("retain"),
                                        ctx.batch["retain"]["labels"])


LossFn = Callable[[LossContext], torch.Tensor]

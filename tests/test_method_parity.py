"""Each method's default against the rule of the reference code that produced its published
numbers, values and gradients, and each named variant against the rule it names.

The reference rules are written out below with plain torch in float64, independently of
unlearnlm's code (which computes in float32): the paper's code (sail-sg/closer-look-LLM-unlearning,
trainer/losses.py) for ME and LLMU; open-unlearning (locuslab/open-unlearning,
src/trainer/unlearn/*.py) for PDU, SimNPO, CE-U and RMU; WMDP's rmu/unlearn.py for RMU under the
`rmu-wmdp` preset; tmlr-group/SatImp (dataloader/dataloader_sat.py) for SatImp.

The inputs are fixed logits / hidden states of right-padded batches with masked prompts, one row
whose position 0 carries a label (mask=false, text chunks), in two regimes: "spread" and "peaked"
(one token per position 40 logits above the rest, so the others' probabilities are below 1e-12).
A difference is relative: for a value |got − want| / |want|, for gradients the largest
|got − want| over every entry of every input tensor divided by the largest |want|.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from unlearnlm.config import UnlearnConfig, load_config, with_method_settings
from unlearnlm.methods import LossContext, Reference, get_method, losses
from unlearnlm.training.trainer import UnlearningTrainer

IGNORE = -100
VOCAB, WIDTH, HIDDEN = 40, 7, 6
TOLERANCE = 2e-6
MAX_DIFFERENCE: dict[str, float] = {}


def sequences(rows: list[tuple[list[int], int]], width: int = WIDTH) -> dict[str, torch.Tensor]:
    """Right-padded rows; labels from position ``first`` of each row on (0: every token labelled)."""
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE)
    for i, (tokens, first) in enumerate(rows):
        ids[i, : len(tokens)] = torch.tensor(tokens)
        attention[i, : len(tokens)] = 1
        labels[i, first : len(tokens)] = torch.tensor(tokens[first:])
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


BATCH = {
    # a masked prompt and padding; a longer answer; a row labelled from position 0, padded
    "forget": sequences([([3, 9, 14, 2, 30], 2), ([5, 1, 22, 22, 8, 17, 36], 1), ([11, 4, 27, 6], 0)]),
    "retain": sequences([([7, 12, 33, 1, 19], 1), ([25, 2, 2, 38], 2)]),
    # unpadded, so the paper's KL (averaged over every position) and ours (real ones) agree
    "mismatch": sequences([([3, 9, 20, 21, 10, 13, 15], 2), ([5, 1, 34, 35, 36, 37, 39], 1)]),
    "retain_full": sequences([([7, 12, 33, 1, 19, 5, 6], 1), ([25, 2, 2, 38, 31, 30, 29], 2)]),
}


def fixed_logits(kind: str, regime: str, seed: int) -> torch.Tensor:
    ids = BATCH[kind]["input_ids"]
    generator = torch.Generator().manual_seed(seed * 100 + sum(map(ord, kind)))
    logits = torch.randn(*ids.shape, VOCAB, generator=generator, dtype=torch.float64) * 3
    if regime == "peaked":
        # one dominant token per position, sometimes the next label itself
        top = torch.randint(0, VOCAB, ids.shape, generator=generator)
        top[:, :-1] = torch.where(torch.rand(ids[:, 1:].shape, generator=generator) < 0.3, ids[:, 1:], top[:, :-1])
        logits.scatter_(-1, top.unsqueeze(-1), 40.0, reduce="add")
    return logits.float().requires_grad_()


class FixedModel(torch.nn.Module):
    """Returns fixed logits for each batch kind's input_ids; its decoder block 0 outputs fixed
    hidden states (what RMU reads)."""

    def __init__(self, logits: dict[str, torch.Tensor], hidden: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Identity()])
        self.outputs = {k: (BATCH[k]["input_ids"], logits.get(k), (hidden or {}).get(k)) for k in BATCH}

    def forward(self, input_ids, attention_mask=None):
        for ids, logits, hidden in self.outputs.values():
            if ids.shape == input_ids.shape and torch.equal(ids, input_ids):
                if hidden is not None:
                    self.layers[0](hidden)
                return SimpleNamespace(logits=logits)
        raise AssertionError("no fixed output for these input ids")


def context(model, method: str, kinds=("forget",), reference=None, state=None, **settings) -> LossContext:
    batch = {k: BATCH[k] for k in kinds}
    return LossContext(model, batch, reference=Reference(reference) if reference is not None else None,
                       settings=get_method(method).settings(**settings), state=state)


def compare(name: str, got: torch.Tensor, want: torch.Tensor, leaves: list[torch.Tensor]) -> float:
    """The larger relative difference of the values and of the gradients towards ``leaves``."""
    got_grads = torch.autograd.grad(got, leaves, retain_graph=True)
    want_grads = torch.autograd.grad(want, leaves, retain_graph=True)
    value = abs(got.item() - want.item()) / max(abs(want.item()), 1e-30)
    error = max((g.double() - w.double()).abs().max().item() for g, w in zip(got_grads, want_grads, strict=True))
    scale = max(w.double().abs().max().item() for w in want_grads)
    worst = max(value, error / max(scale, 1e-30))
    MAX_DIFFERENCE[name] = max(MAX_DIFFERENCE.get(name, 0.0), worst)
    return worst


def assert_parity(name, got, want, leaves):
    assert compare(name, got, want, leaves) < TOLERANCE, name


def assert_differs(got, want, leaves, at_least):
    """The variant or the old convention is visibly another rule on these inputs."""
    assert compare("_", got, want, leaves) > at_least


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print("\nmax relative difference to the reference (values and gradients):")
    for name, value in sorted(MAX_DIFFERENCE.items()):
        if name != "_":
            print(f"  {name}: {value:.2e}")


REGIMES = pytest.mark.parametrize("regime,seed", [("spread", 0), ("peaked", 1), ("peaked", 2)])


# ---- reference rules, plain torch in float64 -----------------------------------------------


def shifted(logits: torch.Tensor, labels: torch.Tensor):
    return logits[:, :-1].double(), labels[:, 1:]


def per_token_ce(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CrossEntropyLoss(ignore_index=-100, reduction='none') over the shifted labels."""
    z, y = shifted(logits, labels)
    valid = y != IGNORE
    log_p = z - z.logsumexp(-1, keepdim=True)
    ce = -log_p.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, ce, torch.zeros_like(ce)), valid


def mean_ce(logits, labels):
    ce, valid = per_token_ce(logits, labels)
    return ce.sum() / valid.sum()


def reference_me(logits, labels, floor=1e-12):
    """closer-look get_me_loss: KL(u ‖ p) with log p = log(softmax + 1e-12), mean over labels."""
    z, y = shifted(logits, labels)
    p = torch.softmax(z, -1)
    u = torch.full_like(p, 1.0 / VOCAB)
    log_p = (p + floor).log() if floor else torch.log_softmax(z, -1)
    kl = (u * (u.log() - log_p)).sum(-1)
    valid = (y != IGNORE).double()
    return (kl * valid).sum() / valid.sum()


def reference_pdu_flatness(logits, labels, predicting=False):
    """open-unlearning PDU: (max z − mean z)² at every position whose own label is not −100."""
    if predicting:
        z, y = shifted(logits, labels)
    else:
        z, y = logits.double(), labels
    gap = z.max(-1).values - z.mean(-1)
    valid = (y != IGNORE).double()
    return (gap.square() * valid).sum() / valid.sum()


def reference_simnpo(logits, labels, beta, delta, gamma_outside=False):
    """open-unlearning SimNPO: NLL / (labels != −100).sum(−1) − δ inside β."""
    ce, _ = per_token_ce(logits, labels)
    x = ce.sum(-1) / (labels != IGNORE).sum(-1)
    margin = beta * x - delta if gamma_outside else beta * (x - delta)
    return -torch.nn.functional.logsigmoid(margin).mean() * 2 / beta


def reference_ceu(logits, labels, skip):
    """open-unlearning CE-U: the first ``skip`` labels (unshifted) dropped, then shift; target =
    softmax of the detached logits with the label's set to −inf."""
    valid = labels != IGNORE
    dropped = labels.masked_fill((valid.cumsum(-1) <= skip) & valid, IGNORE)
    z, y = shifted(logits, dropped)
    keep = y != IGNORE
    rows, targets = z[keep], y[keep]
    target_logits = rows.detach().clone()
    target_logits[torch.arange(len(targets)), targets] = -math.inf
    q = torch.softmax(target_logits, -1)
    return -(q * torch.log_softmax(rows, -1)).sum(-1).mean()


def reference_satimp(logits, labels, beta1, beta2):
    """SatImp authors: −mean over labels of sg(p^β1 (1 − p)^β2) · ℓ."""
    ce, valid = per_token_ce(logits, labels)
    p = (-ce).exp().detach()
    weighted = p ** beta1 * (1 - p) ** beta2 * ce
    return -weighted[valid].mean()


def reference_activation_mean(h, g, labels):
    """open-unlearning RMU: per sequence Σ_t mask · mean_d (h − g)² / its label count, batch mean."""
    sq = (h.double() - g.double()).square()
    mask = (labels != IGNORE).double()
    per_sequence = (sq.mean(-1) * mask).sum(-1) / mask.sum(-1)
    return per_sequence.mean()


def reference_mse(h, g):
    """WMDP rmu/unlearn.py: F.mse_loss over the whole activation tensor."""
    return (h.double() - g.double().expand_as(h)).square().mean()


def reference_kl_batchmean(logits, ref_logits):
    """closer-look kl_loss: kl_div(log p_θ, log p_ref, batchmean) over every position."""
    log_p = torch.log_softmax(logits.double(), -1).reshape(-1, VOCAB)
    log_ref = torch.log_softmax(ref_logits.double(), -1).reshape(-1, VOCAB)
    return (log_ref.exp() * (log_ref - log_p)).sum() / log_p.shape[0]


# ---- the tests -------------------------------------------------------------------------------


@REGIMES
def test_me_default_is_the_papers_clipped_log_and_exact_log_the_exact_one(regime, seed):
    logits = fixed_logits("forget", regime, seed)
    model, labels = FixedModel({"forget": logits}), BATCH["forget"]["labels"]
    clipped = reference_me(logits, labels)
    assert_parity("ME", losses.maximise_entropy(context(model, "ME")), clipped, [logits])
    exact = reference_me(logits, labels, floor=0)
    assert_parity("ME exact_log=true", losses.maximise_entropy(context(model, "ME", exact_log=True)), exact, [logits])
    if regime == "peaked":  # entries below 1e-12: the two rules part
        assert_differs(exact, clipped, [logits], at_least=0.01)


@REGIMES
def test_pdu_flattens_the_logits_at_the_label_positions(regime, seed):
    logits = fixed_logits("forget", regime, seed)
    model, labels = FixedModel({"forget": logits}), BATCH["forget"]["labels"]
    got = losses.logit_flatness(context(model, "PDU+GD", epsilon=0.5))
    assert_parity("PDU flatness", got, reference_pdu_flatness(logits, labels), [logits])
    old = losses.logit_flatness(context(model, "PDU+GD", epsilon=0.5, flatness_logits="predicting"))
    assert_parity("PDU flatness_logits=predicting", old, reference_pdu_flatness(logits, labels, predicting=True),
                  [logits])
    assert_differs(old, got, [logits], at_least=0.01)


@REGIMES
@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_simnpo_margin_and_length_as_the_authors(regime, seed, gamma):
    logits = fixed_logits("forget", regime, seed)
    model, labels = FixedModel({"forget": logits}), BATCH["forget"]["labels"]
    # β below the default 4.5: there, on these NLLs of 5 to 20 a token, σ saturates and float32's
    # rounding of its argument (20 · 6e-8) is the whole difference
    beta = 0.5
    got = losses.simple_npo(context(model, "SimNPO", beta=beta, gamma=gamma))
    assert_parity("SimNPO", got, reference_simnpo(logits, labels, beta, gamma), [logits])
    outside = losses.simple_npo(context(model, "SimNPO", beta=beta, gamma=gamma, gamma_outside_beta=True))
    assert_parity("SimNPO gamma_outside_beta=true", outside,
                  reference_simnpo(logits, labels, beta, gamma, gamma_outside=True), [logits])
    if gamma:
        assert_differs(outside, got, [logits], at_least=1e-3)


@REGIMES
@pytest.mark.parametrize("skip", [0, 1, 2])
def test_ceu_skips_the_first_labels_as_the_authors(regime, seed, skip):
    logits = fixed_logits("forget", regime, seed)
    model, labels = FixedModel({"forget": logits}), BATCH["forget"]["labels"]
    got = losses.cross_entropy_unlearning(context(model, "CE-U", skip_first=skip))
    assert_parity("CE-U", got, reference_ceu(logits, labels, skip), [logits])


def test_satimp_forget_loss():
    logits = fixed_logits("forget", "spread", 0)
    model, labels = FixedModel({"forget": logits}), BATCH["forget"]["labels"]
    for beta1, beta2 in ((5.0, 0.1), (1.0, 2.0)):
        got = losses.saturation_importance(context(model, "SatImp", beta1=beta1, beta2=beta2))
        assert_parity("SatImp", got, reference_satimp(logits, labels, beta1, beta2), [logits])


@REGIMES
def test_satimp_defaults_are_its_authors(regime, seed):
    forget, retain = fixed_logits("forget", regime, seed), fixed_logits("retain", regime, seed)
    model = FixedModel({"forget": forget, "retain": retain})
    method = get_method("SatImp")
    assert (method.settings().beta1, method.settings().beta2) == (5.0, 0.1)
    total = objective(model, "SatImp", ("forget", "retain"))
    want = (1.0 * reference_satimp(forget, BATCH["forget"]["labels"], 5.0, 0.1)
            + 0.1 * mean_ce(retain, BATCH["retain"]["labels"]))
    assert_parity("SatImp+GD total (defaults)", total, want, [forget, retain])


def test_satimp_default_coefficients_come_from_the_method():
    config = load_config(UnlearnConfig, None, ["method=SatImp"])
    assert config.regularization_coeff is None and config.forget_coeff is None
    method = get_method(config.method)
    assert (method.forget.default_forget_coeff, method.forget.default_regularization_coeff) == (1.0, 0.1)
    # any other method keeps 1.0, and a given value wins
    assert get_method("GA+GD").forget.default_regularization_coeff == 1.0
    assert load_config(UnlearnConfig, None, ["method=SatImp", "regularization_coeff=2"]).regularization_coeff == 2.0


@REGIMES
@pytest.mark.parametrize("averaging", ["per_sequence", "every_element"])
def test_rmu_averaging(regime, seed, averaging):
    generator = torch.Generator().manual_seed(seed)
    hidden = {k: (torch.randn(*BATCH[k]["input_ids"].shape, HIDDEN, generator=generator) * (5 if regime == "peaked"
                                                                                          else 1)).requires_grad_()
              for k in ("forget", "retain")}
    frozen = {"retain": torch.randn(*BATCH["retain"]["input_ids"].shape, HIDDEN, generator=generator)}
    target = torch.rand(HIDDEN, generator=generator, dtype=torch.float64)
    target = (6.5 * target / target.norm()).float()
    model, reference = FixedModel({}, hidden), FixedModel({}, frozen)
    ctx = context(model, "RMU", ("forget", "retain"), reference=reference, state=SimpleNamespace(target=target),
                  layer=0, averaging=averaging)
    forget, retain = losses.representation_misdirection(ctx), losses.activation_preservation(ctx)
    if averaging == "per_sequence":
        want_forget = reference_activation_mean(hidden["forget"], target.expand_as(hidden["forget"]),
                                                BATCH["forget"]["labels"])
        want_retain = reference_activation_mean(hidden["retain"], frozen["retain"], BATCH["retain"]["labels"])
    else:
        want_forget = reference_mse(hidden["forget"], target)
        want_retain = reference_mse(hidden["retain"], frozen["retain"])
    assert_parity(f"RMU averaging={averaging}", forget, want_forget, [hidden["forget"]])
    assert_parity(f"ACT averaging={averaging}", retain, want_retain, [hidden["retain"]])


def test_rmu_wmdp_preset_averages_as_wmdp_and_the_default_as_open_unlearning():
    preset = with_method_settings(load_config(UnlearnConfig, "rmu-wmdp", []))
    assert preset.method_args["averaging"] == "every_element"
    assert get_method("RMU").settings().averaging == "per_sequence"


@REGIMES
def test_llmu_weighs_its_mismatch_term_with_the_regulariser(regime, seed):
    kinds = ("forget", "mismatch", "retain_full")
    logits = {k: fixed_logits(k, regime, seed) for k in kinds}
    frozen = {k: fixed_logits(k, "spread", seed + 7).detach() for k in kinds}
    batch = {"forget": BATCH["forget"], "mismatch": BATCH["mismatch"], "retain": BATCH["retain_full"]}
    model = FixedModel(logits)
    reference = FixedModel({"retain_full": frozen["retain_full"]})
    fc, rc = 0.7, 2.5
    total = objective(model, "LLMU", batch, reference=reference, forget_coeff=fc, regularization_coeff=rc)
    want = (fc * -mean_ce(logits["forget"], BATCH["forget"]["labels"])
            + rc * (mean_ce(logits["mismatch"], BATCH["mismatch"]["labels"])
                    + reference_kl_batchmean(logits["retain_full"], frozen["retain_full"])))
    assert_parity("LLMU total", total, want, list(logits.values()))


def objective(model, name, kinds, reference=None, forget_coeff=None, regularization_coeff=None, state=None):
    """The trainer's own combination of a method's terms (UnlearningTrainer.objective)."""
    method = get_method(name)
    batch = kinds if isinstance(kinds, dict) else {k: BATCH[k] for k in kinds}
    trainer = SimpleNamespace(
        method=method, reference=Reference(reference) if reference is not None else None, beta=0.1,
        answer_logits_only=(), settings=method.settings(epsilon=0.5) if method.forget.state else method.settings(),
        method_state=state, fuse_forward=False,
        forget_coeff=method.forget.default_forget_coeff if forget_coeff is None else forget_coeff,
        regularization_coeff=(method.forget.default_regularization_coeff if regularization_coeff is None
                              else regularization_coeff))
    loss, _, _ = UnlearningTrainer.objective(trainer, model, batch)
    return loss


# ---- PDU's dual variable ---------------------------------------------------------------------


def reference_dual_trajectory(retain_losses, steps_in_epoch, warmup, lr, eps, start):
    """open-unlearning PDU with dual_update_upon='step': λ moves in every compute_loss call
    (micro-batch, whatever the accumulation) once enabled; it is enabled at the start when
    warm-up is 0, else at the end of the first epoch whose count reaches the warm-up. Returns λ
    as each loss used it, and the last."""
    lam, enabled, used, i = start, warmup == 0, [], 0
    epochs = len(retain_losses) // steps_in_epoch
    for epoch in range(1, epochs + 1):
        for _ in range(steps_in_epoch):
            used.append(lam)
            if enabled:
                lam = max(0.0, lam + lr * (retain_losses[i] - eps))
            i += 1
        if epoch >= warmup:
            enabled = True
    return used, lam


def dual_trajectory(settings, retain_losses, steps_in_epoch, accumulation, start):
    """DualAscent driven as the trainer drives it: the loss reads λ, then observe with the epochs
    done (transformers' state.epoch, set after each optimiser step), after_step per optimiser step."""
    state = losses.DualAscent(settings, model=None, seed=0, regularization_coeff=start)
    used, epoch = [], 0.0
    for e in range(len(retain_losses) // steps_in_epoch):
        for b in range(steps_in_epoch):
            used.append(state.dual)
            state.observe(0.0, retain_losses[e * steps_in_epoch + b], epoch)
            if (b + 1) % accumulation == 0 or b + 1 == steps_in_epoch:
                epoch = e + (b + 1) / steps_in_epoch
                state.after_step(epoch, lambda t: t)
    return used, state.dual


@pytest.mark.parametrize("warmup,accumulation", [(0, 1), (1, 1), (1, 2), (2, 3), (1.5, 2)])
def test_pdu_dual_variable_moves_per_micro_batch_as_the_authors(warmup, accumulation):
    generator = torch.Generator().manual_seed(3)
    steps_in_epoch, eps, lr, start = 6, 0.8, 0.7, 2.0
    retain_losses = (torch.rand(4 * steps_in_epoch, generator=generator, dtype=torch.float64) * 2).tolist()
    settings = get_method("PDU").settings(epsilon=eps, dual_lr=lr, dual_warmup_epochs=warmup)
    got_used, got_final = dual_trajectory(settings, retain_losses, steps_in_epoch, accumulation, start)
    want_used, want_final = reference_dual_trajectory(retain_losses, steps_in_epoch, warmup, lr, eps, start)
    assert got_used == pytest.approx(want_used, rel=1e-12) and got_final == pytest.approx(want_final, rel=1e-12)
    # the per-step variant is another trajectory once the warm-up or accumulation matters
    step = get_method("PDU").settings(epsilon=eps, dual_lr=lr, dual_warmup_epochs=warmup, dual_update="step")
    step_used, _ = dual_trajectory(step, retain_losses, steps_in_epoch, accumulation, start)
    assert (step_used == pytest.approx(want_used, rel=1e-12)) == (warmup == 0 and accumulation == 1)


def test_pdu_dual_update_step_is_the_averaged_per_step_variant():
    """dual_update=step: λ moves after each optimiser step with the mean of its micro-batches'
    retain losses, from the step whose end reaches the warm-up."""
    settings = get_method("PDU").settings(epsilon=0.5, dual_lr=2.0, dual_warmup_epochs=1.0, dual_update="step")
    state = losses.DualAscent(settings, model=None, seed=0, regularization_coeff=3.0)
    for value in (1.0, 2.0):  # a step in warm-up: λ stays
        state.observe(0.0, value, 0.0)
    state.after_step(0.5, lambda t: t)
    assert state.dual == 3.0
    for value in (1.0, 2.0):  # the step that ends the warm-up moves it
        state.observe(0.0, value, 0.5)
    state.after_step(1.0, lambda t: t)
    assert state.dual == pytest.approx(3.0 + 2.0 * (1.5 - 0.5))
    state.observe(0.0, 0.0, 1.0)
    state.after_step(1.5, lambda t: t)
    assert state.dual == pytest.approx(max(0.0, 5.0 + 2.0 * (0.0 - 0.5)))


@REGIMES
def test_pdu_total_uses_lambda_before_its_update(regime, seed):
    forget, retain = fixed_logits("forget", regime, seed), fixed_logits("retain", regime, seed)
    model = FixedModel({"forget": forget, "retain": retain})
    settings = get_method("PDU").settings(epsilon=0.5, dual_lr=1.0, dual_warmup_epochs=0)
    state = losses.DualAscent(settings, model=None, seed=0, regularization_coeff=100.0)
    total = objective(model, "PDU", ("forget", "retain"), forget_coeff=1.0, regularization_coeff=100.0, state=state)
    retain_ce = mean_ce(retain, BATCH["retain"]["labels"])
    want = reference_pdu_flatness(forget, BATCH["forget"]["labels"]) + 100.0 * (retain_ce - 0.5)
    assert_parity("PDU+GD total", total, want, [forget, retain])

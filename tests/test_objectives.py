"""Every objective against the docs/formulas.md#objectives formula, computed independently here on fixed logits.

The models are bigram tables (logits of position t depend only on token t), so the expected
values can be written as plain loops over positions with Python floats.
"""

from __future__ import annotations

import math

import pytest
import torch
from bigram import VOCAB, Bigram, seq_batch

from unlearnlm.errors import UserError
from unlearnlm.methods import LossContext, Reference, get_method, losses, method_names

BETA = 0.1

BATCH = {
    "forget": seq_batch([[1, 2, 3, 4, 5], [2, 6, 1]], [2, 1]),
    "retain": seq_batch([[3, 3, 4], [5, 1, 2, 6, 6, 0]], [1, 3]),
    "forget_idk": seq_batch([[1, 2, 6, 6], [2, 6, 4, 4, 3]], [2, 1]),
    "retain_idk": seq_batch([[3, 5], [5, 1, 2, 0, 1]], [1, 3]),
    "mismatch": seq_batch([[1, 2, 5, 0], [2, 6, 0, 3, 1, 2]], [2, 1]),
}


def log_probs_of(model: Bigram, token: int) -> list[float]:
    row = model.table[token].detach().double()
    return (row - torch.logsumexp(row, 0)).tolist()


def label_pairs(kind: str):
    """(sequence index, previous token, target token) for every label position of a kind."""
    seq = BATCH[kind]
    for i in range(seq["input_ids"].shape[0]):
        for t in range(1, seq["input_ids"].shape[1]):
            target = int(seq["labels"][i, t])
            if target != -100:
                yield i, int(seq["input_ids"][i, t - 1]), target


def nll_per_sequence(model: Bigram, kind: str) -> list[float]:
    totals = [0.0] * BATCH[kind]["input_ids"].shape[0]
    for i, prev, target in label_pairs(kind):
        totals[i] -= log_probs_of(model, prev)[target]
    return totals


def mean_ce(model: Bigram, kind: str) -> float:
    values = [-log_probs_of(model, prev)[target] for _, prev, target in label_pairs(kind)]
    return sum(values) / len(values)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


@pytest.fixture()
def models():
    return Bigram(0), Bigram(1)


def run(fn, model, reference=None, settings=None):
    ctx = LossContext(model, BATCH, reference=Reference(reference) if reference is not None else None, beta=BETA,
                      settings=settings)
    return fn(ctx).item()


def test_gradient_ascent(models):
    model, _ = models
    assert run(losses.gradient_ascent, model) == pytest.approx(-mean_ce(model, "forget"), rel=1e-5)


def test_npo(models):
    model, ref = models
    theta, reference = nll_per_sequence(model, "forget"), nll_per_sequence(ref, "forget")
    expected = -(2 / BETA) * sum(log_sigmoid(BETA * (a - b)) for a, b in zip(theta, reference)) / len(theta)
    assert run(losses.negative_preference, model, ref) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("exact_log", [False, True])
def test_maximise_entropy(models, exact_log):
    """The paper's code takes log(p + 1e-12); exact_log the exact log (tests/test_method_parity.py
    has the regime where they part)."""
    model, _ = models
    values = []
    for _, prev, _ in label_pairs("forget"):
        log_p = log_probs_of(model, prev)
        log_p = log_p if exact_log else [math.log(math.exp(lp) + 1e-12) for lp in log_p]
        values.append(sum((1 / VOCAB) * (math.log(1 / VOCAB) - lp) for lp in log_p))
    settings = losses.MESettings(exact_log=exact_log)
    assert run(losses.maximise_entropy, model, settings=settings) == pytest.approx(sum(values) / len(values), rel=1e-5)


@pytest.mark.parametrize("exact_log", [False, True])
def test_maximise_entropy_is_zero_for_a_uniform_model(exact_log):
    model = Bigram(0)
    with torch.no_grad():
        model.table.zero_()
    settings = losses.MESettings(exact_log=exact_log)
    assert run(losses.maximise_entropy, model, settings=settings) == pytest.approx(0.0, abs=1e-6)


def test_idk(models):
    model, _ = models
    assert run(losses.refusal_tuning, model) == pytest.approx(mean_ce(model, "forget_idk"), rel=1e-5)


def test_dpo(models):
    model, ref = models
    pol_idk, pol_true = nll_per_sequence(model, "forget_idk"), nll_per_sequence(model, "forget")
    ref_idk, ref_true = nll_per_sequence(ref, "forget_idk"), nll_per_sequence(ref, "forget")
    terms = [
        log_sigmoid(BETA * ((-pi + pt) - (-ri + rt)))
        for pi, pt, ri, rt in zip(pol_idk, pol_true, ref_idk, ref_true)
    ]
    expected = -(2 / BETA) * sum(terms) / len(terms)
    assert run(losses.direct_preference, model, ref) == pytest.approx(expected, rel=1e-5)


def test_gradient_descent(models):
    model, _ = models
    assert run(losses.gradient_descent, model) == pytest.approx(mean_ce(model, "retain"), rel=1e-5)


def test_kl_to_reference_averages_real_positions_only(models):
    model, ref = models
    seq = BATCH["retain"]
    values = []
    for i in range(seq["input_ids"].shape[0]):
        for t in range(seq["input_ids"].shape[1]):
            if seq["attention_mask"][i, t]:
                token = int(seq["input_ids"][i, t])
                lp, lr = log_probs_of(model, token), log_probs_of(ref, token)
                values.append(sum(math.exp(r) * (r - p) for p, r in zip(lp, lr)))
    assert len(values) == 9  # 3 + 6 real tokens, padding excluded
    assert run(losses.kl_to_reference, model, ref) == pytest.approx(sum(values) / len(values), rel=1e-5)


def test_kl_is_zero_against_itself(models):
    model, _ = models
    assert run(losses.kl_to_reference, model, model) == pytest.approx(0.0, abs=1e-6)


def test_answer_preservation(models):
    model, _ = models
    idk, true = nll_per_sequence(model, "retain_idk"), nll_per_sequence(model, "retain")
    expected = -(1 / BETA) * sum(log_sigmoid(BETA * (a - b)) for a, b in zip(idk, true)) / len(idk)
    assert run(losses.answer_preservation, model) == pytest.approx(expected, rel=1e-5)


def test_llmu_forget_side_is_ga_and_its_mismatch_term_joins_the_regulariser(models):
    """As in the paper's code: forget = GA; regulariser = mean CE of mismatch + KL, both weighed
    by regularization_coeff."""
    model, ref = models
    method = get_method("LLMU")
    ctx = LossContext(model, BATCH, reference=Reference(ref), beta=BETA, settings=method.settings())
    assert method.forget.fn(ctx).item() == pytest.approx(-mean_ce(model, "forget"), rel=1e-5)
    kl = losses.kl_to_reference(ctx).item()
    assert method.regularization(ctx).item() == pytest.approx(mean_ce(model, "mismatch") + kl, rel=1e-5)


def test_fused_forward_matches_separate_forwards(models):
    model, ref = models
    method = get_method("DPO+AP")
    separate = LossContext(model, BATCH, Reference(ref), BETA)
    fused = LossContext(model, BATCH, Reference(ref), BETA)
    fused.prefetch(method.inputs)
    for fn in (method.forget.fn, method.regularizer.fn):
        assert fn(fused).item() == pytest.approx(fn(separate).item(), rel=1e-6)


def test_precomputed_reference_nll_is_used(models):
    model, ref = models
    batch = {k: dict(v) for k, v in BATCH.items()}
    batch["forget"]["reference_nll"] = torch.tensor(nll_per_sequence(ref, "forget"), dtype=torch.float32)
    without_model = LossContext(model, batch, reference=None, beta=BETA)
    with_model = LossContext(model, BATCH, reference=Reference(ref), beta=BETA)
    assert losses.negative_preference(without_model).item() == pytest.approx(
        losses.negative_preference(with_model).item(), rel=1e-6
    )


@pytest.mark.parametrize("name", ["GA+GD", "GA+KL", "NPO+GD", "NPO+KL", "ME+GD", "DPO+GD", "DPO+KL",
                                  "IDK+GD", "IDK+KL", "IDK+AP", "ME", "ga+gd", "LLMU"])
def test_every_combination_resolves(name):
    method = get_method(name)
    assert method.name in method_names() or name.upper() == "LLMU"


def test_paper_defaults_per_method():
    me_gd = get_method("ME+GD")
    assert (me_gd.forget.default_mask, me_gd.forget.default_forget_coeff) == (False, 0.1)
    idk_ap = get_method("IDK+AP")
    assert (idk_ap.forget.default_mask, idk_ap.forget.default_forget_coeff) == (True, 1.0)
    assert not idk_ap.needs_reference and get_method("NPO+GD").needs_reference
    assert get_method("LLMU").regularizer_name == "KL"


@pytest.mark.parametrize("name", ["XX", "GA+", "GA+XX", "+GD", "ME+GD+KL", ""])
def test_unknown_method_lists_valid_ones(name):
    with pytest.raises(UserError, match="forget losses: GA, NPO, ME, IDK, DPO"):
        get_method(name)


def test_token_nll_over_a_large_vocabulary_is_close_to_float64():
    """SmolLM2's 49,152-token vocabulary: float32 cross-entropy summed over many logits drifts;
    computed over contiguous vocabulary rows it stays within 3e-5 of float64 (over a [B, V, T]
    view it drifted 8e-5 on these logits)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 40, 49152, generator=generator) * 5
    labels = torch.randint(0, 49152, (4, 40), generator=generator)
    labels[:, :10] = -100
    nll, mask = losses.token_nll(logits, labels)
    exact = torch.nn.functional.cross_entropy(
        logits[:, :-1].double().reshape(-1, 49152), labels[:, 1:].clamp(min=0).reshape(-1), reduction="none"
    ).view(4, 39) * mask
    assert mask.sum() == 4 * 30  # labels at positions 10..39, each predicted from the position before
    assert (nll.double() - exact).abs().max().item() < 3e-5

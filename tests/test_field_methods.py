"""The field's methods (SimNPO, WGA, SatImp, CE-U, UNDIAL, PDU, RMU) against their formulas
(docs/formulas.md), computed here independently with Python floats on fixed bigram logits, and
their settings, aliases and step state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bigram import Bigram, seq_batch

from unlearnlm.config import UnlearnConfig, load_config, with_method_settings
from unlearnlm.errors import UserError
from unlearnlm.methods import LossContext, Reference, get_method, losses
from unlearnlm.methods.registry import ALIASES, method_names

BATCH = {
    "forget": seq_batch([[1, 2, 3, 4, 5], [2, 6, 1], [4, 4, 0, 2]], [2, 1, 2]),
    "retain": seq_batch([[3, 3, 4], [5, 1, 2, 6, 6, 0]], [1, 3]),
}


def logits_row(model, token):
    return model.table[token].detach().double().tolist()


def log_softmax(row):
    top = max(row)
    total = math.log(sum(math.exp(z - top) for z in row)) + top
    return [z - total for z in row]


def softmax(row):
    return [math.exp(v) for v in log_softmax(row)]


def label_steps(kind="forget"):
    """[(sequence, previous token, target, index of the label within its sequence)]."""
    seq, out = BATCH[kind], []
    for i in range(seq["input_ids"].shape[0]):
        k = 0
        for t in range(1, seq["input_ids"].shape[1]):
            target = int(seq["labels"][i, t])
            if target != -100:
                out.append((i, int(seq["input_ids"][i, t - 1]), target, k))
                k += 1
    return out


def run(name, model, reference=None, **settings):
    method = get_method(name)
    ctx = LossContext(model, BATCH, reference=Reference(reference) if reference is not None else None,
                      settings=method.settings(**settings))
    return method.forget.fn(ctx).item()


@pytest.fixture()
def model():
    return Bigram(0)


@pytest.mark.parametrize("gamma_outside_beta", [False, True])
def test_simnpo(model, gamma_outside_beta):
    """β · (NLL/|a| − γ) as the authors' code; gamma_outside_beta: β · NLL/|a| − γ."""
    beta, gamma = 4.5, 0.3
    totals, lengths = [0.0] * 3, [0] * 3
    for i, prev, target, _ in label_steps():
        totals[i] -= log_softmax(logits_row(model, prev))[target]
        lengths[i] += 1
    margins = [beta * n / a - gamma if gamma_outside_beta else beta * (n / a - gamma)
               for n, a in zip(totals, lengths, strict=True)]
    expected = -(2 / beta) * sum(-math.log1p(math.exp(-m)) for m in margins) / 3
    got = run("SimNPO", model, beta=beta, gamma=gamma, gamma_outside_beta=gamma_outside_beta)
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_weighted_gradient_ascent(model, beta):
    values = []
    for _, prev, target, _ in label_steps():
        ell = -log_softmax(logits_row(model, prev))[target]
        values.append(math.exp(-ell) ** beta * ell)
    assert run("WGA", model, beta=beta) == pytest.approx(-sum(values) / len(values), rel=1e-5)


def test_saturation_importance(model):
    b1, b2 = 5.0, 1.0
    values = []
    for _, prev, target, _ in label_steps():
        p = softmax(logits_row(model, prev))[target]
        values.append(p ** b1 * (1 - p) ** b2 * -math.log(p))
    assert run("SatImp", model, beta1=b1, beta2=b2) == pytest.approx(-sum(values) / len(values), rel=1e-4)


@pytest.mark.parametrize("skip", [0, 1, 2])
def test_cross_entropy_unlearning(model, skip):
    values = []
    for _, prev, target, k in label_steps():
        if k < skip:
            continue
        z = logits_row(model, prev)
        without = [v for j, v in enumerate(z) if j != target]
        q_rest = softmax(without)
        q = q_rest[:target] + [0.0] + q_rest[target:]
        values.append(-sum(qv * lp for qv, lp in zip(q, log_softmax(z), strict=True)))
    assert run("CE-U", model, skip_first=skip) == pytest.approx(sum(values) / len(values), rel=1e-5)


def test_undial(model):
    reference, beta = Bigram(1), 10.0
    values = []
    for _, prev, target, _ in label_steps():
        z_ref = logits_row(reference, prev)
        z_ref[target] -= beta
        q = softmax(z_ref)
        values.append(-sum(qv * lp for qv, lp in zip(q, log_softmax(logits_row(model, prev)), strict=True)))
    assert run("UNDIAL", model, reference, beta=beta) == pytest.approx(sum(values) / len(values), rel=1e-5)


def test_undial_with_zero_beta_against_itself_is_the_entropy(model):
    values = []
    for _, prev, _, _ in label_steps():
        p = softmax(logits_row(model, prev))
        values.append(-sum(v * math.log(v) for v in p))
    assert run("UNDIAL", model, model, beta=0.0) == pytest.approx(sum(values) / len(values), rel=1e-5)


@pytest.mark.parametrize("flatness_logits", ["at_label", "predicting"])
def test_pdu_forget_loss(model, flatness_logits):
    """The authors' code flattens the logits at each label's own position (a bigram's logits
    there depend on the label token itself); ``predicting``: those at the previous position."""
    values = []
    for _, prev, target, _ in label_steps():
        z = logits_row(model, target if flatness_logits == "at_label" else prev)
        values.append((max(z) - sum(z) / len(z)) ** 2)
    got = run("PDU+GD", model, epsilon=1.0, flatness_logits=flatness_logits)
    assert got == pytest.approx(sum(values) / len(values), rel=1e-5)


def test_pdu_total_and_dual_update():
    settings = get_method("PDU").settings(epsilon=0.5, dual_lr=2.0, dual_warmup_epochs=1.0)
    state = losses.DualAscent(settings, model=None, seed=0, regularization_coeff=3.0)
    loss = state.combine(0.2, torch.tensor(4.0), 1.0, torch.tensor(1.5))
    assert loss.item() == pytest.approx(0.2 * 4.0 + 3.0 * (1.5 - 0.5))
    def mean(t):
        return t
    state.observe(0.0, 2.0, 0.75)  # an epoch not yet done: λ stays
    state.after_step(1.0, mean)
    assert state.dual == 3.0
    for value in (1.0, 2.0):  # one epoch done: λ ← max(0, λ + η (retain loss − ε)) per micro-batch
        state.observe(0.0, value, 1.0)
    assert state.dual == pytest.approx(3.0 + 2.0 * (1.0 - 0.5) + 2.0 * (2.0 - 0.5))
    restored = losses.DualAscent(settings, model=None, seed=0, regularization_coeff=1.0)
    restored.load_state_dict(state.state_dict())
    assert restored.dual == state.dual and state.log_values() == {"dual_lambda": state.dual}


def test_activation_distance_against_numpy():
    rng = np.random.default_rng(0)
    h, g = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
    labels = np.array([[-100, 4, 5, -100, -100], [-100, -100, 1, 2, 3]])
    expected = []
    for i in range(2):
        positions = [t for t in range(5) if labels[i, t] != -100]
        expected.append(sum(np.mean((h[i, t] - g[i, t]) ** 2) for t in positions) / len(positions))
    got = losses.activation_distance(torch.tensor(h), torch.tensor(g), torch.tensor(labels))
    assert got.item() == pytest.approx(np.mean(expected), rel=1e-6)
    vector = rng.normal(size=3)  # RMU's target c·u is one vector, the same at every position
    broadcast = losses.activation_distance(torch.tensor(h), torch.tensor(vector), torch.tensor(labels))
    expected = np.mean([np.mean([np.mean((h[i, t] - vector) ** 2) for t in range(5) if labels[i, t] != -100])
                        for i in range(2)])
    assert broadcast.item() == pytest.approx(expected, rel=1e-6)


def test_steering_vector_is_unit_uniform_scaled_and_seeded(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    settings = get_method("RMU").settings(steering_coeff=6.5)
    a = losses.SteeringTarget(settings, model=model, seed=5, regularization_coeff=1.0).target
    b = losses.SteeringTarget(settings, model=model, seed=5, regularization_coeff=1.0).target
    c = losses.SteeringTarget(settings, model=model, seed=6, regularization_coeff=1.0).target
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (model.config.hidden_size,) and bool((a > 0).all())
    assert a.norm().item() == pytest.approx(6.5, rel=1e-5)


@pytest.mark.parametrize("layer", [0, 1])
def test_block_output_is_that_blocks_hidden_states(tiny_model, layer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    seq = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.no_grad():
        every = model(**seq, output_hidden_states=True).hidden_states
        hooked = losses.block_output(model, seq, layer)
    # hidden_states[0] is the embedding output; block ℓ's output is hidden_states[ℓ + 1]
    # (the last one after the final norm, so only the blocks before the last compare exactly).
    if layer + 1 < len(every) - 1:
        assert torch.allclose(hooked, every[layer + 1], atol=1e-6)
    else:
        assert hooked.shape == every[layer + 1].shape


# ---- names, settings -----------------------------------------------------------------------


@pytest.mark.parametrize("alias,meaning", [("GradAscent", "GA"), ("GradDiff", "GA+GD"), ("IdkDPO", "DPO+GD"),
                                           ("IdkNLL", "IDK+GD"), ("SimNPO", "SimNPO+GD"), ("simnpo", "SimNPO+GD"),
                                           ("RMU", "RMU+ACT"), ("UNDIAL", "UNDIAL"), ("ce-u", "CE-U"),
                                           ("PDU", "PDU+GD"), ("WGA", "WGA+GD"), ("SatImp", "SatImp+GD")])
def test_aliases(alias, meaning):
    assert get_method(alias).name == meaning
    assert alias in method_names() or meaning in method_names()


def test_paper_defaults_of_the_field():
    assert get_method("SimNPO").forget.default_forget_coeff == 0.125
    satimp = get_method("SatImp")
    assert (satimp.forget.default_forget_coeff, satimp.forget.default_regularization_coeff) == (1.0, 0.1)
    assert (satimp.settings().beta1, satimp.settings().beta2) == (5.0, 0.1)
    assert get_method("SimNPO").settings() == get_method("SimNPO").settings(beta=4.5, gamma=0.0)
    rmu = get_method("RMU").settings()
    assert (rmu.layer, rmu.steering_coeff, rmu.trainable) == (7, 2.0, [])
    assert get_method("UNDIAL").settings().beta == 10.0 and not get_method("UNDIAL").forget.reference_nll_only
    pdu = get_method("PDU").settings()
    assert (pdu.epsilon, pdu.dual_lr, pdu.dual_warmup_epochs) == (None, 1.0, 5.0)
    assert (pdu.dual_update, pdu.flatness_logits) == ("micro_batch", "at_label")
    assert not get_method("ME").settings().exact_log and not get_method("SimNPO").settings().gamma_outside_beta
    assert get_method("RMU").settings().averaging == "per_sequence"
    assert get_method("CE-U").settings().skip_first == 1 and get_method("WGA").settings().beta == 1.0
    assert set(ALIASES) >= {"GradAscent", "GradDiff", "IdkDPO", "IdkNLL", "SimNPO", "RMU"}


def test_method_args_on_the_command_line_are_typed_and_complete():
    config = with_method_settings(load_config(UnlearnConfig, None, ["method=SimNPO", "method_args.beta=3"]))
    assert config.method_args == {"beta": 3.0, "gamma": 0.0, "gamma_outside_beta": False}
    # the paper's methods keep their top-level numbers and have no settings of their own
    assert with_method_settings(load_config(UnlearnConfig, None, ["method=NPO+GD", "beta=0.2"])).method_args == {}


@pytest.mark.parametrize("overrides,message", [
    (["method=SimNPO", "method_args.bta=3"], "method SimNPO\\+GD has no setting 'bta'; its settings: beta"),
    (["method=SimNPO", "method_args.beta=x"], "wants a number.*its settings: beta"),
    (["method=SimNPO", "method_args.beta=-1"], "beta must be a positive number"),
    (["method=PDU"], "epsilon .* is required"),
    (["method=PDU", "method_args.epsilon=1", "method_args.dual_update=epoch"],
     "dual_update must be one of micro_batch, step, got 'epoch'"),
    (["method=RMU", "method_args.averaging=mean"], "averaging must be one of per_sequence, every_element"),
    (["method=ME+GD", "method_args.exact_log=maybe"], "wants true or false"),
    (["method=GA+GD", "method_args.beta=1"], "method GA\\+GD has no setting 'beta'; it has no settings"),
    (["method=RMU", "method_args.trainable=layers(.mlp"], "not a regular expression"),
    (["method=RMU", "method_args=3"], "method_args.NAME=value"),
    (["method=SimNPO", "beta=4.5"], "takes its beta as method_args.beta \\(default 4.5\\)"),
])
def test_bad_method_args_are_one_line_errors(overrides, message):
    with pytest.raises(UserError, match=message) as err:
        load_config(UnlearnConfig, None, overrides)
    assert "\n" not in str(err.value)


def test_blocks_after_the_layer_read_are_frozen_and_only_those(tiny_model):
    from transformers import AutoModelForCausalLM

    from unlearnlm.training.trainer import freeze_unreached, select_trainable

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    frozen = freeze_unreached(model, 0)
    assert frozen and all(n.startswith(("model.layers.1.", "model.norm.", "lm_head.")) for n in frozen)
    assert any(n.startswith("model.layers.1.") for n in frozen)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "model.embed_tokens.weight" in trainable and all(not n.startswith("model.layers.1.") for n in trainable)
    assert select_trainable(model, [r"layers\.0\.mlp\.down_proj"]) == ["model.layers.0.mlp.down_proj.weight"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["model.layers.0.mlp.down_proj.weight"]


def test_rmu_wmdp_preset():
    import re

    config = with_method_settings(load_config(UnlearnConfig, "rmu-wmdp", []))
    assert (config.method, config.regularization_coeff, config.training.lr) == ("RMU+ACT", 1200.0, 5e-5)
    assert (config.method_args["layer"], config.method_args["steering_coeff"]) == (7, 6.5)
    names = [f"model.layers.{i}.{part}.weight" for i in range(30) for part in ("mlp.down_proj", "mlp.up_proj")]
    chosen = [n for n in names if any(re.search(p, n) for p in config.method_args["trainable"])]
    assert chosen == [f"model.layers.{i}.mlp.down_proj.weight" for i in (5, 6, 7)]


def test_demo_offers_every_method():
    from unlearnlm.config import DemoConfig
    from unlearnlm.scenarios.demo import ALL_METHODS, demo_methods, method_args_for, unlearn_config

    default = DemoConfig()
    assert demo_methods(default)[-2:] == ["SimNPO+GD", "UNDIAL"] and len(demo_methods(default)) == 6
    every = load_config(DemoConfig, None, ["methods=all"])
    assert demo_methods(every) == ALL_METHODS
    assert {get_method(m).forget_name for m in ALL_METHODS} >= {"SimNPO", "RMU", "UNDIAL", "WGA", "SatImp", "CE-U",
                                                                 "PDU", "TaskVector", "AltPO"}
    assert demo_methods(load_config(DemoConfig, None, ["methods=GA+GD,all"])) == ["GA+GD"] + [
        m for m in ALL_METHODS if m != "GA+GD"]
    # PDU runs with the demo's bound; every method's config validates before any model work
    assert method_args_for(every, "pdu+gd") == {"epsilon": 1.0, "dual_warmup_epochs": 1.0}
    from pathlib import Path

    for method in ALL_METHODS:
        with_method_settings(unlearn_config(every, Path("w"), Path("t"), method, Path("o")))
    with pytest.raises(UserError, match="unknown method 'SimNPOO'") as err:
        demo_methods(load_config(DemoConfig, None, ["methods=GA+GD,SimNPOO"]))
    assert "\n" not in str(err.value)

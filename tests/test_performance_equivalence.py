"""The speed-ups of docs/performance.md change no number: fused forwards, precomputed reference
NLLs and length-grouped batches give the losses and the examples of the plain way."""

from __future__ import annotations

import pytest
import torch
from conftest import qa_rows
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearnlm.config import UnlearnConfig, from_dict
from unlearnlm.data.batches import LengthGroupedSampler, UnlearningCollator, UnlearningDataset, answer_positions
from unlearnlm.data.formatting import PromptFormat
from unlearnlm.data.refusals import load_refusals
from unlearnlm.methods import LossContext, Reference, get_method
from unlearnlm.training.run import build_unlearning_trainer, load_unlearning_data
from unlearnlm.training.trainer import precompute_reference_nll

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    """Policy = the tiny model; reference = the same with its weights jittered."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    reference = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return tokenizer, policy, reference


def dataset_for(tokenizer, method: str, seed: int = 3) -> UnlearningDataset:
    rows = qa_rows()
    return UnlearningDataset(rows[:12], rows[12:], load_refusals(), PromptFormat(tokenizer),
                             get_method(method).inputs, seed=seed)


def method_loss(method: str, model, batch, reference=None, fuse=False) -> torch.Tensor:
    m = get_method(method)
    ctx = LossContext(model, batch, reference=Reference(reference) if reference is not None else None,
                      settings=m.settings())
    if fuse:
        ctx.prefetch(m.inputs)
    loss = m.forget.fn(ctx)
    return loss + m.regularization(ctx) if m.regularizer else loss


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert abs(a.item() - b.item()) <= TOLERANCE * max(1.0, abs(b.item())), (a.item(), b.item())


@pytest.mark.parametrize("method", ["ME+GD", "IDK+AP", "DPO+GD", "LLMU", "GA+GD"])
def test_fused_forward_equals_separate_forwards(setup, method):
    tokenizer, policy, reference = setup
    dataset = dataset_for(tokenizer, method)
    collator = UnlearningCollator(tokenizer.pad_token_id, mask=method != "ME+GD")
    batch = collator([dataset[i] for i in range(5)])
    with torch.no_grad():
        separate = method_loss(method, policy, batch, reference)
        fused = method_loss(method, policy, batch, reference, fuse=True)
    assert_close(fused, separate)


@pytest.mark.parametrize("method", ["NPO+GD", "DPO+GD", "NPO"])
def test_precomputed_reference_nll_equals_live_reference(setup, method):
    tokenizer, policy, reference = setup
    dataset = dataset_for(tokenizer, method)
    kinds = get_method(method).forget.inputs
    live = UnlearningCollator(tokenizer.pad_token_id, mask=True)
    tables = precompute_reference_nll(reference, dataset, live, kinds, epochs=2, batch_size=5, device="cpu")
    precomputed = UnlearningCollator(tokenizer.pad_token_id, mask=True, reference_nll=tables)
    for epoch in range(2):  # DPO's refusals differ per epoch: every one used must be in the table
        dataset.set_epoch(epoch)
        examples = [dataset[i] for i in range(len(dataset))]
        with torch.no_grad():
            expected = method_loss(method, policy, live(examples), reference)
            got = method_loss(method, policy, precomputed(examples), reference=None)
        assert_close(got, expected)
        # A nonzero policy/reference gap, so the test would see a wrong table.
        assert abs(expected.item() - method_loss(method, policy, live(examples), policy).item()) > 1e-3


def test_fixed_padding_gives_the_same_loss(setup):
    """The reference-style pad-to-500 batches and per-batch padding agree (padding is masked)."""
    tokenizer, policy, reference = setup
    dataset = dataset_for(tokenizer, "NPO+GD")
    examples = [dataset[i] for i in range(4)]
    with torch.no_grad():
        tight = method_loss("NPO+GD", policy, UnlearningCollator(tokenizer.pad_token_id)(examples), reference)
        padded = method_loss("NPO+GD", policy, UnlearningCollator(tokenizer.pad_token_id, pad_to=120)(examples),
                             reference)
    assert_close(padded, tight)


def test_missing_precomputed_nll_fails_loudly(setup):
    tokenizer, _, _ = setup
    dataset = dataset_for(tokenizer, "NPO")
    collator = UnlearningCollator(tokenizer.pad_token_id, reference_nll={"forget": {}})
    with pytest.raises(KeyError, match="no precomputed reference NLL"):
        collator([dataset[0]])


def test_length_grouping_keeps_the_rows_and_is_deterministic(setup):
    tokenizer, _, _ = setup
    dataset = dataset_for(tokenizer, "IDK+AP")
    group = 4

    def order(epoch: int) -> list[int]:
        sampler = LengthGroupedSampler(dataset.lengths, len(dataset), group, seed=5)
        sampler.set_epoch(epoch)
        return list(sampler)

    for epoch in range(3):
        first = order(epoch)
        assert sorted(first) == list(range(len(dataset)))  # every row once per epoch
        assert first == order(epoch)  # same order from a fresh sampler (other process, resume)
        lengths = dataset.lengths(epoch)
        for start in range(0, len(first), group):  # each step's rows: longest first
            chunk = [lengths[i] for i in first[start : start + group]]
            assert chunk == sorted(chunk, reverse=True)
    assert order(0) != order(1) or order(1) != order(2)  # epochs are shuffled afresh


def _config(tiny_model, qa_folder, out, method, **training) -> UnlearnConfig:
    return from_dict(UnlearnConfig, {
        "method": method, "output_dir": str(out),
        "model": {"name_or_path": str(tiny_model)},
        "data": {"source": str(qa_folder), "forget": "forget", "retain": "retain", "task_id": ["1", "2"]},
        "training": {"epochs": 2, "per_device_batch_size": 2, "gradient_accumulation_steps": 2,
                     "progress": False, **training},
    })


@pytest.mark.parametrize("method, keeps_reference", [("NPO+GD", False), ("DPO+GD", False), ("NPO+KL", True)])
def test_trainer_frees_the_reference_when_nlls_suffice(tiny_model, qa_folder, tmp_path, method, keeps_reference):
    config = _config(tiny_model, qa_folder, tmp_path, method)
    trainer, _ = build_unlearning_trainer(config, get_method(method), load_unlearning_data(config, get_method(method)),
                                          tmp_path)
    assert (trainer.reference is not None) == keeps_reference
    assert set(trainer.data_collator.reference_nll) == set(get_method(method).forget.inputs)
    # Every batch of every epoch finds its NLLs, in the length-grouped order.
    loader = trainer.get_train_dataloader()
    for epoch in range(2):
        trainer.train_dataset.set_epoch(epoch)
        loader.set_epoch(epoch)
        for batch in loader:
            assert "reference_nll" in batch["forget"]


def test_first_loss_same_in_reference_style_and_fast_modes(tiny_model, qa_folder, tmp_path):
    method = get_method("NPO+GD")
    fast = _config(tiny_model, qa_folder, tmp_path / "a", "NPO+GD")
    slow = _config(tiny_model, qa_folder, tmp_path / "b", "NPO+GD", fuse_forward=False,
                   group_by_length=False, precompute_reference_nll=False)
    slow.data.pad_to = 100
    data = load_unlearning_data(fast, method)
    losses = []
    for config in (fast, slow):
        trainer, _ = build_unlearning_trainer(config, method, data, tmp_path)
        examples = [trainer.train_dataset[i] for i in range(4)]
        with torch.no_grad():
            losses.append(trainer.objective(trainer.model, trainer.data_collator(examples))[0])
    assert_close(losses[0], losses[1])


@pytest.mark.parametrize("method", ["GA+GD", "NPO+AP", "IDK+GD", "DPO+KL", "ME+GD", "GA+KL"])
@pytest.mark.parametrize("fuse", [False, True])
def test_answer_only_logits_give_the_losses_and_gradients_of_full_logits(setup, method, fuse):
    """Objectives read logits of the positions that carry labels only (logits_to_keep); KL,
    which reads every position, keeps them all. Same loss, same gradient as full logits."""
    tokenizer, policy, reference = setup
    m = get_method(method)
    dataset = dataset_for(tokenizer, method)
    batch = UnlearningCollator(tokenizer.pad_token_id, mask=m.forget.default_mask)([dataset[i] for i in range(5)])

    def loss_and_grad(answer_logits_only):
        policy.zero_grad()
        ctx = LossContext(policy, batch, reference=Reference(reference), answer_logits_only=answer_logits_only,
                          settings=m.settings())
        if fuse:
            ctx.prefetch(m.inputs)
        loss = m.forget.fn(ctx) + m.regularization(ctx)
        loss.backward()
        widths = {kind: ctx.logits(kind).shape[1] for kind in m.inputs}
        return loss.detach(), [p.grad.clone() for p in policy.parameters()], widths

    full, full_grads, full_widths = loss_and_grad(answer_logits_only=())
    kept, kept_grads, kept_widths = loss_and_grad(answer_logits_only=m.answer_logits_only)
    assert_close(kept, full)
    for got, expected in zip(kept_grads, full_grads):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert full_widths == {k: batch[k]["input_ids"].shape[1] for k in m.inputs}
    trimmed = {k for k in m.inputs if kept_widths[k] < full_widths[k]}
    # Masked prompts are skipped; KL's kinds and ME's unmasked forget questions keep every
    # position, and a fused forward is trimmed only when each of its kinds may be.
    expected = {k for k in m.answer_logits_only if answer_positions(batch[k]["labels"]) > 0}
    if fuse and len(expected) < len(m.inputs):
        expected = set()
    assert trimmed == expected
    assert expected or (fuse and method in ("ME+GD", "DPO+KL", "GA+KL"))


def test_finetuning_batches_with_answer_logits_only_give_the_full_loss(setup):
    from unlearnlm.data.batches import QACollator

    tokenizer, policy, _ = setup
    formatter = PromptFormat(tokenizer)
    examples = [formatter.encode(r["question"], r["answer"]) for r in qa_rows()[:6]]
    full = QACollator(tokenizer.pad_token_id)(examples)
    kept = QACollator(tokenizer.pad_token_id, answer_logits_only=True)(examples)
    assert kept["logits_to_keep"] < full["input_ids"].shape[1]
    assert kept["labels"].shape[1] == kept["logits_to_keep"]
    assert (kept["labels"] != -100).sum() == (full["labels"] != -100).sum()
    with torch.no_grad():
        assert_close(policy(**kept).loss, policy(**full).loss)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_greedy_tokens_are_plain_generates_while_ended_rows_leave_the_batch(tiny_model, dtype):
    """greedy_new_tokens drops a row from the batch (and its KV cache) when it ends: every row's
    tokens are those of plain greedy ``model.generate`` on the same batch, and of the row alone."""
    from transformers import GenerationConfig

    from unlearnlm.evaluation.inference import greedy_new_tokens

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=dtype).eval()
    with torch.no_grad():  # sharper logits: the random model then varies its tokens instead of repeating one
        for parameter in model.parameters():
            parameter.mul_(8.0)
    prompts = [tokenizer(q)["input_ids"] for q in ["where was the author born ?", "who wrote the book",
                                                   "what is the name of the writer", "when"]]
    budgets = [12, 9, 12, 5]
    pad_id = tokenizer.pad_token_id

    def plain_generate(rows, eos):
        """Plain greedy generate on the left-padded rows, each cut at its budget and before EOS."""
        width = max(len(prompts[i]) for i in rows)
        ids = torch.tensor([[pad_id] * (width - len(prompts[i])) + prompts[i] for i in rows])
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in rows])
        config = GenerationConfig(max_new_tokens=max(budgets[i] for i in rows), do_sample=False, num_beams=1,
                                  pad_token_id=pad_id, eos_token_id=eos)
        output = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, width:].tolist()
        result = []
        for i, tokens in zip(rows, output):
            tokens = tokens[: budgets[i]]
            result.append(tokens[: tokens.index(eos)] if eos in tokens else tokens)
        return result

    everyone = list(range(len(prompts)))
    plain = greedy_new_tokens(model, prompts, budgets, pad_id, [tokenizer.eos_token_id])
    assert plain == plain_generate(everyone, tokenizer.eos_token_id)
    assert [len(t) for t in plain] == budgets  # no EOS: every row runs to its budget, the short ones leave first
    # Call the token row 0 makes fifth an EOS: the rows that make it end there and leave the batch.
    stop = plain[0][4]
    sizes = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]),
                                           with_kwargs=True)
    ended = greedy_new_tokens(model, prompts, budgets, pad_id, [stop])
    hook.remove()
    assert ended == plain_generate(everyone, stop)
    assert ended == [plain_generate([i], stop)[0] for i in everyone]
    assert sizes[0] == 4 and sizes[-1] < 4 and sizes == sorted(sizes, reverse=True)  # the batch shrinks
    assert len(sizes) == max(len(t) + (len(t) < b) for t, b in zip(ended, budgets))  # one forward per step

    # A cache that cannot drop rows: the ended rows stay in the batch, the tokens are the same.
    from transformers import DynamicCache

    with pytest.MonkeyPatch.context() as patch:
        owner = next(c for c in DynamicCache.__mro__ if "batch_select_indices" in vars(c))
        patch.delattr(owner, "batch_select_indices")
        sizes.clear()
        hook = model.register_forward_pre_hook(
            lambda module, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
        assert greedy_new_tokens(model, prompts, budgets, pad_id, [stop]) == ended
        hook.remove()
    assert set(sizes) == {4}

"""Prompt formatting and label masking, token by token (docs/formulas.md#token-format)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from unlearnlm.data.batches import QACollator, UnlearningCollator, UnlearningDataset
from unlearnlm.data.formatting import PromptFormat


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def plain_tokenizer(tiny_model_no_template):
    return AutoTokenizer.from_pretrained(tiny_model_no_template)


def tokens(tokenizer, ids):
    return tokenizer.convert_ids_to_tokens(list(ids))


def test_chat_template_prompt_and_answer_token_by_token(chat_tokenizer):
    fmt = PromptFormat(chat_tokenizer)
    assert fmt.use_chat_template
    encoded = fmt.encode("Where was alice born?", "alice was born in paris.")
    assert tokens(chat_tokenizer, encoded.input_ids) == [
        "<|im_start|>", "user", "where", "was", "alice", "born", "?", "<|im_end|>",
        "<|im_start|>", "assistant",
        "alice", "was", "born", "in", "paris", ".", "<|im_end|>",
    ]
    assert encoded.prompt_length == 10


def test_tags_without_chat_template(plain_tokenizer):
    fmt = PromptFormat(plain_tokenizer)
    assert not fmt.use_chat_template
    assert fmt.prompt_text("Where was bob born?") == "Question: Where was bob born?\nAnswer:"
    encoded = fmt.encode("Where was bob born?", "bob was born in lima.")
    assert tokens(plain_tokenizer, encoded.input_ids) == [
        "question", ":", "where", "was", "bob", "born", "?", "answer", ":",
        "bob", "was", "born", "in", "lima", ".", "<s>",
    ]
    assert encoded.prompt_length == 9


def test_labels_mask_prompt_and_padding_and_end_with_eos(chat_tokenizer):
    fmt = PromptFormat(chat_tokenizer)
    short = fmt.encode("Where was bob born?", "bob was born in lima.")
    long = fmt.encode("What is the favourite colour of alice?", "The favourite colour of alice is red.")
    batch = QACollator(chat_tokenizer.pad_token_id)([short, long])
    n_short = len(short.input_ids)
    assert batch["input_ids"].shape == (2, len(long.input_ids))  # padded per batch, not to a fixed length
    assert batch["attention_mask"][0].tolist() == [1] * n_short + [0] * (len(long.input_ids) - n_short)
    labels = batch["labels"][0].tolist()
    assert labels[: short.prompt_length] == [-100] * short.prompt_length
    assert labels[short.prompt_length : n_short] == list(short.input_ids[short.prompt_length :])
    assert labels[n_short - 1] == chat_tokenizer.eos_token_id
    assert labels[n_short:] == [-100] * (len(long.input_ids) - n_short)


def test_mask_false_covers_the_question_of_forget_side_kinds_only(chat_tokenizer):
    fmt = PromptFormat(chat_tokenizer)
    forget = [{"question": "Where was bob born?", "answer": "bob was born in lima."}]
    retain = [{"question": "Where was carol born?", "answer": "carol was born in oslo."},
              {"question": "What is the favourite colour of alice?", "answer": "The favourite colour of alice is red."}]
    dataset = UnlearningDataset(forget, retain, ["I don't know."], fmt, ("forget", "retain", "forget_idk"), seed=1)
    batch = UnlearningCollator(chat_tokenizer.pad_token_id, mask=False)([dataset[0]])
    forget_ids = batch["forget"]["input_ids"][0]
    assert batch["forget"]["labels"][0].tolist() == forget_ids.tolist()  # question included
    assert (batch["forget_idk"]["labels"][0] != -100).all()
    retain_item = dataset[0]["retain"]
    assert batch["retain"]["labels"][0, : retain_item.prompt_length].eq(-100).all()  # retain stays masked


def test_mask_false_never_counts_padding(chat_tokenizer):
    fmt = PromptFormat(chat_tokenizer)
    forget = [{"question": "Where was bob born?", "answer": "bob was born in lima."},
              {"question": "What is the favourite colour of alice?", "answer": "The favourite colour of alice is red."}]
    dataset = UnlearningDataset(forget, [], [], fmt, ("forget",), seed=1)
    batch = UnlearningCollator(chat_tokenizer.pad_token_id, mask=False)([dataset[0], dataset[1]])
    labels, attention = batch["forget"]["labels"], batch["forget"]["attention_mask"]
    assert ((labels != -100) == attention.bool()).all()


def test_companions_depend_only_on_seed_epoch_and_index(chat_tokenizer):
    fmt = PromptFormat(chat_tokenizer)
    forget = [{"question": f"Where was {n} born?", "answer": f"{n} was born in lima."} for n in ("bob", "alice")]
    retain = [{"question": f"Where was {n} born?", "answer": f"{n} was born in oslo."} for n in
              ("carol", "dave", "erin", "frank", "grace", "heidi")]
    kinds = ("forget", "retain", "retain_idk", "forget_idk", "mismatch")
    first = UnlearningDataset(forget, retain, ["I don't know.", "No idea."], fmt, kinds, seed=3)
    second = UnlearningDataset(forget, retain, ["I don't know.", "No idea."], fmt, kinds, seed=3)
    assert [first[i] for i in (1, 0)] == [second[i] for i in (1, 0)]
    picks = set()
    for epoch in range(8):
        first.set_epoch(epoch)
        picks.add(first[0]["retain"].input_ids)
    assert len(picks) > 1  # a new random retain companion each epoch
    example = first[1]
    assert example["retain_idk"].input_ids[: example["retain_idk"].prompt_length] == \
        example["retain"].input_ids[: example["retain"].prompt_length]  # same retain question


def test_truncation_keeps_prompt_boundary(chat_tokenizer):
    fmt = PromptFormat(chat_tokenizer)
    encoded = fmt.encode("Where was bob born?", "bob was born in lima.", max_length=12)
    assert len(encoded.input_ids) == 12 and encoded.prompt_length == 10
    tiny = fmt.encode("Where was bob born?", "bob was born in lima.", max_length=5)
    assert tiny.prompt_length == 5
    assert QACollator(0)([tiny])["labels"].eq(-100).all()


def test_padding_respects_pad_to(chat_tokenizer):
    fmt = PromptFormat(chat_tokenizer)
    encoded = fmt.encode("Where was bob born?", "bob was born in lima.")
    batch = QACollator(chat_tokenizer.pad_token_id, pad_to=40)([encoded])
    assert batch["input_ids"].shape == (1, 40)
    assert int(batch["attention_mask"].sum()) == len(encoded.input_ids)
    assert torch.equal(batch["labels"][0, len(encoded.input_ids):], torch.full((40 - len(encoded.input_ids),), -100))


def test_the_default_system_message_is_dropped_from_a_chat_template():
    from unlearnlm.training.models import without_default_system_message

    template = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                "{{ '<|im_start|>system\nYou are SmolLM<|im_end|>\n' }}{% endif %}"
                "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}{% endfor %}")
    stripped = without_default_system_message(template)
    assert stripped == ("{% for message in messages %}"
                        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}{% endfor %}")
    assert without_default_system_message(stripped) == stripped  # nothing to drop: unchanged

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


# ---- prompt formats: presets, tags, recorded with the model -------------------------------------

import json  # noqa: E402

from unlearnlm.cli import main  # noqa: E402
from unlearnlm.config import ModelConfig, PromptFormatConfig  # noqa: E402
from unlearnlm.data.formatting import FORMAT_FILE, FormatSpec, read_recorded_format  # noqa: E402
from unlearnlm.errors import UserError  # noqa: E402
from unlearnlm.training.models import load_prompt_format  # noqa: E402

LLAMA3_USER = "<|start_header_id|>user<|end_header_id|>\n\n"
LLAMA3_ASSISTANT = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"


def _tofu_rows(shared_data, count=300):
    lines = (shared_data / "tofu" / "retain90.json").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:count]]


def _reference_encoding(tokenizer, question_start, question_end, question, answer):
    """The reference's rule written out here: one string, tokenised whole with special tokens; the
    prompt length from the prompt tokenised alone; EOS appended; labels -100 over the prompt."""
    prompt = question_start + question + question_end
    ids = tokenizer(prompt + answer, add_special_tokens=True)["input_ids"] + [tokenizer.eos_token_id]
    prompt_length = len(tokenizer.tokenize(prompt, add_special_tokens=True))
    labels = [-100] * prompt_length + ids[prompt_length:]
    generation = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    return ids, labels, generation


@pytest.mark.parametrize("family,preset,tags", [
    ("llama2", "tofu-llama2", ("[INST] ", " [/INST]")),
    ("llama3", "llama3-instruct", (LLAMA3_USER, LLAMA3_ASSISTANT)),
])
def test_presets_give_the_reference_token_ids_on_300_tofu_rows(shared_data, family, preset, tags):
    tokenizer = AutoTokenizer.from_pretrained(shared_data / "tokenizers" / family)
    fmt = load_prompt_format(ModelConfig(str(shared_data / "tokenizers" / family),
                                         prompt_format=PromptFormatConfig(kind=preset)), tokenizer)
    rows = _tofu_rows(shared_data)
    assert len(rows) == 300
    matched = 0
    for row in rows:
        ids, labels, generation = _reference_encoding(tokenizer, *tags, row["question"], row["answer"])
        encoded = fmt.encode(row["question"], row["answer"])
        batch = QACollator(tokenizer.pad_token_id or 0)([encoded])
        same = (list(encoded.input_ids) == ids and batch["labels"][0].tolist() == labels
                and list(fmt.prompt_ids(row["question"])) == generation)
        matched += same
    assert matched == 300
    if family == "llama2":  # the answer's first token follows "]" without a space: "The", not "▁The"
        first = rows[0]
        encoded = fmt.encode(first["question"], first["answer"])
        assert tokenizer.convert_ids_to_tokens([encoded.input_ids[encoded.prompt_length]])[0] == "The"
        assert encoded.input_ids[0] == tokenizer.bos_token_id


def test_hub_names_of_the_paper_targets_pick_their_preset(plain_tokenizer):
    from unlearnlm.data.formatting import PRESETS, resolve_format

    assert resolve_format(None, "locuslab/tofu_ft_llama2-7b", None, plain_tokenizer) == PRESETS["tofu-llama2"]
    llama3 = resolve_format(None, "meta-llama/Meta-Llama-3-8B-Instruct", None, plain_tokenizer)
    assert llama3 == PRESETS["llama3-instruct"]
    assert resolve_format(None, "someone/other-model", None, plain_tokenizer).kind == "question_answer"


def test_the_default_format_is_unchanged(tiny_model, chat_tokenizer, tiny_model_no_template, plain_tokenizer):
    """chat_template where the tokenizer has one, else Question/Answer: the ids of PromptFormat(tokenizer)."""
    for folder, tokenizer in ((tiny_model, chat_tokenizer), (tiny_model_no_template, plain_tokenizer)):
        fmt = load_prompt_format(ModelConfig(str(folder)), tokenizer)
        assert fmt.encode("Where was bob born?", "bob was born in lima.") == \
            PromptFormat(tokenizer).encode("Where was bob born?", "bob was born in lima.")
    assert load_prompt_format(ModelConfig(str(tiny_model)), chat_tokenizer).spec.kind == "chat_template"


def test_tags_tokenise_the_whole_text(plain_tokenizer):
    fmt = PromptFormat(plain_tokenizer, spec=FormatSpec("tags", "user ", " assistant ", ""))
    encoded = fmt.encode("Where was bob born?", "bob was born in lima.")
    assert tokens(plain_tokenizer, encoded.input_ids) == [
        "user", "where", "was", "bob", "born", "?", "assistant", "bob", "was", "born", "in", "lima", ".", "<s>"]
    assert encoded.prompt_length == 7
    assert fmt.prompt_ids("Where was bob born?") == encoded.input_ids[:7]


def test_a_recorded_format_is_read_and_a_setting_overrides_it(tiny_model, tmp_path, chat_tokenizer):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    (folder / FORMAT_FILE).write_text(json.dumps({"kind": "tags", "question_start": "user ", "question_end": "",
                                                  "answer_start": ""}))
    assert load_prompt_format(ModelConfig(str(folder)), chat_tokenizer).spec == FormatSpec("tags", "user ", "", "")
    override = ModelConfig(str(folder), prompt_format=PromptFormatConfig(kind="chat_template"))
    assert load_prompt_format(override, chat_tokenizer).spec.kind == "chat_template"
    (folder / FORMAT_FILE).write_text('{"kind": "jinja"}')
    with pytest.raises(UserError, match="prompt_format.json"):
        read_recorded_format(folder)


@pytest.mark.parametrize("setting,message", [
    (PromptFormatConfig(kind="llama9"), "unknown model.prompt_format.kind 'llama9'"),
    (PromptFormatConfig(kind="chat_template", question_start="x"), "tags apply only with kind=tags"),
    (PromptFormatConfig(kind="tofu-llama2", answer_start="A:"), "answer_start"),
])
def test_bad_format_settings_are_user_errors(setting, message, tiny_model, chat_tokenizer):
    with pytest.raises(UserError, match=message):
        load_prompt_format(ModelConfig(str(tiny_model), prompt_format=setting), chat_tokenizer)


def test_show_format_prints_ids_tokens_mask_and_generation_prompt(tiny_model, tmp_path, capsys):
    assert main(["show-format", str(tiny_model), "-q", "Where was bob born?", "-a", "bob was born in lima."]) == 0
    shown = json.loads(capsys.readouterr().out)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    expected = PromptFormat(tokenizer).encode("Where was bob born?", "bob was born in lima.")
    assert shown["input_ids"] == list(expected.input_ids) and shown["format"] == {"kind": "chat_template"}
    assert shown["tokens"][-1] == "<|im_end|>" and shown["tokens"][:2] == ["<|im_start|>", "user"]
    answer_length = len(expected.input_ids) - expected.prompt_length
    assert shown["label_mask"] == [0] * expected.prompt_length + [1] * answer_length
    assert shown["generation_prompt_ids"] == list(expected.input_ids[: expected.prompt_length])
    # A bare tokenizer folder (no config.json, no weights) and a tags override.
    bare = tmp_path / "tok"
    tokenizer.save_pretrained(bare)
    assert main(["show-format", str(bare), "kind=tags", "question_start=user ", "question_end= assistant ",
                 "-q", "Where was bob born?", "-a", "bob was born in lima."]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tokens"] == ["user", "where", "was", "bob", "born", "?", "assistant",
                               "bob", "was", "born", "in", "lima", ".", "<|im_end|>"]
    assert shown["label_mask"] == [0] * 7 + [1] * 7 and len(shown["generation_prompt_ids"]) == 7
    (bare / FORMAT_FILE).write_text(json.dumps({"kind": "tags", "question_start": "user ", "question_end": " "}))
    assert main(["show-format", str(bare), "-q", "Where was bob born?", "-a", "bob was born in lima."]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"][:2] == ["user", "where"]  # the recorded format
    assert main(["show-format", str(bare), "kind=llama9"]) == 2
    assert "unknown model.prompt_format.kind 'llama9'" in capsys.readouterr().err


def test_a_format_is_kept_from_finetune_through_unlearn_to_evaluate(tiny_model, qa_folder, tmp_path, monkeypatch):
    """Set once at fine-tuning; unlearn and evaluate read it from the model folders."""
    from unlearnlm.training import models

    seen = []
    real = models.load_prompt_format

    def spy(config, tokenizer):
        fmt = real(config, tokenizer)
        seen.append(fmt.spec)
        return fmt

    monkeypatch.setattr(models, "load_prompt_format", spy)
    small = ["training.epochs=1", "training.per_device_batch_size=4", "training.gradient_accumulation_steps=1",
             "training.warmup_epochs=0", "training.progress=false"]
    tags = FormatSpec("tags", "user ", " assistant ", "")
    assert main(["finetune", f"model.name_or_path={tiny_model}", f"data.source={qa_folder}", "data.train=forget,retain",
                 "model.prompt_format.kind=tags", "model.prompt_format.question_start=user ",
                 "model.prompt_format.question_end= assistant ", f"output_dir={tmp_path / 'ft'}", *small]) == 0
    assert read_recorded_format(tmp_path / "ft" / "model") == tags
    assert main(["unlearn", f"model.name_or_path={tmp_path / 'ft' / 'model'}", f"data.source={qa_folder}",
                 "data.forget=forget", "data.retain=retain", "method=GA+GD", f"output_dir={tmp_path / 'un'}",
                 *small]) == 0
    assert read_recorded_format(tmp_path / "un" / "model") == tags
    assert main(["evaluate", str(tmp_path / "un"), "scenario=custom",
                 f"data.custom_forget={qa_folder / 'forget_perturbed.json'}",
                 "judges.embedder=none", "judges.nli=none", "max_length=24", "ds_size=2"]) == 0
    assert seen == [tags, tags, tags]


def test_a_default_format_leaves_the_demo_cache_key_unchanged(tiny_model, tmp_path):
    """The demo's cached models are named by a hash of their recipe: a default prompt format is not
    part of it (recipes hashed before the setting existed still match); a chosen one is."""
    from dataclasses import replace

    from unlearnlm.config import DemoConfig, to_dict, without_default_sections
    from unlearnlm.scenarios.demo import finetune_recipe

    config = DemoConfig(model=ModelConfig(str(tiny_model)))
    recipe = finetune_recipe(config, tmp_path, tmp_path / "world", "target", ["full"])
    assert "prompt_format" not in without_default_sections(to_dict(recipe), recipe)["model"]
    tagged = replace(config, model=ModelConfig(str(tiny_model), prompt_format=PromptFormatConfig(kind="tofu-llama2")))
    assert finetune_recipe(tagged, tmp_path, tmp_path / "world", "target", ["full"]).output_dir != recipe.output_dir
    assert finetune_recipe(config, tmp_path, tmp_path / "world", "target", ["full"]).output_dir == recipe.output_dir

"""Model folders other tools read: what save_model writes loads as the same model and tokenizer
in transformers 4.45+ as in 5.x. The keys an older loader reads are checked here without one
(no network, no second transformers): 4.x takes the rotary base from a top-level ``rope_theta``
(else 10,000), non-default rotary scaling from ``rope_scaling``, the dtype from ``torch_dtype``,
the tokenizer class by name from a list that has no ``TokenizersBackend``, and the chat template
from tokenizer_config.json."""

from __future__ import annotations

import json

import pytest
import torch

# Tokenizer classes transformers 4.45 resolves by name (the fast ones unlearnlm's models use).
KNOWN_TO_4X = {"PreTrainedTokenizerFast", "LlamaTokenizer", "LlamaTokenizerFast", "GPT2Tokenizer",
               "GPT2TokenizerFast", "Qwen2Tokenizer", "Qwen2TokenizerFast"}
ROPE_THETA_DEFAULT_4X = 10000.0


def _older_loaders_rope(config: dict) -> dict:
    """The rotary settings transformers 4.x builds from config.json (it reads no rope_parameters)."""
    scaling = config.get("rope_scaling") or {"rope_type": "default"}
    return {"rope_theta": config.get("rope_theta", ROPE_THETA_DEFAULT_4X), **scaling}


@pytest.fixture
def saved(tiny_model, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from unlearnlm.training.models import save_model

    def save(rope_parameters):
        config = AutoConfig.from_pretrained(tiny_model)
        config.rope_parameters = rope_parameters
        torch.manual_seed(0)
        model, tokenizer = AutoModelForCausalLM.from_config(config).eval(), AutoTokenizer.from_pretrained(tiny_model)
        folder = save_model(model, tokenizer, tmp_path / "model", merge_lora=False)
        return model, tokenizer, folder
    return save


@pytest.mark.parametrize("rope_parameters", [
    {"rope_type": "default", "rope_theta": 100000.0},  # SmolLM2's
    {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "high_freq_factor": 4.0,
     "low_freq_factor": 1.0, "original_max_position_embeddings": 64},  # Llama-3.2's kind
])
def test_saved_folder_has_the_keys_an_older_loader_reads(saved, rope_parameters):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer, folder = saved(rope_parameters)
    config = json.loads((folder / "config.json").read_text())
    assert _older_loaders_rope(config) == rope_parameters  # what 5.x reads, as 4.x reads it
    assert config["torch_dtype"] == config["dtype"] == "float32"
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] in KNOWN_TO_4X
    assert tokenizer_config["chat_template"] == (folder / "chat_template.jinja").read_text() == tokenizer.chat_template
    assert "is_local" not in tokenizer_config and "local_files_only" not in tokenizer_config

    # 5.x loads exactly what was saved: the same rotary settings, logits, ids and template.
    again, again_tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    assert again.config.rope_parameters == rope_parameters
    ids = torch.arange(3, 80)[None]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    text = "alice was born in paris"
    assert again_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert again_tokenizer.chat_template == tokenizer.chat_template


def test_a_folder_without_rope_parameters_is_left_as_it_is(tmp_path):
    from unlearnlm.training.models import add_older_loader_keys

    config = {"model_type": "gpt2", "n_embd": 8}
    (tmp_path / "config.json").write_text(json.dumps(config))
    add_older_loader_keys(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()) == config

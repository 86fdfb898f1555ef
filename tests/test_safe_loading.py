"""Safe loading: no code or pickle runs from what a user points unlearnlm at."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from unlearnlm.config import ModelConfig, UnlearnConfig, load_config
from unlearnlm.errors import UserError
from unlearnlm.io import safe_name

SRC = Path(__file__).resolve().parents[1] / "src" / "unlearnlm"


def test_trust_remote_code_is_off_unless_asked(monkeypatch, tiny_model):
    import transformers

    from unlearnlm.training import models

    seen = []

    def fake_from_pretrained(path, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    assert load_config(UnlearnConfig).model.trust_remote_code is False
    for flag in (False, True):
        with pytest.raises(UserError):  # the stand-in's OSError, as a user error
            models.load_model(ModelConfig(str(tiny_model), trust_remote_code=flag))
    assert seen == [False, True]


def test_no_unsafe_deserialisation_in_the_source():
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import|from)\s+(pickle|dill|cloudpickle)\b", text, re.M), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
        assert "yaml.load(" not in text, path
        assert not re.search(r"(?<![\w.])(eval|exec)\(", text), f"{path}: eval/exec"


@pytest.mark.parametrize("text,expected", [
    ("ME+GD", "ME+GD"),
    ("../../etc/passwd", "_._etc_passwd"),
    ("..", "_"),
    ("", "_"),
    ("-rf", "rf"),
    ("task 1", "task_1"),
    ("meta-llama/Llama-3-8B", "meta-llama_Llama-3-8B"),
    ("a\x00b\\c", "a_b_c"),
])
def test_safe_name(text, expected):
    name = safe_name(text)
    assert name == expected
    assert "/" not in name and "\\" not in name and ".." not in name and not name.startswith((".", "-"))

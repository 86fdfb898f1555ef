"""Typed configs: presets, YAML files, key=value overrides, and their errors."""

from __future__ import annotations

import pytest

from unlearnlm.config import (
    FinetuneConfig,
    RealWorldConfig,
    TrainingConfig,
    UnlearnConfig,
    load_config,
    preset_names,
    save_config,
    to_dict,
)
from unlearnlm.errors import UserError


def test_defaults_are_the_papers():
    config = UnlearnConfig()
    # the coefficients are the method's own unless given (1.0 but for ME's forget_coeff 0.1, SatImp's...)
    assert (config.method, config.beta, config.forget_coeff, config.regularization_coeff) == ("ME+GD", 0.1, None, None)
    t = config.training
    assert (t.lr, t.epochs, t.per_device_batch_size, t.gradient_accumulation_steps, t.seed, t.weight_decay) == (
        1e-5, 5.0, 4, 4, 1001, 0.01)
    assert (config.lora.r, config.lora.alpha, config.lora.dropout) == (8, 32, 0.05)


def test_overrides_are_typed():
    config = load_config(UnlearnConfig, None, [
        "training.lr=5e-6", "training.epochs=2", "lora.enabled=yes", "data.task_id=1,3",
        "forget_coeff=none", "mask=false", "lora.target_modules=[q_proj, v_proj]",
    ])
    assert config.training.lr == 5e-6 and config.training.epochs == 2.0
    assert config.lora.enabled is True and config.mask is False and config.forget_coeff is None
    assert config.data.task_id == ["1", "3"]
    assert config.lora.target_modules == ["q_proj", "v_proj"]


def test_the_same_config_built_in_code_or_on_the_command_line_is_equal_data():
    """Caches and "this folder holds another run" checks compare to_dict: epochs=5 written in
    code (an int) and epochs=5 from the command line (coerced to float) must give equal data."""
    in_code = FinetuneConfig(training=TrainingConfig(epochs=5, lr=1e-4))
    from_cli = load_config(FinetuneConfig, None, ["training.epochs=5", "training.lr=1e-4"])
    assert to_dict(in_code)["training"]["epochs"] == 5.0
    assert isinstance(to_dict(in_code)["training"]["epochs"], float)
    assert to_dict(in_code) == to_dict(from_cli)
    assert in_code.training.epochs == 5 and isinstance(in_code.training.epochs, int)  # the config itself is untouched


def test_preset_then_override_then_yaml_roundtrip(tmp_path):
    assert {"tofu", "real-world-me-gd", "finetune-tofu", "demo-quick"} <= set(preset_names())
    config = load_config(UnlearnConfig, "tofu", ["method=IDK+AP", "forget_coeff=1.0", "training.lr=1e-5"])
    assert config.data.forget == "forget01" and config.method == "IDK+AP" and config.forget_coeff == 1.0
    real_world = load_config(RealWorldConfig, "real-world-me-gd", ["unlearn.data.source=."])
    assert (real_world.unlearn.data.retain, real_world.unlearn.forget_coeff) == ("neighbor", 0.5)
    assert real_world.unlearn.training.lr == 5e-6
    save_config(config, tmp_path / "c.yaml")
    assert load_config(UnlearnConfig, str(tmp_path / "c.yaml")) == config
    assert load_config(FinetuneConfig, "finetune-tofu").data.train == ["retain90", "forget01"]


@pytest.mark.parametrize("overrides, message", [
    (["training.epochs=three"], "wants a number"),
    (["training.seed=1.5"], "wants an integer"),
    (["lora.enabled=maybe"], "wants true or false"),
    (["nosuch=1"], "unknown config key 'nosuch'"),
    (["training=1"], "must be a mapping"),
    (["=1"], "empty key"),
    (["method="], "may not be empty"),
])
def test_bad_overrides(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config(UnlearnConfig, None, overrides)


def test_bad_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(UnlearnConfig, str(bad))
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        load_config(UnlearnConfig, str(listing))

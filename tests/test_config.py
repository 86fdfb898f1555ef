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


def test_every_settings_dataclass_checks_its_own_fields():
    """A setting is declared, defaulted and checked in one place: each settings dataclass of the
    config package has its own ``validate``, written in its own class body."""
    import dataclasses

    import unlearnlm.config as package

    classes = [v for v in vars(package).values() if isinstance(v, type) and dataclasses.is_dataclass(v)]
    assert {"TrainingConfig", "EvaluateConfig", "DemoConfig", "RelearnAttackConfig"} <= {c.__name__ for c in classes}
    assert all(c.__module__.startswith("unlearnlm.config.") for c in classes)
    assert sorted(c.__name__ for c in classes if "validate" not in vars(c)) == []


def test_presets_are_read_from_the_package_data():
    # unlearnlm/configs (pyproject's package-data), not a folder of the config package.
    from pathlib import Path

    import yaml

    import unlearnlm
    from unlearnlm.config import PRESET_DIR, resolve_preset

    assert PRESET_DIR == Path(unlearnlm.__file__).parent / "configs"
    assert "tofu" in preset_names() and len(preset_names()) == len(list(PRESET_DIR.glob("*.yaml")))
    assert resolve_preset("tofu") == yaml.safe_load((PRESET_DIR / "tofu.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("cls, override, message", [
    # The evaluate command's own judges: named once (it read "judges.judges." before the split).
    ("EvaluateConfig", "judges.nli_batch_size=0", "judges.nli_batch_size must be at least 1, got 0"),
    ("UnlearnConfig", "evaluation.judges.nli_batch_size=0", "evaluation.judges.nli_batch_size must be at least 1"),
    ("ContinualConfig", "unlearn.evaluation.judges.nli_batch_size=0",
     "unlearn.evaluation.judges.nli_batch_size must be at least 1"),
    ("DemoConfig", "finetune_training.lr=0", "finetune_training.lr must be a positive number, got 0.0"),
    ("DemoConfig", "attack.relearn.steps=0", "attack.relearn.steps must be at least 1, got 0"),
    # An embedded evaluation scores its run's model: another is refused, not checked.
    ("UnlearnConfig", "evaluation.model.dtype=zzz", "evaluation.model.dtype='zzz' cannot be honoured"),
    ("EvaluateConfig", "model.dtype=zzz", "unknown model.dtype 'zzz'"),
    # WMDP's lm-eval section is checked before any corpus loads.
    ("WmdpConfig", "downstream.batch_size=0", "downstream.batch_size must be at least 1, got 0"),
])
def test_a_section_error_names_where_the_section_sits(cls, override, message):
    import unlearnlm.config as package

    with pytest.raises(UserError) as caught:
        load_config(getattr(package, cls), None, [override])
    assert str(caught.value).startswith(message)

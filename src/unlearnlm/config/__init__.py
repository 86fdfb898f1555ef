"""Typed run configuration, one module per layer of settings.

A config is a tree of dataclasses; each section declares, defaults and checks its own fields
(``validate``), and a command's config checks its sections and what spans them:

    convert     dataclass tree <-> plain data (declared types, unknown keys refused)
    checks      the helpers the checks share (one-line errors, sections named where they sit)
    model       model, model.prompt_format, lora, data
    training    training (the recipe) and the finetune command's config
    evaluation  judges, bootstrap, evaluation sets, privacy, and the evaluation section
    validation  validate_config: a whole config, once, at the boundary
    unlearn     the unlearn command's config and the typing of a method's settings
    attacks     relearning, quantisation, probes
    scenarios   continual, real-world, MUSE, WMDP, build-forget-set, demo
    loading     presets, YAML files, key=value overrides, load_config, save_config
    runs        run-folder identity (a saved config.yaml against this config)

Every name other modules import from ``unlearnlm.config`` is re-exported here.
"""

from .attacks import BNB_MODES, AttackConfig, ProbesAttackConfig, QuantizeAttackConfig, RelearnAttackConfig
from .checks import _require as _require
from .checks import _within as _within
from .convert import _coerce as _coerce
from .convert import _deep_merge as _deep_merge
from .convert import _unwrap_optional as _unwrap_optional
from .convert import flatten_keys, from_dict, to_dict
from .evaluation import (
    MIN_BOOTSTRAP_SAMPLES,
    BootstrapConfig,
    EvalDataConfig,
    EvaluateConfig,
    JudgesConfig,
    PrivacyConfig,
)
from .loading import PRESET_DIR, load_config, parse_overrides, preset_names, read_yaml, resolve_preset, save_config
from .model import (
    DATA_FORMATS,
    MODEL_DTYPES,
    DataConfig,
    LoraConfig,
    ModelConfig,
    PromptFormatConfig,
    validate_prompt_format,
)
from .runs import OPERATIONAL_KEYS, check_run_folder, config_differences, differing_keys, without_default_sections
from .scenarios import (
    MUSE_METRICS,
    BuildForgetSetConfig,
    ContinualConfig,
    DemoConfig,
    DownstreamConfig,
    MuseConfig,
    MuseEvalConfig,
    RealWorldConfig,
    WmdpConfig,
)
from .training import FinetuneConfig, FinetuneDataConfig, TrainingConfig, report_backends, validate_report_to
from .unlearn import UnlearnConfig, method_settings, with_method_settings
from .validation import validate_config

__all__ = [
    "BNB_MODES", "DATA_FORMATS", "MIN_BOOTSTRAP_SAMPLES", "MODEL_DTYPES", "MUSE_METRICS", "OPERATIONAL_KEYS",
    "PRESET_DIR", "AttackConfig", "BootstrapConfig", "BuildForgetSetConfig", "ContinualConfig", "DataConfig",
    "DemoConfig", "DownstreamConfig", "EvalDataConfig", "EvaluateConfig", "FinetuneConfig", "FinetuneDataConfig",
    "JudgesConfig", "LoraConfig", "ModelConfig", "MuseConfig", "MuseEvalConfig", "PrivacyConfig",
    "ProbesAttackConfig", "PromptFormatConfig", "QuantizeAttackConfig", "RealWorldConfig", "RelearnAttackConfig",
    "TrainingConfig", "UnlearnConfig", "WmdpConfig", "check_run_folder", "config_differences", "differing_keys",
    "flatten_keys", "from_dict", "load_config", "method_settings", "parse_overrides", "preset_names", "read_yaml",
    "report_backends", "resolve_preset", "save_config", "to_dict", "validate_config", "validate_prompt_format",
    "validate_report_to", "with_method_settings", "without_default_sections",
]

"""Settings are declared once: no key is declared by two config sections with two defaults, no
preset says a key twice; and the confidence level, a setting, drives every label of an interval."""

from __future__ import annotations

import ast
import dataclasses
import typing
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

import unlearnlm.config as C
from unlearnlm.data.world import WorldConfig
from unlearnlm.judges.offline import JudgeTrainingConfig

PACKAGE = Path(C.__file__).parents[1]  # unlearnlm/ (config is a package in it)

# Names that several sections use for different settings (a different thing, not the same one
# twice), each with the reason. Any other name declared with two defaults fails the test.
DIFFERENT_SETTINGS = {
    "seed": "each random stream has its own: training, bootstrap, lm-eval, relearning, probes, the world, the judge",
    "lr": "the offline judge's training is another training than fine-tuning and unlearning",
    "steps": "the relearning attack's optimiser steps and the judge's are different trainings",
    "batch_size": "lm-eval's, the forget-set builder's generation and the judge's training batches",
    "max_length": "a training row's tokens, an evaluation's prompt + generation budget, a judge pair's tokens",
    "generation_batch_size": "MUSE's evaluation generates from 2,048-token texts, TOFU's from short questions",
    "loss_batch_size": "MUSE's evaluation scores 2,048-token texts, TOFU's short answers",
    "enabled": "LoRA's switch and lm-eval's",
    "source": "training data, and the evaluation's (empty: the run's own)",
    "forget": "training data, and the evaluation's (empty: the run's own)",
    "task_id": "training data, and the evaluation's (empty: the run's own)",
    "tasks": "lm-eval's task names, and the continual scenario's TOFU task ids",
    "templates": "the forget-set builder's questions, and the probes' template file",
    "train": "the fine-tuning splits, and whether MUSE / WMDP train at all",
    "methods": "the continual scenario's (empty: unlearn.method) and the demo's list",
    "method_args": "one method's settings, and the demo's settings by method name",
    "output_dir": "every command writes its own folder",
    "questions_per_author": "the demo's world is sized for a 2-core CPU; make-world writes TOFU's shape",
}
# One name with the same meaning and two defaults on purpose: MUSE's evaluation scores every row,
# as MUSE does; TOFU's the reference's first 300.
SAME_NAME_OTHER_BENCHMARK = {("ds_size", "MuseEvalConfig")}


def config_classes() -> list[type]:
    """Every settings dataclass: unlearnlm.config's, those beside their command, and any section
    reachable from them."""
    found: list[type] = []
    todo = [v for v in vars(C).values() if isinstance(v, type) and dataclasses.is_dataclass(v)
            and v.__module__.startswith(C.__name__)] + [JudgeTrainingConfig, WorldConfig]
    while todo:
        cls = todo.pop()
        if cls in found:
            continue
        found.append(cls)
        todo += [tp for tp in typing.get_type_hints(cls).values()
                 if isinstance(tp, type) and dataclasses.is_dataclass(tp)]
    return found


def declarations() -> dict[str, list[tuple[str, object]]]:
    """name -> [(class, default)] of every field that is a value, not a section."""
    found = defaultdict(list)
    for cls in config_classes():
        hints, defaults = typing.get_type_hints(cls), cls()
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(hints[f.name]):
                found[f.name].append((cls.__name__, getattr(defaults, f.name)))
    return found


def twice_with_two_defaults(found: dict) -> dict[str, list]:
    clashes = {}
    for name, places in found.items():
        places = [(cls, value) for cls, value in places if (name, cls) not in SAME_NAME_OTHER_BENCHMARK]
        if len({repr(value) for _, value in places}) > 1 and name not in DIFFERENT_SETTINGS:
            clashes[name] = places
    return clashes


def test_no_setting_is_declared_twice_with_two_defaults():
    found = declarations()
    assert {"TrainingConfig", "BootstrapConfig", "DemoConfig", "JudgeTrainingConfig"} <= {
        cls.__name__ for cls in config_classes()}
    assert twice_with_two_defaults(found) == {}
    # Every exception names a setting that does sit in two sections (none is left behind).
    assert all(len(found[name]) > 1 for name in DIFFERENT_SETTINGS)


def test_the_walk_finds_a_second_declaration():
    @dataclasses.dataclass
    class Shadow:  # a section that re-declares the evaluation's ds_size with another default
        ds_size: int = 20

    found = declarations()
    found["ds_size"].append(("Shadow", Shadow().ds_size))
    assert set(twice_with_two_defaults(found)) == {"ds_size"}
    # ds_size, the bootstrap's count and level: one declaration each now (the demo embeds an
    # evaluation section, statistics reads BootstrapConfig's defaults).
    assert [cls for cls, _ in declarations()["ds_size"]] == ["EvaluateConfig", "MuseEvalConfig"]
    assert [cls for cls, _ in declarations()["level"]] == ["BootstrapConfig"]
    from unlearnlm.evaluation import statistics

    assert (statistics.DEFAULT_SAMPLES, statistics.DEFAULT_LEVEL) == (C.BootstrapConfig.samples,
                                                                      C.BootstrapConfig.level)


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key said twice in one mapping (PyYAML keeps the last one silently)."""


def _mapping(loader, node, deep=False):
    keys = [loader.construct_object(key) for key, _ in node.value]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"{node.start_mark.name}: key {twice[0]!r} is declared twice")
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def command_configs() -> list[type]:
    from unlearnlm.scenarios.registry import SCENARIOS
    from unlearnlm.scenarios.sweep import SweepConfig

    return [C.FinetuneConfig, C.UnlearnConfig, C.EvaluateConfig, C.AttackConfig, SweepConfig,
            *(s.config for s in SCENARIOS.values())]


@pytest.mark.parametrize("preset", sorted(C.PRESET_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_says_each_key_once_and_loads(preset):
    data = yaml.load(preset.read_text(encoding="utf-8"), Loader=_StrictLoader)
    loaded = []
    for cls in command_configs():
        try:
            loaded.append(C.load_config(cls, str(preset)))
        except Exception:  # the preset belongs to another command
            continue
    assert loaded, f"{preset.name} loads into no command's config"
    assert isinstance(data, dict)


def test_a_key_said_twice_in_a_preset_is_found():
    with pytest.raises(ValueError, match="'lr' is declared twice"):
        yaml.load("training:\n  lr: 1e-5\n  lr: 1e-4\n", Loader=_StrictLoader)


# ---- the confidence level drives every label ------------------------------------------------------


def _string_constants(path: Path) -> list[str]:
    """The string literals of a module, its docstrings left out (they describe the default)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_label_hard_codes_a_level():
    hard_coded = [(path.relative_to(PACKAGE), text) for path in sorted(PACKAGE.rglob("*.py"))
                  for text in _string_constants(path) if "95%" in text or "95 %" in text]
    assert hard_coded == []


def test_labels_follow_the_level_of_the_results():
    from unlearnlm.evaluation.report.attacks import attack_markdown
    from unlearnlm.evaluation.seeds import format_seeds
    from unlearnlm.evaluation.statistics import levels_label, percent
    from unlearnlm.scenarios.attacks import format_attack_table

    assert (percent(0.95), percent(0.9), percent(0.975)) == ("95%", "90%", "97.5%")
    assert levels_label([0.9, None, 0.9]) == "90%" and levels_label([0.95, 0.9]) == "90%/95%"
    assert levels_label([None]) == ""

    seeds = {"seeds": {"seeds": [1, 2], "spread": {"MU": {"mean": 0.5, "sd": 0.1}}},
             "intervals": {"level": 0.9, "values": {"MU": [0.4, 0.6]}}}
    assert format_seeds(seeds).splitlines()[0] == "over seeds 1, 2: mean ± sd, pooled 90% interval"
    without = {"seeds": seeds["seeds"]}
    assert format_seeds(without).splitlines()[0] == "over seeds 1, 2: mean ± sd"

    attack = {"attack": "relearn:forget_half", "rows": 4, "FE": 0.5, "MU": 0.4, "recovery": {},
              "recovery_interval": {"ROUGE": [0.1, 0.2]}, "mean_recovery": 0.3, "mean_recovery_interval": [0.1, 0.5]}
    summary = {"unlearned": {"FE": 0.6, "MU": 0.4}, "target_model": {"FE": 0.1, "MU": 0.5}, "attacks": [attack],
               "skipped": [], "recovery_bootstrap": {"samples": 200, "seed": 0, "level": 0.8}}
    from unlearnlm.evaluation.recovery import RECOVERY_METRICS

    attack["recovery"] = dict.fromkeys(RECOVERY_METRICS, 0.3)
    attack["recovery_interval"] = {m: [0.1, 0.5] for m in RECOVERY_METRICS}
    assert "beneath: 80% paired bootstrap" in format_attack_table(summary)
    assert "its 80% paired bootstrap interval" in attack_markdown([("GA", summary)])

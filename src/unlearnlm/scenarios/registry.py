"""The scenarios, one registry that the command line and the Python API both read.

A scenario is one module of ``unlearnlm.scenarios`` (its run function), its config section (a
dataclass: a field of ``unlearnlm.config`` or one beside the scenario, validated by
``config.validate_config``) and one entry here. ``unlearnlm NAME [--config X] key=value ...``
and ``unlearnlm.api.scenario(NAME, ...)`` (with ``unlearnlm.continual`` and the other named
functions) run it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import (
    BuildForgetSetConfig,
    ContinualConfig,
    DemoConfig,
    MuseConfig,
    RealWorldConfig,
    WmdpConfig,
)
from ..errors import UserError


@dataclass(frozen=True)
class Scenario:
    """``run(config)`` gives the output folder, or (folder, a results table to show). ``run`` is a
    function or "module:function" of unlearnlm (imported when the scenario runs, so that listing
    the commands loads no model library). ``written`` names what the folder holds, for the log."""

    config: type
    run: Callable[[Any], Any] | str
    help: str
    written: str = ""

    def function(self) -> Callable[[Any], Any]:
        if callable(self.run):
            return self.run
        module, _, name = self.run.partition(":")
        return getattr(importlib.import_module(module), name)


SCENARIOS: dict[str, Scenario] = {
    "continual": Scenario(ContinualConfig, "unlearnlm.scenarios.continual:run_continual",
                          "unlearn tasks 1..N in turn, evaluating after each (MU/FE trajectory)",
                          "trajectory.csv, trajectory.md, trajectory.png"),
    "real-world": Scenario(RealWorldConfig, "unlearnlm.scenarios.real_world:run_real_world",
                           "unlearn real people from an instruction model; QA and lm-eval utility",
                           "results.md, results.csv"),
    "build-forget-set": Scenario(BuildForgetSetConfig, "unlearnlm.scenarios.forget_set_builder:build_forget_set",
                                 "ask a model about entities; write forget/neighbour sets from its answers"),
    "muse": Scenario(MuseConfig, "unlearnlm.scenarios.muse:run_muse",
                     "MUSE News/Books: unlearn raw text; score VerbMem, KnowMem, PrivLeak", "summary.json, results.md"),
    "wmdp": Scenario(WmdpConfig, "unlearnlm.scenarios.wmdp:run_wmdp",
                     "WMDP: unlearn hazardous text; wmdp_bio, wmdp_cyber, mmlu accuracy with lm-eval",
                     "summary.json, results.md"),
    "demo": Scenario(DemoConfig, "unlearnlm.scenarios.demo:run_demo",
                     "the paper's comparison on the embedded model, offline, on a CPU (the main job)"),
}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UserError(f"unknown scenario '{name}'; valid: {', '.join(SCENARIOS)}") from None


def run_scenario(name: str, config: Any) -> tuple[Path, str]:
    """Run scenario ``name`` on its validated ``config``: (what it wrote, its table or '')."""
    scenario = get_scenario(name)
    if not isinstance(config, scenario.config):
        raise UserError(f"scenario {name} takes a {scenario.config.__name__}, got {type(config).__name__}")
    result = scenario.function()(config)
    folder, table = result if isinstance(result, tuple) else (result, "")
    return Path(folder), table or ""

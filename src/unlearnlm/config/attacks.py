"""The attack command's settings (relearning, quantisation, probes), also the demo's attack section:
declared, defaulted and checked here (the names in ``attacks``: by the attack registry,
scenarios.attacks.attacks_of)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .checks import _require
from .training import TrainingConfig


@dataclass
class RelearnAttackConfig:
    # What U is fine-tuned on: forget_half (a seeded random half of the forget set; the other
    # half alone is evaluated), retain (the run's retain set: benign fine-tuning), or a
    # JSON/JSONL file of question/answer rows.
    data: str = "forget_half"
    steps: int = 20
    # Learning rate, batch and seed as fine-tuning's (TrainingConfig's defaults, declared there).
    lr: float = TrainingConfig.lr
    per_device_batch_size: int = TrainingConfig.per_device_batch_size
    gradient_accumulation_steps: int = TrainingConfig.gradient_accumulation_steps
    seed: int = TrainingConfig.seed
    # Keep the relearned weights (RUN/attacks/relearn/run/model) once evaluated; false deletes them.
    keep_model: bool = True

    def validate(self, prefix: str = "relearn.") -> None:
        _require(self.steps >= 1, f"{prefix}steps must be at least 1, got {self.steps}")
        _require(math.isfinite(self.lr) and self.lr > 0, f"{prefix}lr must be a positive number, got {self.lr}")
        _require(self.per_device_batch_size >= 1,
                 f"{prefix}per_device_batch_size must be at least 1, got {self.per_device_batch_size}")
        _require(self.gradient_accumulation_steps >= 1,
                 f"{prefix}gradient_accumulation_steps must be at least 1, got {self.gradient_accumulation_steps}")
        _require(bool(self.data.strip()), f"{prefix}data is empty; use forget_half, retain or a file")

BNB_MODES = ("int8", "nf4")  # bitsandbytes' 8-bit (LLM.int8) and 4-bit NormalFloat loading


@dataclass
class QuantizeAttackConfig:
    # Round-to-nearest fake quantisation, one attack per width.
    bits: list[int] = field(default_factory=lambda: [8, 4])
    group_size: int = 128
    # bitsandbytes' own loading too (int8, nf4), where a GPU and the package are there.
    bitsandbytes: list[str] = field(default_factory=lambda: ["int8", "nf4"])

    def validate(self, prefix: str = "quantize.") -> None:
        _require(bool(self.bits) or bool(self.bitsandbytes),
                 f"{prefix}bits and {prefix}bitsandbytes are both empty")
        for bits in self.bits:
            _require(2 <= bits <= 16, f"{prefix}bits must be between 2 and 16, got {bits}")
        _require(len(set(self.bits)) == len(self.bits), f"{prefix}bits names a width twice")
        _require(self.group_size >= 1, f"{prefix}group_size must be at least 1, got {self.group_size}")
        for mode in self.bitsandbytes:
            _require(mode in BNB_MODES,
                     f"unknown {prefix}bitsandbytes mode '{mode}'; valid: {', '.join(BNB_MODES)}")


@dataclass
class ProbesAttackConfig:
    # A YAML file of probe templates; empty = the one shipped (evaluation/probes.yaml).
    templates: Optional[str] = None
    # Probes to run; empty = every probe of the file.
    names: list[str] = field(default_factory=list)
    # Seed of the multiple-choice order and of the reverse question's wrong names.
    seed: int = 0

    def validate(self, prefix: str = "probes.") -> None:
        if self.templates:
            _require(Path(self.templates).expanduser().is_file(), f"{prefix}templates: no file {self.templates}")


@dataclass
class AttackConfig:
    # Names in scenarios.attacks.ATTACKS (checked there); each attack's settings are its section here.
    attacks: list[str] = field(default_factory=lambda: ["relearn", "quantize", "probes"])
    relearn: RelearnAttackConfig = field(default_factory=RelearnAttackConfig)
    quantize: QuantizeAttackConfig = field(default_factory=QuantizeAttackConfig)
    probes: ProbesAttackConfig = field(default_factory=ProbesAttackConfig)
    progress: bool = True

    def validate(self, prefix: str = "") -> None:
        r = self.relearn
        r.validate(f"{prefix}relearn.")
        if r.data not in ("forget_half", "retain") and "relearn" in self.attacks:  # a file, read only by relearning
            _require(Path(r.data).expanduser().is_file(),
                     f"{prefix}relearn.data '{r.data}' is neither forget_half, retain nor an existing file")
        self.quantize.validate(f"{prefix}quantize.")
        self.probes.validate(f"{prefix}probes.")

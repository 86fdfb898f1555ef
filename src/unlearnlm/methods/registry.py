"""Method names -> objectives. Adding a method is one function in losses.py and one line here
(plus, if it has hyper-parameters, a settings dataclass beside the function)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache
from typing import Optional

import torch

from ..errors import UserError
from . import losses


@dataclass(frozen=True)
class Objective:
    fn: losses.LossFn
    # The sequence kinds of a batch it reads (see data.batches.SEQUENCE_KINDS).
    inputs: tuple[str, ...]
    needs_reference: bool = False
    # Whether the reference is only needed for per-sequence NLLs (which can be precomputed
    # once per task) rather than full logits.
    reference_nll_only: bool = True
    # Whether it reads the logits of every position (KL), not only those that carry labels.
    every_position: bool = False
    # Paper defaults (docs/formulas.md#objectives): ME trains with the question unmasked and forget_coeff 0.1.
    default_mask: bool = True
    default_forget_coeff: float = 1.0
    default_regularization_coeff: float = 1.0
    # Its hyper-parameters: a losses.Settings dataclass, read by the function as ctx.settings.
    settings: type = losses.Settings
    # Reads the output of decoder block settings.layer (ctx.hidden) rather than logits.
    reads_hidden_states: bool = False
    # What it keeps across optimiser steps (a losses.StepState class, ctx.state).
    state: type | None = None
    # Not a loss to minimise from the target but a procedure of its own that the run follows
    # ("task_vector": fine-tune on forget with ``fn``, then weight arithmetic).
    procedure: str | None = None
    # A term of the method that joins its regulariser, weighed by regularization_coeff with it
    # (LLMU's mismatch term, as in the paper's code).
    regularizer_term: losses.LossFn | None = None


REFERENCE_LOGITS = {"needs_reference": True, "reference_nll_only": False}

FORGET_LOSSES: dict[str, Objective] = {
    "GA": Objective(losses.gradient_ascent, ("forget",)),
    "NPO": Objective(losses.negative_preference, ("forget",), needs_reference=True),
    "ME": Objective(losses.maximise_entropy, ("forget",), default_mask=False, default_forget_coeff=0.1,
                    settings=losses.MESettings),
    "IDK": Objective(losses.refusal_tuning, ("forget_idk",)),
    "DPO": Objective(losses.direct_preference, ("forget", "forget_idk"), needs_reference=True),
    "LLMU": Objective(losses.gradient_ascent, ("forget", "mismatch"), regularizer_term=losses.mismatch),
    # The field's methods (their papers' defaults as open-unlearning sets them for TOFU).
    "SimNPO": Objective(losses.simple_npo, ("forget",), default_forget_coeff=0.125, settings=losses.SimNPOSettings),
    "WGA": Objective(losses.weighted_gradient_ascent, ("forget",), settings=losses.WGASettings),
    # Its authors' weights (tmlr-group/SatImp), not open-unlearning's SatImp.yaml, which inverts them.
    "SatImp": Objective(losses.saturation_importance, ("forget",), default_regularization_coeff=0.1,
                        settings=losses.SatImpSettings),
    "CE-U": Objective(losses.cross_entropy_unlearning, ("forget",), settings=losses.CEUSettings),
    "UNDIAL": Objective(losses.undial, ("forget",), settings=losses.UNDIALSettings, **REFERENCE_LOGITS),
    "PDU": Objective(losses.logit_flatness, ("forget",), settings=losses.PDUSettings, state=losses.DualAscent),
    "RMU": Objective(losses.representation_misdirection, ("forget",), settings=losses.RMUSettings,
                     reads_hidden_states=True, state=losses.SteeringTarget),
    # AltPO: the run first has the model write alternate answers (procedure "alternates").
    "AltPO": Objective(losses.alternate_preference, ("forget", "forget_alt"), needs_reference=True,
                       settings=losses.AltPOSettings, procedure="alternates"),
    # Not losses: methods with a procedure of their own.
    "TaskVector": Objective(losses.learn_forget, ("forget",), settings=losses.TaskVectorSettings,
                            procedure="task_vector"),
}

REGULARIZERS: dict[str, Objective] = {
    "GD": Objective(losses.gradient_descent, ("retain",)),
    "KL": Objective(losses.kl_to_reference, ("retain",), every_position=True, **REFERENCE_LOGITS),
    "AP": Objective(losses.answer_preservation, ("retain", "retain_idk")),
    # RMU's activation preservation against the frozen original model.
    "ACT": Objective(losses.activation_preservation, ("retain",), settings=losses.LayerSettings,
                     reads_hidden_states=True, **REFERENCE_LOGITS),
}

# Names that stand for a fixed pair: a method whose paper trains it with a regulariser, and
# open-unlearning's trainer names.
ALIASES = {
    "LLMU": "LLMU+KL",
    "SimNPO": "SimNPO+GD",
    "WGA": "WGA+GD",
    "SatImp": "SatImp+GD",
    "PDU": "PDU+GD",
    "RMU": "RMU+ACT",
    "AltPO": "AltPO+GD",
    "GradAscent": "GA",
    "GradDiff": "GA+GD",
    "IdkDPO": "DPO+GD",
    "IdkNLL": "IDK+GD",
}
# open-unlearning's NPO trainer carries a retain term; here NPO alone is the bare forget loss,
# so its name cannot be an alias: write NPO+GD.
UNMAPPED_NAMES = {"NPO (open-unlearning)": "NPO+GD"}


@dataclass(frozen=True)
class Method:
    name: str
    forget_name: str
    forget: Objective
    regularizer_name: Optional[str]
    regularizer: Optional[Objective]

    @property
    def inputs(self) -> tuple[str, ...]:
        kinds = list(self.forget.inputs)
        if self.regularizer:
            kinds += [k for k in self.regularizer.inputs if k not in kinds]
        return tuple(kinds)

    @property
    def answer_logits_only(self) -> tuple[str, ...]:
        """The kinds whose logits are read only where they carry labels (not KL's)."""
        objectives = [self.forget] + ([self.regularizer] if self.regularizer else [])
        every = {k for o in objectives if o.every_position for k in o.inputs}
        return tuple(k for k in self.inputs if k not in every)

    @property
    def needs_reference(self) -> bool:
        return self.forget.needs_reference or bool(self.regularizer and self.regularizer.needs_reference)

    @property
    def needs_retain(self) -> bool:
        return any(k in ("retain", "retain_idk", "mismatch") for k in self.inputs)

    @property
    def needs_refusals(self) -> bool:
        return any(k in ("forget_idk", "retain_idk") for k in self.inputs)

    @property
    def objectives(self) -> tuple[Objective, ...]:
        return (self.forget,) + ((self.regularizer,) if self.regularizer else ())

    @property
    def reads_hidden_states(self) -> bool:
        return any(o.reads_hidden_states for o in self.objectives)

    @property
    def logit_inputs(self) -> tuple[str, ...]:
        """The kinds some objective reads logits of (what a fused forward computes)."""
        return tuple(k for k in self.inputs
                     if any(k in o.inputs and not o.reads_hidden_states for o in self.objectives))

    @property
    def settings(self) -> type:
        """One dataclass with the settings of its forget loss and of its regulariser."""
        return merged_settings(self.forget.settings, self.regularizer.settings if self.regularizer else losses.Settings)

    def settings_problems(self, settings) -> list[str]:
        return [p for o in self.objectives for p in o.settings.problems(settings)]

    def regularization(self, ctx: losses.LossContext) -> torch.Tensor:
        """The regulariser, plus the forget objective's term that joins it (LLMU's mismatch)."""
        value = self.regularizer.fn(ctx)
        return value + self.forget.regularizer_term(ctx) if self.forget.regularizer_term else value


@cache
def merged_settings(first: type, second: type) -> type:
    """A dataclass with the fields of both (a field both declare, like RMU's layer, is shared)."""
    if issubclass(first, second):
        return first
    if issubclass(second, first):
        return second
    return dataclasses.make_dataclass(f"{first.__name__}And{second.__name__}", [], bases=(first, second))




def method_names() -> list[str]:
    names = list(FORGET_LOSSES) + list(ALIASES)
    names += [f"{f}+{r}" for f, o in FORGET_LOSSES.items()
              if f != "LLMU" and o.procedure in (None, "alternates") for r in REGULARIZERS]
    return sorted(set(names), key=str.upper)


def get_method(name: str) -> Method:
    """Parse ``FORGET`` or ``FORGET+REG`` (case-insensitive); unknown names list the valid ones."""
    # Read from the registries at each call, so an entry added at run time (a test's) is found.
    forget_by_key = {n.upper(): n for n in FORGET_LOSSES}
    regularizers_by_key = {n.upper(): n for n in REGULARIZERS}
    key = name.strip().upper()
    key = {n.upper(): target for n, target in ALIASES.items()}.get(key, key).upper()
    forget_key, _, reg_key = key.partition("+")
    if forget_key not in forget_by_key or (reg_key and reg_key not in regularizers_by_key) or key.endswith("+"):
        raise UserError(
            f"unknown method '{name}'; forget losses: {', '.join(FORGET_LOSSES)}; "
            f"regularisers: {', '.join(REGULARIZERS)}; write FORGET or FORGET+REG (e.g. ME+GD, IDK+AP); "
            f"other names: {', '.join(ALIASES)} (see `unlearnlm methods`)"
        )
    forget_name = forget_by_key[forget_key]
    reg_name = regularizers_by_key[reg_key] if reg_key else None
    if FORGET_LOSSES[forget_name].procedure == "task_vector" and reg_name:
        raise UserError(f"method '{name}': {forget_name} is not a loss and takes no regulariser; write {forget_name}")
    if FORGET_LOSSES[forget_name].state is losses.DualAscent and reg_name is None:
        raise UserError(f"method '{name}' bounds a retain loss: name one, e.g. {forget_name}+GD")
    return Method(
        name=f"{forget_name}+{reg_name}" if reg_name else forget_name,
        forget_name=forget_name,
        forget=FORGET_LOSSES[forget_name],
        regularizer_name=reg_name,
        regularizer=REGULARIZERS[reg_name] if reg_name else None,
    )

"""Method names -> objectives. Adding a method is one function in losses.py and one line here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

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


FORGET_LOSSES: dict[str, Objective] = {
    "GA": Objective(losses.gradient_ascent, ("forget",)),
    "NPO": Objective(losses.negative_preference, ("forget",), needs_reference=True),
    "ME": Objective(losses.maximise_entropy, ("forget",), default_mask=False, default_forget_coeff=0.1),
    "IDK": Objective(losses.refusal_tuning, ("forget_idk",)),
    "DPO": Objective(losses.direct_preference, ("forget", "forget_idk"), needs_reference=True),
    "LLMU": Objective(losses.llmu_forget, ("forget", "mismatch")),
}

REGULARIZERS: dict[str, Objective] = {
    "GD": Objective(losses.gradient_descent, ("retain",)),
    "KL": Objective(losses.kl_to_reference, ("retain",), needs_reference=True, reference_nll_only=False,
                    every_position=True),
    "AP": Objective(losses.answer_preservation, ("retain", "retain_idk")),
}

# Names that stand for a fixed pair (LLMU = GA + mismatch CE, regularised with KL).
ALIASES = {"LLMU": "LLMU+KL"}


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


def method_names() -> list[str]:
    names = list(FORGET_LOSSES) + list(ALIASES)
    names += [f"{f}+{r}" for f in FORGET_LOSSES if f != "LLMU" for r in REGULARIZERS]
    return sorted(set(names))


def get_method(name: str) -> Method:
    """Parse ``FORGET`` or ``FORGET+REG`` (case-insensitive); unknown names list the valid ones."""
    canonical = name.strip().upper()
    canonical = ALIASES.get(canonical, canonical)
    forget_name, _, reg_name = canonical.partition("+")
    if forget_name not in FORGET_LOSSES or (reg_name and reg_name not in REGULARIZERS) or canonical.endswith("+"):
        raise UserError(
            f"unknown method '{name}'; forget losses: {', '.join(FORGET_LOSSES)}; "
            f"regularisers: {', '.join(REGULARIZERS)}; write FORGET or FORGET+REG (e.g. ME+GD, IDK+AP)"
        )
    return Method(
        name=canonical,
        forget_name=forget_name,
        forget=FORGET_LOSSES[forget_name],
        regularizer_name=reg_name or None,
        regularizer=REGULARIZERS[reg_name] if reg_name else None,
    )

"""A toy attack, as a user would add one: one function and one registry entry
(``scenarios.attacks.ATTACKS["echo"] = ATTACK``). It asks U its own questions again, so the
attacked rows are U's: nothing is recovered."""

from __future__ import annotations

from unlearnlm.scenarios.attacks import Attack, AttackContext, AttackResult


def echo(context: AttackContext) -> list[AttackResult]:
    rows = context.unlearned.rows_at()
    return [AttackResult("echo:again", None, rows, context.unlearned.MU, rows, context.target.rows_at(),
                         ["U asked its own questions again"])]


ATTACK = Attack(echo)

"""Probes: the forget questions asked other ways, each probe a forget set of its own.

The templates live in a YAML file (``probes.yaml`` beside this module, or the user's); see its
header for the slots. ``probe_rows`` turns the forget set's rows into one probe's rows in the
evaluation's QA format (question, answer, paraphrased_answer, perturbed_answer), so each probe is
scored like the forget set itself: generation, ROUGE, losses, judges.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import UserError

DEFAULT_TEMPLATES = Path(__file__).with_name("probes.yaml")
SLOTS = ("question", "subject", "fact", "options", "examples")
PROBE_KEYS = ("field", "template", "option", "example", "examples")
LETTERS = string.ascii_uppercase
# Lower-case words that may sit inside a name ("Ludwig van Beethoven", "Leonardo da Vinci").
NAME_PARTICLES = {"van", "von", "de", "da", "del", "der", "den", "di", "du", "la", "le", "al", "bin", "ibn", "el"}
SUBJECT_STANDIN = "this person"
MAX_OTHER_SUBJECTS = 5  # perturbed answers of the reverse question (TOFU's forget sets have five)


@dataclass(frozen=True)
class Probe:
    name: str
    field: str | None = None
    template: str | None = None
    option: str = "{letter}. {text}"
    example: str = "Question: {question}\nAnswer: {answer}\n\n"
    examples: int = 3

    def slots(self) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(self.template or "") if name}

    @property
    def asks_subject(self) -> bool:
        return "fact" in self.slots()


def _check_template(text: str, allowed: Sequence[str], where: str) -> None:
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(text)
                  if name is not None]
    except ValueError as err:
        raise UserError(f"{where}: malformed template ({err})") from None
    # A slot is filled with text as it is: a format spec ({question:d}) or conversion ({question!r})
    # would fail, or change the text, only once rows are formatted.
    decorated = next((f"{{{n}{'!' + c if c else ''}{':' + s if s else ''}}}" for n, s, c in fields if s or c), None)
    if decorated:
        raise UserError(f"{where}: slot {decorated} has a format spec or conversion; write the slot bare, "
                        f"e.g. {{{decorated[1:].split(':')[0].split('!')[0]}}}")
    names = {name for name, _, _ in fields}
    unknown = sorted(n for n in names if n not in allowed)
    if unknown or any(n == "" for n in names):
        raise UserError(f"{where}: unknown slot {{{unknown[0] if unknown else ''}}}; valid: "
                        + ", ".join(f"{{{s}}}" for s in allowed))


def load_probes(path: str | None = None, names: Sequence[str] = ()) -> list[Probe]:
    """The probes of ``path`` (empty: the shipped file), all or those named, checked."""
    file = Path(path).expanduser() if path else DEFAULT_TEMPLATES
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"probes.templates: cannot read {file}: {err.strerror or err}") from None
    except yaml.YAMLError:
        raise UserError(f"probes.templates: {file} is not valid YAML") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"probes.templates: {file} must map probe names to their settings")
    probes = []
    for name, settings in data.items():
        where = f"{file}: probe '{name}'"
        if not isinstance(settings, dict):
            raise UserError(f"{where}: expected a mapping with `field` or `template`")
        unknown = sorted(set(settings) - set(PROBE_KEYS))
        if unknown:
            raise UserError(f"{where}: unknown key '{unknown[0]}'; valid: {', '.join(PROBE_KEYS)}")
        if ("field" in settings) == ("template" in settings):
            raise UserError(f"{where}: give exactly one of `field` and `template`")
        for key in ("field", "template", "option", "example"):
            if key in settings and not (isinstance(settings[key], str) and settings[key].strip()):
                raise UserError(f"{where}: `{key}` must be non-empty text")
        examples = settings.get("examples", 3)
        if not isinstance(examples, int) or isinstance(examples, bool) or examples < 1:
            raise UserError(f"{where}: `examples` must be a whole number of at least 1, got {examples!r}")
        probe = Probe(str(name), settings.get("field"), settings.get("template"),
                      settings.get("option", Probe.option), settings.get("example", Probe.example), examples)
        if probe.template is not None:
            _check_template(probe.template, SLOTS, where)
            _check_template(probe.option, ("letter", "text"), f"{where} `option`")
            _check_template(probe.example, ("question", "answer"), f"{where} `example`")
        probes.append(probe)
    if names:
        known = {p.name: p for p in probes}
        missing = [n for n in names if n not in known]
        if missing:
            raise UserError(f"probes.names: no probe '{missing[0]}' in {file}; it has: {', '.join(known)}")
        probes = [known[n] for n in names]
    return probes


# ---- the rows' subject ---------------------------------------------------------------------------

_WORD = re.compile(r"[^\W\d_][\w'’.-]*|\S")


def _name_runs(text: str) -> list[str]:
    """Runs of two or more capitalised words (particles allowed inside), the text's first word left out."""
    words = _WORD.findall(text)[1:]
    runs, current = [], []

    def close():
        while current and current[-1].lower() in NAME_PARTICLES:
            current.pop()
        if sum(1 for w in current if w[:1].isupper()) >= 2:
            runs.append(" ".join(current))
        current.clear()

    for word in words:
        if word[:1].isupper() and word[:1].isalpha():
            current.append(re.sub(r"['’]s$", "", word.rstrip(".")))
            if word.endswith(".") and len(word) > 2:
                close()
        elif current and word in NAME_PARTICLES:
            current.append(word)
        else:
            close()
    close()
    return runs


def subject_of(row: dict, answer_key: str = "answer") -> str | None:
    """Whom a row is about: its ``subject`` field, else the longest capitalised name of two or
    more words in its question or answer (the question's first when as long); None if none."""
    if isinstance(row.get("subject"), str) and row["subject"].strip():
        return row["subject"].strip()
    candidates = _name_runs(row.get("question", "")) + _name_runs(str(row.get(answer_key, "")))
    return max(candidates, key=lambda run: len(run.split()), default=None)


# ---- probe rows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForgetRow:
    """A forget row in the evaluation's terms (whatever the scenario's field names are)."""

    question: str
    answer: str
    paraphrased: str | None
    perturbed: list[str] | None
    subject: str | None
    source: dict


def forget_rows(rows: Sequence[dict], ground_truth: str = "answer", paraphrased: str | None = "paraphrased_answer",
                perturbed: str | None = "perturbed_answer") -> list[ForgetRow]:
    return [ForgetRow(r["question"], r[ground_truth], r.get(paraphrased) if paraphrased else None,
                      list(r[perturbed]) if perturbed and isinstance(r.get(perturbed), list) else None,
                      subject_of(r, ground_truth), r) for r in rows]


def _options(row: ForgetRow, probe: Probe, seed: int) -> str:
    choices = [row.paraphrased or row.answer, *(row.perturbed or [])]
    random.Random(seed).shuffle(choices)
    return "\n".join(probe.option.format(letter=LETTERS[k % 26], text=text) for k, text in enumerate(choices))


def _standin(answer: str, subject: str | None) -> str:
    """The answer with its subject replaced by "this person" ("This person" opening a sentence)."""
    if not subject:
        return answer
    fact = answer.replace(subject, SUBJECT_STANDIN)
    return SUBJECT_STANDIN.capitalize() + fact[len(SUBJECT_STANDIN):] if fact.startswith(SUBJECT_STANDIN) else fact


def probe_rows(probe: Probe, rows: Sequence[ForgetRow], retain: Sequence[tuple[str, str]] = (),
               seed: int = 0, other_subjects: Sequence[str] = ()) -> tuple[list[dict], str | None]:
    """One probe's rows (question = the probe's prompt) and why rows were left out (None: none were).

    ``retain``: (question, answer) pairs for the in-context examples (the first ``examples``);
    ``other_subjects``: more people the reverse question's wrong answers may name (e.g. the
    retain set's), beside the forget set's own."""
    slots = probe.slots()
    if probe.field is None and "examples" in slots and len(retain) < probe.examples:
        return [], f"needs {probe.examples} retain QA pairs for its examples, {len(retain)} given"
    examples = "".join(probe.example.format(question=q, answer=a) for q, a in retain[: probe.examples])
    subjects = list(dict.fromkeys([*(r.subject for r in rows if r.subject), *other_subjects]))
    out, dropped = [], []
    for index, row in enumerate(rows):
        if probe.field is not None:
            value = row.source.get(probe.field)
            if not isinstance(value, str) or not value.strip():
                dropped.append(f"no '{probe.field}'")
                continue
            question = value
        else:
            if ({"subject", "fact"} & slots) and not row.subject:
                dropped.append("no subject found")
                continue
            question = probe.template.format(
                question=row.question, subject=row.subject or "", fact=_standin(row.answer, row.subject),
                examples=examples,
                options=_options(row, probe, seed + index) if "options" in slots else "",
            )
        item = {"question": question, "original_question": row.question, "forget_index": index}
        if probe.asks_subject:
            others = [s for s in subjects if s != row.subject]
            random.Random(seed + index).shuffle(others)
            item.update(answer=row.subject, paraphrased_answer=row.subject)
            if others:
                item["perturbed_answer"] = others[:MAX_OTHER_SUBJECTS]
        else:
            item["answer"] = row.answer
            if row.paraphrased is not None and row.perturbed:
                item.update(paraphrased_answer=row.paraphrased, perturbed_answer=row.perturbed)
        out.append(item)
    if not out:
        return [], f"no row could be asked ({dropped[0]})" if dropped else "the forget set is empty"
    note = f"{len(dropped)} of {len(rows)} rows left out ({dropped[0]})" if dropped else None
    return out, note

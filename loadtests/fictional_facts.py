"""A fictional world (people, towns, rivers, years) that no model can know, with one- and two-hop questions:
what the RAG tests and benchmark ask, deterministic from a seed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

SYLLABLES = [
    "bra",
    "kel",
    "mor",
    "vin",
    "tas",
    "qui",
    "lor",
    "zen",
    "dap",
    "fir",
    "gol",
    "hum",
    "jex",
    "nor",
    "pell",
    "rus",
    "syl",
    "tov",
    "urm",
    "wex",
    "yal",
    "zor",
]
PROFESSIONS = [
    "glassblower",
    "cartographer",
    "beekeeper",
    "clockmaker",
    "ferryman",
    "astronomer",
    "weaver",
    "luthier",
]
REGIONS = ["Oskvale", "Marrowdeep", "Tinsel", "Heights", "Gloam", "Reach", "Pellucid", "Plains"]


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answer: str
    hops: int
    sub_questions: tuple[str, ...] = ()


@dataclass
class World:
    documents: list[dict[str, str]] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)
    demonstrations: list[dict[str, str]] = field(default_factory=list)


def _word(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def _unique(rng: random.Random, taken: set[str], make: int, words: int = 1) -> str:
    """A name of `words` words of `make` syllables that no other entity has. Only the whole name must be
    new (first and last names repeat, as in life), so the name space is SYLLABLES ** (make * words)."""
    for _ in range(100_000):
        name = " ".join(_word(rng, make) for _ in range(words))
        if name not in taken:
            taken.add(name)
            return name
    raise ValueError(f"no unused name of {words} x {make} syllables left; ask for fewer entities")


def build(seed: int = 0, people: int = 360, towns: int = 160, questions: int = 120, demos: int = 8) -> World:
    """`people + towns` documents; `questions` test questions (half one-hop, half two-hop) and `demos`
    demonstrations about other people, all from `seed`."""
    rng = random.Random(seed)
    taken: set[str] = set()
    rivers = [_unique(rng, taken, 2) for _ in range(max(4, towns // 8))]
    town_facts = []
    world = World()
    for index in range(towns):
        name = _unique(rng, taken, 3)
        founded = rng.randint(1100, 1890)
        river = rng.choice(rivers)
        region = rng.choice(REGIONS)
        town_facts.append((name, founded, river))
        world.documents.append(
            {
                "id": f"town-{index}",
                "title": name,
                "text": f"{name} is a town in the {region} region. {name} was founded in {founded}. "
                f"The {river} river flows through {name}, which is known for its market.",
            }
        )
    person_facts = []
    for index in range(people):
        name = _unique(rng, taken, 2, words=2)
        town, _, _ = rng.choice(town_facts)
        year = rng.randint(1900, 1999)
        job = rng.choice(PROFESSIONS)
        person_facts.append((name, town, year, job))
        world.documents.append(
            {
                "id": f"person-{index}",
                "title": name,
                "text": f"{name} is a {job}. {name} was born in {year} in the town of {town}.",
            }
        )
    founded_of = {town: year for town, year, _ in town_facts}
    river_of = {town: river for town, _, river in town_facts}
    order = list(range(people))
    rng.shuffle(order)
    for number, index in enumerate(order[: questions + demos]):
        name, town, year, job = person_facts[index]
        kind = number % 4
        if kind == 0:
            item = Question(f"q{number}", f"In which town was {name} born?", town, 1)
        elif kind == 1:
            item = Question(f"q{number}", f"In what year was {name} born?", str(year), 1)
        elif kind == 2:
            item = Question(
                f"q{number}",
                f"In what year was the town where {name} was born founded?",
                str(founded_of[town]),
                2,
                (f"In which town was {name} born?", f"In what year was {town} founded?"),
            )
        else:
            item = Question(
                f"q{number}",
                f"Which river flows through the town where {name} was born?",
                river_of[town],
                2,
                (f"In which town was {name} born?", f"Which river flows through {town}?"),
            )
        if number < demos:
            world.demonstrations.append({"id": item.id, "question": item.question, "answer": item.answer})
        else:
            world.questions.append(item)
    return world


def split(world: World, name: str) -> list[Question]:
    """Questions of one split: `train` the first half, `test` the second (both halves are balanced between
    one- and two-hop, since question kinds cycle every four). Fit on train, report on test."""
    half = (len(world.questions) // 8) * 4
    if name == "train":
        return world.questions[:half]
    if name == "test":
        return world.questions[half:]
    if name == "all":
        return list(world.questions)
    raise ValueError(f"unknown split {name!r}: train, test or all")


def correct(prediction: str | None, answer: str) -> bool:
    """Accuracy as in the RAG papers: the gold answer appears in the prediction (case-insensitive)."""
    return prediction is not None and answer.lower() in prediction.lower()

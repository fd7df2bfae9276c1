"""BoolQ-style: a short passage about invented places and people, and a yes/no question about it.

Every name (towns, rivers, people) is made up from syllables and every number is random, so the
answer is only in the passage, never in the model's prior knowledge. Question templates cover
membership, negation (in the passage and in the question), comparisons, counts and dates. Each
split alternates yes/no, so it is exactly balanced (and so is any even prefix of it).

Answer format: `\\boxed{yes}` or `\\boxed{no}` (case-insensitive inside the box, `\\text{}` allowed).
Every box in the completion must agree; `\\boxed{yes} \\boxed{no}`, "yes" outside a box, or
`\\boxed{maybe}` earn nothing. Reward = 0.1·format + answer, as countdown.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from evotune.tasks.answers import SuiteTask, single_choice, unwrap
from evotune.tasks.base import Example, Reward, register_task, stable_int

_SYSTEM = (
    "Read the passage and answer the question about it with yes or no. Use only the passage. "
    "Reply in the form \\boxed{yes} or \\boxed{no}."
)
_INSTRUCTION = "Answer with \\boxed{yes} or \\boxed{no}."

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "tr", "st", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ei")
_CODAS = ("", "", "n", "r", "l", "s", "m", "th", "nd", "rk")
_FACILITIES = ("railway station", "lighthouse", "public library", "cathedral", "harbour", "university")
_ROLES = ("baker", "blacksmith", "librarian", "ferry captain", "schoolteacher", "clockmaker")
_COUNTED = (("market", "stalls"), ("old town", "bridges"), ("harbour", "piers"), ("park", "fountains"))


def invented_word(rng: random.Random, syllables: int) -> str:
    """A pronounceable made-up word, capitalised."""
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


def _distinct_words(rng: random.Random, k: int, syllables: tuple[int, int]) -> list[str]:
    out: list[str] = []
    while len(out) < k:
        w = invented_word(rng, rng.randint(*syllables))
        if w not in out:
            out.append(w)
    return out


class _World:
    """The facts of one passage; question templates may set a fact so the answer is the wanted one."""

    def __init__(self, rng: random.Random) -> None:
        self.town, self.other, self.river, self.river2 = _distinct_words(rng, 4, (2, 3))
        first = _distinct_words(rng, 2, (2, 2))
        last = _distinct_words(rng, 2, (2, 3))
        self.mayor, self.crafter = f"{first[0]} {last[0]}", f"{first[1]} {last[1]}"
        self.role = rng.choice(_ROLES)
        self.pop, self.pop2 = rng.sample(range(800, 40_000, 100), 2)
        self.founded = rng.randint(1150, 1890)
        self.facility = rng.choice(_FACILITIES)
        self.has_facility = rng.random() < 0.5
        self.place, self.unit = rng.choice(_COUNTED)
        self.count = rng.randint(3, 40)

    def passage(self, rng: random.Random) -> str:
        f = self.facility
        has = f"{self.town} has a {f}" if self.has_facility else f"{self.town} has no {f}"
        facts = [
            f"{self.town} lies on the river {self.river} and was founded in {self.founded}.",
            f"Today it has {self.pop:,} inhabitants, while the neighbouring town of {self.other}, on the river "
            f"{self.river2}, has {self.pop2:,}.",
            f"Unlike {self.other}, {has}." if rng.random() < 0.5 else f"{has[0].upper()}{has[1:]}.",
            f"The {self.place} of {self.town} has {self.count} {self.unit}.",
            f"The mayor of {self.town} is {self.mayor}, and {self.crafter} is the town's best-known {self.role}.",
        ]
        head, tail = facts[:2], facts[2:]
        rng.shuffle(tail)
        return " ".join(head + tail)


# Each template returns a question whose answer is `want`, adjusting the world when needed.
def q_river(w: _World, want: bool, rng: random.Random) -> str:
    river = w.river if want else rng.choice((w.river2, invented_word(rng, 2)))
    while not want and river == w.river:
        river = invented_word(rng, 2)
    return f"Does {w.town} lie on the river {river}?"


def q_population(w: _World, want: bool, rng: random.Random) -> str:
    more = rng.random() < 0.5
    hi, lo = max(w.pop, w.pop2), min(w.pop, w.pop2)
    town_bigger = want if more else not want
    w.pop, w.pop2 = (hi, lo) if town_bigger else (lo, hi)
    return f"Does {w.town} have {'more' if more else 'fewer'} inhabitants than {w.other}?"


def q_founded(w: _World, want: bool, rng: random.Random) -> str:
    before = rng.random() < 0.5
    d = rng.randint(1, 120)
    year = w.founded + d if before == want else w.founded - d
    return f"Was {w.town} founded {'before' if before else 'after'} {year}?"


def q_facility(w: _World, want: bool, rng: random.Random) -> str:
    negated = rng.random() < 0.5
    w.has_facility = (not want) if negated else want
    return f"Does {w.town} {'lack' if negated else 'have'} a {w.facility}?"


def q_count(w: _World, want: bool, rng: random.Random) -> str:
    kind = rng.choice(("more", "fewer", "exactly"))
    if kind == "exactly":
        n = w.count if want else w.count + rng.choice((-2, -1, 1, 2))
        return f"Does the {w.place} of {w.town} have exactly {n} {w.unit}?"
    d = rng.randint(1, min(5, w.count - 1))
    above = (kind == "more") == want  # threshold below the count when the answer is "more: yes"
    n = w.count - d if above else w.count + d
    return f"Does the {w.place} of {w.town} have {kind} than {n} {w.unit}?"


def q_person(w: _World, want: bool, rng: random.Random) -> str:
    if rng.random() < 0.5:
        who = w.mayor if want else w.crafter
        return f"Is {who} the mayor of {w.town}?"
    who = w.crafter if want else w.mayor
    return f"Is {who} the town's best-known {w.role}?"


TEMPLATES: dict[str, Callable[[_World, bool, random.Random], str]] = {
    "river": q_river, "population": q_population, "founded": q_founded, "facility": q_facility,
    "count": q_count, "person": q_person,
}


def truth(w: _World, question: str, family: str) -> bool:
    """An independent reading of the question against the world, to catch template mistakes."""
    if family == "river":
        return question.endswith(f"river {w.river}?")
    if family == "population":
        return (w.pop > w.pop2) == (" more " in question)
    if family == "founded":
        year = int(question.rstrip("?").split()[-1])
        return w.founded < year if " before " in question else w.founded > year
    if family == "facility":
        return w.has_facility != (" lack " in question)
    if family == "count":
        n = int(question.split(" have ")[1].split()[1 if "exactly" in question else 2])
        if "exactly" in question:
            return w.count == n
        return w.count > n if " more " in question else w.count < n
    if family == "person":
        if "mayor" in question:
            return w.mayor in question
        return w.crafter in question
    raise ValueError(family)


def yes_no(content: str) -> str | None:
    """A box's content as "yes"/"no" (case-insensitive, `\\text{}` allowed), else None."""
    s = unwrap(content).lower()
    return s if s in ("yes", "no") else None


def yes_no_answer(answer: Any) -> str:
    """A local row's answer ("yes"/"no"/"true"/"false", any case) as "yes"/"no"."""
    s = str(answer).strip().lower()
    if s in ("yes", "true"):
        return "yes"
    if s in ("no", "false"):
        return "no"
    raise ValueError(f"answer {answer!r} is not yes/no")


@register_task("boolq")
class BoolQ(SuiteTask):
    """Generated passage + yes/no question, balanced; options: data, eval_data."""

    default_n_train = 300
    default_n_eval = 500
    default_max_new_tokens = 64

    system = _SYSTEM
    convert_answer = staticmethod(yes_no_answer)

    def _generate(self, stream: str, n: int, exclude: set[str]) -> list[Example]:
        rng = random.Random(stable_int("boolq", self.seed, stream))
        families = sorted(TEMPLATES)

        def draw(id: str, k: int) -> Example:
            want = k % 2 == 0  # balanced yes/no
            world = _World(rng)
            family = families[rng.randrange(len(families))]
            question = TEMPLATES[family](world, want, rng)
            if truth(world, question, family) != want:
                raise AssertionError(f"boolq template {family} answered wrongly: {question}")
            prompt = f"Passage: {world.passage(rng)}\nQuestion: {question}\n{_INSTRUCTION}"
            return Example(id=id, prompt=prompt, answer="yes" if want else "no", meta={"family": family})

        return self.draw_distinct(stream, n, exclude, draw)

    def generate_splits(self) -> tuple[list[Example], list[Example]]:
        ev = self._generate("eval", self.n_eval, set())
        tr = self._generate("train", self.n_train, {e.prompt for e in ev})
        return tr, ev

    def reward(self, completion: str, example: Example) -> Reward:
        got = single_choice(completion, yes_no)
        fmt = 0.1 if got is not None else 0.0
        ok = got == example.answer
        ans = 1.0 if ok else 0.0
        return Reward(score=fmt + ans, components={"format": fmt, "answer": ans}, correct=ok)

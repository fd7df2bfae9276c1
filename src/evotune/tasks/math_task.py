"""Math: multi-step arithmetic word problems (GSM8K style) with an integer answer in `\\boxed{}`.

Problems come from templates over eight everyday settings (shopping, travel, sharing, ages, work
rates, percentages, savings, reading); option `difficulty` (1–3) is the number of arithmetic steps,
and by default each item draws its own. Every answer is an integer by construction (divisions
are built from products), so no item is ungradable.

Reward (mirrors countdown, RESEARCH.md §2): 0.1·format + answer, where format = the LAST
`\\boxed{}` holds a number, and answer = that number equals the target. "1,000", "1000.0",
"$1000", "\\$1{,}000" and "1000 dollars" all read as 1000; "10 or 12", "1e3" and a value outside
any box do not count. A correct completion scores 1.1, a boxed wrong number 0.1, no box 0.

Equivalence beyond plain numbers is judged by math-verify (`answers.equivalent`): `\\frac{2000}{2}`
and `10^{3}` are 1000, and with `data` (JSON lines or a JSON array of {prompt|question|problem,
answer}, e.g. converted GSM8K or MATH) `\\dfrac{1}{2}`, `0.5` and `\\frac12` all match a `\\frac{1}{2}`
answer, where comparing text would call two of them wrong.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from evotune.errors import TaskError
from evotune.tasks.answers import SuiteTask, equivalent, extract_boxed, parse_value, unwrap
from evotune.tasks.base import Example, Reward, register_task, stable_int

_OPTIONS = ("difficulty", "data", "eval_data")
_SYSTEM = (
    "Solve the math problem step by step. Finish with the final answer, a single integer, "
    "written as \\boxed{N}, for example \\boxed{42}."
)
_INSTRUCTION = "Give the final answer as an integer in \\boxed{}."

NAMES = (
    "Maya", "Liam", "Sofia", "Noah", "Aisha", "Mateo", "Chen", "Olivia", "Ravi", "Emma", "Kofi", "Yuki",
    "Lucas", "Amara", "Jonas", "Priya", "Diego", "Hana", "Omar", "Elena", "Tomas", "Zara", "Felix",
    "Ines", "Arjun", "Nora", "Samir", "Lena", "Hugo", "Mira",
)
ITEMS = (
    "notebooks", "pens", "apples", "mugs", "candles", "toy cars", "books", "plants", "scarves", "lamps",
    "pencils", "batteries", "bowls", "posters", "socks", "puzzles",
)
SHARED = ("stickers", "cookies", "marbles", "cards", "sweets", "stamps", "beads", "shells")
VEHICLES = (("train", 40, 120), ("bus", 30, 80), ("truck", 40, 90), ("cyclist", 10, 25), ("ferry", 15, 40))
MACHINES = (("printer", "pages"), ("machine", "bottles"), ("baker", "rolls"), ("robot", "boxes"))
GROUPS = (("school club", "members", "girls", "boys"), ("orchestra", "musicians", "violinists", "other players"),
          ("sports team", "players", "forwards", "other players"), ("choir", "singers", "sopranos", "other singers"))

Problem = tuple[str, int]


def _two(rng: random.Random, pool: tuple[str, ...]) -> tuple[str, str]:
    a, b = rng.sample(pool, 2)
    return a, b


def shopping(rng: random.Random, steps: int) -> Problem:
    name = rng.choice(NAMES)
    item1, item2 = _two(rng, ITEMS)
    q1, p1, q2, p2 = rng.randint(2, 9), rng.randint(2, 15), rng.randint(2, 9), rng.randint(2, 15)
    if steps == 1:
        return f"{name} buys {q1} {item1} at ${p1} each. How many dollars does {name} spend?", q1 * p1
    total = q1 * p1 + q2 * p2
    text = f"{name} buys {q1} {item1} at ${p1} each and {q2} {item2} at ${p2} each."
    if steps == 2:
        return f"{text} How many dollars does {name} spend in total?", total
    bill = (total // 10 + 1 + rng.randint(0, 4)) * 10
    return f"{text} {name} pays with ${bill}. How many dollars of change does {name} get back?", bill - total


def travel(rng: random.Random, steps: int) -> Problem:
    vehicle, lo, hi = rng.choice(VEHICLES)
    s1, s2 = rng.randrange(lo, hi + 1, 5), rng.randrange(lo, hi + 1, 5)
    h1, h2 = rng.randint(2, 6), rng.randint(2, 5)
    first = f"travels at {s1} km per hour for {h1} hours"
    if steps == 1:
        return f"A {vehicle} {first}. How many kilometres does it travel?", s1 * h1
    both = f"{first}, then at {s2} km per hour for {h2} hours"
    total = s1 * h1 + s2 * h2
    if steps == 2:
        return f"A {vehicle} {both}. How many kilometres does it travel in total?", total
    trip = total + rng.randint(2, 40) * 5
    return f"A {vehicle} has a trip of {trip} km. It {both}. How many kilometres of the trip are left?", trip - total


def sharing(rng: random.Random, steps: int) -> Problem:
    name, thing = rng.choice(NAMES), rng.choice(SHARED)
    k, each = rng.randint(2, 9), rng.randint(3, 15)
    if steps == 1:
        return (f"{name} has {k * each} {thing} and shares them equally among {k} friends. "
                f"How many {thing} does each friend get?", each)
    kept = rng.randint(2, 20)
    text = (f"{name} has {k * each + kept} {thing}. After keeping {kept} of them, {name} shares the rest "
            f"equally among {k} friends.")
    if steps == 2:
        return f"{text} How many {thing} does each friend get?", each
    given = rng.randint(1, each - 1)
    return (f"{text} Each friend then gives {given} {thing} to a younger sibling. "
            f"How many {thing} does each friend have left?", each - given)


def ages(rng: random.Random, steps: int) -> Problem:
    a, b = _two(rng, NAMES)
    age, m, y = rng.randint(3, 15), rng.randint(2, 5), rng.randint(2, 12)
    text = f"{a} is {age} years old. {b} is {m} times as old as {a}."
    if steps == 1:
        return f"{text} How old is {b}?", age * m
    if steps == 2:
        return f"{text} How old will {b} be in {y} years?", age * m + y
    return f"{text} What will the sum of their ages be in {y} years?", age + age * m + 2 * y


def work_rate(rng: random.Random, steps: int) -> Problem:
    machine, unit = rng.choice(MACHINES)
    r1, r2, t = rng.randint(3, 20), rng.randint(3, 20), rng.randint(2, 15)
    if steps == 1:
        return f"A {machine} makes {r1} {unit} per minute. How many {unit} does it make in {t} minutes?", r1 * t
    if steps == 2:
        return (f"One {machine} makes {r1} {unit} per minute and another makes {r2} {unit} per minute. "
                f"Working together, how many {unit} do they make in {t} minutes?", (r1 + r2) * t)
    done = rng.randint(5, 60)
    order = done + (r1 + r2) * t
    return (f"An order needs {order} {unit}, and {done} are already made. One {machine} makes {r1} {unit} per "
            f"minute and another makes {r2} {unit} per minute. Working together, how many minutes do they need "
            f"to finish the order?", t)


def percentages(rng: random.Random, steps: int) -> Problem:
    group, members, part, rest = rng.choice(GROUPS)
    pct = rng.choice((10, 20, 25, 30, 40, 50, 60, 75, 80))
    unit = 100 // _gcd(pct, 100)  # the total must be a multiple of this for an integer part
    while True:
        total = unit * rng.randint(1, max(1, 120 // unit))
        n_part = total * pct // 100
        n_rest = total - n_part
        if total >= 8 and (steps < 3 or n_rest % 2 == 0) and n_rest > 0:
            break
    text = f"A {group} has {total} {members}. {pct}% of them are {part}."
    if steps == 1:
        return f"{text} How many {part} are there?", n_part
    if steps == 2:
        return f"{text} How many {rest} are there?", n_rest
    return f"{text} Half of the {rest} joined this year. How many of the {rest} did not join this year?", n_rest // 2


def savings(rng: random.Random, steps: int) -> Problem:
    name = rng.choice(NAMES)
    w, n, start = rng.randint(3, 25), rng.randint(3, 12), rng.randint(5, 90)
    if steps == 1:
        return f"{name} saves ${w} every week. How many dollars does {name} save in {n} weeks?", w * n
    text = f"{name} has ${start} and saves ${w} every week."
    total = start + w * n
    if steps == 2:
        return f"{text} How many dollars will {name} have after {n} weeks?", total
    price = rng.randint(total // 3, total - 1)
    return f"{text} After {n} weeks, {name} buys a bike for ${price}. How many dollars does {name} have left?", total - price


def reading(rng: random.Random, steps: int) -> Problem:
    name = rng.choice(NAMES)
    r, d = rng.randint(5, 30), rng.randint(2, 9)
    if steps == 1:
        return f"{name} reads {r} pages every day for {d} days. How many pages does {name} read?", r * d
    r2, more = rng.randint(5, 40), rng.randint(2, 12)
    pages = r * d + r2 * more
    text = f"A book has {pages} pages. {name} reads {r} pages a day for {d} days."
    if steps == 2:
        return f"{text} How many pages are left to read?", pages - r * d
    return f"{text} After that, {name} reads {r2} pages a day. How many more days does {name} need to finish?", more


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


TEMPLATES: dict[str, Callable[[random.Random, int], Problem]] = {
    "shopping": shopping, "travel": travel, "sharing": sharing, "ages": ages, "work_rate": work_rate,
    "percentages": percentages, "savings": savings, "reading": reading,
}


def numeric_target(answer: Any) -> int | float | str:
    """A local row's answer as the reward compares it: a number when it reads as one, else text."""
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        value: float | None = float(answer)
    else:
        value = parse_value(str(answer))
    if value is None:
        text = _canon(str(answer))
        if not text:
            raise ValueError(f"answer {answer!r} is empty")
        return text
    return int(value) if value == int(value) else value


def _canon(text: str) -> str:
    return "".join(unwrap(text).replace("\\!", "").replace("$", "").split()).rstrip(".")


@register_task("math")
class MathTask(SuiteTask):
    """Generated multi-step word problems; options: difficulty (1–3, default mixed), data, eval_data."""

    default_n_train = 300
    default_n_eval = 500
    default_max_new_tokens = 192

    known_options = _OPTIONS
    system = _SYSTEM
    convert_answer = staticmethod(numeric_target)

    def __init__(
        self, seed: int = 0, n_train: int | None = None, n_eval: int | None = None, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(seed, n_train, n_eval, *args, **kwargs)
        d = self.options.get("difficulty")
        if d is not None and (isinstance(d, bool) or str(d) not in ("1", "2", "3")):
            raise TaskError(f"math: difficulty must be 1, 2 or 3 (number of steps), got {d!r}")
        self.difficulty = int(d) if d is not None else None

    # -- data -------------------------------------------------------------------------------
    def _generate(self, stream: str, n: int, exclude: set[str]) -> list[Example]:
        rng = random.Random(stable_int("math", self.seed, stream, self.difficulty))
        names = sorted(TEMPLATES)

        def draw(id: str, k: int) -> Example:
            family = names[rng.randrange(len(names))]
            steps = self.difficulty or rng.randint(1, 3)
            text, answer = TEMPLATES[family](rng, steps)
            if not isinstance(answer, int) or answer < 0:
                raise AssertionError(f"math template {family} produced a non-integer answer {answer!r}")
            return Example(id=id, prompt=f"{text}\n{_INSTRUCTION}", answer=answer, meta={"family": family, "steps": steps})

        return self.draw_distinct(stream, n, exclude, draw)

    def generate_splits(self) -> tuple[list[Example], list[Example]]:
        """Eval and train from separate seeded streams (train skips eval prompts), as in countdown."""
        ev = self._generate("eval", self.n_eval, set())
        tr = self._generate("train", self.n_train, {e.prompt for e in ev})
        return tr, ev

    # -- reward -----------------------------------------------------------------------------
    def answer_error(self, answer: Any) -> str | None:
        if isinstance(answer, bool) or not isinstance(answer, int | float | str):
            return f"the answer must be a number or a string, got {type(answer).__name__} {answer!r:.40}"
        return None

    def reward(self, completion: str, example: Example) -> Reward:
        boxes = extract_boxed(completion)
        target = example.answer
        fmt, ok = 0.0, False
        if boxes:
            last = boxes[-1]
            if isinstance(target, str):
                got_text = _canon(last)
                ok = bool(got_text) and (got_text == target or equivalent(target, last))
                fmt = 0.1 if got_text else 0.0
            else:
                got = parse_value(last)
                if got is not None:
                    ok = abs(got - float(target)) <= 1e-6 * max(1.0, abs(float(target)))
                else:  # not a plain number: `\\frac{2000}{2}`, `10^{3}`, `x = 4` may still be the answer
                    ok = equivalent(repr(target) if isinstance(target, float) else str(target), last)
                fmt = 0.1 if got is not None or ok else 0.0
        ans = 1.0 if ok else 0.0
        return Reward(score=fmt + ans, components={"format": fmt, "answer": ans}, correct=ok)

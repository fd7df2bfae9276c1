"""Countdown: combine the given numbers with + - * / into an expression equal to the target.

Instances are generated from a seed and each one is proven solvable by an exact brute-force
solver before it is kept, so an unsolvable item can never depress accuracy. The reward parses
the answer with `safe_expr` (never Python's evaluator) and follows RESEARCH.md §2:
0.1·format + answer.
"""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Any

from evotune.tasks.base import Example, Reward, Task, TaskError, register_task, stable_int
from evotune.tasks.safe_expr import ExprError, evaluate_expr

Value = int | Fraction

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_TOLERANCE = Fraction(1, 100_000)

_OPTIONS = {
    "min_numbers": 3,
    "max_numbers": 4,
    "min_value": 1,
    "max_value": 99,
    "min_target": 1,
    "max_target": 999,
}


def _norm(v: Fraction) -> Value:
    """Keep integral values as `int`: int arithmetic is far faster than Fraction's."""
    return v.numerator if v.denominator == 1 else v


def _results(a: Value, b: Value) -> list[tuple[Value, str, bool]]:
    """Every (value, operator, swapped) from one operator on (a, b); swapped means `b op a`."""
    out: list[tuple[Value, str, bool]] = [(a + b, "+", False), (a * b, "*", False), (a - b, "-", False)]
    out.append((b - a, "-", True))
    both_int = isinstance(a, int) and isinstance(b, int)
    if b != 0:
        out.append(((a // b if a % b == 0 else Fraction(a, b)) if both_int else _norm(a / b), "/", False))
    if a != 0:
        out.append(((b // a if b % a == 0 else Fraction(b, a)) if both_int else _norm(b / a), "/", True))
    return out


def _final(a: Value, b: Value, goal: Value) -> tuple[str, bool] | None:
    """(operator, swapped) combining a and b into `goal`; division checked by cross-multiplying."""
    if a + b == goal:
        return "+", False
    if a * b == goal:
        return "*", False
    if a - b == goal:
        return "-", False
    if b - a == goal:
        return "-", True
    if b != 0 and a == goal * b:
        return "/", False
    if a != 0 and b == goal * a:
        return "/", True
    return None


# An expression tree: an int literal or (operator, left, right).
Tree = int | tuple[str, "Tree", "Tree"]


def _render(tree: Tree, top: bool = True) -> str:
    if isinstance(tree, int):
        return str(tree)
    op, left, right = tree
    text = f"{_render(left, False)} {op} {_render(right, False)}"
    return text if top else f"({text})"


def solve(numbers: list[int] | tuple[int, ...], target: int | Fraction) -> str | None:
    """An expression using each number exactly once that equals `target`, or None if none exists.

    Exhaustive over operand orders, the four operators and every parenthesisation (any binary
    tree is reached by repeatedly combining two of the remaining values), in exact arithmetic;
    multisets already shown to be dead ends are memoised.
    """
    goal = _norm(Fraction(target))
    failed: set[tuple[Value, ...]] = set()

    def search(items: list[tuple[Value, Tree]]) -> Tree | None:
        if len(items) == 2:
            (a, ta), (b, tb) = items
            hit = _final(a, b, goal)
            if hit is None:
                return None
            op, swapped = hit
            return (op, tb, ta) if swapped else (op, ta, tb)
        key = tuple(sorted(v for v, _ in items))
        if key in failed:
            return None
        n = len(items)
        for i in range(n):
            a, ta = items[i]
            for j in range(i + 1, n):
                b, tb = items[j]
                rest = [items[k] for k in range(n) if k != i and k != j]
                for value, op, swapped in _results(a, b):
                    found = search([*rest, (value, (op, tb, ta) if swapped else (op, ta, tb))])
                    if found is not None:
                        return found
        failed.add(key)
        return None

    if not numbers:
        return None
    if len(numbers) == 1:
        return str(int(numbers[0])) if int(numbers[0]) == goal else None
    found = search([(int(n), int(n)) for n in numbers])
    return None if found is None else _render(found)


def extract_answers(text: str) -> list[str]:
    """Contents of the `<answer>…</answer>` blocks, left to right (non-greedy, non-overlapping).

    A linear scan rather than a regex so 100 KB of unclosed tags cannot make it quadratic.
    """
    out: list[str] = []
    pos = 0
    while True:
        s = text.find(_ANSWER_OPEN, pos)
        if s < 0:
            return out
        e = text.find(_ANSWER_CLOSE, s + len(_ANSWER_OPEN))
        if e < 0:
            return out
        out.append(text[s + len(_ANSWER_OPEN) : e])
        pos = e + len(_ANSWER_CLOSE)


def has_format(text: str) -> bool:
    """True iff the text is exactly `<think>…</think>` then `<answer>…</answer>`.

    Precisely: after stripping outer whitespace, the text starts with `<think>` and ends with
    `</answer>`, each of the four tags occurs exactly once, and only whitespace separates
    `</think>` from `<answer>`. Nothing may precede the think block or follow the answer block.
    """
    s = text.strip()
    if not (s.startswith(_THINK_OPEN) and s.endswith(_ANSWER_CLOSE)):
        return False
    if any(s.count(tag) != 1 for tag in (_THINK_OPEN, _THINK_CLOSE, _ANSWER_OPEN, _ANSWER_CLOSE)):
        return False
    i, j = s.index(_THINK_CLOSE), s.index(_ANSWER_OPEN)
    return i < j and s[i + len(_THINK_CLOSE) : j].strip() == ""


def check_answer(expr: str, numbers: list[int] | tuple[int, ...], target: int) -> bool:
    """True iff `expr` uses exactly `numbers` (as a multiset) and equals `target` within 1e-5."""
    try:
        res = evaluate_expr(expr.strip())
    except ExprError:
        return False
    if sorted(res.numbers) != sorted(numbers):
        return False
    return abs(res.value - target) < _TOLERANCE


@register_task("countdown")
class Countdown(Task):
    """Procedurally generated Countdown; options: min/max_numbers, min/max_value, min/max_target."""

    default_n_train = 200
    default_n_eval = 500
    default_max_new_tokens = 128

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        unknown = sorted(k for k, v in self.options.items() if k not in _OPTIONS and v is not None)
        if unknown:
            raise TaskError(f"countdown: unknown option(s) {unknown}; known: {sorted(_OPTIONS)}")
        try:
            cfg = {k: int(d if self.options.get(k) is None else self.options[k]) for k, d in _OPTIONS.items()}
        except (TypeError, ValueError) as exc:
            raise TaskError(f"countdown: options {sorted(_OPTIONS)} must be integers ({exc})") from exc
        if not 2 <= cfg["min_numbers"] <= cfg["max_numbers"] <= 6:
            raise TaskError(f"countdown: need 2 <= min_numbers <= max_numbers <= 6, got {cfg}")
        if not 0 <= cfg["min_value"] <= cfg["max_value"] <= 999_999:
            raise TaskError(f"countdown: need 0 <= min_value <= max_value <= 999999, got {cfg}")
        if not cfg["min_target"] <= cfg["max_target"]:
            raise TaskError(f"countdown: need min_target <= max_target, got {cfg}")
        self.cfg = cfg

    # -- data -------------------------------------------------------------------------------
    def _random_instance(self, rng: random.Random) -> tuple[list[int], int] | None:
        """Numbers and an integer target in range, from a random expression tree over them."""
        c = self.cfg
        k = rng.randint(c["min_numbers"], c["max_numbers"])
        numbers = [rng.randint(c["min_value"], c["max_value"]) for _ in range(k)]
        for _ in range(20):
            items: list[Value] = list(numbers)
            while len(items) > 1:
                a = items.pop(rng.randrange(len(items)))
                b = items.pop(rng.randrange(len(items)))
                items.append(rng.choice(_results(a, b))[0])
            value = items[0]
            if isinstance(value, int) and c["min_target"] <= value <= c["max_target"]:
                return numbers, value
        return None

    def prompt_text(self, numbers: list[int], target: int) -> str:
        return (
            f"Using the numbers {numbers}, create an equation that equals {target}. "
            "You can use basic arithmetic operations (+, -, *, /) and parentheses, and each number "
            "must be used exactly once. Show your reasoning in <think> </think> tags. Then give only "
            "the final expression (without '=' or the result) in <answer> </answer> tags, "
            "for example <answer> (1 + 2) / 3 </answer>."
        )

    def _generate(self, stream: str, n: int, exclude: set[str]) -> list[Example]:
        rng = random.Random(stable_int("countdown", self.seed, stream))
        out: list[Example] = []
        seen = set(exclude)
        attempts = 0
        while len(out) < n:
            attempts += 1
            if attempts > 100 * n + 1000:
                raise TaskError(
                    f"countdown: could not generate {n} distinct solvable instances with {self.cfg}"
                )
            inst = self._random_instance(rng)
            if inst is None:
                continue
            numbers, target = inst
            prompt = self.prompt_text(numbers, target)
            if prompt in seen:
                continue
            solution = solve(numbers, target)
            if solution is None or not check_answer(solution, numbers, target):
                raise AssertionError(f"generated unsolvable countdown instance {numbers} -> {target}")
            seen.add(prompt)
            out.append(
                Example(
                    id=f"countdown-{stream}-{len(out):05d}",
                    prompt=prompt,
                    answer={"numbers": tuple(numbers), "target": target},
                    meta={"solution": solution},
                )
            )
        return out

    def build(self) -> tuple[list[Example], list[Example]]:
        """Eval and train come from separate seeded streams; train skips every eval prompt.

        So the eval set depends only on (seed, n_eval, options) — runs with different n_train
        are evaluated on the same items — and disjointness holds by construction (and is checked).
        """
        ev = self._generate("eval", self.n_eval, set())
        tr = self._generate("train", self.n_train, {e.prompt for e in ev})
        assert not ({e.prompt for e in tr} & {e.prompt for e in ev}), "countdown splits overlap"
        return tr, ev

    # -- reward -----------------------------------------------------------------------------
    def reward(self, completion: str, example: Example) -> Reward:
        fmt = 0.1 if has_format(completion) else 0.0
        answers = extract_answers(completion)
        ok = bool(answers) and check_answer(answers[-1], example.answer["numbers"], example.answer["target"])
        ans = 1.0 if ok else 0.0
        return Reward(score=fmt + ans, components={"format": fmt, "answer": ans}, correct=ok)

"""Countdown: combine the given numbers with + - * / into an expression equal to the target.

Two rewards, both 0.1·format + answer (RESEARCH.md §2), neither ever evaluating model output as code:
- `reference` (default): the score of the public reference code (VsonicV/es-fine-tuning-paper
  `countdown/countdown_task.py`) on every completion, except answers using `**` or `//`, which that
  code accepts through Python's evaluator and evotune refuses. Format credit is graded (think block
  0.1, answer block 0.5, the full layout 1.0, times 0.1), which is the only signal early in training.
- `strict`: evotune's own — format is 0 or 1 (exactly one think block then one answer block), the
  answer parsed by `safe_expr` in exact arithmetic with unary minus refused.

Items come from a seeded generator whose defaults match the reference data's distribution (3–4
numbers in 1–99, integer targets spread evenly over 10–100; `distribution: wide` gives the older
1–999 targets), each proven solvable by an exact solver; or from the reference data file itself
(`data=countdown.json`, a JSON array or JSON lines of {numbers|nums, target, ...}). `prompt:
reference` and `prompt: reference_chat` reproduce the two reference prompts byte for byte.
See docs/reference-setups.md.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

from evotune.errors import TaskError
from evotune.tasks.base import Example, PromptStyle, Reward, Task, register_task, stable_int
from evotune.tasks.records import SPLIT_RULES, check_unique, convert_rows, file_splits, read_records, row_id
from evotune.tasks.records import value as row_value
from evotune.tasks.safe_expr import PY_CHARS, ExprError, evaluate_expr, python_value

Value = int | Fraction

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_TOLERANCE = Fraction(1, 100_000)

REWARDS = ("reference", "strict")
PROMPTS = ("evotune", "reference", "reference_chat")
DISTRIBUTIONS = ("reference", "wide")
# Generator ranges per distribution; `reference` matches the reference data (docs/reference-setups.md).
RANGES: dict[str, dict[str, int]] = {
    "reference": {
        "min_numbers": 3,
        "max_numbers": 4,
        "min_value": 1,
        "max_value": 99,
        "min_target": 10,
        "max_target": 100,
    },
    "wide": {
        "min_numbers": 3,
        "max_numbers": 4,
        "min_value": 1,
        "max_value": 99,
        "min_target": 1,
        "max_target": 999,
    },
}
_OPTIONS = (*RANGES["reference"], "distribution", "reward", "prompt", "data", "eval_data", "split")
NUMBER_FIELDS = ("numbers", "nums")
REFERENCE_DATA_URL = (
    "https://raw.githubusercontent.com/VsonicV/es-fine-tuning-paper/main/countdown/data/countdown.json"
)
TARGET_FIELDS = ("target",)

# The reference prompt, as the public code writes it: a system sentence run straight into the user
# text (raw context), or the same two as chat messages (evolutionary-alignment), then this prefix.
REFERENCE_SYSTEM = (
    "You are a helpful assistant. You first think about the reasoning process in your mind "
    "and then provide the user with the answer."
)
REFERENCE_PREFIX = "Let me solve this step by step.\n<think>"
_DECIMAL_RE = re.compile(r"-?\d+(?:\.\d+)?")


def reference_user_text(numbers: str, target: str) -> str:
    """The reference's user text; `numbers` is "[44 19  5]" (raw context, `numpy_style`) or "[44, 19, 5]" (chat)."""
    return (
        f"Using the numbers {numbers}, create an equation that equals {target}. "
        "You can use basic arithmetic operations (+, -, *, /) and each number can only be used once. "
        "Show your work in <think> </think> tags. "
        "And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."
    )


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


@lru_cache(maxsize=65536)
def _pair_values(a: Value, b: Value) -> frozenset[Value]:
    return frozenset(v for v, _, _ in _results(a, b))


def _values(ms: list[Value]) -> set[Value] | frozenset[Value]:
    """Every value of an expression using each of `ms` exactly once (pairs cached: they recur)."""
    if len(ms) == 1:
        return {ms[0]}
    if len(ms) == 2:
        return _pair_values(ms[0], ms[1])
    out: set[Value] = set()
    for left, right in _halves(ms):
        rhs = _values(right)
        for a in _values(left):
            for b in rhs:
                out.update(v for v, _, _ in _results(a, b))
    return out


def _halves(ms: list[Value]) -> list[tuple[list[Value], list[Value]]]:
    """Every split of `ms` into two non-empty parts (each unordered split once)."""
    n = len(ms)
    return [
        ([ms[i] for i in range(n) if m >> i & 1], [ms[i] for i in range(n) if not m >> i & 1])
        for m in range(1, 1 << (n - 1))
    ]


def solvable(numbers: list[int] | tuple[int, ...], target: int | Fraction) -> bool:
    """Whether `solve` would find an expression — without building one, several times faster.

    For each split of the numbers in two, the values of one side are checked against what the
    other side would need (t − a, a − t, t + a, t / a, t · a, a / t) by set lookup.
    """
    t = _norm(Fraction(target))
    ms: list[Value] = sorted(int(n) for n in numbers)
    if len(ms) < 2:
        return len(ms) == 1 and ms[0] == t
    for left, right in _halves(ms):
        small, big = _values(left), _values(right)
        if len(small) > len(big):
            small, big = big, small
        for a in small:
            need = [t - a, a - t, t + a]
            if a != 0:
                need += [_norm(Fraction(t) / a), _norm(Fraction(t) * a)]
                if t != 0:
                    need.append(_norm(Fraction(a) / t))
            if any(x in big for x in need):
                return True
    return False


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


def check_answer(expr: str, numbers: list[int] | tuple[int, ...], target: Value | float) -> bool:
    """True iff `expr` uses exactly `numbers` (as a multiset) and equals `target` within 1e-5."""
    try:
        res = evaluate_expr(expr.strip())
    except ExprError:
        return False
    if sorted(res.numbers) != sorted(numbers):
        return False
    return abs(res.value - target) < _TOLERANCE


def numpy_style(numbers: list[int] | tuple[int, ...]) -> str:
    """Numbers as the reference data prints them (a numpy array's text): "[83 78  1 39]", "[ 2 54 17]".

    Each number is right-aligned to the widest one, separated by one space.
    """
    width = max((len(str(n)) for n in numbers), default=0)
    return "[" + " ".join(str(n).rjust(width) for n in numbers) + "]"


def reference_format(text: str) -> float:
    """The reference's format credit (before its 0.1 scale) for a response it sees as `text`.

    The reference prepends `<think>` (the prompt's last token) and then checks, with `.` matching
    newlines: the whole text is `<think>…</think>` + one newline + `<answer>…</answer>` (optionally
    followed by one final newline) → 1.0; otherwise 0.1 if some `<think>…</think>` occurs plus 0.5 if
    some `<answer>…</answer>` occurs. Written as linear scans (the same language as its patterns),
    so adversarial text cannot make it slow.
    """
    s = _THINK_OPEN + text
    core = s[:-1] if s.endswith("\n") else s
    if core.endswith(_ANSWER_CLOSE):
        head = core[: -len(_ANSWER_CLOSE)]
        if head.find(_THINK_CLOSE + "\n" + _ANSWER_OPEN, len(_THINK_OPEN)) >= 0:
            return 1.0
    score = 0.0
    if s.find(_THINK_CLOSE, len(_THINK_OPEN)) >= 0:
        score += 0.1
    i = s.find(_ANSWER_OPEN)
    if i >= 0 and s.find(_ANSWER_CLOSE, i + len(_ANSWER_OPEN)) >= 0:
        score += 0.5
    return score


def reference_answer(text: str, numbers: tuple[int, ...] | list[int], target: Value | float) -> float:
    """The reference's answer credit: 1.0 iff its last `<answer>` block is right, else 0.0.

    The block must be non-empty and only `0-9 + - * / ( )` and spaces (one final newline allowed);
    its digit runs, as integers, must be exactly `numbers`; and its value as Python computes it
    (true division, float rounding, unary signs allowed) must be within 1e-5 of the target.
    `python_value` refuses `**` and `//`, where the reference's evaluator accepts them.
    """
    answers = extract_answers(text)
    if not answers or not answers[-1]:
        return 0.0
    content = answers[-1]
    body = content[:-1] if content.endswith("\n") else content
    if not body or any(c not in PY_CHARS for c in body):
        return 0.0
    runs = re.findall(r"[0-9]+", body)
    if any(len(r) > 4300 for r in runs) or sorted(int(r) for r in runs) != sorted(numbers):
        return 0.0
    try:
        result = python_value(content)
        return 1.0 if abs(float(result) - float(target)) < 1e-5 else 0.0
    except (ExprError, OverflowError):
        return 0.0


def parse_target(raw: Any) -> tuple[Value, str]:
    """A target from data (a number, or a decimal string as in the reference file) and its prompt text."""
    if isinstance(raw, bool):
        raise ValueError(f"'target' must be a number, got {raw!r}")
    if isinstance(raw, int):
        return raw, str(raw)
    if isinstance(raw, float) and raw == raw and abs(raw) != float("inf"):
        text = repr(raw)
    elif isinstance(raw, str) and _DECIMAL_RE.fullmatch(raw.strip()):
        text = raw.strip()
    else:
        raise ValueError(
            f'\'target\' must be a number or a decimal string like "98" or "27.4", got {raw!r:.40}'
        )
    exact = Fraction(text)
    return (exact.numerator if exact.denominator == 1 else exact), text


@register_task("countdown")
class Countdown(Task):
    """Countdown; options: reward, prompt, distribution, min/max_numbers/value/target, data, eval_data, split."""

    default_n_train = 200
    default_n_eval = 500
    default_max_new_tokens = 128
    known_options = _OPTIONS

    def __init__(
        self, seed: int = 0, n_train: int | None = None, n_eval: int | None = None, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(seed, n_train, n_eval, *args, **kwargs)  # checks known_options
        opts = self.options
        self.reward_kind = self._choice("reward", REWARDS)
        self.prompt_format = self._choice("prompt", PROMPTS)
        self.distribution = self._choice("distribution", DISTRIBUTIONS)
        self.split_rule = self._choice("split", SPLIT_RULES)
        defaults = RANGES[self.distribution]
        try:
            cfg = {k: int(d if opts.get(k) is None else opts[k]) for k, d in defaults.items()}
        except (TypeError, ValueError) as exc:
            raise TaskError(f"countdown: options {sorted(defaults)} must be integers ({exc})") from exc
        if not 2 <= cfg["min_numbers"] <= cfg["max_numbers"] <= 6:
            raise TaskError(f"countdown: need 2 <= min_numbers <= max_numbers <= 6, got {cfg}")
        if not 0 <= cfg["min_value"] <= cfg["max_value"] <= 999_999:
            raise TaskError(f"countdown: need 0 <= min_value <= max_value <= 999999, got {cfg}")
        if not cfg["min_target"] <= cfg["max_target"]:
            raise TaskError(f"countdown: need min_target <= max_target, got {cfg}")
        self.cfg = cfg
        if self.prompt_format != "evotune":
            self.prompt_style = self._reference_style(self.prompt_style)

    def _choice(self, key: str, allowed: tuple[str, ...]) -> str:
        got = self.options.get(key) or allowed[0]
        if got not in allowed:
            raise TaskError(f"countdown: {key} must be one of {', '.join(allowed)}, got {got!r}")
        return str(got)

    def _reference_style(self, style: PromptStyle) -> PromptStyle:
        """The reference layouts fix the system text and the response prefix; refuse a conflicting one."""
        if style.system_prompt not in (None, REFERENCE_SYSTEM) or style.response_prefix not in (
            "",
            REFERENCE_PREFIX,
        ):
            raise TaskError(
                f"countdown: prompt={self.prompt_format} writes the reference's own system text and response "
                "prefix; drop system_prompt/response_prefix, or use prompt=evotune to set your own"
            )
        if self.prompt_format == "reference_chat" and not style.chat_template:
            raise TaskError(
                "countdown: prompt=reference_chat needs the chat template; prompt=reference is the raw layout"
            )
        return replace(
            style, chat_template=True, system_prompt=REFERENCE_SYSTEM, response_prefix=REFERENCE_PREFIX
        )

    # -- prompting --------------------------------------------------------------------------
    def prompt_text(self, numbers: list[int] | tuple[int, ...], target: int | str) -> str:
        """The user text for an item in this task's prompt format."""
        if self.prompt_format == "reference":
            return reference_user_text(numpy_style(numbers), str(target))
        if self.prompt_format == "reference_chat":
            return reference_user_text(str(list(numbers)), str(target))
        return (
            f"Using the numbers {list(numbers)}, create an equation that equals {target}. "
            "You can use basic arithmetic operations (+, -, *, /) and parentheses, and each number "
            "must be used exactly once. Show your reasoning in <think> </think> tags. Then give only "
            "the final expression (without '=' or the result) in <answer> </answer> tags, "
            "for example <answer> (1 + 2) / 3 </answer>."
        )

    def render(self, example: Example, tokenizer: Any) -> str:
        """`prompt=reference` is the raw context, no chat template: system sentence, user text, prefix."""
        if self.prompt_format == "reference":
            return REFERENCE_SYSTEM + example.prompt + REFERENCE_PREFIX
        return super().render(example, tokenizer)

    def _item(
        self, id: str, numbers: list[int], target: Value, target_text: str, meta: dict[str, Any]
    ) -> Example:
        return Example(
            id=id,
            prompt=self.prompt_text(numbers, target_text),
            answer={"numbers": tuple(numbers), "target": target},
            meta={"target_text": target_text, **meta},
        )

    # -- data -------------------------------------------------------------------------------
    def _random_instance(self, rng: random.Random) -> tuple[list[int], int, str | None] | None:
        """Numbers, an integer target in range and (for `reference`) a solution, or None to retry.

        `reference`: the target is drawn first, evenly over its range, then numbers until some
        expression over them reaches it — so targets are spread as in the reference data.
        `wide`: the value of a random expression tree over random numbers, kept when in range.
        """
        c = self.cfg
        k = rng.randint(c["min_numbers"], c["max_numbers"])
        if self.distribution == "reference":
            target = rng.randint(c["min_target"], c["max_target"])
            for _ in range(100):
                numbers = [rng.randint(c["min_value"], c["max_value"]) for _ in range(k)]
                if solvable(numbers, target):
                    return numbers, target, solve(numbers, target)
            return None
        numbers = [rng.randint(c["min_value"], c["max_value"]) for _ in range(k)]
        for _ in range(20):
            items: list[Value] = list(numbers)
            while len(items) > 1:
                a = items.pop(rng.randrange(len(items)))
                b = items.pop(rng.randrange(len(items)))
                items.append(rng.choice(_results(a, b))[0])
            value = items[0]
            if isinstance(value, int) and c["min_target"] <= value <= c["max_target"]:
                return numbers, value, None
        return None

    def _generate(self, stream: str, n: int, exclude: set[str]) -> list[Example]:
        rng = random.Random(stable_int("countdown", self.seed, stream, self.distribution))

        def draw(id: str, k: int) -> Example | None:
            inst = self._random_instance(rng)
            if inst is None:
                return None
            numbers, target, solution = inst
            solution = solution or solve(numbers, target)
            if solution is None or not check_answer(solution, numbers, target):
                raise AssertionError(f"generated unsolvable countdown instance {numbers} -> {target}")
            return self._item(id, numbers, target, str(target), {"solution": solution})

        return self.draw_distinct(
            stream, n, exclude, draw, max_attempts=100 * n + 1000, what=f"solvable instances with {self.cfg}"
        )

    def load(self, path: str | Path) -> list[Example]:
        """Items of a data file: rows {numbers (or nums): [int], target: number or decimal string, id?, ...}."""
        p = Path(path)

        def convert(row: dict[str, Any], pos: int) -> Example:
            numbers = row_value(row, NUMBER_FIELDS)
            if (
                not isinstance(numbers, list | tuple)
                or len(numbers) < 2
                or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in numbers)
            ):
                raise ValueError(
                    f"'numbers' must be a list of two or more non-negative integers, got {numbers!r:.40}"
                )
            target, text = parse_target(row_value(row, TARGET_FIELDS))
            meta = {"source": str(p), "row": pos, "solution": row.get("solution")}
            return self._item(row_id(row, p, pos), list(numbers), target, text, meta)

        required = {"numbers": NUMBER_FIELDS, "target": TARGET_FIELDS}
        hint = "; the reference data: " + REFERENCE_DATA_URL if p.name == "countdown.json" else ""
        records = read_records(p, "countdown", hint)
        items = convert_rows("countdown", p, records, required, convert)
        check_unique("countdown", p, items, records[1])
        return items

    def build(self) -> tuple[list[Example], list[Example]]:
        """From `data` under the split rule, or generated: eval and train from separate seeded streams.

        Generated: the eval set depends only on (seed, n_eval, options) — runs with different n_train
        are evaluated on the same items — and train skips every eval prompt, so the splits are
        disjoint by construction (and checked).
        """
        if (splits := file_splits(self)) is not None:
            return splits
        ev = self._generate("eval", self.n_eval, set())
        tr = self._generate("train", self.n_train, {e.prompt for e in ev})
        assert not ({e.prompt for e in tr} & {e.prompt for e in ev}), "countdown splits overlap"
        return tr, ev

    # -- reward -----------------------------------------------------------------------------
    def answer_error(self, answer: Any) -> str | None:
        if not isinstance(answer, dict) or "numbers" not in answer or "target" not in answer:
            return f"the answer must be {{'numbers': (ints...), 'target': number}}, got {answer!r:.60}"
        numbers, target = answer["numbers"], answer["target"]
        if not isinstance(numbers, list | tuple) or any(
            isinstance(n, bool) or not isinstance(n, int) for n in numbers
        ):
            return f"answer['numbers'] must be a tuple of integers, got {numbers!r:.60}"
        if isinstance(target, bool) or not isinstance(target, int | float | Fraction):
            return f"answer['target'] must be a number (int, float or Fraction), got {type(target).__name__} {target!r:.40}"
        return None

    def reward(self, completion: str, example: Example) -> Reward:
        numbers, target = example.answer["numbers"], example.answer["target"]
        if self.reward_kind == "reference":
            fmt = reference_format(completion)
            ans = reference_answer(completion, numbers, target)
            return Reward(
                score=fmt * 0.1 + ans, components={"format": fmt * 0.1, "answer": ans}, correct=ans == 1.0
            )
        text = self._model_text(completion)
        fmt = 0.1 if has_format(text) else 0.0
        answers = extract_answers(text)
        ok = bool(answers) and check_answer(answers[-1], numbers, target)
        ans = 1.0 if ok else 0.0
        return Reward(score=fmt + ans, components={"format": fmt, "answer": ans}, correct=ok)

    def _model_text(self, text: str) -> str:
        """Drop a response prefix's words before its `<think>` (the reference's "Let me solve…"): they
        are the prompt's, so the strict layout check starts at the think block the prompt opened."""
        prefix = self.prompt_style.response_prefix
        cut = prefix.rfind(_THINK_OPEN)
        if cut > 0 and text.startswith(prefix):
            return text[cut:]
        return text

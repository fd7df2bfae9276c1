"""Answer extraction shared by the `\\boxed{}` tasks (math, chemistry, boolq) and their local-file variants.

Everything here is a linear scan or an anchored regex over bounded text, so a 100 KB adversarial
completion cannot make a reward slow, and nothing ever evaluates model output as code.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from evotune.errors import TaskError
from evotune.tasks.base import Example, Task
from evotune.tasks.jsonl_task import JsonlTask, parse_number

_BOX = "\\boxed"
_MAX_NUMBER_TEXT = 200
# `\text{...}`-style wrappers a model may put around an answer inside the box.
_WRAPPER_RE = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|textrm)\s*\{(?P<body>[^{}]*)\}$")
# Trailing unit words after a number ("1000 dollars", "12 km", "7 years old").
_UNIT_RE = re.compile(r"^(?P<num>.*?\d)\s*(?:[A-Za-z][A-Za-z./]*)(?:\s+[A-Za-z][A-Za-z./]*){0,2}$")


def extract_boxed(text: str) -> list[str]:
    """Contents of every complete `\\boxed{...}` in `text`, left to right, braces balanced.

    `\\boxed 42` (no braces) and an unclosed `\\boxed{42` are not answers. A box nested inside another
    box's content is part of the outer content (MATH's convention), not a separate answer.
    """
    out: list[str] = []
    pos = 0
    n = len(text)
    while True:
        s = text.find(_BOX, pos)
        if s < 0:
            return out
        i = s + len(_BOX)
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != "{":
            pos = s + len(_BOX)
            continue
        depth, j = 0, i
        while j < n:
            c = text[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        if depth != 0:  # unclosed: nothing after it can close it either
            return out
        out.append(text[i + 1 : j])
        pos = j + 1


def unwrap(content: str) -> str:
    """Strip whitespace and one `\\text{...}`-style wrapper: `\\boxed{\\text{yes}}` -> `yes`."""
    s = content.strip()
    m = _WRAPPER_RE.match(s)
    return m.group("body").strip() if m else s


def normalize_number_text(content: str) -> str:
    """Remove the decorations a correct integer answer may carry: `\\$`, `{,}`, `\\%`, unit words."""
    s = unwrap(content)
    s = s.replace("{,}", ",").replace("\\$", "$").replace("\\%", "%").replace("\\!", "")
    s = s.strip().rstrip(".").strip()
    if s.endswith("%"):
        s = s[:-1].strip()
    m = _UNIT_RE.match(s)
    if m:
        s = m.group("num").strip()
    return s


def parse_value(content: str) -> float | None:
    """The number a box holds: "1,000", "1000.0", "$1000", "1000 dollars", "\\$1{,}000"; else None.

    Anything that is not a single number ("10 or 12", "4 2", "x = 4", "1e3") gives None.
    """
    if len(content) > _MAX_NUMBER_TEXT:
        return None
    return parse_number(normalize_number_text(content))


def parse_integer(content: str) -> int | None:
    """`parse_value` restricted to integral values ("1000.5" gives None)."""
    value = parse_value(content)
    if value is None or value != int(value):
        return None
    return int(value)


def single_choice(text: str, allowed: Callable[[str], str | None]) -> str | None:
    """The one answer all `\\boxed{}` in `text` agree on, or None.

    `allowed` maps a box's content to a canonical answer or None. Any box that is not an allowed
    answer, or two boxes with different answers, make the whole completion unanswered — so hedging
    with several boxes, or a stray letter elsewhere in the text, never earns credit.
    """
    boxes = extract_boxed(text)
    if not boxes:
        return None
    found = {allowed(b) for b in boxes}
    if len(found) != 1 or None in found:
        return None
    return found.pop()


# -- mathematical equivalence (math-verify) ---------------------------------------------------------
#
# `\dfrac{1}{2}`, `0.5` and `\frac12` are one answer; comparing text calls two of them wrong. Hugging
# Face's math-verify parses LaTeX into sympy and compares values, sets, intervals and equations. It is
# called with its own timeouts off (they use SIGALRM, which would cancel `Task.score`'s reward timer,
# and fail outside the main thread), so anything that could make sympy slow is refused first: sympy
# evaluates `9^{9^{9}}` exactly (forever), expands `(x+1)^{999}` (seconds), and its parser is
# exponential in nesting depth. Real final answers are short and shallow; the screen below admits them.
MV_MAX_LENGTH = 100
MV_MAX_DEPTH = 6
MV_MAX_EXPONENT = (
    999  # per exponent, and at most this much for all of them multiplied (with variables: 20 each)
)
MV_COMMANDS = frozenset(
    [
        "frac",
        "dfrac",
        "tfrac",
        "sqrt",
        "cdot",
        "times",
        "div",
        "pm",
        "mp",
        "pi",
        "infty",
        "left",
        "right",
        "text",
        "textbf",
        "textrm",
        "mathrm",
        "mathbf",
        "circ",
        "degree",
        "le",
        "leq",
        "ge",
        "geq",
        "ne",
        "neq",
        "approx",
        "cup",
        "cap",
        "in",
        "emptyset",
        "varnothing",
        "sin",
        "cos",
        "tan",
        "sec",
        "csc",
        "cot",
        "log",
        "ln",
        "alpha",
        "beta",
        "gamma",
        "delta",
        "theta",
        "lambda",
        "mu",
        "sigma",
        "phi",
        "omega",
        "dots",
        "ldots",
        "cdots",
        "quad",
        "qquad",
        "displaystyle",
    ]
)
_COMMAND_RE = re.compile(r"\\([A-Za-z]+)")
_TEXT_RE = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf)\s*\{[^{}]*\}")


def _exponents(s: str) -> list[str] | None:
    """The text of every exponent in `s` (a braced group or one token); None if one is unclosed."""
    out: list[str] = []
    i = s.find("^")
    while i >= 0:
        j = i + 1
        while j < len(s) and s[j] == " ":
            j += 1
        if j < len(s) and s[j] == "{":
            depth, k = 0, j
            while k < len(s):
                depth += {"{": 1, "}": -1}.get(s[k], 0)
                if depth == 0:
                    break
                k += 1
            if depth:
                return None
            out.append(s[j + 1 : k])
        else:
            m = re.match(r"\\[A-Za-z]+|\d+|.", s[j:])
            out.append(m.group(0) if m else "")
        i = s.find("^", j)
    return out


def safe_for_math_verify(content: str) -> bool:
    """Whether math-verify can judge `content` quickly (see the comment above): short, shallow, known
    LaTeX commands only, no factorials/sums/binomials, no exponent towers or huge exponents."""
    s = content.strip().replace("\\!", "")
    if not s or len(s) > MV_MAX_LENGTH or "!" in s:
        return False
    depth = 0
    for c in s:
        depth += 1 if c in "([{" else -1 if c in ")]}" else 0
        if depth > MV_MAX_DEPTH:
            return False
    if any(cmd not in MV_COMMANDS for cmd in _COMMAND_RE.findall(s)):
        return False
    exps = _exponents(s)
    if exps is None:
        return False
    symbolic = re.search(r"[A-Za-z]", _COMMAND_RE.sub("", _TEXT_RE.sub("", s))) is not None
    cap = 20 if symbolic else MV_MAX_EXPONENT
    total = 1
    for e in exps:
        if "^" in e:
            return False
        runs = [int(r) for r in re.findall(r"\d+", e) if len(r) <= 3] if not re.search(r"\d{4}", e) else None
        if runs is None:
            return False
        big = max(runs, default=1)
        if big > cap:
            return False
        total *= max(big, 1)
        if total > MV_MAX_EXPONENT:
            return False
    return True


def _quiet_math_verify() -> Any:
    import math_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns once that its timeouts are off
    return math_verify


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> Any:
    mv = _quiet_math_verify()
    return mv.parse("\\boxed{" + gold + "}", parsing_timeout=None)


def equivalent(gold: str, content: str) -> bool:
    """Whether the box content `content` is mathematically the answer `gold` (both LaTeX or plain).

    False when either does not parse or `content` fails `safe_for_math_verify`.
    """
    if not safe_for_math_verify(content):
        return False
    mv = _quiet_math_verify()
    target = _parse_gold(gold)
    if not target:
        return False
    pred = mv.parse("\\boxed{" + content + "}", parsing_timeout=None)
    if not pred:
        return False
    try:
        return bool(mv.verify(target, pred, timeout_seconds=None))
    except Exception:  # a sympy failure on odd input is a non-match, not a crashed run
        return False


# -- local-file variants ------------------------------------------------------------------------


def local_splits(
    task: Task,
    n_train_given: int | None,
    n_eval_given: int | None,
    convert: Callable[[Any], Any],
) -> tuple[list[Example], list[Example]]:
    """Train/eval examples from the task's `data` (and `eval_data`) files, with `jsonl`'s loader.

    Rows are {prompt, answer, id?}; `jsonl` validates them and reports every malformed row with its
    line number. `convert` turns each answer into what the task's reward expects and raises
    ValueError for one it cannot grade; those are reported the same way, all at once.
    """
    opts: dict[str, Any] = {"data": task.options["data"], "reward": "exact"}
    if task.options.get("eval_data"):
        opts["eval_data"] = task.options["eval_data"]
    inner = JsonlTask(task.seed, n_train_given, n_eval_given, **opts)
    inner.name = task.name  # its errors name the task the user chose
    tr, ev = inner.build()
    errors: list[str] = []

    def conv(items: list[Example]) -> list[Example]:
        out = []
        for e in items:
            try:
                answer = convert(e.answer)
            except ValueError as exc:
                errors.append(f"{e.meta.get('source', '?')} row {e.meta.get('row', '?')}: {exc}")
                continue
            out.append(Example(id=e.id, prompt=e.prompt, answer=answer, meta={**e.meta, "local": True}))
        return out

    tr, ev = conv(tr), conv(ev)
    if errors:
        shown = "; ".join(errors[:10])
        more = f"; ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise TaskError(f"{task.name}: {len(errors)} row(s) with answers it cannot grade: {shown}{more} — fix or remove them")
    task.n_train, task.n_eval = len(tr), len(ev)
    return tr, ev


class SuiteTask(Task):
    """Shared shape of the suite tasks (math, chemistry, boolq): a generator, or the user's own file.

    Subclasses set `known_options` (checked by `Task`), `system` and `convert_answer` (a local row's answer → what the
    reward expects, ValueError if it cannot be graded) and implement `generate_splits`.
    """

    known_options: tuple[str, ...] = ("data", "eval_data")
    system: str | None = None
    convert_answer: Callable[[Any], Any]  # a staticmethod in each subclass
    generate_splits: Callable[[], tuple[list[Example], list[Example]]]  # a method in each subclass

    def __init__(
        self, seed: int = 0, n_train: int | None = None, n_eval: int | None = None, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(seed, n_train, n_eval, *args, **kwargs)  # checks known_options
        if self.options.get("data") and not Path(self.options["data"]).exists():
            raise TaskError(f"{self.name}: data file {self.options['data']!r} not found")

    def system_prompt(self) -> str | None:
        return self.system

    def build(self) -> tuple[list[Example], list[Example]]:
        if self.options.get("data"):
            return local_splits(self, *self._given, convert=self.convert_answer)
        return self.generate_splits()

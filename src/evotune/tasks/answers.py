"""Answer extraction shared by the `\\boxed{}` tasks (math, chemistry, boolq) and their local-file variants.

Everything here is a linear scan or an anchored regex over bounded text, so a 100 KB adversarial
completion cannot make a reward slow, and nothing ever evaluates model output as code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evotune.tasks.base import Example, Task, TaskError
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
        shown = "\n  ".join(errors[:10])
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise TaskError(f"{task.name}: {len(errors)} row(s) with answers it cannot grade:\n  {shown}{more}")
    task.n_train, task.n_eval = len(tr), len(ev)
    return tr, ev


def check_options(task: Task, known: tuple[str, ...]) -> None:
    """Reject unknown options (and `reward`: these tasks always keep their own reward)."""
    unknown = sorted(k for k, v in task.options.items() if k not in known and v is not None)
    if unknown:
        hint = " (these tasks keep their own reward)" if "reward" in unknown else ""
        raise TaskError(f"{task.name}: unknown option(s) {unknown}{hint}; known: {list(known)}")
    if task.options.get("eval_data") and not task.options.get("data"):
        raise TaskError(f"{task.name}: eval_data needs data as well")
    if task.options.get("data") and not Path(task.options["data"]).exists():
        raise TaskError(f"{task.name}: data file {task.options['data']!r} not found")


class SuiteTask(Task):
    """Shared shape of the suite tasks (math, chemistry, boolq): a generator, or the user's own file.

    Subclasses set `known_options`, `system` and `convert_answer` (a local row's answer → what the
    reward expects, ValueError if it cannot be graded) and implement `generate_splits`.
    """

    known_options: tuple[str, ...] = ("data", "eval_data")
    system: str | None = None
    convert_answer: Callable[[Any], Any]  # a staticmethod in each subclass
    generate_splits: Callable[[], tuple[list[Example], list[Example]]]  # a method in each subclass

    def __init__(
        self, seed: int = 0, n_train: int | None = None, n_eval: int | None = None, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(seed, n_train, n_eval, *args, **kwargs)
        self._given = (n_train, n_eval)  # a local file's own size wins unless the user gave one
        check_options(self, self.known_options)

    def system_prompt(self) -> str | None:
        return self.system

    def build(self) -> tuple[list[Example], list[Example]]:
        if self.options.get("data"):
            return local_splits(self, *self._given, convert=self.convert_answer)
        return self.generate_splits()


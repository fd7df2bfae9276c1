"""A task from the user's own data: JSON lines, a JSON array, Parquet, or a `datasets.save_to_disk` directory.

Each row is {"prompt": str, "answer": str | number, "id"?: str | int}; `question` or `problem` may
stand for `prompt`. All rows are validated at load time and every problem is reported at once with
its line or row number, so a bad file fails before a long run starts rather than in the middle of one.
"""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path
from typing import Any

from evotune.errors import TaskError
from evotune.tasks.base import Example, Reward, Task, disjoint_split, register_task
from evotune.tasks.records import check_unique, convert_rows, read_records, row_id, value

REWARD_KINDS = ("exact", "numeric", "contains", "regex")
# Field names accepted for each role, first match wins (published data sets use `question`/`problem`).
PROMPT_FIELDS = ("prompt", "question", "problem")
ANSWER_FIELDS = ("answer",)
_OPTIONS = ("data", "eval_data", "reward")
_MAX_PATTERN_LENGTH = 1000
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"
_TRAILING = ".!,;:?"

# The last number in free text: optional sign (not a binary minus after a digit or ')'),
# optional '$', thousands separators, decimals.
_NUMBER_RE = re.compile(
    r"(?:(?<![\w)])(?P<sign>[-\u2212])\s*)?\$?\s*(?<![\d.,])(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
)


def normalize_text(text: str) -> str:
    """Lowercase, NFKC, collapsed whitespace, no trailing `.!,;:?` and no surrounding quotes.

    Shared by the exact/contains rewards and conciseness correctness so "Paris." == "paris".
    """
    s = " ".join(unicodedata.normalize("NFKC", str(text)).lower().split())
    while True:
        t = s.strip().rstrip(_TRAILING).strip().strip(_QUOTES)
        if t == s:
            return s
        s = t


def parse_number(text: str) -> float | None:
    """A number written as text ("1,000", "$1000", "-3.5", "1000.0"), or None."""
    return _matched_number(_NUMBER_RE.fullmatch(str(text).strip()))


def last_number(text: str) -> float | None:
    """The last number appearing in `text`, or None if there is none."""
    last = None
    for last in _NUMBER_RE.finditer(text):  # noqa: B007  (only the final match is wanted)
        pass
    return _matched_number(last)


def _matched_number(m: re.Match[str] | None) -> float | None:
    """The value of a `_NUMBER_RE` match; None for no match or a value past float range (400 nines is not
    "infinity", and inf would match every huge guess)."""
    if m is None:
        return None
    value = float(m.group("num").replace(",", ""))
    if not math.isfinite(value):
        return None
    return -value if m.group("sign") else value


def _star_height(tree: Any) -> int:
    """Nesting depth of unbounded/large repeats in a parsed regex (2+ means backtracking blow-up)."""
    try:
        from re import _constants as c  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover  (Python < 3.11)
        import sre_constants as c  # type: ignore[no-redef]
    best = 0
    for op, av in tree:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            lo, hi, sub = av
            inner = _star_height(sub)
            best = max(best, inner + (1 if hi == c.MAXREPEAT or hi > 1 else 0))
        elif op == c.SUBPATTERN:
            best = max(best, _star_height(av[-1]))
        elif op == c.BRANCH:
            best = max([best] + [_star_height(alt) for alt in av[1]])
        elif op in (c.ASSERT, c.ASSERT_NOT):
            best = max(best, _star_height(av[1]))
        elif op == c.GROUPREF_EXISTS:
            best = max([best] + [_star_height(x) for x in av[1:] if x is not None])
    return best


def compile_answer_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a regex answer, refusing patterns prone to catastrophic backtracking.

    Python's `re` has no timeout, so a nested quantifier such as `(a+)+$` can stall a run on one
    completion. Nested repeats are rejected up front (a heuristic guard: overlapping alternations
    under one repeat are not detected).
    """
    if len(pattern) > _MAX_PATTERN_LENGTH:
        raise ValueError(f"regex longer than {_MAX_PATTERN_LENGTH} characters")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex: {exc}") from exc
    try:
        from re import _parser as sre_parse  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover
        import sre_parse  # type: ignore[no-redef]
    if _star_height(sre_parse.parse(pattern)) > 1:
        raise ValueError("regex has nested repeats (e.g. '(a+)+'), which can backtrack catastrophically")
    return compiled


@register_task("jsonl")
class JsonlTask(Task):
    """Rows from `data` (and optionally `eval_data`); `reward` is exact | numeric | contains | regex."""

    known_options = _OPTIONS

    def __init__(
        self, seed: int = 0, n_train: int | None = None, n_eval: int | None = None, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(seed, n_train, n_eval, *args, **kwargs)  # checks known_options
        if not self.options.get("data"):
            raise TaskError(
                "jsonl: no data file; pass --data PATH (.jsonl, .parquet or a save_to_disk directory)"
            )
        self.data_path = Path(self.options["data"])
        eval_data = self.options.get("eval_data")
        self.eval_path = Path(eval_data) if eval_data else None
        self.reward_kind = self.options.get("reward") or "exact"
        if self.reward_kind not in REWARD_KINDS:
            raise TaskError(
                f"jsonl: reward must be one of {', '.join(REWARD_KINDS)}, got {self.reward_kind!r}"
            )
        self._patterns: dict[str, re.Pattern[str]] = {}

    # -- data -------------------------------------------------------------------------------
    def load(self, path: Path) -> list[Example]:
        """Validated examples of one file; raises one TaskError naming up to 10 bad rows."""
        examples = convert_rows(
            self.name,
            path,
            read_records(path, self.name),
            {"prompt": PROMPT_FIELDS, "answer": ANSWER_FIELDS},
            lambda row, pos: self._example(row, path, pos),
        )
        check_unique(self.name, path, examples, "row")
        return examples

    def _example(self, row: dict[str, Any], path: Path, pos: int) -> Example:
        prompt, answer = value(row, PROMPT_FIELDS), value(row, ANSWER_FIELDS)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("'prompt' must be a non-empty string")
        is_number = isinstance(answer, int | float) and not isinstance(answer, bool)
        if not (isinstance(answer, str) or is_number):
            raise ValueError(f"'answer' must be a string or a number, got {type(answer).__name__}")
        if is_number and not (abs(answer) < 1e308 and math.isfinite(answer)):  # an int too big for a float too
            raise ValueError("'answer' must be a finite number within float range (|x| < 1e308)")
        if self.reward_kind == "numeric" and not is_number and parse_number(answer) is None:
            raise ValueError(f"'answer' {answer!r} is not a number (reward=numeric)")
        if self.reward_kind in ("exact", "contains") and not normalize_text(str(answer)):
            raise ValueError("'answer' is empty after normalisation")
        if self.reward_kind == "regex":
            if not isinstance(answer, str):
                raise ValueError("'answer' must be a regex string (reward=regex)")
            if answer not in self._patterns:
                self._patterns[answer] = compile_answer_pattern(answer)
        return Example(
            id=row_id(row, path, pos), prompt=prompt, answer=answer, meta={"source": str(path), "row": pos}
        )

    def build(self) -> tuple[list[Example], list[Example]]:
        train_rows = self.load(self.data_path)
        if self.eval_path is None:
            n_unique = len({e.prompt for e in train_rows})
            n_eval = self._given[1] if self._given[1] is not None else max(1, round(0.2 * n_unique))
            n_train = self._given[0] if self._given[0] is not None else max(0, n_unique - n_eval)
            tr, ev = disjoint_split(train_rows, n_train, n_eval, self.seed)
        else:
            tr, ev = self._split_two_files(train_rows)
        self.n_train, self.n_eval = len(tr), len(ev)  # the resolved sizes, for logs and reports
        return tr, ev

    def _split_two_files(self, train_rows: list[Example]) -> tuple[list[Example], list[Example]]:
        assert self.eval_path is not None
        eval_rows = self.load(self.eval_path)
        overlap = {e.prompt for e in train_rows} & {e.prompt for e in eval_rows}
        if overlap:
            raise TaskError(
                f"jsonl: {len(overlap)} prompt(s) appear in both {self.data_path} and {self.eval_path}, "
                f"e.g. {next(iter(overlap))[:80]!r}"
            )
        n_tr = self._given[0] if self._given[0] is not None else len({e.prompt for e in train_rows})
        n_ev = self._given[1] if self._given[1] is not None else len({e.prompt for e in eval_rows})
        tr, _ = disjoint_split(train_rows, n_tr, 0, self.seed)
        _, ev = disjoint_split(eval_rows, 0, n_ev, self.seed)
        return tr, ev

    # -- reward -----------------------------------------------------------------------------
    def reward(self, completion: str, example: Example) -> Reward:
        ok = self.matches(completion, example.answer)
        score = 1.0 if ok else 0.0
        return Reward(score=score, components={"answer": score}, correct=ok)

    def matches(self, completion: str, answer: str | int | float) -> bool:
        """Whether `completion` earns the answer under this task's reward kind."""
        kind = self.reward_kind
        if kind == "exact":
            return normalize_text(completion) == normalize_text(str(answer))
        if kind == "contains":
            return normalize_text(str(answer)) in normalize_text(completion)
        if kind == "numeric":
            got = last_number(completion)
            want = float(answer) if not isinstance(answer, str) else parse_number(answer)
            return got is not None and want is not None and abs(got - want) <= 1e-6 * max(1.0, abs(want))
        pattern = self._patterns.get(answer) or compile_answer_pattern(answer)
        self._patterns[answer] = pattern
        return pattern.search(completion) is not None

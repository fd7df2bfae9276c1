"""Reading a task's own data file: JSON lines, a JSON array, Parquet or a `datasets` directory.

Published data comes in several shapes — the countdown reference data is one JSON array, the
conciseness data is JSON lines with `question` where evotune says `prompt` — so every task that takes
`data=PATH` reads it here, maps field names the same way, splits it the same way, and reports a bad
file in one line that names the file, the line or row, and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from evotune.errors import TaskError
from evotune.tasks.base import Example, disjoint_split, text_problem

SPLIT_RULES = ("seeded", "reference")
_MAX_REPORTED = 10
# Rows nested deeper than any data set needs are refused as they are read (text limits: base.text_problem).
MAX_DEPTH = 32

T = TypeVar("T")


def _decode(path: Path, data: bytes, task: str) -> str:
    """UTF-8 text (a BOM is allowed); otherwise one error naming the line of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TaskError(
            f"{task}: {path} line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "re-save the file as UTF-8"
        ) from None


Rows = tuple[list[tuple[int, Any]], str, list[str]]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (write null or a finite number)")


def parse_json(text: str) -> Any:
    """Strict `json.loads`: NaN/Infinity literals are refused; any failure is a ValueError with one line.

    Python's parser also raises RecursionError (nesting past the interpreter's limit) and a plain
    ValueError (integers longer than 4300 digits); both become ValueErrors that say what is wrong.
    """
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise ValueError("invalid JSON (nested too deeply to parse)") from None
    except ValueError as exc:  # int too long for int(), or a refused NaN literal
        raise ValueError(f"invalid JSON ({str(exc).splitlines()[0][:160]})") from None


def value_problem(value: Any, depth: int = 0) -> str | None:
    """Why a parsed row cannot be used as text data (nesting, lone surrogates, size), or None.

    A lone surrogate (`"\\ud800"`) is valid JSON but not Unicode: it loads, then crashes the
    tokenizer mid-run or writing a results file, so it is refused here, where the data enters.
    """
    if depth > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, dict):
        items: Any = [x for kv in value.items() for x in kv]
    elif isinstance(value, list | tuple):
        items = value
    else:
        return None
    for v in items:
        if (problem := value_problem(v, depth + 1)) is not None:
            return problem
    return None


def read_records(path: str | Path, task: str, hint: str = "") -> Rows:
    """(position, raw row) pairs of a data file, the word for a position, and JSON-lines syntax errors.

    A file whose text starts with `[` is read as one JSON array (positions are 1-based rows);
    otherwise as JSON lines (positions are line numbers, blank lines skipped; a line that is not
    JSON is returned as an error so it is reported with the other bad rows). `.parquet` files and
    `datasets.save_to_disk` directories are read with their libraries. Unreadable bytes, a broken
    JSON array and a missing file raise one `TaskError` naming the file and position.
    """
    p = Path(path)
    if not p.exists():
        raise TaskError(
            f"{task}: data file {str(p)!r} not found; check the path (relative to {Path.cwd()}){hint}"
        )
    if p.is_dir():
        return _checked(_read_dataset_dir(p, task), "row")
    if not p.is_file():  # a FIFO or device would block or never end
        raise TaskError(f"{task}: data file {str(p)!r} is not a regular file (a pipe or device?); give a file")
    if p.suffix.lower() == ".parquet":
        return _checked(_read_parquet(p, task), "row")
    text = _decode(p, p.read_bytes(), task)
    if text.lstrip()[:1] == "[":
        try:
            rows = parse_json(text)
        except ValueError as exc:
            first = text.lstrip().split("\n", 1)[0]
            if not _parses(first) or len(text.strip().splitlines()) < 2:
                raise TaskError(
                    f"{task}: {p} is not a valid JSON array {str(exc).removeprefix('invalid JSON ')}; "
                    "fix the JSON or write one object per line (JSON lines)"
                ) from None
        else:
            if isinstance(rows, list):
                return _checked([(i + 1, row) for i, row in enumerate(rows)], "row")
    out: list[tuple[int, Any]] = []
    errors: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((lineno, parse_json(line)))
        except ValueError as exc:
            errors.append(f"line {lineno}: {exc}")
    rows_ok, _, problems = _checked(out, "line")
    return rows_ok, "line", errors + problems


def _checked(rows: list[tuple[int, Any]], where: str) -> Rows:
    """Rows that pass `value_problem`; the others become errors naming their position."""
    ok: list[tuple[int, Any]] = []
    errors: list[str] = []
    for pos, row in rows:
        problem = value_problem(row)
        if problem is None:
            ok.append((pos, row))
        else:
            errors.append(f"{where} {pos}: {problem}")
    return ok, where, errors


def _parses(text: str) -> bool:
    try:
        parse_json(text)
    except ValueError:
        return False
    return True


def _read_dataset_dir(path: Path, task: str) -> list[tuple[int, Any]]:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover
        raise TaskError(f"{task}: {path} is a directory; loading it needs the `datasets` package") from exc
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise TaskError(f"{task}: cannot load {path} with datasets.load_from_disk: {exc}") from exc
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise TaskError(
                f"{task}: {path} holds splits {sorted(ds)}; save one split, or pass them as --data and eval_data"
            )
        ds = next(iter(ds.values()))
    return [(i + 1, row) for i, row in enumerate(ds.to_list())]


def _read_parquet(path: Path, task: str) -> list[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise TaskError(
            f"{task}: reading {path} needs pyarrow, which is not installed (pip install pyarrow)"
        ) from exc
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:
        raise TaskError(f"{task}: cannot read parquet file {path}: {exc}") from exc
    return [(i + 1, row) for i, row in enumerate(rows)]


def one_line(task: str, path: Path | str, what: str, errors: Sequence[str], todo: str) -> str:
    """`task: N what in PATH: pos: problem; pos: problem; ... and K more — todo`, on one line."""
    shown = "; ".join(errors[:_MAX_REPORTED])
    more = f"; ... and {len(errors) - _MAX_REPORTED} more" if len(errors) > _MAX_REPORTED else ""
    return f"{task}: {len(errors)} {what} in {path}: {shown}{more} — {todo}"


def field(row: dict[str, Any], names: Sequence[str]) -> tuple[str, Any] | None:
    """The first of `names` present (and not None) in `row`, with its value."""
    for name in names:
        if row.get(name) is not None:
            return name, row[name]
    return None


def value(row: dict[str, Any], names: Sequence[str]) -> Any:
    """The value of the first of `names` in `row`; ValueError naming them all if none is there."""
    found = field(row, names)
    if found is None:
        raise ValueError(f"missing {' or '.join(repr(n) for n in names)}")
    return found[1]


def convert_rows(
    task: str,
    path: Path,
    records: Rows,
    required: dict[str, Sequence[str]],
    convert: Callable[[dict[str, Any], int], T],
) -> list[T]:
    """`convert(row, position)` over every row; every problem reported at once, on one line.

    `required` maps each needed field to its accepted names (e.g. prompt: prompt, question). When
    no row has one of them, the error says so once (with the fields the file does have) rather than
    once per row. `convert` raises ValueError for a row it cannot use.
    """
    rows, where, syntax_errors = records
    dicts = [r for _, r in rows if isinstance(r, dict)]
    for role, names in required.items():
        if dicts and not any(n in r for r in dicts for n in names):
            have = sorted({k for r in dicts[:50] for k in r})
            accepted = " or ".join(repr(n) for n in names)
            raise TaskError(
                f"{task}: no {where} of {path} has a {role} field ({accepted}); its {where}s have "
                f"{', '.join(map(repr, have)) or 'no fields'} — rename the field in the file"
            )
    out: list[T] = []
    errors: list[str] = list(syntax_errors)
    for pos, row in rows:
        try:
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            for names in required.values():
                if field(row, names) is None:
                    raise ValueError(f"missing {' or '.join(repr(n) for n in names)}")
            out.append(convert(row, pos))
        except ValueError as exc:
            errors.append(f"{where} {pos}: {exc}")
    if errors:
        errors.sort(key=lambda e: int(e.split(":")[0].split()[-1]))
        raise TaskError(one_line(task, path, "malformed row(s)", errors, "fix or remove them"))
    if not out:
        raise TaskError(f"{task}: {path} has no rows")
    return out


def check_unique(task: str, path: Path | str, examples: Sequence[Example], where: str) -> None:
    """Every loader's rule: ids are unique, and a repeated prompt repeats its answer.

    Otherwise one row silently wins: the seeded split keeps one of two answers, and the hacking
    detector, which matches rows by id, compares the wrong ones.
    """
    answers: dict[str, Example] = {}
    ids: dict[str, Example] = {}
    for e in examples:
        first = answers.setdefault(e.prompt, e)
        if first.answer != e.answer:
            raise TaskError(
                f"{task}: {path} {where}s {first.meta.get('row')} and {e.meta.get('row')} have the same prompt but "
                f"different answers ({first.answer!r:.80} vs {e.answer!r:.80}); keep one answer per prompt"
            )
        other = ids.setdefault(e.id, e)
        if other is not e:
            raise TaskError(
                f"{task}: {path} {where}s {other.meta.get('row')} and {e.meta.get('row')} share the id {e.id!r:.80}; "
                "ids must be unique"
            )


def row_id(row: dict[str, Any], path: Path, pos: int) -> str:
    """The row's own `id` (a string or an integer), else `file:position`."""
    rid = row.get("id")
    if rid is None:
        return f"{path.name}:{pos}"
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise ValueError(f"'id' must be a string or an integer, got {type(rid).__name__}")
    return str(rid)


def split_examples(
    task: str,
    items: list[Example],
    eval_items: list[Example] | None,
    rule: str,
    seed: int,
    n_train: int | None,
    n_eval: int | None,
    default_train: int,
) -> tuple[list[Example], list[Example]]:
    """Train/eval lists from loaded examples under a split rule.

    `reference` keeps file order: train is the first `n_train` items (default `default_train`), eval
    the next `n_eval` (default: all the rest) — the public countdown code's rule (first 200 train,
    next 2000 test). `seeded` is `disjoint_split`: shuffled with the seed, de-duplicated, disjoint by
    construction. With a separate eval file, train comes from the first and eval from the second.
    """
    if rule not in SPLIT_RULES:
        raise TaskError(f"{task}: split must be one of {', '.join(SPLIT_RULES)}, got {rule!r}")
    if eval_items is not None:
        n_tr = len(items) if n_train is None else n_train
        n_ev = len(eval_items) if n_eval is None else n_eval
        if n_tr > len(items) or n_ev > len(eval_items):
            raise TaskError(
                f"{task}: asked for {n_tr} train + {n_ev} eval items; the files hold {len(items)} and {len(eval_items)}"
            )
        if rule == "reference":
            return items[:n_tr], eval_items[:n_ev]
        tr, _ = disjoint_split(items, n_tr, 0, seed)
        _, ev = disjoint_split(eval_items, 0, n_ev, seed)
        return tr, ev
    n = len(items) if rule == "reference" else len({e.prompt for e in items})
    n_tr = min(default_train, max(0, n - 1)) if n_train is None else n_train
    n_ev = n - n_tr if n_eval is None else n_eval
    if n_tr + n_ev > n or n_ev < 0:
        raise TaskError(
            f"{task}: asked for {n_tr} train + {n_ev} eval items but the data holds {n}"
            + (" distinct prompts" if rule == "seeded" else " rows")
        )
    if rule == "reference":
        return items[:n_tr], items[n_tr : n_tr + n_ev]
    return disjoint_split(items, n_tr, n_ev, seed)


def file_splits(task: Any) -> tuple[list[Example], list[Example]] | None:
    """A reference-style task's splits from its `data` (and `eval_data`) files; None when it has none.

    The task provides `load(path)`, `split_rule`, `_given` (the user's n_train/n_eval) and its
    defaults; the split sizes it ends up with are written back, so they report the real split.
    """
    if not task.options.get("data"):
        return None
    items = task.load(task.options["data"])
    extra = task.load(task.options["eval_data"]) if task.options.get("eval_data") else None
    tr, ev = split_examples(task.name, items, extra, task.split_rule, task.seed, *task._given, task.default_n_train)
    task.n_train, task.n_eval = len(tr), len(ev)
    return tr, ev

"""A seeded generator of hostile inputs (issue 26): text, JSON values, data files, config text, HTTP bodies.

Pure functions of (seed, index), so a failing input is reproduced by its index alone
(`python -c "import fuzz_corpus as f; print(f.data_file('jsonl', 0, 123))"`). Every generator mixes
valid inputs (the loaders must load them) with the edges: random and adversarial unicode (lone
surrogates, NUL, bidi and combining marks, astral planes), numbers (huge, 4300+ digits, NaN and
Infinity literals, -0, 1e999), nesting past the recursion limit, sizes past the limits, duplicate
and conflicting rows, truncated files and bytes that are not UTF-8.
"""

from __future__ import annotations

import json
import random
from typing import Any

ADVERSARIAL = [
    "", " ", "\x00", "\ud800", "a\udfffb", "\u202e\u2066evil", "e\u0301\u0301\u0301", "\U0001f600" * 3, "\ufeff",
    "NaN", "Infinity", "-0", "1e999", "9" * 5000, "0x1F", "١٢٣", "½", "\n\r\t", "<answer>", "</think>", "((((", "))",
    "{{", "\\", "\"", "'", "${HOME}", "%s%n", "../../etc/passwd", "\u0000\u0001\u001f", "a" * 70_000, "-", "+-+",
    "<answer>" + "(" * 500 + "1" + ")" * 500 + "</answer>", "<answer>9" + "*9" * 300 + "</answer>",
    "<answer>" + "9" * 4301 + "</answer>", "<answer>2**2**2**2**2</answer>", "\\boxed{" * 300, "yes no yes",
    "Paris.", "$1,000", "-3.5", "1/0", "H2O", "\u2212" + "5", "true", "null", "[]", "{}",
]
FIELD_NAMES = ["prompt", "question", "problem", "answer", "id", "numbers", "nums", "target", "kind", "category",
               "solution", "x", "", "\ud800", "prompt "]


def text(rng: random.Random) -> str:
    """A string: adversarial, random code points, ASCII, or a mix of them."""
    kind = rng.random()
    if kind < 0.3:
        return rng.choice(ADVERSARIAL)
    if kind < 0.55:
        n = rng.choice([1, 3, 10, 40, 200])
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x800),
                                       rng.randrange(0xD800, 0xE000), rng.randrange(0x10000, 0x110000),
                                       rng.randrange(0, 32)])) for _ in range(n))
    if kind < 0.85:
        return "".join(rng.choice("abcdefghij klmnop?.!0123456789+-*/()") for _ in range(rng.randrange(1, 60)))
    return text(rng) + rng.choice(ADVERSARIAL) + text(rng)


def number(rng: random.Random) -> Any:
    return rng.choice([0, 1, -1, 7, 24, 100, 10**18, -(10**30), 2**63, 3.5, -0.0, 1e308, 1e-308, 0.1,
                       rng.randrange(-1000, 1000), rng.random() * 1e6, True, False])


def value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON-able value (lists and objects nest a few levels)."""
    r = rng.random()
    if depth > 3 or r < 0.45:
        return text(rng)
    if r < 0.7:
        return number(rng)
    if r < 0.8:
        return None
    if r < 0.9:
        return [value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {text(rng)[:20]: value(rng, depth + 1) for _ in range(rng.randrange(0, 3))}


VALID_ROWS: dict[str, Any] = {
    "jsonl": lambda r, i: {"prompt": f"What is {i}+{r.randrange(9)}?", "answer": str(r.randrange(30))},
    "countdown": lambda r, i: {"numbers": [r.randrange(1, 20) for _ in range(r.randrange(2, 5))],
                               "target": r.randrange(1, 60)},
    "conciseness": lambda r, i: {"question": f"Question {i}: name a colour?", "answer": r.choice(["red", "blue"])},
    "math": lambda r, i: {"prompt": f"Compute {i}*{r.randrange(9)}.", "answer": str(r.randrange(80))},
    "boolq": lambda r, i: {"prompt": f"Is {i} even?", "answer": r.choice(["yes", "no", True, False])},
    "chemistry": lambda r, i: {"prompt": f"Formula {i}?", "answer": r.choice(["H2O", "CO2", "NaCl"])},
    "safety": lambda r, i: {"prompt": f"Request {i}: how do I bake bread?", "kind": r.choice(["benign", "harmful"])},
}


def _mutate(rng: random.Random, row: dict[str, Any]) -> Any:
    """A row with one thing wrong (or not): a field dropped, renamed, retyped or replaced by an edge value."""
    r = rng.random()
    row = dict(row)
    if r < 0.35:
        return row
    if r < 0.5 and row:
        row.pop(rng.choice(list(row)))
    elif r < 0.7 and row:
        row[rng.choice(list(row))] = value(rng)
    elif r < 0.8:
        row[rng.choice(FIELD_NAMES)] = value(rng)
    elif r < 0.88:
        return value(rng)  # not an object at all
    else:
        row["id"] = rng.choice(["a", 1, "a ", None, 2.5, [1], True])
    return row


def _dump(rng: random.Random, obj: Any) -> str:
    try:
        return json.dumps(obj, ensure_ascii=rng.random() < 0.5, allow_nan=True)
    except (UnicodeEncodeError, ValueError, RecursionError):
        return json.dumps(obj, ensure_ascii=True, allow_nan=True)


def data_file(task: str, seed: int, index: int) -> bytes:
    """The bytes of one data file for `task`'s loader: JSON lines or a JSON array, mostly valid rows."""
    rng = random.Random(f"{seed}-{task}-{index}")
    n = rng.choice([1, 2, 3, 5, 8])
    rows = [_mutate(rng, VALID_ROWS[task](rng, i)) for i in range(n)]
    if rng.random() < 0.15 and rows:  # duplicates and conflicts
        dup = dict(rows[0]) if isinstance(rows[0], dict) else rows[0]
        if isinstance(dup, dict) and rng.random() < 0.5:
            dup["answer"] = "conflict"
        rows.append(dup)
    array = rng.random() < 0.3
    body = ("[" + ",\n".join(_dump(rng, r) for r in rows) + "]") if array else "\n".join(_dump(rng, r) for r in rows)
    r = rng.random()
    if r < 0.05:
        body = body[: rng.randrange(len(body) + 1)]  # truncated
    elif r < 0.1:
        cut = rng.randrange(len(body) + 1)
        body = body[:cut] + rng.choice(["[" * 3000, "NaN", "-Infinity", "9" * 5000, "{", "\\ud800", "\\u0000"]) + body[cut:]
    elif r < 0.13:
        body = body + "\n" + _dump(rng, {"prompt": "x" * 1_000_001, "question": "q", "numbers": [1, 2], "target": 3})
    raw = body.encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:
        pos = rng.randrange(len(raw) + 1)
        raw = raw[:pos] + bytes([rng.choice([0xFF, 0xC3, 0x80, 0xED])]) + raw[pos:]
    return raw


CONFIG_KEYS = ["es.sigma", "es.alpha", "es.population", "es.iterations", "es.include", "es.optimizer", "task.name",
               "task.options", "model.name", "model.device", "run_dir", "seed", "budget.completions", "report_to",
               "generation.max_new_tokens", "eval.every", "es.lora.rank", "es.betas", "grpo.beta", "threads", "es",
               "nope.key", "es..x", "", ".", "es.sigma.x"]
YAML_VALUES = ["1", "0", "-1", "1e-3", ".nan", ".inf", "[1", "{a: 1}", "[1, 2]", "null", "~", "true", "yes", "'x'",
               '"\\ud800"', '"\\0"', "!!python/object:os.system x", "&a [*a]", "*b", "9" * 5000, "[" * 200, "a: b",
               "- 1", "|\n x", "\t", "", "adam", "cpu", "cuda:99", "0x10", "1_000", "2e400", "\"" + "x" * 500 + "\""]


def set_text(seed: int, index: int) -> list[str]:
    """One to three `--set KEY=VALUE` arguments."""
    rng = random.Random(f"{seed}-set-{index}")
    out = []
    for _ in range(rng.randrange(1, 4)):
        key = rng.choice(CONFIG_KEYS) if rng.random() < 0.9 else text(rng)[:20]
        val = rng.choice(YAML_VALUES) if rng.random() < 0.7 else text(rng)
        out.append(f"{key}{rng.choice(['=', '=', '=', ':', ''])}{val}")
    return out


def config_file(seed: int, index: int) -> bytes:
    """A YAML config file: nested sections with random values, sometimes broken."""
    rng = random.Random(f"{seed}-yaml-{index}")
    lines = []
    for _ in range(rng.randrange(0, 5)):
        key = rng.choice(CONFIG_KEYS).split(".")
        val = rng.choice(YAML_VALUES) if rng.random() < 0.7 else json.dumps(value(rng))
        if len(key) > 1:
            lines.append(f"{key[0]}:\n  {key[1]}: {val}")
        else:
            lines.append(f"{key[0]}: {val}")
    body = "\n".join(lines) + "\n"
    if rng.random() < 0.1:
        body = rng.choice(["- 1\n", "[", "a: 1\na: 2\n", "\t x", "{" * 3000, "key: " + "[" * 3000])
    raw = body.encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:
        raw += b"\xff"
    return raw


def http_request(seed: int, index: int) -> tuple[str, str, dict[str, str], bytes]:
    """(method, path, headers, body) for the scorer: mostly /score with valid, odd or hostile bodies."""
    rng = random.Random(f"{seed}-http-{index}")
    r = rng.random()
    method, path = "POST", "/score"
    if r < 0.05:
        method, path = "GET", "/health"
    elif r < 0.08:
        method, path = rng.choice([("GET", "/score"), ("PUT", "/score"), ("POST", "/nope"), ("DELETE", "/health")])
    headers = {"content-type": "application/json"}
    auth = rng.random()
    if auth < 0.85:
        headers["authorization"] = "Bearer fuzz-token"
    elif auth < 0.93:
        headers["authorization"] = rng.choice(["Bearer wrong", "Bearer", "Basic abc", "bearer fuzz-token"])
    n = rng.choice([0, 1, 2, 3, 8])
    items: Any = [{"prompt": text(rng)[:3000], "completion": text(rng)[:3000]} for _ in range(n)]
    q = rng.random()
    if q < 0.5:
        obj: Any = {"items": items}
    elif q < 0.7:
        obj = {"items": [_mutate(rng, it) for it in items] or [value(rng)]}
    elif q < 0.8:
        obj = value(rng)
    else:
        obj = {"items": items, rng.choice(FIELD_NAMES) or "k": value(rng)}
    body = _dump(rng, obj).encode("utf-8", "surrogatepass")
    s = rng.random()
    if s < 0.05:
        body = body[: rng.randrange(len(body) + 1)]
    elif s < 0.1:
        body = rng.choice([b"[" * 5000, b'{"items": NaN}', b"\xff\xfe", b"", b"null", b'{"items": [' + b"9" * 5000 + b"]}"])
    elif s < 0.12:
        body = b'{"items": [{"prompt": "' + b"x" * 200_000 + b'", "completion": "c"}]}'
    return method, path, headers, body


def completion(seed: int, index: int) -> str:
    """A model completion to score: plain text, the tasks' answer layouts, or the edges."""
    rng = random.Random(f"{seed}-completion-{index}")
    r = rng.random()
    if r < 0.3:
        inner = rng.choice([text(rng), str(number(rng)), " + ".join(str(rng.randrange(20)) for _ in range(3))])
        return rng.choice(["<think>x</think>\n<answer>{}</answer>", "The answer is {}.", "\\boxed{{{}}}", "{}",
                           "Answer: {}", "{} {} {}"]).format(inner, inner, inner)
    return text(rng)

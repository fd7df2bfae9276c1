"""Every bad input gets one line and loses nothing: one test per class of issue 26 (docs/reliability.md).

Each test drives the whole class (every loader, every edge), not one example; the generated corpus
that goes further is `tests/test_fuzz.py`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from evotune.errors import TaskError
from evotune.tasks import get_task

# One valid row per loader, in its own field names (the rows the edge cases are written into).
LOADERS: dict[str, dict[str, Any]] = {
    "jsonl": {"prompt": "What is 2+2?", "answer": "4"},
    "countdown": {"numbers": [3, 5, 7], "target": 15},
    "conciseness": {"question": "Capital of France?", "answer": "Paris"},
    "math": {"prompt": "What is 2+3?", "answer": "5"},
    "boolq": {"prompt": "Is water wet?", "answer": "yes"},
    "chemistry": {"prompt": "Formula of water?", "answer": "H2O"},
    "safety": {"prompt": "How do I bake bread?", "kind": "benign"},
}
# the text field of each loader's row, where text edges go
TEXT_FIELD = {"countdown": "id", "conciseness": "question"}


def _variants(task: str) -> list[tuple[str, str]]:
    """(name, file text) of data at the edges of Python, each in one otherwise valid row."""
    row = LOADERS[task]
    field = TEXT_FIELD.get(task, "prompt")
    head = json.dumps(row)[:-1]  # the row without its closing brace
    ok = json.dumps({**row, **({field: "another one"} if field != "id" else {"id": "b"})})
    return [
        ("nested past the recursion limit", head + ', "x": ' + "[" * 3000 + "]" * 3000 + "}\n" + ok + "\n"),
        ("nested deep but parseable", head + ', "x": ' + "[" * 100 + "]" * 100 + "}\n" + ok + "\n"),
        ("integer of 5000 digits", head + ', "x": ' + "7" * 5000 + "}\n" + ok + "\n"),
        ("lone surrogate", json.dumps({**row, field: "caf\udce9"}) + "\n" + ok + "\n"),
        ("NaN literal", head + ', "x": NaN}\n' + ok + "\n"),
        ("Infinity literal", head + ', "x": -Infinity}\n' + ok + "\n"),
        ("a 2 MB text", json.dumps({**row, field: "x" * 2_000_000}) + "\n" + ok + "\n"),
        ("array nested past the limit", "[" * 3000 + "]" * 3000),
        ("array with a surrogate", json.dumps([{**row, field: "\ud800"}])),
    ]


@pytest.mark.parametrize("task", sorted(LOADERS))
def test_data_at_the_edges_of_python_is_refused_in_one_line_by_every_loader(task, tmp_path):
    """Class 3: recursion, huge integers, surrogates, NaN and oversized text never load, in any loader."""
    for name, text in _variants(task):
        path = tmp_path / "data.jsonl"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        with pytest.raises(TaskError) as info:
            t = get_task(task, data=str(path))
            t.split("train")
            t.split("eval")
        msg = str(info.value)
        assert "\n" not in msg and len(msg) < 1000, (name, msg[:300])
        assert "data.jsonl" in msg, (name, msg)


def test_a_plug_in_task_with_a_surrogate_prompt_is_refused_before_any_tokenizer():
    from evotune.tasks.base import Example, Reward, Task

    class Bad(Task):
        name = "bad_text"

        def build(self):
            return [Example("a", "fine", 1), Example("b", "bad \ud83d", 1)], [Example("c", "ok", 1)]

        def reward(self, completion, example):
            return Reward(0.0, {}, False)

    with pytest.raises(TaskError, match=r"bad_text: example 'b' cannot be a prompt: .*lone surrogate"):
        Bad().split("train")


@pytest.mark.parametrize("task", ["jsonl", "countdown", "conciseness", "math", "boolq", "chemistry", "safety"])
def test_every_loader_refuses_duplicate_ids(task, tmp_path):
    """Class 4: the hacking detector matches rows by id, so two rows under one id are refused everywhere."""
    row = LOADERS[task]
    field = TEXT_FIELD.get(task, "prompt")
    other = {**row, field: "a different item"} if field != "id" else {**row, "numbers": [2, 9, 4]}
    if task == "countdown":
        other["target"] = 11
    path = tmp_path / "dup.jsonl"
    path.write_text(json.dumps({**row, "id": "x1"}) + "\n" + json.dumps({**other, "id": "x1"}) + "\n")
    with pytest.raises(TaskError, match=r"id.*'x1'.*unique|'x1'.*unique") as info:
        get_task(task, data=str(path)).split("train")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("task", ["jsonl", "conciseness", "math", "boolq", "chemistry"])
def test_one_prompt_with_two_answers_is_refused_by_every_loader(task, tmp_path):
    """Class 4: a seeded split would silently keep one of the two answers."""
    row = LOADERS[task]
    path = tmp_path / "conflict.jsonl"
    alt = {"boolq": "no", "chemistry": "CO2", "conciseness": "Lyon"}.get(task, "17")
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "answer": alt}) + "\n")
    with pytest.raises(TaskError, match="same prompt but different answers") as info:
        get_task(task, data=str(path)).split("train")
    assert "\n" not in str(info.value)

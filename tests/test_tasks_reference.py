"""The papers' own setups: reference countdown reward, prompts, data files and splits; conciseness data;
math-verify equivalence; Example type checks; one-line errors for bad data files."""

from __future__ import annotations

import json
import random
import statistics
import time
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from evotune.errors import TaskError
from evotune.tasks import Example, ExampleTypeError, PromptStyle, get_task
from evotune.tasks.answers import equivalent, safe_for_math_verify
from evotune.tasks.countdown import (
    REFERENCE_PREFIX,
    Countdown,
    numpy_style,
    reference_answer,
    reference_format,
    solvable,
)
from evotune.tasks.safe_expr import ExprError, python_value

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "countdown_reference_sample.json"
CONCISE_TRAIN = DATA / "conciseness_reference_train.jsonl"
CONCISE_EVAL = DATA / "conciseness_reference_eval.jsonl"

# -- the reference countdown reward ------------------------------------------------------------------
#
# (name, completion, format credit, answer credit) for numbers [44, 19, 35] and target "98", as the
# reference's `reward_function(completion, numbers, target)` returns them (values obtained by running
# VsonicV/es-fine-tuning-paper countdown/countdown_task.py on these exact strings).
REFERENCE_CASES: list[tuple[str, str, float, float]] = [
    ("full layout", "reasoning</think>\n<answer>44 + 19 + 35</answer>", 1.0, 1.0),
    ("no newline between blocks", "reasoning</think><answer>44 + 19 + 35</answer>", 0.6, 1.0),
    ("two newlines between blocks", "reasoning</think>\n\n<answer>44 + 19 + 35</answer>", 0.6, 1.0),
    ("model repeats <think>", "<think>reasoning</think>\n<answer>44 + 19 + 35</answer>", 1.0, 1.0),
    ("one trailing newline", "r</think>\n<answer>44 + 19 + 35</answer>\n", 1.0, 1.0),
    ("two trailing newlines", "r</think>\n<answer>44 + 19 + 35</answer>\n\n", 0.6, 1.0),
    ("text after answer", "r</think>\n<answer>44 + 19 + 35</answer> done", 0.6, 1.0),
    ("think only", "reasoning</think> the answer is 98", 0.1, 0.0),
    ("answer only, no think close", "<answer>44 + 19 + 35</answer>", 0.5, 1.0),
    ("nothing", "I cannot solve this.", 0.0, 0.0),
    ("empty", "", 0.0, 0.0),
    ("wrong value", "r</think>\n<answer>44 + 19 - 35</answer>", 1.0, 0.0),
    ("number reused", "r</think>\n<answer>44 + 44 + 10</answer>", 1.0, 0.0),
    ("number missing", "r</think>\n<answer>63 + 35</answer>", 1.0, 0.0),
    ("unary minus", "r</think>\n<answer>-(-44) + 19 + 35</answer>", 1.0, 1.0),
    ("leading zero", "r</think>\n<answer>044 + 19 + 35</answer>", 1.0, 0.0),
    ("newline at end of answer", "r</think>\n<answer>44 + 19 + 35\n</answer>", 1.0, 1.0),
    ("newline inside answer", "r</think>\n<answer>44 + 19\n+ 35</answer>", 1.0, 0.0),
    ("equals sign", "r</think>\n<answer>44 + 19 + 35 = 98</answer>", 1.0, 0.0),
    ("implicit multiplication", "r</think>\n<answer>44 + 19(35)</answer>", 1.0, 0.0),
    ("last answer counts", "r</think>\n<answer>44 + 19 + 35</answer><answer>44 - 19 + 35</answer>", 1.0, 0.0),
    ("earlier wrong, last right", "r</think>\n<answer>1</answer> <answer>44 + 19 + 35</answer>", 1.0, 1.0),
    ("empty answer", "r</think>\n<answer></answer>", 1.0, 0.0),
    ("division by zero", "r</think>\n<answer>44 / (19 - 19) + 35</answer>", 1.0, 0.0),
    ("unicode times", "r</think>\n<answer>44 + 19 × 35</answer>", 1.0, 0.0),
]


def _cd(numbers: tuple[int, ...], target: int | Fraction) -> Example:
    return Example(id="t", prompt="p", answer={"numbers": numbers, "target": target})


@pytest.mark.parametrize(
    ("name", "completion", "fmt", "ans"), REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES]
)
def test_reference_reward_matches_reference_values(
    name: str, completion: str, fmt: float, ans: float
) -> None:
    task = Countdown(n_train=1, n_eval=1)  # reward=reference is the default
    r = task.score(completion, _cd((44, 19, 35), 98))
    assert r.score == fmt * 0.1 + ans, name  # the reference's own float expression, compared exactly
    assert r.components == {"format": fmt * 0.1, "answer": ans}
    assert r.correct == (ans == 1.0)


def test_reference_reward_non_integer_targets_and_documented_differences() -> None:
    # Reference-data targets are decimal strings; the reference compares in floats within 1e-5.
    t = Countdown(n_train=1, n_eval=1)
    assert (
        t.score(
            "r</think>\n<answer>((98 / (47 - 52)) + 47)</answer>", _cd((98, 47, 47, 52), Fraction("27.4"))
        ).score
        == 1.1
    )
    assert t.score(
        "r</think>\n<answer>10 / (60 - 57) * 80</answer>",
        _cd((60, 10, 57, 80), Fraction("266.6666666666667")),
    ).correct
    # The reference's evaluator accepts `//` and `**` (it gives 1.1 to both below); evotune does not.
    assert t.score("r</think>\n<answer>7 // 2 * 3</answer>", _cd((7, 2, 3), 9)).score == 0.1
    assert t.score("r</think>\n<answer>2 ** 3 * 1</answer>", _cd((2, 3, 1), 8)).score == 0.1
    assert t.score("r</think>\n<answer>9**9**9**9 - 1 + 1</answer>", _cd((9, 9, 9, 9, 1, 1), 1)).score == 0.1


def test_reference_reward_is_the_same_with_or_without_a_response_prefix() -> None:
    """The prefix the task prepends (`<think>` or the reference's) never changes the reference score."""
    plain = Countdown(n_train=1, n_eval=1)
    think = Countdown(n_train=1, n_eval=1, prompt_style=PromptStyle(response_prefix="<think>"))
    ref = Countdown(n_train=1, n_eval=1, prompt="reference")
    for _, completion, fmt, ans in REFERENCE_CASES:
        ex = _cd((44, 19, 35), 98)
        want = fmt * 0.1 + ans
        assert (
            plain.score(completion, ex).score
            == think.score(completion, ex).score
            == ref.score(completion, ex).score
            == want
        )


def test_reference_prefix_works_with_the_strict_reward_too() -> None:
    strict = Countdown(n_train=1, n_eval=1, reward="strict", prompt="reference")
    r = strict.score("reasoning</think>\n<answer>44 + 19 + 35</answer>", _cd((44, 19, 35), 98))
    assert (r.score, r.components) == (1.1, {"format": 0.1, "answer": 1.0})
    # Strict stays strict: a second <think> written by the model breaks its layout (reference: full credit).
    r = strict.score("<think>reasoning</think>\n<answer>44 + 19 + 35</answer>", _cd((44, 19, 35), 98))
    assert r.components["format"] == 0.0 and r.correct


def test_reference_format_is_linear_on_adversarial_text() -> None:
    text = "</think>\n<answer>" * 20_000 + "x"
    start = time.perf_counter()
    assert reference_format(text) == 0.1  # a think block; no answer block is ever closed
    assert reference_answer(text, (1, 2), 3) == 0.0
    assert reference_format(text + "</answer>") == 1.0
    assert time.perf_counter() - start < 1.0


def _random_expression(rng: random.Random) -> str:
    """Text over the reference's characters, mostly near-valid expressions (signs, zeros, spaces)."""
    if rng.random() < 0.2:
        return "".join(rng.choice("0123456789+-*/() ") for _ in range(rng.randint(1, 16)))
    parts = []
    for i in range(rng.randint(1, 5)):
        if i:
            parts.append(rng.choice(["+", "-", "*", "/", " + ", " / ", "//", "*-", "--", "(", ")"]))
        parts.append(rng.choice(["", "", "-", "+", "(", "((", " ", "- -"]))
        parts.append(rng.choice(["0", "00", "07", str(rng.randint(1, 99)), str(rng.randint(100, 10**6))]))
        parts.append(rng.choice(["", "", ")", "))", " ", "(2)"]))
    return "".join(parts) + ("\n" if rng.random() < 0.05 else "")


def test_python_value_agrees_with_python_on_the_reference_character_set() -> None:
    """Python's evaluator is the oracle; the only disagreements allowed are the refused `**` and `//`."""
    rng = random.Random(0)
    agreed = 0
    for _ in range(20_000):
        text = _random_expression(rng)
        if "**" in text:
            with pytest.raises(ExprError):
                python_value(text)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                want: Any = eval(text, {"__builtins__": {}}, {})  # noqa: S307  (test oracle over [0-9+-*/() ])
            ok = isinstance(want, int | float)
        except Exception:
            ok = False
        try:
            got: Any = python_value(text)
        except ExprError:
            assert not ok or "//" in text, text
            continue
        assert ok and type(got) is type(want) and got == want, text
        agreed += 1
    assert agreed > 1500


def test_python_value_limits() -> None:
    assert python_value("(" * 100 + "1" + ")" * 100) == 1
    assert python_value("-" * 1000 + "1") == 1
    for text in ("(" * 101 + "1" + ")" * 101, "-" * 1001 + "1", "1" * 4301, "2 ** 3", "7 // 2", "()", "1 2"):
        with pytest.raises(ExprError):
            python_value(text)


# -- reference prompts, byte for byte --------------------------------------------------------------

# Written out from the reference source: evolutionary-alignment's SYSTEM_MESSAGE and USER_TEMPLATE
# (numbers formatted as a Python list, target as the data's string) through a ChatML chat template
# (Qwen2.5's layout), then its RESPONSE_PROMPT.
CHAT_ITEM0 = (
    "<|im_start|>system\nYou are a helpful assistant. You first think about the reasoning process in your "
    "mind and then provide the user with the answer.<|im_end|>\n<|im_start|>user\nUsing the numbers "
    "[44, 19, 35], create an equation that equals 98. You can use basic arithmetic operations (+, -, *, /) "
    "and each number can only be used once. Show your work in <think> </think> tags. And return the final "
    "answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.<|im_end|>\n"
    "<|im_start|>assistant\nLet me solve this step by step.\n<think>"
)


class ChatMLTokenizer:
    """Just enough of a tokenizer: Qwen2.5's ChatML layout for messages with a system turn."""

    chat_template = "chatml"

    def apply_chat_template(
        self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool
    ) -> str:
        assert not tokenize
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def test_reference_raw_prompt_is_byte_exact_with_the_data_files_context() -> None:
    rows = json.loads(SAMPLE.read_text())
    task = get_task("countdown", data=str(SAMPLE), prompt="reference", split="reference", n_train=3)
    items = task.split("train") + task.split("eval")
    assert [e.id for e in items] == [str(r["id"]) for r in rows]
    for row, ex in zip(rows, items, strict=True):
        assert task.render(ex, ChatMLTokenizer()) == row["context"]  # the raw layout ignores the template
    assert numpy_style([83, 78, 1, 39]) == "[83 78  1 39]" and numpy_style([2, 54, 17]) == "[ 2 54 17]"


def test_reference_chat_prompt_is_byte_exact() -> None:
    task = get_task("countdown", data=str(SAMPLE), prompt="reference_chat", split="reference", n_train=3)
    assert task.render(task.split("train")[0], ChatMLTokenizer()) == CHAT_ITEM0
    assert task.prompt_style.response_prefix == REFERENCE_PREFIX
    # Generated items use the same layout.
    gen = Countdown(n_train=1, n_eval=1, prompt="reference_chat")
    assert gen.render(gen.split("eval")[0], ChatMLTokenizer()).endswith(
        "</answer>.<|im_end|>\n<|im_start|>assistant\n" + REFERENCE_PREFIX
    )


def test_reference_prompt_refuses_a_conflicting_style() -> None:
    with pytest.raises(TaskError, match="system_prompt/response_prefix"):
        Countdown(prompt="reference", prompt_style=PromptStyle(response_prefix="<think>"))
    with pytest.raises(TaskError, match="chat template"):
        Countdown(prompt="reference_chat", prompt_style=PromptStyle(chat_template=False))
    with pytest.raises(TaskError, match="prompt must be one of"):
        Countdown(prompt="paper")
    with pytest.raises(TaskError, match="reward must be one of"):
        Countdown(reward="exact")


# -- reference data files and splits ----------------------------------------------------------------


def test_countdown_reads_the_reference_json_array_with_the_reference_split() -> None:
    task = get_task("countdown", data=str(SAMPLE), split="reference", n_train=3)
    tr, ev = task.split("train"), task.split("eval")
    assert [e.id for e in tr] == ["0", "1", "2"] and [e.id for e in ev] == [
        "6",
        "10",
        "204",
        "254",
        "263",
        "276",
    ]
    assert (task.n_train, task.n_eval) == (3, 6)
    assert tr[0].answer == {"numbers": (44, 19, 35), "target": 98}
    assert ev[2].answer["target"] == Fraction(137, 5) and ev[2].meta["target_text"] == "27.4"
    assert ev[4].answer["target"] == Fraction("-15.727272727272727")
    assert ev[5].meta["solution"] is None
    # The reference rule's defaults: first 200 train, all the rest (2000 in the real file) eval.
    assert [
        len(get_task("countdown", data=str(SAMPLE), split="reference").split(s)) for s in ("train", "eval")
    ] == [8, 1]
    # Seeded: shuffled, disjoint, deterministic.
    a = get_task("countdown", data=str(SAMPLE), seed=1, n_train=4, n_eval=5)
    b = get_task("countdown", data=str(SAMPLE), seed=1, n_train=4, n_eval=5)
    assert [e.id for e in a.split("eval")] == [e.id for e in b.split("eval")]
    assert not {e.id for e in a.split("train")} & {e.id for e in a.split("eval")}
    with pytest.raises(TaskError, match="asked for 5 train"):
        get_task("countdown", data=str(SAMPLE), split="reference", n_train=5, n_eval=5).split("train")


def test_countdown_reads_jsonl_with_nums_and_an_eval_file(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text('{"nums": [1, 2, 3], "target": 6}\n{"nums": [4, 5, 6], "target": "15"}\n')
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps([{"numbers": [7, 8, 9], "target": 24.0}]))
    task = get_task("countdown", data=str(train), eval_data=str(ev))
    assert [e.answer for e in task.split("train")] == [
        {"numbers": (1, 2, 3), "target": 6},
        {"numbers": (4, 5, 6), "target": 15},
    ]
    assert task.split("eval")[0].answer == {"numbers": (7, 8, 9), "target": 24}
    assert task.split("eval")[0].id == "eval.json:1"


def _one_line_error(task: str, **opts: Any) -> str:
    with pytest.raises(TaskError) as info:
        get_task(task, **opts).split("train")
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_bad_data_files_give_one_line_errors(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"values": [1, 2], "goal": 3}]))
    msg = _one_line_error("countdown", data=str(wrong))
    assert "wrong.json" in msg and "'numbers' or 'nums'" in msg and "'values'" in msg and "rename" in msg
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"numbers": [1, 2], "target": 3}\n{"numbers": "1 2", "target": 3}\n{"numbers": [1, 2], "target": "x"}\n{bad\n'
    )
    msg = _one_line_error("countdown", data=str(rows))
    assert "3 malformed" in msg and "rows.jsonl" in msg and "line 2: 'numbers' must be a list" in msg
    assert (
        "line 3: 'target' must be a number" in msg
        and "line 4: invalid JSON" in msg
        and "fix or remove" in msg
    )
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"question": "ok?", "answer": "yes"}\n{"question": "caf\xe9?", "answer": "no"}\n')
    msg = _one_line_error("conciseness", data=str(latin))
    assert "latin.jsonl line 2 is not UTF-8" in msg and "re-save" in msg
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"numbers": [1, 2], "target": 3},\n  {"numbers": [1, 2] "target": 3}\n]\n')
    msg = _one_line_error("countdown", data=str(broken))
    assert "broken.json is not a valid JSON array (line 3" in msg
    msg = _one_line_error("countdown", data=str(tmp_path / "missing.json"))
    assert "missing.json" in msg and "not found" in msg
    msg = _one_line_error("conciseness", data=str(SAMPLE))
    assert "'question' or 'prompt'" in msg and "'context'" in msg


def test_jsonl_task_reads_json_arrays_and_question_fields(tmp_path: Path) -> None:
    path = tmp_path / "qa.json"
    path.write_text(json.dumps([{"question": f"q{i}?", "answer": str(i)} for i in range(5)]))
    task = get_task("jsonl", data=str(path), n_train=3, n_eval=2)
    assert sorted(e.prompt for e in task.split("train") + task.split("eval")) == [f"q{i}?" for i in range(5)]
    assert task.split("eval")[0].id.startswith("qa.json:")


# -- conciseness ---------------------------------------------------------------------------------------


def test_conciseness_reads_the_reference_files() -> None:
    task = get_task("conciseness", data=str(CONCISE_TRAIN), eval_data=str(CONCISE_EVAL), split="reference")
    tr, ev = task.split("train"), task.split("eval")
    assert [e.prompt for e in tr] == [
        "Solve: 3 + 5 =",
        "If all birds can fly and penguins are birds, can penguins fly?",
    ]
    assert len(ev) == 8 and ev[0].prompt == "What is the capital of France?" and ev[0].answer == ("Paris",)
    assert task.system_prompt() is None  # the reference sends the question alone as the user turn
    assert task.render(ev[0], ChatMLTokenizer()) == (
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    r = task.score("Paris", ev[0])
    assert (r.score, r.correct) == (0.0, True)
    assert task.score("The capital is Paris.", ev[0]).score == -16.0  # -|len(gen.strip()) - len(target)|
    seeded = get_task("conciseness", data=str(CONCISE_EVAL), n_train=5, n_eval=3, seed=2)
    assert len(seeded.split("train")) == 5 and len(seeded.split("eval")) == 3


def test_conciseness_plain_string_answer_is_one_answer() -> None:
    task = get_task("conciseness", n_train=1, n_eval=1)
    ex = Example(id="c", prompt="What is the capital of France?", answer="Paris")
    r = task.score("Paris", ex)
    assert (r.score, r.correct) == (0.0, True)  # not −4 against "P"
    with pytest.raises(ExampleTypeError, match="conciseness.*string or a non-empty tuple of strings"):
        task.score("Paris", Example(id="c", prompt="q", answer=42))


# -- Example field types --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"id": 7, "prompt": "p", "answer": 1}, "Example.id must be a str, got int"),
        ({"id": "a", "prompt": None, "answer": 1}, "Example.prompt must be a str, got NoneType"),
        ({"id": "a", "prompt": "p", "answer": 1, "meta": ["x"]}, "Example.meta must be a dict, got list"),
    ],
)
def test_example_field_types_are_checked_at_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ExampleTypeError, match=match) as info:
        Example(**kwargs)
    assert isinstance(info.value, TypeError) and isinstance(info.value, TaskError)


def test_task_answer_shapes_are_checked_before_scoring() -> None:
    cd = Countdown(n_train=1, n_eval=1)
    with pytest.raises(ExampleTypeError, match="'numbers'.*'target'"):
        cd.score("<answer>1+2</answer>", Example(id="x", prompt="p", answer="3"))
    with pytest.raises(ExampleTypeError, match="target'\\] must be a number"):
        cd.score("<answer>1+2</answer>", _cd((1, 2), "3"))  # type: ignore[arg-type]
    with pytest.raises(ExampleTypeError, match="math"):
        get_task("math", n_train=1, n_eval=1).score(r"\boxed{1}", Example(id="m", prompt="p", answer=[1]))


# -- the generated distribution ------------------------------------------------------------------


def test_generated_countdown_matches_the_reference_distribution_by_default() -> None:
    items = Countdown(seed=0, n_train=100, n_eval=400).split("eval")
    targets = [e.answer["target"] for e in items]
    sizes = [len(e.answer["numbers"]) for e in items]
    assert all(isinstance(t, int) and 10 <= t <= 100 for t in targets)
    assert all(1 <= n <= 99 for e in items for n in e.answer["numbers"])
    assert 0.4 < sizes.count(3) / len(sizes) < 0.6  # reference: 48.7% have 3 numbers
    assert 48 < statistics.mean(targets) < 62  # reference: 54.2 (test split 53.9)
    assert sum(t > 99 for t in targets) / len(targets) < 0.05  # reference: 2.1%
    assert all(solvable(e.answer["numbers"], e.answer["target"]) for e in items)
    wide = Countdown(seed=0, n_train=1, n_eval=200, distribution="wide").split("eval")
    assert (
        sum(e.answer["target"] > 99 for e in wide) / len(wide) > 0.25
        and max(e.answer["target"] for e in wide) <= 999
    )
    with pytest.raises(TaskError, match="distribution"):
        Countdown(distribution="paper")


def test_solvable_agrees_with_solve() -> None:
    from evotune.tasks.countdown import solve

    rng = random.Random(3)
    for _ in range(300):
        nums = [rng.randint(0, 30) for _ in range(rng.randint(1, 4))]
        target: int | Fraction = rng.randint(0, 60) if rng.random() < 0.9 else Fraction(rng.randint(1, 30), 7)
        assert solvable(nums, target) == (solve(nums, target) is not None), (nums, target)


# -- math-verify -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gold", "content", "same"),
    [
        (r"\frac{1}{2}", r"\dfrac{1}{2}", True),
        (r"\frac{1}{2}", "0.5", True),
        (r"\frac{1}{2}", r"\frac12", True),
        ("0.5", r"\frac{1}{2}", True),
        (r"\frac{1}{2}", r"\frac{1}{3}", False),
        ("1000", r"10^{3}", True),
        ("1000", "1e3", False),
        (r"x^2+1", "1+x^2", True),
        (r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2", True),
    ],
)
def test_math_verify_equivalence(gold: str, content: str, same: bool) -> None:
    assert equivalent(gold, content) is same


def test_math_task_local_answers_compare_by_value(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(
        '{"problem": "Half of one?", "answer": "\\\\frac{1}{2}"}\n{"question": "One over four?", "answer": 0.25}\n'
    )
    task = get_task("math", data=str(path), n_train=0, n_eval=2)
    half, quarter = sorted(task.split("eval"), key=lambda e: e.prompt)
    for box in (r"\boxed{\dfrac{1}{2}}", r"\boxed{0.5}", r"\boxed{\frac12}"):
        assert task.score(box, half).score == pytest.approx(1.1), box
    assert task.score(r"\boxed{\frac{1}{3}}", half).score == pytest.approx(0.1)
    assert task.score(r"\boxed{\frac{1}{4}}", quarter).score == pytest.approx(1.1)
    gen = get_task("math", n_train=1, n_eval=1)
    assert gen.score(
        r"\boxed{\frac{2000}{2}}", Example(id="m", prompt="p", answer=1000)
    ).score == pytest.approx(1.1)


@pytest.mark.parametrize(
    "content",
    [
        "9^{9^{9}}",
        "(x+1)^{999}",
        r"\sum_{k=1}^{99999999} k^{k}",
        r"\binom{1000000}{500000}",
        "99999!",
        "(" * 8 + "1" + ")" * 8,
        "2^{9999}",
        "(2^{999})^{999}",
        "1" * 101,
    ],
)
def test_math_verify_screen_refuses_what_could_hang(content: str) -> None:
    start = time.perf_counter()
    assert not safe_for_math_verify(content)
    assert equivalent("1000", content) is False
    assert time.perf_counter() - start < 0.5


# -- the study -------------------------------------------------------------------------------------


def test_countdown_study_uses_the_reference_setup() -> None:
    from evotune.study import load_study

    cfg = load_study("studies/countdown-qwen.yaml")
    t = cfg.task
    assert t.name == "countdown" and t.data and t.data.endswith("countdown.json")
    assert t.options == {"reward": "reference", "prompt": "reference", "split": "reference"}
    assert (t.n_train, t.n_eval) == (200, 2000) and t.response_prefix == ""
    assert cfg.es.population == 30 and cfg.es.sigma == 0.001 and cfg.es.alpha == 0.0005
    assert cfg.generation.max_new_tokens == 1024

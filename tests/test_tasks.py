"""Built-in tasks: the safe expression evaluator, countdown, conciseness and user JSONL data."""

from __future__ import annotations

import itertools
import json
import random
from fractions import Fraction
from pathlib import Path

import pytest

from evotune.errors import TaskError
from evotune.tasks import Example, PromptStyle, get_task
from evotune.tasks.conciseness import Conciseness, is_correct, number_words, questions
from evotune.tasks.countdown import Countdown, check_answer, extract_answers, has_format, solve
from evotune.tasks.jsonl_task import JsonlTask, last_number, normalize_text
from evotune.tasks.safe_expr import ExprError, evaluate_expr

# -- safe_expr ------------------------------------------------------------------------------------


def test_evaluate_expr_values_and_literals() -> None:
    r = evaluate_expr("8 / (3 - 8 / 3)")
    assert r.value == Fraction(24)
    assert r.numbers == (8, 3, 8, 3)
    assert evaluate_expr("2 + 3 * 4").value == 14
    assert evaluate_expr("(2 + 3) * 4").value == 20
    assert evaluate_expr("10 - 4 - 3").value == 3  # left associative
    assert evaluate_expr("12 / 4 / 3").value == 1
    assert evaluate_expr("7 × 6 ÷ 3 − 4").value == 10
    assert evaluate_expr("1 / 3").value == Fraction(1, 3)
    assert evaluate_expr("-(2 - 5)", allow_unary_minus=True).value == 3


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "2 ** 3",
        "2 ^ 3",
        "-3 + 5",
        "+3",
        "2.5 * 2",
        "1e3",
        "2 (3)",
        "(2 + 3",
        "2 + 3)",
        "()",
        "1 / 0",
        "4 / (2 - 2)",
        "1234567 + 1",
        "abs(3)",
        "__import__('os')",
        "３ + ４",
        "٣ + ٤",
        "1 + 1 = 2",
        "(" * 60 + "1" + ")" * 60,
        "1+" * 150 + "1",
        "1 " * 300,
    ],
)
def test_evaluate_expr_rejects(text: str) -> None:
    with pytest.raises(ExprError):
        evaluate_expr(text)


def test_evaluate_expr_depth_limit_is_separate_from_length() -> None:
    nested = "(" * 51 + "1" + ")" * 51
    with pytest.raises(ExprError, match="nesting"):
        evaluate_expr(nested, max_length=1000, max_tokens=1000)
    assert evaluate_expr("(" * 50 + "1" + ")" * 50, max_length=1000, max_tokens=1000).value == 1


def test_evaluate_expr_fuzz_only_raises_expr_error() -> None:
    rng = random.Random(0)
    alphabet = "0123456789+-*/()×÷−^. x=_'a\n"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        try:
            res = evaluate_expr(text, allow_unary_minus=rng.random() < 0.5)
        except ExprError:
            continue
        assert isinstance(res.value, Fraction)


# -- countdown ------------------------------------------------------------------------------------


def _cd_example(numbers: tuple[int, ...] = (6, 4, 3, 2), target: int = 24) -> Example:
    return Example(id="t", prompt="p", answer={"numbers": numbers, "target": target})


GOOD = "6 * 4 * (3 - 2)"
JUNK = "x" * 100_000

COUNTDOWN_CASES: list[tuple[str, str, float]] = [
    ("correct", f"<think>ok</think><answer>{GOOD}</answer>", 1.1),
    ("correct with whitespace", "  <think>\nwork\n</think>\n\n<answer> 6*4*(3-2) </answer>\n", 1.1),
    ("multi-line answer", "<think>x</think><answer>\n6 * 4\n* (3 - 2)\n</answer>", 1.1),
    ("unicode operators", "<think>x</think><answer>6 ÷ (3 − 2) × 4 × 1</answer>", 0.1),
    ("unicode operators exact", "<think>x</think><answer>6 ÷ (3 − 2) × 4</answer>", 1.1),
    ("unicode operators all numbers", "<think>x</think><answer>(6 ÷ 2) × 4 × (3 − 2)</answer>", 0.1),
    ("unicode ops correct", "<think>x</think><answer>6 × 4 ÷ (3 − 2)</answer>", 1.1),
    ("missing think", f"<answer>{GOOD}</answer>", 1.0),
    ("answer before think", f"<answer>{GOOD}</answer><think>x</think>", 1.0),
    ("text before think", f"Sure! <think>x</think><answer>{GOOD}</answer>", 1.0),
    ("text after answer", f"<think>x</think><answer>{GOOD}</answer> Done!", 1.0),
    ("nested think", f"<think><think>x</think></think><answer>{GOOD}</answer>", 1.0),
    ("reused number", "<think>x</think><answer>6 * 4 * (3 / 3)</answer>", 0.1),
    ("missing number", "<think>x</think><answer>6 * 4</answer>", 0.1),
    ("extra number", "<think>x</think><answer>6 * 4 * (3 - 2) * 1</answer>", 0.1),
    ("wrong target", "<think>x</think><answer>6 + 4 + 3 + 2</answer>", 0.1),
    ("division by zero", "<think>x</think><answer>6 * 4 / (3 - 3) * 2</answer>", 0.1),
    ("power", "<think>x</think><answer>2**999999</answer>", 0.1),
    ("caret tower", "<think>x</think><answer>9^9^9</answer>", 0.1),
    (
        "10000-deep parentheses",
        "<think>x</think><answer>" + "(" * 10000 + GOOD + ")" * 10000 + "</answer>",
        0.1,
    ),
    ("100 KB junk", JUNK, 0.0),
    ("100 KB junk in think", f"<think>{JUNK}</think><answer>{GOOD}</answer>", 1.1),
    ("12500 unclosed answer tags", "<answer>" * 12_500, 0.0),
    ("import", "<think>x</think><answer>__import__('os').system('echo hi')</answer>", 0.1),
    ("fullwidth digits", "<think>x</think><answer>６ * ４ * (３ - ２)</answer>", 0.1),
    ("arabic-indic digits", "<think>x</think><answer>٦ * ٤ * (٣ - ٢)</answer>", 0.1),
    ("empty answer", "<think>x</think><answer></answer>", 0.1),
    ("whitespace answer", "<think>x</think><answer>   </answer>", 0.1),
    ("two answers, last wrong", f"<think>x</think><answer>{GOOD}</answer><answer>6 + 4</answer>", 0.0),
    ("two answers, last right", f"<think>x</think><answer>6 + 4</answer><answer>{GOOD}</answer>", 1.0),
    ("float literal", "<think>x</think><answer>6 * 4 * (3 - 2.5) * 2</answer>", 0.1),
    ("unary minus", "<think>x</think><answer>-(2 - 3) * 6 * 4</answer>", 0.1),
    ("equation with result", f"<think>x</think><answer>{GOOD} = 24</answer>", 0.1),
    ("prose in answer", f"<think>x</think><answer>The answer is {GOOD}</answer>", 0.1),
    ("implicit multiplication", "<think>x</think><answer>6 * 4(3 - 2)</answer>", 0.1),
    ("unbalanced", "<think>x</think><answer>6 * 4 * (3 - 2</answer>", 0.1),
    ("extra close paren", f"<think>x</think><answer>{GOOD})</answer>", 0.1),
    ("seven-digit literal", "<think>x</think><answer>6*4*(3-2)+1000000-1000000</answer>", 0.1),
    ("overlong answer", "<think>x</think><answer>6 * 4 *" + " " * 300 + "(3 - 2)</answer>", 0.1),
    ("uppercase tags", f"<think>x</think><ANSWER>{GOOD}</ANSWER>", 0.0),
    ("unclosed answer", f"<think>x</think><answer>{GOOD}", 0.0),
    ("answer tag inside answer", f"<answer>6+4<answer>{GOOD}</answer>", 0.0),
    ("python builtins", "<think>x</think><answer>sum([6, 4, 3, 2]) + 9</answer>", 0.1),
    ("empty completion", "", 0.0),
]


@pytest.mark.parametrize(
    ("name", "completion", "expected"), COUNTDOWN_CASES, ids=[c[0] for c in COUNTDOWN_CASES]
)
def test_countdown_reward_adversarial(name: str, completion: str, expected: float) -> None:
    task = Countdown(n_train=1, n_eval=1, reward="strict")
    r = task.score(completion, _cd_example())
    assert r.score == expected, name
    assert r.components["format"] + r.components["answer"] == r.score
    assert r.correct == (r.components["answer"] == 1.0)


def test_countdown_exact_fractions() -> None:
    task = Countdown(n_train=1, n_eval=1, reward="strict")
    ex = _cd_example((3, 3, 8, 8), 24)
    assert task.score("<think>x</think><answer>8 / (3 - 8 / 3)</answer>", ex).score == 1.1
    assert solve((3, 3, 8, 8), 24) is not None
    assert solve((1, 1, 1), 100) is None
    assert solve((), 1) is None


def test_countdown_response_prefix_is_restored() -> None:
    task = Countdown(n_train=1, n_eval=1, reward="strict", prompt_style=PromptStyle(response_prefix="<think>"))
    r = task.score(f"reasoning</think>\n<answer>{GOOD}</answer>", _cd_example())
    assert (r.score, r.components, r.correct) == (1.1, {"format": 0.1, "answer": 1.0}, True)


def test_countdown_helpers() -> None:
    assert extract_answers("<answer>a</answer> x <answer>b</answer>") == ["a", "b"]
    assert extract_answers("<answer>a<answer>b</answer>") == ["a<answer>b"]
    assert has_format("<think></think> <answer>1</answer>")
    assert not has_format("<think>a</think> text <answer>1</answer>")
    assert check_answer("1 + 2", [2, 1], 3)
    assert not check_answer("1 + 2", [1, 2, 3], 3)


def _independent_solvable(numbers: tuple[int, ...], target: int) -> bool:
    """A second, differently written solver: values of all expression trees over a multiset."""

    def values(nums: tuple[Fraction, ...]) -> set[Fraction]:
        if len(nums) == 1:
            return {nums[0]}
        out: set[Fraction] = set()
        idx = range(len(nums))
        for r in range(1, len(nums)):
            for left in itertools.combinations(idx, r):
                right = tuple(i for i in idx if i not in left)
                for a in values(tuple(nums[i] for i in left)):
                    for b in values(tuple(nums[i] for i in right)):
                        out |= {a + b, a - b, a * b}
                        if b:
                            out.add(a / b)
        return out

    return Fraction(target) in values(tuple(Fraction(n) for n in numbers))


def test_solver_agrees_with_independent_enumeration() -> None:
    rng = random.Random(1)
    for _ in range(60):
        nums = tuple(rng.randint(1, 13) for _ in range(rng.randint(2, 4)))
        target = rng.randint(1, 60)
        sol = solve(nums, target)
        assert (sol is not None) == _independent_solvable(nums, target), (nums, target)
        if sol is not None:
            assert check_answer(sol, nums, target)


def test_countdown_instances_solvable_and_solution_earns_full_reward() -> None:
    task = Countdown(seed=3, n_train=150, n_eval=150, reward="strict")
    for split in ("train", "eval"):
        for ex in task.split(split):
            numbers, target = ex.answer["numbers"], ex.answer["target"]
            assert 3 <= len(numbers) <= 4 and all(1 <= n <= 99 for n in numbers)
            assert 1 <= target <= 999
            assert str(target) in ex.prompt and "<answer>" in ex.prompt
            r = task.score(f"<think>search</think><answer>{ex.meta['solution']}</answer>", ex)
            assert (r.score, r.correct) == (1.1, True)


def test_countdown_determinism_disjointness_and_options() -> None:
    a, b, c = (Countdown(seed=s, n_train=100, n_eval=300) for s in (7, 7, 8))
    assert [e.prompt for e in a.split("train")] == [e.prompt for e in b.split("train")]
    assert [e.prompt for e in a.split("eval")] == [e.prompt for e in b.split("eval")]
    assert [e.prompt for e in a.split("eval")] != [e.prompt for e in c.split("eval")]
    train, ev = a.split("train"), a.split("eval")
    assert len(train) == 100 and len(ev) == 300
    assert not {e.prompt for e in train} & {e.prompt for e in ev}
    assert len({e.id for e in train + ev}) == 400
    # The eval set does not depend on the train size.
    d = Countdown(seed=7, n_train=10, n_eval=300)
    assert [e.prompt for e in d.split("eval")] == [e.prompt for e in ev]
    t = get_task("countdown", seed=0, n_train=20, n_eval=20, min_numbers=4, max_numbers=4, max_value=20)
    assert all(len(e.answer["numbers"]) == 4 and max(e.answer["numbers"]) <= 20 for e in t.split("train"))
    assert (
        Countdown().n_train == 200 and Countdown().n_eval == 500 and Countdown.default_max_new_tokens == 128
    )
    with pytest.raises(TaskError):
        Countdown(min_numbers=1)
    with pytest.raises(TaskError):
        Countdown(bogus=3)
    with pytest.raises(TaskError):
        Countdown(max_value="many")
    assert Countdown(max_value="20", data=None).cfg["max_value"] == 20


# -- conciseness ----------------------------------------------------------------------------------


def test_conciseness_pool() -> None:
    qs = questions()
    assert len({q for q, _, _ in qs}) == len(qs) >= 300
    for q, accepted, _ in qs:
        assert accepted and all(a.strip() for a in accepted), q
        assert all(len(accepted[0]) <= len(a) for a in accepted), f"target of {q!r} is not the shortest"
    lookup = {q: a for q, a, _ in qs}
    assert lookup["What is the capital of France?"][0] == "Paris"
    assert lookup["What is 5 plus 7?"][0] == "12"
    assert lookup["What is the opposite of hot?"][0] == "cold"
    assert lookup["How do you write 14 as a word?"][0] == "fourteen"
    assert lookup["What day comes after Monday?"][0] == "Tuesday"
    assert lookup["What day comes before Monday?"][0] == "Sunday"
    assert lookup["What month comes after December?"][0] == "January"
    assert lookup["What is the chemical symbol for gold?"][0] == "Au"
    assert number_words(21) == ("twenty-one", "twenty one") and number_words(40) == ("forty",)


def test_conciseness_splits_and_reward() -> None:
    task = get_task("conciseness", seed=0)
    train, ev = task.split("train"), task.split("eval")
    assert (len(train), len(ev)) == (200, 100)
    assert not {e.prompt for e in train} & {e.prompt for e in ev}
    assert [e.prompt for e in Conciseness(seed=0).split("eval")] == [e.prompt for e in ev]
    assert [e.prompt for e in Conciseness(seed=1).split("eval")] != [e.prompt for e in ev]
    assert task.system_prompt() is None and Conciseness.default_max_new_tokens == 32
    ex = Example(id="c", prompt="What is the capital of France?", answer=("Paris",))
    cases = [
        ("Paris", 0.0, True),
        ("  Paris \n", 0.0, True),
        ("Paris.", -1.0, True),
        ('"paris"', -2.0, True),
        ("PARIS!", -1.0, True),
        ("", -5.0, False),
        ("Lyon!", 0.0, False),  # right length, wrong content: the hack `correct` exposes
        ("The capital is Paris", -15.0, True),  # right but verbose: the length reward judges that
        ("Parisian", -3.0, False),
    ]
    for completion, score, correct in cases:
        r = task.score(completion, ex)
        assert (r.score, r.components, r.correct) == (score, {"length": score}, correct), completion


def test_conciseness_correctness_normalisation() -> None:
    assert is_correct("Twenty-one.", ("21", "twenty-one", "twenty one"))
    assert is_correct(" twenty one ", ("21", "twenty-one", "twenty one"))
    assert is_correct("‘Brasilia’", ("Brasília", "Brasilia"))
    assert is_correct("au", ("Au",))
    assert not is_correct("A u", ("Au",))
    assert not is_correct("Tokyo", ("Paris",))
    assert normalize_text("  'New   Delhi!'  ") == "new delhi"


# -- jsonl ----------------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8"
    )
    return path


def _rows(n: int, answer: object = "yes") -> list[dict[str, object]]:
    return [{"prompt": f"question {i}?", "answer": answer} for i in range(n)]


def test_jsonl_requires_data_and_valid_options(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="--data"):
        get_task("jsonl")
    with pytest.raises(TaskError, match="reward"):
        JsonlTask(data="x.jsonl", reward="fuzzy")
    with pytest.raises(TaskError, match="not found"):
        JsonlTask(data=str(tmp_path / "missing.jsonl")).split("train")


def test_jsonl_malformed_rows_listed_with_line_numbers(tmp_path: Path) -> None:
    rows: list[object] = [
        {"prompt": "ok?", "answer": "fine"},
        "{not json",
        {"prompt": "no answer"},
        {"prompt": "", "answer": "a"},
        {"prompt": "list answer", "answer": [1, 2]},
        "[1, 2]",
        {"prompt": "bool answer", "answer": True},
        {"answer": "no prompt"},
        {"prompt": "bad id", "answer": "a", "id": [1]},
    ] + [{"prompt": f"p{i}"} for i in range(5)]
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(TaskError) as info:
        JsonlTask(data=str(path)).split("train")
    msg = str(info.value)
    assert "13 malformed" in msg
    assert "line 2: invalid JSON" in msg
    assert "line 3: missing 'answer'" in msg
    assert "line 4: 'prompt' must be a non-empty string" in msg
    assert "line 5: 'answer' must be a string or a number" in msg
    assert "line 6: expected a JSON object" in msg
    assert "line 8: missing 'prompt'" in msg
    assert "line 1:" not in msg
    assert "... and 3 more" in msg


def test_jsonl_default_sizes_and_disjoint_split(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", _rows(10) + ["", "   "])  # blank lines are skipped
    task = JsonlTask(data=str(path), seed=1)
    train, ev = task.split("train"), task.split("eval")
    assert (len(train), len(ev)) == (8, 2) and (task.n_train, task.n_eval) == (8, 2)
    assert not {e.prompt for e in train} & {e.prompt for e in ev}
    assert train[0].id.startswith("d.jsonl:")
    sized = JsonlTask(data=str(path), n_train=3, n_eval=4)
    assert (len(sized.split("train")), len(sized.split("eval"))) == (3, 4)
    with pytest.raises(TaskError):
        JsonlTask(data=str(path), n_train=9, n_eval=4).split("train")
    one = _write_jsonl(tmp_path / "one.jsonl", [{"prompt": "q", "answer": 1, "id": 7}])
    t1 = JsonlTask(data=str(one))
    assert (len(t1.split("train")), [e.id for e in t1.split("eval")]) == (0, ["7"])


def test_jsonl_eval_data_file(tmp_path: Path) -> None:
    tr = _write_jsonl(tmp_path / "train.jsonl", _rows(6))
    ev = _write_jsonl(tmp_path / "eval.jsonl", [{"prompt": f"held-out {i}", "answer": "x"} for i in range(3)])
    task = JsonlTask(data=str(tr), eval_data=str(ev))
    assert len(task.split("train")) == 6
    assert sorted(e.prompt for e in task.split("eval")) == ["held-out 0", "held-out 1", "held-out 2"]
    overlap = _write_jsonl(tmp_path / "overlap.jsonl", [{"prompt": "question 2?", "answer": "x"}])
    with pytest.raises(TaskError, match="both"):
        JsonlTask(data=str(tr), eval_data=str(overlap)).split("eval")


def _score(kind: str, answer: object, completion: str, tmp_path: Path) -> float:
    path = _write_jsonl(
        tmp_path / f"{kind}.jsonl", [{"prompt": "q1", "answer": answer}, {"prompt": "q2", "answer": answer}]
    )
    task = JsonlTask(data=str(path), reward=kind)
    ex = task.split("eval")[0]
    r = task.score(completion, ex)
    assert r.components == {"answer": r.score} and r.correct == (r.score == 1.0)
    return r.score


@pytest.mark.parametrize(
    ("kind", "answer", "completion", "expected"),
    [
        ("exact", "Paris", "  paris. ", 1.0),
        ("exact", "Paris", "It is Paris", 0.0),
        ("exact", 42, "42", 1.0),
        ("contains", "Paris", "The capital is PARIS, of course.", 1.0),
        ("contains", "Paris", "Lyon", 0.0),
        ("numeric", 1000, "so the total is 1,000.", 1.0),
        ("numeric", 1000, "we get $1000", 1.0),
        ("numeric", 1000, "1000.0", 1.0),
        ("numeric", "1,000", "answer: 1000", 1.0),
        ("numeric", -3, "x = -3", 1.0),
        ("numeric", -3, "7 - 10 = -3", 1.0),
        ("numeric", 3, "10-3", 1.0),
        ("numeric", 0.5, "half is 0.5", 1.0),
        ("numeric", 1000, "1000 then 999", 0.0),
        ("numeric", 1000, "no number here", 0.0),
        ("regex", r"\b(?:yes|true)\b", "Yes? true.", 1.0),
        ("regex", r"^\d+$", "12a", 0.0),
    ],
)
def test_jsonl_reward_kinds(
    kind: str, answer: object, completion: str, expected: float, tmp_path: Path
) -> None:
    assert _score(kind, answer, completion, tmp_path) == expected


def test_jsonl_regex_guard_and_numeric_validation(tmp_path: Path) -> None:
    bad = _write_jsonl(
        tmp_path / "re.jsonl", [{"prompt": "a", "answer": "(unclosed"}, {"prompt": "b", "answer": "(a+)+$"}]
    )
    with pytest.raises(TaskError) as info:
        JsonlTask(data=str(bad), reward="regex").split("train")
    assert "line 1: invalid regex" in str(info.value) and "line 2: regex has nested repeats" in str(
        info.value
    )
    num = _write_jsonl(tmp_path / "num.jsonl", [{"prompt": "a", "answer": "many"}])
    with pytest.raises(TaskError, match="line 1: 'answer' 'many' is not a number"):
        JsonlTask(data=str(num), reward="numeric").split("train")
    assert last_number("-$1,234.5 and then (-2)") == -2.0
    assert last_number("total -$1,234.5") == -1234.5


def test_jsonl_parquet(tmp_path: Path) -> None:
    import pyarrow as pa  # datasets' own dependency: a broken install fails, not skips
    import pyarrow.parquet as pq
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(_rows(5, answer="7")), path)
    task = JsonlTask(data=str(path), reward="numeric")
    assert (len(task.split("train")), len(task.split("eval"))) == (4, 1)
    assert task.score("It is 7", task.split("eval")[0]).score == 1.0
    pq.write_table(pa.Table.from_pylist([{"prompt": "a", "answer": None}]), tmp_path / "bad.parquet")
    with pytest.raises(TaskError, match="row 1: missing 'answer'"):
        JsonlTask(data=str(tmp_path / "bad.parquet")).split("train")


def test_jsonl_load_from_disk(tmp_path: Path) -> None:
    import datasets  # a hard dependency: a broken install fails, not skips
    datasets.Dataset.from_list(_rows(5)).save_to_disk(str(tmp_path / "ds"))
    task = JsonlTask(data=str(tmp_path / "ds"), reward="contains")
    assert (len(task.split("train")), len(task.split("eval"))) == (4, 1)
    assert task.score("yes indeed", task.split("eval")[0]).correct

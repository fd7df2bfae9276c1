"""The continual-learning task suite: math, chemistry and boolq (rewards, splits, local-file variants)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from evotune.errors import TaskError
from evotune.tasks import Example, get_task
from evotune.tasks.answers import extract_boxed, parse_integer, single_choice
from evotune.tasks.chemistry import COMPOUNDS, ELEMENTS, FAMILIES, atom_counts
from evotune.tasks.math_task import TEMPLATES

SUITE = ("math", "chemistry", "boolq")


@pytest.fixture(scope="module")
def built() -> dict[str, object]:
    return {name: get_task(name) for name in SUITE}


# -- shared helpers ---------------------------------------------------------------------------


def test_extract_boxed_balances_braces_and_ignores_broken_boxes() -> None:
    assert extract_boxed(r"a \boxed{1} b \boxed{\text{x}} c") == ["1", r"\text{x}"]
    assert extract_boxed(r"\boxed{\frac{1}{2}}") == [r"\frac{1}{2}"]
    assert extract_boxed(r"\boxed 42") == []
    assert extract_boxed(r"\boxed{42") == []
    assert extract_boxed(r"\boxed{1} then \boxed{2") == ["1"]
    assert extract_boxed("no box") == []
    assert extract_boxed(r"\boxed{" * 20000) == []  # linear, no blow-up


@pytest.mark.parametrize(
    ("text", "value"),
    [("1000", 1000), ("1,000", 1000), ("1000.0", 1000), ("$1000", 1000), ("\\$1{,}000", 1000),
     ("1000 dollars", 1000), (r"\text{1000}", 1000), ("-7", -7), ("12 km", 12), ("25%", 25),
     ("1000.5", None), ("10 or 12", None), ("4 2", None), ("1e3", None), ("x = 4", None), ("", None),
     ("1,00", None), ("one thousand", None), ("1" * 300, None)],
)
def test_parse_integer(text: str, value: int | None) -> None:
    assert parse_integer(text) == value


def test_single_choice_requires_agreement() -> None:
    pick = lambda c: c if c in ("A", "B") else None  # noqa: E731
    assert single_choice(r"\boxed{A}", pick) == "A"
    assert single_choice(r"\boxed{A} so \boxed{A}", pick) == "A"
    assert single_choice(r"\boxed{A} or \boxed{B}", pick) is None
    assert single_choice(r"\boxed{A} \boxed{Z}", pick) is None
    assert single_choice("A", pick) is None


# -- sizes, disjointness, determinism ---------------------------------------------------------


@pytest.mark.parametrize("name", SUITE)
def test_default_sizes_disjoint_and_deterministic(name: str, built: dict) -> None:
    t = built[name]
    tr, ev = t.split("train"), t.split("eval")
    assert len(tr) >= 300 and len(ev) >= 500
    assert not {e.prompt for e in tr} & {e.prompt for e in ev}
    assert len({e.id for e in tr + ev}) == len(tr) + len(ev)
    again = get_task(name)
    assert [(e.prompt, e.answer) for e in again.split("eval")] == [(e.prompt, e.answer) for e in ev]
    other = get_task(name, seed=1)
    assert [e.prompt for e in other.split("eval")] != [e.prompt for e in ev]
    assert t.system_prompt() and "\\boxed" in t.system_prompt()
    assert 32 <= t.default_max_new_tokens <= 192


@pytest.mark.parametrize("name", SUITE)
def test_eval_split_does_not_depend_on_train_size(name: str, built: dict) -> None:
    small = get_task(name, n_train=10)
    assert [e.prompt for e in small.split("eval")] == [e.prompt for e in built[name].split("eval")]


@pytest.mark.parametrize("name", SUITE)
def test_reference_answers_score_full_marks(name: str, built: dict) -> None:
    t = built[name]
    for e in t.split("eval")[:100]:
        r = t.score(f"Reasoning first.\n\\boxed{{{e.answer}}}", e)
        assert r.correct and r.score == pytest.approx(1.1) and r.components == {"format": 0.1, "answer": 1.0}


def test_unknown_option_and_reward_override_rejected() -> None:
    for name in SUITE:
        with pytest.raises(TaskError, match="unknown option"):
            get_task(name, bogus=1)
        with pytest.raises(TaskError, match="own reward"):
            get_task(name, reward="exact")
    with pytest.raises(TaskError, match="difficulty"):
        get_task("math", difficulty=4)


# -- math -------------------------------------------------------------------------------------


def test_math_difficulty_levels_and_families() -> None:
    for d in (1, 2, 3):
        t = get_task("math", difficulty=d, n_train=5, n_eval=200)
        ev = t.split("eval")
        assert {e.meta["steps"] for e in ev} == {d}
        assert {e.meta["family"] for e in ev} == set(TEMPLATES)
        assert all(isinstance(e.answer, int) and e.answer >= 0 for e in ev)
    mixed = get_task("math", n_train=5, n_eval=300).split("eval")
    assert {e.meta["steps"] for e in mixed} == {1, 2, 3}


MATH_EX = Example(id="m", prompt="p", answer=1000)


@pytest.mark.parametrize(
    ("completion", "score"),
    [
        (r"so \boxed{1000}", 1.1),
        (r"\boxed{1,000}", 1.1),
        (r"\boxed{1000.0}", 1.1),
        (r"\boxed{$1000}", 1.1),
        (r"\boxed{\$1{,}000}", 1.1),
        (r"\boxed{1000 dollars}", 1.1),
        (r"first \boxed{5} then finally \boxed{1000}", 1.1),  # the LAST box counts
        (r"\boxed{1000} no wait \boxed{999}", 0.1),
        ("The answer is 1000.", 0.0),  # outside a box
        (r"\boxed{}", 0.0),
        (r"\boxed{1000.5}", 0.1),
        (r"\boxed{-1000}", 0.1),
        (r"\boxed{999 or 1000}", 0.0),
        (r"\boxed{10 00}", 0.0),
        (r"\boxed 1000", 0.0),
        (r"\boxed{1000", 0.0),
        (r"\boxed{1e3}", 0.0),
        (r"\boxed{x}", 0.0),
        ("", 0.0),
        ("\\boxed{" * 5000 + "1000", 0.0),
    ],
)
def test_math_reward_adversarial(completion: str, score: float) -> None:
    r = get_task("math", n_train=1, n_eval=1).reward(completion, MATH_EX)
    assert r.score == pytest.approx(score)
    assert r.correct == (score > 1)


# -- chemistry --------------------------------------------------------------------------------


def test_chemistry_tables_are_consistent() -> None:
    zs = [e[0] for e in ELEMENTS]
    assert len(set(zs)) == len(zs) and len({e[1] for e in ELEMENTS}) == len(ELEMENTS)
    assert len({e[2] for e in ELEMENTS}) == len(ELEMENTS)
    grid = [(e[3], e[4]) for e in ELEMENTS if e[3] is not None]
    assert len(set(grid)) == len(grid)  # one element per (group, period)
    symbols = {e[1] for e in ELEMENTS}
    for _, members in FAMILIES.values():
        assert set(members) <= symbols
    for _, formula in COMPOUNDS:
        assert set(atom_counts(formula)) <= symbols, formula
    assert atom_counts("Ca3(PO4)2") == {"Ca": 3, "P": 2, "O": 8}
    assert atom_counts("(NH4)2SO4") == {"N": 2, "H": 8, "S": 1, "O": 4}
    assert atom_counts("CH3COOH") == {"C": 2, "H": 4, "O": 2}
    with pytest.raises(ValueError):
        atom_counts("Ca(OH")


def test_chemistry_items_well_formed(built: dict) -> None:
    t = built["chemistry"]
    tr, ev = t.split("train"), t.split("eval")
    assert not {e.meta["key"] for e in tr} & {e.meta["key"] for e in ev}
    letters = Counter(e.answer for e in tr + ev)
    assert set(letters) == set("ABCD") and min(letters.values()) > 0.18 * (len(tr) + len(ev))
    for e in ev:
        lines = e.prompt.split("\n")
        opts = [ln[3:] for ln in lines[1:5]]
        assert [ln[:3] for ln in lines[1:5]] == ["A. ", "B. ", "C. ", "D. "]
        assert len(set(opts)) == 4


CHEM_EX = Example(id="c", prompt="p", answer="B", meta={"letters": "ABCD"})


@pytest.mark.parametrize(
    ("completion", "score"),
    [
        (r"\boxed{B}", 1.1),
        (r"It is iron. \boxed{ B }", 1.1),
        (r"\boxed{B} and again \boxed{B}", 1.1),
        (r"\boxed{A}", 0.1),
        (r"\boxed{b}", 0.0),  # lower case is not the format
        (r"\boxed{A} \boxed{B}", 0.0),  # two different letters
        (r"\boxed{B} \boxed{A}", 0.0),
        ("B", 0.0),
        ("Answer: B", 0.0),
        ("a b c d B", 0.0),
        (r"\boxed{(B)}", 0.0),
        (r"\boxed{B.}", 0.0),
        (r"\boxed{\text{B}}", 0.0),
        (r"\boxed{E}", 0.0),
        (r"\boxed{BB}", 0.0),
        (r"\boxed{}", 0.0),
        (r"\boxed{B", 0.0),
    ],
)
def test_chemistry_reward_adversarial(completion: str, score: float) -> None:
    r = get_task("chemistry", n_train=1, n_eval=1).reward(completion, CHEM_EX)
    assert r.score == pytest.approx(score)
    assert r.correct == (score > 1)


# -- boolq ------------------------------------------------------------------------------------


def test_boolq_balanced_and_answer_only_in_passage(built: dict) -> None:
    t = built["boolq"]
    for split in ("train", "eval"):
        items = t.split(split)
        c = Counter(e.answer for e in items)
        assert abs(c["yes"] - c["no"]) <= 1
        assert abs(Counter(e.answer for e in items[:20])["yes"] - 10) <= 1
    ev = t.split("eval")
    fams = Counter(e.meta["family"] for e in ev)
    assert len(fams) == 6 and min(fams.values()) > 40
    for fam in fams:  # every template family answers both ways
        assert {e.answer for e in ev if e.meta["family"] == fam} == {"yes", "no"}
    assert all(e.prompt.startswith("Passage: ") and "\nQuestion: " in e.prompt for e in ev)


YES_EX = Example(id="q", prompt="p", answer="yes")


@pytest.mark.parametrize(
    ("completion", "score"),
    [
        (r"\boxed{yes}", 1.1),
        (r"\boxed{Yes}", 1.1),
        (r"\boxed{ YES }", 1.1),
        (r"\boxed{\text{yes}}", 1.1),
        (r"\boxed{yes} \boxed{yes}", 1.1),
        (r"\boxed{no}", 0.1),
        (r"\boxed{yes} \boxed{no}", 0.0),
        (r"\boxed{no} \boxed{yes}", 0.0),
        ("yes", 0.0),
        ("Yes, it does.", 0.0),
        (r"\boxed{maybe}", 0.0),
        (r"\boxed{yes.}", 0.0),
        (r"\boxed{y}", 0.0),
        (r"\boxed{yes or no}", 0.0),
        (r"\boxed{}", 0.0),
        (r"\boxed{yes", 0.0),
    ],
)
def test_boolq_reward_adversarial(completion: str, score: float) -> None:
    r = get_task("boolq", n_train=1, n_eval=1).reward(completion, YES_EX)
    assert r.score == pytest.approx(score)
    assert r.correct == (score > 1)


# -- local-file variants ----------------------------------------------------------------------


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_local_math_numeric_and_symbolic_answers(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}", "answer": a} for i, a in enumerate(["1,000", 72, "3.5", "\\frac{1}{2}", "$18"] * 4)]
    t = get_task("math", data=str(_write(tmp_path / "m.jsonl", rows)))
    tr, ev = t.split("train"), t.split("eval")
    assert (len(tr), len(ev)) == (16, 4) and (t.n_train, t.n_eval) == (16, 4)
    by_prompt = {e.prompt: e for e in tr + ev}
    assert by_prompt["q0"].answer == 1000 and by_prompt["q2"].answer == 3.5 and by_prompt["q4"].answer == 18
    assert t.score(r"\boxed{1000}", by_prompt["q0"]).correct
    assert t.score(r"\boxed{3.5}", by_prompt["q2"]).correct
    assert t.score(r"\boxed{\frac{1}{2}}", by_prompt["q3"]).correct
    assert not t.score(r"\boxed{\frac{1}{3}}", by_prompt["q3"]).correct
    assert t.system_prompt() and "\\boxed" in t.system_prompt()


def test_local_chemistry_and_boolq(tmp_path: Path) -> None:
    chem = _write(tmp_path / "c.jsonl", [{"prompt": f"Q{i}\nA. x\nB. y", "answer": "ab"[i % 2]} for i in range(10)])
    t = get_task("chemistry", data=str(chem), n_train=6, n_eval=4)
    ex = t.split("eval")[0]
    assert ex.answer in ("A", "B")
    assert t.score(f"\\boxed{{{ex.answer}}}", ex).correct
    assert not t.score(f"\\boxed{{{ex.answer.lower()}}}", ex).correct
    bq_tr = _write(tmp_path / "b_tr.jsonl", [{"prompt": f"P{i}", "answer": ["True", "no"][i % 2]} for i in range(6)])
    bq_ev = _write(tmp_path / "b_ev.jsonl", [{"prompt": f"E{i}", "answer": "YES"} for i in range(3)])
    b = get_task("boolq", data=str(bq_tr), eval_data=str(bq_ev))
    assert len(b.split("train")) == 6 and [e.answer for e in b.split("eval")] == ["yes"] * 3
    assert b.score(r"\boxed{Yes}", b.split("eval")[0]).correct


def test_local_files_report_bad_rows(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.jsonl", ['{"prompt": "x"}', "not json", {"prompt": "ok", "answer": "A"}])
    with pytest.raises(TaskError, match="2 malformed row"):
        get_task("chemistry", data=str(bad)).split("eval")
    wrong = _write(tmp_path / "w.jsonl", [{"prompt": f"q{i}", "answer": "maybe"} for i in range(5)])
    with pytest.raises(TaskError, match="cannot grade"):
        get_task("boolq", data=str(wrong)).split("eval")
    letters = _write(tmp_path / "l.jsonl", [{"prompt": f"q{i}", "answer": "AB"} for i in range(5)])
    with pytest.raises(TaskError, match="single option letter"):
        get_task("chemistry", data=str(letters)).split("eval")
    with pytest.raises(TaskError, match="not found"):
        get_task("math", data=str(tmp_path / "missing.jsonl"))

"""The generated fuzz corpus (issue 26): every loader, every reward, the config parser, every scorer endpoint.

Each input must end in a correct result or one `EvotuneError` line — never another exception (a
traceback), never a hang past its limit, never a state change on refusal. The default run takes a
fast slice (FAST inputs per driver); `pytest -m slow tests/test_fuzz.py` runs the full corpus
(FULL = 10 000 inputs per driver), and prints the counts docs/reliability.md reports.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

import fuzz_corpus as corpus
from evotune.errors import EvotuneError
from evotune.timeouts import time_limit

SEED = int(os.environ.get("EVOTUNE_FUZZ_SEED", "26"))
FAST, FULL = 60, 10_000
LOADERS = ["jsonl", "countdown", "conciseness", "math", "boolq", "chemistry", "safety",
           "countdown-reference", "conciseness-reference"]  # -reference: the published files' names and layouts
REWARDS = [("jsonl", {"reward": "exact"}), ("jsonl", {"reward": "numeric"}), ("jsonl", {"reward": "contains"}),
           ("jsonl", {"reward": "regex"}), ("countdown", {}), ("countdown", {"reward": "reference"}),
           ("conciseness", {}), ("math", {}), ("boolq", {}), ("chemistry", {})]
LIMIT_S = 20.0  # per input: loading a small file or scoring one completion takes milliseconds


class Hang(Exception):
    pass


def limit(seconds: float) -> AbstractContextManager[None]:
    """SIGALRM after `seconds`: an input that hangs fails the test instead of stalling it."""
    return time_limit(seconds, lambda: Hang(f"no answer within {seconds} s"))


def one_line(exc: BaseException) -> None:
    msg = str(exc)
    assert msg and "\n" not in msg and "Traceback" not in msg and len(msg) < 4000, msg[:500]


def drive(n: int, case: Callable[[int], str]) -> Counter[str]:
    """Run `case(i)` for i < n; each returns 'ok' or 'refused'; anything else raised fails with the index."""
    counts: Counter[str] = Counter()
    for i in range(n):
        try:
            counts[case(i)] += 1
        except AssertionError as exc:
            raise AssertionError(f"input {i} (seed {SEED}): {exc}") from exc
    return counts


def report(name: str, counts: Counter[str]) -> None:
    print(f"fuzz {name}: {sum(counts.values())} inputs, {counts['ok']} loaded/scored, {counts['refused']} refused "
          "in one line, 0 tracebacks, 0 hangs")


# -- loaders ---------------------------------------------------------------------------------------
def _loader_case(loader: str, tmp: Path) -> Callable[[int], str]:
    from evotune.tasks import get_task
    from evotune.tasks.base import text_problem

    task, _, ref = loader.partition("-")
    name = {"countdown": "countdown.json", "conciseness": "conciseness_train.jsonl"}.get(task, "data.jsonl")

    def case(i: int) -> str:
        raw = corpus.data_file(task, SEED, i)
        d = tmp / f"in{i % 4}"
        d.mkdir(exist_ok=True)
        path = d / (name if ref else "data.jsonl")
        path.write_bytes(raw)
        opts: dict[str, Any] = {"data": str(path)}
        if ref and task == "countdown":
            opts["split"] = "reference"
        try:
            with limit(LIMIT_S):
                t = get_task(task, seed=i, **opts)
                tr, ev = t.split("train"), t.split("eval")
        except EvotuneError as exc:
            one_line(exc)
            result = "refused"
        else:
            examples = [*tr, *ev]
            assert len({e.id for e in examples}) == len(examples), "ids repeat across the splits"
            assert not ({e.prompt for e in tr} & {e.prompt for e in ev}), "splits overlap"
            assert all(text_problem(e.prompt) is None for e in examples)
            result = "ok"
        assert path.read_bytes() == raw and sorted(p.name for p in d.iterdir()) == [path.name], "state changed"
        path.unlink()
        return result

    return case


@pytest.mark.parametrize("loader", LOADERS)
def test_fuzz_loaders_fast(loader, tmp_path):
    report(f"loader {loader} (fast)", drive(FAST, _loader_case(loader, tmp_path)))


@pytest.mark.slow
@pytest.mark.parametrize("loader", LOADERS)
def test_fuzz_loaders_full(loader, tmp_path):
    report(f"loader {loader}", drive(FULL, _loader_case(loader, tmp_path)))


# -- rewards ---------------------------------------------------------------------------------------
def _reward_case(task: str, opts: dict[str, Any], tmp: Path) -> Callable[[int], str]:
    from evotune.tasks import get_task
    from evotune.tasks.base import MAX_SCORE, Reward

    if task == "jsonl":
        data = tmp / "rows.jsonl"
        answers = {"exact": ["Paris", "42", "a b"], "numeric": ["42", "-3.5", "1,000"],
                   "contains": ["blue", "x y"], "regex": [r"\d+", r"^yes\b", r"[a-z]{3}"]}[opts["reward"]]
        data.write_text("".join(f'{{"prompt": "q{i}", "answer": "{a}"}}\n'.replace("\\", "\\\\")
                                for i, a in enumerate(answers * 3)))
        t = get_task(task, data=str(data), n_train=4, n_eval=2, **opts)
    else:
        t = get_task(task, n_train=8, n_eval=4, **opts)
    examples = [*t.split("train"), *t.split("eval")]

    def case(i: int) -> str:
        comp = corpus.completion(SEED, i)
        ex = examples[i % len(examples)]
        t0 = time.perf_counter()
        try:
            r = t.score(comp, ex)  # its own limit: reward_timeout, then a one-line RewardTimeout
        except EvotuneError as exc:
            one_line(exc)
            return "refused"
        finally:
            assert time.perf_counter() - t0 < 3 * t.reward_timeout, "reward ran past its limit"  # (slack: a loaded machine)
        assert isinstance(r, Reward) and math.isfinite(r.score) and abs(r.score) <= MAX_SCORE
        assert isinstance(r.correct, bool)
        return "ok"

    return case


@pytest.mark.parametrize(("task", "opts"), REWARDS, ids=[f"{t}-{o.get('reward', 'default')}" for t, o in REWARDS])
def test_fuzz_rewards_fast(task, opts, tmp_path):
    report(f"reward {task} {opts} (fast)", drive(FAST * 4, _reward_case(task, opts, tmp_path)))


@pytest.mark.slow
@pytest.mark.parametrize(("task", "opts"), REWARDS, ids=[f"{t}-{o.get('reward', 'default')}" for t, o in REWARDS])
def test_fuzz_rewards_full(task, opts, tmp_path):
    report(f"reward {task} {opts}", drive(FULL, _reward_case(task, opts, tmp_path)))


# -- the config parser -----------------------------------------------------------------------------
def _config_case(tmp: Path) -> Callable[[int], str]:
    from evotune.cli.common import parse_sets
    from evotune.config import TrainConfig, build_config

    def case(i: int) -> str:
        raw = corpus.config_file(SEED, i)
        path = tmp / "c.yaml"
        path.write_bytes(raw)
        sets = corpus.set_text(SEED, i)
        try:
            with limit(LIMIT_S):
                cfg = build_config(path if i % 2 else None, parse_sets(sets))
        except EvotuneError as exc:
            one_line(exc)
            result = "refused"
        else:
            assert isinstance(cfg, TrainConfig)
            TrainConfig.model_validate(cfg.model_dump())  # what it holds validates again
            result = "ok"
        assert path.read_bytes() == raw and [p.name for p in tmp.iterdir()] == ["c.yaml"], "state changed"
        return result

    return case


def test_fuzz_config_fast(tmp_path):
    report("config (fast)", drive(FAST * 5, _config_case(tmp_path)))


@pytest.mark.slow
def test_fuzz_config_full(tmp_path):
    report("config --config/--set", drive(FULL, _config_case(tmp_path)))


# -- the scorer's endpoints, on a real server on 127.0.0.1 ------------------------------------------
def _scorer_case(url: str, calls: list[int]) -> Callable[[int], str]:
    import httpx

    client = httpx.Client(timeout=LIMIT_S)

    def case(i: int) -> str:
        method, path, headers, body = corpus.http_request(SEED, i)
        before = len(calls)
        t0 = time.perf_counter()
        r = client.request(method, url + path, headers=headers, content=body)
        assert time.perf_counter() - t0 < LIMIT_S
        assert r.status_code in (200, 400, 401, 404, 405, 413, 422), (r.status_code, r.text[:300])
        data = r.json()
        if r.status_code != 200:
            detail = data["detail"]
            assert isinstance(detail, str) and "\n" not in detail, detail
            assert len(calls) == before, "a refused request reached the model"
            return "refused"
        if path == "/score":
            import json

            sent = json.loads(body)["items"]
            assert len(data["scores"]) == len(sent)
            assert all(math.isfinite(s["reward"]) and math.isfinite(s["cost"]) for s in data["scores"])
        return "ok"

    return case


def _run_scorer(n: int) -> Counter[str]:
    from evotune.serve.app import BackgroundServer, ScorerConfig, create_app

    calls: list[int] = []

    class Fake:  # a tiny backend: the length of each text, so an answer is checkable
        def __call__(self, prompts: list[str], completions: list[str]) -> list[tuple[float, float]]:
            calls.append(len(prompts))
            return [(float(len(p)), float(len(c))) for p, c in zip(prompts, completions, strict=True)]

    cfg = ScorerConfig(token="fuzz-token", max_batch=8, max_chars=2000, max_body_bytes=100_000, timeout=10)
    with BackgroundServer(create_app(cfg, Fake())) as srv:
        return drive(n, _scorer_case(srv.url, calls))


def test_fuzz_scorer_fast():
    report("scorer (fast)", _run_scorer(FAST * 5))


@pytest.mark.slow
def test_fuzz_scorer_full():
    report("scorer /score /health", _run_scorer(FULL))

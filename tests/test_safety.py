"""Safety alignment: the scoring service over real HTTP, its client's failures, the safety task and its
Lagrangian λ, a scorer outage in the middle of an ES run, the judge tournament and the collapse detector."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from typer.testing import CliRunner

from evotune.analysis.judge import ELO_SCALE, PRIOR_SD, Observations, Tournament, fit_bt, tournament_summary
from evotune.checkpoints import latest_checkpoint, read_state
from evotune.cli.main import app as cli_app
from evotune.config import build_config
from evotune.errors import ConfigError, TaskError
from evotune.evaluation.collapse import collapse_stats
from evotune.runs.rundir import read_jsonl
from evotune.serve.app import (
    BackgroundServer,
    ScorerConfig,
    build_app,
    check_bind,
    create_app,
    is_loopback,
    token_ok,
)
from evotune.tasks import get_task
from evotune.tasks.safety import SafetyTask, is_refusal, lagrangian_step
from evotune.tasks.scorer_client import ScorerClient, ScorerError
from evotune.trainers import ESTrainer


# -- fixtures: tiny reward/cost heads behind a real server ---------------------------------------------
def _make_seqcls(out: Path, tok_dir: Path, num_labels: int, seed: int) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tok_dir)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, num_labels=num_labels, initializer_range=0.3,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    torch.manual_seed(seed)
    LlamaForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def scorer_app(tiny_model, tmp_path_factory):
    """Reward: a random 1-output seqcls head; cost: the tiny causal LM as yes/no judge."""
    rm = _make_seqcls(tmp_path_factory.mktemp("rm"), tiny_model, 1, 0)
    return build_app(ScorerConfig(reward=f"seqcls:{rm}", cost=f"judge:{tiny_model}", max_batch=8, max_chars=2000,
                                  max_body_bytes=64_000))


@pytest.fixture(scope="module")
def server(scorer_app):
    srv = BackgroundServer(scorer_app).start()
    yield srv
    srv.stop()


def _fake_app(cfg: ScorerConfig, fn) -> object:
    class Fake:
        def __call__(self, prompts, completions):
            return fn(prompts, completions)

        def describe(self):
            return {"reward": "fake", "cost": "fake"}

    return create_app(cfg, Fake())


# -- the service -------------------------------------------------------------------------------------
def test_service_scores_batches_in_order_over_http(server, tmp_path, tiny_model):
    c = ScorerClient(server.url)
    h = c.health()
    assert h["status"] == "ok" and h["max_batch"] == 8 and h["cost"].startswith("judge:")
    prompts = [f"How do I do thing {i}?" for i in range(19)]
    comps = [f"Answer number {i}." for i in range(19)]
    out = c.score(prompts, comps)  # three requests of <= 8
    assert len(out) == 19 and all(math.isfinite(r) and math.isfinite(x) for r, x in out)
    assert len({round(r, 6) for r, _ in out}) > 1  # items are scored, not broadcast
    assert c.score(prompts[5:6], comps[5:6])[0] == pytest.approx(out[5], abs=1e-4)  # order kept
    # a two-class cost head gives the log-odds of its `label` class
    from evotune.serve.backends import HeadSpec, SeqClsHead, conversation_text

    two = _make_seqcls(tmp_path / "cm", tiny_model, 2, 1)
    head = SeqClsHead(HeadSpec("seqcls", str(two), label=1))
    enc = head.tok([conversation_text(head.tok, "p", "c", "auto")], return_tensors="pt")
    p1 = torch.softmax(head.model(**enc).logits, -1)[0, 1].item()
    assert head(["p"], ["c"])[0] == pytest.approx(math.log(p1 / (1 - p1)), abs=1e-4)


def test_request_limits(server):
    url = server.url + "/score"
    item = {"prompt": "p", "completion": "c"}
    assert httpx.post(url, json={"items": [item] * 9}).status_code == 413  # max_batch=8
    assert httpx.post(url, json={"items": [{"prompt": "p", "completion": "x" * 2001}]}).status_code == 413
    big = httpx.post(url, content=b'{"items": [' + b" " * 70_000 + b"]}", headers={"content-type": "application/json"})
    assert big.status_code == 413 and "exceeds" in big.json()["detail"]
    chunked = httpx.post(url, content=(b" " * 10_000 for _ in range(8)), headers={"content-type": "application/json"})
    assert chunked.status_code == 413 and "exceeds 64000 bytes" in chunked.json()["detail"]  # no Content-Length
    assert httpx.post(url, json={"items": [{"prompt": "p"}]}).status_code == 422
    assert httpx.post(url, json={"items": []}).json()["scores"] == []
    with pytest.raises(ScorerError, match=r"refused a request of 9 items as too large"):
        ScorerClient(server.url, max_batch=9)._request("POST", "/score", {"items": [item] * 9})


def test_bearer_token_required_off_loopback_and_enforced():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("scorer.lan")
    with pytest.raises(ConfigError, match="without a bearer token"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "s3cret")
    check_bind("127.0.0.1", None)
    assert token_ok(None, None) and token_ok("Bearer x", None)
    assert token_ok("Bearer s3cret", "s3cret")
    assert not token_ok(None, "s3cret") and not token_ok("Bearer nope", "s3cret") and not token_ok("s3cret", "s3cret")
    res = CliRunner().invoke(cli_app, ["serve", "scorer", "--host", "0.0.0.0"], env={"EVOTUNE_SCORER_TOKEN": ""})
    assert res.exit_code == 2 and "without a bearer token" in res.output and "Traceback" not in res.output
    cfg = ScorerConfig(token="s3cret")
    with BackgroundServer(_fake_app(cfg, lambda p, c: [(1.0, 0.0)] * len(p))) as srv:
        body = {"items": [{"prompt": "p", "completion": "c"}]}
        assert httpx.post(srv.url + "/score", json=body).status_code == 401
        assert httpx.post(srv.url + "/score", json=body, headers={"Authorization": "Bearer no"}).status_code == 401
        assert ScorerClient(srv.url, token="s3cret").score(["p"], ["c"]) == [(1.0, 0.0)]
        with pytest.raises(ScorerError, match="rejected the credentials"):
            ScorerClient(srv.url, token="wrong").score(["p"], ["c"])


def test_client_retries_with_backoff_then_names_the_url():
    calls = {"n": 0}
    flaky = FastAPI()

    @flaky.get("/health")
    def health():
        return {"status": "ok", "max_batch": 4}

    @flaky.post("/score")
    async def score(request: Request):
        calls["n"] += 1
        if calls["n"] <= 2:
            return JSONResponse({"detail": "warming up"}, status_code=503)
        items = (await request.json())["items"]
        return {"scores": [{"reward": 2.0, "cost": 0.5}] * len(items)}

    with BackgroundServer(flaky) as srv:
        t0 = time.perf_counter()
        assert ScorerClient(srv.url, retries=3, backoff=0.1).score(["p"], ["c"]) == [(2.0, 0.5)]
        assert calls["n"] == 3 and time.perf_counter() - t0 >= 0.1 + 0.2  # backoff 0.1, then 0.2
        port = srv.port
    t0 = time.perf_counter()
    with pytest.raises(ScorerError) as err:
        ScorerClient(f"http://127.0.0.1:{port}", retries=2, backoff=0.05).score(["p"], ["c"])
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and "refused the connection (3 attempts)" in msg and "\n" not in msg
    assert time.perf_counter() - t0 >= 0.05 + 0.1


def test_timeouts_are_clear_errors():
    def slow(p, c):
        time.sleep(0.6)
        return [(0.0, 0.0)] * len(p)

    with (  # the server's own limit: 504
        BackgroundServer(_fake_app(ScorerConfig(timeout=0.2), slow)) as srv,
        pytest.raises(ScorerError, match=r"answered HTTP 504 \(scoring 1 items took longer than 0.2 s\)"),
    ):
        ScorerClient(srv.url, retries=0).score(["p"], ["c"])
    with (  # the client's limit
        BackgroundServer(_fake_app(ScorerConfig(timeout=30), slow)) as srv,
        pytest.raises(ScorerError, match=r"did not answer within 0.2 s \(2 attempts\)"),
    ):
        ScorerClient(srv.url, timeout=0.2, retries=1, backoff=0.01).score(["p"], ["c"])


@pytest.mark.parametrize(
    "answer, match",
    [
        (PlainTextResponse("<html>hello</html>"), "not JSON"),
        (JSONResponse({"result": []}), "no 'scores' list"),
        (JSONResponse({"scores": [{"reward": 1.0, "cost": 0.0}] * 2}), "2 scores for 1 items"),
        (JSONResponse({"scores": [{"reward": 1.0}]}), "item 0 is"),
        (JSONResponse({"scores": [{"reward": "1", "cost": 0.0}]}), "expected finite numbers"),
    ],
)
def test_malformed_answers_are_errors_never_zero_rewards(answer, match):
    bad = FastAPI()
    bad.get("/health")(lambda: {"status": "ok", "max_batch": 8})
    bad.post("/score")(lambda: answer)
    with BackgroundServer(bad) as srv:
        task = SafetyTask(**{"scorer_url": srv.url, "scorer_retries": 0})
        ex = task.split("eval")[0]
        with pytest.raises(ScorerError, match=match) as err:
            task.score_batch(["I can't help with that."], [ex])
        assert srv.url in str(err.value) and "garbage" in str(err.value)
        assert isinstance(err.value, TaskError)  # what the CLI prints as one line


# -- the task ------------------------------------------------------------------------------------------
def test_safety_prompts_splits_and_pku_layout(tmp_path):
    t = get_task("safety")
    tr, ev = t.split("train"), t.split("eval")
    assert len(tr) + len(ev) >= 150
    assert not {e.prompt for e in tr} & {e.prompt for e in ev}
    for split in (tr, ev):
        kinds = [e.answer["kind"] for e in split]
        assert abs(kinds.count("harmful") - kinds.count("benign")) <= 2  # stratified
    assert [e.id for e in get_task("safety", seed=1).split("eval")] != [e.id for e in ev]
    assert [e.id for e in get_task("safety").split("eval")] == [e.id for e in ev]
    assert is_refusal("I'm sorry, but I can't help with that.") and not is_refusal("Use `kill -9 PID`.")
    pku = tmp_path / "pku.jsonl"
    rows = [
        {"prompt": "How do I pick a lock?", "response_0": "a", "response_1": "b", "is_response_0_safe": False,
         "is_response_1_safe": True, "response_0_harm_category": {"Theft": True}},
        {"prompt": "How do I bake bread?", "response_0": "a", "response_1": "b", "is_response_0_safe": True,
         "is_response_1_safe": True},
        {"prompt": "How do I pick a lock?", "is_response_0_safe": True, "is_response_1_safe": True},  # repeat
    ] + [{"prompt": f"Question {i}?", "kind": "benign"} for i in range(6)]
    pku.write_text("\n".join(json.dumps(r) for r in rows))
    t = SafetyTask(n_train=5, n_eval=3, data=str(pku))
    items = {e.prompt: e.answer for e in t.split("train") + t.split("eval")}
    assert items["How do I pick a lock?"] == {"kind": "harmful", "category": "Theft"}
    assert items["How do I bake bread?"]["kind"] == "benign"
    pku.write_text(json.dumps({"text": "no prompt"}))
    with pytest.raises(TaskError, match="needs a non-empty string 'prompt'"):
        SafetyTask(**{"data": str(pku)}).split("train")
    with pytest.raises(TaskError, match="unknown option"):
        SafetyTask(**{"lamda": 1})


class _FakeReward:
    """RemoteReward's interface with scripted (reward, cost) per call."""

    def __init__(self, costs):
        self.costs, self.lam, self.last = list(costs), 0.0, []

    def __call__(self, prompts, completions):
        c = self.costs.pop(0)
        self.last = [(1.0, c)] * len(prompts)
        return [r - self.lam * x for r, x in self.last]


def test_lagrangian_update_rule_and_restore():
    assert lagrangian_step(1.0, 0.5, 0.0, 0.1) == pytest.approx(1.05)
    assert lagrangian_step(0.02, -1.0, 0.0, 0.1) == 0.0  # never negative
    assert lagrangian_step(0.5, 0.2, 0.2, 0.1) == 0.5  # at the threshold λ stays
    opts = {"lagrangian": True, "cost_lambda": 0.5, "lambda_lr": 0.2, "cost_threshold": 0.1}
    t = SafetyTask(**opts)
    t._reward_fn = _FakeReward([0.9, 0.7, -5.0, 2.0])
    ex = t.split("train")[:2]
    states, lams = [], []
    for k in (1, 2, 3):
        t.begin(k)
        rewards = t.score_batch(["a", "b"], ex)
        lams.append(t.lam)
        assert rewards[0].score == pytest.approx(1.0 - t.lam * rewards[0].components["cost"])
        states.append(t.end(k))
    assert [s["safety/lambda"] for s in states] == lams
    expect = [0.5]
    for c in (0.9, 0.7, -5.0):
        expect.append(max(0.0, expect[-1] + 0.2 * (c - 0.1)))
    assert lams == pytest.approx(expect[:3]) and t.lam == pytest.approx(expect[3]) and expect[3] == 0.0
    fresh = SafetyTask(**opts)
    fresh.resume(states)
    assert fresh.lam == t.lam
    with pytest.raises(TaskError, match="λ settings changed"):
        SafetyTask(**{**opts, "cost_lambda": 0.7}).resume(states)
    fixed = SafetyTask(**{"cost_lambda": 2.0})
    fixed._reward_fn = _FakeReward([1.5])
    fixed.begin(1)
    fixed.score_batch(["a"], ex[:1])
    assert fixed.end(1) == {"safety/lambda": 2.0, "safety/reward_mean": 1.0, "safety/cost_mean": 1.5}
    assert fixed.lam == 2.0


# -- an ES run across a scorer outage --------------------------------------------------------------------
class _FailsOnIteration2:
    """ASGI wrapper: once the run has committed iteration 1, the service fails in the chosen way."""

    def __init__(self, app, traj: Path, mode: str):
        self.app, self.traj, self.mode, self.server = app, traj, mode, None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/score" and len(read_jsonl(self.traj)) >= 1:
            if self.mode == "timeout":  # hangs past the client's timeout
                await asyncio.sleep(2.5)
            status, body = {"down": (503, b"shutting down"), "timeout": (504, b"{}"),
                            "garbage": (200, b'{"scores": []}')}[self.mode]
            if self.mode == "down":  # answers 503 while shutting down, then is gone
                self.server.should_exit = True
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json")]})
            return await send({"type": "http.response.body", "body": body})
        await self.app(scope, receive, send)


def _safety_cfg(run: Path, tiny_model: Path, url: str):
    return build_config(None, {
        "run_dir": str(run), "model.name": str(tiny_model), "task.name": "safety", "task.n_train": 16,
        "task.n_eval": 4, "task.options": {"scorer_url": url, "scorer_retries": 1, "scorer_backoff": 0.05,
                                           "scorer_timeout": 1.0, "lagrangian": True, "cost_lambda": 0.5,
                                           "lambda_lr": 0.5},
        "es.population": 4, "es.sigma": 0.05, "es.alpha": 0.02, "es.iterations": 3, "es.prompts_per_iteration": 4,
        "generation.max_new_tokens": 8, "eval.every": 0, "checkpoint_every": 1, "threads": 1,
    })


@pytest.fixture(scope="module")
def reference_run(server, tiny_model, tmp_path_factory):
    """The same safety ES run, never interrupted."""
    ref = tmp_path_factory.mktemp("ref") / "run"
    ESTrainer(_safety_cfg(ref, tiny_model, server.url), progress=False).train()
    return ref


@pytest.mark.parametrize("mode, message", [
    ("down", "refused the connection|answered HTTP 503"),
    ("timeout", r"did not answer within 1 s \(2 attempts\)"),
    ("garbage", "answered garbage: 0 scores for 4 items"),
])
def test_es_run_stops_with_a_clear_error_and_resumes_exactly(
    mode, message, scorer_app, tiny_model, reference_run, tmp_path
):
    run = tmp_path / "run"
    failing = _FailsOnIteration2(scorer_app, run / "trajectory.jsonl", mode)
    srv = BackgroundServer(failing)
    failing.server = srv.start().server
    url, port = srv.url, srv.port
    with pytest.raises(ScorerError, match=message) as err:
        ESTrainer(_safety_cfg(run, tiny_model, url), progress=False).train()
    srv.stop()
    assert url in str(err.value) and "\n" not in str(err.value)
    assert [r["step"] for r in read_jsonl(run / "trajectory.jsonl")] == [1]
    with BackgroundServer(scorer_app, port=port):  # the service is back (fixed) on the same address
        ESTrainer(_safety_cfg(run, tiny_model, url), resume=True, progress=False).train()
    ref = reference_run
    a, b = read_state(latest_checkpoint(ref)), read_state(latest_checkpoint(run))
    assert a["iteration"] == b["iteration"] == 3 and a["checksum"] == b["checksum"]  # nothing lost
    ta, tb = read_jsonl(ref / "trajectory.jsonl"), read_jsonl(run / "trajectory.jsonl")
    assert [r["task_state"] for r in ta] == [r["task_state"] for r in tb]
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "train/reward_mean" in r] == [1, 2, 3]


def test_lagrangian_lambda_follows_the_logged_costs(reference_run):
    ta = read_jsonl(reference_run / "trajectory.jsonl")
    assert ta[0]["task_state"]["safety/lambda"] == 0.5
    for prev, nxt in zip(ta, ta[1:], strict=False):
        s = prev["task_state"]
        assert nxt["task_state"]["safety/lambda"] == lagrangian_step(s["safety/lambda"], s["safety/cost_mean"], 0.0, 0.5)
    evals = [r for r in read_jsonl(reference_run / "metrics.jsonl") if "eval/reward_mean" in r]
    assert {"eval/reward_cost", "eval/reward_reward", "eval/collapse_mode_share", "eval/collapse_distinct_2"} <= set(evals[-1])
    train = [r for r in read_jsonl(reference_run / "metrics.jsonl") if "train/reward_mean" in r]
    assert [r["safety/lambda"] for r in train] == [r["task_state"]["safety/lambda"] for r in ta]


def test_grpo_scores_through_the_service_and_resumes_its_lambda(server, tiny_model, tmp_path):
    from evotune.trainers.grpo import GRPOTrainer

    def cfg(steps: int):
        return build_config(None, {
            "method": "grpo", "run_dir": str(tmp_path / "g"), "model.name": str(tiny_model), "task.name": "safety",
            "task.n_train": 8, "task.n_eval": 2, "task.options": {"scorer_url": server.url, "lagrangian": True,
                                                                 "cost_lambda": 0.5, "lambda_lr": 0.5},
            "grpo.num_generations": 2, "grpo.prompts_per_step": 2, "grpo.steps": steps, "grpo.beta": 0.0,
            "generation.max_new_tokens": 4, "eval.every": 0, "checkpoint_every": 1, "threads": 1,
        })

    n = torch.get_num_threads()
    try:
        GRPOTrainer(cfg(2), progress=False).train()
        GRPOTrainer(cfg(3), resume=True, progress=False).train()  # λ of step 3 from the logged steps 1–2
    finally:
        torch.set_num_threads(n)
    rows = [r for r in read_jsonl(tmp_path / "g" / "metrics.jsonl") if "train/reward_mean" in r]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[0]["safety/lambda"] == 0.5
    for prev, nxt in zip(rows, rows[1:], strict=False):
        assert nxt["safety/lambda"] == lagrangian_step(prev["safety/lambda"], prev["safety/cost_mean"], 0.0, 0.5)
        assert math.isfinite(prev["safety/reward_mean"])


def test_cli_error_is_one_line_when_no_scorer_runs(tiny_model, tmp_path):
    with BackgroundServer(FastAPI()) as srv:
        port = srv.port  # a port that was free a moment ago and is closed now
    res = CliRunner().invoke(cli_app, [
        "train", "es", "--task", "safety", "--model", str(tiny_model), "--run-dir", str(tmp_path / "r"),
        "--iterations", "1", "--population", "2", "--max-new-tokens", "4", "--n-eval", "2", "--no-progress",
        "--set", f"task.options={{scorer_url: 'http://127.0.0.1:{port}', scorer_retries: 0}}",
    ])
    assert res.exit_code == 2, res.output
    assert f"http://127.0.0.1:{port}/health refused the connection" in res.output and "Traceback" not in res.output


# -- judge tournament -----------------------------------------------------------------------------------
def _simulated(true: np.ndarray, n_prompts: int, bias: float, seed: int) -> Tournament:
    """Replies named by model; a judge that prefers the stronger one, plus `bias` toward the first slot."""
    rng = np.random.default_rng(seed)
    models = [f"m{i}" for i in range(len(true))]
    comps = {m: [f"{m} reply {k}" for k in range(n_prompts)] for m in models}

    def judge(queries):
        out = []
        for q in queries:
            i, j = int(q.first[1]), int(q.second[1])
            p = 1 / (1 + math.exp(-(true[i] - true[j] + bias)))
            out.append(1.0 if rng.random() < p else -1.0)
        return out

    return Tournament(models, [f"prompt {k}" for k in range(n_prompts)], comps).run(judge)


def test_bradley_terry_recovers_known_strengths_with_covering_intervals():
    true = np.array([0.0, 0.6, 1.2, -0.8])
    s = tournament_summary(_simulated(true, 120, 0.0, 0), None, n_boot=200)
    elo_true = 1000 + ELO_SCALE * (true - true.mean())
    for g in ("helpfulness", "harmlessness", "overall"):
        got = [s[g]["elo"][f"m{i}"] for i in range(4)]
        assert np.argsort([c["elo"] for c in got]).tolist() == np.argsort(true).tolist()
        if g == "overall":
            for c, t in zip(got, elo_true, strict=True):
                assert c["lo"] <= t <= c["hi"]
    wr = s["overall"]["win_rate"]
    assert wr[2][3] > 0.75 and wr[3][2] < 0.25 and wr[0][0] is None
    assert abs(s["overall"]["position"]["first_rate"] - 0.5) < 0.05


def _random_comparisons(n: int, m: int, seed: int, home: bool) -> tuple[Observations, list[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    true = rng.normal(size=n)
    first = rng.integers(0, n, m)
    second = (first + rng.integers(1, n, m)) % n
    p = 1 / (1 + np.exp(-(true[first] - true[second] + (0.7 if home else 0.0))))
    y = (rng.random(m) < p).astype(float)
    if home:
        y[:10] = 0.5  # ties (identical replies)
    obs = Observations(first, second, y, np.full(m, 1.0 if home else 0.0), np.arange(m))
    return obs, [(int(a), int(b)) if w == 1 else (int(b), int(a)) for a, b, w in zip(first, second, y, strict=True)]


def test_bradley_terry_fit_matches_choix_and_scipy():
    """fit_bt is the MAP of Bradley–Terry with a N(0, PRIOR_SD²) prior: choix's opt_pairwise with penalty
    1/(2·PRIOR_SD²) (no position term, no ties), and scipy's minimiser of the same objective with both."""
    import choix
    from scipy.optimize import minimize

    n = 5
    obs, pairs = _random_comparisons(n, 400, 0, home=False)
    beta, b = fit_bt(obs, n)
    ref = choix.opt_pairwise(n, pairs, alpha=1 / (2 * PRIOR_SD**2), method="Newton-CG", tol=1e-10)
    assert np.allclose(beta, ref - ref.mean(), atol=1e-6) and b == pytest.approx(0.0, abs=1e-12)

    obs, _ = _random_comparisons(n, 400, 1, home=True)
    beta, b = fit_bt(obs, n)

    def neg_log_post(theta: np.ndarray) -> float:
        z = theta[obs.first] - theta[obs.second] + theta[n] * obs.home
        return float(np.sum(np.logaddexp(0, -z) * obs.y + np.logaddexp(0, z) * (1 - obs.y))
                     + 0.5 * np.sum(theta**2) / PRIOR_SD**2)

    ref = minimize(neg_log_post, np.zeros(n + 1), method="BFGS", options={"gtol": 1e-9}).x
    assert np.allclose(beta, ref[:n] - ref[:n].mean(), atol=1e-5) and b == pytest.approx(ref[n], abs=1e-5)
    assert b > 0.3  # the simulated first-position advantage (0.7) is found


def test_position_bias_is_cancelled_and_measured():
    true = np.array([0.0, 0.5, 1.0])
    s = tournament_summary(_simulated(true, 150, 1.5, 1), None, n_boot=200)
    pe = s["overall"]["position_effect"]
    assert pe["lo"] <= 1.5 <= pe["hi"]
    assert s["overall"]["position"]["first_rate"] > 0.65
    elo_true = 1000 + ELO_SCALE * (true - true.mean())
    for i, t in enumerate(elo_true):
        c = s["overall"]["elo"][f"m{i}"]
        assert c["lo"] <= t <= c["hi"]
    # a judge that always picks the first reply knows nothing: equal ratings, all-tie win rates
    always = Tournament(["a", "b"], ["p1", "p2", "p3"], {"a": ["x", "y", "z"], "b": ["u", "v", "w"]})
    s = tournament_summary(always.run(lambda qs: [3.0] * len(qs)), None, n_boot=50)
    assert s["overall"]["elo"]["a"]["elo"] == pytest.approx(1000, abs=1e-6)
    assert s["overall"]["win_rate"][0][1] == 0.5 and s["overall"]["position"]["consistency"] == 0.0
    # ... unless its margins carry the preference: hard verdicts are all "first" (ties), soft ones rank
    true = {"a": 0.0, "b": 1.0, "c": -1.0}
    margins = Tournament(list(true), [f"p{k}" for k in range(30)], {m: [f"{m} {k}" for k in range(30)] for m in true})
    margins.run(lambda qs: [5.0 + true[q.first[0]] - true[q.second[0]] for q in qs])
    s = tournament_summary(margins, None, n_boot=50)
    assert {m: round(v["elo"]) for m, v in s["overall"]["elo"].items()} == {"a": 1000, "b": 1000, "c": 1000}
    soft = [s["overall"]["soft"]["elo"][m]["elo"] for m in ("c", "a", "b")]
    assert soft == sorted(soft) and soft[2] - soft[0] > 100


def test_scorer_agreement_and_identical_replies():
    t = Tournament(["a", "b"], ["p1", "p2"], {"a": ["same", "short"], "b": ["same", "a much longer reply"]})
    t.run(lambda qs: [1.0 if len(q.first) > len(q.second) else -1.0 for q in qs])  # judge likes length
    assert sum(o.identical for o in t.outcomes) == 2  # p1 in both criteria, never shown to the judge
    rows = {"a": [{"reward": 0.0, "components": {"reward": 0.0, "cost": 1.0}},
                  {"reward": 1.0, "components": {"reward": 1.0, "cost": 0.0}}],
            "b": [{"reward": 0.0, "components": {"reward": 0.0, "cost": 1.0}},
                  {"reward": -1.0, "components": {"reward": 2.0, "cost": 3.0}}]}
    s = tournament_summary(t, rows, n_boot=20)
    assert s["helpfulness"]["win_rate"][1][0] == 0.75  # b won p2, tied p1
    assert s["scorer"]["helpfulness"] == {"scorer_view": "reward", "n": 1, "rate": 1.0, "rank_tau": 1.0,
                                          "soft_n": 1, "soft_rate": 1.0, "soft_rank_tau": 1.0}
    assert s["scorer"]["harmlessness"]["rate"] == 0.0 and s["scorer"]["overall"]["scorer_view"] == "fitness"
    assert len(s["outcomes"]) == 4  # raw log-odds kept, so ratings can be recomputed


def test_judge_cli_writes_json_html_and_report_section(tiny_model, tmp_path, server):
    from evotune.backends.models import make_tiny

    other = make_tiny(tmp_path / "tiny1", seed=1)
    report = tmp_path / "report"
    report.mkdir()
    (report / "summary.json").write_text(json.dumps({
        "models": ["x"], "entries": [], "base": {"label": "base", "spec": "s", "path": "p"}, "tasks": [],
        "primary_task": "safety", "settings": {}}))
    res = CliRunner().invoke(cli_app, [
        "judge", "--models", f"{tiny_model},{other}", "--labels", "base,other", "--judge", str(tiny_model),
        "--task", "safety", "--n", "4", "--max-new-tokens", "8", "--bootstrap", "30", "--out", str(tmp_path / "j"),
        "--report", str(report), "--scorer-url", server.url, "--device", "cpu",
    ])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "j" / "judge.json").read_text())
    assert s["settings"]["device"] == "cpu"
    assert s["models"] == ["base", "other"] and s["criteria"] == ["helpfulness", "harmlessness", "overall"]
    for g in s["criteria"]:
        e = s[g]["elo"]["base"]
        assert e["lo"] <= e["elo"] <= e["hi"]
    assert set(s["collapse"]["base"]) >= {"mode_share", "distinct_1", "distinct_2"}
    assert set(s["refusal"]["base"]) == {"harmful", "benign"} and "overall" in s["scorer"]
    assert "Judge tournament" in (report / "index.html").read_text()
    assert "win rate, helpfulness" in (tmp_path / "j" / "judge.html").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_judge_and_scorer_load_their_models_where_device_says(tiny_model, tmp_path):
    """One placement: --device reaches every model the judge and both scorer heads load."""
    with pytest.raises(ValueError, match="device"):
        ScorerConfig(device="tpu")
    for args in (["serve", "scorer", "--reward", "none", "--cost", f"judge:{tiny_model}"],
                 ["serve", "scorer", "--reward", f"seqcls:{_make_seqcls(tmp_path / 'rm', tiny_model, 1, 0)}",
                  "--cost", "none"],
                 ["judge", "--models", f"{tiny_model},{tiny_model}", "--judge", str(tiny_model), "--task", "safety",
                  "--n", "2", "--no-scorer", "--out", str(tmp_path / "j")]):
        res = CliRunner().invoke(cli_app, [*args, "--device", "cuda"])
        assert res.exit_code == 2 and "no CUDA GPU" in res.output, (args, res.output)


# -- collapse ---------------------------------------------------------------------------------------------
def test_collapse_detector():
    nouns = ["a bomb", "meth", "a gun", "ransomware", "a fake ID", "poison", "a keylogger", "fake money"]
    template = [f"I'm sorry, but I can't help with making {n}. It is illegal and dangerous." for n in nouns]
    varied = ["Use kill -9 with the PID.", "Preheat the oven to 220 C and bake for 30 minutes.",
              "A stroke shows as face drooping, arm weakness and slurred speech."]
    s = collapse_stats(template + varied)
    assert s["mode_share"] == pytest.approx(8 / 11) and s["collapsed"] == 1.0
    assert "I'm sorry" in s["mode_response"] and s["unique_share"] == 1.0  # collapse without exact repeats
    d = collapse_stats(varied)
    assert d["mode_share"] == pytest.approx(1 / 3) and d["collapsed"] == 0.0
    assert d["distinct_2"] > s["distinct_2"] and d["distinct_1"] > s["distinct_1"]
    same = collapse_stats(["Hello there!"] * 5 + ["hello, there"])
    assert same["mode_share"] == 1.0 and same["unique_share"] == pytest.approx(1 / 6)
    assert collapse_stats([]) == {}


def test_score_batch_default_scores_one_by_one():
    t = get_task("toy_letters")
    ex = t.split("train")[:2]
    assert [r.score for r in t.score_batch(["aaa", "bab"], ex)] == [1.0, pytest.approx(1 / 3)]
    with pytest.raises(TaskError):
        t.score_batch(["a"], ex)

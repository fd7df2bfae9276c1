"""Every bad input gets one line and loses nothing: one test per class of issue 26 (docs/reliability.md).

Each test drives the whole class (every loader, every edge), not one example; the generated corpus
that goes further is `tests/test_fuzz.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
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


@pytest.mark.parametrize("task", sorted(LOADERS))
def test_errors_never_echo_a_huge_or_multi_line_input(task, tmp_path):
    """Class 3, found by the full corpus: a message that quotes a 5000-digit field name or value, or one
    holding a newline or a NUL, is still one short line (the value shown by its ends and its length)."""
    row = LOADERS[task]
    huge = "9" * 5000
    variants = [{(k + huge if k == key else k): v for k, v in row.items()} for key in row]  # a key renamed
    variants += [{**row, key: huge + "\n\x00" + huge} for key in row]  # a value no loader expects
    variants += [{**row, "x\nkey" + huge: 1}]
    for i, (bad, alone) in enumerate((b, alone) for b in variants for alone in (True, False)):
        path = tmp_path / f"data{i}.jsonl"
        path.write_text(json.dumps(bad) + "\n" + ("" if alone else json.dumps(row) + "\n"))
        try:
            t = get_task(task, data=str(path))
            t.split("train")
            t.split("eval")
        except TaskError as exc:
            msg = str(exc)
            assert "\n" not in msg and "\x00" not in msg and len(msg) < 1500, (bad.keys(), msg[:300])
            assert f"[{len(huge)} chars]" in msg or huge not in msg


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


# -- class 1: configuration text ---------------------------------------------------------------------
SET_TEXTS = [
    "es.sigma=[1", "es.sigma={a: [", "es.sigma='unclosed", "es.sigma=!!python/object:os.system x",
    "es.sigma=" + "[" * 3000, "es.sigma=" + "9" * 5000, "es.sigma=a: b: c", "es..sigma=1", ".es=1",
    "es.sigma=\t[", "es.sigma=*alias", "es.sigma=&a [*a]", "es=3", "es.sigma=.nan", "es.sigma=\"\\ud800\"",
    "a\nb\x1e=" + "[" * 40 + "]" * 40,  # found by the full corpus: a key holding a newline, echoed in the message
]


@pytest.mark.parametrize("text", SET_TEXTS)
def test_set_values_that_are_not_valid_yaml_or_config_are_one_line(text):
    from evotune.cli.common import parse_sets
    from evotune.config import build_config
    from evotune.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        build_config(None, parse_sets([text]))
    msg = str(info.value)
    assert "\n" not in msg and "\x1e" not in msg and len(msg) < 600, msg


@pytest.mark.parametrize("text", [
    "es:\n  sigma: [1\n", "es: {\n", "a: 1\na: 2\n", "- 1\n- 2\n", "es:\n  sigma: " + "[" * 3000 + "\n",
    "x: " + "7" * 5000 + "\n", "run_dir: \"a\\0b\"\n", "run_dir: \"\\ud800\"\n", "\tes: 1\n", "es: !!binary x\n",
    # found by the full corpus: keys with a newline or control characters, and huge keys, echoed in the message
    "\"a\\nb\\x1e\": " + "[" * 40 + "]" * 40 + "\n", "\"k\\n" + "7" * 5000 + "\": 1\n",
])
def test_config_files_that_are_not_valid_yaml_are_one_line(text, tmp_path):
    from evotune.config import build_config
    from evotune.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="c.yaml") as info:
        build_config(path)
    assert "\n" not in str(info.value) and "\x1e" not in str(info.value) and len(str(info.value)) < 1500
    path.write_bytes(b"es:\n  sigma: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        build_config(path)


def test_a_config_path_that_is_missing_or_not_a_file_says_which(tmp_path):
    from evotune.config import build_config
    from evotune.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        build_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is not a regular file"):
        build_config(tmp_path)


def test_cli_yaml_and_include_errors_are_one_line(tiny_model, tmp_path):
    """The CLI prints one line for a bad --set and for es.include patterns that match no parameter."""
    from typer.testing import CliRunner

    from evotune.cli.main import app

    base = ["train", "es", "--task", "toy_letters", "--model", str(tiny_model), "--population", "2",
            "--iterations", "1", "--no-progress", "--threads", "1"]
    for extra in (["--set", "es.sigma=[1"], ["--set", "es.include=[nothing.matches]"],
                  ["--set", "es.include=[nothing.matches]", "--set", "es.lora.enabled=true"]):
        run = tmp_path / f"r{len(extra)}"
        res = CliRunner().invoke(app, [*base, "--run-dir", str(run), *extra])
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in res.output, res.output
        assert "es.include" in lines[0] or "--set" in lines[0]
        assert not run.exists()  # a refused start leaves nothing


@pytest.mark.parametrize(("env", "msg"), [({"WANDB_MODE": "bogus"}, "WANDB_MODE='bogus'"),
                                          ({"WANDB_MODE": "online"}, "needs a W&B API key")])
def test_tracker_misconfiguration_is_one_line_before_the_run_starts(es_config, monkeypatch, tmp_path, env, msg):
    from evotune.errors import ConfigError
    from evotune.trainers import ESTrainer

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = es_config(report_to=["wandb"])
    with pytest.raises(ConfigError, match=msg):
        ESTrainer(cfg, progress=False).train()
    assert not Path(cfg.run_dir).exists()


# -- class 2: user plug-in code ----------------------------------------------------------------------
PLUGIN = '''
from evotune.tasks.base import Example, Reward, Task

class Abstract(Task):
    def build(self):
        return [], []

class InitRaises(Task):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        raise RuntimeError("bad option")
    def build(self):
        return [], []
    def reward(self, c, e):
        return Reward(0.0, {}, False)

class BuildRaises(InitRaises.__base__):
    def build(self):
        return {}["missing"]
    def reward(self, c, e):
        return Reward(0.0, {}, False)

class RenderRaises(Task):
    def build(self):
        return [Example(str(i), f"q{i}", 1) for i in range(4)], [Example("e", "qe", 1)]
    def render(self, e, tok):
        return 1 / 0
    def reward(self, c, e):
        return Reward(0.0, {}, False)

class RewardRaises(RenderRaises):
    def render(self, e, tok):
        return e.prompt
    def reward(self, c, e):
        return int("x")
'''


@pytest.mark.parametrize(("cls", "what"), [
    ("Abstract", "does not implement reward"), ("InitRaises", "RuntimeError: bad option"),
    ("BuildRaises", "build() raised KeyError"), ("RenderRaises", "ZeroDivisionError"),
    ("RewardRaises", "ValueError: invalid literal"),
])
def test_a_plug_in_bug_is_one_line_naming_plug_in_exception_and_line(cls, what, tiny_model, tmp_path, monkeypatch):
    """Class 2: every hook of a user's task; --debug adds the traceback; the failed start leaves nothing."""
    from typer.testing import CliRunner

    from evotune.cli.main import app

    (tmp_path / "plug26.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("EVOTUNE_DEBUG", raising=False)
    run = tmp_path / "run"
    args = ["train", "es", "--task", f"plug26:{cls}", "--model", str(tiny_model), "--run-dir", str(run),
            "--population", "2", "--iterations", "1", "--no-progress", "--threads", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert what in lines[0]
    if cls != "Abstract":
        assert "plug26.py:" in lines[0] and "--debug" in lines[0]
    assert not run.exists()
    debug = CliRunner().invoke(app, ["--debug", *args])
    assert debug.exit_code == 2 and "Traceback" in debug.output
    assert cls == "Abstract" or "plug26.py" in debug.output.split("Traceback", 1)[1]
    # `--debug` sets the variable for the whole process; monkeypatch.delenv here would *restore* it at teardown
    os.environ.pop("EVOTUNE_DEBUG", None)


# -- class 5: checks that come too late --------------------------------------------------------------
def test_a_train_prompt_longer_than_the_context_is_found_before_iteration_1(tiny_model, tmp_path):
    """Every split is checked up front, so a run can never fail at iteration 20 on every --resume."""
    from evotune.config import build_config
    from evotune.errors import ConfigError
    from evotune.trainers import ESTrainer

    rows = [{"prompt": f"q{i}", "answer": "a"} for i in range(40)]
    rows[37]["prompt"] = "word " * 3000  # past the tiny model's context, whichever split it lands in
    for split_file in ("data", "eval_data"):
        data = tmp_path / f"{split_file}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        other = tmp_path / f"other-{split_file}.jsonl"
        other.write_text("".join(json.dumps({"prompt": f"z{i}", "answer": "a"}) + "\n" for i in range(4)))
        files = {"task.data": str(data)} if split_file == "data" else {"task.data": str(other), "task.eval_data": str(data)}
        cfg = build_config(None, {"run_dir": str(tmp_path / f"run-{split_file}"), "model.name": str(tiny_model),
                                  "task.name": "jsonl", **files, "es.population": 2, "es.iterations": 20,
                                  "es.prompts_per_iteration": 1, "threads": 1})
        with pytest.raises(ConfigError, match=r"prompt .* tokens.*context of \d+ tokens.*before the first step"):
            ESTrainer(cfg, progress=False).train()
        assert not Path(cfg.run_dir).exists()


# -- class 6: the scoring service's lifecycle --------------------------------------------------------
def _scorer(cfg, fn):
    from evotune.serve.app import create_app

    class Fake:
        def __call__(self, prompts, completions):
            return fn(prompts, completions)

    return create_app(cfg, Fake())


def test_scorer_checks_auth_before_the_body_and_answers_bad_json_in_one_line():
    import httpx

    from evotune.serve.app import BackgroundServer, ScorerConfig

    calls = []
    cfg = ScorerConfig(token="sesame", max_body_bytes=100_000)
    with BackgroundServer(_scorer(cfg, lambda p, c: calls.append(p) or [(1.0, 0.0)] * len(p))) as srv:
        for body in (b"{bad", b'{"items": NaN}', b"x" * 200_000):  # no token: 401 whatever the body
            r = httpx.post(srv.url + "/score", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 401, (body[:20], r.text)
        auth = {"Authorization": "Bearer sesame", "content-type": "application/json"}
        for body, status in [
            (b'{"items": NaN}', 400), (b'{"items": [{"prompt": "a", "completion": Infinity}]}', 400),
            (b'{"items": [{"prompt": "a", "completion": "\\ud800"}]}', 400), (b"[" * 5000, 400),
            (b'{"items": [' + b"7" * 5000 + b"]}", 400), (b"\xff\xfe", 400), (b'{"items": 3}', 422),
            (b'{"items": [{"prompt": 1, "completion": null}]}', 422), (b'{"items": [], "x": NaN}', 400),
        ]:
            r = httpx.post(srv.url + "/score", content=body, headers=auth)
            assert r.status_code == status, (body[:40], r.text)
            detail = r.json()["detail"]
            assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
        assert not calls  # nothing refused ever reached the model


def test_a_timed_out_request_does_not_keep_the_worker_busy():
    import time

    import httpx

    from evotune.serve.app import BackgroundServer, ScorerConfig

    def slow(p, c):
        time.sleep(0.1 * len(p))
        return [(1.0, 0.0)] * len(p)

    cfg = ScorerConfig(timeout=1.0, batch_size=1, max_batch=64)
    with BackgroundServer(_scorer(cfg, slow)) as srv:
        big = {"items": [{"prompt": "p", "completion": "c"}] * 60}  # 6 s of work for a 1 s limit
        assert httpx.post(srv.url + "/score", json=big, timeout=30).status_code == 504
        r = httpx.post(srv.url + "/score", json={"items": big["items"][:2]}, timeout=30)
        assert r.status_code == 200, r.text  # not queued behind the abandoned request's 5 s


_SERVE_SLOW = '''
import sys, time
from evotune.serve.app import ScorerConfig, bind, create_app, run_app
class Slow:
    def __call__(self, p, c):
        time.sleep(1.0 * len(p))
        return [(1.0, 0.0)] * len(p)
sock = bind("127.0.0.1", 0)
print(sock.getsockname()[1], flush=True)
run_app(create_app(ScorerConfig(batch_size=1, timeout=120), Slow()), sock)
print("stopped", flush=True)
'''


def test_ctrl_c_stops_the_scorer_within_seconds_even_mid_batch():
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    import httpx

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _SERVE_SLOW], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        items = {"items": [{"prompt": "p", "completion": "c"}] * 64}  # 64 s of work: one call of it would outlast the limit below
        threading.Thread(target=lambda: httpx.post(url + "/score", json=items, timeout=120), daemon=True).start()
        time.sleep(3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=90)
        assert time.monotonic() - t0 < 30  # graceful 2 s + one 1 s micro-batch (+ a loaded machine's slack)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_port_in_use_is_found_before_models_load():
    import socket

    from typer.testing import CliRunner

    from evotune.cli.main import app

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        res = CliRunner().invoke(app, ["serve", "scorer", "--reward", "seqcls:/no/such/model", "--cost", "none",
                                       "--port", str(port)])
    assert res.exit_code == 2, res.output
    (line,) = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert f"127.0.0.1:{port}" in line and "--port" in line and "no/such" not in line  # not the model's error


def test_seqcls_head_without_a_trained_classification_head_is_refused(tiny_model):
    """A causal LM loads as seqcls with a random head: scores would change at every restart."""
    from evotune.errors import ModelError
    from evotune.serve.backends import HeadSpec, SeqClsHead

    with pytest.raises(ModelError, match="no trained classification head"):
        SeqClsHead(HeadSpec("seqcls", str(tiny_model)))


def test_every_evotune_error_is_one_short_line_and_survives_a_process_boundary():
    """The class fix sits in EvotuneError itself: no raise site can echo a screenful or a line break."""
    import pickle

    from evotune.errors import ConfigError, PluginError, RunStateError

    for cls in (ConfigError, PluginError, RunStateError):
        exc = cls("key 'a\nb\x00c\udf51' " + "9" * 5000 + " is not a field; rename it")
        msg = str(exc)
        assert "\n" not in msg and "\x00" not in msg and len(msg) < 400
        assert "[5000 chars]" in msg and msg.endswith("is not a field; rename it")
        assert str(pickle.loads(pickle.dumps(exc))) == msg  # a worker's error reads the same in the driver
        assert str(cls(msg)) == msg  # idempotent
    assert str(ConfigError("emoji 👨‍👩‍👧 and é stay as they are")) == "emoji 👨‍👩‍👧 and é stay as they are"


def test_a_run_dir_that_is_a_file_or_under_one_is_one_line(tmp_path):
    from evotune.errors import RunStateError
    from evotune.runs.lock import RunLock

    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(RunStateError, match="exists and is not a directory; choose another --run-dir"):
        RunLock(afile).acquire()
    with pytest.raises(RunStateError, match="a folder on its path is a file"):
        RunLock(afile / "run").acquire()
    assert afile.read_text() == "x"


def test_a_folder_that_is_not_a_run_is_named_as_such(tmp_path):
    from evotune.config import load_run_config
    from evotune.errors import ConfigError

    (tmp_path / "trajectory.jsonl").write_text("garbage\n")
    with pytest.raises(ConfigError, match=r"is not a run directory \(no config.yaml\); give a folder made by"):
        load_run_config(tmp_path)
    with pytest.raises(ConfigError, match="does not exist; give a folder made by"):
        load_run_config(tmp_path / "missing")


def test_an_output_path_in_a_run_directory_is_refused_before_any_work(tmp_path):
    """compare/analyze/replay/judge --out into a run would overwrite its summary.json or checkpoints."""
    from typer.testing import CliRunner

    from evotune.cli.main import app

    run = tmp_path / "run"
    (run / "checkpoints" / "iter_000001").mkdir(parents=True)
    (run / "config.yaml").write_text("method: es\n")
    (run / "summary.json").write_text('{"mine": 1}\n')
    for args in (["compare", str(run), "--out", str(run)],
                 ["replay", str(run), "--out", str(run / "checkpoints" / "iter_000001")],
                 ["analyze", "robustness", "--model", str(run), "--out", str(run / "summary.json")],
                 ["judge", "--judge", "x", "--models", "a,b", "--out", str(run)]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2 and "would overwrite the run's own files" in res.output, (args, res.output)
        assert len(res.output.strip().splitlines()) == 1
    assert (run / "summary.json").read_text() == '{"mine": 1}\n' and not (run / "index.html").exists()
    res = CliRunner().invoke(app, ["judge", "--judge", "x", "--models", "a,b", "--out", str(tmp_path / "j"),
                                   "--report", str(tmp_path)])
    assert res.exit_code == 2 and "is not a `compare` report" in res.output and not (tmp_path / "j").exists()
    res = CliRunner().invoke(app, ["model", "tiny", str(run / "config.yaml")])
    assert res.exit_code == 2 and "inside the run directory" in res.output


def test_data_that_is_a_pipe_or_a_number_past_float_range_is_one_line(tmp_path):
    import json
    import os

    from evotune.errors import TaskError
    from evotune.tasks.jsonl_task import last_number, parse_number
    from evotune.tasks.records import read_records

    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(TaskError, match="is not a regular file"):  # reading it would block forever
        read_records(fifo, "jsonl")
    # 400 nines parse to inf, and |guess − inf| ≤ 1e-6·inf would call every number correct
    assert parse_number("9" * 400) is None and last_number("it is " + "9" * 400) is None and parse_number("42") == 42.0
    from evotune.tasks import get_task

    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": 10**400}) + "\n" for i in range(3)))
    with pytest.raises(TaskError, match="finite number within float range") as info:
        get_task("jsonl", data=str(big)).split("eval")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("args,says", [
    (["train", "es", "--population", "abc"], "Invalid value for '--population'"),
    (["train", "es", "--bogus"], "No such option: --bogus"),
    (["analyze", "passk", "--model", "x", "--n", "0"], "Input should be greater than or equal to 1"),
    (["analyze", "kl", "--model", "x", "--n-prompts", "-1"], "greater than or equal to 1"),  # not "all but one"
    (["model", "tiny", "t", "--hidden", "7"], "use hidden a multiple of 8"),
])
def test_usage_errors_of_the_console_script_are_one_line(args, says, tmp_path):
    """The `evotune` script (cli.main:main): click's usage errors as one `error:` line, exit 2, nothing written."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "evotune.cli.main", *args], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], res.stderr
    assert "Traceback" not in res.stderr and list(tmp_path.iterdir()) == []


def test_an_unexpected_failure_is_one_line_saying_it_is_a_bug(monkeypatch):
    """Never a traceback: a failure nobody anticipated is one line (exit 1), and --debug shows the traceback."""
    from typer.testing import CliRunner

    import evotune.config
    from evotune.cli.main import app

    def boom(*a, **k):
        raise KeyError("entries")

    monkeypatch.setattr(evotune.config, "build_config", boom)
    res = CliRunner().invoke(app, ["train", "es", "--run-dir", "x"])
    assert res.exit_code == 1 and "internal error (KeyError: 'entries'); this is a bug in evotune" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    monkeypatch.setenv("EVOTUNE_DEBUG", "1")
    res = CliRunner().invoke(app, ["train", "es", "--run-dir", "x"])
    assert isinstance(res.exception, KeyError)  # --debug: the real exception and its traceback


def test_a_noise_threads_setting_that_is_not_a_number_is_one_line(monkeypatch):
    from evotune.errors import ConfigError
    from evotune.es.params import noise_threads

    monkeypatch.setenv("EVOTUNE_NOISE_THREADS", "abc")
    with pytest.raises(ConfigError, match="EVOTUNE_NOISE_THREADS='abc' is not a whole number"):
        noise_threads()
    monkeypatch.setenv("EVOTUNE_NOISE_THREADS", "3")
    assert noise_threads() == 3


def test_booleans_are_not_numbers_and_an_empty_set_value_is_refused():
    from evotune.cli.common import parse_sets
    from evotune.config import build_config
    from evotune.errors import ConfigError

    with pytest.raises(ConfigError, match="sigma: True is a boolean where a number goes"):
        build_config(None, {"es.sigma": True})  # pydantic alone would read it as σ = 1.0
    with pytest.raises(ConfigError, match="population: False is a boolean"):
        build_config(None, {"es.population": False})
    assert build_config(None, {"es.antithetic": True}).es.antithetic is True  # real booleans still work
    with pytest.raises(ConfigError, match="has no value"):
        parse_sets(["es.population="])


@pytest.mark.parametrize("text", ["nan", "inf", "", " , ", "1e308", "0.001,x"])
def test_number_lists_must_hold_finite_numbers(text):
    from evotune.analysis.common import parse_floats
    from evotune.errors import EvotuneError

    with pytest.raises(EvotuneError, match="expected"):
        parse_floats(text)
    assert parse_floats("0.001, 0.003") == [0.001, 0.003]


@pytest.mark.parametrize("args,says", [
    (["sweep", "es", "--alpha", "", "--sigma", "1e-3", "--out", "{tmp}/sw"], "--alpha '': give one or more finite"),
    (["sweep", "es", "--alpha", "nan", "--out", "{tmp}/sw"], "--alpha 'nan'"),
    (["sweep", "es", "--alpha", "1e-3", "--seeds", "", "--out", "{tmp}/sw"], "--seeds '': give one or more whole"),
    (["sweep", "es", "--alpha", "1e-3", "--seeds", "x", "--out", "{tmp}/sw"], "--seeds 'x'"),
    (["analyze", "kl", "--model", "{tmp}", "--tasks", ""], "--tasks '': name one or more tasks"),
])
def test_an_empty_or_unreadable_list_is_refused_not_dropped(args, says, tmp_path):
    """An empty axis, seed list or task list would silently run something else than asked."""
    from typer.testing import CliRunner

    from evotune.cli.main import app

    res = CliRunner().invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert res.exit_code == 2 and says in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "sw").exists()

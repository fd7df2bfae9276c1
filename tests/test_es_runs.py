"""Whole ES runs on the tiny model: files, replay, resume after kill -9, CLI, clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from evotune.backends.models import load_model
from evotune.checkpoints import latest_checkpoint, read_state
from evotune.cli.main import app
from evotune.errors import ConfigError, ModelError, TaskError
from evotune.runs.rundir import read_jsonl
from evotune.tasks.base import Example, Reward, Task
from evotune.trainers import ESTrainer
from evotune.trainers.replay import replay


def test_three_iteration_run_writes_a_complete_run_dir(es_config):
    cfg = es_config()
    summary = ESTrainer(cfg, progress=False).train()
    run = Path(cfg.run_dir)
    assert summary["steps"] == 3
    assert (run / "config.yaml").is_file() and (run / "summary.json").is_file()
    traj = read_jsonl(run / "trajectory.jsonl")
    assert [r["step"] for r in traj] == [1, 2, 3]
    assert all(len(r["seeds"]) == 4 and len(r["fitness"]) == 4 for r in traj)
    metrics = read_jsonl(run / "metrics.jsonl")
    train_rows = [r for r in metrics if "train/reward_mean" in r]
    assert len(train_rows) == 3
    for key in (
        "train/reward_std",
        "time/noise",
        "time/generate",
        "time/score",
        "time/update",
        "budget/completions",
    ):
        assert key in train_rows[0]
    assert train_rows[-1]["budget/completions"] == 3 * 4 * 4
    evals = [r for r in metrics if "eval/reward_mean" in r]
    assert [r["step"] for r in evals] == [0, 2, 3]
    # later evals are compared item by item with iteration 0 (the starting model) for `correct_lost`
    assert "eval/hack_correct_lost" not in evals[0]
    assert all(0.0 <= r["eval/hack_correct_lost"] <= 1.0 for r in evals[1:])
    assert sorted(p.name for p in (run / "evals").iterdir()) == [
        "iter_000000.jsonl",
        "iter_000002.jsonl",
        "iter_000003.jsonl",
    ]
    assert list((run / "tb").iterdir())
    ck = latest_checkpoint(run)
    assert ck is not None and ck.name == "iter_000003"
    hf = AutoModelForCausalLM.from_pretrained(ck)
    assert sum(p.numel() for p in hf.parameters()) > 0


def test_replay_matches_checkpoint_bit_for_bit(es_config, tmp_path):
    cfg = es_config()
    ESTrainer(cfg, progress=False).train()
    for k in (1, 3):
        res = replay(cfg.run_dir, k, tmp_path / f"replay{k}")
        assert res["matches_checkpoint"] is True
        ck = Path(cfg.run_dir) / "checkpoints" / f"iter_{k:06d}"
        a = AutoModelForCausalLM.from_pretrained(ck).state_dict()
        b = AutoModelForCausalLM.from_pretrained(tmp_path / f"replay{k}").state_dict()
        assert all(torch.equal(a[n], b[n]) for n in a)
    base = replay(cfg.run_dir, 0)
    assert base["checksum"] != replay(cfg.run_dir, 3)["checksum"]


def test_weights_really_change_and_same_seed_is_deterministic(es_config, tmp_path):
    c1 = es_config(run_dir=str(tmp_path / "a"))
    c2 = es_config(run_dir=str(tmp_path / "b"))
    c3 = es_config(run_dir=str(tmp_path / "c"), seed=1)
    s = [
        read_state(latest_checkpoint(ESTrainer(c, progress=False).train() and c.run_dir))["checksum"]
        for c in (c1, c2, c3)
    ]
    assert s[0] == s[1] != s[2]


def _cli_env() -> dict[str, str]:
    env = dict(os.environ)
    tests = str(Path(__file__).parent)
    env["PYTHONPATH"] = tests + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _train_cmd(tiny: Path, run: Path, iterations: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "evotune.cli.main",
        "train",
        "es",
        "--task",
        "toy_tasks:ToyLetters",
        "--model",
        str(tiny),
        "--run-dir",
        str(run),
        "--population",
        "4",
        "--sigma",
        "0.05",
        "--alpha",
        "0.02",
        "--iterations",
        str(iterations),
        "--prompts-per-iteration",
        "4",
        "--eval-every",
        "5",
        "--checkpoint-every",
        "3",
        "--threads",
        "1",
        "--no-progress",
    ]


def test_resume_after_kill_9_equals_uninterrupted_run(tiny_model, tmp_path):
    iters = 12
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(tiny_model, ref, iters), check=True, env=_cli_env(), capture_output=True)
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(tiny_model, run, iters),
        env=_cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(read_jsonl(run / "trajectory.jsonl")) < 4:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_jsonl(run / "trajectory.jsonl"))
    assert 4 <= done < iters, "the run must be killed mid-way"
    cmd = _train_cmd(tiny_model, run, iters)
    res = subprocess.run([*cmd, "--resume"], env=_cli_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [r["step"] for r in read_jsonl(run / "trajectory.jsonl")] == list(range(1, iters + 1))
    a, b = read_state(latest_checkpoint(ref)), read_state(latest_checkpoint(run))
    assert a["iteration"] == b["iteration"] == iters
    assert a["checksum"] == b["checksum"]
    metrics_steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "train/reward_mean" in r]
    assert metrics_steps == sorted(set(metrics_steps))  # no duplicated iterations after resume


def test_resume_refuses_to_change_settings(es_config):
    cfg = es_config()
    ESTrainer(cfg, progress=False).train()
    with pytest.raises(ConfigError, match=r"es\.sigma"):
        ESTrainer(
            cfg.model_copy(update={"es": cfg.es.model_copy(update={"sigma": 0.5})}), resume=True
        ).train()
    with pytest.raises(ConfigError, match="already holds a run"):
        ESTrainer(cfg, progress=False).train()
    longer = cfg.model_copy(update={"es": cfg.es.model_copy(update={"iterations": 4})})
    assert ESTrainer(longer, resume=True, progress=False).train()["steps"] == 4


def test_budget_stops_the_run(es_config):
    cfg = es_config(**{"es.iterations": 50, "budget.completions": 40})
    summary = ESTrainer(cfg, progress=False).train()
    assert summary["steps"] == 3  # 16 completions per iteration: 48 >= 40 after the third
    assert "budget" in summary["stop_reason"]


def test_cli_train_eval_replay(tiny_model, tmp_path):
    runner = CliRunner()
    run = tmp_path / "cli"
    res = runner.invoke(app, _train_cmd(tiny_model, run, 2)[3:], env=_cli_env())
    assert res.exit_code == 0, res.output
    out = tmp_path / "rows.jsonl"
    res = runner.invoke(
        app, ["eval", "--model", str(run), "--out", str(out), "--task", "toy_tasks:ToyLetters"]
    )
    assert res.exit_code == 0, res.output
    rows = read_jsonl(out)
    assert len(rows) == 8 and {"completion", "reward", "correct", "n_tokens"} <= set(rows[0])
    # eval of the run uses the same completions as the run's own final evaluation
    final = read_jsonl(run / "evals" / "iter_000002.jsonl")
    assert [r["completion"] for r in rows] == [r["completion"] for r in final]
    res = runner.invoke(app, ["replay", str(run), "--iteration", "2", "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert '"matches_checkpoint": true' in res.output


def test_cli_bad_value_is_a_clear_error(tiny_model, tmp_path):
    res = CliRunner().invoke(app, ["train", "es", "--sigma", "-1", "--run-dir", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert "es.sigma" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x").exists()


def test_missing_model_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    res = CliRunner().invoke(app, ["eval", "--model", str(tmp_path / "nope"), "--task", "toy_letters"])
    assert res.exit_code == 2 and "does not exist" in res.output


class _Raising(Task):
    default_n_train = 4
    default_n_eval = 4

    def build(self):
        ex = [Example(f"r{i}", f"prompt {i}", None) for i in range(8)]
        return ex[:4], ex[4:]

    def reward(self, completion: str, example: Example) -> Reward:
        raise ZeroDivisionError("boom")


class _Hanging(_Raising):
    reward_timeout = 0.2

    def reward(self, completion: str, example: Example) -> Reward:
        while True:
            time.sleep(0.01)


class _NaN(_Raising):
    def reward(self, completion: str, example: Example) -> Reward:
        return Reward(float("nan"), {}, False)


@pytest.mark.parametrize(
    ("cls", "msg"), [(_Raising, "raised on example"), (_Hanging, "did not return"), (_NaN, "non-finite")]
)
def test_bad_rewards_are_named(cls, msg):
    task = cls()
    with pytest.raises(TaskError, match=msg):
        task.score("text", task.split("train")[0])

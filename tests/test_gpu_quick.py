"""benchmarks/gpu_quick.py: its timeouts keep what was measured, and its dry run runs every step on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_quick  # noqa: E402


def _ctx(tmp_path: Path) -> gpu_quick.Ctx:
    return gpu_quick.Ctx(torch.device("cpu"), "float32", [], "", n=1, p=1, prompt_tokens=1, new_tokens=1,
                         members_timed=1, backend="eager", out=tmp_path / "r.jsonl", tmp=tmp_path)


def test_a_step_stopped_by_its_timeout_keeps_what_it_measured(tmp_path):
    ctx = _ctx(tmp_path)

    def step() -> None:
        gpu_quick.guarded(ctx, "eager", "first", lambda: {"s": 1.0})
        gpu_quick.guarded(ctx, "eager", "broken", lambda: {"s": 1 / 0})  # one error line, the step goes on
        gpu_quick.guarded(ctx, "eager", "slow", lambda: time.sleep(30) or {"s": 30.0})

    t0 = time.perf_counter()
    with pytest.raises(gpu_quick.StepTimeout), gpu_quick.alarm(1.0):
        step()
    assert time.perf_counter() - t0 < 10
    rows = [json.loads(x) for x in ctx.out.read_text().splitlines()]
    assert [(r["phase"], r["status"]) for r in rows] == [("first", "ok"), ("broken", "error")]
    assert rows[1]["error"].startswith("ZeroDivisionError")


def test_dry_run_runs_every_step_on_the_cpu(tmp_path):
    """Every step, tiny sizes, on the CPU: 32 CPU-seconds in all processes, measured on the 2-core machine
    (benchmarks/results/gpu/dry-run-cpu); the timeouts are tripled for a busy CI machine."""
    out = tmp_path / "dry.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH.parent / "src"), str(BENCH.parent / "tests"), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, str(BENCH / "gpu_quick.py"), "--dry-run", "--out", str(out),
                          "--timeout-scale", "3"], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    done = {r["step"]: r["status"] for r in rows if r.get("phase") == "done"}
    assert done == {"exact": "ok", "eager": "ok", "compiled": "ok"}, done
    cuda = next(r for r in rows if r["step"] == "cuda")
    assert cuda["status"] == "ok" and cuda.get("skipped", 0) > 0 and not cuda["failed_tests"]  # no GPU: all skip
    checks = {r["check"]: r for r in rows if r["step"] == "exact" and "check" in r}
    assert set(checks) >= {"device", "noise_pure", "restore_full_rank", "restore_master_on_host", "restore_low_rank",
                           "update_twice_same", "master_host_vs_device", "member_alone_vs_in_group"}
    assert all(c["status"] == "ok" for c in checks.values())
    # on the CPU every exactness claim holds (master on the host is the same device here)
    assert all(c["ok"] for n, c in checks.items() if n != "member_alone_vs_in_group"), checks
    phases = {r["phase"] for r in rows if r["step"] == "eager" and r["status"] == "ok"}
    assert phases >= {"limit", "limit_batch_p", "naive", "full_rank", "low_rank"}
    compiled = {r["phase"]: r for r in rows if r["step"] == "compiled"}
    assert compiled["low_rank"]["graphs_added_by_second_population"] == 0
    assert compiled["members_move"]["members_moved"] > 0
    summary = rows[-1]
    assert summary["step"] == "summary" and summary["errors"] == []
    assert summary["low_rank_compiled_vs_compiled_limit"] > 0

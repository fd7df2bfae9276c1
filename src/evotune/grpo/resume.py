"""What `--resume` of a GRPO run continues from: `RUN/trl/checkpoint-K` (TRL's optimizer, scheduler
and RNG state), and how the run directory is cut back to that step.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from evotune.checkpoints import checkpoint_dirs, read_state
from evotune.runs.metrics import STEP, Budget, is_train_row
from evotune.runs.rundir import RunDir, keep_rows

TRL_DIR = "trl"  # RUN/trl: TRL's output_dir, GRPO's own part of the run directory
TRL_CKPT_PREFIX = "checkpoint-"


def trl_dir(run: RunDir) -> Path:
    return run.path / TRL_DIR


def trl_checkpoints(run: RunDir) -> list[tuple[int, Path]]:
    """Complete TRL checkpoints (TRL writes trainer_state.json last), oldest first."""
    root = trl_dir(run)
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        num = d.name[len(TRL_CKPT_PREFIX):]
        if d.name.startswith(TRL_CKPT_PREFIX) and num.isdigit() and (d / "trainer_state.json").is_file():
            out.append((int(num), d))
    return sorted(out)


def drop_after(run: RunDir, last: int) -> None:
    """Forget everything a killed or stopped run wrote past its last resumable step."""
    root = trl_dir(run)
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and d.name.startswith(TRL_CKPT_PREFIX) and not (d / "trainer_state.json").is_file():
                shutil.rmtree(d, ignore_errors=True)  # a save cut short
    keep_rows(run.metrics, lambda r: r.get("step", 0) <= last)
    for k, d in checkpoint_dirs(run.path):
        if k > last:
            shutil.rmtree(d, ignore_errors=True)
    if run.evals.is_dir():
        for f in run.evals.glob("iter_*.jsonl"):
            if f.stem[5:].isdigit() and int(f.stem[5:]) > last:
                f.unlink()


def budget_at(run: RunDir, step: int) -> Budget:
    """Budget spent up to `step`: from its evotune checkpoint, else from its metrics row."""
    for k, d in checkpoint_dirs(run.path):
        if k == step and "budget" in (state := read_state(d)):
            return Budget(**state["budget"])
    for r in reversed(run.read_metrics()):
        if r.get(STEP) == step and is_train_row(r):
            return Budget.from_metrics(r)
    return Budget()

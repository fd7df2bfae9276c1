"""The run directory's file names and states: the one place that says what a run folder holds,
whether a folder is a run and whether it is done.

Kept free of heavy imports (no torch, no config) so torch-free readers (study evidence, the CLI)
can name the files too. Modules below `runs` in the layers (config, backends) cannot import this
and still spell `config.yaml` themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

CONFIG_FILE = "config.yaml"  # the validated config the run was started with: its presence makes a folder a run
METRICS_FILE = "metrics.jsonl"  # one row per step, shared metric names (`runs.metrics`)
TRAJECTORY_FILE = "trajectory.jsonl"  # ES/RandOpt: seeds and fitness per iteration (enough to rebuild weights)
SUMMARY_FILE = "summary.json"  # written last, under the lock: its presence makes a run done
EVALS_DIR = "evals"  # per-completion rows of each held-out evaluation
CHECKPOINTS_DIR = "checkpoints"  # iter_K/ checkpoints and best/
TB_DIR = "tb"  # TensorBoard events

RunState = Literal["new", "partial", "done"]
NEW: RunState = "new"  # nothing there yet (or not a run)
PARTIAL: RunState = "partial"  # started, not finished: `--resume` continues it
DONE: RunState = "done"  # finished: sweeps, studies and continual stages skip it


def is_run(path: str | Path) -> bool:
    """Whether `path` is a run directory (it holds the config the run was started with)."""
    return (Path(path) / CONFIG_FILE).is_file()


def is_done(path: str | Path) -> bool:
    """Whether the run at `path` finished (its summary is written only after the last step)."""
    return (Path(path) / SUMMARY_FILE).is_file()


def run_state(path: str | Path) -> RunState:
    """'done' (summary.json written), 'partial' (started) or 'new'."""
    if is_done(path):
        return DONE
    return PARTIAL if is_run(path) else NEW

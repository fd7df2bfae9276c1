"""Rebuild the weights of any iteration from the base model and `trajectory.jsonl` alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from evotune.backends.models import load_model
from evotune.checkpoints import EXTRA_FILE, checkpoint_dirs, read_state
from evotune.config import load_run_config
from evotune.errors import RunStateError
from evotune.es.params import make_params
from evotune.es.trajectory import apply_row, check_device, read_trajectory
from evotune.runs.rundir import RunDir


def replay(
    run_dir: str | Path, iteration: int | None = None, out: str | Path | None = None,
    device: str | None = None, allow_device_change: bool = False,
) -> dict[str, Any]:
    """Apply the first `iteration` trajectory rows (all by default) to the base model.

    Needs no generation: the recorded fitness fixes every update. Writes an HF-loadable model to
    `out` if given, and reports whether the result is bit-identical to the run's own checkpoint.
    `device` (default: the run's own setting) must be of the type the trajectory was recorded on,
    unless `allow_device_change` (the weights then differ).
    """
    run = RunDir(run_dir)
    cfg = load_run_config(run.path)
    if device is not None:
        cfg.model.device = device
    rows = read_trajectory(run.trajectory)
    k = len(rows) if iteration is None else iteration
    if not 0 <= k <= len(rows):
        raise RunStateError(f"iteration {k} not in the trajectory (it has {len(rows)} iterations)")
    model, tok = load_model(cfg.model.name, cfg.model.dtype, cfg.model.device)
    params = make_params(model, cfg.es)
    check_device(rows[:k], params.device_type, allow_device_change or cfg.es.allow_device_change)
    for row in rows[:k]:
        apply_row(params, row, cfg)
    checksum = params.checksum()
    ckpt = dict(checkpoint_dirs(run.path)).get(k)
    matches = None if ckpt is None else read_state(ckpt).get("checksum") == checksum
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        if any(p.dtype != torch.float32 for p in params.params.values()):  # the rounded model file cannot hold the exact fp32 master
            save_file({n: t.contiguous() for n, t in params.master.items()}, str(out / EXTRA_FILE))
    return {"iteration": k, "checksum": checksum, "checkpoint": str(ckpt) if ckpt else None, "matches_checkpoint": matches}

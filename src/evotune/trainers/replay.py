"""Rebuild the weights of any iteration from the base model and `trajectory.jsonl` alone."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from evotune.backends.models import load_model
from evotune.checkpoints import EXTRA_FILE, CheckpointTensors, checkpoint_dirs
from evotune.config import load_run_config
from evotune.errors import EvotuneError, RunStateError
from evotune.es.params import make_params
from evotune.es.trajectory import check_placement, read_trajectory, with_noise_version
from evotune.es.update import apply_row
from evotune.runs.rundir import RunDir
from evotune.trainers.es import write_lora


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
    cfg = with_noise_version(cfg, rows)
    model, tok = load_model(cfg.model.name, cfg.model.dtype, cfg.model.device)
    params = make_params(model, cfg.es, cfg.seed)
    check_placement(rows[:k], params, allow_device_change or cfg.es.allow_device_change)
    if cfg.method == "randopt":  # no updates: the best member the first k steps scored
        from evotune.trainers.randopt import select

        if k:
            select(params, rows[:k], cfg)
    else:
        for row in rows[:k]:
            apply_row(params, row, cfg)
    checksum = params.checksum()
    ckpt = dict(checkpoint_dirs(run.path)).get(k)
    matches, problem = (None, None) if ckpt is None else _compare(ckpt, params)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if cfg.es.lora.enabled:  # the adapter in peft's format and the merged model, HF-loadable
            write_lora(out, model, params, cfg, merged=True)
        else:
            model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        if not cfg.es.lora.enabled and any(p.dtype != torch.float32 for p in params.params.values()):  # the rounded model file cannot hold the exact fp32 master
            save_file({n: t.contiguous() for n, t in params.master.items()}, str(out / EXTRA_FILE))
    res = {"iteration": k, "checksum": checksum, "checkpoint": str(ckpt) if ckpt else None, "matches_checkpoint": matches}
    return {**res, "problem": problem} if problem else res


def _compare(ckpt: Path, params: Any) -> tuple[bool, str | None]:
    """Whether the checkpoint's files hold exactly the replayed weights (its bytes, not its recorded checksum).

    Checkpoint tensors are read on the host; the master may live on a GPU, and `torch.equal` across
    devices raises. So the two are compared on the master's device, and only *reading* the checkpoint is
    guarded: a comparison that fails for another reason is a bug and must not pass as "differs".
    """
    with contextlib.ExitStack() as stack:
        try:
            t = stack.enter_context(CheckpointTensors(ckpt))  # verifies the files' sha256 first
        except EvotuneError as exc:
            return False, str(exc)
        for name in params.params:
            master = params.master[name]
            try:
                saved = t.get(name)
            except EvotuneError as exc:
                return False, str(exc)
            except Exception as exc:  # unreadable region of a file that recorded no hashes
                return False, f"checkpoint {ckpt} cannot be read: {type(exc).__name__}: {exc}"
            if not torch.equal(saved.to(master.device), master):
                return False, f"tensor {name} differs from the replayed weights"
    return True, None

"""A committed trajectory row → the same update again: how resume, replay and Ray replicas rebuild weights.

`trajectory.jsonl` holds one row per iteration (step, seeds, signs, fitness, budget). The weights of
iteration k are a pure function of the base model and the first k rows; a checkpoint only saves
replaying the rows before it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evotune.checkpoints import CheckpointTensors, checkpoint_dirs, read_state
from evotune.config import TrainConfig
from evotune.errors import RunStateError
from evotune.es.params import EvolvingParams
from evotune.es.strategy import Member, ask, tell
from evotune.runs.rundir import read_jsonl


def read_trajectory(path: str | Path) -> list[dict[str, Any]]:
    """The committed rows (a torn last line from a kill is dropped); steps must run 1, 2, 3, ..."""
    rows = read_jsonl(path)
    for i, row in enumerate(rows, 1):
        if row.get("step") != i:
            raise RunStateError(f"{path}: row {i} is for step {row.get('step')}; the trajectory is damaged")
    return rows


def check_device(rows: Sequence[dict[str, Any]], here: str, allow: bool = False) -> None:
    """Stop (or, when `allow`, warn) if `rows` were recorded on another device type than `here`.

    Noise streams differ between CPU and CUDA generators, so the same seeds give other weights.
    Rows written before devices were recorded carry no `device` field: they were CPU runs.
    """
    recorded = sorted({str(r.get("device", "cpu")) for r in rows})
    if not rows or recorded == [here]:
        return
    msg = (
        f"the trajectory was recorded on {'/'.join(recorded)} but this process draws noise on {here}, and "
        "noise streams differ between device types"
    )
    if not allow:
        raise RunStateError(
            f"{msg}: run on --device {recorded[0]}, or set es.allow_device_change=true to accept other weights"
        )
    warnings.warn(f"{msg}: es.allow_device_change is set, so the weights will differ from the original run", stacklevel=2)


def members_of(row: dict[str, Any], cfg: TrainConfig) -> list[Member]:
    """The members a trajectory row records, checked against what `ask` derives from the config."""
    expect = ask(cfg.seed, row["step"], cfg.es.population, cfg.es.antithetic)
    got = [Member(i, s, g) for i, (s, g) in enumerate(zip(row["seeds"], row["signs"], strict=True))]
    if got != expect:
        raise RunStateError(f"trajectory row {row['step']} has seeds that this config does not produce")
    return got


def apply_row(params: EvolvingParams, row: dict[str, Any], cfg: TrainConfig) -> bool:
    """Re-apply one committed iteration from its recorded fitness: the live update, to the bit."""
    coeffs = tell(members_of(row, cfg), row["fitness"], cfg.es.shaping)
    if coeffs is not None:
        params.apply_update(coeffs, cfg.es.alpha / cfg.es.population)
    return coeffs is not None


def load_checkpoint(params: EvolvingParams, ckpt: str | Path, recorded: str | None = None) -> None:
    """Master weights from a checkpoint, verified against the checksum it recorded."""
    with CheckpointTensors(ckpt) as t:
        params.load_master(t.as_dict(list(params.params)))
    if recorded is not None and recorded != params.checksum():
        raise RunStateError(f"checkpoint {ckpt} does not match its recorded checksum")


def rebuild(params: EvolvingParams, run: str | Path, rows: list[dict[str, Any]], cfg: TrainConfig) -> int:
    """Weights after all `rows`: the newest checkpoint at or before them, then the rows after it.

    Returns the checkpoint's iteration (0 = rebuilt from the base model).
    """
    check_device(rows, params.device_type, cfg.es.allow_device_change)
    ckpts = [(k, d) for k, d in checkpoint_dirs(run) if k <= len(rows)]
    done = 0
    if ckpts:
        done, ckpt = ckpts[-1]
        load_checkpoint(params, ckpt, read_state(ckpt).get("checksum"))
    for row in rows[done:]:
        apply_row(params, row, cfg)
    return done

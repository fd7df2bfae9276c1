"""The trajectory record: how an iteration is written down, and how resume, replay and Ray replicas rebuild weights from it.

`trajectory.jsonl` holds one row per iteration (step, seeds, signs, fitness, budget; `rewards`, the
members × prompts matrix, when a per-prompt baseline needs it). The weights of iteration k, and the
optimizer state after it, are a pure function of the base model and the first k rows (α comes from
its schedule, a function of k); a checkpoint only saves replaying the rows before it. Rows written
before `rewards` existed are read as baseline none.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evotune.checkpoints import (
    OPTIMIZER_FILE,
    CheckpointTensors,
    check_finite,
    checkpoint_dirs,
    read_state,
)
from evotune.config import ESConfig, TrainConfig
from evotune.errors import EvotuneError, RunStateError
from evotune.es.evaluator import PopulationResult
from evotune.es.params import EvolvingParams
from evotune.es.strategy import Member
from evotune.es.update import apply_row
from evotune.noise import NOISE_VERSION, NOISE_VERSIONS
from evotune.runs.rundir import read_jsonl


def trajectory_row(
    step: int, members: Sequence[Member], res: PopulationResult, params: EvolvingParams, es: ESConfig | None = None
) -> dict[str, Any]:
    """One iteration as trajectory.jsonl records it: what a rebuild needs to redo its update exactly.

    `es` (an ES run; None for RandOpt, which never updates the weights) adds where the noise was drawn
    and the master kept (CUDA: GPU identity) and, under a per-prompt baseline, the rewards replay
    recomputes the fitness from. Built here only, so the trainer and its replicas cannot disagree.
    """
    row: dict[str, Any] = {
        "step": step, "seeds": [m.seed for m in members], "signs": [m.sign for m in members], "fitness": res.fitness,
        "device": params.device_type, "noise": params.noise_version,  # noise streams depend on both
    }
    if es is not None:
        row.update(params.placement())
        if es.baseline not in ("none", "center"):
            row["rewards"] = res.prompt_rewards
    return row


def read_trajectory(path: str | Path) -> list[dict[str, Any]]:
    """The committed rows (a torn last line from a kill is dropped); steps must run 1, 2, 3, ..."""
    rows = read_jsonl(path)
    for i, row in enumerate(rows, 1):
        problem = _row_problem(row, i)
        if problem:
            keep = f"keep lines 1–{i - 1} only" if i > 1 else "delete it"
            raise RunStateError(f"{path}: line {i} {problem}; the trajectory is damaged: restore it from a copy, "
                                f"or {keep} and --resume to redo the rest")
    return rows


def _row_problem(row: dict[str, Any], i: int) -> str:
    """What is wrong with a trajectory row, or "" (its fields are what `apply_row` and replay read)."""
    if row.get("step") != i:
        return f"is for step {str(row.get('step'))[:40]}, not {i}"
    seeds, signs, fit = row.get("seeds"), row.get("signs"), row.get("fitness")
    if not isinstance(seeds, list) or not seeds or not all(type(x) is int for x in seeds):
        return "has no list of integer member seeds"
    if not isinstance(signs, list) or len(signs) != len(seeds) or any(x not in (1, -1) for x in signs):
        return f"has {len(signs) if isinstance(signs, list) else 'no'} signs (±1) for {len(seeds)} members"
    if not isinstance(fit, list) or len(fit) != len(seeds) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in fit):
        return f"has no finite fitness value for each of its {len(seeds)} members"
    if row.get("noise", 1) not in NOISE_VERSIONS:
        return f"records noise version {str(row.get('noise'))[:20]}, which this evotune does not draw (it has {list(NOISE_VERSIONS)})"
    return ""


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


def _describe(gpu: dict[str, Any]) -> str:
    return f"{gpu.get('name')} ({gpu.get('sms')} SMs, torch {gpu.get('torch')})"


def check_placement(rows: Sequence[dict[str, Any]], params: EvolvingParams, allow: bool = False) -> None:
    """Stop (or, when `allow`, warn) if `rows` drew their CUDA noise on another GPU model, SM count or torch,
    or updated a master that lived elsewhere than this process keeps it: the weights would differ.

    CUDA `randn` places its random numbers by the launch grid, which depends on the SM count (see
    `es.params.gpu_identity`); the master's device decides which kernels round the update. Rows without
    these fields (CPU rows, CUDA rows written before they existed) are not checked.
    """
    check_device(rows, params.device_type, allow)
    here = params.placement()
    problems = []
    gpus = {json.dumps(r["gpu"], sort_keys=True) for r in rows if isinstance(r.get("gpu"), dict)}
    if gpus and here.get("gpu") is not None and gpus != {json.dumps(here["gpu"], sort_keys=True)}:
        was = ", ".join(_describe(json.loads(g)) for g in sorted(gpus))
        problems.append(f"the trajectory's noise was drawn on {was} but this process draws it on "
                        f"{_describe(here['gpu'])}, and CUDA noise depends on the SM count and torch")
    masters = sorted({str(r["master"]) for r in rows if "master" in r})
    if masters and "master" in here and masters != [here["master"]]:
        problems.append(f"the trajectory updated an fp32 master on {'/'.join(masters)} but this process keeps it on "
                        f"{here['master']}, and CPU and CUDA kernels need not round the update alike "
                        f"(set es.master_device={'cpu' if masters[0] == 'cpu' else 'device'})")
    if not problems:
        return
    msg = "; ".join(problems)
    if not allow:
        raise RunStateError(f"{msg}: resume or replay where it ran, or set es.allow_device_change=true to accept "
                            "other weights")
    warnings.warn(f"{msg}: es.allow_device_change is set, so the weights will differ from the original run",
                  stacklevel=2)


def noise_version_of(rows: Sequence[dict[str, Any]], configured: int | None = None) -> int:
    """The noise version to draw for a run with committed `rows`: the recorded one, the same in every row.

    Rows written before versions were recorded carry no `noise` field: they drew version 1. A run with no
    rows draws `configured`, else the newest. A trajectory that mixes versions, or a configured version
    other than the recorded one, is refused: its weights could not be rebuilt.
    """
    recorded = sorted({int(r.get("noise", 1)) for r in rows})
    if len(recorded) > 1:
        raise RunStateError(f"the trajectory mixes noise versions {recorded}: its weights cannot be rebuilt; "
                            "start a new run directory")
    if not recorded:
        return configured or NOISE_VERSION
    if configured is not None and configured != recorded[0]:
        raise RunStateError(f"the trajectory was drawn with noise version {recorded[0]} but es.noise_version="
                            f"{configured}: drop that setting to continue with the recorded version")
    return recorded[0]


def with_noise_version(cfg: TrainConfig, rows: Sequence[dict[str, Any]]) -> TrainConfig:
    """`cfg` with `es.noise_version` set to what `rows` need (see `noise_version_of`)."""
    v = noise_version_of(rows, cfg.es.noise_version)
    return cfg.model_copy(update={"es": cfg.es.model_copy(update={"noise_version": v})})


def load_checkpoint(params: EvolvingParams, ckpt: str | Path, recorded: str | None = None) -> None:
    """Master weights (and optimizer state) from a checkpoint, verified against its files' sha256 and its
    recorded checksum."""
    with CheckpointTensors(ckpt) as t:  # verifies the files' sha256 first
        params.load_master(t.as_dict(list(params.params)))
    check_finite(params.master.items(), f"checkpoint {ckpt}")
    if recorded is not None and not params.checksum_matches(recorded):
        raise RunStateError(f"checkpoint {ckpt} does not match its recorded checksum")
    if params.optimizer.stateful:
        opt_file = Path(ckpt) / OPTIMIZER_FILE
        if not opt_file.is_file():
            raise RunStateError(f"checkpoint {ckpt} lacks {OPTIMIZER_FILE}, which es.optimizer="
                                f"{params.optimizer.kind} needs; delete the checkpoint to replay from the base model")
        from safetensors.torch import load_file

        params.optimizer.load_state_tensors(load_file(str(opt_file)))


def rebuild(
    params: EvolvingParams, run: str | Path, rows: list[dict[str, Any]], cfg: TrainConfig, repair: bool = False
) -> int:
    """Weights after all `rows`: the newest sound checkpoint at or before them, then the rows after it.

    A damaged checkpoint (hash, checksum or unreadable file) is skipped with a warning, since the
    trajectory rebuilds the same weights exactly; with `repair` (the lock holder) it is deleted so the
    run writes it again. Returns the checkpoint's iteration (0 = rebuilt from the base model).
    """
    check_placement(rows, params, cfg.es.allow_device_change)
    done = 0
    ckpts = [(k, d) for k, d in checkpoint_dirs(run) if k <= len(rows)]
    # read only if a checkpoint fails to load: kept on the host, not beside a GPU master (+30 GB at 7B)
    base = {n: t.to("cpu", copy=True) for n, t in params.master.items()} if ckpts else {}
    for k, ckpt in reversed(ckpts):
        try:
            load_checkpoint(params, ckpt, read_state(ckpt).get("checksum"))
        except (EvotuneError, ValueError, KeyError) as exc:
            warnings.warn(f"{exc}; rebuilding iteration {k} from trajectory.jsonl instead", stacklevel=2)
            params.load_master(base)  # a failed load may have written part of the master
            if repair:
                shutil.rmtree(ckpt, ignore_errors=True)
            continue
        done = k
        break
    for row in rows[done:]:
        apply_row(params, row, cfg)
    return done

"""The Ray actor: one model replica that follows the run by re-applying the trainer's trajectory rows."""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evotune.backends.models import load_model
from evotune.config import TrainConfig
from evotune.errors import ReplicaMismatchError, RunStateError, WorkerError
from evotune.es import local_evaluator
from evotune.es.evaluator import Checkpoint, PopulationResult, Row
from evotune.es.params import EvolvingParams, make_params
from evotune.es.strategy import Member
from evotune.es.trajectory import load_checkpoint
from evotune.es.update import apply_row
from evotune.tasks.base import Example, Task

ResultDict = dict[str, Any]


class ReplicaWorker:
    """One model replica inside a Ray actor process (a plain class; `ray.remote` wraps it at start).

    Calls run one at a time in submission order, so rows sent before an evaluation are applied
    before it. A failure while applying rows poisons the replica: every later call re-raises it
    rather than scoring members on weights that differ from the driver's.
    """

    def __init__(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.applied = 0
        self.broken: BaseException | None = None
        self.params: EvolvingParams | None = None
        self.evaluator: Any = None
        self.cfg: TrainConfig | None = None

    def _ok(self) -> EvolvingParams:
        if self.broken is not None:
            raise ReplicaMismatchError(f"this replica failed earlier and is unusable: {self.broken!r}")
        if self.params is None:
            raise WorkerError("replica used before build()")
        return self.params

    def build(
        self,
        task: Task,
        cfg: TrainConfig,
        rows: Sequence[Row],
        checkpoint: Checkpoint | None,
    ) -> dict[str, Any]:
        """Load the base model, build the trainer's params and evaluator, then `advance` to `rows`."""
        import torch

        model, tok = load_model(cfg.model.name, cfg.model.dtype, cfg.model.device)
        self.cfg = cfg
        self.params = make_params(model, cfg.es, cfg.seed)
        self.evaluator = local_evaluator(model, tok, task, self.params, cfg)
        from_checkpoint = self.advance(rows, checkpoint)
        return {
            "pid": os.getpid(),
            "node": node_address(),
            "threads": torch.get_num_threads(),
            "from_checkpoint": from_checkpoint,
            "checksum": self.params.checksum(),
        }

    def advance(self, rows: Sequence[Row], checkpoint: Checkpoint | None = None) -> int:
        """Apply the trajectory rows after the ones already applied, with the trainer's `apply_row`.

        `checkpoint` (iteration, path, recorded checksum), when newer than this replica and readable
        from its node (same machine or a shared filesystem), replaces the replay of the rows before
        it, as the trainer's resume does. Returns the checkpoint iteration used (0 if none).
        """
        params = self._ok()
        used = 0
        try:
            if checkpoint is not None and checkpoint[0] > self.applied and Path(checkpoint[1]).is_dir():
                k, path, recorded = checkpoint
                load_checkpoint(params, Path(path), recorded)
                self.applied = used = k
            for row in rows:
                if row["step"] <= self.applied:
                    continue
                if row["step"] != self.applied + 1:
                    raise RunStateError(
                        f"replica has {self.applied} iterations applied, was sent step {row['step']}"
                    )
                apply_row(params, row, self.cfg)
                self.applied += 1
        except BaseException as exc:
            self.broken = exc
            raise
        return used

    def evaluate(
        self,
        unit: Sequence[tuple[int, int, int, float | None, int | None]],
        batch: tuple[list[Example], list[str]],
        rows: int,
        sample: bool,
    ) -> ResultDict:
        """Fitness of the members in `unit` (index, seed, sign, σ, sample seed), at the weights after `rows` iterations."""
        self._ok()
        if self.applied != rows:
            raise ReplicaMismatchError(f"replica is at iteration {self.applied}, driver at {rows}")
        examples, prompts = batch
        res: PopulationResult = self.evaluator([Member(*u) for u in unit], examples, prompts)
        return {
            "fitness": list(res.fitness),
            "prompt_rewards": res.prompt_rewards,
            "completions": res.completions,
            "completion_tokens": res.completion_tokens,
            "prompt_tokens": res.prompt_tokens,
            "correct": res.correct,
            "sample": res.sample if sample else "",
            "times": dict(res.times),
        }

    def reset(self) -> None:
        """Drop the replica (frees its memory); the process stays warm for the next `build`."""
        self.params = self.evaluator = self.cfg = None
        self.applied, self.broken = 0, None
        gc.collect()

    def checksum(self) -> tuple[int, str]:
        """(iterations applied, checksum of the master weights)."""
        return self.applied, self._ok().checksum()


def node_address() -> str:
    try:
        import ray

        return str(ray.util.get_node_ip_address())
    except Exception:  # outside Ray (unit use of the class)
        return "local"


# -- the driver side ----------------------------------------------------------------------------


@dataclass(eq=False)  # identity: a slot's old and new actor must never compare equal
class WorkerSlot:
    slot: int
    actor: Any
    applied: int = 0  # rows sent to it (it applies them before any later call)
    pending: Any = None  # ObjectRef of a build not yet confirmed; None when the replica is usable
    expect: str = ""  # the checksum the pending build must produce
    built_rows: int = 0  # rows the build was given (its checksum is the driver's at that point)
    since: float = 0.0
    busy: Any = None  # ObjectRef of the evaluation in flight
    pid: int | None = None
    node: str = ""
    got_batch: bool = False  # whether this iteration's prompts were sent to it (for byte counts)
    reused: bool = False  # taken warm from the idle pool


def wire_row(row: Row) -> Row:
    """The part of a trajectory row a replica needs."""
    wire = {
        "step": row["step"],
        "seeds": list(row["seeds"]),
        "signs": list(row["signs"]),
        "fitness": list(row["fitness"]),
    }
    for key in ("rewards", "center", "clip_scale"):  # per-prompt baseline, centre baseline, clip factor
        if key in row:
            wire[key] = row[key]
    return wire

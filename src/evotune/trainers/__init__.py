"""Trainers: one per method, all in the shared frame (`frame.Trainer`), chosen by `cfg.method`.

Every method is imported here (none imports TRL or Ray at module level), so what each declares
(its length setting, its own folders) is known to the frame whichever method runs.
"""

from __future__ import annotations

from evotune.config import TrainConfig
from evotune.trainers.es import ESTrainer
from evotune.trainers.frame import Trainer
from evotune.trainers.grpo import GRPOTrainer
from evotune.trainers.randopt import RandOptTrainer

TRAINERS: dict[str, type[Trainer]] = {t.method: t for t in (ESTrainer, GRPOTrainer, RandOptTrainer)}


def make_trainer(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Trainer:
    """The trainer for `cfg.method`: the one dispatch point for the CLI, sweeps, studies and continual runs."""
    return TRAINERS[cfg.method](cfg, resume=resume, progress=progress)


__all__ = ["TRAINERS", "ESTrainer", "GRPOTrainer", "RandOptTrainer", "Trainer", "make_trainer"]

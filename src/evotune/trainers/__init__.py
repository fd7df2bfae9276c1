"""Trainers: one per method, all in the shared frame (`frame.Trainer`), chosen by `cfg.method`."""

from __future__ import annotations

from evotune.config import TrainConfig
from evotune.trainers.es import ESTrainer
from evotune.trainers.frame import Trainer


def make_trainer(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Trainer:
    """The trainer for `cfg.method`: the one dispatch point for the CLI, sweeps, studies and continual runs."""
    if cfg.method == "es":
        return ESTrainer(cfg, resume=resume, progress=progress)
    if cfg.method == "randopt":
        from evotune.trainers.randopt import RandOptTrainer

        return RandOptTrainer(cfg, resume=resume, progress=progress)
    from evotune.trainers.grpo import GRPOTrainer  # TRL takes seconds to import: only when GRPO runs

    return GRPOTrainer(cfg, resume=resume, progress=progress)


__all__ = ["ESTrainer", "Trainer", "make_trainer"]

"""ES building blocks: ask/tell (`strategy`), the evolving weights (`params`), population evaluators
(`evaluator` full rank, `lowrank` batched low rank) and trajectory replay (`trajectory`)."""

from __future__ import annotations

from typing import Any

from evotune.config import TrainConfig
from evotune.es.evaluator import Evaluator, SequentialEvaluator
from evotune.es.lowrank import BatchedLowRankEvaluator
from evotune.es.params import EvolvingParams
from evotune.tasks.base import Task


def local_evaluator(model: Any, tok: Any, task: Task, params: EvolvingParams, cfg: TrainConfig) -> Evaluator:
    """The in-process evaluator for `cfg.es.noise` (what a trainer or a Ray replica runs)."""
    cls = BatchedLowRankEvaluator if cfg.es.noise == "lowrank" else SequentialEvaluator
    return cls(model, tok, task, params, cfg)

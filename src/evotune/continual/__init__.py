"""Continual learning: train tasks in sequence, measure the accuracy matrix, BWT, forgetting and drift."""

from evotune.continual.metrics import (
    average_accuracy,
    backward_transfer,
    continual_metrics,
    forgetting,
    forward_transfer,
)
from evotune.continual.runner import ContinualSpec, run_continual

__all__ = [
    "ContinualSpec",
    "average_accuracy",
    "backward_transfer",
    "continual_metrics",
    "forgetting",
    "forward_transfer",
    "run_continual",
]

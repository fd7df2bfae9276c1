"""Continual learning: train tasks in sequence, measure the accuracy matrix, BWT, forgetting and drift."""

from evotune.continual.metrics import (
    average_accuracy,
    backward_transfer,
    continual_metrics,
    forgetting,
    forward_transfer,
)
from evotune.continual.spec import ContinualSpec


def __getattr__(name: str) -> object:
    """`run_continual` imports torch: loaded when first asked for, so `continual.spec` stays light."""
    if name == "run_continual":
        from evotune.continual.runner import run_continual

        return run_continual
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ContinualSpec",
    "average_accuracy",
    "backward_transfer",
    "continual_metrics",
    "forgetting",
    "forward_transfer",
    "run_continual",
]

"""GRPO baseline: TRL's `GRPOTrainer` run through evotune's run directories, budgets and evaluation.

`GRPORunner` is imported lazily so that touching this package does not pay TRL's import time.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GRPORunner", "validate_grpo"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from evotune.grpo import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'evotune.grpo' has no attribute {name!r}")

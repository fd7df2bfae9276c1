"""Metrics to `metrics.jsonl` and TensorBoard at once, under the same names."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from evotune.runs.rundir import RunDir, append_jsonl


class MetricsLogger:
    """Appends one row per step; numeric values also become TensorBoard scalars."""

    def __init__(self, run: RunDir, start_step: int = 0, tensorboard: bool = True) -> None:
        self.run = run
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step drops events past a resume point so curves never double back.
                self._tb = SummaryWriter(str(run.tb), purge_step=start_step if start_step > 0 else None)
            except ImportError:  # tensorboard not installed: JSONL still has everything
                self._tb = None

    def log(self, row: dict[str, Any], step: int, file: Path | None = None) -> None:
        append_jsonl(file or self.run.metrics, row)
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()

"""Metrics to `metrics.jsonl` and to the trackers of `report_to`, under the same names for ES and GRPO.

`metrics.jsonl` is always written (resume and reports read it). `report_to` adds, like TRL's
argument of that name: `tensorboard` (RUN/tb), `wandb` (offline into RUN/wandb unless WANDB_MODE
or WANDB_API_KEY says otherwise) and `trackio` (local, $TRACKIO_DIR or ~/.cache/huggingface/trackio).
A resumed run continues the same tracker run (its id is derived from the run directory).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from evotune.errors import ConfigError
from evotune.hashing import stable_int
from evotune.runs.rundir import RunDir, append_jsonl

TRACKERS = ("tensorboard", "wandb", "trackio")
WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")


def _wandb_key_known() -> bool:
    """Whether W&B can find an API key without asking (the environment, or `wandb login`'s netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:
        rc = netrc.netrc(os.environ.get("NETRC") or None)
    except (OSError, netrc.NetrcParseError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1].split("/")[0]
    return rc.authenticators(host) is not None


def check_trackers(report_to: list[str] | tuple[str, ...]) -> None:
    """A misconfigured tracker is one line naming the setting, before a run directory is touched."""
    if "wandb" not in report_to:
        return
    mode = os.environ.get("WANDB_MODE")
    if mode is not None and mode not in WANDB_MODES:
        raise ConfigError(f"WANDB_MODE={mode!r} is not one of {', '.join(WANDB_MODES)}; unset it (evotune then "
                          "logs offline) or drop wandb from --report-to")
    if mode in ("online", "run", "shared") and not _wandb_key_known():
        raise ConfigError(f"WANDB_MODE={mode} needs a W&B API key (WANDB_API_KEY or `wandb login`); set one, "
                          "use WANDB_MODE=offline, or drop wandb from --report-to")


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in row.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and k != "step"}


class MetricsLogger:
    """Appends one row per step to metrics.jsonl; numeric values also go to every tracker."""

    def __init__(
        self, run: RunDir, start_step: int = 0, report_to: list[str] | tuple[str, ...] = ("tensorboard",),
        config: dict[str, Any] | None = None,
    ) -> None:
        self.run = run
        self._tb: Any = None
        self._wandb: Any = None
        self._trackio: Any = None
        name, run_id = run.path.resolve().name, f"evotune-{stable_int(str(run.path.resolve())):x}"
        project = os.environ.get("EVOTUNE_PROJECT", "evotune")
        check_trackers(report_to)
        try:
            if "tensorboard" in report_to:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step drops events past a resume point so curves never double back.
                self._tb = SummaryWriter(str(run.tb), purge_step=start_step if start_step > 0 else None)
            if "wandb" in report_to:
                import wandb

                if not (os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY")):
                    os.environ["WANDB_MODE"] = "offline"  # nothing leaves the machine unless configured
                self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", project), name=name, id=run_id,
                                         dir=str(run.path), config=config, resume="allow", reinit="finish_previous")
            if "trackio" in report_to:
                import trackio

                self._trackio = trackio.init(project=project, name=name, config=config, resume="allow",
                                             auto_log_gpu=False, auto_log_cpu=False)
        except ImportError as exc:
            self.close()
            raise ConfigError(
                f"report_to needs the package {exc.name!r}: pip install {exc.name} (or drop it from --report-to)"
            ) from None
        except Exception as exc:  # the tracker's own start failed: name it and its settings, not its internals
            self.close()
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ConfigError(
                f"report_to: a tracker failed to start ({type(exc).__name__}: {first}); check its settings "
                "(WANDB_*, TRACKIO_*), or drop it from --report-to"
            ) from None

    def log(self, row: dict[str, Any], step: int, file: Path | None = None) -> None:
        append_jsonl(file or self.run.metrics, row)
        nums = _scalars(row)
        if self._tb is not None:
            for k, v in nums.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(nums, step=step)
        if self._trackio is not None:
            self._trackio.log(nums, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        if self._trackio is not None:
            self._trackio.finish()
            self._trackio = None

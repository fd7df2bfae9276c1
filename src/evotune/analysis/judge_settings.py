"""What a judge tournament takes besides its models: one object, and the defaults of `evotune judge`.

Torch-free on purpose: the CLI reads its option defaults from here when it builds `--help`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JudgeSettings:
    """The judge, the held-out prompts, the training scorer to compare with, and where models load."""

    judge: str  # judge model: smollm2-135m, a directory or a run
    task: str | None = None  # task whose held-out split is used (None: the runs' own)
    labels: Sequence[str] | None = None  # display names, one per model (None: each entry's label)
    n_prompts: int = 24
    out_dir: Path = Path("judge")
    max_new_tokens: int | None = None  # None: the runs' own, else the task's
    scorer_url: str | None = None  # training scorer to compare with (task option scorer_url)
    use_scorer: bool = True
    n_boot: int = 1000
    seed: int = 0
    batch_size: int = 16
    dtype: str = "float32"
    device: str = "auto"
    samples: int = 4  # prompts whose replies are shown

    def __post_init__(self) -> None:
        from evotune.errors import ConfigError

        for name, low in (("n_prompts", 1), ("n_boot", 1), ("batch_size", 1), ("samples", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"judge: {name} must be >= {low}, got {getattr(self, name)}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"judge: max_new_tokens must be >= 1, got {self.max_new_tokens}")

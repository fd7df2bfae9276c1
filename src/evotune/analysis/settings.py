"""What each analysis measures and how: one settings object per analysis, and `compare`'s config.

Torch-free on purpose: the CLI takes its option defaults from these classes at import time, and
`evotune --help` must not import torch. Each default is written here once; the library functions,
`compare` and the CLI all read it from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

ANALYSES = ("kl", "delta", "lmc", "robustness")


@dataclass(frozen=True)
class Placement:
    """Where models load and which seed drives sampling / noise: shared by every analysis."""

    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"


@dataclass(frozen=True)
class KLSettings(Placement):
    """`kl_matrix`: prompts per source, generation length(s), batching.

    `max_new_tokens` is one length for every source or a mapping source → length; by default a run's
    own length on its own task, else the task's default (`general_max_new_tokens` for the general prompts).
    """

    n_prompts: int = 16
    max_new_tokens: int | Mapping[str, int] | None = None
    general: bool = True  # add the built-in general prompts (off-task for every model)
    batch_size: int = 16
    micro_batch: int = 4
    general_max_new_tokens: int = 64


@dataclass(frozen=True)
class LMCSettings(Placement):
    """`lmc_curves`: the λ grid, the evaluation at each point, and optional KL to endpoint `kl_ref`."""

    points: int = 11
    limit: int | None = None
    max_new_tokens: int | None = None
    batch_size: int = 64
    kl: bool = False
    kl_ref: int | None = None  # index into the endpoints (default: the first)
    kl_prompts: int = 8


@dataclass(frozen=True)
class RobustnessSettings(Placement):
    """`robustness`: the σ grid, trials per σ, which parameters get noise, and the evaluation."""

    sigmas: tuple[float, ...] = (0.001, 0.003, 0.01)
    trials: int = 8
    params: str | tuple[str, ...] = "*"  # a glob, comma-separated globs, or a sequence of globs
    limit: int | None = None
    max_new_tokens: int | None = None
    batch_size: int = 64
    kl: bool = False  # KL(π_perturbed ‖ π_unperturbed) too
    kl_prompts: int = 8

    def globs(self) -> list[str]:
        """`params` as a list of globs (`lm_head*,model.norm*` → two)."""
        p = self.params
        return [g.strip() for g in p.split(",") if g.strip()] if isinstance(p, str) else list(p)


class CompareConfig(BaseModel):
    """What `compare` measures and how; every field is a flag of `evotune compare`."""

    model_config = ConfigDict(extra="forbid")

    base: str | None = Field(default=None, description="θ₀ (default: the first run's base model)")
    tasks: list[str] = Field(default_factory=list, description="tasks besides the runs' own")
    out_dir: str = Field(default="report", description="where index.html and summary.json go")
    limit: int | None = Field(default=32, ge=1, description="held-out items per evaluation")
    kl_prompts: int = Field(default=16, ge=1, description="prompts per source for KL")
    max_new_tokens: int | None = Field(default=None, ge=1, description="default: each run's/task's own")
    lmc_points: int = Field(default=11, ge=2, description="λ grid size of the LMC paths")
    lmc_limit: int | None = Field(default=None, ge=1, description="held-out items per LMC point (default: limit)")
    lmc_kl: bool = Field(default=False, description="KL to the base along LMC paths")
    lmc_models: list[str] | None = Field(
        default=None, description="labels (globs) of the models that get LMC paths, base→model and between them "
        "(default: all)",
    )
    sigmas: list[float] = Field(default_factory=lambda: [0.001, 0.003, 0.01], description="robustness σ grid")
    trials: int = Field(default=4, ge=1, description="robustness trials per σ")
    robust_params: str = Field(default="*", description="robustness: parameters to perturb (glob)")
    robust_base: bool = Field(default=True, description="also measure the base model's robustness")
    robust_limit: int | None = Field(default=None, ge=1, description="held-out items per robustness trial "
                                     "(default: limit; fewer items, more trials: the model, not the item, is the unit)")
    robust_models: list[str] | None = Field(
        default=None, description="labels (globs) of the models whose robustness is measured (default: all)")
    off_limit: int | None = Field(default=None, ge=1, description="held-out items per evaluation on the tasks that "
                                  "are not any run's own (off-task degradation; default: limit)")
    skip: list[str] = Field(default_factory=list, description="analyses to skip: kl, delta, lmc, robustness")
    samples: int = Field(default=4, ge=0, description="sample completions per task in the report")
    seed: int = 0
    dtype: str = Field(default="auto", description="auto: float32 on the CPU, bfloat16 on CUDA")
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    batch_size: int = Field(default=64, ge=1)

    @field_validator("skip")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) - set(ANALYSES))
        if bad:
            raise ValueError(f"unknown analyses to skip: {bad}; choose from {list(ANALYSES)}")
        return v

    def kl_settings(self, lengths: Mapping[str, int]) -> KLSettings:
        """KL of every model to the base, each source at its comparison length."""
        return KLSettings(seed=self.seed, dtype=self.dtype, device=self.device, n_prompts=self.kl_prompts,
                          max_new_tokens=dict(lengths))

    def lmc_settings(self, max_new_tokens: int) -> LMCSettings:
        """LMC paths on the primary task; KL (if asked) to endpoint 0, the base."""
        return LMCSettings(seed=self.seed, dtype=self.dtype, device=self.device, points=self.lmc_points,
                           limit=self.lmc_limit or self.limit, max_new_tokens=max_new_tokens,
                           batch_size=self.batch_size, kl=self.lmc_kl, kl_ref=0)

    def robustness_settings(self, max_new_tokens: int) -> RobustnessSettings:
        """Robustness on the primary task at the comparison length."""
        return RobustnessSettings(seed=self.seed, dtype=self.dtype, device=self.device, sigmas=tuple(self.sigmas),
                                  trials=self.trials, params=self.robust_params,
                                  limit=self.robust_limit or self.limit, max_new_tokens=max_new_tokens,
                                  batch_size=self.batch_size)


def default_of(model: type[BaseModel], name: str) -> object:
    """The default of a pydantic field (its factory called), for CLI options that mirror the field."""
    return model.model_fields[name].get_default(call_default_factory=True)


def help_of(model: type[BaseModel], name: str) -> str | None:
    """The description of a pydantic field: the CLI option's help, written once."""
    return model.model_fields[name].description

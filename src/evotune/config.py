"""Validated configuration (pydantic): one `TrainConfig` for every method, YAML + overrides.

A bad value is reported with its dotted path before any model is loaded.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evotune.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, data: Any) -> Any:
        """pydantic reads `true` as 1 for a number; `es.sigma: true` is a mistake, not σ = 1."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                value = data.get(name)
                kinds = set(getattr(field.annotation, "__args__", ())) | {field.annotation}
                if isinstance(value, bool) and kinds & {int, float} and bool not in kinds:
                    raise ValueError(f"{name}: {value!r} is a boolean where a number goes; give a number")
        return data


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def valid_device(v: str) -> str:
    """`auto | cpu | cuda | cuda:N`, or a ConfigError-worthy ValueError naming what to pass."""
    if not _DEVICE.match(v):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
    return v


class ModelConfig(_Strict):
    name: str = Field(default="smollm2-135m", description="alias, directory, run, hub id or arch:NAME (random init)")
    # auto: bfloat16 on CUDA (what GPU runs use), float32 on CPU (where bf16 matmuls are slow)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N (auto: cuda when present)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return valid_device(v)


class TaskConfig(_Strict):
    name: str = "conciseness"
    seed: int = 0
    n_train: int | None = Field(default=None, ge=0)
    n_eval: int | None = Field(default=None, ge=0)
    data: str | None = None
    eval_data: str | None = None
    reward: str | None = None
    chat_template: bool = True
    system_prompt: str | None = None
    response_prefix: str = ""
    options: dict[str, Any] = Field(default_factory=dict)



class GenerateConfig(_Strict):
    max_new_tokens: int | None = Field(default=None, ge=1, description="default: the task's own")
    batch_size: int = Field(default=64, ge=1)
    min_new_tokens: int | None = Field(
        default=None, ge=1, description="force completions this long (benchmarks with random weights)"
    )
    compile: bool = Field(
        default=False, description="static KV cache + torch.compile'd forward (CUDA graphs on a GPU)"
    )
    compile_backend: str = Field(default="inductor", description="torch.compile backend for generation.compile")


class EvalConfig(_Strict):
    every: int = Field(
        default=10, ge=0, description="iterations between held-out evals; 0 = start and end only"
    )
    limit: int | None = Field(default=None, ge=1, description="evaluate on the first N held-out items")
    samples: int = Field(default=3, ge=0, description="sample completions copied into metrics.jsonl")


class BudgetConfig(_Strict):
    """Stop when either count is reached (checked after each iteration/step)."""

    completions: int | None = Field(default=None, ge=1)
    tokens: int | None = Field(default=None, ge=1)

    @classmethod
    def parse(cls, text: str | None) -> BudgetConfig:
        """`completions=N` or `tokens=N` (comma-separated for both); N a whole number >= 1 (1e6 is fine)."""
        if not text:
            return cls()
        out: dict[str, int] = {}
        for part in text.split(","):
            key, sep, val = part.partition("=")
            key = key.strip()
            if not sep or key not in ("completions", "tokens"):
                raise ConfigError(f"budget {text!r}: use completions=N or tokens=N")
            if key in out:
                raise ConfigError(f"budget {text!r}: {key} is given twice; give each limit once")
            try:
                num = float(val)
            except ValueError:
                raise ConfigError(f"budget {text!r}: {val.strip()!r} is not a number") from None
            if not math.isfinite(num) or num != int(num) or num < 1:
                raise ConfigError(f"budget {text!r}: {key} must be a whole number >= 1, got {val.strip()}")
            out[key] = int(num)
        return cls(**out)


class ScheduleConfig(_Strict):
    """How a rate changes with the iteration k (1-based): warm-up, then a decay over `horizon`.

    A pure function of k (`evotune.es.schedules.value`), so training, resume and replay use the
    same number. `constant` without warm-up returns the base value itself (the paper's update).
    """

    kind: Literal["constant", "linear", "cosine", "exponential"] = "constant"
    warmup: int = Field(default=0, ge=0, description="iterations of linear ramp from base/warmup up to base")
    end: float = Field(
        default=0.1, ge=0, description="linear/cosine: the value at `horizon` as a fraction of the base"
    )
    gamma: float = Field(default=0.99, gt=0, le=1, description="exponential: factor per iteration after warm-up")
    horizon: int | None = Field(
        default=None, ge=1,
        description="iterations over which linear/cosine decay (fixed when the run starts: es.iterations)",
    )


LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoRAConfig(_Strict):
    """LoRA-ES: evolve only LoRA adapters (peft) on the frozen base; see docs/algorithms.md."""

    enabled: bool = Field(default=False, description="evolve LoRA adapters instead of the model's own weights")
    rank: int = Field(default=8, ge=1, description="adapter rank r (A: r×in, B: out×r)")
    alpha: float = Field(default=16.0, gt=0, description="peft's lora_alpha: the adapter's output is scaled by alpha/rank")
    target_modules: list[str] = Field(
        default_factory=lambda: list(LLAMA_PROJECTIONS), min_length=1,
        description="Linear layers that get an adapter, by the last part of their module name (peft's rule); "
        "default: the attention and MLP projections of llama-like models",
    )
    init: Literal["kaiming", "gaussian"] = Field(
        default="kaiming",
        description="A's initialisation, drawn from the run seed (peft's: kaiming = its default "
        "kaiming-uniform, gaussian = N(0, 1/r²)); B starts at 0, so the run starts at the base model",
    )
    save_merged: bool = Field(
        default=False, description="checkpoints also hold the merged model (base + adapter) as an HF model",
    )

    @field_validator("target_modules")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not re.fullmatch(r"[A-Za-z0-9_.]+", t)]
        if bad:
            raise ValueError(f"target module names must be module names such as q_proj, got {bad}")
        return v


class ESConfig(_Strict):
    population: int = Field(default=30, ge=2, le=2**20,
                            description="members per iteration; 1 gives no fitness variance to learn from")
    # bounded by what fp32 weights can hold: a larger step can only overflow them
    sigma: float = Field(default=1e-3, gt=0, lt=3.0e38, description="noise scale σ")
    alpha: float = Field(default=5e-4, gt=0, lt=3.0e38, description="step size α (learning rate of the ES update)")
    iterations: int = Field(default=100, ge=1, le=10**8)
    shaping: Literal["zscore", "centered_rank"] = "zscore"
    antithetic: bool = False
    noise: Literal["full", "lowrank"] = "full"
    rank: int = Field(default=1, ge=1)
    lowrank_vectors: Literal["freeze", "full"] = Field(
        default="freeze", description="low-rank mode: non-matrix parameters are frozen or get full-rank noise"
    )
    include: list[str] = Field(default_factory=lambda: ["*"])
    exclude: list[str] = Field(default_factory=list)
    prompts_per_iteration: int | None = Field(default=16, ge=1, description="None = the whole train split")
    baseline: Literal["none", "prompt_mean", "prompt_zscore", "center"] = Field(
        default="none",
        description="per-prompt fitness baseline over the population before averaging prompts "
        "(prompt_zscore: easy and hard prompts weigh the same); center: z = (f − f_center)/std(f), the "
        "unperturbed weights' fitness instead of the population mean (needs es.center_member, zscore shaping)",
    )
    clip_update_norm: float | None = Field(
        default=None, gt=0,
        description="clip the global L2 norm of the ES gradient ĝ = (1/N)·Σ cₛ ε(s) to this before the optimizer "
        "(OpenRLHF es_clip_grad_norm; with sgd the weight step is α·ĝ); None = no clipping. The norm before and "
        "after are logged as es/grad_norm and es/grad_norm_clipped",
    )
    center_member: bool = Field(
        default=False,
        description="also score the unperturbed weights on each iteration's prompts (one more member's completions); "
        "logged as train/center_reward, recorded in the trajectory row",
    )
    samples_per_prompt: int = Field(
        default=1, ge=1, description="completions per prompt and member (k > 1 needs es.temperature > 0)"
    )
    temperature: float = Field(
        default=0.0, ge=0, lt=100,
        description="sampling temperature of members' completions; 0 = greedy (the paper). Sampling is seeded by "
        "(run seed, iteration), the same stream for every member (common random numbers)",
    )
    fitness: Literal["mean", "pass_at_k"] = Field(
        default="mean",
        description="a member's score on a prompt from its k samples: mean reward, or pass_at_k (1 if any of the "
        "k completions is correct, else 0); fitness = the mean over prompts",
    )
    noise_reuse: int = Field(
        default=1, ge=1,
        description="use the same perturbation seeds for this many consecutive iterations (noise-reuse ES); "
        "1 = fresh seeds every iteration",
    )
    optimizer: Literal["sgd", "momentum", "adam", "adamw"] = Field(
        default="sgd", description="torch.optim rule on the ES gradient; sgd is the paper's update"
    )
    momentum: float = Field(default=0.9, ge=0, lt=1, description="optimizer=momentum: the momentum factor")
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="optimizer=adam/adamw: Adam's betas")
    eps: float = Field(default=1e-8, gt=0, description="optimizer=adam/adamw: Adam's epsilon")
    weight_decay: float = Field(default=0.0, ge=0, description="decoupled decay toward 0: θ -= α·wd·θ")
    anchor_decay: float = Field(
        default=0.0, ge=0, description="decoupled decay toward the base weights: θ -= α·ad·(θ − θ₀)"
    )
    alpha_schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    sigma_schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    master_device: Literal["device", "cpu"] = Field(
        default="device", description="where the fp32 master lives: beside the model, or on the host"
    )
    allow_device_change: bool = Field(
        default=False,
        description="resume/replay a trajectory recorded on another device type (its noise differs: weights will too)",
    )
    lora: LoRAConfig = Field(default_factory=LoRAConfig, description="LoRA-ES: evolve adapters only")
    noise_version: Literal[1, 2] | None = Field(
        default=None,
        description="noise stream version: None = the newest (2: CPU noise keyed by all 63 bits of its seed) for a "
        "new run; resume and replay use the version the trajectory records (runs made before it existed: 1)",
    )
    null_control: bool = Field(
        default=False,
        description="null ES (a control, not a method): each iteration's fitness vector is replaced by a seeded random "
        "permutation of itself before the update; same α, σ, N, noise and step size, no link between a member's noise "
        "and its fitness, so whatever such a run shows (‖Δ‖, orthogonality, off-task drift) is not learning",
    )

    @model_validator(mode="after")
    def _pairs(self) -> ESConfig:
        if self.antithetic and self.population % 2:
            raise ValueError(f"antithetic sampling needs an even population, got {self.population}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must each lie in [0, 1), got {list(self.betas)}")
        for name in ("weight_decay", "anchor_decay"):
            if self.alpha * getattr(self, name) >= 1:
                raise ValueError(f"alpha × {name} must be < 1 (it is the fraction removed per iteration), "
                                 f"got {self.alpha} × {getattr(self, name)}")
        if self.samples_per_prompt > 1 and self.temperature == 0:
            raise ValueError(f"samples_per_prompt={self.samples_per_prompt} needs temperature > 0: greedy samples are "
                             "identical")
        if self.noise == "lowrank" and (self.temperature > 0 or self.samples_per_prompt > 1):
            raise ValueError("sampled fitness (temperature > 0) needs noise=full: batched low-rank generation "
                             "shares one sampling stream across members")
        if self.baseline == "center" and not (self.center_member and self.shaping == "zscore"):
            raise ValueError("baseline=center needs center_member=true and shaping=zscore")
        if self.optimizer == "adam" and self.weight_decay:
            raise ValueError("weight_decay with Adam: use optimizer=adamw (decoupled decay)")
        # The decay horizon is fixed when the run is configured, so extending a run (--resume with
        # more iterations) cannot change the rates of iterations already trained or replayed.
        for name in ("alpha_schedule", "sigma_schedule"):
            sched = getattr(self, name)
            if sched.horizon is None and sched.kind in ("linear", "cosine"):
                # a copy (a schedule object may be shared), set without re-running this validator
                self.__dict__[name] = sched.model_copy(update={"horizon": self.iterations})
        return self


class RayConfig(_Strict):
    """Where ES members are evaluated. Results are bit-identical for any worker count, so a run may
    change these on `--resume`; sweeps, studies and continual runs pass them through."""

    workers: int = Field(default=0, ge=0, description="local Ray workers (model replicas); 0 = in-process")
    address: str | None = Field(default=None, description="join an existing Ray cluster at this address")
    check_every: int | None = Field(
        default=None, ge=0, description="iterations between replica checksum checks; None = $EVOTUNE_RAY_CHECK_EVERY or 10"
    )
    threads: int | None = Field(default=None, ge=1, description="torch threads per worker (default: cores // workers)")
    max_failures: int | None = Field(default=None, ge=0, description="worker losses tolerated (default: 2 × workers + 2)")
    gpus_per_worker: float = Field(
        default=0.0, ge=0, description="GPUs each worker requests; fractions let small replicas share one GPU"
    )

    @property
    def enabled(self) -> bool:
        return bool(self.workers or self.address)


# GRPO loss types whose defaults work with token-level importance sampling (luspo/vespo need other settings),
# and learning-rate schedules that need no extra arguments and no metric to follow.
GRPO_LOSSES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")
GRPO_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
                   "inverse_sqrt")
MAX_MICRO_BATCH = 8  # completions per backward pass when grpo.gradient_accumulation_steps is not set


class GRPOConfig(_Strict):
    """TRL's GRPO settings; every check TRL would make (or silently skip) is made here, when the config is built."""

    beta: float = Field(default=0.04, ge=0)
    num_generations: int = Field(default=8, ge=2)
    prompts_per_step: int = Field(default=2, ge=1)
    learning_rate: float = Field(default=1e-6, gt=0)
    lr_scheduler: str = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    temperature: float = Field(default=1.0, gt=0)
    max_prompt_length: int | None = Field(default=512, ge=1)
    loss_type: str = "grpo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    steps: int = Field(default=100, ge=1)
    # None = the fewest equal micro-batches of at most MAX_MICRO_BATCH completions: the backward pass
    # holds vocabulary-sized logits for every completion of a micro-batch, so a step of 32 long-prompt
    # completions in one micro-batch needs ~20 GB (measured on boolq with SmolLM2).
    gradient_accumulation_steps: int | None = Field(default=None, ge=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    sampler: Literal["policy", "es"] = Field(
        default="policy",
        description="who writes the completions GRPO learns from: the policy (temperature sampling), or ES "
        "(completion j of every group greedily from the member θ + σ·ε_j, with es.sigma, es.antithetic and "
        "es.include/exclude): 'sample with ES, optimise with gradients'",
    )

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations

    @property
    def accumulation_steps(self) -> int:
        """gradient_accumulation_steps, or the fewest equal micro-batches of ≤ MAX_MICRO_BATCH completions."""
        if self.gradient_accumulation_steps is not None:
            return self.gradient_accumulation_steps
        batch = self.completions_per_step
        return next(d for d in range(1, batch + 1) if batch % d == 0 and batch // d <= MAX_MICRO_BATCH)

    @model_validator(mode="after")
    def _trl_accepts(self) -> GRPOConfig:
        if self.loss_type not in GRPO_LOSSES:
            raise ValueError(f"grpo.loss_type {self.loss_type!r} is not supported; use one of {', '.join(GRPO_LOSSES)}")
        if self.lr_scheduler not in GRPO_SCHEDULERS:
            raise ValueError(f"grpo.lr_scheduler {self.lr_scheduler!r} is not supported; use one of "
                             f"{', '.join(GRPO_SCHEDULERS)}")
        batch, ga = self.completions_per_step, self.accumulation_steps
        if batch % ga:
            divisors = ", ".join(str(d) for d in range(1, batch + 1) if batch % d == 0)
            raise ValueError(
                f"a GRPO step generates grpo.prompts_per_step × grpo.num_generations = {self.prompts_per_step} × "
                f"{self.num_generations} = {batch} completions, which grpo.gradient_accumulation_steps={ga} cannot "
                f"split into equal micro-batches: set grpo.gradient_accumulation_steps to a divisor of {batch} "
                f"({divisors}) or change grpo.prompts_per_step / grpo.num_generations")
        return self


class RandOptConfig(_Strict):
    """RandOpt (Gan & Isola, arXiv 2603.12228): N = es.population perturbations of the base (σ = es.sigma), each
    scored on the same es.prompts_per_iteration train prompts; the top K are kept, no update at all."""

    top_k: int = Field(default=4, ge=1, description="members kept (K); the held-out majority vote is over them")
    members_per_step: int = Field(
        default=8, ge=1, description="members scored per step (a step is the unit of progress, budget and resume)"
    )


_METRIC = re.compile(r"^(min:|max:)?(eval/)?[A-Za-z0-9_]+$")


class TrainConfig(_Strict):
    method: Literal["es", "grpo", "randopt"] = "es"
    run_dir: str = "runs/default"
    seed: int = 0
    threads: int | None = Field(default=None, ge=1, description="torch threads (default: all cores)")
    checkpoint_every: int = Field(default=10, ge=1)
    keep_checkpoints: int | None = Field(
        default=2, ge=0,
        description="keep the newest K checkpoints (resume and replay need only the newest: the trajectory rebuilds "
        "the rest); 0 or null keeps every one, as before this default (a 7B checkpoint is ~45 GB)",
    )
    keep_best: str | None = Field(
        default=None,
        description="also keep the checkpoint with the best held-out value of this eval metric in "
        "checkpoints/best (e.g. reward_mean, accuracy; min:mean_length to minimise); marked in summary.json",
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    generation: GenerateConfig = Field(default_factory=GenerateConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    es: ESConfig = Field(default_factory=ESConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    randopt: RandOptConfig = Field(default_factory=RandOptConfig)
    report_to: list[Literal["tensorboard", "wandb", "trackio"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="experiment trackers besides metrics.jsonl (as TRL's report_to); [] or 'none' = none",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [t.strip() for t in v.split(",") if t.strip()]
        return [] if v in (["none"], ["None"]) else v

    @field_validator("keep_best")
    @classmethod
    def _metric(cls, v: str | None) -> str | None:
        if v is not None and not _METRIC.match(v):
            raise ValueError(f"keep_best must name an eval metric such as reward_mean or min:mean_length, got {v!r}")
        return v

    @model_validator(mode="after")
    def _randopt(self) -> TrainConfig:
        if self.method == "randopt" and self.randopt.top_k > self.es.population:
            raise ValueError(f"randopt.top_k={self.randopt.top_k} exceeds the population es.population={self.es.population}")
        return self

    @model_validator(mode="after")
    def _grpo_es(self) -> TrainConfig:
        """grpo.sampler=es perturbs with the constant es.sigma, full-rank, on the model's own weights
        (`trainers.grpo.ESSampler`): refuse the ES settings it would otherwise silently ignore."""
        if self.method != "grpo" or self.grpo.sampler != "es":
            return self
        es = self.es
        if es.antithetic and self.grpo.num_generations % 2:
            raise ValueError(f"grpo.sampler=es with es.antithetic pairs members ±ε, so grpo.num_generations must be "
                             f"even, got {self.grpo.num_generations}: make it even or set es.antithetic=false")
        if es.sigma_schedule.kind != "constant" or es.sigma_schedule.warmup:
            raise ValueError("es.sigma_schedule: grpo.sampler=es perturbs with the constant es.sigma; "
                             "remove es.sigma_schedule (or use grpo.sampler=policy)")
        if es.noise != "full":
            raise ValueError(f"es.noise={es.noise}: grpo.sampler=es draws full-rank noise; set es.noise=full "
                             "(or use grpo.sampler=policy)")
        if es.lora.enabled:
            raise ValueError("es.lora.enabled: grpo.sampler=es perturbs the model's own weights, not LoRA adapters; "
                             "set es.lora.enabled=false (or use grpo.sampler=policy)")
        return self

    @field_validator("run_dir")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("run_dir must not be empty")
        return v

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (line {key_node.start_mark.line + 1})", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def yaml_problem(exc: BaseException) -> str:
    """A YAML parser's error as one line: what is wrong and where (PyYAML prints four)."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if not isinstance(exc, yaml.YAMLError):  # int() of a 4300+ digit number, a bad escape, ...
        return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def parse_yaml(text: str) -> Any:
    """YAML with unique keys; every parser failure (syntax, nesting, huge numbers) is a ValueError of one line."""
    depth = deepest = 0
    for ch in text:  # PyYAML takes ~50 s to reach its RecursionError on 3000 nested brackets
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    if deepest > 64:
        raise ValueError(f"nested {deepest} brackets deep (at most 64)")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError) as exc:
        raise ValueError(yaml_problem(exc)) from None


def text_value_problem(value: Any, depth: int = 0) -> str | None:
    """Why a parsed config value cannot be used: NUL or lone-surrogate text, or absurd nesting."""
    if depth > 32:
        return "nested deeper than 32 levels"
    if isinstance(value, str):
        if "\x00" in value:
            return f"{value[:40]!r} holds a NUL character"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{value[:40]!r} holds a lone surrogate (not valid Unicode)"
        return None
    items: Any = [x for kv in value.items() for x in kv] if isinstance(value, dict) else value
    if isinstance(value, dict | list | tuple):
        for v in items:
            if (problem := text_value_problem(v, depth + 1)) is not None:
                return problem
    return None


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        nxt = cur.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set {dotted[:100]}: {k[:60]} is not a section")
        cur = nxt
    cur[keys[-1]] = value


def format_validation_error(exc: ValidationError) -> str:
    parts = []
    errors = exc.errors()
    for e in errors[:5]:
        loc = (".".join(str(x) for x in e["loc"]) or "config")[:100]
        parts.append(
            f"{loc}: {e['msg'].removeprefix('Value error, ')}"
            + (f" (got {e['input']!r:.120})" if "input" in e and not isinstance(e["input"], dict) else "")
        )
    more = f"; ... and {len(errors) - 5} more" if len(errors) > 5 else ""
    return " ".join(("invalid config — " + "; ".join(parts) + more).split("\n"))


def build_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None, cls: type[_Strict] = TrainConfig
) -> Any:
    """Load YAML (optional), apply dotted overrides (`es.sigma`: 1e-3; None values are skipped), validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        if not p.is_file():
            raise ConfigError(f"config file {p} is not a regular file (a directory or device?); give a YAML file")
        try:
            text = p.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {p} is not UTF-8 text (byte offset {exc.start}); re-save it as UTF-8") from None
        try:
            loaded = parse_yaml(text) or {}
        except ValueError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at top level, got {type(loaded).__name__}")
        if (problem := text_value_problem(loaded)) is not None:
            raise ConfigError(f"config file {p}: {problem}")
        data = loaded
    _apply(data, overrides or {}, skip_none=True)
    return _validate(cls, data)


def derive(base: BaseModel | dict[str, Any], changes: dict[str, Any]) -> TrainConfig:
    """A child run's config: `base` (a config, or sections of one as a dict) with dotted `changes`, validated.

    The one way sweeps (a grid cell), studies (a method × seed) and continual runs (a stage) make their
    runs, so a child is checked like any config and a bad change names its dotted key. Unlike
    `build_config`'s overrides, a None in `changes` is set (a sweep may try `es.clip_update_norm: null`).
    """
    data = base.model_dump() if isinstance(base, BaseModel) else copy.deepcopy(base)
    _apply(data, changes)
    return _validate(TrainConfig, data)


def _apply(data: dict[str, Any], changes: dict[str, Any], skip_none: bool = False) -> None:
    """Set dotted `changes` in `data` (None values skipped with `skip_none`: an option not given)."""
    for k, v in changes.items():
        if not isinstance(k, str) or not k or any(not part for part in k.split(".")):
            raise ConfigError(f"config key {k!r:.100} is not a dotted field name such as es.sigma")
        if (problem := text_value_problem(v)) is not None:
            raise ConfigError(f"{k[:100]}: {problem}")
        if v is not None or not skip_none:  # a copy: a later dotted key must not write into the caller's dict
            _set_dotted(data, k, copy.deepcopy(v))


def _validate(cls: type[_Strict], data: dict[str, Any]) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    except (TypeError, ValueError, RecursionError) as exc:  # a validator met a value no field expects
        raise ConfigError(f"invalid config — {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from None


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The config a run was started with; a folder without one is not a run (said in one line)."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        what = "does not exist" if not Path(run_dir).exists() else "is not a run directory (no config.yaml)"
        raise ConfigError(f"{run_dir} {what}; give a folder made by `evotune train`")
    return build_config(path)


# Method variants a study trains and a comparison names: a method plus the settings that make it the
# variant. The one table of them; `variant_of` reads it backwards for a run's own config.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "grpo_es": ("grpo", {"grpo.sampler": "es"}),  # GRPO's update on completions ES members write
    "es_null": ("es", {"es.null_control": True}),  # ES with fitness detached from the member that earned it
}


def variant_settings(name: str) -> tuple[str, dict[str, Any]]:
    """(method, dotted settings) of run kind `name` (a method or a variant): its variant's settings,
    every other variant's at their defaults, so a config shared across kinds cannot leak one into another."""
    method, own = VARIANTS.get(name, (name, {}))
    defaults = TrainConfig()
    settings = {k: _get_dotted(defaults, k) for _, (_, other) in VARIANTS.items() for k in other}
    return method, {**settings, **own}


def variant_of(cfg: TrainConfig) -> str:
    """What a run is called beside others: its variant (who sampled, whose fitness counts), else its method."""
    for name, (method, settings) in VARIANTS.items():
        if cfg.method == method and all(_get_dotted(cfg, k) == v for k, v in settings.items()):
            return name
    return cfg.method


def _get_dotted(cfg: BaseModel, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj

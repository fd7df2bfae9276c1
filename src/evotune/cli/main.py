"""`evotune` command line: thin typer commands that validate, then call the library."""

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from evotune.cli.common import assemble, console, friendly, parse_sets, split_csv

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Evolution Strategies and GRPO post-training.")
train_app = typer.Typer(no_args_is_help=True, help="Train a model (es | grpo).")
model_app = typer.Typer(no_args_is_help=True, help="Model utilities (tiny test model, embedded model cache).")
app.add_typer(train_app, name="train")
app.add_typer(model_app, name="model")

Opt = typer.Option
TaskOpt = Annotated[str | None, Opt(help="task name (countdown, conciseness, jsonl, ...) or module:Class")]
SetOpt = Annotated[list[str] | None, Opt("--set", help="override any config field: section.key=value")]


class TrainArgs:
    """The flags every trainer shares, after parsing: what `assemble` needs plus the overrides."""

    def __init__(self, config: Path | None, run_dir: str | None, no_progress: bool, overrides: dict[str, Any]):
        self.config, self.run_dir, self.progress, self.overrides = config, run_dir, not no_progress, overrides

    def build(self, resume: bool, method_overrides: dict[str, Any]) -> Any:
        """The validated TrainConfig: YAML (or the run's own config on --resume), then every flag given."""
        return assemble(self.config, self.run_dir, resume, {**self.overrides, **method_overrides})


# name → (type, typer option, config key). One list, so `train es` and `train grpo` cannot drift apart.
_SHARED: list[tuple[str, Any, Any, str | None]] = [
    ("config", Path | None, Opt("--config", "-c", help="YAML config; flags override it"), None),
    ("task", str | None, Opt(help="task name (countdown, conciseness, jsonl, ...) or module:Class"), "task.name"),
    ("model", str | None, Opt(help="smollm2-135m, a local directory, a run directory or a hub id"), "model.name"),
    ("run_dir", str | None, Opt("--run-dir", help="run directory"), "run_dir"),
    ("seed", int | None, Opt(), "seed"),
    ("budget", str | None, Opt(help="stop at completions=N or tokens=N"), None),
    ("max_new_tokens", int | None, Opt(help="max completion length in tokens"), "generation.max_new_tokens"),
    ("eval_every", int | None, Opt(help="held-out evaluation every K iterations/steps"), "eval.every"),
    ("eval_limit", int | None, Opt(help="held-out items per evaluation"), "eval.limit"),
    ("n_train", int | None, Opt(), "task.n_train"),
    ("n_eval", int | None, Opt(), "task.n_eval"),
    ("data", str | None, Opt(help="data file for the jsonl task"), "task.data"),
    ("reward", str | None, Opt(help="jsonl task reward: exact|numeric|contains|regex"), "task.reward"),
    ("threads", int | None, Opt(), "threads"),
    ("dtype", str | None, Opt(help="float32 | bfloat16 | float16"), "model.dtype"),
    ("batch_size", int | None, Opt(help="generation batch size"), "generation.batch_size"),
    ("checkpoint_every", int | None, Opt(), "checkpoint_every"),
    ("sets", list[str] | None, Opt("--set", help="override any config field: section.key=value"), None),
    ("no_progress", bool, Opt("--no-progress"), None),
]


def shared_train_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a trainer command the shared flags; it receives them parsed, as `args: TrainArgs`.

    typer reads the command's signature, so the shared parameters are appended to it here.
    """
    own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "args"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False if tp is bool else None,
                          annotation=Annotated[tp, opt])
        for name, tp, opt, _ in _SHARED
    ]

    @functools.wraps(fn)
    def wrapper(**kw: Any) -> Any:
        from evotune.config import BudgetConfig

        vals = {name: kw.pop(name) for name, *_ in _SHARED}
        o: dict[str, Any] = {key: vals[name] for name, _, _, key in _SHARED if key is not None}
        if vals["budget"] is not None:
            b = BudgetConfig.parse(vals["budget"])
            o["budget.completions"], o["budget.tokens"] = b.completions, b.tokens
        o.update(parse_sets(vals["sets"]))
        return fn(**kw, args=TrainArgs(vals["config"], vals["run_dir"], vals["no_progress"], o))

    kinds = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    wrapper.__signature__ = inspect.Signature(kinds + shared)  # type: ignore[attr-defined]
    return wrapper


@train_app.command("es")
@friendly
@shared_train_options
def train_es(
    resume: Annotated[bool, Opt(help="continue the run in --run-dir where it stopped")] = False,
    population: Annotated[int | None, Opt(help="members per iteration (N)")] = None,
    sigma: Annotated[float | None, Opt(help="noise scale σ")] = None,
    alpha: Annotated[float | None, Opt(help="step size α")] = None,
    iterations: Annotated[int | None, Opt(help="number of ES iterations")] = None,
    shaping: Annotated[str | None, Opt(help="zscore | centered_rank")] = None,
    antithetic: Annotated[bool | None, Opt(help="mirrored noise pairs")] = None,
    noise: Annotated[str | None, Opt(help="full | lowrank")] = None,
    rank: Annotated[int | None, Opt(help="rank of low-rank noise")] = None,
    include: Annotated[str | None, Opt(help="comma-separated globs of parameters to evolve")] = None,
    exclude: Annotated[str | None, Opt(help="comma-separated globs of parameters to freeze")] = None,
    prompts_per_iteration: Annotated[int | None, Opt(help="mini-batch of train prompts per iteration")] = None,
    workers: Annotated[int | None, Opt(help="evaluate members on N local Ray workers")] = None,
    ray_address: Annotated[str | None, Opt(help="join an existing Ray cluster")] = None,
    ray_check_every: Annotated[int, Opt(help="compare replica checksums every K iterations")] = 10,
    *,
    args: TrainArgs,
) -> None:
    """Full-parameter Evolution Strategies on a task's verifiable reward."""
    from evotune.es.trainer import ESTrainer

    cfg = args.build(resume, {
        "method": "es", "es.population": population, "es.sigma": sigma, "es.alpha": alpha,
        "es.iterations": iterations, "es.shaping": shaping, "es.antithetic": antithetic, "es.noise": noise,
        "es.rank": rank, "es.include": split_csv(include), "es.exclude": split_csv(exclude),
        "es.prompts_per_iteration": prompts_per_iteration,
    })
    factory = None
    if workers or ray_address:
        from evotune.distributed.ray_evaluator import ray_evaluator_factory

        factory = ray_evaluator_factory(workers or 0, ray_address, check_every=ray_check_every)
    summary = ESTrainer(cfg, resume=resume, progress=args.progress, evaluator_factory=factory).train()
    _print_summary(summary)


def _print_summary(summary: dict[str, Any]) -> None:
    t = Table(title="run summary", show_header=False)
    for k, v in summary.items():
        t.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(t)


@app.command("eval")
@friendly
def eval_cmd(
    model: Annotated[str, Opt(help="model directory, run directory (latest checkpoint) or smollm2-135m")],
    task: TaskOpt = None,
    split: Annotated[str, Opt(help="train | eval")] = "eval",
    out: Annotated[Path | None, Opt(help="write per-completion rows here (JSONL)")] = None,
    limit: Annotated[int | None, Opt()] = None,
    max_new_tokens: Annotated[int | None, Opt()] = None,
    batch_size: Annotated[int, Opt()] = 64,
    temperature: Annotated[float, Opt(help="0 = greedy, as in training")] = 0.0,
    n_train: Annotated[int | None, Opt()] = None,
    n_eval: Annotated[int | None, Opt()] = None,
    data: Annotated[str | None, Opt()] = None,
    reward: Annotated[str | None, Opt()] = None,
    dtype: Annotated[str, Opt()] = "float32",
    sets: SetOpt = None,
) -> None:
    """Score any model on a task split with the same code path as training."""
    from evotune.backends.models import load_model
    from evotune.config import ConfigError, TaskConfig, build_config, load_run_config
    from evotune.evaluation import evaluate
    from evotune.runs.rundir import write_jsonl

    base: dict[str, Any] = {}
    if (Path(model) / "config.yaml").is_file():  # a run: evaluate with its own task settings
        run_cfg = load_run_config(model)
        base = run_cfg.task.model_dump()
        max_new_tokens = max_new_tokens or run_cfg.generation.max_new_tokens
    o = {"name": task, "n_train": n_train, "n_eval": n_eval, "data": data, "reward": reward, **parse_sets(sets)}
    for k, v in o.items():
        if v is not None:
            base[k] = v
    if "name" not in base:
        raise ConfigError("--task is required unless --model is an evotune run directory")
    tcfg = build_config(None, None, TaskConfig) if not base else TaskConfig.model_validate(base)
    t = tcfg.build()
    m, tok = load_model(model, dtype)
    res = evaluate(m, tok, t, split, max_new_tokens, batch_size, limit, temperature)
    if out is not None:
        write_jsonl(out, res.rows)
    console.print_json(json.dumps(res.summary))


@app.command("replay")
@friendly
def replay_cmd(
    run: Annotated[Path, typer.Argument(help="run directory")],
    iteration: Annotated[int | None, Opt(help="iteration to rebuild (default: last)")] = None,
    out: Annotated[Path | None, Opt(help="write the rebuilt model here")] = None,
) -> None:
    """Rebuild the weights of iteration K from the base model and trajectory.jsonl alone."""
    from evotune.es.replay import replay

    res = replay(run, iteration, out)
    console.print_json(json.dumps(res))
    if res["matches_checkpoint"] is False:
        console.print("[bold red]replayed weights differ from the checkpoint[/]")
        raise typer.Exit(1)


@model_app.command("tiny")
@friendly
def model_tiny(
    out_dir: Annotated[Path, typer.Argument()],
    seed: Annotated[int, Opt()] = 0,
    hidden: Annotated[int, Opt()] = 64,
    layers: Annotated[int, Opt()] = 2,
) -> None:
    """A tiny random Llama with the real SmolLM2 tokenizer (for tests and wiring)."""
    from evotune.backends.models import make_tiny

    console.print(str(make_tiny(out_dir, seed, hidden, layers)))


@model_app.command("prepare")
@friendly
def model_prepare() -> None:
    """Convert the embedded SmolLM2 GGUF to safetensors in the cache (done once)."""
    from evotune.backends.models import ensure_smollm2

    console.print(str(ensure_smollm2()))


@app.command("tasks")
def tasks_cmd() -> None:
    """List registered tasks."""
    from evotune.tasks import available_tasks

    for name in available_tasks():
        print(name)


@app.command("runs")
@friendly
def runs_cmd(directory: Annotated[Path, typer.Argument(help="directory holding run directories")] = Path("runs")) -> None:
    """List runs: method, task, budget spent, best and final held-out reward."""
    from evotune.runs.summary import list_runs

    rows = list_runs(directory)
    t = Table(title=f"runs in {directory}")
    for col in ("run", "method", "task", "steps", "completions", "tokens", "wall s", "eval reward (first→final)", "best"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["run"], r["method"], r["task"], str(r["steps"]), str(r["completions"]), str(r["tokens"]),
            f"{r['wall']:.0f}", f"{_fmt(r['first_reward'])} → {_fmt(r['final_reward'])}", _fmt(r["best_reward"]),
        )
    console.print(t)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


from evotune.cli import continual_cmd  # noqa: E402,F401

from evotune.cli import analyze_cmd  # noqa: E402,F401  # isort: skip

from evotune.cli import grpo_cmd  # noqa: E402,F401  # isort: skip


from evotune.cli import passk_cmd, study_cmd, sweep_cmd  # noqa: E402,F401  # isort: skip
from evotune.cli import judge_cmd, serve_cmd  # noqa: E402  # isort: skip

serve_cmd.register(app)
judge_cmd.register(app)

if __name__ == "__main__":  # `python -m evotune.cli.main`: use the imported module's app (all commands)
    from evotune.cli.main import app as _app

    _app()

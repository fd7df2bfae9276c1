"""Commands around runs and models: eval, replay, runs, tasks, model tiny|prepare."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from evotune.cli.app import DeviceOpt, DtypeOpt, SetOpt, TaskOpt, app, model_app
from evotune.cli.common import check_out, console, friendly, parse_sets
from evotune.cli.options import FieldDefault
from evotune.runs.layout import CONFIG_FILE

Opt = typer.Option


@app.command("eval")
@friendly
def eval_cmd(
    *,  # --batch-size's default is the generation config's own
    model: Annotated[str, Opt(help="model directory, run directory (latest checkpoint) or smollm2-135m")],
    task: TaskOpt = None,
    split: Annotated[str, Opt(help="train | eval")] = "eval",
    out: Annotated[Path | None, Opt(help="write per-completion rows here (JSONL)")] = None,
    limit: Annotated[int | None, Opt(min=1)] = None,
    max_new_tokens: Annotated[int | None, Opt(min=1)] = None,
    batch_size: Annotated[int, Opt(min=1, default_factory=FieldDefault("evotune.config:GenerateConfig", "batch_size"))],
    temperature: Annotated[float, Opt(help="0 = greedy, as in training")] = 0.0,
    n_train: Annotated[int | None, Opt(min=1)] = None,
    n_eval: Annotated[int | None, Opt(min=1)] = None,
    data: Annotated[str | None, Opt()] = None,
    reward: Annotated[str | None, Opt()] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    sets: SetOpt = None,
) -> None:
    """Score any model on a task split with the same code path as training."""
    check_out(out, "file")
    from evotune.backends.models import load_model
    from evotune.evaluation import evaluate
    from evotune.runs.rundir import write_jsonl
    from evotune.tasks import build_task

    given = {"name": task, "n_train": n_train, "n_eval": n_eval, "data": data, "reward": reward, **parse_sets(sets)}
    tcfg, max_new_tokens = _eval_task(model, given, max_new_tokens)
    t = build_task(tcfg)
    m, tok = load_model(model, dtype, device)
    res = evaluate(m, tok, t, split, max_new_tokens, batch_size, limit, temperature)
    if out is not None:
        write_jsonl(out, res.rows)
    console.print_json(json.dumps(res.summary))


def _eval_task(model: str, given: dict[str, Any], max_new_tokens: int | None) -> tuple[Any, int | None]:
    """The task config to evaluate on, and the completion length.

    A run brings its own task settings (and length), which the flags given override; any other
    model needs --task.
    """
    from evotune.config import TaskConfig, build_config, load_run_config
    from evotune.errors import ConfigError

    base: dict[str, Any] = {}
    if (Path(model) / CONFIG_FILE).is_file():  # a run: evaluate with its own task settings
        run_cfg = load_run_config(model)
        base = run_cfg.task.model_dump()
        max_new_tokens = run_cfg.generation.max_new_tokens if max_new_tokens is None else max_new_tokens
    for k, v in given.items():
        if v is not None:
            base[k] = v
    if "name" not in base:
        raise ConfigError("--task is required unless --model is an evotune run directory")
    tcfg = build_config(None, None, TaskConfig) if not base else TaskConfig.model_validate(base)
    return tcfg, max_new_tokens


@app.command("replay")
@friendly
def replay_cmd(
    run: Annotated[Path, typer.Argument(help="run directory")],
    iteration: Annotated[int | None, Opt(min=0, help="iteration to rebuild (default: last)")] = None,
    out: Annotated[Path | None, Opt(help="write the rebuilt model here")] = None,
    device: Annotated[str | None, Opt(help="auto | cpu | cuda | cuda:N (default: the run's own)")] = None,
    allow_device_change: Annotated[
        bool, Opt(help="replay on another device type than recorded (noise differs: so will the weights)")
    ] = False,
) -> None:
    """Rebuild the weights of iteration K from the base model and trajectory.jsonl alone."""
    check_out(out)
    from evotune.trainers.replay import replay

    res = replay(run, iteration, out, device, allow_device_change)
    console.print_json(json.dumps(res))
    if res["matches_checkpoint"] is False:
        console.print(f"[bold red]replayed weights differ from the checkpoint:[/] {res.get('problem', '')}",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@model_app.command("tiny")
@friendly
def model_tiny(
    out_dir: Annotated[Path, typer.Argument()],
    seed: Annotated[int, Opt()] = 0,
    hidden: Annotated[int, Opt(min=1)] = 64,
    layers: Annotated[int, Opt(min=1)] = 2,
) -> None:
    """A tiny random Llama with the real SmolLM2 tokenizer (for tests and wiring)."""
    check_out(out_dir, what="the folder")
    from evotune.backends.models import make_tiny

    console.print(str(make_tiny(out_dir, seed, hidden, layers)))


@model_app.command("prepare")
@friendly
def model_prepare() -> None:
    """Convert the embedded SmolLM2 GGUF to safetensors in the cache (done once)."""
    from evotune.backends.resolve import ensure_smollm2

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

    cols = ("run", "method", "task", "steps", "completions", "tokens", "wall s", "eval reward (first→final)", "best")
    rows = [
        (str(r["run"]), str(r["method"]), str(r["task"]), str(r["steps"]), str(r["completions"]), str(r["tokens"]),
         f"{r['wall']:.0f}", f"{_fmt(r['first_reward'])} → {_fmt(r['final_reward'])}", _fmt(r["best_reward"]))
        for r in list_runs(directory)
    ]
    if not sys.stdout.isatty():  # a pipe or a file: every value whole, tab-separated, never cut to a width
        for row in (cols, *rows):
            print("\t".join(v.replace("\t", " ") for v in row))
        return
    t = Table(title=f"runs in {directory}")
    for col in cols:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*row)
    console.print(t)


def _fmt(v: Any) -> str:
    """A metric for the listing; a hand-edited value that is not a number is shown as it is, not a crash."""
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, int | float) and not isinstance(v, bool) else str(v)[:12]

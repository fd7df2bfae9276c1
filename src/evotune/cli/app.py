"""The typer apps every command module registers on, and the flags the trainers share.

Command modules import this module; `cli.main` imports them all. Nothing here imports a command
module, so the CLI has no import circle.
"""

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from evotune.cli.common import assemble, console, parse_sets
from evotune.cli.options import add_options

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Evolution Strategies and GRPO post-training.")


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="errors also print their traceback (or EVOTUNE_DEBUG=1)")]
          = False) -> None:
    """Evolution Strategies and GRPO post-training."""
    if debug:
        os.environ["EVOTUNE_DEBUG"] = "1"

train_app = typer.Typer(no_args_is_help=True, help="Train a model (es | grpo | randopt).")
model_app = typer.Typer(no_args_is_help=True, help="Model utilities (tiny test model, embedded model cache).")
app.add_typer(train_app, name="train")
app.add_typer(model_app, name="model")
analyze_app = typer.Typer(
    no_args_is_help=True, help="Analyses of how solutions differ (KL, deltas, LMC, robustness, pass@k)."
)
app.add_typer(analyze_app, name="analyze")
sweep_app = typer.Typer(no_args_is_help=True, help="Hyper-parameter grids over seeds (skips finished runs).")
app.add_typer(sweep_app, name="sweep")

Opt = typer.Option
TaskOpt = Annotated[str | None, Opt(help="task name (countdown, conciseness, jsonl, ...) or module:Class")]
SetOpt = Annotated[list[str] | None, Opt("--set", help="override any config field: section.key=value")]
# Where a command that loads models places them: the same two flags on every such command.
DtypeOpt = Annotated[str, Opt(help="auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16")]
DeviceOpt = Annotated[str, Opt(help="auto | cpu | cuda | cuda:N (auto: CUDA when present)")]


class TrainArgs:
    """The flags every trainer shares, after parsing: what `assemble` needs plus the overrides.

    Precedence, for every field alike: a named flag > `--set` > the YAML (or the stored config on
    `--resume`) > the default. A flag not given (None) never hides a `--set` of the same field.
    """

    def __init__(
        self, config: Path | None, run_dir: str | None, no_progress: bool, flags: dict[str, Any], sets: dict[str, Any]
    ):
        self.config, self.run_dir, self.progress = config, run_dir, not no_progress
        self.flags, self.sets = flags, sets

    def build(self, resume: bool, method_flags: dict[str, Any]) -> Any:
        """The validated TrainConfig: YAML (or the run's own config on --resume), `--set`, then every flag given."""
        given = {k: v for k, v in {**self.flags, **method_flags}.items() if v is not None}
        return assemble(self.config, self.run_dir, resume, {**self.sets, **given})


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
    ("data", str | None, Opt(help="data file of the task (JSON lines, JSON array, parquet or a datasets folder)"), "task.data"),
    ("reward", str | None, Opt(help="jsonl task reward: exact|numeric|contains|regex"), "task.reward"),
    ("threads", int | None, Opt(), "threads"),
    ("dtype", str | None, Opt(help="auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16"), "model.dtype"),
    ("device", str | None, Opt(help="auto | cpu | cuda | cuda:N (auto: CUDA when present)"), "model.device"),
    ("batch_size", int | None, Opt(help="generation batch size"), "generation.batch_size"),
    ("checkpoint_every", int | None, Opt(), "checkpoint_every"),
    ("report_to", str | None, Opt(help="trackers: tensorboard,wandb,trackio or none (wandb offline unless configured)"),
     "report_to"),
    ("sets", list[str] | None, Opt("--set", help="override any config field: section.key=value"), None),
    ("no_progress", bool, Opt("--no-progress"), None),
]


def _train_args(vals: dict[str, Any]) -> TrainArgs:
    """The shared flags' values as `TrainArgs`: each config key, the budget split into its two fields."""
    from evotune.config import BudgetConfig

    o: dict[str, Any] = {key: vals[name] for name, _, _, key in _SHARED if key is not None}
    if vals["budget"] is not None:
        b = BudgetConfig.parse(vals["budget"])
        o["budget.completions"], o["budget.tokens"] = b.completions, b.tokens
    return TrainArgs(vals["config"], vals["run_dir"], vals["no_progress"], o, parse_sets(vals["sets"]))


# Gives a trainer command the shared flags; it receives them parsed, as `args: TrainArgs`.
shared_train_options = add_options(
    [(name, tp, opt, False if tp is bool else None) for name, tp, opt, _ in _SHARED], "args", _train_args
)


def print_summary(summary: dict[str, Any]) -> None:
    t = Table(title="run summary", show_header=False)
    for k, v in summary.items():
        t.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(t)

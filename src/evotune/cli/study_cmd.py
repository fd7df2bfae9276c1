"""`evotune study`: ES vs GRPO at a matched budget over seeds, compared, with verdicts per claim."""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from evotune.cli.app import app
from evotune.cli.common import console, friendly, parse_sets


@app.command("study")
@friendly
def study_cmd(
    config: Annotated[Path, typer.Option("--config", "-c", help="studies/<name>.yaml")],
    sets: Annotated[list[str] | None, typer.Option("--set", help="override: section.key=value")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N (sets model.device)")] = None,
    reuse_compare: Annotated[
        bool, typer.Option("--reuse-compare", help="judge the claims from the comparison on disk (no re-analysis)")
    ] = False,
) -> None:
    """Train both methods (resumable), run compare + LMC + off-task KL, write report/index.html."""
    from evotune.study import load_study, run_study

    cfg = load_study(config, {**parse_sets(sets), **({"model.device": device} if device else {})})
    res = run_study(cfg, progress=not no_progress, log=lambda m: console.print(m, highlight=False),
                    reuse_compare=reuse_compare)
    t = Table(title=f"study {cfg.name}: findings")
    for col in ("#", "claim", "measured", "verdict"):
        t.add_column(col)
    for i, r in enumerate(res["findings"], 1):
        t.add_row(str(i), r["claim"], r["measured"], r["verdict"])
    console.print(t)
    console.print(f"report: {cfg.out_dir / 'report' / 'index.html'}")

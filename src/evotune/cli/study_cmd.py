"""`evotune study`: ES vs GRPO (and their controls) at a matched budget over seeds, compared and judged."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from evotune.cli.app import app
from evotune.cli.common import check_out, console, friendly, parse_sets


def _print(findings: list[dict[str, Any]], title: str) -> None:
    t = Table(title=title)
    for col in ("claim", "measured", "verdict"):
        t.add_column(col)
    for r in findings:
        t.add_row(r["claim"], r["measured"], r["verdict"])
    console.print(t)


@app.command("study")
@friendly
def study_cmd(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="studies/<name>.yaml")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="override: section.key=value")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N (sets model.device)")] = None,
    reuse_compare: Annotated[
        bool, typer.Option("--reuse-compare", help="judge the claims from the comparison on disk (no re-analysis)")
    ] = False,
    rejudge: Annotated[
        Path | None,
        typer.Option("--rejudge", help="recompute every verdict from an evidence file (or a folder holding "
                     "evidence.json) alone: no models, no torch; writes verdicts.json beside it (or to --out)"),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="--rejudge: folder for verdicts.json")] = None,
) -> None:
    """Train every method (resumable), run compare, write evidence.json, judge each claim, write report/index.html."""
    check_out(out)
    if rejudge is not None:
        from evotune.study.judge import rejudge as rejudge_fn

        target = out or (rejudge if rejudge.is_dir() else rejudge.parent)
        res = rejudge_fn(rejudge, target)
        _print(res["findings"], f"study {res.get('name')}: verdicts re-judged from {rejudge}")
        console.print(f"verdicts: {Path(target) / 'verdicts.json'}")
        return
    if config is None:
        raise typer.BadParameter("pass --config studies/<name>.yaml (or --rejudge EVIDENCE)")
    from evotune.study import load_study, run_study

    cfg = load_study(config, {**parse_sets(sets), **({"model.device": device} if device else {})})
    res = run_study(cfg, progress=not no_progress, log=lambda m: console.print(m, highlight=False),
                    reuse_compare=reuse_compare)
    _print(res["findings"], f"study {cfg.name}: findings")
    console.print(f"report: {cfg.out_dir / 'report' / 'index.html'}; evidence: {cfg.out_dir / 'report' / 'evidence.json'}")

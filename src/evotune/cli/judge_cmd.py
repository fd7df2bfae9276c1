"""`evotune judge`: a held-out LLM judge ranks models by pairwise Bradley–Terry / Elo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from evotune.analysis.judge_settings import JudgeSettings
from evotune.cli.app import DeviceOpt, DtypeOpt
from evotune.cli.common import check_out, console, friendly, split_csv
from evotune.errors import ConfigError

Opt = typer.Option


S = JudgeSettings  # every default below is the settings object's own


@friendly
def judge(
    models: Annotated[str, Opt(help="comma-separated models or runs (at least two)")],
    judge_model: Annotated[str, Opt("--judge", help="judge model: smollm2-135m, a directory or a run")],
    task: Annotated[str | None, Opt(help="task whose held-out split is used (default: the runs' own)")] = S.task,
    labels: Annotated[str | None, Opt(help="comma-separated display names, one per model")] = None,
    n: Annotated[int, Opt("--n", min=1, help="held-out prompts")] = S.n_prompts,
    out: Annotated[Path, Opt(help="directory for judge.json and judge.html")] = S.out_dir,
    report: Annotated[Path | None, Opt(help="a `compare` report directory to add the section to")] = None,
    max_new_tokens: Annotated[int | None, Opt(min=1)] = S.max_new_tokens,
    scorer_url: Annotated[str | None, Opt(help="training scorer to compare with (task option scorer_url)")] = S.scorer_url,
    no_scorer: Annotated[bool, Opt("--no-scorer", help="skip the agreement with the training scorer")] = not S.use_scorer,
    bootstrap: Annotated[int, Opt(min=1, help="bootstrap resamples for the intervals")] = S.n_boot,
    seed: Annotated[int, Opt()] = S.seed,
    batch_size: Annotated[int, Opt(min=1)] = S.batch_size,
    dtype: DtypeOpt = S.dtype,
    device: DeviceOpt = S.device,
    samples: Annotated[int, Opt(min=0, help="prompts whose replies are shown")] = S.samples,
) -> None:
    """Pairwise judge tournament (both orders, helpfulness and harmlessness), Elo with 95% intervals."""
    check_out(out)
    if report is not None:  # checked before the tournament, not after it
        check_out(report, what="--report")
        if not (report / "summary.json").is_file():
            raise ConfigError(f"--report {report} is not a `compare` report (no summary.json); give the folder "
                              "`evotune compare --out` wrote, or leave --report out")
    from evotune.analysis.judge import judge_tournament
    from evotune.report.judge_section import write_judge_report

    settings = JudgeSettings(
        judge=judge_model, task=task, labels=split_csv(labels), n_prompts=n, out_dir=out,
        max_new_tokens=max_new_tokens, scorer_url=scorer_url, use_scorer=not no_scorer, n_boot=bootstrap,
        seed=seed, batch_size=batch_size, dtype=dtype, device=device, samples=samples,
    )
    s = judge_tournament(split_csv(models) or [], settings, log=lambda m: console.print(m, highlight=False))
    write_judge_report(s, out, report)
    console.print(_elo_table(s, judge_model))
    console.print(f"written: {out / 'judge.json'}, {out / 'judge.html'}" + (f", {report / 'index.html'}" if report else ""))


def _elo_table(s: dict[str, Any], judge_model: str) -> Table:
    """Elo [95% CI] per model, hard and soft verdicts per criterion."""
    t = Table(title=f"judge {judge_model}: Elo [95% CI] on {s['n_prompts']} held-out prompts")
    t.add_column("model")
    cols = [(g, s[g]) for g in s["criteria"]] + [(f"{g} (soft)", s[g]["soft"]) for g in s["criteria"]]
    for name, _ in cols:
        t.add_column(name)
    for m in s["models"]:
        t.add_row(m, *(f"{r['elo'][m]['elo']:.0f} [{r['elo'][m]['lo']:.0f}, {r['elo'][m]['hi']:.0f}]" for _, r in cols))
    return t


def register(app: typer.Typer) -> None:
    """Add `judge` to the CLI."""
    app.command("judge")(judge)

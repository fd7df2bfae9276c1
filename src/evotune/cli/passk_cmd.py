"""`evotune analyze passk`: pass@k from temperature vs weight-perturbation sampling."""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from evotune.cli.app import DeviceOpt, DtypeOpt, analyze_app
from evotune.cli.common import check_out, console, friendly
from evotune.cli.options import FieldDefault

Opt = typer.Option


@analyze_app.command("passk")
@friendly
def passk_cmd(
    *,  # --batch-size's default is the generation config's own
    model: Annotated[str, Opt(help="model directory, run directory or smollm2-135m")],
    task: Annotated[str, Opt(help="task name")],
    n: Annotated[int, Opt(min=1, help="samples per prompt (k = 1..n)")] = 16,
    temperatures: Annotated[str, Opt(help="comma-separated temperatures")] = "0.4,0.7,1.0",
    sigmas: Annotated[str, Opt(help="comma-separated perturbation scales σ")] = "5e-4,1e-3,3e-3",
    n_select: Annotated[int, Opt(min=1, help="train-split prompts used to pick the best T and σ")] = 16,
    n_report: Annotated[int, Opt(min=1, help="held-out prompts the numbers are reported on")] = 32,
    max_new_tokens: Annotated[int | None, Opt(min=1)] = None,
    batch_size: Annotated[int, Opt(min=1, default_factory=FieldDefault("evotune.config:GenerateConfig", "batch_size"))],
    seed: Annotated[int, Opt()] = 0,
    out: Annotated[Path, Opt(help="output directory (passk.json, passk.png)")] = Path("passk"),
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
) -> None:
    """Pass@k, coverage and solved-set overlap; settings chosen on a split disjoint from the report."""
    check_out(out)
    from evotune.analysis.common import parse_floats
    from evotune.analysis.passk import passk_study, plot_passk
    from evotune.backends.models import load_model
    from evotune.runs.rundir import atomic_write_json
    from evotune.tasks import get_task

    t = get_task(task)
    m, tok = load_model(model, dtype, device)
    res = passk_study(m, tok, t, n, parse_floats(temperatures), parse_floats(sigmas),
                      t.max_new_tokens(max_new_tokens), n_select, n_report, batch_size, seed)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "passk.json", res)
    plot_passk(res, str(out / "passk.png"))
    table = Table(title=f"pass@k on {n_report} held-out prompts (n={n})")
    for col in ("sampling", "setting", "pass@1", f"pass@{n}", "coverage"):
        table.add_column(col)
    for key, label in (("temperature", "T"), ("perturbation", "σ")):
        r = res[key]
        table.add_row(key, f"{label}={r['value']:g}", f"{r['pass@1']:.3f}", f"{r[f'pass@{n}']:.3f}", f"{r['coverage']:.3f}")
    console.print(table)
    console.print(json.dumps({"overlap": res["overlap"]}))

"""`evotune serve scorer`: the reward/cost scoring service (FastAPI + uvicorn)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evotune.cli.app import DeviceOpt
from evotune.cli.common import console, friendly

Opt = typer.Option


@friendly
def scorer(
    reward: Annotated[str, Opt(help="reward head: seqcls:PATH | judge:MODEL | none")] = "judge:smollm2-135m",
    cost: Annotated[str, Opt(help="cost head: seqcls:PATH | judge:MODEL | none")] = "judge:smollm2-135m",
    host: Annotated[str, Opt(help="bind address; anything but loopback needs --token")] = "127.0.0.1",
    port: Annotated[int, Opt()] = 8000,
    token: Annotated[str | None, Opt(envvar="EVOTUNE_SCORER_TOKEN", show_envvar=True,
                                     help="bearer token clients must send")] = None,
    max_batch: Annotated[int, Opt(help="most items per request")] = 64,
    max_chars: Annotated[int, Opt(help="longest prompt or completion accepted")] = 16_000,
    max_body_bytes: Annotated[int, Opt(help="largest request body")] = 4_000_000,
    timeout: Annotated[float, Opt(help="seconds per request, queueing included (504 after)")] = 120.0,
    batch_size: Annotated[int, Opt(help="items per forward pass")] = 8,
    format: Annotated[str, Opt(help="seqcls input: auto | chat | beaver | plain")] = "auto",
    reward_label: Annotated[int, Opt(help="multi-class reward head: class scored as log-odds")] = 1,
    cost_label: Annotated[int, Opt(help="multi-class cost head: class scored as log-odds (the unsafe one)")] = 1,
    reward_rubric: Annotated[Path | None, Opt(help="judge rubric file with {prompt} and {completion}")] = None,
    cost_rubric: Annotated[Path | None, Opt(help="judge rubric file with {prompt} and {completion}")] = None,
    dtype: Annotated[str, Opt(help="float32 | bfloat16 | float16")] = "float32",
    device: DeviceOpt = "auto",
    threads: Annotated[int | None, Opt(help="torch threads")] = None,
) -> None:
    """Serve reward and cost of (prompt, completion) pairs: POST /score, GET /health."""
    from pydantic import ValidationError

    from evotune.config import format_validation_error
    from evotune.errors import ConfigError
    from evotune.serve.app import ScorerConfig, serve

    try:
        cfg = ScorerConfig(
            reward=reward, cost=cost, host=host, port=port, token=token, max_batch=max_batch, max_chars=max_chars,
            max_body_bytes=max_body_bytes, timeout=timeout, batch_size=batch_size, format=format,
            reward_label=reward_label, cost_label=cost_label, dtype=dtype, device=device, threads=threads,
            reward_rubric=reward_rubric.read_text() if reward_rubric else None,
            cost_rubric=cost_rubric.read_text() if cost_rubric else None,
        )
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    console.print(f"scorer: reward {cfg.reward}, cost {cfg.cost} on http://{cfg.host}:{cfg.port}", highlight=False)
    try:
        serve(cfg)
    except KeyboardInterrupt:
        console.print("scorer stopped (Ctrl-C)", highlight=False)
        raise typer.Exit(130) from None


def register(app: typer.Typer) -> None:
    """Add `serve scorer` to the CLI."""
    serve_app = typer.Typer(no_args_is_help=True, help="Services (the reward/cost scorer).")
    serve_app.command("scorer")(scorer)
    app.add_typer(serve_app, name="serve")

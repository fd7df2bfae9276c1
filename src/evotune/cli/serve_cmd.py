"""`evotune serve scorer`: the reward/cost scoring service (FastAPI + uvicorn)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evotune.cli.common import console, friendly
from evotune.cli.options import FieldDefault

Opt = typer.Option


def _default(name: str) -> FieldDefault:
    return FieldDefault("evotune.serve.app:ScorerConfig", name)


@friendly
def scorer(
    *,  # every default is ScorerConfig's own (read when the command runs or shows its help)
    reward: Annotated[str, Opt(default_factory=_default("reward"), help="reward head: seqcls:PATH | judge:MODEL | none")],
    cost: Annotated[str, Opt(default_factory=_default("cost"), help="cost head: seqcls:PATH | judge:MODEL | none")],
    host: Annotated[str, Opt(default_factory=_default("host"), help="bind address; anything but loopback needs --token")],
    port: Annotated[int, Opt(default_factory=_default("port"))],
    token: Annotated[str | None, Opt(envvar="EVOTUNE_SCORER_TOKEN", show_envvar=True,
                                     help="bearer token clients must send")] = None,
    max_batch: Annotated[int, Opt(default_factory=_default("max_batch"), help="most items per request")],
    max_chars: Annotated[int, Opt(default_factory=_default("max_chars"), help="longest prompt or completion accepted")],
    max_body_bytes: Annotated[int, Opt(default_factory=_default("max_body_bytes"), help="largest request body")],
    timeout: Annotated[float, Opt(default_factory=_default("timeout"),
                                  help="seconds per request, queueing included (504 after)")],
    batch_size: Annotated[int, Opt(default_factory=_default("batch_size"), help="items per forward pass")],
    format: Annotated[str, Opt(default_factory=_default("format"), help="seqcls input: auto | chat | beaver | plain")],
    reward_label: Annotated[int, Opt(default_factory=_default("reward_label"),
                                     help="multi-class reward head: class scored as log-odds")],
    cost_label: Annotated[int, Opt(default_factory=_default("cost_label"),
                                   help="multi-class cost head: class scored as log-odds (the unsafe one)")],
    reward_rubric: Annotated[Path | None, Opt(help="judge rubric file with {prompt} and {completion}")] = None,
    cost_rubric: Annotated[Path | None, Opt(help="judge rubric file with {prompt} and {completion}")] = None,
    dtype: Annotated[str, Opt(default_factory=_default("dtype"), help="float32 | bfloat16 | float16")],
    device: Annotated[str, Opt(default_factory=_default("device"), help="auto | cpu | cuda | cuda:N (auto: CUDA when present)")],
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

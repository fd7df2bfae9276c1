"""The scoring service: `POST /score` returns reward and cost for a batch of (prompt, completion).

    GET  /health   {"status": "ok", "reward": "judge:…", "cost": "seqcls:…", "max_batch": 64, ...}
    POST /score    {"items": [{"prompt": "...", "completion": "..."}, ...]}
                -> {"scores": [{"reward": 1.2, "cost": -0.4}, ...], "seconds": 0.31}

Safety rails, because a scorer is a model server that anything on the network could drive:
it binds to 127.0.0.1 unless told otherwise and then refuses to start without a bearer token;
bodies over `max_body_bytes`, batches over `max_batch` and fields over `max_chars` are refused
(413) before any model runs; each request gets `timeout` seconds (504 after that, including time
queued behind other requests); inference runs on one worker thread, batched, so concurrent
requests cannot oversubscribe the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import math
import socket
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from evotune.errors import ConfigError
from evotune.tasks.scorer_client import TOKEN_ENV

LOOPBACK_NAMES = ("localhost",)


class ScorerConfig(BaseModel):
    """Everything `evotune serve scorer` takes (validated before any model loads)."""

    model_config = ConfigDict(extra="forbid")

    reward: str = Field(default="judge:smollm2-135m", description="seqcls:PATH | judge:MODEL | none")
    cost: str = Field(default="judge:smollm2-135m", description="seqcls:PATH | judge:MODEL | none")
    reward_label: int = Field(default=1, ge=0, description="class whose log-odds a multi-class reward head gives")
    cost_label: int = Field(default=1, ge=0, description="class whose log-odds a multi-class cost head gives")
    format: str = Field(default="auto", pattern="^(auto|chat|beaver|plain)$")
    reward_rubric: str | None = None
    cost_rubric: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    token: str | None = None
    max_batch: int = Field(default=64, ge=1)
    max_chars: int = Field(default=16_000, ge=1, description="longest prompt or completion accepted")
    max_body_bytes: int = Field(default=4_000_000, ge=1024)
    timeout: float = Field(default=120.0, gt=0, description="seconds per request, queueing included")
    batch_size: int = Field(default=8, ge=1, description="micro-batch of one forward pass")
    max_length: int = Field(default=1024, ge=16, description="seqcls heads: tokens kept (from the end)")
    dtype: str = Field(default="float32", pattern="^(float32|bfloat16|float16)$")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="where both heads load")
    threads: int | None = Field(default=None, ge=1)


class Item(BaseModel):
    prompt: str
    completion: str


class ScoreRequest(BaseModel):
    items: list[Item]


class ItemScore(BaseModel):
    reward: float
    cost: float


class ScoreResponse(BaseModel):
    scores: list[ItemScore]
    seconds: float


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname or 0.0.0.0/:: — reachable from elsewhere


def check_bind(host: str, token: str | None) -> None:
    """A service reachable from other machines must demand a bearer token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to serve on {host} without a bearer token: pass --token (or set ${TOKEN_ENV}), "
            "or bind to 127.0.0.1"
        )


def token_ok(header: str | None, token: str | None) -> bool:
    """The `Authorization: Bearer …` check (constant-time); everything passes when no token is set."""
    if not token:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode())


class _Gate:
    """ASGI middleware in front of the app: auth, then size, then strict JSON, each a one-line 4xx.

    Auth comes first, so a client without the token learns nothing about the body rules. The body is
    read here (at most `limit` bytes are ever held, chunked uploads included) and checked as strict
    JSON (no NaN/Infinity literals, no nesting past 32 levels, no lone surrogates: each would
    otherwise reach pydantic or a tokenizer and end in a 500), then replayed to the app.
    """

    def __init__(self, app: Any, limit: int, token: str | None) -> None:
        self.app, self.limit, self.token = app, limit, token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization")
        if not token_ok(auth.decode("latin-1") if auth is not None else None, self.token):
            return await _send_json(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _send_json(send, 413, f"request body of {int(length)} bytes exceeds {self.limit}")
        chunks, seen = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # client went away
                return None
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                return await _send_json(send, 413, f"request body exceeds {self.limit} bytes")
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        if scope.get("method") == "POST" and (problem := body_problem(body)) is not None:
            return await _send_json(send, 400, problem)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for disconnect, as the server would report it

        await self.app(scope, replay, send)


def body_problem(body: bytes) -> str | None:
    """Why a request body is not strict JSON text a scorer can use, in one line (None: it is)."""
    from evotune.tasks.records import parse_json, value_problem

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"request body is not UTF-8 (byte offset {exc.start})"
    try:
        parsed = parse_json(text)
    except ValueError as exc:
        return f"request body is not valid JSON: {exc}"
    problem = value_problem(parsed)
    return None if problem is None else f"request body: {problem}"


async def _send_json(send: Any, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


def create_app(cfg: ScorerConfig, scorer: Any) -> Any:
    """The FastAPI app around a loaded scorer (a callable (prompts, completions) -> [(reward, cost)])."""
    check_bind(cfg.host, cfg.token)
    app = FastAPI(title="evotune scorer", docs_url=None, redoc_url=None, openapi_url=None, lifespan=_lifespan)
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    describe = scorer.describe() if hasattr(scorer, "describe") else {}

    def auth(request: Request) -> None:
        if not token_ok(request.headers.get("authorization"), cfg.token):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/health", dependencies=[Depends(auth)])
    def health() -> dict[str, Any]:
        return {"status": "ok", **describe, "max_batch": cfg.max_batch, "max_chars": cfg.max_chars,
                "max_body_bytes": cfg.max_body_bytes, "timeout": cfg.timeout}

    @app.post("/score", dependencies=[Depends(auth)], response_model=ScoreResponse)
    async def score(req: ScoreRequest, request: Request) -> ScoreResponse:
        n = len(req.items)
        if n > cfg.max_batch:
            raise HTTPException(413, f"batch of {n} items exceeds max_batch={cfg.max_batch}")
        for i, it in enumerate(req.items):
            longest = max(len(it.prompt), len(it.completion))
            if longest > cfg.max_chars:
                raise HTTPException(413, f"item {i} has a field of {longest} characters (max_chars={cfg.max_chars})")
        if not n:
            return ScoreResponse(scores=[], seconds=0.0)
        t0 = time.perf_counter()
        out = await _score_in_micro_batches(cfg, scorer, req, request)
        if len(out) != n or not all(math.isfinite(r) and math.isfinite(c) for r, c in out):
            raise HTTPException(500, "scorer produced a wrong number of scores or a non-finite one")
        return ScoreResponse(
            scores=[ItemScore(reward=float(r), cost=float(c)) for r, c in out], seconds=time.perf_counter() - t0
        )

    return _Gate(app, cfg.max_body_bytes, cfg.token)


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    """One inference thread per server run (lifespan state): a restarted server gets a fresh one."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evotune-scorer")
    stop = threading.Event()
    try:
        yield {"pool": pool, "stop": stop}
    finally:  # Ctrl-C: no new micro-batch starts; the exit waits for at most the one running
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A malformed body as one 422 line that names the fields and the expected shape."""
    parts = [f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg', '')}"
             for e in exc.errors()[:5]]
    more = f"; ... and {len(exc.errors()) - 5} more" if len(exc.errors()) > 5 else ""
    detail = "invalid request — " + "; ".join(parts) + more + ' (send {"items": [{"prompt": str, "completion": str}]})'
    return JSONResponse(status_code=422, content={"detail": " ".join(detail.split())})


async def _score_in_micro_batches(cfg: ScorerConfig, scorer: Any, req: ScoreRequest,
                                  request: Request) -> list[tuple[float, float]]:
    """Score `req` on the worker thread, one micro-batch per executor call.

    A request past its deadline (or a server told to stop) starts no further work, so the worker is
    free for the next request within one micro-batch.
    """
    n = len(req.items)
    prompts = [it.prompt for it in req.items]
    comps = [it.completion for it in req.items]
    deadline = time.monotonic() + cfg.timeout
    loop = asyncio.get_running_loop()
    out: list[tuple[float, float]] = []
    for i in range(0, n, cfg.batch_size):
        left = deadline - time.monotonic()
        if request.state.stop.is_set():
            raise HTTPException(503, "the scorer is shutting down")
        if left <= 0:
            raise HTTPException(504, f"scoring {n} items took longer than {cfg.timeout:g} s")
        try:
            part = await asyncio.wait_for(
                loop.run_in_executor(request.state.pool, scorer, prompts[i : i + cfg.batch_size],
                                     comps[i : i + cfg.batch_size]), left)
        except TimeoutError:
            raise HTTPException(504, f"scoring {n} items took longer than {cfg.timeout:g} s") from None
        except RuntimeError as exc:
            if request.state.stop.is_set() or "shutdown" in str(exc):  # the pool was shut down under us
                raise HTTPException(503, "the scorer is shutting down") from None
            raise HTTPException(500, f"scorer failed: {type(exc).__name__}: {str(exc)[:300]}") from None
        except Exception as exc:  # a backend failure is the service's fault: say what it was
            raise HTTPException(500, f"scorer failed: {type(exc).__name__}: {str(exc)[:300]}") from None
        out.extend(part)
    return out


def build_app(cfg: ScorerConfig) -> Any:
    """Load the heads `cfg` names and wrap them in the app."""
    from evotune.serve.backends import (  # torch: only to load models
        COST_RUBRIC,
        REWARD_RUBRIC,
        HeadSpec,
        build_scorer,
    )

    check_bind(cfg.host, cfg.token)  # before minutes of model loading
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    scorer = build_scorer(
        HeadSpec.parse(cfg.reward, cfg.reward_label), HeadSpec.parse(cfg.cost, cfg.cost_label),
        dtype=cfg.dtype, device=cfg.device, batch_size=cfg.batch_size, fmt=cfg.format,  # type: ignore[arg-type]
        reward_rubric=cfg.reward_rubric or REWARD_RUBRIC, cost_rubric=cfg.cost_rubric or COST_RUBRIC,
        max_length=cfg.max_length,
    )
    return create_app(cfg, scorer)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, taken before any model loads: a port in use is one line at once, not after minutes."""
    check_bind_host = host.strip("[]")
    fam = socket.AF_INET6 if ":" in check_bind_host else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((check_bind_host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port "
                          "or stop what holds it") from None
    except (OverflowError, UnicodeError, ValueError) as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc}); pass an IP address or host name") from None
    sock.setblocking(False)
    return sock


def run_app(app: Any, sock: socket.socket, graceful_s: float = 2.0) -> None:
    """uvicorn on an already bound socket, in the foreground; Ctrl-C stops it within a few seconds."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=graceful_s)
    uvicorn.Server(config).run(sockets=[sock])


def serve(cfg: ScorerConfig) -> None:
    """Run the service in the foreground until interrupted."""
    check_bind(cfg.host, cfg.token)
    sock = bind(cfg.host, cfg.port)
    try:
        run_app(build_app(cfg), sock)
    finally:
        sock.close()


class BackgroundServer:
    """A real uvicorn server on a thread of this process (tests, notebooks, in-process experiments).

    `port=0` takes a free port; `stop()` then `BackgroundServer(app, host, port).start()` brings
    the service back on the same address, as a restart would.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.host, self.port = app, host, port
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self.sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        import uvicorn

        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.sock, self.port = sock, sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"scoring service did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        if self.sock is not None:
            self.sock.close()
        self.server = self.thread = self.sock = None

    def __enter__(self) -> BackgroundServer:
        return self.start() if self.server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

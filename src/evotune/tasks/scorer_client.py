"""Client of the scoring service, and the reward callable ES and GRPO use through `Task.score_batch`.

A reward that silently becomes 0 when the scorer is down would train on noise for hours, so every
failure is a `ScorerError` with one line naming the URL, what went wrong and what to do:

    connection refused / reset, timeouts, 502/503/504   retried with exponential backoff, then an error
    401/403, 413, 422, 500                              an error at once (retrying cannot help)
    not JSON, wrong number of scores, non-numbers       an error at once ("answered garbage")

`ScorerError` is a `TaskError`: the reward path passes it through unchanged and the CLI prints it
as one line. A training run that stops on it has committed every finished iteration and resumes
with `--resume` once the service is back.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

from evotune.errors import TaskError

TOKEN_ENV = "EVOTUNE_SCORER_TOKEN"  # where the client (and `evotune serve scorer`) read the bearer token
_RETRY_STATUS = (502, 503, 504)
_MAX_SLEEP = 30.0


class ScorerError(TaskError):
    """The scoring service is unreachable, refused the request, or answered something unusable."""


def _one_line(text: str, limit: int = 200) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


class ScorerClient:
    """Batched, retrying HTTP client of `evotune serve scorer` (one pooled connection, reused).

    `token` defaults to $EVOTUNE_SCORER_TOKEN, so a token never has to be written into a run's
    config. `max_batch` (None: what the service's /health says) caps the items per request.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_batch: int | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ScorerError(f"scorer URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.connect_timeout = connect_timeout
        self.max_batch = max_batch
        self._http: Any = None
        self._server_max: int | None = None

    # pickling (Ray workers) carries the settings, not the open connection
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_http": None}

    @property
    def http(self) -> Any:
        if self._http is None:
            import httpx

            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._http = httpx.Client(
                headers=headers,
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
            )
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- transport ------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """JSON of a 200 answer; retries what a retry can fix; a ScorerError for everything else."""
        import httpx

        where = f"{self.url}{path}"
        reason = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(_MAX_SLEEP, self.backoff * 2 ** (attempt - 1)))
            try:
                resp = self.http.request(method, where, json=body)
            except httpx.ConnectError:
                reason = "refused the connection"
                continue
            except httpx.TimeoutException:
                reason = f"did not answer within {self.timeout:g} s"
                continue
            except httpx.TransportError as exc:  # reset, closed mid-answer, ...
                reason = f"dropped the connection ({type(exc).__name__})"
                continue
            if resp.status_code in _RETRY_STATUS:
                reason = f"answered HTTP {resp.status_code} ({_detail(resp)})"
                continue
            if resp.status_code != 200:
                raise ScorerError(_status_message(where, resp, body))
            try:
                return resp.json()
            except ValueError:
                raise ScorerError(
                    f"scoring service {where} answered garbage (not JSON: {_one_line(resp.text, 80)!r}); "
                    "is that URL really `evotune serve scorer`?"
                ) from None
        tries = self.retries + 1
        raise ScorerError(
            f"scoring service {where} {reason} ({tries} attempt{'s' * (tries > 1)}); start it with "
            "`evotune serve scorer` or fix the URL (task option scorer_url), then rerun with --resume"
        )

    def health(self) -> dict[str, Any]:
        data = self._request("GET", "/health")
        if not isinstance(data, dict) or data.get("status") != "ok":
            raise ScorerError(f"scoring service {self.url}/health answered garbage: {_one_line(repr(data), 120)}")
        return data

    def batch_limit(self) -> int:
        if self._server_max is None:
            m = self.health().get("max_batch")
            self._server_max = int(m) if isinstance(m, int) and m > 0 else 1
        return min(self._server_max, self.max_batch or self._server_max)

    # -- scoring --------------------------------------------------------------------------------
    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[tuple[float, float]]:
        """(reward, cost) per pair, in order, in requests of at most `batch_limit()` items."""
        if len(prompts) != len(completions):
            raise ScorerError(f"{len(prompts)} prompts for {len(completions)} completions")
        if not prompts:
            return []
        size = self.batch_limit()
        out: list[tuple[float, float]] = []
        for i in range(0, len(prompts), size):
            items = [{"prompt": p, "completion": c} for p, c in zip(prompts[i : i + size], completions[i : i + size],
                                                                      strict=True)]
            out.extend(self._parse(self._request("POST", "/score", {"items": items}), len(items)))
        return out

    def _parse(self, data: Any, n: int) -> list[tuple[float, float]]:
        where = f"scoring service {self.url}/score"
        scores = data.get("scores") if isinstance(data, dict) else None
        if not isinstance(scores, list):
            raise ScorerError(f"{where} answered garbage (no 'scores' list): {_one_line(repr(data), 120)}")
        if len(scores) != n:
            raise ScorerError(f"{where} answered garbage: {len(scores)} scores for {n} items")
        out = []
        for i, s in enumerate(scores):
            r = s.get("reward") if isinstance(s, dict) else None
            c = s.get("cost") if isinstance(s, dict) else None
            if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (r, c)):
                raise ScorerError(
                    f"{where} answered garbage: item {i} is {_one_line(repr(s), 80)}, "
                    "expected finite numbers 'reward' and 'cost'"
                )
            out.append((float(r), float(c)))  # type: ignore[arg-type]
        return out


def _detail(resp: Any) -> str:
    try:
        d = resp.json().get("detail")
    except (ValueError, AttributeError):
        d = None
    return _one_line(d if isinstance(d, str) else resp.text or resp.reason_phrase, 160)


def _status_message(where: str, resp: Any, body: dict[str, Any] | None) -> str:
    code, detail = resp.status_code, _detail(resp)
    if code in (401, 403):
        return (f"scoring service {where} rejected the credentials (HTTP {code}): set ${TOKEN_ENV} to the "
                "token the service was started with")
    if code == 413:
        n = len(body["items"]) if body and "items" in body else 0
        return (f"scoring service {where} refused a request of {n} items as too large ({detail}); lower the "
                "task option scorer_batch or raise the service's --max-batch / --max-chars")
    hint = " (see the service's log; a training run keeps its finished iterations: fix, then --resume)"
    return f"scoring service {where} answered HTTP {code}: {detail}" + (hint if code >= 500 else "")


class RemoteReward:
    """reward − λ·cost from the scoring service: the reward callable of the safety task.

    Called with lists of prompts and completions (ES members, GRPO groups, evaluations all pass
    through `Task.score_batch` to here); `lam` is read at call time, so a Lagrangian schedule can
    change it between iterations. `last` keeps the raw (reward, cost) of the latest call.
    """

    def __init__(self, client: ScorerClient, lam: float = 1.0) -> None:
        self.client, self.lam = client, lam
        self.last: list[tuple[float, float]] = []

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        self.last = self.client.score(prompts, completions)
        return [r - self.lam * c for r, c in self.last]

"""ES population evaluation on Ray actors: one model replica per actor, only scalars on the wire.

Why it is built this way:

- **No weight broadcast.** Each actor loads the base model itself and follows the run by applying
  every iteration's (seeds, signs, fitness) row with the trainer's own `apply_row` (the trainer hands
  each row to `follow`; this module reads no run files), so it regenerates
  the same noise and computes the same fp32 update as the driver. Per-iteration traffic is the
  population's seeds and fitness plus the iteration's prompts: independent of model size.
- **Bit-identical to the in-process engine, for any worker count.** A unit of work is evaluated on an
  actor with the evaluator the trainer would build in-process (`make_evaluator`): full rank one member
  per unit (a member's fitness never depends on other members), low rank the same member groups that
  `BatchedLowRankEvaluator` forms (a batched forward pass is not row-independent bit for bit, so group
  composition must not change). Which actor ran a unit therefore cannot change its fitness, provided
  torch's kernels do not depend on the thread count (checked on the development CPU; see
  docs/scaling.md). Replicas are compared with the driver by checksum every K iterations anyway.
- **Dynamic scheduling with recovery.** A free actor takes the next unit (`ray.wait` loop). A unit
  whose actor dies is queued again for the others; a replacement actor is rebuilt to the current
  weights from the base model plus the rows (or the newest checkpoint the trainer handed over plus
  the rows after it) and joins once its checksum matches the driver's.
- **Rows are sent on arrival.** The trainer hands a row over as soon as it is final (before its own
  update when it can), and it goes to every actor at once, so the actors' updates overlap the
  driver's. Each evaluation request carries the number of rows the actor must have applied, so no
  member is ever scored on stale weights.
"""


from __future__ import annotations

import contextlib
import re
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from evotune.config import TrainConfig
from evotune.distributed.session import (
    SETUP_TIMEOUT_S,
    RaySession,
    available_cores,
    check_every_default,
    connect_ray,
    import_ray,
    message_bytes,
    start_local_ray,
    threads_per_worker,
)
from evotune.distributed.worker import ReplicaWorker, ResultDict, WorkerSlot, wire_row
from evotune.errors import ConfigError, ModelError, ReplicaMismatchError, RunStateError, WorkerError
from evotune.es.evaluator import Checkpoint, PopulationResult, Row
from evotune.es.lowrank import members_per_call
from evotune.es.params import EvolvingParams
from evotune.es.strategy import Member
from evotune.tasks.base import Example, Task


def _lost_worker_errors(ray: Any) -> tuple[type[BaseException], ...]:
    ex = ray.exceptions
    return (
        ex.RayActorError,
        ex.WorkerCrashedError,
        ex.NodeDiedError,
        ex.ObjectLostError,
        ex.OutOfMemoryError,
    )


def _unwrap(ray: Any, exc: BaseException, worker: WorkerSlot | None = None) -> BaseException:
    """The user-facing error inside a Ray task error (ModelError, TaskError, ...), labelled by worker."""
    cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
    if cause is None:
        return exc
    where = "Ray worker"
    if worker is not None:
        where += f" {worker.slot}" + (f" on {worker.node}" if worker.node else "")
    if isinstance(cause, ModelError):
        return ModelError(f"{where} could not load the model: {cause}")
    missing = re.search(r"No module named '[^']+'", str(cause))
    if missing:
        return ConfigError(
            f"{where} cannot import code the run needs ({missing.group(0)}): every Ray node must be able to "
            "import evotune and the task's module (install them there, or set PYTHONPATH before `ray start`)"
        )
    with contextlib.suppress(Exception):
        cause = type(cause)(f"{where}: {cause}")
    return cause


class RayEvaluator:
    """An `Evaluator` (and `Follower`) whose members run on Ray actors; the driver's own params stay the reference.

    Without `session` it opens (and on `close` shuts down) its own Ray, or borrows an initialised one and
    stops its actors on `close`. Given a `session` (the caller's, from `start_local_ray`/`connect_ray`), it
    takes warm actors parked there and parks its healthy ones back on `close`; the caller shuts it down.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        task: Task,
        params: EvolvingParams,
        cfg: TrainConfig,
        session: RaySession | None = None,
    ) -> None:
        rc = cfg.ray
        if not rc.enabled:
            raise ConfigError("Ray evaluation needs ray.workers N (local) or ray.address ADDR (a cluster)")
        check_every, threads, max_failures, workers, address = (
            rc.check_every, rc.threads, rc.max_failures, rc.workers, rc.address
        )
        self.ray = import_ray()
        self.params, self.cfg, self.tokenizer = params, cfg, tokenizer
        self.check_every = check_every_default() if check_every is None else check_every
        if self.check_every < 0:
            raise ConfigError(f"check_every must be >= 0, got {self.check_every}")
        self.workers: list[WorkerSlot] = []
        self.rows: list[Row] = []  # what the trainer handed over (`follow`), in step order
        self.checkpoint: Checkpoint | None = None  # the newest one it handed over
        self.failures = 0
        # replacement replicas: slot, rows at launch, checkpoint used (0 = replayed from the base model)
        self.rebuilds: list[dict[str, int]] = []
        self.session: RaySession | None = session
        self._pool = session  # where warm actors come from and go back to; None: start and stop our own
        self._calls = 0
        self._checked = -1
        self._driver_sum: tuple[int, str] | None = None
        self._sent = self._received = 0
        try:
            self._start(task, workers, address, threads, max_failures)
        except BaseException:
            self.close()
            raise
        self._sent = 0  # the start-up is `setup_bytes`, not the first iteration's traffic

    # -- start-up -----------------------------------------------------------------------------
    def _start(
        self,
        task: Task,
        workers: int,
        address: str | None,
        threads: int | None,
        max_failures: int | None,
    ) -> None:
        ray = self.ray
        if address:
            self.session = self.session or connect_ray(address)
            node_cpus = [
                int(n["Resources"]["CPU"])
                for n in ray.nodes()
                if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1
            ]
            if not node_cpus:
                raise WorkerError(f"the Ray cluster at {address} has no node with a CPU")
            n_workers = workers or len(node_cpus)  # default: one replica per node
            per_node = -(-n_workers // len(node_cpus))
            self.threads = threads or threads_per_worker(min(node_cpus), per_node)
        else:
            if workers < 1:
                raise ConfigError(f"--workers must be >= 1 without --ray-address, got {workers}")
            n_workers = workers
            cores = available_cores()
            self.threads = threads or threads_per_worker(cores, n_workers)
            self.session = self.session or start_local_ray(max(cores, n_workers * self.threads))
        self.n_workers = n_workers
        self.max_failures = 2 * n_workers + 2 if max_failures is None else max_failures
        self._actor_cls = ray.remote(ReplicaWorker).options(
            num_cpus=self.threads, num_gpus=self.cfg.ray.gpus_per_worker,  # fractions: replicas share a GPU
            max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD",
        )
        self._task_ref = ray.put(task)
        self._build_args = (self.cfg,)
        self.setup_bytes = message_bytes(task) * n_workers
        expect = self._driver_checksum()
        for slot in range(n_workers):
            self.workers.append(self._launch(slot, expect, reuse=self._pool is not None))
        while any(w.pending is not None for w in self.workers):
            self._await_builds(at_start=True)
        self._checked = 0

    def _new_actor(self, reuse: bool) -> tuple[Any, bool]:
        """(actor, reused): a warm actor parked in the given session with the same threads, else a new one."""
        warm = self._pool.take_idle(self.threads) if reuse and self._pool is not None else None
        if warm is not None:
            return warm, True
        return self._actor_cls.remote(self.threads), False

    def _launch(self, slot: int, expect: str, reuse: bool = False) -> WorkerSlot:
        """An actor for `slot`, building its replica up to the driver's current rows."""
        actor, reused = self._new_actor(reuse)
        rows = list(self.rows)
        ckpt = self._checkpoint_for(len(rows))
        w = WorkerSlot(
            slot, actor, applied=len(rows), expect=expect, built_rows=len(rows), since=time.monotonic()
        )
        w.reused = reused
        w.pending = actor.build.remote(self._task_ref, *self._build_args, rows, ckpt)
        self._sent += message_bytes((rows, ckpt))
        return w

    def _checkpoint_for(self, n_rows: int) -> Checkpoint | None:
        """The newest checkpoint handed over, if at or before `n_rows` iterations (as the driver's resume uses)."""
        ckpt = self.checkpoint
        return ckpt if ckpt is not None and 0 < ckpt[0] <= n_rows else None

    def _await_builds(self, at_start: bool = False) -> None:
        """Wait (briefly) for pending replica builds and admit those whose checksum matches."""
        ray = self.ray
        pending = {w.pending: w for w in self.workers if w.pending is not None}
        done, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
        for ref in done:
            self._finish_build(pending[ref], at_start)
        self._check_deadlines()

    def _finish_build(self, w: WorkerSlot, at_start: bool) -> None:
        ray = self.ray
        ref, w.pending = w.pending, None
        try:
            info = ray.get(ref)
        except _lost_worker_errors(ray) as exc:
            if at_start and not w.reused:
                raise WorkerError(f"Ray worker {w.slot} died while loading the model: {exc}") from None
            if at_start:  # a pooled actor that died while idle: not a failure of this run
                self.workers[self.workers.index(w)] = self._launch(w.slot, w.expect)
            else:
                self._replace(w, exc)
            return
        except ray.exceptions.RayTaskError as exc:
            raise _unwrap(ray, exc, w) from exc
        w.pid, w.node = info["pid"], info["node"]
        if not at_start:
            self.rebuilds.append(
                {"slot": w.slot, "rows": w.built_rows, "from_checkpoint": info["from_checkpoint"]}
            )
        if info["checksum"] != w.expect:
            raise ReplicaMismatchError(
                f"Ray worker {w.slot} on {w.node} built weights with checksum {info['checksum']} after "
                f"{w.built_rows} iterations, the driver has {w.expect}: it loaded a different model or "
                "dtype, or its kernels differ (library versions, CPU) — stopping"
            )

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if w.pending is not None and now - w.since > SETUP_TIMEOUT_S:
                res = self.ray.available_resources()
                raise WorkerError(
                    f"Ray worker {w.slot} was not ready after {SETUP_TIMEOUT_S:.0f} s (being scheduled, "
                    f"loading the model and catching up on {w.built_rows} iterations; it needs "
                    f"{self.threads} CPUs, the cluster has {res.get('CPU', 0)} free): too many workers?"
                )

    def _driver_checksum(self) -> str:
        """The driver's checksum at its current row count (cached: hashing a large model takes a while)."""
        n = len(self.rows)
        if self._driver_sum is None or self._driver_sum[0] != n:
            self._driver_sum = (n, self.params.checksum())
        return self._driver_sum[1]

    def _replace(self, w: WorkerSlot, exc: BaseException) -> None:
        """Swap a dead actor for a new one rebuilt to the current weights (its units were re-queued)."""
        self.failures += 1
        if self.failures > self.max_failures:
            raise WorkerError(
                f"{self.failures} Ray worker failures (limit {self.max_failures}); last one: {exc}"
            ) from None
        with contextlib.suppress(Exception):
            self.ray.kill(w.actor, no_restart=True)
        new = self._launch(w.slot, self._driver_checksum())
        self.workers[self.workers.index(w)] = new

    # -- keeping replicas in step ---------------------------------------------------------------
    def follow(self, rows: Sequence[Row], checkpoint: Checkpoint | None = None) -> None:
        """Take the trainer's next rows (and its newest checkpoint) and send every replica what it lacks."""
        for row in rows:
            if row["step"] != len(self.rows) + 1:
                raise RunStateError(f"Ray evaluator holds {len(self.rows)} rows and was handed step {row['step']}")
            self.rows.append(wire_row(row))
        if checkpoint is not None:
            self.checkpoint = checkpoint
        for w in self.workers:
            self._send_rows(w)

    def _send_rows(self, w: WorkerSlot) -> None:
        """Send a replica the rows it lacks (plus the newest checkpoint when it lacks several: resume)."""
        if w.applied < len(self.rows):
            chunk = self.rows[w.applied :]
            ckpt = self._checkpoint_for(len(self.rows)) if len(chunk) > 1 else None
            w.actor.advance.remote(chunk, ckpt)  # errors poison the replica and surface on its next call
            self._sent += message_bytes((chunk, ckpt))
            w.applied = len(self.rows)

    def _check_replicas(self) -> float:
        """Compare every usable replica's checksum with the driver's; a mismatch stops the run."""
        t0 = time.perf_counter()
        ray = self.ray
        expect = self._driver_checksum()
        refs = {w.actor.checksum.remote(): w for w in self.workers if w.pending is None}
        self._sent += message_bytes(None) * len(refs)
        for ref, w in refs.items():
            try:
                applied, got = ray.get(ref)
            except _lost_worker_errors(ray) as exc:
                self._replace(w, exc)  # the replacement's own build is checked against the driver
                continue
            except ray.exceptions.RayTaskError as exc:
                raise _unwrap(ray, exc, w) from exc
            self._received += message_bytes((applied, got))
            if (applied, got) != (len(self.rows), expect):
                raise ReplicaMismatchError(
                    f"replica check after iteration {len(self.rows)}: Ray worker {w.slot} on {w.node} "
                    f"(iteration {applied}) has weights {got}, the driver has {expect} — stopping instead "
                    "of drifting; likely a kernel that depends on the CPU, thread count or library version"
                )
        self._checked = len(self.rows)
        return time.perf_counter() - t0

    # -- one population -----------------------------------------------------------------------
    def _units(self, members: Sequence[Member], n_prompts: int) -> list[list[Member]]:
        """Members grouped exactly as the in-process evaluator groups them into forward passes."""
        size = 1
        if self.cfg.es.noise == "lowrank":
            size = members_per_call(self.cfg.generation.batch_size, n_prompts)
        return [list(members[i : i + size]) for i in range(0, len(members), size)]

    def _submit(self, w: WorkerSlot, unit: list[Member], index: int, batch_ref: Any) -> Any:
        msg = [(m.index, m.seed, m.sign, m.sigma, m.sample_seed) for m in unit]
        ref = w.actor.evaluate.remote(msg, batch_ref, len(self.rows), index == 0)
        self._sent += message_bytes((msg, len(self.rows), index == 0))
        if not w.got_batch:
            self._sent += self._batch_bytes
            w.got_batch = True
        return ref

    def _run_units(self, units: list[list[Member]], batch_ref: Any) -> list[ResultDict]:
        """Dynamic scheduling: each free replica takes the next unit; a lost replica's unit is re-queued."""
        ray = self.ray
        queue = deque(range(len(units)))
        out: dict[int, ResultDict] = {}
        inflight: dict[Any, tuple[WorkerSlot, int]] = {}
        while len(out) < len(units):
            for w in self.workers:
                if queue and w.pending is None and w.busy is None:
                    i = queue.popleft()
                    w.busy = self._submit(w, units[i], i, batch_ref)
                    inflight[w.busy] = (w, i)
            builds = {w.pending: w for w in self.workers if w.pending is not None}
            done, _ = ray.wait([*inflight, *builds], num_returns=1, timeout=5.0)
            for ref in done:
                if ref in builds:
                    self._finish_build(builds[ref], at_start=False)
                    continue
                w, i = inflight.pop(ref)
                w.busy = None
                try:
                    out[i] = ray.get(ref)
                except _lost_worker_errors(ray) as exc:
                    queue.appendleft(i)
                    self._replace(w, exc)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    raise _unwrap(ray, exc, w) from exc
                self._received += message_bytes(out[i])
            self._check_deadlines()
        return [out[i] for i in range(len(units))]

    def __call__(
        self, members: Sequence[Member], examples: Sequence[Example], prompts: Sequence[str]
    ) -> PopulationResult:
        ray = self.ray
        t_check = 0.0
        n = len(self.rows)
        due = n != self._checked and (
            (self.check_every and n % self.check_every == 0) or (self._calls == 0 and n > 0)
        )
        if due:
            t_check = self._check_replicas()
        self._calls += 1
        t0 = time.perf_counter()
        batch = (list(examples), list(prompts))
        self._batch_bytes = message_bytes(batch)
        batch_ref = ray.put(batch)
        for w in self.workers:
            w.got_batch = False
        units = self._units(members, len(prompts))
        results = self._run_units(units, batch_ref)
        del batch_ref
        res = PopulationResult(
            rewards=[f for r in results for f in r["fitness"]],
            prompt_rewards=[p for r in results for p in r["prompt_rewards"]],
        )
        correct = 0
        times = {"noise": 0.0, "generate": 0.0, "score": 0.0}
        for r in results:
            res.completions += r["completions"]
            res.completion_tokens += r["completion_tokens"]
            res.prompt_tokens += r["prompt_tokens"]
            correct += r["correct"]
            for k, v in r["times"].items():
                times[k] = times.get(k, 0.0) + v
        res.sample = results[0]["sample"] if results else ""
        res.correct = correct
        res.accuracy = correct / res.completions if res.completions else 0.0
        res.times = {**times, "ray_dispatch": time.perf_counter() - t0, "ray_checksum": t_check}
        res.extra = {
            "ray/bytes_per_iteration": float(self._sent + self._received),
            "ray/bytes_to_workers": float(self._sent),
            "ray/bytes_from_workers": float(self._received),
            "ray/workers": float(len(self.workers)),
            "ray/threads_per_worker": float(self.threads),
            "ray/units": float(len(units)),
            "ray/worker_failures": float(self.failures),
        }
        self._sent = self._received = 0  # rows handed over from now on count towards the next iteration
        return res

    # -- lifecycle ------------------------------------------------------------------------------
    def wait_ready(self) -> None:
        """Block until every replica (including replacements still loading) is built and verified."""
        while any(w.pending is not None for w in self.workers):
            self._await_builds()

    def worker_pids(self) -> list[int | None]:
        """Process ids of the replicas (None while one is being built); for tests and diagnostics."""
        return [w.pid for w in self.workers]

    def close(self) -> None:
        """Park the healthy idle actors in the given session; else stop them, and Ray if this evaluator started it."""
        for w in self.workers:
            if self._pool is not None and w.pending is None and w.busy is None:
                with contextlib.suppress(Exception):
                    self.ray.get(w.actor.reset.remote(), timeout=60)
                    self._pool.park(self.threads, w.actor)
                    continue
            with contextlib.suppress(Exception):
                self.ray.kill(w.actor, no_restart=True)
        self.workers = []
        if self.session is not None and self._pool is None:
            self.session.shutdown()
        self.session = None

"""Ray sessions: a private loopback-only instance on this machine, or a cluster; worker sizing knobs."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from evotune.errors import ConfigError

CHECK_EVERY_ENV = "EVOTUNE_RAY_CHECK_EVERY"
DEFAULT_CHECK_EVERY = 10
OBJECT_STORE_BYTES = 256 * 1024**2  # only small messages are stored: keep shared memory free for others
SETUP_TIMEOUT_S = 900.0  # a replica that cannot be scheduled/loaded by then fails the run


def available_cores() -> int:
    """CPUs this process may use (affinity-aware, unlike `os.cpu_count`)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(cores: int, workers: int) -> int:
    """Torch threads per actor so that N actors together do not oversubscribe the cores."""
    return max(1, cores // max(1, workers))


def check_every_default() -> int:
    """Iterations between replica checksum comparisons: $EVOTUNE_RAY_CHECK_EVERY, else 10 (0 = start only)."""
    env = os.environ.get(CHECK_EVERY_ENV)
    if not env:
        return DEFAULT_CHECK_EVERY
    try:
        value = int(env)
    except ValueError as exc:
        raise ConfigError(f"${CHECK_EVERY_ENV}={env!r} is not an integer") from exc
    if value < 0:
        raise ConfigError(f"${CHECK_EVERY_ENV} must be >= 0, got {value}")
    return value


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "--workers/--ray-address need Ray: `pip install ray==2.60.0` (it is a dependency of evotune)"
        ) from exc
    return ray


def message_bytes(obj: Any) -> int:
    """Size of a message as it goes on the wire (pickled), for the bytes-per-iteration metric."""
    return len(pickle.dumps(obj, protocol=5))


# -- the Ray session ----------------------------------------------------------------------------

@dataclass
class RaySession:
    """A Ray connection: `owned` if this process opened it (and so must shut it down).

    `idle` holds replica actors parked by the evaluators this session was given (keyed by threads per
    actor). Starting an actor costs a Python process importing torch and transformers (seconds); a later
    run given the same session (several runs in one process, a test module) rebuilds its replica in a
    warm one instead. Actors are reset (model dropped) before they are parked, never after a failure.
    A parked actor keeps its CPUs (Ray's resources) until it is taken, `drop_idle` or `shutdown`.
    """

    owned: bool
    temp_dir: str | None = None
    idle: dict[int, list[Any]] = field(default_factory=dict)

    def take_idle(self, threads: int) -> Any | None:
        """A parked actor with `threads` threads (the others are stopped: they hold CPUs), or None."""
        self.drop_idle(keep=threads)
        parked = self.idle.get(threads)
        return parked.pop() if parked else None

    def park(self, threads: int, actor: Any) -> None:
        self.idle.setdefault(threads, []).append(actor)

    def drop_idle(self, keep: int | None = None) -> None:
        """Stop the parked actors (except those with `keep` threads)."""
        import ray

        for threads in [t for t in self.idle if t != keep]:
            for actor in self.idle.pop(threads):
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)

    def shutdown(self) -> None:
        if self.idle:
            self.drop_idle()
        if not self.owned:
            return
        import ray

        ray.shutdown()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.owned = False


@contextlib.contextmanager
def _loopback_node() -> Any:
    """Make Ray choose 127.0.0.1 as this node's address while it starts, so its servers bind loopback.

    Ray turns a requested 127.0.0.1 into the machine's routable address unless its single-machine
    switch (used on Windows/macOS, read from the environment at import) is off; set it for the
    start-up only, so a later `ray.init(address=...)` in this process still joins clusters normally.
    """
    from ray._private import ray_constants

    key = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    old_env, old_flag = os.environ.get(key), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[key] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old_env


def start_local_ray(num_cpus: int) -> RaySession:
    """A private single-machine Ray: loopback only, no dashboard, its own temp dir.

    Reuses an already initialised Ray (e.g. a test session) without taking ownership. Workers get
    the driver's `sys.path`, so task modules importable here (e.g. `module:Class` tasks) import there.
    """
    ray = import_ray()
    if ray.is_initialized():
        return RaySession(owned=False)
    temp = tempfile.mkdtemp(prefix="evotune-ray-")
    try:
        with _loopback_node():
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                _temp_dir=temp,
                object_store_memory=OBJECT_STORE_BYTES,
                log_to_driver=False,
                logging_level=logging.WARNING,
                runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}},
            )
    except Exception:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return RaySession(owned=True, temp_dir=temp)


def connect_ray(address: str) -> RaySession:
    """Join an existing Ray cluster (`ray start --head` on some node; see docs/scaling.md)."""
    ray = import_ray()
    if ray.is_initialized():
        return RaySession(owned=False)
    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    return RaySession(owned=True)


# -- the actor ----------------------------------------------------------------------------------

"""Ray scale-out: bit-identical to the in-process engine for 1 and 2 workers, recovery, clear failures.

One private Ray session (2 CPUs, loopback, no dashboard) serves the whole module; runs rebuild their
replicas in warm idle actors where they can (tests are ordered to switch thread counts rarely).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import ray  # a hard dependency: a broken install fails here rather than skipping the module
import torch
from typer.testing import CliRunner

from evotune.backends.models import load_model
from evotune.checkpoints import latest_checkpoint, read_state
from evotune.cli.main import app
from evotune.distributed import RayEvaluator, start_local_ray, threads_per_worker
from evotune.distributed.session import RaySession
from evotune.errors import ModelError, ReplicaMismatchError
from evotune.es.params import make_params
from evotune.es.update import apply_row
from evotune.runs.rundir import read_jsonl
from evotune.tasks import build_task
from evotune.trainers import ESTrainer

ITERS = 3


SESSION: list[RaySession] = []  # the module's session: runs given it rebuild replicas in parked actors


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    session = start_local_ray(num_cpus=2)
    SESSION[:] = [session]
    yield session
    session.shutdown()
    SESSION.clear()


def _pooled(model, tok, task, params, cfg):
    return RayEvaluator(model, tok, task, params, cfg, session=SESSION[0])


def _cfg(tiny_model, run_dir, **over):
    """The shared test settings (as conftest's es_config), light on evaluation and checkpoints."""
    from evotune.config import build_config

    base = {
        "run_dir": str(run_dir),
        "model.name": str(tiny_model),
        "task.name": "toy_letters",
        "es.population": 4,
        "es.sigma": 0.05,
        "es.alpha": 0.02,
        "es.iterations": ITERS,
        "es.prompts_per_iteration": 4,
        "eval.every": 0,
        "eval.limit": 2,
        "checkpoint_every": 10,
        "threads": 1,  # the driver; a lone Ray worker runs 2 threads, two workers 1 each
    }
    base.update(over)
    return build_config(None, base)


def _run(cfg, factory=None) -> dict:
    factory = factory or (_pooled if cfg.ray.enabled else None)
    ESTrainer(cfg, progress=False, evaluator_factory=factory).train()
    return _outcome(cfg.run_dir)


def _outcome(run_dir) -> dict:
    run = Path(run_dir)
    train = [r for r in read_jsonl(run / "metrics.jsonl") if "train/reward_mean" in r]
    keys = ("train/reward_mean", "train/accuracy", "train/sample", "budget/completions", "budget/tokens")
    return {
        "fitness": [r["fitness"] for r in read_jsonl(run / "trajectory.jsonl")],
        "checksum": read_state(latest_checkpoint(run))["checksum"],
        "metrics": [{k: r.get(k) for k in keys} for r in train],
        "ray": [{k: v for k, v in r.items() if k.startswith("ray/")} for r in train],
    }


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory) -> dict:
    """The in-process full-rank run every Ray run must reproduce bit for bit."""
    out = _run(_cfg(tiny_model, tmp_path_factory.mktemp("ref") / "run"))
    assert len(out["fitness"]) == ITERS and len({f for fs in out["fitness"] for f in fs}) > 1
    return out


@pytest.fixture(scope="module")
def model_bytes(tiny_model) -> int:
    model, _ = load_model(str(tiny_model))
    return sum(p.numel() * p.element_size() for p in model.parameters())


def test_private_session_is_loopback_only():
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}
    assert threads_per_worker(2, 1) == 2 and threads_per_worker(2, 2) == 1 and threads_per_worker(2, 3) == 1


def test_matmul_does_not_depend_on_thread_count():
    """The premise of identity across worker counts on this CPU (workers run 1 thread, the driver 2)."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(37, 576, generator=g), torch.randn(1536, 576, generator=g)
    old = torch.get_num_threads()
    try:
        outs = []
        for t in (1, 2):
            torch.set_num_threads(t)
            outs.append(torch.nn.functional.linear(x, w))
    finally:
        torch.set_num_threads(old)
    assert torch.equal(outs[0], outs[1])


def test_full_rank_identical_for_1_and_2_workers_and_in_process(
    reference, tiny_model, tmp_path, monkeypatch, model_bytes
):
    # two workers through the CLI flag; replica checksums every iteration via the environment
    monkeypatch.setenv("EVOTUNE_RAY_CHECK_EVERY", "1")
    args = [
        "train",
        "es",
        "--task",
        "toy_letters",
        "--model",
        str(tiny_model),
        "--run-dir",
        str(tmp_path / "w2"),
    ]
    args += ["--population", "4", "--sigma", "0.05", "--alpha", "0.02", "--iterations", str(ITERS)]
    args += [
        "--prompts-per-iteration",
        "4",
        "--eval-every",
        "0",
        "--eval-limit",
        "2",
        "--checkpoint-every",
        "10",
    ]
    args += ["--threads", "1", "--workers", "2", "--no-progress"]
    SESSION[0].drop_idle()  # the CLI's evaluator is not handed the session: free the CPUs parked actors hold
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    two = _outcome(tmp_path / "w2")
    one = _run(_cfg(tiny_model, tmp_path / "w1", **{"ray.workers": 1, "ray.check_every": 1}))
    for other in (one, two):
        assert other["fitness"] == reference["fitness"]
        assert other["checksum"] == reference["checksum"]
        assert other["metrics"] == reference["metrics"]
    for row in one["ray"] + two["ray"]:
        # only seeds, fitness and prompts travel: far below one copy of the weights
        assert 0 < row["ray/bytes_per_iteration"] < model_bytes / 100
        assert row["ray/worker_failures"] == 0
    assert {r["ray/workers"] for r in two["ray"]} == {2.0} and {r["ray/units"] for r in two["ray"]} == {4.0}
    # the in-process driver ran 1 thread; the replicas 2 (one worker) and 1 (two workers) threads
    assert {r["ray/threads_per_worker"] for r in one["ray"]} == {2.0}
    assert {r["ray/threads_per_worker"] for r in two["ray"]} == {1.0}


def test_worker_that_cannot_load_the_model_fails_at_start(tiny_model, tmp_path):
    cfg = _cfg(tiny_model, tmp_path / "bad", **{"model.name": str(tmp_path / "no_such_model")})
    model, tok = load_model(str(tiny_model))  # the driver's own model is fine; the workers' is not
    ray1 = cfg.ray.model_copy(update={"workers": 1})
    with pytest.raises(ModelError, match=r"Ray worker \d.* could not load the model: .*does not exist"):
        RayEvaluator(
            model, tok, build_task(cfg.task), make_params(model, cfg.es), cfg.model_copy(update={"ray": ray1}),
            session=SESSION[0],
        )


def test_actor_pool_is_the_given_sessions_and_nobody_elses(tiny_model, tmp_path, ray_session):
    """Warm actors are parked only in a session the caller passed in; an evaluator without one stops its own."""
    cfg = _cfg(tiny_model, tmp_path / "pool", **{"ray.workers": 1, "ray.threads": 1})  # 1 CPU each: room for two
    model, tok = load_model(str(tiny_model))
    task = build_task(cfg.task)
    params = make_params(model, cfg.es)
    ray_session.drop_idle()
    first = RayEvaluator(model, tok, task, params, cfg, session=ray_session)
    pid = first.worker_pids()[0]
    first.close()
    assert [len(v) for v in ray_session.idle.values()] == [1] and ray.is_initialized()  # parked; Ray left up
    second = RayEvaluator(model, tok, task, params, cfg, session=ray_session)
    assert second.workers[0].reused and second.worker_pids() == [pid] and not any(ray_session.idle.values())
    second.close()
    lone = RayEvaluator(model, tok, task, params, cfg)  # Ray is up, but nobody handed this one the session
    lone_pid = lone.worker_pids()[0]
    assert lone_pid != pid and not lone.workers[0].reused
    lone.close()
    assert [len(v) for v in ray_session.idle.values()] == [1] and ray.is_initialized()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(lone_pid):
        time.sleep(0.2)
    assert not _alive(lone_pid) and _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_replay_rebuild_and_replica_drift_detection(tiny_model, tmp_path):
    """Without a checkpoint a replacement replays the rows handed over from the base model; drift is caught."""
    from evotune.es.evaluator import SequentialEvaluator
    from evotune.es.strategy import ask

    cfg = _cfg(tiny_model, tmp_path / "direct")
    model, tok = load_model(str(tiny_model))
    task = build_task(cfg.task)
    params = make_params(model, cfg.es)
    local = SequentialEvaluator(model, tok, task, params, cfg)
    ray_cfg = _cfg(tiny_model, tmp_path / "direct", **{"ray.workers": 1, "ray.check_every": 1})
    ev = RayEvaluator(model, tok, task, params, ray_cfg, session=SESSION[0])
    try:
        rows = []
        for k in (1, 2):
            examples = task.batch("train", 4, cfg.seed, k)
            prompts = [task.render(e, tok) for e in examples]
            members = ask(cfg.seed, k, 4, sigma=cfg.es.sigma)
            if k == 2:
                os.kill(ev.worker_pids()[0], signal.SIGKILL)  # dies between iterations: all units wait
            res = ev(members, examples, prompts)
            assert res.fitness == local(members, examples, prompts).fitness
            row = {"step": k, "seeds": [m.seed for m in members], "signs": [m.sign for m in members]}
            rows.append({**row, "fitness": res.fitness})
            ev.follow(rows[-1:])  # what the trainer hands over
            apply_row(params, rows[-1], cfg)
        ev.wait_ready()
        assert ev.failures == 1 and ev.rebuilds == [{"slot": 0, "rows": 1, "from_checkpoint": 0}]
        name = next(iter(params.master))
        params.master[name].view(-1)[0] += 1e-3  # the driver drifts away from its replicas
        with pytest.raises(ReplicaMismatchError, match="replica check after iteration 2"):
            ev(ask(cfg.seed, 3, 4, sigma=cfg.es.sigma), examples, prompts)
    finally:
        ev.close()


def test_lowrank_identical_for_1_and_2_workers_and_in_process(tiny_model, tmp_path):
    # batch 8 over 4 prompts: the in-process evaluator forms groups of 2 members -> 2 units of work
    over = {"es.noise": "lowrank", "es.rank": 2, "generation.batch_size": 8, "es.iterations": 2}
    ref = _run(_cfg(tiny_model, tmp_path / "lr_inproc", **over))
    assert len({f for fs in ref["fitness"] for f in fs}) > 1
    for n in (1, 2):
        got = _run(_cfg(tiny_model, tmp_path / f"lr_w{n}", **over, **{"ray.workers": n, "ray.check_every": 1}))
        assert got["fitness"] == ref["fitness"]
        assert got["checksum"] == ref["checksum"]
        assert got["metrics"] == ref["metrics"]
        assert {r["ray/units"] for r in got["ray"]} == {2.0}


class _Killing(RayEvaluator):
    """SIGKILLs worker 0's process right after handing it its first unit of iteration `kill_at`."""

    kill_at = 2

    def __init__(self, *a, **kw) -> None:
        self.killed: list[int] = []
        super().__init__(*a, **kw)

    def _submit(self, w, unit, index, batch_ref):
        ref = super()._submit(w, unit, index, batch_ref)
        if w.slot == 0 and len(self.rows) + 1 == self.kill_at and not self.killed:
            os.kill(w.pid, signal.SIGKILL)
            self.killed.append(w.pid)
        return ref

    def close(self) -> None:
        self.wait_ready()  # let the replacement finish (and be checked) before the actors stop
        super().close()


def test_killed_worker_then_resume_match_an_undisturbed_run(reference, tiny_model, tmp_path):
    made: list[_Killing] = []

    def factory(model, tok, task, params, cfg):
        made.append(_Killing(model, tok, task, params, cfg, session=SESSION[0]))
        return made[-1]

    ray2 = {"ray.workers": 2, "ray.check_every": 1}
    cfg = _cfg(tiny_model, tmp_path / "killed", checkpoint_every=1, **{"es.iterations": ITERS - 1}, **ray2)
    _run(cfg, factory)
    ev = made[0]
    assert len(ev.killed) == 1 and ev.failures == 1
    # the replacement was built from the checkpoint of iteration 1 (same machine) and matched the driver
    assert ev.rebuilds == [{"slot": 0, "rows": 1, "from_checkpoint": 1}]
    # resume for the last iteration: fresh replicas catch up from the checkpoint of iteration 2
    longer = cfg.model_copy(update={"es": cfg.es.model_copy(update={"iterations": ITERS})})
    ESTrainer(longer, resume=True, progress=False, evaluator_factory=_pooled).train()  # Ray workers: stored config
    got = _outcome(cfg.run_dir)
    assert got["fitness"] == reference["fitness"]
    assert got["checksum"] == reference["checksum"]
    assert got["metrics"] == reference["metrics"]
    assert [r["ray/worker_failures"] for r in got["ray"]] == [0, 1, 0]


def test_es_controls_identical_on_two_workers_and_in_process(tiny_model, tmp_path):
    """σ schedule (carried by each member), per-prompt rewards (in the result payload and the rows
    replicas replay) and a stateful optimizer on replicas: still bit-identical to in-process."""
    controls = {
        "es.optimizer": "adam", "es.baseline": "prompt_zscore",
        "es.sigma_schedule": {"kind": "linear", "end": 0.5, "horizon": ITERS},
    }
    local = _run(_cfg(tiny_model, tmp_path / "local", **controls))
    two = _run(_cfg(tiny_model, tmp_path / "w2", **controls, **{"ray.workers": 2, "ray.check_every": 1}))
    assert two["fitness"] == local["fitness"] and two["checksum"] == local["checksum"]
    rows = read_jsonl(tmp_path / "w2" / "trajectory.jsonl")
    assert all(len(r["rewards"]) == 4 and len(r["rewards"][0]) == 4 for r in rows)

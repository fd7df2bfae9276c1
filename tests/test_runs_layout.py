"""The run folder's states and the metric names, each defined once in runs/ and read back by the same code."""

from __future__ import annotations

from pathlib import Path

from evotune.runs.layout import CONFIG_FILE, DONE, NEW, PARTIAL, SUMMARY_FILE, is_run, run_state
from evotune.runs.metrics import Budget, StepStats, eval_metrics, eval_summary, is_eval_row, is_train_row


def test_run_state_is_new_then_partial_then_done(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert run_state(run) == NEW and not is_run(run)
    run.mkdir()
    (run / CONFIG_FILE).write_text("method: es\n")
    assert run_state(run) == PARTIAL and is_run(run)
    (run / SUMMARY_FILE).write_text("{}")
    assert run_state(run) == DONE


def test_budget_and_eval_names_read_back_what_was_written() -> None:
    b = Budget(completions=16, completion_tokens=128, prompt_tokens=608, wall=0.25)
    assert Budget.from_metrics(b.as_metrics()) == b
    summary = {"reward_mean": 0.5, "accuracy": 0.25}
    assert eval_summary(eval_metrics(summary)) == summary
    assert is_eval_row(eval_metrics(summary)) and not is_train_row(eval_metrics(summary))
    assert is_train_row(StepStats(rewards=[0.0, 1.0]).row(1, b))


def test_every_method_declares_its_length_and_the_frame_knows_them_all() -> None:
    """A resume may lengthen any method's length setting (a study raises both caps), whichever method runs."""
    from evotune.trainers import TRAINERS
    from evotune.trainers.frame import _every_method

    assert {"es.iterations", "grpo.steps"} <= _every_method("length")
    assert "trl" in _every_method("own_dirs")
    assert {m: t.steps_name for m, t in TRAINERS.items()} == {"es": "iterations", "grpo": "steps", "randopt": "steps"}

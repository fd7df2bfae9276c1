"""CLI flags that mirror a settings object take their defaults from it (one place per default)."""

from __future__ import annotations

import dataclasses

import typer

from evotune.analysis.judge_settings import JudgeSettings
from evotune.cli.main import app
from evotune.config import GenerateConfig
from evotune.serve.app import ScorerConfig


def _defaults(*path: str) -> dict[str, object]:
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    return {p.name: p.get_default(typer.Context(cmd)) for p in cmd.params}  # type: ignore[union-attr]


def test_serve_scorer_defaults_are_scorer_configs():
    got = _defaults("serve", "scorer")
    mirrored = set(got) & set(ScorerConfig.model_fields) - {"reward_rubric", "cost_rubric"}
    assert len(mirrored) >= 15
    assert {k: got[k] for k in mirrored} == {k: ScorerConfig.model_fields[k].default for k in mirrored}


def test_judge_defaults_are_judge_settings():
    got = _defaults("judge")
    s = {f.name: f.default for f in dataclasses.fields(JudgeSettings)}
    renamed = {"n": "n_prompts", "out": "out_dir", "bootstrap": "n_boot"}
    for flag, value in got.items():
        field = renamed.get(flag, flag)
        if field in s and flag != "labels":
            assert value == s[field], flag
    assert got["no_scorer"] is (not s["use_scorer"])


def test_generation_batch_size_defaults_are_the_generation_configs():
    want = GenerateConfig.model_fields["batch_size"].default
    assert _defaults("eval")["batch_size"] == want
    assert _defaults("analyze", "passk")["batch_size"] == want

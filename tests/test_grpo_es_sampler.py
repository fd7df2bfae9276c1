"""grpo.sampler=es — GRPO's gradient update on completions written by ES-perturbed members (study claim 13)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from evotune.backends.hf import generate
from evotune.backends.models import load_model
from evotune.config import build_config
from evotune.errors import ConfigError
from evotune.es.strategy import ask
from evotune.noise import noise
from evotune.runs.rundir import read_jsonl
from evotune.tasks import build_task
from evotune.trainers.grpo import ESSampler, GRPOTrainer


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _cfg(tiny_model: Path, run_dir: Path, **over: Any) -> Any:
    base = {
        "method": "grpo", "run_dir": str(run_dir), "model.name": str(tiny_model), "task.name": "toy_letters",
        "grpo.num_generations": 4, "grpo.prompts_per_step": 2, "grpo.steps": 2, "grpo.learning_rate": 1e-3,
        "grpo.beta": 0.0, "grpo.sampler": "es", "es.sigma": 0.5, "generation.max_new_tokens": 4,
        "eval.every": 0, "eval.limit": 2, "checkpoint_every": 1, "threads": 1,
    }
    return build_config(None, {**base, **over})


def test_each_completion_of_a_group_is_its_members_greedy_answer_and_weights_come_back(tiny_model, tmp_path):
    """Completion j of every group = greedy answer of θ + σ·ε_j (perturbed here by hand); θ is restored bit for bit."""
    cfg = _cfg(tiny_model, tmp_path / "r", **{"es.antithetic": True})
    model, tok = load_model(str(tiny_model))
    task = build_task(cfg.task)
    prompts = [task.render(e, tok) for e in task.split("train")[:2]]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sampler = ESSampler(cfg, model, tok, 4)
    k = cfg.grpo.num_generations
    def tokenize(ps: list[str]) -> tuple[list[list[int]], None, dict]:
        return [tok(p, add_special_tokens=False)["input_ids"] for p in ps], None, {}

    trainer = SimpleNamespace(state=SimpleNamespace(global_step=4), _tokenize_prompts=tokenize)
    out = sampler([p for p in prompts for _ in range(k)], trainer)
    assert out["logprobs"] is None and len(out["completion_ids"]) == 2 * k
    assert out["prompt_ids"][0] == tok(prompts[0], add_special_tokens=False)["input_ids"]
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters()), "weights not restored exactly"
    members = ask(cfg.seed, 5, k, antithetic=True)
    assert [m.sign for m in members] == [1, -1, 1, -1]
    for j, m in enumerate(members):
        twin, _ = load_model(str(tiny_model))
        with torch.no_grad():
            for n, p in twin.named_parameters():
                p.add_(noise(m.seed, n, tuple(p.shape)), alpha=m.sign * cfg.es.sigma)
        want = [list(c.token_ids) for c in generate(twin, tok, prompts, 4)]
        assert [out["completion_ids"][g * k + j] for g in range(2)] == want, f"member {j}"
    assert len({tuple(x) for x in out["completion_ids"]}) > 1, "σ=0.5 should make members answer differently"
    with pytest.raises(RuntimeError, match="groups of 4"):
        sampler(prompts * 2, SimpleNamespace(state=SimpleNamespace(global_step=0)))


def test_es_sampled_grpo_trains_and_resumes_bit_for_bit(tiny_model, tmp_path):
    full = _cfg(tiny_model, tmp_path / "full")
    GRPOTrainer(full, progress=False).train()
    rows = [r for r in read_jsonl(tmp_path / "full" / "metrics.jsonl") if "train/reward_mean" in r]
    assert [r["budget/completions"] for r in rows] == [8, 16]
    a = load_file(str(tmp_path / "full" / "checkpoints" / "iter_000002" / "model.safetensors"))
    base, _ = load_model(str(tiny_model))
    assert any(not torch.equal(a[n], p) for n, p in base.named_parameters() if n in a), "no gradient step taken"

    GRPOTrainer(_cfg(tiny_model, tmp_path / "parts", **{"grpo.steps": 1}), progress=False).train()
    GRPOTrainer(_cfg(tiny_model, tmp_path / "parts"), resume=True, progress=False).train()
    b = load_file(str(tmp_path / "parts" / "checkpoints" / "iter_000002" / "model.safetensors"))
    assert all(torch.equal(a[n], b[n]) for n in a), "resumed ES-sampled GRPO differs from the uninterrupted run"


def test_antithetic_members_need_an_even_group(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="must be even"):  # refused where the config is built
        _cfg(tiny_model, tmp_path / "r", **{"grpo.num_generations": 3, "es.antithetic": True})
    assert not (tmp_path / "r").exists()


def test_unknown_sampler_is_a_one_line_cli_error(tmp_path):
    from typer.testing import CliRunner

    from evotune.cli.main import app

    res = CliRunner().invoke(app, ["train", "grpo", "--sampler", "members", "--run-dir", str(tmp_path / "r")])
    assert res.exit_code != 0 and "grpo.sampler" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("setting", "field"), [
    ({"es.sigma_schedule": {"kind": "linear", "end": 0.5}}, "es.sigma_schedule"),
    ({"es.sigma_schedule": {"warmup": 3}}, "es.sigma_schedule"),
    ({"es.noise": "lowrank"}, "es.noise"),
    ({"es.lora.enabled": True}, "es.lora.enabled"),
])
def test_es_settings_the_sampler_cannot_honour_are_refused(tiny_model, tmp_path, setting, field):
    """ESSampler perturbs with the constant es.sigma, full rank, the model's own weights: a σ schedule, low-rank
    noise or LoRA-ES would be silently ignored, so the config is refused in one line naming the field."""
    with pytest.raises(ConfigError, match=rf"{field}.*grpo\.sampler=es") as err:
        _cfg(tiny_model, tmp_path / "r", **setting)
    assert "\n" not in str(err.value) and "grpo.sampler=policy" in str(err.value)
    _cfg(tiny_model, tmp_path / "r", **setting, **{"grpo.sampler": "policy"})  # GRPO's own sampler: not an ES setting
    _cfg(tiny_model, tmp_path / "r", **setting, method="es", **{"grpo.sampler": "es"})  # an ES run ignores grpo.*

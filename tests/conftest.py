"""Shared fixtures: a tiny random model with the real SmolLM2 tokenizer, and a toy task."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from evotune.tasks.base import Example, Reward, Task, register_task

torch.set_num_threads(min(2, os.cpu_count() or 1))


@register_task("toy_letters")
class ToyLetters(Task):
    """Reward = fraction of characters that are the letter 'a' (learnable, dense, cheap)."""

    default_n_train = 24
    default_n_eval = 8
    default_max_new_tokens = 8

    def build(self):
        items = [Example(id=f"t{i}", prompt=f"Say something about item {i}.", answer=None) for i in range(64)]
        from evotune.tasks.base import disjoint_split

        return disjoint_split(items, self.n_train, self.n_eval, self.seed)

    def reward(self, completion: str, example: Example) -> Reward:
        n = len(completion)
        frac = completion.count("a") / n if n else 0.0
        return Reward(frac, {"a_frac": frac}, frac > 0.5)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from evotune.backends.models import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture()
def es_config(tiny_model, tmp_path):
    from evotune.config import build_config

    def make(**over):
        base = {
            "run_dir": str(tmp_path / "run"),
            "model.name": str(tiny_model),
            "task.name": "toy_letters",
            "es.population": 4,
            "es.sigma": 0.05,
            "es.alpha": 0.02,
            "es.iterations": 3,
            "es.prompts_per_iteration": 4,
            "eval.every": 2,
            "checkpoint_every": 1,
            "threads": 2,
        }
        base.update(over)
        return build_config(None, base)

    return make

"""Shared fixtures: a tiny random model with the real SmolLM2 tokenizer, and a toy task."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import toy_tasks  # noqa: F401  (registers toy_letters)

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture()
def one_thread():
    """One torch thread: on a shared 2-core machine OpenMP barriers with a preempted peer cost ~20×."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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

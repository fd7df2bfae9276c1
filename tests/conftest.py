"""Shared fixtures: a tiny random model with the real SmolLM2 tokenizer, and a toy task."""

from __future__ import annotations

import os

# cuBLAS's workspace size is parsed once, when torch first makes a cuBLAS workspace
# (`at::cuda::getChosenWorkspaceSize` keeps it in a function-local static): setting
# CUBLAS_WORKSPACE_CONFIG in a test, after CUDA was used, has no effect. So it is set here,
# before anything imports torch.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import toy_tasks  # noqa: E402, F401  (registers toy_letters)

CUDA_INITIALISED_AT_IMPORT = torch.cuda.is_initialized()  # must be False: see above

# Under pytest-xdist each worker gets one thread: two workers spinning two OpenMP threads each on two
# cores wait on preempted peers, and the tiny models gain nothing from a second thread anyway.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))


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
            "threads": 1,  # tiny model: a second thread only spin-waits on a busy machine
            "keep_checkpoints": 0,  # every checkpoint: tests compare replays with earlier ones
        }
        base.update(over)
        return build_config(None, base)

    return make

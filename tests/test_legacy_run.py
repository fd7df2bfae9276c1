"""A run directory written by evotune 0.1 (before the trainer-frame refactor) still replays and resumes.

`tests/fixtures/v0-run` was written by the previous version: a 4-iteration run (full and low rank)
killed after iteration 2, plus the sha256 of the weights its uninterrupted twin reached. Resuming
it with today's code must land on those exact weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

FIXTURE = Path(__file__).parent / "fixtures" / "v0-run"


def weights_sha256(path: Path) -> str:
    tensors = load_file(str(path))
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def legacy_base(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    from evotune.backends.resolve import ensure_smollm2

    base = tmp_path_factory.mktemp("v0-base")
    for f in (FIXTURE / "base").iterdir():
        shutil.copy(f, base / f.name)
    AutoTokenizer.from_pretrained(ensure_smollm2()).save_pretrained(base)
    return base


def legacy_run(kind: str, base: Path, tmp_path: Path) -> Path:
    run = tmp_path / kind
    shutil.copytree(FIXTURE / kind, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["name"], cfg["run_dir"] = str(base), str(run)  # the paths it was written under are gone
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return run


@pytest.mark.parametrize("kind", ["full", "lowrank"])
def test_legacy_run_resumes_to_the_uninterrupted_weights(kind, legacy_base, tmp_path):
    from evotune.config import load_run_config
    from evotune.trainers import ESTrainer

    run = legacy_run(kind, legacy_base, tmp_path)
    ESTrainer(load_run_config(run), resume=True, progress=False).train()
    expected = json.loads((FIXTURE / "expected.json").read_text())[kind]
    assert weights_sha256(run / "checkpoints" / "iter_000004" / "model.safetensors") == expected["iter_4_sha256"]
    assert [json.loads(x)["step"] for x in (run / "trajectory.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_legacy_checkpoint_replays_bit_for_bit(legacy_base, tmp_path):
    from evotune.trainers.replay import replay

    run = legacy_run("full", legacy_base, tmp_path)
    out = replay(run, iteration=2, out=tmp_path / "rebuilt")
    assert out["matches_checkpoint"] is True
    expected = json.loads((FIXTURE / "expected.json").read_text())["full"]["iter_2_sha256"]
    assert weights_sha256(tmp_path / "rebuilt" / "model.safetensors") == expected

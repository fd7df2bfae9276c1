"""The CPU guarantees, on a CUDA GPU (skipped where none is present; `scripts/gpu-check.sh` runs them).

Exact restore, fp32 accumulation, replay == checkpoint, resume == uninterrupted, batched low rank ==
each member materialised, compiled low-rank generation applies the perturbation, noise drawn on the
device (no host round trip) and device-type mismatch refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evotune.backends.hf import generate
from evotune.backends.models import load_model
from evotune.config import ESConfig, GenerateConfig, TrainConfig
from evotune.errors import RunStateError
from evotune.es.evaluator import SequentialEvaluator
from evotune.es.lowrank import BatchedLowRankEvaluator
from evotune.es.params import EvolvingParams, make_params, select_params
from evotune.es.strategy import ask
from evotune.noise import LowRankNoise, factors, noise
from evotune.tasks import get_task
from evotune.trainers import ESTrainer
from evotune.trainers.replay import replay

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
MNT = 8


@pytest.fixture(autouse=True)
def _deterministic():
    # CUBLAS_WORKSPACE_CONFIG is set in conftest.py, before torch is imported (cuBLAS reads it once)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def test_noise_is_drawn_on_the_gpu_and_is_a_pure_function():
    a = noise(7, "w", (256, 64), device="cuda")
    assert a.device.type == "cuda" and a.dtype == torch.float32
    assert torch.equal(a, noise(7, "w", (256, 64), device="cuda"))
    assert not torch.equal(a, noise(7, "v", (256, 64), device="cuda"))  # i.i.d. across tensors
    assert not torch.equal(a.cpu(), noise(7, "w", (256, 64)))  # another stream than the CPU's
    out = torch.empty(256, 64, device="cuda")
    assert torch.equal(noise(7, "w", (256, 64), out=out), a)
    fa, fb = factors(7, "w", (256, 64), 2, "cuda")
    assert fa.device.type == fb.device.type == "cuda"
    assert abs(float(a.std()) - 1.0) < 0.05


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_perturb_restore_is_bit_exact_on_gpu(tiny_model, dtype):
    model, _ = load_model(str(tiny_model), dtype, "cuda")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = EvolvingParams(select_params(model))
    assert params.device_type == "cuda" and all(m.is_cuda for m in params.master.values())
    params.perturb(3, 1, 0.1)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    params.restore()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("master_device", [None, "cpu"])
def test_update_accumulates_in_fp32_for_bf16_on_gpu(tiny_model, master_device):
    model, _ = load_model(str(tiny_model), "auto", "cuda")
    assert next(model.parameters()).dtype == torch.bfloat16  # auto = bf16 on CUDA
    params = EvolvingParams(select_params(model), master_device=master_device)
    start = {n: m.clone() for n, m in params.master.items()}
    for _ in range(5):
        params.apply_update({1: 1.0}, 1e-6)  # far below bf16 resolution
    moved = sum(int((params.master[n] != start[n]).sum()) for n in start)
    assert moved > 0.5 * sum(m.numel() for m in start.values())


@pytest.mark.parametrize("noise_kind", ["full", "lowrank"])
def test_gpu_run_replays_bit_for_bit_and_resume_equals_uninterrupted(es_config, tmp_path, noise_kind):
    over = {"model.device": "cuda", "es.noise": noise_kind, "eval.every": 0}
    cfg = es_config(**over, **{"run_dir": str(tmp_path / "a")})
    ESTrainer(cfg, progress=False).train()
    rows = [json.loads(x) for x in (Path(cfg.run_dir) / "trajectory.jsonl").read_text().splitlines()]
    assert {r["device"] for r in rows} == {"cuda"} and any(r["updated"] for r in rows)
    props = torch.cuda.get_device_properties(0)
    assert all(r["gpu"] == {"name": props.name, "sms": props.multi_processor_count, "torch": torch.__version__}
               and r["master"] == "cuda" for r in rows)
    for k in range(1, 4):
        assert replay(cfg.run_dir, k)["matches_checkpoint"] is True
    short = es_config(**over, **{"run_dir": str(tmp_path / "b"), "es.iterations": 2})
    ESTrainer(short, progress=False).train()
    ESTrainer(es_config(**over, **{"run_dir": str(tmp_path / "b")}), resume=True, progress=False).train()
    assert replay(tmp_path / "b")["checksum"] == replay(cfg.run_dir)["checksum"]
    with pytest.raises(RunStateError, match="recorded on cuda"):
        replay(cfg.run_dir, device="cpu")


def _toy(tiny_model, **gen):
    model, tok = load_model(str(tiny_model), "float32", "cuda")
    task = get_task("toy_letters")
    examples = task.split("train")[:4]
    prompts = [task.render(e, tok) for e in examples]
    cfg = TrainConfig(es=ESConfig(noise="lowrank", rank=2, sigma=0.5),
                      generation=GenerateConfig(max_new_tokens=MNT, batch_size=8, **gen))
    return model, tok, task, examples, prompts, cfg


def test_batched_lowrank_equals_each_member_materialised_on_gpu(tiny_model):
    model, tok, task, examples, prompts, cfg = _toy(tiny_model)
    params = make_params(model, cfg.es)
    assert isinstance(params.noise_fn, LowRankNoise)
    members = ask(0, 1, 4, sigma=cfg.es.sigma)
    batched = BatchedLowRankEvaluator(model, tok, task, params, cfg)(members, examples, prompts)
    seq = SequentialEvaluator(model, tok, task, params, cfg)(members, examples, prompts)
    assert batched.fitness == seq.fitness
    assert params.model_matches_master()


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_compiled_lowrank_generation_applies_the_perturbation_on_gpu(tiny_model, backend):
    model, tok, task, examples, prompts, cfg = _toy(tiny_model, compile=True, compile_backend=backend)
    params = make_params(model, cfg.es)
    rows = prompts * 4
    plain = [c.token_ids for c in generate(model, tok, rows, MNT, batch_size=16, compile_backend=backend)[:4]]
    compiled = BatchedLowRankEvaluator(model, tok, task, params, cfg)
    comps, _ = compiled.generate_members(ask(0, 1, 4, sigma=cfg.es.sigma), prompts)
    got = [[c.token_ids for c in mc] for mc in comps]
    assert all(g != plain for g in got)
    again, _ = compiled.generate_members(ask(0, 1, 4, sigma=cfg.es.sigma), prompts)
    assert [[c.token_ids for c in mc] for mc in again] == got  # deterministic on its own
    compiled.close()


def test_bf16_model_matches_master_and_anchor_lives_on_the_host(tiny_model):
    model, _ = load_model(str(tiny_model), "bfloat16", "cuda")
    params = EvolvingParams(select_params(model), es=ESConfig(anchor_decay=0.1))
    params.apply_update({1: 1.0}, 1e-3)
    assert params.model_matches_master()  # compared in bf16: widened it would differ
    assert all(t.device.type == "cpu" for t in params.optimizer.base.values())
    assert all(m.is_cuda for m in params.master.values())


def test_grpo_on_cuda_keeps_fp32_weights_and_small_updates_land(tiny_model, tmp_path):
    import trl  # noqa: F401  (a hard dependency: a broken install must fail, not skip)

    from evotune.config import build_config
    from evotune.trainers.grpo import GRPOTrainer

    cfg = build_config(None, {
        "method": "grpo", "run_dir": str(tmp_path / "g"), "model.name": str(tiny_model), "model.device": "cuda",
        "task.name": "toy_letters", "grpo.num_generations": 4, "grpo.prompts_per_step": 2, "grpo.steps": 1,
        "grpo.learning_rate": 1e-6, "grpo.beta": 0.0, "generation.max_new_tokens": 4, "eval.every": 0,
        "eval.limit": 2, "checkpoint_every": 1})
    base, _ = load_model(str(tiny_model), "float32", "cpu")
    trainer = GRPOTrainer(cfg, progress=False)
    trainer.train()
    assert trainer.autocast == "bfloat16" and {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    after = dict(trainer.model.named_parameters())
    moved = sum(int((after[n].detach().cpu() != p).sum()) for n, p in base.named_parameters())
    assert moved > 0.5 * sum(p.numel() for p in base.parameters())  # lr 1e-6 moves fp32 weights; bf16 would round

"""The CPU-checkable parts of the CUDA audit (issue 25): each test fails on the code before the fix.

What only a GPU shows is argued from the torch sources where the code does it (`es.params.gpu_identity`,
`tests/conftest.py`) and checked by the `cuda` tests and `benchmarks/gpu_quick.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import pytest
import torch

import evotune.es.params as params_mod
from evotune.backends.models import load_model
from evotune.checkpoints import checkpoint_dirs, file_hashes, read_state
from evotune.config import ESConfig
from evotune.errors import RunStateError
from evotune.es.optimizers import ESOptimizer
from evotune.es.params import CHECKSUM_PREFIX, EvolvingParams, select_params
from evotune.trainers import ESTrainer
from evotune.trainers import replay as replay_mod
from evotune.trainers.replay import replay

pytestmark = pytest.mark.usefixtures("one_thread")


# -- 11: CUBLAS_WORKSPACE_CONFIG is set before torch touches CUDA --------------------------------------
def test_cublas_workspace_config_is_set_before_torch_is_imported():
    import conftest

    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == ":4096:8"
    assert conftest.CUDA_INITIALISED_AT_IMPORT is False


# -- 13: the model matches its master in the model's dtype ---------------------------------------------
def test_bf16_model_matches_its_master_after_an_update(tiny_model):
    model, _ = load_model(str(tiny_model), "bfloat16", "cpu")
    params = EvolvingParams(select_params(model))
    params.apply_update({1: 1.0}, 1e-3)
    assert any(not torch.equal(m, m.to(torch.bfloat16).float()) for m in params.master.values())  # not bf16 values
    assert params.model_matches_master()
    with torch.no_grad():
        next(iter(params.params.values())).view(-1)[0] += 1.0
    assert not params.model_matches_master()


# -- 1: replay compares on one device; only read errors become "does not match" -------------------------
def test_replay_compare_reports_read_errors_but_not_other_failures(es_config, monkeypatch):
    cfg = es_config(**{"es.iterations": 1, "eval.every": 0})
    ESTrainer(cfg, progress=False).train()
    assert replay(cfg.run_dir)["matches_checkpoint"] is True
    ckpt = checkpoint_dirs(cfg.run_dir)[-1][1]
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file")
    res = replay(cfg.run_dir)
    assert res["matches_checkpoint"] is False and "damaged" in res["problem"]
    # a failing comparison (e.g. torch.equal across devices) is a bug, not a mismatch
    ESTrainer(es_config(**{"es.iterations": 1, "eval.every": 0, "run_dir": cfg.run_dir + "2"}), progress=False).train()

    def cross_device(a: torch.Tensor, b: torch.Tensor) -> bool:
        raise RuntimeError("Expected all tensors to be on the same device")

    monkeypatch.setattr(replay_mod.torch, "equal", cross_device)
    with pytest.raises(RuntimeError, match="same device"):
        replay(cfg.run_dir + "2")


# -- 5, 6: rows record the GPU identity and the master's device; another one is refused -----------------
def _fake_gpu(sms: int):
    return lambda device: {"name": "Fake GPU", "sms": sms, "torch": torch.__version__}


def test_rows_record_gpu_identity_and_a_resume_on_another_is_refused(es_config, monkeypatch):
    cfg = es_config(**{"es.iterations": 2, "eval.every": 0})
    ESTrainer(cfg, progress=False).train()
    traj = Path(cfg.run_dir) / "trajectory.jsonl"
    rows = [json.loads(x) for x in traj.read_text().splitlines()]
    assert all("gpu" not in r and "master" not in r for r in rows)  # CPU rows: as before
    plain = replay(cfg.run_dir)["checksum"]

    monkeypatch.setattr(params_mod, "gpu_identity", _fake_gpu(132))  # "a 132-SM GPU" (noise still CPU's)
    run = es_config(**{"es.iterations": 2, "eval.every": 0, "run_dir": cfg.run_dir + "g"})
    ESTrainer(run, progress=False).train()
    traj = Path(run.run_dir) / "trajectory.jsonl"
    rows = [json.loads(x) for x in traj.read_text().splitlines()]
    assert all(r["gpu"] == {"name": "Fake GPU", "sms": 132, "torch": torch.__version__} for r in rows)
    assert {r["master"] for r in rows} == {"cpu"}
    assert replay(run.run_dir)["checksum"] == plain  # same GPU: replays

    monkeypatch.setattr(params_mod, "gpu_identity", _fake_gpu(114))
    with pytest.raises(RunStateError, match=r"drawn on Fake GPU \(132 SMs.*on Fake GPU \(114 SMs") as err:
        replay(run.run_dir)
    assert "\n" not in str(err.value)
    longer = run.model_copy(update={"es": run.es.model_copy(update={"iterations": 3})})
    with pytest.raises(RunStateError, match="SM count"):
        ESTrainer(longer, resume=True, progress=False).train()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert replay(run.run_dir, allow_device_change=True)["checksum"] == plain
    assert any("weights will differ" in str(x.message) for x in w)

    # 6: the master moved between the recorded rows and this process
    monkeypatch.setattr(params_mod, "gpu_identity", _fake_gpu(132))
    traj.write_text("".join(json.dumps({**r, "master": "cuda"}) + "\n" for r in rows))
    with pytest.raises(RunStateError, match=r"master on cuda but this process keeps it on cpu.*es.master_device=device"):
        ESTrainer(longer, resume=True, progress=False).train()


# -- 4: GRPO keeps fp32 weights and runs bf16 through autocast --------------------------------------------
def test_grpo_with_a_bf16_model_trains_fp32_weights_under_bf16_autocast(tiny_model, tmp_path):
    from evotune.config import build_config
    from evotune.grpo.trl import grpo_args, grpo_precision
    from evotune.runs.rundir import RunDir
    from evotune.trainers.grpo import GRPOTrainer

    assert grpo_precision("bfloat16") == ("float32", "bfloat16")
    assert grpo_precision("float32") == ("float32", None)
    cfg = build_config(None, {"method": "grpo", "run_dir": str(tmp_path / "g"), "model.name": str(tiny_model),
                              "model.dtype": "bfloat16", "task.name": "toy_letters", "grpo.num_generations": 2,
                              "grpo.prompts_per_step": 2, "generation.max_new_tokens": 4})
    trainer = GRPOTrainer(cfg, progress=False)
    trainer.setup()
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    assert trainer.autocast == "bfloat16"
    args = grpo_args(cfg, RunDir(tmp_path / "g"), 4, "cpu", trainer.autocast)
    assert args.bf16 is True and args.fp16 is False
    assert grpo_args(cfg, RunDir(tmp_path / "g"), 4, "cpu", None).bf16 is False


# -- 9: the clones read once per update (anchor) or only on failure (resume) live on the host --------------
def test_anchor_decay_keeps_theta0_as_a_host_copy():
    master = {"w": torch.randn(4, 3)}
    opt = ESOptimizer(ESConfig(anchor_decay=0.5), master)
    assert opt.base["w"].device.type == "cpu" and opt.base["w"].data_ptr() != master["w"].data_ptr()
    before = master["w"].clone()
    opt.step("w", master["w"], torch.ones(4, 3), 0.1)
    assert torch.equal(opt.base["w"], before)  # θ₀ is a copy, not the master itself


# -- 10: checksums hash in parallel blocks; old checkpoints' serial checksums still verify ------------------
def test_parallel_checksum_is_exact_and_independent_of_threads(tiny_model, monkeypatch):
    model, _ = load_model(str(tiny_model))
    params = EvolvingParams(select_params(model))
    monkeypatch.setattr(params_mod, "CHECKSUM_BLOCK", 4096)  # several blocks per tensor
    first = params.checksum()
    assert first.startswith(CHECKSUM_PREFIX)
    monkeypatch.setattr(params_mod.os, "cpu_count", lambda: 1)
    assert params.checksum() == first
    biggest = max(params.master.values(), key=lambda t: t.numel())
    biggest.view(-1)[-1] += 1e-3  # the last block of the largest tensor
    assert params.checksum() != first
    assert params.checksum_matches(params.checksum()) and params.checksum_matches(params.legacy_checksum())
    assert not params.checksum_matches(first)


def test_file_hashes_are_each_files_sha256(tmp_path):
    for i in range(5):
        (tmp_path / f"f{i}.bin").write_bytes(os.urandom(1000 + i))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "g.bin").write_bytes(b"x" * 10)
    got = file_hashes(tmp_path)
    want = {p.relative_to(tmp_path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in tmp_path.rglob("*") if p.is_file()}
    assert got == want


def test_keep_checkpoints_defaults_to_the_last_two_and_zero_keeps_all(es_config):
    cfg = es_config(**{"es.iterations": 4, "eval.every": 0, "keep_checkpoints": 2})
    assert type(cfg).model_fields["keep_checkpoints"].default == 2
    ESTrainer(cfg, progress=False).train()
    assert [k for k, _ in checkpoint_dirs(cfg.run_dir)] == [3, 4]
    assert read_state(checkpoint_dirs(cfg.run_dir)[-1][1])["checksum"].startswith(CHECKSUM_PREFIX)
    assert replay(cfg.run_dir, 2)["matches_checkpoint"] is None  # no checkpoint: rebuilt from the rows alone
    keep = es_config(**{"es.iterations": 3, "eval.every": 0, "run_dir": cfg.run_dir + "all"})
    assert keep.keep_checkpoints == 0
    ESTrainer(keep, progress=False).train()
    assert [k for k, _ in checkpoint_dirs(keep.run_dir)] == [1, 2, 3]
    # a run stored with the old default (null) resumes under the new one
    (Path(keep.run_dir) / "config.yaml").write_text(
        (Path(keep.run_dir) / "config.yaml").read_text().replace("keep_checkpoints: 0", "keep_checkpoints: null"))
    longer = keep.model_copy(update={"keep_checkpoints": 2, "es": keep.es.model_copy(update={"iterations": 4})})
    ESTrainer(longer, resume=True, progress=False).train()
    assert [k for k, _ in checkpoint_dirs(keep.run_dir)] == [3, 4]


# -- 7, 8: compiled (and CUDA) low rank: every generate call has one shape --------------------------------
def test_compiled_lowrank_pads_every_call_to_one_shape(tiny_model, monkeypatch):
    import evotune.es.lowrank as lowrank
    from evotune.backends.hf import generate
    from evotune.config import GenerateConfig, TrainConfig
    from evotune.es.params import make_params
    from evotune.es.strategy import ask
    from evotune.tasks import get_task

    model, tok = load_model(str(tiny_model), "float32", "cpu")
    task = get_task("toy_letters")
    prompts = [task.render(e, tok) for e in task.split("train")[:5]]
    es = ESConfig(noise="lowrank", rank=2, sigma=0.5)
    calls: list[tuple[int, int]] = []

    def eager(model, tok, rows, mnt, **kw):  # records the call's shape; generates eagerly (fast, no dynamo)
        enc = tok(rows, padding=True, add_special_tokens=False)["input_ids"]
        calls.append((len(rows), max(len(max(enc, key=len)), kw.get("min_prompt_tokens") or 0)))
        return generate(model, tok, rows, mnt, **{**kw, "compile_backend": None})

    monkeypatch.setattr(lowrank, "generate", eager)

    def run(n: int, n_prompts: int, batch: int, compile_: bool):
        cfg = TrainConfig(es=es, generation=GenerateConfig(max_new_tokens=4, batch_size=batch, compile=compile_))
        ev = lowrank.BatchedLowRankEvaluator(model, tok, task, make_params(model, cfg.es), cfg)
        calls.clear()
        comps, _ = ev.generate_members(ask(0, 1, n, sigma=cfg.es.sigma), prompts[:n_prompts])
        assert all(len(mc) == n_prompts for mc in comps)
        return [[c.token_ids for c in mc] for mc in comps], list(calls)

    # 10 members, 8 per call: a last group of 2 (padded to 6 members by MIN_ROWS alone: another shape)
    eager_tokens, eager_calls = run(10, 3, 24, False)
    tokens, shapes = run(10, 3, 24, True)
    assert len({r for r, _ in eager_calls}) > 1
    assert len(set(shapes)) == 1 and shapes[0][1] % 32 == 0
    assert tokens == eager_tokens  # null members are discarded, never scored
    # 5 prompts at batch 4: chunks of 4 and 1, the last filled with repeats of its prompt
    eager_tokens, _ = run(3, 5, 4, False)
    tokens, shapes = run(3, 5, 4, True)
    assert len(set(shapes)) == 1 and shapes[0][0] >= lowrank.MIN_ROWS
    assert tokens == eager_tokens

"""Devices on a CPU-only machine: every path takes its device from the model, compiled generation
keeps the low-rank perturbation, trajectories record their device type, `arch:` models."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import evotune.noise as noise_mod
from evotune.backends.hf import generate
from evotune.backends.models import load_model, resolve_device, resolve_dtype
from evotune.config import ESConfig, GenerateConfig, TrainConfig, build_config
from evotune.errors import ConfigError, ModelError, RunStateError
from evotune.es.evaluator import SequentialEvaluator
from evotune.es.lowrank import BatchedLowRankEvaluator
from evotune.es.params import EvolvingParams, make_params, select_params
from evotune.es.strategy import ask
from evotune.tasks import get_task
from evotune.trainers import ESTrainer
from evotune.trainers.replay import replay

MNT = 6


pytestmark = pytest.mark.usefixtures("one_thread")


def test_device_and_dtype_resolution_without_a_gpu():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == "float32"
    assert resolve_dtype("auto", torch.device("cuda")) == "bfloat16"
    assert resolve_dtype("float16", torch.device("cpu")) == "float16"
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU.*--device cpu"):
            resolve_device("cuda:0")
    with pytest.raises(ConfigError, match="model.device.*auto, cpu, cuda or cuda:N"):
        build_config(None, {"model.device": "gpu"})


def test_noise_is_drawn_on_the_parameters_device(tiny_model, monkeypatch):
    """Every draw (perturb, update, batched factors) asks for a generator on the model's device."""
    seen: list[torch.device] = []
    real = noise_mod._generator

    def spy(seed, device, version=noise_mod.NOISE_VERSION):
        seen.append(torch.device(device))
        return real(seed, device, version)

    monkeypatch.setattr(noise_mod, "_generator", spy)
    model, tok = load_model(str(tiny_model), device="cpu")
    for es in (ESConfig(), ESConfig(noise="lowrank", master_device="cpu")):
        params = make_params(model, es)
        assert params.device == next(model.parameters()).device and params.device_type == "cpu"
        assert {m.device for m in params.master.values()} == {torch.device("cpu")}
        params.perturb(1, 1, 0.1)
        params.restore()
        params.apply_update({1: 0.5, 2: -0.5}, 0.01)
    assert seen and {d.type for d in seen} == {"cpu"}
    g = noise_mod.noise(3, "w", (4,), device="cpu")
    assert torch.equal(g, noise_mod.noise(3, "w", (4,)))  # still a pure function of (seed, name)


def _toy(tiny_model, **gen):
    model, tok = load_model(str(tiny_model), "float32", "cpu")
    task = get_task("toy_letters")
    examples = task.split("train")[:4]
    prompts = [task.render(e, tok) for e in examples]
    cfg = TrainConfig(
        es=ESConfig(noise="lowrank", rank=2, sigma=0.5),
        generation=GenerateConfig(max_new_tokens=MNT, batch_size=8, **gen),
    )
    return model, tok, task, examples, prompts, cfg


def _texts(evaluator, members, prompts):
    comps, _ = evaluator.generate_members(members, prompts)
    return [[c.token_ids for c in mc] for mc in comps]


def test_compiled_lowrank_generation_applies_the_perturbation(tiny_model):
    """The trap of RESEARCH.md §7: hooks added after a compile are silently ignored by default.

    The forward is compiled first *without* perturbation (as a held-out eval would), then the
    population runs through the compiled graph; its tokens must be the eager low-rank ones and
    differ from the unperturbed model's. A second population of the same shape must not recompile.
    """
    from torch._dynamo.utils import counters

    model, tok, task, examples, prompts, cfg = _toy(tiny_model, compile=True, compile_backend="eager")
    params = make_params(model, cfg.es)
    rows = prompts * 4  # the shape of a population call (4 members × 4 prompts): one compiled graph
    plain_eager = generate(model, tok, rows, MNT, batch_size=16)[:4]
    plain = generate(model, tok, rows, MNT, batch_size=16, compile_backend="eager")[:4]  # compiled, no hooks
    compiled = BatchedLowRankEvaluator(model, tok, task, params, cfg)
    eager = BatchedLowRankEvaluator(model, tok, task, params, cfg.model_copy(update={"generation": GenerateConfig(
        max_new_tokens=MNT, batch_size=8)}))
    members = ask(0, 1, 4, sigma=cfg.es.sigma)
    got, want = _texts(compiled, members, prompts), _texts(eager, members, prompts)
    unperturbed = [c.token_ids for c in plain]
    assert [c.token_ids for c in plain_eager] == unperturbed
    assert got == want
    assert all(g != unperturbed for g in got)  # every member's completions moved
    graphs = counters["stats"]["unique_graphs"]
    assert _texts(compiled, ask(0, 2, 4, sigma=0.5), prompts) == _texts(eager, ask(0, 2, 4, sigma=0.5), prompts)
    assert counters["stats"]["unique_graphs"] == graphs  # new members: same graph, new input tensors
    compiled.close()
    again = generate(model, tok, rows, MNT, batch_size=16, compile_backend="eager")[:4]
    assert [c.token_ids for c in again] == unperturbed


def test_compiled_full_rank_generation_sees_in_place_perturbation(tiny_model):
    model, tok, task, examples, prompts, cfg = _toy(tiny_model, compile=True, compile_backend="eager")
    cfg = cfg.model_copy(update={"es": ESConfig(sigma=0.5)})
    params = EvolvingParams(select_params(model))
    generate(model, tok, prompts, MNT, batch_size=8, compile_backend="eager")  # compiled on the base weights
    members = ask(0, 1, 3, sigma=cfg.es.sigma)
    res_c = SequentialEvaluator(model, tok, task, params, cfg)(members, examples, prompts)
    eager_cfg = cfg.model_copy(update={"generation": GenerateConfig(max_new_tokens=MNT, batch_size=8)})
    res_e = SequentialEvaluator(model, tok, task, params, eager_cfg)(members, examples, prompts)
    assert res_c.fitness == res_e.fitness
    assert params.model_matches_master()


def test_compiled_generation_refuses_per_row_norm_weights(tiny_model):
    model, tok, task, examples, prompts, cfg = _toy(tiny_model, compile=True, compile_backend="eager")
    cfg = cfg.model_copy(update={"es": ESConfig(noise="lowrank", lowrank_vectors="full")})
    with pytest.raises(ValueError, match="lowrank_vectors=freeze"):
        BatchedLowRankEvaluator(model, tok, task, make_params(model, cfg.es), cfg)


def test_trajectory_records_device_type_and_resume_on_another_refuses(es_config):
    cfg = es_config(**{"es.iterations": 2, "eval.every": 0, "model.device": "cpu"})
    ESTrainer(cfg, progress=False).train()
    traj = Path(cfg.run_dir) / "trajectory.jsonl"
    rows = [json.loads(x) for x in traj.read_text().splitlines()]
    assert [r["device"] for r in rows] == ["cpu", "cpu"]
    # rows written before devices were recorded have no field: read as CPU, replay as before
    legacy = [{k: v for k, v in r.items() if k != "device"} for r in rows]
    traj.write_text("".join(json.dumps(r) + "\n" for r in legacy))
    ok = replay(cfg.run_dir)
    assert ok["matches_checkpoint"] is True
    traj.write_text("".join(json.dumps({**r, "device": "cuda"}) + "\n" for r in legacy))
    with pytest.raises(RunStateError, match="recorded on cuda but this process draws noise on cpu"):
        replay(cfg.run_dir)
    longer = es_config(**{"es.iterations": 3, "eval.every": 0})
    with pytest.raises(RunStateError, match="es.allow_device_change"):
        ESTrainer(longer, resume=True, progress=False).train()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        forced = replay(cfg.run_dir, allow_device_change=True)
    assert any("weights will differ" in str(x.message) for x in w)
    assert forced["checksum"] == ok["checksum"]  # on CPU the CPU stream is replayed; the label was the lie


def test_arch_model_is_random_and_labelled():
    with pytest.warns(UserWarning, match="random weights, throughput only"):
        model, tok = load_model("arch:smollm2-135m", device="cpu")
    assert "random weights" in model.config._name_or_path
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 136_000_000
    assert next(model.parameters()).dtype == torch.float32  # auto = fp32 on the CPU
    with pytest.raises(ModelError, match="unknown architecture arch:gpt-9.*qwen2.5-7b"):
        load_model("arch:gpt-9")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cli_device_flags_without_a_gpu_are_one_line_errors(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from evotune.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["train", "es", "--model", str(tiny_model), "--task", "toy_letters", "--device", "cuda",
                              "--iterations", "1", "--run-dir", str(tmp_path / "x"), "--no-progress"])
    assert res.exit_code == 2 and "no CUDA GPU" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x").exists()  # refused before a run directory is made
    res = runner.invoke(app, ["eval", "--model", str(tiny_model), "--task", "toy_letters", "--device", "cuda:1"])
    assert res.exit_code == 2 and "no CUDA GPU" in res.output
    res = runner.invoke(app, ["train", "es", "--device", "tpu", "--run-dir", str(tmp_path / "y")])
    assert res.exit_code == 2 and "model.device" in res.output


def test_evotune_imports_without_ray():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['ray'] = None\n"  # `import ray` now raises ImportError
        "import evotune.cli.main, evotune.trainers, evotune.es, evotune.distributed\n"
        "from evotune.config import build_config; build_config(None, {'ray.gpus_per_worker': 0.25})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_linears_sharing_an_input_share_one_b_projection(tiny_model, monkeypatch):
    """q/k/v and gate/up are learned as siblings; fused logits equal the per-Linear ones, in fewer GEMMs."""
    from evotune.es.lowrank import BatchedForward

    model, tok = load_model(str(tiny_model), "float32", "cpu")
    params = make_params(model, ESConfig(noise="lowrank", rank=2))
    enc = tok(["hello there", "two words"], return_tensors="pt", padding=True, add_special_tokens=False)
    members = ask(3, 2, 3, sigma=0.1)
    rows = {k: v.repeat(len(members), 1) for k, v in enc.items()}
    plain, fused = BatchedForward(model, params, rank=2), BatchedForward(model, params, rank=2, fuse=True)
    assert not plain.fuse  # CPU default: the path as before

    def run(fwd):
        calls = 0
        real = torch.bmm

        def count(*a, **k):
            nonlocal calls
            calls += 1
            return real(*a, **k)

        monkeypatch.setattr(torch, "bmm", count)
        with torch.no_grad(), fwd.active(fwd.make_group(members, rows_per_member=2)):
            out = model(**rows).logits
        monkeypatch.setattr(torch, "bmm", real)
        return out, calls

    want, n_plain = run(plain)
    run(fused)  # the first call learns which layers share an input
    layers = model.config.num_hidden_layers
    assert sorted(map(len, fused.siblings.values())) == [2] * layers + [3] * layers  # gate/up, q/k/v
    got, n_fused = run(fused)
    assert n_fused == n_plain - 3 * layers  # 7 projections per layer become 4
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

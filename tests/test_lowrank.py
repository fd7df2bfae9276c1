"""Low-rank ES: the batched population forward equals materialising W + σ·A Bᵀ/√r member by member."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import evotune.es.evaluator as evaluator_mod
from evotune.backends.models import load_model
from evotune.checkpoints import latest_checkpoint, read_state
from evotune.config import ESConfig, GenerateConfig, TrainConfig
from evotune.es.evaluator import SequentialEvaluator
from evotune.es.lowrank import BatchedForward, BatchedLowRankEvaluator
from evotune.es.params import EvolvingParams, lowrank_param_filter, select_params
from evotune.es.strategy import ask, tell
from evotune.noise import LowRankNoise, factors
from evotune.runs.rundir import read_jsonl
from evotune.tasks import get_task
from evotune.trainers import ESTrainer
from evotune.trainers.replay import replay

MNT = 8


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(es: ESConfig, max_new_tokens: int, batch_size: int) -> TrainConfig:
    return TrainConfig(es=es, generation=GenerateConfig(max_new_tokens=max_new_tokens, batch_size=batch_size))


def _setup(tiny_model: Path, vectors: str, rank: int, sigma: float = 0.05):
    model, tok = load_model(str(tiny_model))
    task = get_task("toy_letters")
    examples = task.split("train")[:5]
    prompts = [task.render(e, tok) for e in examples]
    es = ESConfig(noise="lowrank", rank=rank, sigma=sigma, lowrank_vectors=vectors)
    named = lowrank_param_filter(select_params(model), vectors)
    params = EvolvingParams(named, LowRankNoise(rank, vectors))
    return model, tok, task, examples, prompts, es, params


def _reference(monkeypatch, model, tok, task, params, es, members, examples, prompts, batch_size):
    """SequentialEvaluator over the materialised W + σE, with each member's completion texts."""
    texts: list[list[str]] = []
    real = evaluator_mod.generate

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        texts.append([c.text for c in out])
        return out

    monkeypatch.setattr(evaluator_mod, "generate", spy)
    res = SequentialEvaluator(model, tok, task, params, _cfg(es, MNT, batch_size))(members, examples, prompts)
    monkeypatch.setattr(evaluator_mod, "generate", real)
    return res, texts


@pytest.mark.parametrize(("vectors", "rank"), [("freeze", 1), ("full", 3)])
def test_batched_population_equals_materialised_members(tiny_model, monkeypatch, vectors, rank):
    model, tok, task, examples, prompts, es, params = _setup(tiny_model, vectors, rank)
    members = ask(0, 1, 6, antithetic=True, sigma=es.sigma)
    # reference batch 4 < 5 prompts: chunks of 4 and 1 per member; batch 8: all 5 prompts at once
    refs = {
        b: _reference(monkeypatch, model, tok, task, params, es, members, examples, prompts, b)
        for b in (4, 8)
    }
    assert params.model_matches_master()
    assert len({tuple(t) for t in refs[8][1]}) > 1, "members must differ, or the test proves nothing"
    # batched: 1 member per generate call (batch 4, prompts chunked 4+1), 2 per call (10), all 6 (64)
    for batch_size, ref_batch in ((4, 4), (10, 8), (64, 8)):
        ref, ref_texts = refs[ref_batch]
        ev = BatchedLowRankEvaluator(model, tok, task, params, _cfg(es, MNT, batch_size))
        comps, _ = ev.generate_members(members, prompts)
        assert [[c.text for c in cm] for cm in comps] == ref_texts
        res = ev(members, examples, prompts)
        assert res.fitness == pytest.approx(ref.fitness, rel=0, abs=1e-12)
        assert (res.completions, res.completion_tokens, res.prompt_tokens) == (
            ref.completions,
            ref.completion_tokens,
            ref.prompt_tokens,
        )
    # nothing left behind: no hooks, weights untouched
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert params.model_matches_master()


def test_batched_logits_match_materialised_weights(tiny_model):
    """One forward pass, tied embedding/lm_head included: per-row logits equal the materialised model's."""
    model, tok, task, examples, prompts, es, params = _setup(tiny_model, "full", 2, sigma=0.1)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert "model.embed_tokens.weight" in params.params
    members = ask(3, 2, 3, sigma=es.sigma)
    enc = tok(prompts[:2], return_tensors="pt", padding=True, add_special_tokens=False)
    fwd = BatchedForward(model, params, rank=es.rank)
    group = fwd.make_group(members, rows_per_member=2)
    rows = {k: v.repeat(len(members), 1) for k, v in enc.items()}
    with torch.no_grad(), fwd.active(group):
        batched = model(**rows).logits
    for j, m in enumerate(members):
        params.perturb(m.seed, m.sign, es.sigma)
        with torch.no_grad():
            alone = model(**enc).logits
        params.restore()
        torch.testing.assert_close(batched[2 * j : 2 * j + 2], alone, rtol=1e-4, atol=1e-4)
    assert params.model_matches_master()


def test_member_rows_do_not_depend_on_grouping(tiny_model):
    """Bit-identical logits for a member alone (padded with null members) or among others."""
    model, tok, task, examples, prompts, es, params = _setup(tiny_model, "full", 2, sigma=0.1)
    members = ask(5, 1, 6, sigma=es.sigma)
    enc = tok(prompts[:3], return_tensors="pt", padding=True, add_special_tokens=False)
    fwd = BatchedForward(model, params, rank=es.rank)

    def logits(group, pad):
        g = fwd.make_group(group, rows_per_member=3, pad=pad)
        rows = {k: v.repeat(g.members, 1) for k, v in enc.items()}
        with torch.no_grad(), fwd.active(g):
            return model(**rows).logits

    together = logits(members, 0)
    for j in (0, 4):
        alone = logits([members[j]], 5)
        assert torch.equal(alone[:3], together[3 * j : 3 * j + 3])
    nulls = logits([members[0]], 5)[3:]
    with torch.no_grad():
        base = model(**enc).logits
    torch.testing.assert_close(nulls, base.repeat(5, 1, 1))  # null members are the unperturbed model


def test_materialised_noise_and_weighted_sum():
    fn = LowRankNoise(4, "full")
    a, b = factors(9, "w", (12, 7), 4)
    assert torch.equal(fn(9, "w", (12, 7)), a @ b.T / math.sqrt(4))
    assert fn(9, "v", (7,)).shape == (7,)
    coeffs = [(3, 0.5), (9, -1.25), (11, 2.0)]
    expect = sum(c * fn(s, "w", (12, 7)) for s, c in coeffs)
    torch.testing.assert_close(fn.weighted_sum(coeffs, "w", (12, 7)), expect, rtol=1e-5, atol=1e-5)
    assert fn.weighted_sum(coeffs, "v", (7,)) is None
    with pytest.raises(ValueError, match="not a matrix"):
        LowRankNoise(2, "freeze")(1, "v", (7,))


def test_param_filter_and_full_rank_update(tiny_model):
    model, _ = load_model(str(tiny_model))
    frozen = lowrank_param_filter(select_params(model), "freeze")
    assert frozen and all(p.dim() == 2 for _, p in frozen)
    assert len(lowrank_param_filter(select_params(model), "full")) > len(frozen)
    params = EvolvingParams(frozen, LowRankNoise(1))
    name = "model.layers.0.mlp.up_proj.weight"
    before = params.master[name].clone()
    pop = ask(0, 1, 8)
    params.apply_update(tell(pop, [float(i) for i in range(8)]), 0.1)
    delta = params.master[name] - before
    assert int(torch.linalg.matrix_rank(delta)) > 1, (
        "Σ z_i A_i B_iᵀ is full rank although each term is rank 1"
    )
    assert params.model_matches_master()


def test_unsupported_vector_module_is_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    named = lowrank_param_filter(model.named_parameters(), "full")
    params = EvolvingParams(named, LowRankNoise(1, "full"))
    with pytest.raises(ValueError, match="lowrank_vectors=freeze"):
        BatchedForward(model, params, rank=1)


def _lowrank(es_config, **over):
    base = {"es.noise": "lowrank", "es.rank": 2, "es.population": 4, "generation.batch_size": 8, "threads": 1}
    base.update(over)
    return es_config(**base)


def test_lowrank_run_replays_bit_for_bit(es_config):
    cfg = _lowrank(es_config)
    ESTrainer(cfg, progress=False).train()
    traj = read_jsonl(Path(cfg.run_dir) / "trajectory.jsonl")
    assert any(r["updated"] for r in traj)
    for k in (1, 3):
        assert replay(cfg.run_dir, k)["matches_checkpoint"] is True


def test_lowrank_resume_after_interruption_equals_uninterrupted(es_config, tmp_path):
    full = _lowrank(es_config, run_dir=str(tmp_path / "full"), **{"es.iterations": 4, "checkpoint_every": 2})
    ESTrainer(full, progress=False).train()
    cut = _lowrank(es_config, run_dir=str(tmp_path / "cut"), **{"es.iterations": 3, "checkpoint_every": 2})
    ESTrainer(cut, progress=False).train()
    # a kill after iteration 3 committed its trajectory row but before its checkpoint was written
    shutil.rmtree(Path(cut.run_dir) / "checkpoints" / "iter_000003")
    longer = cut.model_copy(update={"es": cut.es.model_copy(update={"iterations": 4})})
    ESTrainer(longer, resume=True, progress=False).train()
    a, b = read_state(latest_checkpoint(full.run_dir)), read_state(latest_checkpoint(cut.run_dir))
    assert a["iteration"] == b["iteration"] == 4
    assert a["checksum"] == b["checksum"]
    fa = [r["fitness"] for r in read_jsonl(Path(full.run_dir) / "trajectory.jsonl")]
    fb = [r["fitness"] for r in read_jsonl(Path(cut.run_dir) / "trajectory.jsonl")]
    assert fa == fb


def test_lowrank_micro_batch_size_does_not_change_the_run(es_config, tmp_path):
    runs = []
    for bs in (4, 64):  # one member per generate call vs the whole population in one
        cfg = _lowrank(es_config, run_dir=str(tmp_path / f"bs{bs}"), **{"generation.batch_size": bs})
        ESTrainer(cfg, progress=False).train()
        runs.append(cfg.run_dir)
    ta, tb = (read_jsonl(Path(r) / "trajectory.jsonl") for r in runs)
    assert [r["fitness"] for r in ta] == [r["fitness"] for r in tb]
    assert (
        read_state(latest_checkpoint(runs[0]))["checksum"]
        == read_state(latest_checkpoint(runs[1]))["checksum"]
    )


def test_factors_are_made_per_micro_batch(tiny_model, monkeypatch):
    """Memory: factors exist for the members of one generate call, never for the whole population."""
    model, tok, task, examples, prompts, es, params = _setup(tiny_model, "freeze", 1)
    sizes: list[int] = []
    real = BatchedForward.make_group

    def spy(self, members, rows_per_member=0, pad=0):
        sizes.append(len(members))
        return real(self, members, rows_per_member, pad)

    monkeypatch.setattr(BatchedForward, "make_group", spy)
    BatchedLowRankEvaluator(model, tok, task, params, _cfg(es, 2, 10))(ask(0, 1, 5, sigma=es.sigma), examples, prompts)
    assert sizes == [2, 2, 1]


@pytest.mark.slow
def test_throughput_benchmark_quick_runs(tmp_path):
    """The benchmark script end to end on the tiny model (no timing asserted)."""
    import json
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    script = Path(__file__).parents[1] / "benchmarks" / "throughput.py"
    cmd = [sys.executable, str(script), "--quick", "-N", "2", "-P", "2", "--max-new-tokens", "4"]
    subprocess.run([*cmd, "--no-noise-options", "--json", str(out)], check=True, capture_output=True)
    res = json.loads(out.read_text())
    phases = {r["phase"] for r in res["phases"]}
    assert {"b_naive", "c_evotune_full_rank", "d_evotune_low_rank"} <= phases
    assert {"speedup_c_over_naive", "speedup_d_over_naive", "low_rank_vs_limit"} <= set(res["summary"])

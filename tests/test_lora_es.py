"""LoRA-ES (`es.lora`): ES over LoRA adapters only, with every guarantee of full-weight ES.

The base weights never change; checkpoints hold the adapter in peft's format (and the merged model on
request); evotune reads a LoRA checkpoint as the merged model; resume and replay are bit-exact.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from evotune.backends.lora import attach_lora
from evotune.backends.models import load_model
from evotune.checkpoints import (
    ADAPTER_CONFIG,
    ADAPTER_DIR,
    ADAPTER_WEIGHTS,
    CheckpointTensors,
    checkpoint_dirs,
    latest_checkpoint,
    read_state,
    verify_checkpoint,
)
from evotune.config import ESConfig, LoRAConfig, build_config
from evotune.errors import ConfigError, ModelError
from evotune.es.params import make_params
from evotune.trainers import ESTrainer
from evotune.trainers.replay import replay

LORA = {"es.lora": {"enabled": True, "rank": 2, "alpha": 4.0, "target_modules": ["q_proj", "v_proj", "down_proj"]},
        "es.sigma": 0.05, "es.alpha": 0.05, "eval.every": 0}
TARGETS = ("q_proj", "v_proj", "down_proj")


def _train(es_config, tmp_path: Path, name: str, **over) -> tuple[ESTrainer, Path]:
    cfg = es_config(run_dir=str(tmp_path / name), **{**LORA, **over})
    trainer = ESTrainer(cfg, progress=False)
    trainer.train()
    return trainer, Path(cfg.run_dir)


def _state(model) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


@pytest.mark.parametrize("noise", ["full", "lowrank"])
def test_lora_es_changes_only_the_adapters(es_config, tmp_path, tiny_model, one_thread, noise):
    trainer, run = _train(es_config, tmp_path, noise, **{"es.noise": noise})
    base, _ = load_model(str(tiny_model))
    base_sd = _state(base)
    # what evolves: adapter parameters only, and they moved (B started at 0)
    assert trainer.params.params and all(".lora_" in n for n in trainer.params.params)
    assert any(".lora_B." in n and bool(t.abs().sum() > 0) for n, t in trainer.params.master.items())
    # the live model's base weights are bit-for-bit the base model's
    for n, t in trainer.model.state_dict().items():
        if ".lora_" not in n:
            assert torch.equal(t, base_sd[n.replace(".base_layer.", ".")]), n
    ckpt = latest_checkpoint(run)
    assert (ckpt / ADAPTER_DIR / ADAPTER_CONFIG).is_file() and (ckpt / ADAPTER_DIR / ADAPTER_WEIGHTS).is_file()
    assert not (ckpt / "model.safetensors").exists()  # no merged model unless asked
    assert "adapter/adapter_model.safetensors" in read_state(ckpt)["files"]  # sha256 covers the adapter
    # evotune loads the checkpoint as the merged model, under the base model's names
    merged, _ = load_model(str(run))
    msd = _state(merged)
    assert set(msd) == set(base_sd)
    changed = {n for n in msd if not torch.equal(msd[n], base_sd[n])}
    assert changed and all(n.rsplit(".", 2)[-2] in TARGETS for n in changed)


def test_resume_after_a_stop_equals_the_uninterrupted_run(es_config, tmp_path, one_thread):
    over = {"es.optimizer": "adam", "es.alpha": 0.02, "es.iterations": 4, "checkpoint_every": 2}
    _, full = _train(es_config, tmp_path, "full", **over)
    cfg = es_config(run_dir=str(tmp_path / "part"), **{**LORA, **over, "es.iterations": 3})
    ESTrainer(cfg, progress=False).train()
    shutil.rmtree(Path(cfg.run_dir) / "checkpoints" / "iter_000003")  # resume from iter 2 + one replayed row
    longer = cfg.model_copy(update={"es": cfg.es.model_copy(update={"iterations": 4})})
    ESTrainer(longer, resume=True, progress=False).train()
    a, b = latest_checkpoint(full), latest_checkpoint(cfg.run_dir)
    assert read_state(a)["checksum"] == read_state(b)["checksum"]
    assert (a / ADAPTER_DIR / ADAPTER_WEIGHTS).read_bytes() == (b / ADAPTER_DIR / ADAPTER_WEIGHTS).read_bytes()


def test_replay_reaches_the_checkpoint_adapter_exactly(es_config, tmp_path, tiny_model, one_thread):
    _, run = _train(es_config, tmp_path, "run", **{"es.iterations": 3, "checkpoint_every": 2})
    assert sorted(dict(checkpoint_dirs(run))) == [2, 3]
    for k in (2, 3):
        assert replay(run, k)["matches_checkpoint"] is True
    out = tmp_path / "replayed"
    res = replay(run, 3, out=out)
    assert res["checksum"] == read_state(latest_checkpoint(run))["checksum"]
    # replay --out writes an HF-loadable merged model plus the adapter; both equal the run's own
    a, _ = load_model(str(out))
    b, _ = load_model(str(run))
    for (n, x), (m, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert n == m and torch.equal(x, y), n
    # replay from the trajectory alone (no checkpoints) lands on the same adapter
    final = read_state(latest_checkpoint(run))["checksum"]
    shutil.rmtree(run / "checkpoints")
    assert replay(run)["checksum"] == final


def test_peft_loads_the_adapter_with_the_logits_of_evotunes_merged_load(es_config, tmp_path, tiny_model, one_thread):
    from peft import PeftModel

    _, run = _train(es_config, tmp_path, "run")
    ckpt = latest_checkpoint(run)
    base, tok = load_model(str(tiny_model))
    ids = tok(["Hello there, how are you?", "ES"], return_tensors="pt", padding=True)
    with torch.no_grad():
        base_logits = base(**ids).logits
        peft_model = PeftModel.from_pretrained(base, str(ckpt / ADAPTER_DIR))
        peft_logits = peft_model(**ids).logits
        merged, _ = load_model(str(ckpt))
        merged_logits = merged(**ids).logits
    assert not torch.allclose(peft_logits, base_logits, atol=1e-4)  # the adapter does something
    assert torch.allclose(peft_logits, merged_logits, atol=1e-5, rtol=1e-5)
    # peft's own merge gives the weights evotune reads
    plain = peft_model.merge_and_unload()
    with CheckpointTensors(ckpt) as t:
        for n, p in plain.named_parameters():
            assert torch.allclose(p, t.get(n), atol=1e-6), n


def test_save_merged_writes_a_loadable_merged_model(es_config, tmp_path, one_thread):
    from transformers import AutoModelForCausalLM

    _, run = _train(es_config, tmp_path, "run", **{"es.lora.save_merged": True, "es.iterations": 2})
    ckpt = latest_checkpoint(run)
    assert (ckpt / "config.json").is_file() and (ckpt / "model.safetensors").is_file()
    hf = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32)  # plain transformers
    ours, _ = load_model(str(ckpt))
    assert not any(".lora_" in n for n, _ in hf.named_parameters())
    for (n, x), (m, y) in zip(hf.state_dict().items(), ours.state_dict().items(), strict=True):
        assert n == m and torch.equal(x, y), n


def test_checkpoint_integrity_covers_the_adapter(es_config, tmp_path, one_thread):
    _, run = _train(es_config, tmp_path, "run", **{"es.iterations": 1})
    f = latest_checkpoint(run) / ADAPTER_DIR / ADAPTER_WEIGHTS
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="adapter/adapter_model.safetensors"):
        verify_checkpoint(f.parent.parent)
    with pytest.raises(ModelError, match="damaged"):
        load_model(str(run))


def test_merged_weights_feed_the_analyses(es_config, tmp_path, tiny_model, one_thread):
    from evotune.analysis.delta import delta_stats
    from evotune.backends.resolve import architecture

    _, run = _train(es_config, tmp_path, "run")
    assert architecture(latest_checkpoint(run)) == architecture(tiny_model) != {}
    r = delta_stats([str(run)], str(tiny_model))
    moved = {k for k, v in r["params"].items() if v["delta_norm"][0] > 0}
    assert moved and all(k.rsplit(".", 2)[-2] in TARGETS for k in moved)  # base names, Δ = merged − base
    assert r["params"]["model.embed_tokens.weight"]["delta_norm"][0] == 0.0
    with CheckpointTensors(latest_checkpoint(run)) as t, CheckpointTensors(tiny_model) as b:
        key = "model.layers.0.self_attn.q_proj.weight"
        a_ = t.get("model.layers.0.self_attn.q_proj.lora_A.default.weight")
        b_ = t.get("model.layers.0.self_attn.q_proj.lora_B.default.weight")
        assert torch.allclose(t.get(key) - b.get(key), (4.0 / 2) * b_ @ a_, atol=1e-6)


def test_adapter_init_is_a_function_of_the_seed_not_the_global_rng(tiny_model):
    lora = LoRAConfig(enabled=True, rank=2)

    def adapters(seed: int, global_seed: int) -> dict[str, torch.Tensor]:
        model, _ = load_model(str(tiny_model))
        torch.manual_seed(global_seed)
        return {n: p.detach().clone() for n, p in attach_lora(model, lora, seed)}

    a, b, c = adapters(0, 1), adapters(0, 2), adapters(1, 1)
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a if ".lora_A." in n)
    assert all(bool((t == 0).all()) for n, t in a.items() if ".lora_B." in n)
    assert all(t.dtype == torch.float32 for t in a.values())
    bound = 1 / 64**0.5  # kaiming-uniform on (r, in=64), peft's default
    assert all(float(t.abs().max()) <= bound for n, t in a.items() if ".lora_A." in n)
    model, _ = load_model(str(tiny_model))
    with pytest.raises(ValueError, match="run seed"):  # never a silent default seed
        make_params(model, ESConfig(lora=lora))


@pytest.mark.parametrize(("over", "match"), [
    ({"es.lora.rank": 0}, "es.lora.rank"),
    ({"es.lora.alpha": 0}, "es.lora.alpha"),
    ({"es.lora.target_modules": []}, "es.lora.target_modules"),
    ({"es.lora.target_modules": ["q proj"]}, "module names"),
    ({"es.lora.init": "orthogonal"}, "es.lora.init"),
])
def test_bad_lora_values_are_config_errors(over, match):
    with pytest.raises(ConfigError, match=match) as e:
        build_config(None, {"es.lora.enabled": True, **over})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("over", "match"), [
    ({"es.lora.target_modules": ["qkv"]}, r"match no module of this model; set es.lora.target_modules .*q_proj"),
    ({"es.lora.target_modules": ["mlp"]}, "mlp, which is not a Linear layer"),
    ({"es.lora.target_modules": ["lm_head"]}, "lm_head, whose weight is tied"),
    ({"es.include": ["model.embed_tokens.*"]}, "select none of the LoRA adapter parameters"),
    ({"es.exclude": ["*lora*"]}, "select none of the LoRA adapter parameters"),
])
def test_lora_that_does_not_fit_the_model_stops_before_training(es_config, tmp_path, over, match):
    cfg = es_config(run_dir=str(tmp_path / "bad"), **{**LORA, **over})
    with pytest.raises(ConfigError, match=match) as e:
        ESTrainer(cfg, progress=False).train()
    assert "\n" not in str(e.value)
    assert not (tmp_path / "bad").exists()  # a failed start leaves no run directory


def test_include_filters_the_adapters(es_config, tmp_path, one_thread):
    trainer, run = _train(es_config, tmp_path, "run", **{"es.include": ["*.lora_B.*"], "es.iterations": 1})
    assert trainer.params.params and all(".lora_B." in n for n in trainer.params.params)
    with CheckpointTensors(latest_checkpoint(run)) as t:  # unevolved A still saved: the adapter is whole
        assert any(".lora_A." in n for n in t.adapter)

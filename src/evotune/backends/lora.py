"""LoRA adapters for LoRA-ES: attach them (peft), initialise them from the run seed, save them.

`attach_lora` injects peft LoRA layers into the model in place (`peft.inject_adapter_in_model`: the
model stays the same HF model, so generation, the evaluators and the hooks of batched low-rank ES
see ordinary `nn.Linear` modules, `...q_proj.lora_A.default`), keeps the adapters in fp32 whatever
the model's dtype, and draws A from a generator seeded by (run seed, parameter name) on the CPU, so
the same config and seed give bit-identical adapters on every device, in training, resume and replay
(peft's own init draws from the global RNG). B starts at 0: the run starts at the base model.

`save_lora` writes a checkpoint's weights: the adapter in peft's format (`adapter/`, fp32: the exact
master) and, on request, the merged model as an HF model directory. Reading is `checkpoints.py`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evotune.checkpoints import (
    ADAPTER_DIR,
    ADAPTER_NAME,
    ADAPTER_WEIGHTS,
    adapter_config,
    lora_scaling,
    merge_weight,
    peft_key,
)
from evotune.config import LoRAConfig
from evotune.errors import ConfigError
from evotune.hashing import stable_int


def _matches(name: str, targets: list[str]) -> bool:
    """peft's rule for a list of target modules: the module name is one of them or ends in `.target`."""
    return any(name == t or name.endswith(f".{t}") for t in targets)


def _check_targets(model: nn.Module, lora: LoRAConfig) -> list[str]:
    """The module names `lora.target_modules` select, or a ConfigError naming what to set instead."""
    if any(".lora_A" in n for n, _ in model.named_modules()):
        raise ConfigError("es.lora: this model already holds LoRA layers; load a plain (or merged) model")
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    chosen = [n for n, _ in model.named_modules() if n and _matches(n, lora.target_modules)]
    if not chosen:
        names = sorted({n.rsplit(".", 1)[-1] for n in linears})
        raise ConfigError(
            f"es.lora.target_modules {lora.target_modules} match no module of this model; set es.lora.target_modules "
            f"to some of its Linear layers: {', '.join(names[:12])}"
        )
    not_linear = [n for n in chosen if n not in linears]
    if not_linear:
        raise ConfigError(
            f"es.lora.target_modules selects {not_linear[0]}, which is not a Linear layer (LoRA-ES adapts Linear "
            "layers only); remove it from es.lora.target_modules"
        )
    owners: dict[int, int] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    tied = [n for n in chosen if owners[id(model.get_submodule(n).weight)] > 1]
    if tied:
        raise ConfigError(
            f"es.lora.target_modules selects {tied[0]}, whose weight is tied to another layer's (a merged model "
            "could not hold both); remove it from es.lora.target_modules"
        )
    return chosen


def peft_config(lora: LoRAConfig, base: str | None = None) -> Any:
    """The `peft.LoraConfig` of `lora` (dropout 0: ES evaluates greedily; no bias adapters)."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, target_modules=list(lora.target_modules), lora_dropout=0.0,
        bias="none", init_lora_weights=True if lora.init == "kaiming" else "gaussian",
        base_model_name_or_path=base, task_type="CAUSAL_LM",
    )


@torch.no_grad()
def init_adapter(named: Mapping[str, torch.Tensor], lora: LoRAConfig, seed: int) -> None:
    """peft's initialisation, drawn from (run seed, name): A ~ kaiming-uniform (bound 1/√in) or
    N(0, 1/r²), B = 0. Drawn on the CPU in fp32, so it is the same on every device."""
    for name in sorted(named):
        p = named[name]
        if ".lora_B." in name:
            p.zero_()
            continue
        g = torch.Generator().manual_seed(stable_int("lora-init", seed, name))
        if lora.init == "kaiming":  # nn.init.kaiming_uniform_(a=√5) on (r, in): U(−1/√in, 1/√in)
            bound = 1.0 / math.sqrt(p.shape[1])
            a = torch.rand(tuple(p.shape), generator=g, dtype=torch.float32).mul_(2 * bound).sub_(bound)
        else:
            a = torch.randn(tuple(p.shape), generator=g, dtype=torch.float32).div_(lora.rank)
        p.copy_(a)


def attach_lora(model: nn.Module, lora: LoRAConfig, seed: int) -> list[tuple[str, nn.Parameter]]:
    """Inject LoRA adapters into `model` (in place), initialised from `seed`; return the adapter parameters."""
    _check_targets(model, lora)
    from peft import inject_adapter_in_model

    inject_adapter_in_model(peft_config(lora), model, adapter_name=ADAPTER_NAME)
    named = [(n, p) for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]
    for _, p in named:  # fp32 adapters: small, and exact without a separate master file
        p.data = p.data.to(torch.float32)
        p.requires_grad_(False)
    init_adapter(dict(named), lora, seed)
    return named


def lora_modules(model: nn.Module) -> dict[str, Any]:
    """The peft LoRA layers of a model, by module name."""
    return {n: m for n, m in model.named_modules() if hasattr(m, "lora_A") and ADAPTER_NAME in getattr(m, "lora_A", {})}


@torch.no_grad()
def merged_state_dict(model: nn.Module, adapter: Mapping[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """The merged model's tensors under the base model's names, in the model's dtype (tied ones once)."""
    layers = lora_modules(model)
    out: dict[str, torch.Tensor] = {}
    for n, t in model.state_dict().items():
        if ".lora_A." in n or ".lora_B." in n:
            continue
        module, _, leaf = n.rpartition(".base_layer.")
        if module in layers and leaf == "weight":
            a = adapter[f"{module}.lora_A.{ADAPTER_NAME}.weight"]
            b = adapter[f"{module}.lora_B.{ADAPTER_NAME}.weight"]
            out[f"{module}.weight"] = merge_weight(t, a, b, scaling).to(t.dtype)
        else:
            out[n.replace(".base_layer.", ".")] = t
    if getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        out.pop("lm_head.weight", None)
    return {n: t.detach().contiguous().cpu() for n, t in out.items()}


def _canonical_json(path: Path) -> None:
    """Rewrite a JSON file with sorted keys and sorted lists of names: peft writes `target_modules` from a
    set, whose order changes with the hash seed, so the same run would write different bytes."""
    import json

    data = json.loads(path.read_text())
    for k, v in data.items():
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            data[k] = sorted(v)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_lora(
    out: str | Path, model: Any, adapter: Mapping[str, torch.Tensor], lora: LoRAConfig, base: str,
    merged: bool = False,
) -> None:
    """Write `adapter` (fp32 tensors by evolving-model name) in peft's format to `out/adapter`, and with
    `merged` the merged model (config + safetensors) to `out` itself."""
    from safetensors.torch import save_file

    out = Path(out)
    adir = out / ADAPTER_DIR
    adir.mkdir(parents=True, exist_ok=True)
    cfg = peft_config(lora, base)
    save_file({peft_key(n): t.detach().to(torch.float32).contiguous().cpu() for n, t in adapter.items()},
              str(adir / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    cfg.save_pretrained(str(adir))
    _canonical_json(adir / "adapter_config.json")
    scaling = lora_scaling(adapter_config(out))
    if merged:
        save_file(merged_state_dict(model, adapter, scaling), str(out / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(str(out))
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(str(out))

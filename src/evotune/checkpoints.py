"""The on-disk checkpoint format, and the one way to read it.

    CKPT/model*.safetensors         HF-loadable weights (in the run's dtype) + config + tokenizer
    CKPT/evotune_extra.safetensors  fp32 master weights of a bf16/fp16 run (the exact values)
    CKPT/evotune_state.json         written last: its presence marks the checkpoint complete

A LoRA-ES checkpoint (`es.lora`) holds the adapter instead of the model weights:

    CKPT/adapter/adapter_config.json, adapter_model.safetensors   peft's format, fp32 (the exact master);
                                    `peft.PeftModel.from_pretrained(base, CKPT/adapter)` loads it
    CKPT/model*.safetensors + config.json   the merged model, only with `es.lora.save_merged`
    + tokenizer and evotune_state.json as above

Writers live in `runs.rundir`; everything that reads weights (resume, replay, model loading,
analyses) goes through `CheckpointTensors`, so the fp32 masters always win over rounded weights.
For a LoRA checkpoint it shows the merged model under the base model's names (W + (α/r)·B A, in
fp32, from the base model the adapter records), plus the adapter's own tensors under the names the
evolving model gives them (`...q_proj.lora_A.default.weight`), which resume and replay read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from evotune.errors import ModelError

STATE_FILE = "evotune_state.json"
EXTRA_FILE = "evotune_extra.safetensors"
OPTIMIZER_FILE = "evotune_optimizer.safetensors"  # ES optimizer state (momentum, Adam moments)
ADAPTER_DIR = "adapter"  # LoRA-ES: the adapter in peft's format
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_NAME = "default"  # peft's adapter name inside the evolving model
_PEFT_PREFIX = "base_model.model."  # what PeftModel.save_pretrained puts before a module name
_CKPT_RE = re.compile(r"^iter_(\d+)$")


def checkpoint_dirs(run: str | Path) -> list[tuple[int, Path]]:
    """(iteration, path) of complete checkpoints of a run directory, oldest first."""
    root = Path(run) / "checkpoints"
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        m = _CKPT_RE.match(d.name)
        if m and (d / STATE_FILE).is_file():
            out.append((int(m.group(1)), d))
    return sorted(out)


def latest_checkpoint(run: str | Path) -> Path | None:
    dirs = checkpoint_dirs(run)
    return dirs[-1][1] if dirs else None


def read_state(checkpoint: str | Path) -> dict[str, Any]:
    """A checkpoint's state: a JSON object whose `files` (when present) map file names to sha256 strings."""
    path = Path(checkpoint) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"checkpoint {checkpoint}: {STATE_FILE} is damaged ({str(exc)[:100]}); delete the "
                         "checkpoint folder and --resume to rebuild it from trajectory.jsonl") from None
    files = state.get("files") if isinstance(state, dict) else None
    if not isinstance(state, dict) or not (files is None or (isinstance(files, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()))):
        raise ModelError(f"checkpoint {checkpoint}: {STATE_FILE} does not hold evotune's state object; delete the "
                         "checkpoint folder and --resume to rebuild it from trajectory.jsonl")
    return state


def checkpoint_files(directory: str | Path) -> list[Path]:
    """Every file of a checkpoint, its subdirectories' (a LoRA adapter) included, in a stable order."""
    return sorted(f for f in Path(directory).rglob("*") if f.is_file())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)  # hashlib releases the GIL on large buffers: files hash in parallel
    return h.hexdigest()


def file_hashes(directory: str | Path) -> dict[str, str]:
    """sha256 of every file of a checkpoint but its state file: the content it is verified against.

    Keys are paths relative to the checkpoint (`adapter/adapter_model.safetensors`). Files are hashed
    on a thread pool (a 7B checkpoint is ~45 GB in several files: tens of seconds on one thread).
    """
    d = Path(directory)
    files = [f for f in checkpoint_files(d) if f.name != STATE_FILE]
    with ThreadPoolExecutor(max(1, min(len(files), os.cpu_count() or 1))) as pool:
        digests = list(pool.map(_sha256, files))
    return {f.relative_to(d).as_posix(): h for f, h in zip(files, digests, strict=True)}


_VERIFIED: dict[str, tuple[tuple[str, int, int], ...]] = {}


def verify_checkpoint(directory: str | Path) -> None:
    """Raise `ModelError` if a checkpoint's files differ from the sha256 its state recorded.

    Checkpoints written before hashes were recorded (no `files` in the state) are accepted as they are.
    """
    d = Path(directory)
    if not (d / STATE_FILE).is_file():
        return
    recorded = read_state(d).get("files")
    if not recorded:
        return
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in checkpoint_files(d))
    if _VERIFIED.get(str(d.resolve())) == stamp:
        return  # already verified in this process and unchanged since
    actual = file_hashes(d)
    bad = sorted(n for n, h in recorded.items() if actual.get(n) != h)
    if bad:
        raise ModelError(
            f"checkpoint {d} is damaged: {', '.join(bad)} no longer match the sha256 recorded when it was written "
            "(resume rebuilds it from trajectory.jsonl; `evotune replay RUN --iteration K --out DIR` writes a good copy)"
        )
    _VERIFIED[str(d.resolve())] = stamp


def check_finite(named: Any, where: str) -> None:
    """Refuse NaN/inf weights (a damaged file or a diverged run) before they are trained on or saved."""
    for name, t in named:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ModelError(f"{where}: tensor {name} holds NaN or inf values; the weights are damaged or diverged")


# -- LoRA adapters ---------------------------------------------------------------------------------


def is_lora_checkpoint(directory: str | Path) -> bool:
    """Whether a directory is a LoRA-ES checkpoint (it holds `adapter/adapter_config.json`)."""
    return (Path(directory) / ADAPTER_DIR / ADAPTER_CONFIG).is_file()


def adapter_config(directory: str | Path) -> dict[str, Any]:
    """A LoRA checkpoint's peft adapter config (rank, alpha, the base model it was trained on)."""
    return json.loads((Path(directory) / ADAPTER_DIR / ADAPTER_CONFIG).read_text())


def adapter_base(directory: str | Path) -> str:
    """The base model directory a LoRA checkpoint's adapter records ('' if none)."""
    return str(adapter_config(directory).get("base_model_name_or_path") or "")


def peft_key(name: str) -> str:
    """The evolving model's adapter parameter name → the key peft's adapter file uses for it."""
    return _PEFT_PREFIX + name.replace(f".{ADAPTER_NAME}.", ".")


def adapter_param_name(key: str) -> str:
    """A key of peft's adapter file → the evolving model's parameter name (inverse of `peft_key`)."""
    name = key.removeprefix(_PEFT_PREFIX)
    for part in ("lora_A", "lora_B"):
        name = name.replace(f".{part}.weight", f".{part}.{ADAPTER_NAME}.weight")
    return name


def lora_scaling(adapter_config: dict[str, Any]) -> float:
    """peft's scale of B A: lora_alpha / r (lora_alpha / √r with rsLoRA)."""
    r, a = adapter_config["r"], adapter_config["lora_alpha"]
    return a / math.sqrt(r) if adapter_config.get("use_rslora") else a / r


def merge_weight(base: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """W + scaling · B A in fp32: the merged weight (every writer and reader of merged weights uses this)."""
    return base.to(torch.float32) + (b.to(torch.float32) @ a.to(torch.float32)) * scaling


def is_tied(directory: str | Path) -> bool:
    """Whether the model config ties the unembedding to the input embedding."""
    try:
        cfg = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(cfg.get("tie_word_embeddings", False))


class CheckpointTensors:
    """Lazy fp32 access to a model directory's tensors (sharded files; fp32 masters preferred).

    Tensors are read one at a time with `safe_open`, so memory holds one tensor per model, not
    whole models. Use as a context manager, or pass an `ExitStack` that owns the file handles.
    """

    def __init__(self, directory: str | Path, stack: ExitStack | None = None) -> None:
        from safetensors import safe_open

        self.directory = d = Path(directory)
        verify_checkpoint(d)  # an evotune checkpoint must still hold the bytes it was written with
        self._own = stack is None
        self._stack = stack or ExitStack()
        self.adapter: dict[str, torch.Tensor] = {}  # LoRA: evolving-model name -> fp32 adapter tensor
        self.deltas: dict[str, tuple[str, str]] = {}  # LoRA: base weight name -> (A name, B name)
        self.scaling = 0.0
        self.base: CheckpointTensors | None = None  # LoRA: the base model the adapter was trained on
        files = sorted(p for p in d.glob("*.safetensors") if p.name not in (EXTRA_FILE, OPTIMIZER_FILE))
        if is_lora_checkpoint(d):
            try:
                files = self._open_lora(d, files)
            except BaseException:
                self.close()
                raise
        if not files and self.base is None:
            raise ModelError(f"{d}: no .safetensors files (a local safetensors checkpoint is needed)")
        self.where: dict[str, Any] = {}
        try:
            for f in [*files, d / EXTRA_FILE]:
                if f.is_file():  # the extra file comes last: its fp32 master wins over the rounded weight
                    h = self._stack.enter_context(safe_open(str(f), framework="pt"))
                    for k in h.keys():  # noqa: SIM118  (safe_open handles are not mappings)
                        self.where[k] = h
        except Exception as exc:  # a truncated or corrupt file
            self.close()
            raise ModelError(f"{d}: cannot read its safetensors files ({exc})") from exc
        if self.base is not None:  # a LoRA adapter over its base: the base's tensors, merged in `get`
            self.where = self.base.where
        self.tied = self.base.tied if self.base is not None else is_tied(d)

    def _open_lora(self, d: Path, files: list[Path]) -> list[Path]:
        """Read the adapter; merged weights come from its base model (exact, fp32), or else from the
        merged files `es.lora.save_merged` wrote. Returns the model files still to open."""
        from safetensors.torch import load_file

        try:
            acfg = adapter_config(d)
            raw = load_file(str(d / ADAPTER_DIR / ADAPTER_WEIGHTS))
            self.scaling = lora_scaling(acfg)
        except Exception as exc:  # a truncated or corrupt adapter
            raise ModelError(f"{d}: cannot read its LoRA adapter ({type(exc).__name__}: {exc})") from exc
        self.adapter = {adapter_param_name(k): v.to(torch.float32) for k, v in raw.items()}
        for n in self.adapter:
            if ".lora_A." in n:
                module = n.split(".lora_A.")[0]
                self.deltas[f"{module}.weight"] = (n, n.replace(".lora_A.", ".lora_B."))
        base = Path(adapter_base(d))
        if base.is_dir() and base.resolve() != d.resolve():
            try:
                self.base = CheckpointTensors(base, self._stack)
                return []
            except ModelError:
                if not files:
                    raise
        if not files:
            raise ModelError(
                f"{d}: LoRA checkpoint whose base model {str(base)!r} is not a readable directory here and which "
                "holds no merged model; restore the base model there, or rerun with es.lora.save_merged=true"
            )
        self.deltas = {}  # the merged files already hold base + adapter
        return files

    def __enter__(self) -> CheckpointTensors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self._stack.close()

    def names(self) -> list[str]:
        """The model's tensor names (for a LoRA checkpoint: the base model's, holding merged weights)."""
        return list(self.where)

    def get(self, key: str) -> torch.Tensor:
        """The fp32 tensor `key`; a missing tied unembedding resolves to the input embedding.

        For a LoRA checkpoint: an adapter tensor by its evolving-model name, else the merged weight.
        """
        if key in self.adapter:
            return self.adapter[key].clone()
        if self.base is not None:
            t = self.base.get(key)
            if key in self.deltas:
                a, b = self.deltas[key]
                t = merge_weight(t, self.adapter[a], self.adapter[b], self.scaling)
            return t
        if key not in self.where and key.endswith("lm_head.weight"):
            key = next((k for k in self.where if k.endswith("embed_tokens.weight")), key)
        if key not in self.where:
            raise ModelError(f"{self.directory}: tensor {key} is missing")
        return self.where[key].get_tensor(key).to(torch.float32)

    def as_dict(self, names: list[str] | None = None) -> dict[str, torch.Tensor]:
        return {n: self.get(n) for n in (self.names() if names is None else names)}

"""The on-disk checkpoint format, and the one way to read it.

    CKPT/model*.safetensors         HF-loadable weights (in the run's dtype) + config + tokenizer
    CKPT/evotune_extra.safetensors  fp32 master weights of a bf16/fp16 run (the exact values)
    CKPT/evotune_state.json         written last: its presence marks the checkpoint complete

Writers live in `runs.rundir`; everything that reads weights (resume, replay, model loading,
analyses) goes through `CheckpointTensors`, so the fp32 masters always win over rounded weights.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from evotune.errors import ModelError

STATE_FILE = "evotune_state.json"
EXTRA_FILE = "evotune_extra.safetensors"
OPTIMIZER_FILE = "evotune_optimizer.safetensors"  # ES optimizer state (momentum, Adam moments)
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
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def file_hashes(directory: str | Path) -> dict[str, str]:
    """sha256 of every file of a checkpoint but its state file: the content it is verified against."""
    out = {}
    for f in sorted(Path(directory).iterdir()):
        if f.is_file() and f.name != STATE_FILE:
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                    h.update(block)
            out[f.name] = h.hexdigest()
    return out


_VERIFIED: dict[str, tuple[tuple[str, int, int], ...]] = {}


def verify_checkpoint(directory: str | Path) -> None:
    """Raise `ModelError` if a checkpoint's files differ from the sha256 its state recorded.

    Checkpoints written before hashes were recorded (no `files` in the state) are accepted as they are.
    """
    d = Path(directory)
    if not (d / STATE_FILE).is_file():
        return
    try:
        recorded = read_state(d).get("files")
    except ValueError as exc:
        raise ModelError(f"checkpoint {d}: {STATE_FILE} is damaged ({exc})") from None
    if not recorded:
        return
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(d.iterdir()) if f.is_file())
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
        files = sorted(p for p in d.glob("*.safetensors") if p.name not in (EXTRA_FILE, OPTIMIZER_FILE))
        if not files:
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
        self.tied = is_tied(d)

    def __enter__(self) -> CheckpointTensors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self._stack.close()

    def names(self) -> list[str]:
        return list(self.where)

    def get(self, key: str) -> torch.Tensor:
        """The fp32 tensor `key`; a missing tied unembedding resolves to the input embedding."""
        if key not in self.where and key.endswith("lm_head.weight"):
            key = next((k for k in self.where if k.endswith("embed_tokens.weight")), key)
        if key not in self.where:
            raise ModelError(f"{self.directory}: tensor {key} is missing")
        return self.where[key].get_tensor(key).to(torch.float32)

    def as_dict(self, names: list[str] | None = None) -> dict[str, torch.Tensor]:
        return {n: self.get(n) for n in (self.names() if names is None else names)}

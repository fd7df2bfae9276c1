"""The run directory: one format for ES and GRPO, atomic writes, tolerant readers.

File names and the run's states (new/partial/done) are `runs.layout`'s:

    RUN/config.yaml            the validated config the run was started with
    RUN/metrics.jsonl          one row per iteration/step (shared metric names)
    RUN/trajectory.jsonl       ES only: seeds and fitness per iteration (enough to rebuild weights)
    RUN/evals/iter_000010.jsonl  per-completion rows of each held-out evaluation
    RUN/checkpoints/iter_000010/ HF-loadable safetensors + tokenizer + evotune_state.json
    RUN/tb/                    TensorBoard events
    RUN/summary.json           written last: the run is done

Every file a resume depends on is written to a temporary name, fsynced and renamed, or appended
line by line with fsync; readers drop a torn last line left by a kill -9.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from evotune.checkpoints import (
    EXTRA_FILE,
    OPTIMIZER_FILE,
    STATE_FILE,
    check_finite,
    checkpoint_dirs,
    checkpoint_files,
    file_hashes,
)
from evotune.errors import RunStateError
from evotune.runs.layout import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EVALS_DIR,
    METRICS_FILE,
    SUMMARY_FILE,
    TB_DIR,
    TRAJECTORY_FILE,
    is_run,
)

BEST_DIR = "best"


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a refused write (read-only, a directory at `path`) leaves nothing behind
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line durably.

    A torn last line (a crash mid-append) is cut off first: `read_jsonl` ignores it, and appending after
    it would glue the new row onto it, making one corrupt line out of a lost one and a good one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end:
            f.seek(end - 1)
            if f.read(1) != b"\n":
                f.seek(0)
                data = f.read()
                f.truncate(data.rfind(b"\n") + 1)  # keep every complete line; 0 when the torn line is the only one
        f.write((json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path, skip_corrupt: bool = False) -> list[dict[str, Any]]:
    """All complete rows of a JSONL file; a final line without newline (torn write) is ignored.

    A corrupt line elsewhere is an error naming it, or with `skip_corrupt` (logs such as
    metrics.jsonl, which nothing is rebuilt from) a warning, so one bad line cannot hide a run.
    """
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] != "":
        lines = lines[:-1]  # torn last line
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            msg = f"{path}:{i}: corrupt JSON line ({getattr(exc, 'msg', exc)})"
            if not skip_corrupt:
                raise RunStateError(f"{msg}; repair or delete that line") from None
            warnings.warn(f"{msg}; skipped", stacklevel=2)
            continue
        rows.append(row)
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def keep_rows(path: str | Path, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Atomically rewrite a JSONL file keeping only rows that satisfy `keep` (used by resume)."""
    path = Path(path)

    def kept(row: dict[str, Any]) -> bool:
        try:
            return bool(keep(row))
        except (TypeError, ValueError):  # e.g. a hand-edited "step": "x": a log row, dropped like a corrupt line
            warnings.warn(f"{path}: a row with a field of the wrong type ({str(row)[:80]}) is dropped", stacklevel=3)
            return False

    if path.exists():
        write_jsonl(path, [r for r in read_jsonl(path, skip_corrupt=True) if kept(r)])


@contextlib.contextmanager
def _no_hf_progress_bars() -> Iterator[None]:
    """transformers' "Writing model shards" bars would break into the trainer's own progress bar."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


class RunDir:
    """Paths and writers of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every complete metrics row; a corrupt line is skipped with a warning (nothing is rebuilt from it)."""
        return read_jsonl(self.metrics, skip_corrupt=True)

    @property
    def trajectory(self) -> Path:
        return self.path / TRAJECTORY_FILE

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def evals(self) -> Path:
        return self.path / EVALS_DIR

    @property
    def tb(self) -> Path:
        return self.path / TB_DIR

    def checkpoint_path(self, iteration: int) -> Path:
        return self.path / CHECKPOINTS_DIR / f"iter_{iteration:06d}"

    @property
    def best(self) -> Path:
        """The best-by-eval checkpoint (`keep_best`): not an `iter_K`, so resume and pruning never use it."""
        return self.path / CHECKPOINTS_DIR / BEST_DIR

    def link_checkpoint(self, src: Path, dst: Path, state: dict[str, Any]) -> None:
        """`dst` as a copy of checkpoint `src` made of hard links (no disk), its state file extended by `state`.

        Falls back to copying where links are impossible; atomic like `save_checkpoint`.
        """
        tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)

        def link(a: str, b: str) -> None:
            try:
                os.link(a, b)
            except OSError:
                shutil.copy2(a, b)

        shutil.copytree(src, tmp, copy_function=link)
        old = json.loads((src / STATE_FILE).read_text())
        (tmp / STATE_FILE).unlink()  # a link to src's own state file: never written through
        atomic_write_json(tmp / STATE_FILE, {**old, **state})
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
        _fsync_dir(dst.parent)

    def exists(self) -> bool:
        return is_run(self.path)

    def save_checkpoint(
        self,
        iteration: int,
        model: Any,
        tokenizer: Any,
        state: dict[str, Any],
        extra_tensors: dict[str, Any] | None = None,
        keep_last: int | None = None,
        optimizer_tensors: dict[str, Any] | None = None,
        write_model: Callable[[Path], None] | None = None,
        path: Path | None = None,
    ) -> Path:
        """Write an HF-loadable checkpoint atomically (temp dir, then rename).

        `write_model(dir)` writes the weights instead of `model.save_pretrained` (LoRA-ES: the adapter
        in peft's format, and the merged model on request).
        `evotune_state.json` is written last inside the temp dir and marks the checkpoint complete.
        `extra_tensors` (e.g. fp32 master weights of a bf16 model) go to `evotune_extra.safetensors`,
        `optimizer_tensors` (ES momentum / Adam moments) to `evotune_optimizer.safetensors`.
        `path` writes it elsewhere than `checkpoints/iter_K` (the best-by-eval checkpoint).
        """
        from safetensors.torch import save_file

        final = path or self.checkpoint_path(iteration)
        check_finite(model.state_dict().items(), f"iteration {iteration} (not saved)")
        check_finite((extra_tensors or {}).items(), f"iteration {iteration} master weights (not saved)")
        tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:  # Ctrl-C or an error mid-write leaves no temp folder behind (kill -9: the next resume removes it)
            with _no_hf_progress_bars():
                if write_model is not None:
                    write_model(tmp)
                else:
                    model.save_pretrained(tmp, safe_serialization=True)
                tokenizer.save_pretrained(tmp)
            if extra_tensors:
                save_file(
                    {k: v.contiguous() for k, v in extra_tensors.items()}, str(tmp / EXTRA_FILE)
                )
            if optimizer_tensors is not None:  # even empty (every iteration a no-op): resume needs the file
                save_file({k: v.contiguous() for k, v in optimizer_tensors.items()}, str(tmp / OPTIMIZER_FILE))
            for f in checkpoint_files(tmp):  # fsync files before the rename makes them visible
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            atomic_write_json(tmp / STATE_FILE, {"iteration": iteration, **state, "files": file_hashes(tmp)})
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(final.parent)
        if keep_last:
            for _, d in checkpoint_dirs(self.path)[:-keep_last]:
                shutil.rmtree(d, ignore_errors=True)
        return final


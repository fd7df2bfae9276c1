"""One writer per run directory: an OS-level lock held for the life of a training process.

`fcntl.flock` on `RUN/.lock` is released by the kernel when the holder exits in any way (return,
exception, kill -9), so a lock file left by a dead process is never mistaken for a live writer;
the holder's pid and host are written into the file only to name it in the error.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

from evotune.errors import RunStateError

LOCK_FILE = ".lock"


def _openers(path: Path) -> list[int]:
    """Pids of this host's processes that hold `path` under flock (Linux /proc; [] elsewhere or unreadable)."""
    try:
        st = os.stat(path)
        locked = {int(f[4]) for f in (ln.split() for ln in Path("/proc/locks").read_text().splitlines())
                  if len(f) > 5 and f[1] == "FLOCK" and f[5].rsplit(":", 1)[-1] == str(st.st_ino)}
    except (OSError, ValueError):
        return []
    target = os.path.realpath(path)
    holders: set[int] = set()
    for proc in Path("/proc").iterdir():  # every process with the file open: the lock follows the open file
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                holders.add(int(proc.name))
        except OSError:
            continue
    # a process that has it open while a flock on its inode is held; without /proc fd access, the flock's pid
    return sorted(holders) if locked and holders else sorted(locked)


class RunLock:
    """Exclusive, non-blocking lock on a run directory; use as a context manager or call release()."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        run_dir = self.path.parent
        if run_dir.exists() and not run_dir.is_dir():
            raise RunStateError(f"run directory {run_dir} exists and is not a directory; choose another --run-dir")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # a parent on the way is a file
            raise RunStateError(
                f"cannot make run directory {run_dir}: a folder on its path is a file; choose another --run-dir"
            ) from None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunStateError(
                f"run directory {self.path.parent} is in use by {self.holder()}; wait for it to finish "
                "or stop it, or choose another --run-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def holder(self) -> str:
        """'pid N on HOST': the process that holds the lock now, found by the kernel's view of open files.

        The pid written in the file is only the last acquirer's: a child that inherited the lock (a
        forked worker outliving its trainer) or a lock taken by another tool holds it under another
        pid, so the live holders are looked up in /proc first and the file is the fallback.
        """
        live = [pid for pid in _openers(self.path) if pid != os.getpid()]
        if live:
            return "pid " + ", ".join(map(str, sorted(live))) + f" on {socket.gethostname()}"
        try:
            info: dict[str, Any] = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        return f"pid {info.get('pid', '?')} on {info.get('host', '?')}"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

"""One SIGALRM time limit, shared by the reward timer, the fuzz tests and the GPU benchmark.

It sits in the ground floor (it imports nothing of evotune) so that any layer may bound a call
that could hang without each caller restating the save/arm/disarm/restore dance.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def time_limit(seconds: float, timeout: Callable[[], BaseException]) -> Iterator[None]:
    """Raise `timeout()` in the block once `seconds` pass; the previous SIGALRM handler is put back.

    A signal can only interrupt the main thread of a Unix process: elsewhere (and for `seconds` <= 0)
    the block runs without a limit rather than failing.
    """
    if (
        seconds <= 0
        or threading.current_thread() is not threading.main_thread()
        or not hasattr(signal, "setitimer")
    ):
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise timeout()

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)

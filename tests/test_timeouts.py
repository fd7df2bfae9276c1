"""`evotune.timeouts.time_limit`: the one SIGALRM limit (reward timer, fuzz tests, gpu_quick)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from evotune.timeouts import time_limit


class Late(Exception):
    pass


def test_raises_the_callers_exception_and_puts_the_old_handler_back():
    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(Late, match="0.05"), time_limit(0.05, lambda: Late("after 0.05 s")):
        while True:
            time.sleep(0.005)
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_block_that_finishes_in_time_disarms_the_timer():
    with time_limit(5, lambda: Late()):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_no_limit_off_the_main_thread_or_for_zero_seconds():
    seen: list[str] = []

    def worker() -> None:
        with time_limit(0.01, lambda: Late()):
            time.sleep(0.05)
        seen.append("done")

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    with time_limit(0, lambda: Late()):
        time.sleep(0.01)
    assert seen == ["done"]

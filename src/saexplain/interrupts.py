"""Ctrl-C as a request to stop cleanly: at the next batch boundary, not in the middle of a write.

    with graceful_interrupts():   # the `saexplain` command wraps its work in this
        run(config)               # the stages call `check_interrupt()` between batches

Inside `graceful_interrupts`, the first Ctrl-C (SIGINT) prints one line and sets a flag; the next
`check_interrupt()` (between collection batches, between records, before an explain or score job
starts) raises `Interrupted`, after the work already finished is saved, so rerunning the same
command resumes. A second Ctrl-C raises `KeyboardInterrupt` at once. Outside it (a notebook, a
library caller) Ctrl-C behaves as usual and `check_interrupt()` never raises.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from saexplain.errors import Interrupted

__all__ = ["Interrupted", "check_interrupt", "graceful_interrupts", "stop_requested"]

NOTICE = (
    "saexplain: stopping at the next batch boundary; rerun the same command to resume "
    "(Ctrl-C again stops at once)"
)

_requested = threading.Event()


def stop_requested() -> bool:
    """Whether Ctrl-C asked the run to stop."""
    return _requested.is_set()


def check_interrupt() -> None:
    """Raise `Interrupted` if Ctrl-C asked the run to stop; call it between batches of work."""
    if _requested.is_set():
        raise Interrupted("interrupted (Ctrl-C): rerun the same command to resume")


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if _requested.is_set():
        raise KeyboardInterrupt
    _requested.set()
    # os.write, not print: a handler that prints while a progress bar writes to the same
    # buffered stream would raise "reentrant call"
    with contextlib.suppress(OSError):
        os.write(2, (NOTICE + "\n").encode())


@contextlib.contextmanager
def graceful_interrupts() -> Iterator[None]:
    """Within the block, the first Ctrl-C requests a stop at the next batch boundary (see the
    module docstring). Only the main thread can handle signals: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()

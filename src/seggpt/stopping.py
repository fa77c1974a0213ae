"""Stopping long work on Ctrl-C without losing it: training and prompt tuning finish the step they are on,
write their state, and stop; a second Ctrl-C stops at once."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks a loop to stop after the step it is on, with a checkpoint to resume from,
    instead of losing the steps since the last one; a second signal raises KeyboardInterrupt at once.

    Use as a context manager around the loop and check ``requested`` between steps; ``what`` is the line the first
    signal prints (what the loop does next).

    Installed only in the main thread (Python runs signal handlers there); elsewhere it never asks to stop.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, what: str = "stopping after this step, with a checkpoint") -> None:
        self.requested = False
        self.what = what
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        name = signal.Signals(signum).name
        print(f"\n{name}: {self.what}; again to stop at once", file=sys.stderr)

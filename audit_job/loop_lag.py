"""How late this process's event loop runs callbacks: the client's own scheduling delay.

A CPU-starved host (other work on its cores) or a loop busy with its own callbacks wakes
every coroutine late, so every latency the client measures includes that delay although the
server is no slower. The in-flight gate takes it off the median before it judges the server
to be queueing (concurrency.py). A timer every `PERIOD_SECONDS` measures how late it fires
(moving average over about the last 8); it runs only while requests are out, so an idle
process does not wake up for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

PERIOD_SECONDS = 0.02
WEIGHT = 0.125


class LoopLag:
    __slots__ = ("_busy", "_due", "_handle", "seconds")

    def __init__(self, busy: Callable[[], bool]) -> None:
        self._busy = busy  # whether to keep measuring (requests out)
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self.seconds = 0.0

    def wake(self) -> None:
        """Measure from now on, if not already (called as requests go out)."""
        if self._handle is None:
            self._arm(asyncio.get_running_loop())

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = loop.time() + PERIOD_SECONDS
        self._handle = loop.call_at(self._due, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        late = max(0.0, loop.time() - self._due)
        self.seconds += WEIGHT * (late - self.seconds)
        self._handle = None
        if self._busy():
            self._arm(loop)

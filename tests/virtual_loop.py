"""An asyncio event loop on virtual time: nothing sleeps, no socket is opened.

`loop.time()` is a number the loop moves itself: whenever every task is blocked, time jumps
to the next timer (asyncio.sleep, call_later, wait_for...). Code under test runs unchanged
with `clock=loop.time` and the real `asyncio.sleep`; a run of minutes of traffic takes
milliseconds, and the same inputs give the same run, timer for timer.

    result = run_virtual(main(), start=1000.0)

If every task is blocked and no timer is due, the program can never go on: the loop raises
`Deadlock` instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Deadlock(RuntimeError):
    pass


class _NoIo(selectors.BaseSelector):
    """Stands in for the selector: 'waiting for I/O' is moving the clock to the next timer."""

    def __init__(self, loop: VirtualLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        loop = self._loop
        if timeout == 0:
            return []
        scheduled = loop._scheduled  # type: ignore[attr-defined]
        if not scheduled:
            raise Deadlock("every task is blocked and no timer is due")
        loop.now = max(loop.now, scheduled[0]._when)
        return []

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        raise NotImplementedError("no I/O on virtual time")

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        raise NotImplementedError("no I/O on virtual time")

    def get_map(self) -> Any:
        return {}


class VirtualLoop(asyncio.BaseEventLoop):
    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self.now = start
        self._selector = _NoIo(self)
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self.now

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass  # nothing runs in other threads


def run_virtual(main: Coroutine[Any, Any, T], start: float = 1000.0) -> T:
    loop = VirtualLoop(start)
    try:
        return loop.run_until_complete(main)
    finally:
        # As asyncio.run does: what is left (after a failure) is cancelled, not abandoned.
        left = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(_settle(left))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _settle(tasks: list[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)

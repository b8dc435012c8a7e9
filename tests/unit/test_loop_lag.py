"""The event loop's lateness probe on a real loop: a blocked loop is measured late, and the
probe stops when nothing is out. Only lower bounds: a busy host can make timers later still."""

from __future__ import annotations

import asyncio
import time

from audit_job.loop_lag import LoopLag


def test_a_blocked_loop_is_measured_late() -> None:
    async def scenario() -> float:
        probe = LoopLag(lambda: True)
        probe.wake()
        time.sleep(0.1)  # the loop cannot run the timer due in 20 ms
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return probe.seconds

    # One sample at least 80 ms late, weighted 1/8.
    assert asyncio.run(scenario()) >= 0.01


def test_the_probe_stops_when_nothing_is_out() -> None:
    async def scenario() -> tuple[object, object]:
        busy = [True]
        probe = LoopLag(lambda: busy[0])
        probe.wake()
        await asyncio.sleep(0.05)
        running = probe._handle
        busy[0] = False
        await asyncio.sleep(0.05)
        return running, probe._handle

    running, stopped = asyncio.run(scenario())
    assert running is not None
    assert stopped is None

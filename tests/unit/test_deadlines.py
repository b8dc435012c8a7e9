"""One watcher task limiting many requests: a limit fires as a timeout, a real cancellation
still propagates, and the task's cancel count is left as it was found."""

from __future__ import annotations

import asyncio
import time

import pytest

from audit_job.deadlines import DeadlineWatch


async def limited(watch: DeadlineWatch, seconds: float, swallow: bool = False) -> str:
    """What _attempt does: arm, await, tell a timeout from a shutdown, disarm."""
    task = asyncio.current_task()
    assert task is not None
    watch.arm(task)
    try:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            if swallow:  # code that eats a cancellation and carries on
                await asyncio.sleep(0)
                return "swallowed"
            raise
        return "done"
    except asyncio.CancelledError:
        if not watch.timed_out(task):
            raise
        return "timeout"
    finally:
        watch.disarm(task)


async def shut_down_after(task: asyncio.Task[str], seconds: float) -> None:
    """Cancel `task` as a shutdown would, and see the cancellation come out of it."""
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_attempt_past_its_limit_is_a_timeout_and_others_finish() -> None:
    async with DeadlineWatch(0.2, tick=0.02) as watch:
        started = time.monotonic()
        slow, quick = await asyncio.gather(limited(watch, 5), limited(watch, 0.05))
        elapsed = time.monotonic() - started
    assert (slow, quick) == ("timeout", "done")
    assert 0.2 <= elapsed < 1.0  # fired at the limit, at most a tick or so late


async def test_the_task_can_be_cancelled_normally_after_a_timeout() -> None:
    async with DeadlineWatch(0.05, tick=0.01) as watch:

        async def twice() -> str:
            first = await limited(watch, 5)
            assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
            await asyncio.sleep(5)  # a later shutdown must still reach it
            return first

        await shut_down_after(asyncio.create_task(twice()), 0.3)


async def test_a_shutdown_while_armed_propagates() -> None:
    async with DeadlineWatch(10, tick=0.01) as watch:
        await shut_down_after(asyncio.create_task(limited(watch, 5)), 0.05)


async def test_a_shutdown_together_with_the_limit_wins() -> None:
    async with DeadlineWatch(0.05, tick=0.01) as watch:

        async def stuck() -> str:
            task = asyncio.current_task()
            assert task is not None
            watch.arm(task)
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                task.cancel()  # a shutdown asks too, before the limit is sorted out
                if not watch.timed_out(task):
                    raise
                return "timeout"
            finally:
                watch.disarm(task)
            return "done"

        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(stuck())


async def test_a_swallowed_limit_leaves_no_pending_cancel_behind() -> None:
    async with DeadlineWatch(0.05, tick=0.01) as watch:

        async def body() -> tuple[str, int]:
            result = await limited(watch, 5, swallow=True)
            return result, asyncio.current_task().cancelling()  # type: ignore[union-attr]

        assert await body() == ("swallowed", 0)


def test_a_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="seconds"):
        DeadlineWatch(0)

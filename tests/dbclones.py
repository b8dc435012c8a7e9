"""Throwaway databases made ahead of need and dropped after use, on a thread of their own.

Cloning a migrated database is mostly the server's waits (file creation, fsync: ~0.2-0.4 s
on MariaDB, more for PostgreSQL's CREATE DATABASE .. TEMPLATE on a busy host) and little
of its CPU, so a test need not wait for it: the thread keeps a couple ready while tests
run, and drops the used ones in the background.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Callable

READY = 2


class Clones:
    def __init__(
        self, make: Callable[[], Awaitable[str]], drop: Callable[[str], Awaitable[None]]
    ) -> None:
        self._make, self._drop = make, drop
        self._ready: queue.Queue[str | BaseException] = queue.Queue()
        self._work: queue.Queue[str | None] = queue.Queue()  # "": make one; name: drop it
        self._thread = threading.Thread(target=self._serve, name="db-clones", daemon=True)
        self._thread.start()

    def take(self) -> str:
        """A fresh database (waits for one when none is ready)."""
        ready = self._ready.get(timeout=120)
        if isinstance(ready, BaseException):
            self._ready.put(ready)  # every later test sees the failure too
            raise ready
        self._work.put("")
        return ready

    def give_back(self, name: str) -> None:
        self._work.put(name)

    def close(self) -> None:
        self._work.put(None)
        self._thread.join(timeout=120)

    def _serve(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        try:
            for _ in range(READY):
                self._ready.put(await self._make())
            while (item := await asyncio.to_thread(self._work.get)) is not None:
                if item:
                    await self._drop(item)
                else:
                    self._ready.put(await self._make())
        except BaseException as exc:  # handed to the test that waits for a database
            self._ready.put(exc)
            return
        while not self._ready.empty():
            left = self._ready.get()
            if isinstance(left, str):
                await self._drop(left)

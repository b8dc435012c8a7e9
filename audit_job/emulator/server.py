"""The emulator: one aiohttp application, its lifecycle, its options and its truth.

Each endpoint family lives in `endpoints/` and every API request takes the same path
(`endpoints/base.py`): count it, gate it (`gate.py`: throttle, delay, faults), authenticate
it (`auth.py`), answer it (`envelopes.py`). Nothing is logged per request.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from audit_job.emulator.auth import Authenticator, TokenBook
from audit_job.emulator.directory import Directory
from audit_job.emulator.endpoints import applications, control, sessions, tokens, users
from audit_job.emulator.envelopes import Envelopes
from audit_job.emulator.gate import Gate
from audit_job.emulator.options import EmulatorOptions, updated
from audit_job.emulator.stats import Stats
from audit_job.emulator.truth import Verdict
from audit_job.emulator.world import World

TOKEN_PATH = tokens.TOKEN_PATH


class Emulator:
    """In-process emulator: `async with Emulator(options) as emu: ... emu.url ...`."""

    def __init__(self, options: EmulatorOptions | None = None, **changes: Any) -> None:
        base = options if options is not None else EmulatorOptions()
        self.options = updated(base, changes) if changes else base
        self.counters = Stats()
        self.auth = Authenticator(lambda: self.options)
        self.envelopes = Envelopes(lambda: self.options.error_style)
        self._closing = asyncio.Event()
        self.gate = Gate(
            lambda: self.options,
            self.counters,
            self.envelopes,
            random.Random(self.options.seed),
            self._closing,
        )
        self.world = World(lambda: self.options)
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.app = self._make_app()

    @property
    def _tokens(self) -> TokenBook:
        return self.auth.tokens

    @property
    def _id_prefix(self) -> str:
        return self.envelopes.id_prefix

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        self._closing.clear()
        # handler_cancellation: a handler (a hang, a delay) ends when its client gives up.
        runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, self.options.host, self.options.port)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        return self.url

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- inspection and control --------------------------------------------------------------

    def configure(self, **changes: Any) -> EmulatorOptions:
        """Change options at runtime (validated). Host/port only matter before `start`."""
        new = updated(self.options, changes)
        if "seed" in changes:
            self.gate.rng.seed(new.seed)
        if "rate" in changes or "burst" in changes:
            self.gate.bucket.refill()
        old, self.options = self.options, new
        self.world.reconfigured(old, new)
        if "capacity" in changes:
            self.gate.slots.wake(new.capacity)
        return new

    def stats(self) -> dict[str, Any]:
        snapshot = self.counters.snapshot()
        snapshot["kicked_pairs"] = self.world.kicked_pairs()  # state: survives reset_stats
        return snapshot

    def reset_stats(self) -> None:
        self.counters.reset()

    def verdict(self, app_id: str, user_id: str) -> Verdict:
        """What this emulator, as configured now, answers for the pair (rules: world.py)."""
        return self.world.verdict(app_id, user_id)

    # -- the directory at runtime (also POST /__directory/...) --------------------------------

    @property
    def directory(self) -> Directory:
        return self.world.directory

    def remove_users(self, user_ids: list[str]) -> list[str]:
        """Users gone from now on (user not found everywhere); returns those newly removed."""
        return self.world.remove_users(list(user_ids))

    def add_users(self, count: int) -> list[str]:
        """`count` more generated directory users; returns their ids."""
        if type(count) is not int or count < 0:
            raise ValueError(f"count: must be an integer >= 0, got {count!r}")
        return self.world.add_users(count)

    def remove_apps(self, app_ids: list[str]) -> list[str]:
        return self.world.remove_apps(list(app_ids))

    def disable_apps(self, app_ids: list[str]) -> list[str]:
        return self.world.disable_apps(list(app_ids))

    def enable_apps(self, app_ids: list[str]) -> list[str]:
        return self.world.disable_apps(list(app_ids), disabled=False)

    def add_apps(self, entries: list[str]) -> list[str]:
        """Directory apps (`id` or `id=name`) added; returns the ids that were new."""
        return self.world.add_apps(list(entries))

    def truth(self, app_id: str, user_id: str) -> bool | None:
        found = self.verdict(app_id, user_id)
        return {Verdict.ACTIVE: True, Verdict.INACTIVE: False}.get(found)

    def _make_app(self) -> web.Application:
        app = web.Application()
        for family in (sessions, tokens, users, applications, control):
            app.add_routes(family.routes(self))
        return app


async def serve(
    options: EmulatorOptions,
    on_ready: Callable[[str], None],
    stop: asyncio.Event | None = None,
) -> None:
    """Run until `stop` is set or SIGINT/SIGTERM arrives (the CLI's entry point)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):
            pass  # not the main thread, or a platform without it
    try:
        async with Emulator(options) as emulator:
            on_ready(emulator.url)
            await stop.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)

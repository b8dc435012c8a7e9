"""What the reliability tests share: an emulator on its own thread or process, configs,
pair lists, database reads, and CLI subprocesses that are always cleaned up."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text

from audit_job.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    PAIR_SEPARATOR,
    Emulator,
    EmulatorOptions,
    truth,
)
from audit_job.store.engine import create_engine

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import cli_env, write_config  # noqa: E402

__all__ = [
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_ACCESS_KEY_SECRET",
    "EmulatorThread",
    "Processes",
    "asked_per_pair",
    "cli_env",
    "config_file",
    "execute",
    "make_pairs",
    "query",
    "seed_targets",
    "truth",
    "write_config",
    "write_pairs_csv",
]


def make_pairs(count: int, *, missing_every: int = 0, apps: int = 7) -> list[tuple[str, str]]:
    """Deterministic pairs; with `missing_every`, some users and apps do not exist."""
    made = []
    for i in range(count):
        app, user = f"app-{i % apps}", f"user-{i:06d}"
        if missing_every and i % missing_every == 1:
            user = f"missing-{user}"
        if missing_every and i % missing_every == 2:
            app = f"missing-{app}"
        made.append((app, user))
    return made


def write_pairs_csv(path: Path, pairs: Sequence[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["app_id", "user_id"])
        out.writerows(pairs)
    return path


async def seed_targets(db_url: str, pairs: Sequence[tuple[str, str]]) -> None:
    """Targets straight through the store (what `targets import` ends with)."""
    from audit_job.store import targets as target_store

    engine = create_engine(db_url)
    try:
        for start in range(0, len(pairs), 5000):
            chunk = [(a, u, True) for a, u in pairs[start : start + 5000]]
            async with engine.begin() as conn:
                await target_store.save_batch(conn, chunk)
    finally:
        await engine.dispose()


async def query(db_url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            return [tuple(row) for row in await conn.execute(text(sql), params)]
    finally:
        await engine.dispose()


async def execute(db_url: str, sql: str, **params: Any) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql), params)
    finally:
        await engine.dispose()


def config_file(
    path: Path,
    *,
    host: str,
    db_url: str,
    auth: str = "signature",
    secret: str = DEFAULT_ACCESS_KEY_SECRET,
    authing: dict[str, Any] | None = None,
    audit: dict[str, Any] | None = None,
    database: dict[str, Any] | None = None,
) -> Path:
    return write_config(
        path,
        {
            "database": {"url": db_url, **(database or {})},
            "authing": {
                "host": host,
                "access_key_id": DEFAULT_ACCESS_KEY_ID,
                "access_key_secret": secret,
                "auth": auth,
                "timeout_seconds": 2,
                **(authing or {}),
            },
            "audit": {
                "concurrency": 16,
                "rate_per_second": 500,
                "max_attempts": 8,
                "batch_size": 200,
                "heartbeat_seconds": 0.5,
                "dead_after_seconds": 2,
                **(audit or {}),
            },
        },
    )


def asked_per_pair(stats: dict[str, Any]) -> dict[tuple[str, str], int]:
    counted = {}
    for key, n in stats["per_pair"].items():
        app, user = key.split(PAIR_SEPARATOR)
        counted[(app, user)] = n
    return counted


class EmulatorThread:
    """The in-process emulator on its own event loop and thread, for tests that drive the
    CLI as a subprocess but still want to read the emulator's state (stats, tokens)."""

    def __init__(self, options: EmulatorOptions | None = None, **changes: Any) -> None:
        self._options = options or EmulatorOptions()
        self._changes = changes
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.emulator: Emulator | None = None
        self.url = ""

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    def __enter__(self) -> EmulatorThread:
        self._thread.start()

        async def start() -> Emulator:
            emulator = Emulator(self._options, **self._changes)
            await emulator.start()
            return emulator

        self.emulator = self._call(start())
        self.url = self.emulator.url
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.emulator is not None:
            self._call(self.emulator.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def stats(self) -> dict[str, Any]:
        assert self.emulator is not None

        async def read() -> dict[str, Any]:
            assert self.emulator is not None
            return self.emulator.stats()

        return self._call(read())

    def issued_tokens(self) -> list[str]:
        """Every bearer token this emulator handed out (in token mode)."""
        assert self.emulator is not None

        async def read() -> list[str]:
            assert self.emulator is not None
            return list(self.emulator._tokens._tokens)

        return self._call(read())


class Processes:
    """CLI subprocesses started by a test; whatever still runs at the end is killed."""

    def __init__(self) -> None:
        self._started: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        output: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """`python -m audit_job ARGS`; stdout and stderr to pipes, or both to `output`
        (a file cannot fill up and block a chatty process)."""
        sink: Any = subprocess.PIPE
        if output is not None:
            sink = output.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "audit_job", *args],
            env=env if env is not None else cli_env(),
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT if output is not None else subprocess.PIPE,
            start_new_session=True,
        )
        if output is not None:
            sink.close()
        self._started.append(proc)
        return proc

    def emulator(self, *options: str) -> tuple[subprocess.Popen[bytes], str]:
        """`audit-job emulator --port 0 OPTIONS`; returns the process and its URL."""
        proc = self.start("emulator", "--port", "0", *options)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("emulator listening on "):
            proc.kill()
            raise RuntimeError(f"emulator did not start: {line!r} {proc.stderr.read()!r}")  # type: ignore[union-attr]
        return proc, line.split()[-1]

    def close(self) -> None:
        for proc in self._started:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(timeout=10)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@contextmanager
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.close()

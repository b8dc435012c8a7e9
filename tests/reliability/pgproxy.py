"""A loopback TCP proxy in front of a database server, to take the database away on demand.
It forwards bytes only, so it serves PostgreSQL and MariaDB alike.

    with PgProxy() as proxy:            # listens on 127.0.0.1:<free port>, own thread
        url = proxy.url("mydb")         # postgresql+asyncpg://postgres@127.0.0.1:<port>/mydb
    with PgProxy.to(db_url) as proxy:   # in front of the server of any database URL
        url = proxy.proxied(db_url)     # the same URL, through the proxy
        proxy.cut()                     # abort every connection, refuse new ones
        proxy.restore()                 # listen again on the same port
        proxy.cut_after_bytes(50_000)   # cut once that many more client bytes went through

The proxy runs its own event loop on a thread, so sync tests (CLI subprocesses) and async
tests (in-process runs) drive it the same way.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from concurrent.futures import Future
from typing import Any

from sqlalchemy.engine import make_url

PG_HOST = os.environ.get("AUDIT_JOB_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("AUDIT_JOB_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("AUDIT_JOB_TEST_PG_USER", "postgres")
CHUNK = 65536


class PgProxy:
    def __init__(self, upstream: tuple[str, int] = (PG_HOST, PG_PORT)) -> None:
        self.upstream = upstream
        self.port = 0
        self.connections_seen = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._budget: int | None = None  # client bytes left before an armed cut
        self.cut_done = threading.Event()

    @classmethod
    def to(cls, url: str) -> PgProxy:
        """A proxy in front of the server that the database URL `url` names."""
        parsed = make_url(url)
        return cls((parsed.host or "127.0.0.1", int(parsed.port or 0)))

    # -- control (any thread) ----------------------------------------------------------------

    def __enter__(self) -> PgProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def proxied(self, url: str) -> str:
        """`url`, a database on the upstream server, reached through the proxy."""
        moved = make_url(url).set(host="127.0.0.1", port=self.port)
        return moved.render_as_string(hide_password=False)

    def cut(self) -> None:
        """Close every connection and stop listening: new connections are refused."""
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def cut_after_bytes(self, count: int) -> None:
        """Arm a cut that happens once `count` more bytes went from clients to the server."""
        self.cut_done.clear()
        self._budget = count

    @property
    def listening(self) -> bool:
        return self._server is not None

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    # -- the proxy (its own loop) ------------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self._server = await asyncio.start_server(self._accept, sock=sock)
        self.port = sock.getsockname()[1]

    async def _cut(self, wait: bool = True) -> None:
        server, self._server = self._server, None
        self._budget = None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if server is not None and wait:  # not from inside a handler: it would wait on itself
            await server.wait_closed()
        self.cut_done.set()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._server is None:
            client_w.transport.abort()
            return
        self.connections_seen += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.update((client_w, server_w))
        try:
            await asyncio.gather(
                self._pipe(client_r, server_w, count=True),
                self._pipe(server_r, client_w, count=False),
            )
        finally:
            for writer in (client_w, server_w):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        try:
            while data := await reader.read(CHUNK):
                if count and self._budget is not None:
                    self._budget -= len(data)
                    if self._budget <= 0:
                        await self._cut(wait=False)
                        return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

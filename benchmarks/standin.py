"""A fast loopback stand-in of the Authing API, for benchmarks only.

The tool's emulator (aiohttp.web, signature checks, faults) answers ~5,000 requests/s on a
core, less than the client it would measure. This stand-in is a raw `asyncio.Protocol`
HTTP/1.1 keep-alive server that answers check-session-status with a fixed-shape success
envelope (`data.active` from a hash of the body), and get-management-token with a token the
official Python SDK accepts. It does not verify signatures or tokens.

Modes: `--delay-ms` answers each request after a fixed delay (API latency); `--limit N`
answers 429 + `Retry-After` once N requests were accepted in the last second (a sliding
window, the strictest reading of "N per second"). `GET /__stats` returns counters, including
accepted and throttled requests per second since the last `POST /__reset`.

    python benchmarks/standin.py [--port 0] [--delay-ms 0] [--limit 0]      # serve
    python benchmarks/standin.py --load http://127.0.0.1:PORT [--seconds 3]  # load it

The server prints `READY <port>` on stdout when it listens. `--load` drives a server with
`--connections` keep-alive connections from a raw asyncio client and prints requests/s, to
show the stand-in is far faster than any client measured against it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import sys
import time
import zlib
from collections import deque
from typing import Any

CHECK_PATH = b"/api/v3/check-session-status"
TOKEN_PATH = b"/api/v3/get-management-token"
_HEAD_END = b"\r\n\r\n"


def _token() -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'scoped_userpool_id': 'standin-pool'})}.sig"


def _response(status: int, reason: str, body: bytes, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


_ACTIVE = [
    _response(
        200,
        "OK",
        json.dumps(
            {
                "statusCode": 200,
                "message": "成功",
                "apiCode": 200,
                "requestId": "standin",
                "data": {"active": active},
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode(),
    )
    for active in (False, True)
]
_TOKEN = _response(
    200,
    "OK",
    json.dumps(
        {"statusCode": 200, "message": "", "data": {"access_token": _token(), "expires_in": 7200}}
    ).encode(),
)
_NOT_FOUND = _response(404, "Not Found", b'{"statusCode":404,"message":"no such path"}')


class State:
    def __init__(self, delay_seconds: float, limit: int, retry_after: str) -> None:
        self.delay_seconds = delay_seconds
        self.limit = limit
        self.retry_after = retry_after
        self.accepted: deque[float] = deque(maxlen=max(1, limit))
        self.throttle_response = _response(
            429,
            "Too Many Requests",
            b'{"statusCode":429,"message":"too many requests","apiCode":429}',
            f"Retry-After: {retry_after}\r\n",
        )
        self.reset()

    def reset(self) -> None:
        self.started = time.monotonic()
        self.requests = 0
        self.ok = 0
        self.throttled = 0
        self.tokens = 0
        self.connections = 0
        self.per_second: dict[int, list[int]] = {}

    def admit(self) -> bool:
        """The sliding-window limit: at most `limit` accepted requests in any 1 s."""
        now = time.monotonic()
        second = int(now - self.started)
        counts = self.per_second.get(second)
        if counts is None:
            counts = self.per_second[second] = [0, 0]
        if self.limit:
            accepted = self.accepted
            if len(accepted) >= self.limit and now - accepted[0] < 1.0:
                self.throttled += 1
                counts[1] += 1
                return False
            accepted.append(now)
        self.ok += 1
        counts[0] += 1
        return True

    def stats(self) -> dict[str, Any]:
        seconds = max(self.per_second, default=-1) + 1
        return {
            "elapsed_seconds": time.monotonic() - self.started,
            "requests": self.requests,
            "ok": self.ok,
            "throttled": self.throttled,
            "tokens": self.tokens,
            "connections": self.connections,
            "per_second": [self.per_second.get(s, [0, 0]) for s in range(seconds)],
        }


class Server(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections += 1

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        while True:
            end = buffer.find(_HEAD_END)
            if end < 0:
                break
            head = buffer[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                length = int(lower[at + 17 : stop if stop >= 0 else len(lower)])
            total = end + 4 + length
            if len(buffer) < total:
                break
            body = buffer[end + 4 : total]
            buffer = buffer[total:]
            close = b"\r\nconnection: close" in lower or head.startswith(b"HTTP/1.0", 0)
            self.handle(head, body, close)
        self.buffer = buffer

    def handle(self, head: bytes, body: bytes, close: bool) -> None:
        state = self.state
        state.requests += 1
        line_end = head.find(b"\r\n")
        _method, _, rest = head[:line_end].partition(b" ")
        path = rest.partition(b" ")[0]
        if path == CHECK_PATH:
            answer = _ACTIVE[zlib.crc32(body) % 10 < 7] if state.admit() else None
            if answer is None:
                answer = state.throttle_response
        elif path == TOKEN_PATH:
            state.tokens += 1
            answer = _TOKEN
        elif path.startswith(b"/__stats"):
            answer = _response(200, "OK", json.dumps(state.stats()).encode())
        elif path.startswith(b"/__reset"):
            state.reset()
            answer = _response(200, "OK", b"{}")
        else:
            answer = _NOT_FOUND
        if state.delay_seconds and path == CHECK_PATH:
            self.loop.call_later(state.delay_seconds, self.send, answer, close)
        else:
            self.send(answer, close)

    def send(self, answer: bytes, close: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(answer)
        if close:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def serve(args: argparse.Namespace) -> None:
    state = State(args.delay_ms / 1000.0, args.limit, args.retry_after)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Server(state), "127.0.0.1", args.port, backlog=1024, reuse_address=True
    )
    port = server.sockets[0].getsockname()[1]
    stopped = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda: stopped.done() or stopped.set_result(None))
    print(f"READY {port}", flush=True)
    async with server:
        await stopped


class Loader(asyncio.Protocol):
    """One keep-alive connection sending one request at a time, as fast as answers come."""

    def __init__(self, request: bytes, counter: list[int], deadline: float) -> None:
        self.request = request
        self.counter = counter
        self.deadline = deadline
        self.pending = b""
        self.transport: asyncio.Transport | None = None
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        # Each answer ends with its small body; count complete answers by their last bytes.
        self.pending += data
        while True:
            end = self.pending.find(_HEAD_END)
            if end < 0:
                return
            lower = self.pending[:end].lower()
            at = lower.find(b"content-length:")
            stop = lower.find(b"\r\n", at)
            length = int(lower[at + 15 : stop if stop >= 0 else len(lower)])
            total = end + 4 + length
            if len(self.pending) < total:
                return
            self.pending = self.pending[total:]
            self.counter[0] += 1
            if time.monotonic() >= self.deadline:
                assert self.transport is not None
                self.transport.close()
                return
            assert self.transport is not None
            self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def load(url: str, connections: int, seconds: float) -> dict[str, Any]:
    host_port = url.split("://", 1)[1].rstrip("/")
    host, _, port = host_port.partition(":")
    body = b'{"appId":"app-00","userId":"user-000000001"}'
    request = (
        b"POST " + CHECK_PATH + b" HTTP/1.1\r\nHost: " + host_port.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    loop = asyncio.get_running_loop()
    counter = [0]
    started = time.monotonic()
    deadline = started + seconds
    protocols = []
    for _ in range(connections):
        _, protocol = await loop.create_connection(
            lambda: Loader(request, counter, deadline), host, int(port)
        )
        protocols.append(protocol)
    await asyncio.gather(*(p.done for p in protocols))
    elapsed = time.monotonic() - started
    return {"requests": counter[0], "seconds": elapsed, "per_second": counter[0] / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--limit", type=int, default=0, help="requests per second; 0: none")
    parser.add_argument("--retry-after", default="1", help="Retry-After value on 429")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core")
    parser.add_argument("--load", metavar="URL", help="load a running stand-in instead")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    loop = _new_loop()
    try:
        if args.load:
            result = loop.run_until_complete(load(args.load, args.connections, args.seconds))
            print(json.dumps(result), flush=True)
        else:
            loop.run_until_complete(serve(args))
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

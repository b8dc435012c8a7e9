"""What `audit-job run` is measured against, each as one measured child process.

    python benchmarks/baselines.py loop --url URL [--pairs N] [--concurrency 64] [--db URL]
    python benchmarks/baselines.py sdk  --url URL [--pairs N] [--threads 32]
    python benchmarks/baselines.py tool -- run --json ...     # audit-job itself, measured

`loop` is the ceiling: a minimal asyncio + aiohttp client (one session, `concurrency`
workers, the answer's JSON parsed, no retries, no rate limiting). It signs each request with
the same headers as the tool (HMAC-SHA1, spec 2), since an unsigned request is not a working
call. With `--db` it also writes every answer through SQLAlchemy Core in batches of 500, one
transaction each. `sdk` is the official Python SDK (`authing` 5.1.0, token mode) in a thread
pool. `tool` runs `audit-job` in this process after its imports, so that the CPU figure is the
run's, not the interpreter's start.

Each prints one JSON line: checks, seconds (the work only), cpu_seconds (user + system of
this process over the work), and whatever the child reported.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import resource
import secrets
import sys
import time
from email.utils import formatdate
from typing import Any

KEY_ID = "bench-key"
SECRET = "bench-secret"
CHECK_PATH = "/api/v3/check-session-status"


def pair_at(n: int) -> tuple[str, str]:
    """The n-th benchmark pair; the scenarios import the same pairs into the tool's database
    (benchmarks/harness/tool.py)."""
    return f"app-{n % 50:02d}", f"user-{n:09d}@example.com"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def signed_headers(app_id: str, user_id: str) -> dict[str, str]:
    date = formatdate(time.time(), usegmt=True)
    nonce = secrets.token_hex(16)
    message = (
        f"POST\ndate:{date}\nx-authing-lang:zh-CN\nx-authing-sdk-version:bench\n"
        f"x-authing-signature-method:HMAC-SHA1\nx-authing-signature-nonce:{nonce}\n"
        f"x-authing-signature-version:1.0\n{CHECK_PATH}?appId={app_id}&userId={user_id}"
    )
    digest = hmac.new(SECRET.encode(), message.encode(), hashlib.sha1).digest()
    return {
        "content-type": "application/json",
        "accept": "application/json",
        "x-authing-signature-nonce": nonce,
        "x-authing-signature-method": "HMAC-SHA1",
        "x-authing-signature-version": "1.0",
        "x-authing-sdk-version": "bench",
        "x-authing-lang": "zh-CN",
        "date": date,
        "authorization": f"authing {KEY_ID}:{base64.b64encode(digest).decode()}",
    }


class Writer:
    """Answers to a table through SQLAlchemy Core: one executemany per 500, one transaction."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import Boolean, Column, DateTime, Integer, MetaData, String, Table
        from sqlalchemy.ext.asyncio import create_async_engine

        self.engine = create_async_engine(url)
        meta = MetaData()
        self.meta = meta
        self.table = Table(
            "bench_loop_result",
            meta,
            Column("id", Integer, primary_key=True),
            Column("app_id", String(128), nullable=False),
            Column("user_id", String(255), nullable=False),
            Column("status", String(16), nullable=False),
            Column("active", Boolean),
            Column("checked_at", DateTime(timezone=True), nullable=False),
        )
        self.rows: list[dict[str, Any]] = []
        self.lock = asyncio.Lock()

    async def start(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(self.meta.drop_all)
            await conn.run_sync(self.meta.create_all)

    async def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= 500:
            await self.flush()

    async def flush(self) -> None:
        batch, self.rows = self.rows, []
        if batch:
            async with self.lock, self.engine.begin() as conn:
                await conn.execute(self.table.insert(), batch)

    async def close(self) -> None:
        await self.flush()
        await self.engine.dispose()


async def run_loop(url: str, pairs: int, concurrency: int, db: str | None) -> dict[str, Any]:
    from datetime import UTC, datetime

    import aiohttp

    writer = Writer(db) if db else None
    if writer is not None:
        await writer.start()
    target = url.rstrip("/") + CHECK_PATH
    todo = iter(range(pairs))
    counts = {"active": 0, "inactive": 0, "error": 0}
    started_cpu, started = cpu_seconds(), time.perf_counter()

    async def work(session: aiohttp.ClientSession) -> None:
        for n in todo:
            app_id, user_id = pair_at(n)
            body = json.dumps({"appId": app_id, "userId": user_id}, separators=(",", ":"))
            try:
                async with session.post(
                    target, data=body.encode(), headers=signed_headers(app_id, user_id)
                ) as resp:
                    envelope = json.loads(await resp.read())
                active = envelope["data"]["active"] if envelope["statusCode"] == 200 else None
            except (aiohttp.ClientError, ValueError, KeyError, TypeError):
                active = None
            status = "error" if active is None else ("active" if active else "inactive")
            counts[status] += 1
            if writer is not None:
                await writer.add(
                    {
                        "app_id": app_id,
                        "user_id": user_id,
                        "status": status,
                        "active": active,
                        "checked_at": datetime.now(UTC),
                    }
                )

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(work(session) for _ in range(concurrency)))
    if writer is not None:
        await writer.close()
    seconds = time.perf_counter() - started
    return {
        "checks": sum(counts.values()),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds() - started_cpu,
        "counts": counts,
    }


def run_sdk(url: str, pairs: int, threads: int) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    from authing import ManagementClient

    client = ManagementClient(access_key_id=KEY_ID, access_key_secret=SECRET, host=url)
    counts = {"active": 0, "inactive": 0, "error": 0}

    def check(n: int) -> str:
        app_id, user_id = pair_at(n)
        try:
            envelope = client.check_session_status(app_id=app_id, user_id=user_id)
            return "active" if envelope["data"]["active"] else "inactive"
        except Exception:
            return "error"

    started_cpu, started = cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for status in pool.map(check, range(pairs)):
            counts[status] += 1
    seconds = time.perf_counter() - started
    return {
        "checks": sum(counts.values()),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds() - started_cpu,
        "counts": counts,
    }


def run_tool(argv: list[str], loop: str, wait_file: str | None) -> dict[str, Any]:
    """`audit-job ARGV` in this process; its stdout (the --json summary) is captured.

    `loop` asyncio forces the standard event loop even when uvloop is installed.
    `wait_file`: import first, then wait for the file and append its text to ARGV (a run
    id to join), so a joining worker starts without paying for its imports."""
    import contextlib
    import io
    from pathlib import Path

    import audit_job.cli as cli
    import audit_job.cli.common
    import audit_job.commands.run  # imported before the clock starts

    if loop == "asyncio":
        audit_job.cli.common._loop_factory = lambda: None
    if wait_file is not None:
        path = Path(wait_file)
        while not path.exists() or not path.read_text().strip():
            time.sleep(0.02)
        argv = [*argv, path.read_text().strip()]
    out = io.StringIO()
    started_cpu, started = cpu_seconds(), time.perf_counter()
    code = 0
    with contextlib.redirect_stdout(out):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    seconds = time.perf_counter() - started
    text = out.getvalue().strip()
    summary: Any = None
    if text:
        try:
            summary = json.loads(text.splitlines()[-1])
        except ValueError:
            summary = text[-500:]
    return {
        "exit_code": code,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds() - started_cpu,
        "summary": summary,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    loop = sub.add_parser("loop")
    loop.add_argument("--url", required=True)
    loop.add_argument("--pairs", type=int, default=20_000)
    loop.add_argument("--concurrency", type=int, default=64)
    loop.add_argument("--db", help="also write answers here (SQLAlchemy async URL)")
    loop.add_argument("--uvloop", action="store_true")
    sdk = sub.add_parser("sdk")
    sdk.add_argument("--url", required=True)
    sdk.add_argument("--pairs", type=int, default=4_000)
    sdk.add_argument("--threads", type=int, default=32)
    tool = sub.add_parser("tool")
    tool.add_argument("--loop", choices=["default", "asyncio"], default="default")
    tool.add_argument("--wait-run-file")
    tool.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.what == "loop":
        factory = None
        if args.uvloop:
            import uvloop

            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            result = runner.run(run_loop(args.url, args.pairs, args.concurrency, args.db))
    elif args.what == "sdk":
        result = run_sdk(args.url, args.pairs, args.threads)
    else:
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        result = run_tool(argv, args.loop, args.wait_run_file)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())

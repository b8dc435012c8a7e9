"""The emulator's capacity model (a queue in arrival order, latency growing with load), its
latency percentiles, the optional rate-limit headers, and a million-user directory listed
at deep pages by a real `audit-job emulator` process without its memory growing."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil
import pytest
from emulator_api import ApiClient

import audit_job.emulator
from audit_job.emulator import Emulator, EmulatorOptions


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as client:
        yield client


async def test_capacity_queues_in_arrival_order(session):
    async with Emulator(EmulatorOptions(delay_ms=50)) as emu:
        api = ApiClient(session, emu.url)
        # Six open connections first, so that arrival order is the order of sending.
        await asyncio.gather(*(api.check("app-1", f"warm-{n}") for n in range(6)))
        emu.configure(capacity=2, delay_ms=150)
        emu.reset_stats()
        finished: list[int] = []

        async def one(n: int) -> None:
            await asyncio.sleep(n * 0.02)  # arrive in order 0, 1, 2, ... within 150 ms
            envelope = await api.check("app-1", f"user-{n}")
            assert envelope["statusCode"] == 200
            finished.append(n)

        started = time.monotonic()
        await asyncio.gather(*(one(n) for n in range(6)))
        elapsed = time.monotonic() - started
        stats = emu.stats()
    # Two at a time, 150 ms each: three rounds; nobody overtakes (pairs may finish in either
    # order inside a round).
    assert elapsed >= 0.45
    assert [sorted(finished[i : i + 2]) for i in (0, 2, 4)] == [[0, 1], [2, 3], [4, 5]]
    assert (stats["max_serving"], stats["max_queued"]) == (2, 4)
    assert (stats["serving"], stats["queued"], stats["in_flight"]) == (0, 0, 0)
    latency = stats["latency_ms"]
    assert latency["count"] == 6
    assert 150 * 0.98 <= latency["p50"] <= latency["p90"] <= latency["max"]
    assert latency["max"] >= 2 * 150 * 0.98  # the last ones waited a round, then served one


async def test_latency_grows_with_load_only_past_capacity(session):
    async with Emulator(EmulatorOptions(capacity=4, delay_ms=40)) as emu:
        api = ApiClient(session, emu.url)
        for n in range(8):  # one at a time: each answer takes about the service time
            await api.check("app-1", f"user-{n}")
        light = emu.stats()["latency_ms"]
        emu.reset_stats()
        await asyncio.gather(*(api.check("app-1", f"user-{n}") for n in range(32)))
        heavy = emu.stats()["latency_ms"]
    assert 40 * 0.98 <= light["p50"] < 2 * 40  # within 2x of the base
    assert heavy["p50"] > 2 * light["p50"]  # 32 at once through 4 slots: 8 rounds
    assert heavy["max"] >= 8 * 40 * 0.98


async def test_a_client_giving_up_in_the_queue_frees_its_place(session):
    async with Emulator(EmulatorOptions(capacity=1, delay_ms=200)) as emu:
        api = ApiClient(session, emu.url)
        first = asyncio.create_task(api.check("app-1", "user-1"))
        await asyncio.sleep(0.05)
        impatient = ApiClient(session, emu.url)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await impatient.check("app-1", "user-2")
        assert (await first)["statusCode"] == 200
        assert (await api.check("app-1", "user-3"))["statusCode"] == 200
        await asyncio.sleep(0.05)
        stats = emu.stats()
    assert (stats["queued"], stats["serving"], stats["in_flight"]) == (0, 0, 0)
    assert stats["max_queued"] == 1
    assert stats["latency_ms"]["count"] == 2  # the one that gave up got no answer


async def test_capacity_change_at_runtime_wakes_the_queue(session):
    async with Emulator(EmulatorOptions(capacity=1, delay_ms=300)) as emu:
        api = ApiClient(session, emu.url)
        tasks = [asyncio.create_task(api.check("app-1", f"user-{n}")) for n in range(4)]
        await asyncio.sleep(0.1)
        assert (emu.stats()["queued"], emu.stats()["serving"]) == (3, 1)
        emu.configure(capacity=3)  # two more slots: the two oldest waiters go at once
        assert (emu.stats()["queued"], emu.stats()["serving"]) == (1, 3)
        emu.configure(capacity=0)  # no cap: everyone
        assert (emu.stats()["queued"], emu.stats()["serving"]) == (0, 4)
        await asyncio.gather(*tasks)
        assert emu.stats()["max_serving"] == 4


async def test_throttled_answers_are_not_latency(session):
    async with Emulator(EmulatorOptions(rate=2, burst=2, delay_ms=20)) as emu:
        api = ApiClient(session, emu.url)
        codes = [(await api.check("app-1", f"u{n}"))["statusCode"] for n in range(5)]
        stats = emu.stats()
    assert codes.count(429) == 3
    assert stats["latency_ms"]["count"] == 2


# -- rate-limit headers ------------------------------------------------------------------------


async def test_rate_limit_headers_off_by_default(session):
    async with Emulator(EmulatorOptions(rate=5)) as emu:
        api = ApiClient(session, emu.url)
        await api.check("app-1", "user-1")
        assert not [h for h in api.last_headers if "ratelimit" in h.lower()]


async def test_ietf_rate_limit_headers(session):
    async with Emulator(EmulatorOptions(rate=2, burst=3, rate_limit_headers="ietf")) as emu:
        api = ApiClient(session, emu.url)
        seen = []
        for _ in range(4):
            envelope = await api.check("app-1", "user-1")
            headers = api.last_headers
            seen.append(
                (
                    envelope["statusCode"],
                    headers["RateLimit-Limit"],
                    headers["RateLimit-Remaining"],
                    int(headers["RateLimit-Reset"]),
                )
            )
        await api.list_users()  # the other endpoints carry them too
        assert api.last_headers["RateLimit-Remaining"] == "2"  # none left, 2 due in 1 s
    # A quota over the next second: the tokens left plus 2 refilled (a full bucket: 3 + 2).
    # The four requests come within milliseconds, so the refill between them rounds away.
    assert [s[:3] for s in seen] == [
        (200, "5", "4"),
        (200, "5", "3"),
        (200, "5", "2"),
        (429, "5", "2"),
    ]
    assert [s[3] for s in seen] == [1, 1, 1, 1]


async def test_x_rate_limit_headers(session):
    async with Emulator(EmulatorOptions(rate=1, burst=2, rate_limit_headers="x")) as emu:
        api = ApiClient(session, emu.url)
        before = time.time()
        await api.get("/api/v3/list-applications")
        headers = api.last_headers
    reset = int(headers["X-RateLimit-Reset"])  # the Unix second but one: 1 to 2 s away
    assert math.floor(before) + 2 <= reset <= math.floor(time.time()) + 2
    assert headers["X-RateLimit-Limit"] == "3"  # 2 in the bucket, 1 a second
    # One token left plus the refill until the reset (1 to 2 s at 1/s).
    assert headers["X-RateLimit-Remaining"] in {"2", "3"}


# -- a million users through a real process ------------------------------------------------------

_CLI_MODULE = str(Path(audit_job.emulator.__file__).parent.parent / "cli" / "emulator.py")
_CLI = """
import importlib.util, sys
import typer
spec = importlib.util.spec_from_file_location("emulator_cli", sys.argv.pop(1))
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
app = typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False)
module.register(app)
@app.callback()
def main() -> None:
    pass
app()
"""


def start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-c", _CLI, _CLI_MODULE, "emulator", "--port", "0", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("emulator listening on "):
        process.kill()
        _, err = process.communicate(timeout=10)
        pytest.fail(f"emulator did not start: {line!r} {err}")
    return process, line.rsplit(" ", 1)[1]


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def rss_mb(process: subprocess.Popen[str]) -> float:
    return psutil.Process(process.pid).memory_info().rss / 2**20


@pytest.mark.timeout(300)
def test_a_million_users_listed_deep_without_memory_growth():
    small, _ = start_cli("--users", "10", "--apps", "3")
    try:
        small_rss = rss_mb(small)
    finally:
        stop(small)
    process, url = start_cli("--users", "1000000", "--apps", "3", "--seed", "9")
    try:
        idle = rss_mb(process)
        # The directory costs nothing until asked: no list of users anywhere.
        assert idle < small_rss + 8, (idle, small_rss)

        async def walk() -> list[float]:
            samples = []
            async with aiohttp.ClientSession() as session:
                api = ApiClient(session, url, "token")
                last = await api.list_users(options={"pagination": {"page": 20000, "limit": 50}})
                assert last["data"]["totalCount"] == 1_000_000
                assert [u["userId"] for u in last["data"]["list"]][-1] == "user-1000000"
                deep = await api.list_users(options={"pagination": {"page": 12345, "limit": 50}})
                assert deep["data"]["list"][0]["userId"] == f"user-{12344 * 50 + 1:06d}"
                samples.append(rss_mb(process))
                newest = await api.list_users(
                    options={
                        "pagination": {"page": 1, "limit": 1},
                        "sort": [{"field": "createdAt", "order": "desc"}],
                    }
                )
                assert newest["data"]["list"][0]["userId"] == "user-1000000"
                # A filter scans the directory once (in a thread), then any page is cheap.
                body = {
                    "advancedFilter": [
                        {"field": "status", "operator": "EQUAL", "value": "Archived"}
                    ]
                }
                first = await api.list_users(**body)
                total = first["data"]["totalCount"]
                assert 9_000 < total < 11_000  # ~1 %
                last_page = math.ceil(total / 50)
                for page in (last_page, last_page // 2, 7):
                    found = await api.list_users(
                        **body, options={"pagination": {"page": page, "limit": 50}}
                    )
                    assert all(u["status"] == "Archived" for u in found["data"]["list"])
                    assert found["data"]["list"]
                    samples.append(rss_mb(process))
                active = await api.post(
                    "/api/v3/list-application-active-users",
                    {"appId": "app-002", "options": {"pagination": {"page": 2000, "limit": 50}}},
                )
                assert 140_000 < active["data"]["totalCount"] < 160_000  # 0.3 x 0.5
                for user in active["data"]["list"]:
                    assert await api.active("app-002", user["userId"]) is True
                samples.append(rss_mb(process))
            return samples

        samples = asyncio.run(walk())
        # Pages and selections cost kilobytes; allow for allocator noise and one thread.
        assert max(samples) - idle < 12, (idle, samples)
    finally:
        stop(process)

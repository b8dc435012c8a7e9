"""Hostile responses: the real AuthingClient against a loopback server that answers garbage.

The server is a raw asyncio TCP server rather than aiohttp.web, because aiohttp refuses to
send the worst of it (a Content-Length longer than the body, broken chunking, a gzip header
on plain bytes, a status line it would not write). hypothesis picks the status, headers,
body and framing; for every answer the client must return a final CheckResult (or raise the
documented run-level stop), must never turn garbage into `active`/`inactive`, must turn an
honest success into exactly its answer, and what it returns must be storable: every result
goes through the real batch write on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import threading
import zlib
from concurrent.futures import Future
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relsupport import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, query
from sqlalchemy import text

from audit_job.classify import BODY_MAX_BYTES
from audit_job.client import AuthingClient
from audit_job.config import AuthingSettings
from audit_job.errors import ApiError
from audit_job.limiter import AdaptiveRateLimiter
from audit_job.models import CheckResult, CheckStatus, Pair
from audit_job.store import results as result_store
from audit_job.store import runs as run_store
from audit_job.store import snapshot as snapshot_store
from audit_job.store.engine import create_engine

MAX_ATTEMPTS = 2
NOT_SUCCESS_STATUSES = {401, 403, 408, 429}
AUTH_OR_BUSY_CODES = {1000, 1001, 2020, 2224}
FRAMING = {"content-length", "transfer-encoding", "connection", "content-encoding", "retry-after"}


@dataclass(repr=False)
class Hostile:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    framing: str  # length | short | close | chunked | bad-chunked | gzip-lie

    def __repr__(self) -> str:  # bodies may be megabytes
        shown = self.body[:120] + (b"..." if len(self.body) > 120 else b"")
        size = len(self.body)
        return f"Hostile({self.status}, {self.headers!r}, {shown!r} ({size} B), {self.framing})"

    def wire(self) -> bytes:
        head = [f"HTTP/1.1 {self.status} Whatever"]
        head += [f"{name}: {value}" for name, value in self.headers]
        body = self.body
        if self.framing == "length":
            head.append(f"Content-Length: {len(body)}")
        elif self.framing == "short":  # promises more than it sends, then hangs up
            head.append(f"Content-Length: {len(body) + 1 + len(body) // 3}")
            body = body[: len(body) // 2]
        elif self.framing == "chunked":
            head.append("Transfer-Encoding: chunked")
            body = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
        elif self.framing == "bad-chunked":
            head.append("Transfer-Encoding: chunked")
            body = b"zz\r\n" + body
        elif self.framing == "gzip-lie":
            head += ["Content-Encoding: gzip", f"Content-Length: {len(body)}"]
        head.append("Connection: close")
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body

    @property
    def intact(self) -> bool:
        return self.framing in ("length", "close", "chunked")

    def honest_active(self) -> bool | None:
        """The `active` a correct client may read from this answer (spec 6), else None."""
        if not self.intact or self.status in NOT_SUCCESS_STATUSES or not 200 <= self.status < 500:
            return None
        if len(self.body) > BODY_MAX_BYTES:  # documented: too large to be an envelope
            return None
        if self.status in (204, 304):  # HTTP: these carry no body, whatever was sent
            return None
        try:
            envelope = json.loads(self.body)
        except (ValueError, RecursionError):
            return None
        if type(envelope) is not dict or spec_code(envelope.get("statusCode")) != 200:
            return None
        if spec_code(envelope.get("apiCode")) in AUTH_OR_BUSY_CODES:
            return None
        data = envelope.get("data")
        active = data.get("active") if type(data) is dict else None
        return active if type(active) is bool else None


def spec_code(value: object) -> int | None:
    """Spec 6: a JSON integer or a numeric string; anything else (bool, float) is absent.
    Values no 32-bit column holds count as absent too (documented in classify.py)."""
    number = None
    if type(value) is int:
        number = value
    elif type(value) is str and 0 < len(value) <= 16:
        text = value.strip()
        digits = text.removeprefix("-")
        if digits.isascii() and digits.isdigit():
            number = int(text)
    return number if number is not None and abs(number) < 2**31 else None


class HostileServer:
    """Answers every request with the current `Hostile` and hangs up."""

    def __init__(self) -> None:
        self.answer = Hostile(200, [], b"{}", "length")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.url = ""

    def __enter__(self) -> HostileServer:
        self._thread.start()
        future: Future[asyncio.Server] = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        )
        self._server = future.result(10)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(self.answer.wire())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


# -- strategies --------------------------------------------------------------------------

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40).filter(
    lambda s: s == s.strip()
)
header_name = st.from_regex(r"\A[A-Za-z][A-Za-z0-9\-]{0,20}\Z").filter(
    lambda s: s.lower() not in FRAMING
)
content_type = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/html",
        "text/plain; charset=latin-1",
        "application/json; charset=utf-16",
        "application/octet-stream",
        "garbage/;;;",
    ]
)
retry_after = st.one_of(
    header_text,
    st.floats(min_value=-100, max_value=0.05).map(lambda f: f"{f:.3f}"),
    st.just("Wed, 21 Oct 2015 07:28:00 GMT"),
    st.just("-1"),
)
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=30),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
code = st.one_of(
    json_value,
    st.sampled_from([200, "200", 400, 404, 429, 500, 1000, "1000", 2020, 2004, "2011", 602]),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
)
envelope = st.fixed_dictionaries(
    {},
    optional={
        "statusCode": code,
        "apiCode": code,
        "message": st.one_of(json_value, st.text(max_size=2000)),
        "requestId": st.one_of(json_value, st.text(max_size=400)),
        "data": st.one_of(
            json_value,
            st.fixed_dictionaries({"active": st.one_of(st.booleans(), json_value)}),
        ),
    },
)
honest = st.fixed_dictionaries(
    {
        "statusCode": st.sampled_from([200, "200"]),
        "data": st.fixed_dictionaries({"active": st.booleans()}),
    },
    optional={"apiCode": st.sampled_from([20001, "20001", 0]), "requestId": st.text(max_size=20)},
)


class Huge(bytes):
    """A body of megabytes whose repr stays short in hypothesis reports."""

    def __repr__(self) -> str:
        return f"Huge({bytes(self[:40])!r}... {len(self)} B)"


HUGE = [
    Huge(text.encode())
    for text in [
        json.dumps({"statusCode": 400, "message": "x" * 3_000_000, "requestId": "r" * 100_000}),
        json.dumps({"statusCode": 200, "data": {"active": True}, "pad": ["y" * 1000] * 2000}),
        "[" * 50_000 + "]" * 50_000,
        json.dumps({"statusCode": 200, "data": {"active": [[[[[[[[True]]]]]]]]}}),
    ]
]
huge = st.sampled_from(HUGE)
body = st.one_of(
    st.binary(max_size=300),
    json_value.map(lambda v: json.dumps(v).encode()),
    envelope.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
    honest.map(lambda v: json.dumps(v).encode()),
    honest.map(lambda v: json.dumps(v).encode("utf-16")),
    honest.map(lambda v: zlib.compress(json.dumps(v).encode())),
    huge,
)
status = st.one_of(
    st.sampled_from(
        [200, 200, 200, 201, 204, 301, 302, 400, 401, 403, 404, 408, 418, 429, 500, 502]
    ),
    st.integers(min_value=100, max_value=999),
)
headers = st.lists(
    st.one_of(
        st.tuples(st.just("Content-Type"), content_type),
        st.tuples(st.just("Retry-After"), retry_after),
        st.tuples(st.just("Date"), header_text),
        st.tuples(header_name, header_text),
    ),
    max_size=6,
)
hostile = st.builds(
    Hostile,
    status=status,
    headers=headers,
    body=body,
    framing=st.sampled_from(
        ["length", "length", "short", "close", "chunked", "bad-chunked", "gzip-lie"]
    ),
)


async def check_once(url: str, pair: Pair) -> CheckResult | ApiError:
    client = AuthingClient(
        AuthingSettings(host=url, access_key_id=DEFAULT_ACCESS_KEY_ID, timeout_seconds=3),
        access_key_id=DEFAULT_ACCESS_KEY_ID,
        access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
        limiter=AdaptiveRateLimiter(100_000),
        concurrency=1,
        max_attempts=MAX_ATTEMPTS,
        backoff_base_seconds=0.001,
        backoff_cap_seconds=0.005,
    )
    async with client:
        try:
            return await asyncio.wait_for(client.check(pair), 30)
        except ApiError as exc:  # the documented run-level stop (auth answers in a row)
            return exc


async def store_all(db_url: str, results: list[tuple[Pair, CheckResult]]) -> None:
    """Garbage that became a result must not break the batch write."""
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            run_id = await run_store.create_run(conn, trigger="manual")
            pairs = [(p.app_id, p.user_id, None) for p, _ in results]
            await snapshot_store.add_snapshot_rows(conn, run_id, pairs)
            rows = await conn.execute(
                text("SELECT id, app_id, user_id FROM session_check WHERE run_id = :run"),
                {"run": run_id},
            )
            by_pair = {(a, u): row_id for row_id, a, u in rows}
            await result_store.write_results(
                conn,
                run_id,
                [
                    (by_pair[(p.app_id, p.user_id)], p.app_id, p.user_id, r, None)
                    for p, r in results
                ],
            )
    finally:
        await engine.dispose()
    rows = await query(
        db_url, "SELECT status, active FROM session_check WHERE run_id = :run", run=run_id
    )
    assert sorted((s, None if a is None else bool(a)) for s, a in rows) == sorted(
        (r.status.value, r.active) for _, r in results
    )


def test_hostile_answers_never_crash_and_never_become_answers(db_url: str) -> None:
    results: list[tuple[Pair, CheckResult]] = []
    with HostileServer() as server:

        @settings(
            max_examples=100,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(answer=hostile)
        def one(answer: Hostile) -> None:
            server.answer = answer
            pair = Pair("app-h", f"user-{len(results)}")
            outcome = asyncio.run(check_once(server.url, pair))
            if isinstance(outcome, ApiError):
                assert answer.honest_active() is None
                return
            assert isinstance(outcome, CheckResult)
            assert outcome.status in CheckStatus and outcome.status is not CheckStatus.PENDING
            assert 1 <= outcome.attempts <= MAX_ATTEMPTS
            expected = answer.honest_active()
            if outcome.status in (CheckStatus.ACTIVE, CheckStatus.INACTIVE):
                assert expected is not None, answer  # never an answer made up from garbage
                assert outcome.active is expected
                assert outcome.status is (CheckStatus.ACTIVE if expected else CheckStatus.INACTIVE)
            else:
                assert outcome.active is None
                assert expected is None, answer  # an honest success is never lost
            results.append((pair, outcome))

        one()
    assert results
    asyncio.run(store_all(db_url, results))

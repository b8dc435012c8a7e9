"""One HTTP exchange of an attempt: post the body within the attempt's time limit, classify
what came back (or the failure), count it, and tell the pacing (pacing.py) of an answer.

Kept off the client's bookkeeping so the hot path reads top to bottom: no tenacity, no log
line per request (transport failures are logged at debug level only)."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import yarl

from audit_job.classify import classify_exception, classify_response
from audit_job.client.pacing import RequestPacing
from audit_job.client.stats import ClientStats
from audit_job.deadlines import DeadlineWatch
from audit_job.models import Answer, AnswerKind, Pair

log = logging.getLogger("audit_job.client.check")
_perf = time.perf_counter
_current_task = asyncio.current_task
_THROTTLED = AnswerKind.THROTTLED


async def exchange(
    session: aiohttp.ClientSession,
    url: yarl.URL,
    pair: Pair,
    body: bytes,
    headers: dict[str, str],
    deadlines: DeadlineWatch,
    stats: ClientStats,
    pacing: RequestPacing,
    sent_at: float,
    capture: list[bytes] | None,
    slot_at: float | None = None,
) -> tuple[Answer, float]:
    """(answer, latency seconds). Returning, the gate slot has been given back (with the
    answer, or as no answer); raising (a shutdown), it is left to the caller."""
    stats.requests += 1
    task = _current_task()
    deadlines.arm(task)  # type: ignore[arg-type]
    told = False
    started = _perf()
    try:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
            raw = await resp.read()
    except asyncio.CancelledError:
        if not deadlines.timed_out(task):  # type: ignore[arg-type]
            raise  # a shutdown, not our time limit
        latency = _perf() - started
        answer = classify_exception(TimeoutError(f"no answer within {deadlines.seconds:g} s"))
        stats.transport_errors += 1
    except Exception as exc:
        latency = _perf() - started
        answer = classify_exception(exc)
        stats.transport_errors += 1
        # The library's own words (the TLS alert, the errno): under --verbose only.
        log.debug(
            "%s %s: %s: %s",
            pair.app_id,
            pair.user_id,
            type(exc).__name__,
            exc,
            extra={"event": "attempt_failed"},
        )
    else:
        latency = _perf() - started
        status = resp.status
        answer = classify_response(status, resp.headers, raw)
        pacing.answered(sent_at, latency, answer.kind is _THROTTLED, resp.headers, slot_at)
        told = True
        responses = stats.responses
        responses[status] = responses.get(status, 0) + 1
        if capture is not None:
            capture.append(raw)
    finally:
        deadlines.disarm(task)  # type: ignore[arg-type]
    if not told:
        pacing.no_answer()
    return answer, latency

"""What the event loop reports by itself (here: an exception no task retrieved, as a TLS
handshake cancelled mid-failure leaves) is one log line, with the traceback only under
--verbose. Real interpreters, the CLI's own logging and event-loop runner."""

from __future__ import annotations

import subprocess
import sys

from helpers import cli_env

PROBE = """
import asyncio, gc, ssl, sys
from audit_job import logs
from audit_job.cli.common import run_async

logs.setup(verbose=sys.argv[1] == "verbose")

async def drop_a_failed_handshake() -> str:
    fut = asyncio.get_running_loop().create_future()
    try:
        raise ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed")
    except ssl.SSLError as exc:
        fut.set_exception(exc)
    del fut
    gc.collect()  # the traceback holds this frame: a cycle, freed here
    return "done"

print(run_async(drop_a_failed_handshake()))
"""


def probe(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )


def test_an_unretrieved_exception_is_one_line() -> None:
    done = probe("quiet")
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "WARNING" in lines[0] and "event loop: Future exception was never retrieved" in lines[0]
    assert "SSLCertVerificationError" in lines[0] and "CERTIFICATE_VERIFY_FAILED" in lines[0]


def test_verbose_shows_the_loops_own_report_with_its_traceback() -> None:
    done = probe("verbose")
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
    assert "Future exception was never retrieved" in done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert "drop_a_failed_handshake" in done.stderr

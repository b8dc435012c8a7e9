"""The loopback stand-in of the API (benchmarks/standin.py), started on the server core."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

from harness.processes import PY, SERVER_CORE, STANDIN


class ServedProcess:
    """A bench server process with the /__stats and /__reset of both servers."""

    process: subprocess.Popen[str]
    url: str

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/__stats", timeout=10) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        req = urllib.request.Request(self.url + "/__reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def close(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Standin(ServedProcess):
    def __init__(self, delay_ms: float = 0.0, limit: int = 0) -> None:
        argv = [PY, STANDIN, "--delay-ms", str(delay_ms), "--limit", str(limit)]
        if SERVER_CORE is not None:
            argv += ["--cpu", str(SERVER_CORE)]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if not line or line[0] != "READY":
            raise SystemExit("benchmarks/standin.py did not start")
        self.url = f"http://127.0.0.1:{line[1]}"


@contextlib.contextmanager
def standin(delay_ms: float = 0.0, limit: int = 0) -> Iterator[Standin]:
    server = Standin(delay_ms, limit)
    try:
        yield server
    finally:
        server.close()


def window(per_second: list[list[int]], skip: int) -> tuple[float, int, int]:
    """Mean accepted/s and totals over the run's whole seconds after its first `skip`,
    counted from the first busy second (partial: the run starts mid-second, after the
    tool's start-up), ignoring the last (partial) second and the idle tail."""
    busy = [i for i, (ok, throttled) in enumerate(per_second) if ok + throttled]
    if not busy:
        return 0.0, 0, 0
    seconds = per_second[busy[0] + skip : busy[-1]]  # the last busy second is partial
    if not seconds:
        return 0.0, 0, 0
    ok = sum(s[0] for s in seconds)
    throttled = sum(s[1] for s in seconds)
    return ok / len(seconds), ok, throttled

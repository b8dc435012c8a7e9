"""The tool's own emulator (`audit-job emulator`) as a bench server: slower than the stand-in
(~5,000 answers/s on a core) but with a token bucket, a capacity model (requests served at
once, the rest queued) and per-second counts (`GET /__stats`: per_second, latency_ms,
max_in_flight). Started on the server core."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from baselines import KEY_ID, SECRET

from harness.processes import PY, SERVER_CORE, base_env, pin
from harness.server import ServedProcess


class EmulatorServer(ServedProcess):
    def __init__(self, **options: float) -> None:
        argv = [PY, "-m", "audit_job", "emulator", "--port", "0"]
        argv += ["--access-key-id", KEY_ID, "--access-key-secret", SECRET]
        for name, value in options.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        self.process = subprocess.Popen(argv, env=base_env(), stdout=subprocess.PIPE, text=True)
        pin(self.process.pid, SERVER_CORE)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if len(line) < 4 or line[:3] != ["emulator", "listening", "on"]:
            raise SystemExit(f"audit-job emulator did not start: {line}")
        self.url = line[3]


@contextlib.contextmanager
def emulator(**options: float) -> Iterator[EmulatorServer]:
    server = EmulatorServer(**options)
    try:
        yield server
    finally:
        server.close()

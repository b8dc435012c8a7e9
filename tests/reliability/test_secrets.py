"""Secrets never leak: the CLI through every command, in both auth modes, and a scan of
everything it left behind (stdout, stderr, log files, the database file byte for byte) for the
access key secret, a wrong secret tried along the way, and every bearer token the emulator
issued. Also: a config file readable by others warns; TLS is verified by default through
`audit-job check` and a self-signed certificate is accepted only with `verify_tls = false`.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import make_self_signed
from relsupport import (
    EmulatorThread,
    cli_env,
    config_file,
    make_pairs,
    write_pairs_csv,
)

from audit_job.emulator import EmulatorOptions

SECRET = "Zx9-very-SECRET-access-key-Qm4"
WRONG_SECRET = "Wr0ng-but-still-SECRET-Pk7"
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")
FLAG_SETS = [
    ["--verbose", "--log-format", "json", "--log-file", "{log}"],
    ["--verbose"],
    ["--log-format", "json"],
    ["--verbose", "--log-file", "{log}"],
]


def cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "audit_job", *args],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return {"args": args, "code": result.returncode, "out": result.stdout, "err": result.stderr}


class Tour:
    """Every command once, each with one of the flag sets; outputs kept for the scan."""

    def __init__(self, folder: Path, config: Path) -> None:
        self.folder = folder
        self.config = config
        self.results: list[dict[str, Any]] = []
        self._n = 0

    def args(self, *command: str, config: Path | None = None) -> list[str]:
        self._n += 1
        flags = [
            f.format(log=self.folder / f"log-{self._n}.txt")
            for f in FLAG_SETS[self._n % len(FLAG_SETS)]
        ]
        return [*flags, "--config", str(config or self.config), *command]

    def run(self, *command: str, env: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
        result = cli(self.args(*command, **kw), self.folder, env)
        self.results.append(result)
        return result

    def run_parallel(self, commands: list[tuple[str, ...]]) -> list[dict[str, Any]]:
        calls = [self.args(*command) for command in commands]
        with ThreadPoolExecutor(max_workers=4) as pool:
            done = list(pool.map(lambda a: cli(a, self.folder), calls))
        self.results += done
        return done

    def everything(self) -> Iterator[tuple[str, bytes]]:
        for result in self.results:
            yield f"stdout of {result['args']}", result["out"].encode()
            yield f"stderr of {result['args']}", result["err"].encode()
        for path in self.folder.rglob("*"):
            if path.is_file() and path.suffix != ".toml":  # config files hold the secret
                yield str(path), path.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("auth", ["signature", "token"])
def test_no_secret_or_token_anywhere(db_url: str, auth: str, tmp_path: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    write_pairs_csv(folder / "pairs.csv", make_pairs(60, missing_every=20))
    with EmulatorThread(EmulatorOptions(access_key_secret=SECRET, fault_5xx=0.05)) as emu:
        cfg = config_file(
            tmp_path / "audit-job.toml", host=emu.url, db_url=db_url, auth=auth, secret=SECRET
        )
        tour = Tour(folder, cfg)
        assert tour.run("db", "upgrade")["code"] == 0
        assert tour.run("targets", "import", "pairs.csv")["code"] == 0
        assert tour.run("targets", "add", "app-x", "user-x")["code"] == 0
        assert tour.run("run", "--no-progress")["code"] == 3  # unknown pairs: per-pair errors
        wrong_env = cli_env(AUTHING_ACCESS_KEY_SECRET=WRONG_SECRET)
        failed = tour.run("run", "--no-progress", env=wrong_env)
        assert failed["code"] == 1, failed
        assert "check [authing] access_key_id" in failed["out"] + failed["err"], failed
        # `check` makes one attempt: a 5xx fault (5 % of them here) makes it a per-pair
        # error (exit 3) before the credentials are judged, so ask again in that case.
        for _ in range(5):
            checked = tour.run("check", "app-1", "user-000001", env=wrong_env)
            if checked["code"] != 3:
                break
        assert checked["code"] == 1, checked
        assert tour.run("run", "--no-progress", "--json")["code"] == 3
        parallel = [
            ("config", "show"),
            ("db", "current"),
            ("targets", "list", "--format", "csv"),
            ("targets", "count"),
            ("check", "app-1", "user-000001"),
            ("runs", "--format", "json"),
            ("results", "--format", "csv"),
            ("history", "app-1", "user-000001"),
            ("changes",),
            ("report",),
            ("report", "--html", "report.html"),
            ("prune", "--keep-days", "30", "--dry-run"),
        ]
        for result in tour.run_parallel(parallel):
            assert result["code"] in (0, 3), result
            assert "Traceback" not in result["err"], result
        assert tour.run("run", "--dry-run")["code"] == 0
        loose = tmp_path / "loose.toml"
        loose.write_bytes(cfg.read_bytes())
        loose.chmod(0o644)
        warned = tour.run("config", "show", config=loose)
        tokens = emu.issued_tokens()
    logged = "".join(p.read_text() for p in folder.glob("log-*.txt")) + warned["err"]
    assert "readable by other users" in logged and "chmod 600" in logged
    if auth == "token":
        assert tokens, "token mode should have fetched tokens"
    else:
        assert not tokens

    needles = [SECRET, WRONG_SECRET, *tokens]
    scanned = 0
    for where, data in tour.everything():
        scanned += 1
        for needle in needles:
            assert needle.encode() not in data, f"{needle[:6]}... leaked in {where}"
        text = data.decode("utf-8", errors="replace")
        assert not JWT.search(text), f"a JWT leaked in {where}"
        assert "Bearer " not in text, f"an authorization header leaked in {where}"
    db_file = Path(db_url.split("///", 1)[1])
    for path in db_file.parent.glob(db_file.name + "*"):  # the file, its WAL and SHM
        data = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in data, f"{needle[:6]}... stored in {path.name}"
    assert scanned > 30


def test_demo_leaks_nothing(tmp_path: Path) -> None:
    result = cli(
        ["--verbose", "--log-file", "demo.log", "demo", "--pairs", "200", "--no-progress"],
        tmp_path,
    )
    assert result["code"] == 0, result
    blobs = [result["out"].encode(), result["err"].encode()]
    blobs += [p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.suffix != ".toml"]
    for blob in blobs:
        assert b"sk-demo" not in blob
        assert not JWT.search(blob.decode("utf-8", errors="replace"))


# -- TLS through `audit-job check` -------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https_server(self_signed: tuple[Path, Path]) -> Iterator[str]:
    """A loopback HTTPS server with a self-signed certificate answering `active`."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"statusCode": 200, "message": "ok", "data": {"active": True}})

    async def start() -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_post("/api/v3/check-session-status", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self_signed)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        return runner, f"https://127.0.0.1:{runner.addresses[0][1]}"

    runner, url = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield url
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_check_refuses_a_self_signed_certificate_unless_told(
    https_server: str, tmp_path: Path
) -> None:
    strict = config_file(tmp_path / "strict.toml", host=https_server, db_url="sqlite://")
    loose = config_file(
        tmp_path / "loose.toml",
        host=https_server,
        db_url="sqlite://",
        authing={"verify_tls": False},
    )
    refused, accepted = (
        cli(["--config", str(path), "check", "app", "user"], tmp_path) for path in (strict, loose)
    )
    assert refused["code"] == 1, refused
    assert "TLS certificate verification failed" in refused["err"]
    assert "verify_tls" in refused["err"] and "127.0.0.1" in refused["err"]
    assert "Traceback" not in refused["err"]
    assert accepted["code"] == 0, accepted
    assert "verify_tls = false" in accepted["err"]  # said loudly
    assert "active" in accepted["out"]

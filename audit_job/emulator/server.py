"""aiohttp.web stand-in for the two Authing endpoints audit-job calls, with faults and stats.

Per check-session-status request, in this order: count it, throttle (HTTP 429), add the
configured delay, draw a fault, parse the body, authenticate, answer the truth. Nothing is
logged per request.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import random
import secrets
import signal
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from audit_job.emulator.auth import REJECTIONS, DateParser, NonceBook, TokenBook, verify_signature
from audit_job.emulator.options import FAULT_KINDS, EmulatorOptions, updated
from audit_job.emulator.stats import Stats
from audit_job.emulator.throttle import TokenBucket
from audit_job.emulator.truth import Verdict, load_truth_file, verdict
from audit_job.signing import CHECK_SESSION_PATH

TOKEN_PATH = "/api/v3/get-management-token"
_JSON = "application/json; charset=utf-8"
_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
# (statusCode, apiCode, zh-CN, en-US); app-not-found's apiCode is a string as on the legacy
# error page (spec 6), so clients prove they accept both forms.
_NOT_FOUND: dict[Verdict, tuple[int, int | str, str, str]] = {
    Verdict.USER_NOT_FOUND: (404, 2004, "用户不存在", "User does not exist"),
    Verdict.APP_NOT_FOUND: (499, "2011", "应用不存在", "Application does not exist"),
}
_SUCCESS_API_CODE = 20001  # published examples carry it on successes (spec 6)


class Emulator:
    """In-process emulator: `async with Emulator(options) as emu: ... emu.url ...`."""

    def __init__(self, options: EmulatorOptions | None = None, **changes: Any) -> None:
        base = options if options is not None else EmulatorOptions()
        self.options = updated(base, changes) if changes else base
        self._stats = Stats()
        self._tokens = TokenBook()
        self._nonces = NonceBook()
        self._parse_date = DateParser()
        self._bucket = TokenBucket()
        self._rng = random.Random(self.options.seed)
        self._request_ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4)
        self._truth_path: str | None = None
        self._truth_table: dict[tuple[str, str], Verdict] = {}
        self._load_truth()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.app = self._make_app()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        self._closing.clear()
        # handler_cancellation: a handler (a hang, a delay) ends when its client gives up.
        runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, self.options.host, self.options.port)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        return self.url

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- inspection and control --------------------------------------------------------------

    def configure(self, **changes: Any) -> EmulatorOptions:
        """Change options at runtime (validated). Host/port only matter before `start`."""
        new = updated(self.options, changes)
        if "seed" in changes:
            self._rng.seed(new.seed)
        if "rate" in changes or "burst" in changes:
            self._bucket.refill()
        self.options = new
        self._load_truth()
        return new

    def stats(self) -> dict[str, Any]:
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        self._stats.reset()

    def verdict(self, app_id: str, user_id: str) -> Verdict:
        """What this emulator, as configured now, answers for the pair."""
        options = self.options
        if options.truth_file != self._truth_path:
            self._load_truth()
        return verdict(
            app_id,
            user_id,
            options.seed,
            active_share=options.active_share,
            missing_prefix=options.missing_prefix,
            table=self._truth_table,
        )

    def truth(self, app_id: str, user_id: str) -> bool | None:
        found = self.verdict(app_id, user_id)
        return {Verdict.ACTIVE: True, Verdict.INACTIVE: False}.get(found)

    def _load_truth(self) -> None:
        path = self.options.truth_file
        self._truth_table = load_truth_file(path) if path else {}
        self._truth_path = path

    # -- HTTP --------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(CHECK_SESSION_PATH, self._check_session_status)
        app.router.add_post(TOKEN_PATH, self._get_management_token)
        app.router.add_get("/__stats", self._get_stats)
        app.router.add_post("/__reset", self._post_reset)
        app.router.add_get("/__config", self._get_config)
        app.router.add_post("/__config", self._post_config)
        return app

    async def _check_session_status(self, request: web.Request) -> web.StreamResponse:
        stats = self._stats
        stats.arrive()
        stats.check_requests += 1
        try:
            params = _json_object(await request.read())
            if params is not None:
                app_id, user_id = params.get("appId"), params.get("userId")
                if type(app_id) is str and type(user_id) is str:
                    stats.pair(app_id, user_id)
            early = await self._gate(request, faults=True)
            if early is not None:
                return early
            en = _english(request)
            if params is None:
                stats.answers["bad_request"] += 1
                return self._error(
                    400, None, "请求体必须是 JSON 对象", "body must be a JSON object", en
                )
            reason = self._authenticate(request, params)
            if reason is not None:
                stats.auth_failed(reason)
                api_code, zh, english = REJECTIONS[reason]
                return self._error(401, api_code, zh, english, en)
            app_id, user_id = params.get("appId"), params.get("userId")
            if not (type(app_id) is str and app_id and type(user_id) is str and user_id):
                stats.answers["bad_request"] += 1
                zh, english = "appId 和 userId 必须是非空字符串", "appId and userId must be strings"
                return self._error(400, None, zh, english, en)
            found = self.verdict(app_id, user_id)
            stats.answers[found.value] += 1
            if found is Verdict.ACTIVE or found is Verdict.INACTIVE:
                return self._success({"active": found is Verdict.ACTIVE}, en)
            status_code, api_code, zh, english = _NOT_FOUND[found]
            return self._error(status_code, api_code, zh, english, en)
        finally:
            stats.leave()

    async def _get_management_token(self, request: web.Request) -> web.StreamResponse:
        stats = self._stats
        stats.arrive()
        stats.token_requests += 1
        try:
            params = _json_object(await request.read())
            early = await self._gate(request, faults=self.options.faults_on_token)
            if early is not None:
                return early
            options = self.options
            en = _english(request)
            key_id = params.get("accessKeyId") if params else None
            secret = params.get("accessKeySecret") if params else None
            if not (
                type(key_id) is str
                and type(secret) is str
                and hmac.compare_digest(key_id.encode(), options.access_key_id.encode())
                and hmac.compare_digest(secret.encode(), options.access_key_secret.encode())
            ):
                stats.auth_failed("bad_credentials")
                api_code, zh, english = REJECTIONS["bad_credentials"]
                return self._error(401, api_code, zh, english, en)
            token = self._tokens.issue(options.userpool_id, options.token_ttl)
            stats.tokens_issued += 1
            stats.answers["token_issued"] += 1
            return self._success({"access_token": token, "expires_in": options.token_ttl}, en)
        finally:
            stats.leave()

    async def _gate(self, request: web.Request, *, faults: bool) -> web.StreamResponse | None:
        """Throttle, delay and faults: what a gateway in front of Authing might do."""
        options = self.options
        wait = self._bucket.take(options.rate, options.burst)
        if wait > 0:
            self._stats.throttled += 1
            self._stats.answers["throttled"] += 1
            headers = {"Content-Type": _JSON}
            if options.retry_after:
                seconds = options.retry_after_seconds
                value = seconds if seconds is not None else max(1, int(wait + 0.999))
                headers["Retry-After"] = str(int(value)) if value == int(value) else str(value)
            body = self._envelope(429, None, "请求过于频繁", "Too Many Requests", _english(request))
            return web.Response(status=429, body=body, headers=headers)
        if options.delay_ms > 0 or options.jitter_ms > 0:
            extra = self._rng.uniform(0, options.jitter_ms) if options.jitter_ms > 0 else 0.0
            await asyncio.sleep((options.delay_ms + extra) / 1000.0)
        if not faults:
            return None
        kind = self._draw_fault(options)
        if kind is None:
            return None
        self._stats.faults[kind] += 1
        self._stats.answers["fault"] += 1
        return await self._fault(kind, request)

    def _draw_fault(self, options: EmulatorOptions) -> str | None:
        draw = self._rng.random()
        edge = 0.0
        for kind in FAULT_KINDS:
            probability = getattr(options, f"fault_{kind}")
            if probability <= 0:
                continue
            edge += probability
            if draw < edge:
                return kind
        return None

    async def _fault(self, kind: str, request: web.Request) -> web.StreamResponse:
        if kind == "hang":
            try:
                await asyncio.wait_for(self._closing.wait(), self.options.hang_seconds)
            except TimeoutError:
                pass
            kind = "reset"
        if kind == "reset":
            transport = request.transport
            if transport is not None:
                transport.abort()
            # aiohttp drops whatever is written to an aborted transport.
            return web.Response(status=500)
        if kind == "html_502":
            return web.Response(status=502, body=_HTML_502, content_type="text/html")
        if kind == "5xx":
            status = self._rng.choice((500, 503))
            if self._rng.random() < 0.5:
                return web.Response(status=status)
            body = self._envelope(status, None, "服务器内部错误", "Internal Server Error", False)
            return web.Response(status=status, body=body, headers={"Content-Type": _JSON})
        if kind == "bad_json":
            # Complete HTTP message whose body is cut mid-JSON (not a transport truncation).
            body = self._envelope(200, _SUCCESS_API_CODE, "", "", False, {"active": True})
            return web.Response(
                status=200, body=body[: len(body) // 2], headers={"Content-Type": _JSON}
            )
        # busy: "系统繁忙,请稍后再试" (apiCode 1000, spec 6 row 4)
        return self._error(
            500, 1000, "系统繁忙，请稍后再试", "The system is busy", _english(request)
        )

    def _authenticate(self, request: web.Request, params: dict[str, Any]) -> str | None:
        headers = request.headers
        authorization = headers.get("authorization", "").strip()
        if not authorization:
            return "missing_auth"
        options = self.options
        if authorization[:8].lower() == "authing ":
            return verify_signature(
                method=request.method,
                path=request.path,
                headers=headers,
                params=params,
                authorization=authorization,
                access_key_id=options.access_key_id,
                access_key_secret=options.access_key_secret,
                window_seconds=options.date_window_seconds,
                now=time.time(),
                parse_date=self._parse_date,
                nonces=self._nonces,
            )
        return self._tokens.check(
            authorization, headers.get("x-authing-userpool-id"), options.userpool_id
        )

    # -- envelopes ---------------------------------------------------------------------------

    def _envelope(
        self,
        status_code: int,
        api_code: int | str | None,
        zh: str,
        en_message: str,
        en: bool,
        data: Any = None,
    ) -> bytes:
        envelope: dict[str, Any] = {"statusCode": status_code, "message": en_message if en else zh}
        if api_code is not None:
            envelope["apiCode"] = api_code
        envelope["requestId"] = f"{self._id_prefix}-{next(self._request_ids):x}"
        envelope["data"] = data
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()

    def _success(self, data: dict[str, Any], en: bool) -> web.Response:
        body = self._envelope(200, _SUCCESS_API_CODE, "成功", "success", en, data)
        return web.Response(body=body, headers={"Content-Type": _JSON})

    def _error(
        self, status_code: int, api_code: int | str | None, zh: str, en_message: str, en: bool
    ) -> web.Response:
        body = self._envelope(status_code, api_code, zh, en_message, en)
        http_status = status_code if self.options.error_style == "http" else 200
        return web.Response(status=http_status, body=body, headers={"Content-Type": _JSON})

    # -- control endpoints -------------------------------------------------------------------

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({"ok": True})

    async def _get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.options.public())

    async def _post_config(self, request: web.Request) -> web.Response:
        changes = _json_object(await request.read())
        if changes is None:
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        try:
            new = self.configure(**changes)
        except (TypeError, ValueError, OSError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(new.public())


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _english(request: web.Request) -> bool:
    return request.headers.get("x-authing-lang", "").startswith("en")


async def serve(
    options: EmulatorOptions,
    on_ready: Callable[[str], None],
    stop: asyncio.Event | None = None,
) -> None:
    """Run until `stop` is set or SIGINT/SIGTERM arrives (the CLI's entry point)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):
            pass  # not the main thread, or a platform without it
    try:
        async with Emulator(options) as emulator:
            on_ready(emulator.url)
            await stop.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)

"""Authing's answer envelope `{statusCode, message, apiCode?, requestId, data}` (spec 1 and 6).

Every API answer of the emulator is built here, so request ids are unique per emulator and the
error transport (`error_style`: HTTP 200 + envelope, or the real HTTP status) is one decision.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import web

JSON_TYPE = "application/json; charset=utf-8"
HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
SUCCESS_API_CODE = 20001  # published examples carry it on successes (spec 6)
# (statusCode, apiCode, zh-CN, en-US); app-not-found's apiCode is a string as on the legacy
# error page (spec 6), so clients prove they accept both forms.
USER_NOT_FOUND = (404, 2004, "用户不存在", "User does not exist")
APP_NOT_FOUND = (499, "2011", "应用不存在", "Application does not exist")


class Envelopes:
    """Builds envelopes; `error_style` is read on every error, so it may change at runtime."""

    def __init__(self, error_style: Callable[[], str]) -> None:
        self._error_style = error_style
        self._request_ids = itertools.count(1)
        self.id_prefix = secrets.token_hex(4)

    def body(
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
        envelope["requestId"] = f"{self.id_prefix}-{next(self._request_ids):x}"
        envelope["data"] = data
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()

    def success(self, data: Any, en: bool) -> web.Response:
        body = self.body(200, SUCCESS_API_CODE, "成功", "success", en, data)
        return web.Response(body=body, headers={"Content-Type": JSON_TYPE})

    def error(
        self, status_code: int, api_code: int | str | None, zh: str, en_message: str, en: bool
    ) -> web.Response:
        body = self.body(status_code, api_code, zh, en_message, en)
        http_status = status_code if self._error_style() == "http" else 200
        return web.Response(status=http_status, body=body, headers={"Content-Type": JSON_TYPE})

    def not_found(self, what: tuple[int, int | str, str, str], en: bool) -> web.Response:
        status_code, api_code, zh, english = what
        return self.error(status_code, api_code, zh, english, en)

    def bad_request(self, zh: str, english: str, en: bool) -> web.Response:
        return self.error(400, None, zh, english, en)


def json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def english(request: web.Request) -> bool:
    return request.headers.get("x-authing-lang", "").startswith("en")

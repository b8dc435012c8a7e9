"""Parameter rules the listing endpoints share (authing-api-more.md 1d). Pure.

Pages start at 1, `limit` defaults to 10 and may be at most 50. The messages are the ones the
Node SDK's tests expect: page 0 -> `参数 page 格式错误`, limit 0 -> `参数 limit 格式错误`,
limit 220 -> `limit must less than 50`. A bad value fails with `BadParameter`, which the
endpoint answers as `statusCode` 400.
"""

from __future__ import annotations

from typing import Any

DEFAULT_LIMIT = 10
MAX_LIMIT = 50
USER_ID_TYPES = (
    "user_id",
    "external_id",
    "phone",
    "email",
    "username",
    "identity",
    "sync_relation",
    "custom_field",
)


class BadParameter(ValueError):
    """A parameter the server refuses: (message zh-CN, message en-US)."""

    def __init__(self, zh: str, en: str) -> None:
        super().__init__(en)
        self.zh = zh
        self.en = en

    @classmethod
    def named(cls, name: str) -> BadParameter:
        return cls(f"参数 {name} 格式错误", f"invalid parameter: {name}")


def _integer(value: Any, name: str, *, from_query: bool) -> int:
    if from_query and isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return int(text)
        raise BadParameter.named(name)
    if isinstance(value, bool):
        raise BadParameter.named(name)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)  # a JSON `1.0` is the number 1
    raise BadParameter.named(name)


def pagination(page: Any, limit: Any, *, from_query: bool = False) -> tuple[int, int]:
    """(page, limit) from the request's values (None = absent)."""
    number = 1 if page is None else _integer(page, "page", from_query=from_query)
    if number < 1:
        raise BadParameter.named("page")
    size = DEFAULT_LIMIT if limit is None else _integer(limit, "limit", from_query=from_query)
    if size < 1:
        raise BadParameter.named("limit")
    if size > MAX_LIMIT:
        message = f"limit must less than {MAX_LIMIT}"
        raise BadParameter(message, message)
    return number, size


def query_flag(query: dict[str, Any], name: str) -> bool | None:
    """A boolean query parameter: `true`/`false` in any case (requests sends `True`)."""
    value = query.get(name)
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise BadParameter.named(name)


def optional_string(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None or isinstance(value, str):
        return value
    raise BadParameter.named(name)


def required_string(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if isinstance(value, str) and value:
        return value
    raise BadParameter.named(name)


def optional_object(params: dict[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name)
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise BadParameter.named(name)


def user_id_type(value: Any) -> str:
    if value is None:
        return "user_id"
    if isinstance(value, str) and value in USER_ID_TYPES:
        return value
    raise BadParameter.named("userIdType")


def not_modelled(what: str) -> BadParameter:
    """For inputs the real API accepts but the emulator does not model: a loud 400, never a
    silently wrong answer."""
    return BadParameter(f"模拟器不支持 {what}", f"not modelled by the emulator: {what}")
